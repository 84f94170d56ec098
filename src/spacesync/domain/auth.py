"""Logged-in users' session tokens and the role a player acts with in a space.

The app's page hands a logged-in user a token ``auth-<userId>``. Believing the id in it, as the
original server did, lets anyone who types ``auth-<someone else's id>`` act as that user. With
``AUTH_SESSIONS=signed`` the app appends an expiry and an HMAC-SHA256 of both under a secret it
shares with this server::

    auth-<userId>.<expiresAtUnix>.<base64url(HMAC-SHA256(secret, "<userId>.<expiresAtUnix>"))>

so the token proves itself and no call to the app is needed at each join. The signature is
base64url without padding (43 characters), what Node's ``digest("base64url")`` gives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

AUTH_PREFIX: Final = "auth-"
SIGNED_TOKEN_RE: Final = re.compile(
    r"auth-(?P<user>[A-Za-z0-9_-]{1,128})\.(?P<expires>[0-9]{1,12})\.(?P<sig>[A-Za-z0-9_-]{43})"
)
"""User ids are the app's cuid strings; the expiry is whole seconds since the epoch."""
ROLES: Final = ("OWNER", "STAFF", "PARTICIPANT")


class TokenRefused(ValueError):
    """A signed token that does not prove its user; the message names the reason for the log
    (``malformed``, ``bad signature``, ``expired``), never anything from the token itself."""


@dataclass(frozen=True, slots=True)
class SignedToken:
    user_id: str
    expires_at: int


def _signature(secret: bytes, user_id: str, expires_at: int) -> str:
    digest = hmac.new(secret, f"{user_id}.{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_user_token(secret: str, user_id: str, expires_at: int) -> str:
    """The token the app mints (here for tests and for apps written in Python)."""
    if not SIGNED_TOKEN_RE.fullmatch(f"auth-{user_id}.{expires_at}.{'A' * 43}"):
        raise ValueError("user id must be 1-128 of A-Z a-z 0-9 _ - and expiry a Unix time")
    return f"auth-{user_id}.{expires_at}.{_signature(secret.encode(), user_id, expires_at)}"


def check_signed_token(token: str, secret: str, now: float) -> SignedToken:
    """The user a signed token names, if its signature is right and it has not expired.

    The signature is compared with :func:`hmac.compare_digest`, whose time does not depend on
    where the strings differ, so timing the answer teaches nothing about the right signature.
    Raises :class:`TokenRefused`.
    """
    match = SIGNED_TOKEN_RE.fullmatch(token)
    if match is None:
        raise TokenRefused("malformed")
    user_id, expires_at = match["user"], int(match["expires"])
    expected = _signature(secret.encode(), user_id, expires_at)
    if not hmac.compare_digest(expected.encode("ascii"), match["sig"].encode("ascii")):
        raise TokenRefused("bad signature")
    if expires_at <= now:
        raise TokenRefused("expired")
    return SignedToken(user_id, expires_at)


def user_id_of(token: str | None) -> str | None:
    """The user id of an ``auth-`` token, plain (``auth-<userId>``) or signed; else ``None``."""
    if not token or not token.startswith(AUTH_PREFIX) or len(token) == len(AUTH_PREFIX):
        return None
    match = SIGNED_TOKEN_RE.fullmatch(token)
    if match is not None:
        return match["user"]
    return token[len(AUTH_PREFIX) :]


@dataclass(frozen=True, slots=True)
class RoleFacts:
    """What the database says about one player in one space (``None``: no row, or unknown)."""

    super_admin: bool = False
    owns_space: bool = False
    member_role: str | None = None


def rank_role(facts: RoleFacts, app_role: str | None = None) -> str:
    """The role a player acts with, strongest source first.

    1. The app's verify answer, when it names a role: the app owns memberships and may know of
       a change the database row does not show yet.
    2. OWNER for a platform super admin, and for the space's owner (``Space.ownerId``) even if a
       member row says otherwise: the owner cannot be demoted by a stale row.
    3. The ``SpaceMember`` row's role.
    4. PARTICIPANT.
    """
    if app_role is not None and app_role in ROLES:
        return app_role
    if facts.super_admin or facts.owns_space:
        return "OWNER"
    if facts.member_role is not None and facts.member_role in ROLES:
        return facts.member_role
    return "PARTICIPANT"

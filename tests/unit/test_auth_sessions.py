"""Logged-in users' tokens (AUTH_SESSIONS) and the role a player acts with: the signed-token
check, the settings, and the join-time role lookup against a scripted storage."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from spacesync.config import ConfigError, load_settings
from spacesync.domain import auth
from spacesync.domain.auth import (
    RoleFacts,
    TokenRefused,
    check_signed_token,
    rank_role,
    sign_user_token,
    user_id_of,
)
from spacesync.domain.identity import Identity, token_user_id
from spacesync.handlers import identity as identity_module
from spacesync.handlers.identity import Access, LoginRefused
from spacesync.storage import StorageUnavailable

SECRET = "s" * 32
NOW = 1_700_000_000


def mint(user: str, expires: int, secret: str = SECRET) -> str:
    """Independent of the code under test: what the app's few lines of Node.js compute."""
    mac = hmac.new(secret.encode(), f"{user}.{expires}".encode(), hashlib.sha256).digest()
    return f"auth-{user}.{expires}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


# -- the signed token ---------------------------------------------------------------------------


def test_a_good_token_names_its_user() -> None:
    token = mint("cuser123", NOW + 60)
    assert sign_user_token(SECRET, "cuser123", NOW + 60) == token
    checked = check_signed_token(token, SECRET, NOW)
    assert (checked.user_id, checked.expires_at) == ("cuser123", NOW + 60)


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(TokenRefused, match="expired"):
        check_signed_token(mint("cuser123", NOW), SECRET, NOW)
    with pytest.raises(TokenRefused, match="expired"):
        check_signed_token(mint("cuser123", NOW - 3600), SECRET, NOW)


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t.replace("auth-cuser123.", "auth-cadmin999."),  # another user, same signature
        lambda t: t.replace(f".{NOW + 60}.", f".{NOW + 999_999}."),  # a longer life
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character of the signature
    ],
)
def test_a_changed_token_fails_its_signature(forge: Any) -> None:
    with pytest.raises(TokenRefused, match="bad signature"):
        check_signed_token(forge(mint("cuser123", NOW + 60)), SECRET, NOW)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(TokenRefused, match="bad signature"):
        check_signed_token(mint("cuser123", NOW + 60, "x" * 32), SECRET, NOW)


@pytest.mark.parametrize(
    "token",
    [
        "auth-cuser123",  # the original's unsigned form
        "auth-cuser123.1700000060",
        "auth-.1700000060." + "A" * 43,
        "auth-cuser123.soon." + "A" * 43,
        "auth-cuser123.1700000060." + "A" * 42,
        "auth-cuser123.1700000060." + "A" * 43 + "=",
        "auth-cuser123.1700000060." + "A" * 43 + "\n",
        "auth-cu.ser.1700000060." + "A" * 43,
        "auth-c user.1700000060." + "A" * 43,
        "guest-token",
        "",
    ],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(TokenRefused, match="malformed"):
        check_signed_token(token, SECRET, NOW)


def test_the_signature_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    check_signed_token(mint("cuser123", NOW + 60), SECRET, NOW)
    with pytest.raises(TokenRefused):
        check_signed_token(mint("cuser123", NOW + 60, "x" * 32), SECRET, NOW)
    assert len(calls) == 2


def test_the_user_id_of_plain_and_signed_tokens() -> None:
    """The EXIT's x-user-id is the user id, not the whole signed tail."""
    assert user_id_of("auth-cuser123") == "cuser123"
    assert token_user_id(mint("cuser123", NOW)) == "cuser123"
    assert user_id_of("auth-") is None
    assert user_id_of("guest-abc") is None
    assert user_id_of(None) is None


# -- settings -----------------------------------------------------------------------------------


def test_verify_is_the_default_mode() -> None:
    settings = load_settings({})
    assert settings.auth_sessions == "verify"
    assert settings.auth_verify_url is None
    url = "https://app.example/api/auth/verify/"
    assert load_settings({"AUTH_VERIFY_URL": url}).auth_verify_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTH_SESSIONS": "maybe"}, "AUTH_SESSIONS must be one of"),
        ({"AUTH_SESSIONS": "signed"}, "needs AUTH_TOKEN_SECRET"),
        ({"AUTH_SESSIONS": "signed", "AUTH_TOKEN_SECRET": "short-secret"}, "at least 32 bytes"),
        ({"AUTH_VERIFY_URL": "ftp://x"}, "AUTH_VERIFY_URL must be an http"),
    ],
)
def test_unusable_auth_settings_stop_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(env)
    assert "short-secret" not in str(caught.value)


def test_signed_and_trust_modes_load() -> None:
    signed = load_settings({"AUTH_SESSIONS": "Signed", "AUTH_TOKEN_SECRET": SECRET})
    assert (signed.auth_sessions, signed.auth_token_secret) == ("signed", SECRET)
    assert load_settings({"AUTH_SESSIONS": "trust"}).auth_sessions == "trust"


# -- role order ---------------------------------------------------------------------------------


def test_role_order() -> None:
    assert rank_role(RoleFacts()) == "PARTICIPANT"
    assert rank_role(RoleFacts(member_role="STAFF")) == "STAFF"
    assert rank_role(RoleFacts(owns_space=True, member_role="PARTICIPANT")) == "OWNER"
    assert rank_role(RoleFacts(super_admin=True, member_role="PARTICIPANT")) == "OWNER"
    # the app, when it names a role, is the authority
    assert rank_role(RoleFacts(owns_space=True), app_role="STAFF") == "STAFF"
    assert rank_role(RoleFacts(member_role="STAFF"), app_role="PARTICIPANT") == "PARTICIPANT"
    assert rank_role(RoleFacts(member_role="STAFF"), app_role="KING") == "STAFF"


# -- the join-time lookup -----------------------------------------------------------------------


class ScriptedStorage:
    """The storage methods the join reads, answering from dictionaries and counting calls."""

    kind = "postgres"

    def __init__(self) -> None:
        self.users = {"owner", "admin", "staff", "plain"}
        self.admins = {"admin"}
        self.owners = {"space-a": "owner"}
        self.members: dict[tuple[str, str], str] = {
            ("space-a", "staff"): "STAFF",
            ("space-a", "owner"): "PARTICIPANT",
            ("space-a", "guest-session-1"): "STAFF",
        }
        self.guests = {("space-a", "guest-token"): "guest-session-1"}
        self.calls = 0
        self.down = False
        self.hang = 0.0

    async def _call(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(self.hang)
        if self.down:
            raise StorageUnavailable("connection refused")

    async def user_exists(self, user_id: str) -> bool:
        await self._call()
        return user_id in self.users

    async def is_super_admin(self, user_id: str) -> bool:
        await self._call()
        return user_id in self.admins

    async def space_owner(self, space_id: str) -> str | None:
        await self._call()
        return self.owners.get(space_id)

    async def member_role(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> str | None:
        await self._call()
        return self.members.get((space_id, user_id or guest_session_id or ""))

    async def guest_session_id(self, space_id: str, token: str) -> str | None:
        await self._call()
        return self.guests.get((space_id, token))

    async def ping(self) -> None:
        await self._call()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def access_for(storage: ScriptedStorage | None, clock: Clock, **env: str) -> Access:
    settings = load_settings(env)
    return Access(settings, lambda: storage, clock=clock, wall_clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def user(user_id: str) -> Identity:
    return Identity(f"user-{user_id}", "Name", session_token=f"auth-{user_id}", user_id=user_id)


def guest(token: str) -> Identity:
    return Identity("guest-x", "Guest", session_token=token)


async def test_roles_from_the_database() -> None:
    storage, clock = ScriptedStorage(), Clock()
    access = access_for(storage, clock)

    async def role(identity: Identity, app_role: str | None = None) -> str:
        return (await access.complete(identity, "space-a", app_role=app_role)).role

    assert await role(user("owner")) == "OWNER"  # owner outranks a PARTICIPANT row
    assert await role(user("admin")) == "OWNER"
    assert await role(user("staff")) == "STAFF"
    assert await role(user("plain")) == "PARTICIPANT"
    assert await role(user("staff"), app_role="PARTICIPANT") == "PARTICIPANT"
    completed = await access.complete(guest("guest-token"), "space-a", app_role=None)
    assert (completed.role, completed.guest_session_id) == ("STAFF", "guest-session-1")
    unknown = await access.complete(guest("other-token"), "space-a", app_role=None)
    assert (unknown.role, unknown.guest_session_id) == ("PARTICIPANT", None)


async def test_roles_are_cached_for_thirty_seconds() -> None:
    storage, clock = ScriptedStorage(), Clock()
    access = access_for(storage, clock)
    await access.complete(user("staff"), "space-a", app_role=None)
    calls = storage.calls
    storage.members[("space-a", "staff")] = "PARTICIPANT"
    assert (await access.complete(user("staff"), "space-a", app_role=None)).role == "STAFF"
    assert storage.calls == calls
    clock.now += 30.1
    assert (await access.complete(user("staff"), "space-a", app_role=None)).role == "PARTICIPANT"
    assert storage.calls > calls


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_module, "MAX_CACHED", 5)
    access = access_for(ScriptedStorage(), Clock())
    for n in range(20):
        await access.complete(user(f"u{n}"), "space-a", app_role=None)
    assert len(access._cache) == 5


async def test_a_down_database_gives_participant_at_once() -> None:
    storage, clock = ScriptedStorage(), Clock()
    storage.down = True
    access = access_for(storage, clock)
    identity = await access.complete(user("owner"), "space-a", app_role=None)
    assert identity.role == "PARTICIPANT"
    assert access.failures == 1
    # not remembered: the next join asks again
    storage.down = False
    assert (await access.complete(user("owner"), "space-a", app_role=None)).role == "OWNER"


async def test_a_hanging_database_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_module, "LOOKUP_TIMEOUT", 0.2)
    storage = ScriptedStorage()
    storage.hang = 10.0
    access = access_for(storage, Clock())
    started = time.monotonic()
    assert (await access.complete(user("owner"), "space-a", app_role=None)).role == "PARTICIPANT"
    assert not await access.unknown_user("nobody")
    assert time.monotonic() - started < 1.0
    assert access.failures == 2


async def test_no_storage_means_the_app_role_or_participant() -> None:
    access = access_for(None, Clock())
    assert (await access.complete(user("owner"), "space-a", app_role=None)).role == "PARTICIPANT"
    assert (await access.complete(guest("t"), "space-a", app_role="STAFF")).role == "STAFF"
    assert (await access.database_figures())["up"] is False


async def test_logged_in_users_by_mode() -> None:
    storage, clock = ScriptedStorage(), Clock()
    signed = access_for(storage, clock, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET)
    assert signed.checks_locally("auth-x") and not signed.checks_locally("guest-x")
    assert signed.logged_in_user(mint("plain", NOW + 60)) == "plain"
    with pytest.raises(LoginRefused):
        signed.logged_in_user("auth-plain")
    trust = access_for(storage, clock, AUTH_SESSIONS="trust")
    assert trust.logged_in_user("auth-plain") == "plain"
    verify = access_for(storage, clock, APP_URL="http://app.test")
    assert not verify.checks_locally("auth-plain")
    assert verify.verify_url == "http://app.test/api/guest/verify"
    assert await signed.unknown_user("nobody")
    assert not await signed.unknown_user("plain")
    storage.kind = "sqlite"  # no user table there: existence cannot be told
    assert not await signed.unknown_user("nobody")

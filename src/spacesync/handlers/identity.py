"""Who a joining player is beyond what the token says: logged-in users' tokens, roles from the
database, and the ``GuestSession.id`` later features store instead of the token.

Everything here runs while a player waits for ``room:joined``, so nothing may wait long on the
database: each join's lookups share one deadline (:data:`LOOKUP_TIMEOUT`), and a database that is
down or slow makes the player a PARTICIPANT (logged) instead of delaying or refusing the join.
Movement and chat never reach this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import Settings
from ..domain.auth import AUTH_PREFIX, RoleFacts, check_signed_token, rank_role, user_id_of
from ..domain.identity import Identity
from ..observability.logging import log
from ..storage import Storage, StorageError

ROLE_TTL = 30.0
"""Seconds a role read from the database is reused for the same player and space: a promotion
reaches a player at their next join within this time, and a join storm reads each row once."""
MAX_CACHED = 10_000
LOOKUP_TIMEOUT = 3.0
"""Seconds all database lookups of one join may take together (the PostgreSQL adapter's own
per-operation limit): past it the player joins as PARTICIPANT."""
PING_TIMEOUT = 1.0

Clock = Callable[[], float]
StorageSource = Callable[[], Storage | None]


class LoginRefused(Exception):
    """A logged-in user's token that does not hold; the message is for the log only."""


class Access:
    """Logged-in users' tokens (``AUTH_SESSIONS``) and roles from the database, per join.

    ``storage`` is asked for the storage at each use: the node opens it after the handlers are
    built, and a node whose database could not be opened has none (everyone is PARTICIPANT
    unless the app names a role).
    """

    def __init__(
        self,
        settings: Settings,
        storage: StorageSource,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self._storage = storage
        self.clock = clock
        self.wall_clock = wall_clock
        self.mode = settings.auth_sessions
        self.verify_url = settings.auth_verify_url or f"{settings.app_url}/api/guest/verify"
        self.failures = 0
        """Database lookups at join that failed or ran out of time (``/metrics`` database)."""
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, str, str | None]] = (
            OrderedDict()
        )

    @property
    def storage(self) -> Storage | None:
        return self._storage()

    # -- logged-in users -----------------------------------------------------------------------

    def checks_locally(self, token: str) -> bool:
        """Whether this server decides about ``token`` itself (``signed``/``trust`` modes and an
        ``auth-`` token) instead of asking the app."""
        return self.mode != "verify" and token.startswith(AUTH_PREFIX)

    def logged_in_user(self, token: str) -> str:
        """The user id of an ``auth-`` token in ``signed`` or ``trust`` mode.

        ``signed``: the signature and expiry must hold (no call to the app). ``trust``: the id
        in the token is believed, as the original server did. Raises :class:`LoginRefused`.
        """
        if self.mode == "signed":
            secret = self.settings.auth_token_secret
            assert secret is not None  # load_settings refuses signed mode without one
            try:
                return check_signed_token(token, secret, self.wall_clock()).user_id
            except ValueError as exc:
                raise LoginRefused(f"signed session token refused: {exc}") from None
        user_id = user_id_of(token)
        if user_id is None or len(user_id) > 128:
            raise LoginRefused("session token names no user")
        return user_id

    async def unknown_user(self, user_id: str, **ctx: Any) -> bool:
        """Whether FlowSpace's database says there is no such user (PostgreSQL only).

        The SQLite file has no user table (it knows only users the CLI named), so there the
        answer is always ``False``; so it is when the database cannot answer in time: the
        token was valid, and an outage must not lock every logged-in user out.
        """
        storage = self.storage
        if storage is None or storage.kind != "postgres":
            return False
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                return not await storage.user_exists(user_id)
        except (StorageError, TimeoutError) as exc:
            self._lookup_failed("user", exc, ctx)
            return False

    # -- roles ---------------------------------------------------------------------------------

    async def complete(
        self, identity: Identity, space_id: str, *, app_role: str | None, **ctx: Any
    ) -> Identity:
        """``identity`` with its role in ``space_id`` and, for a guest, its GuestSession id.

        The app's role, when its verify answer names one, outranks the database's (see
        :func:`~spacesync.domain.auth.rank_role`). A logged-in user is looked up by user id, a
        guest by the GuestSession of its token; a failed lookup gives PARTICIPANT.
        """
        storage = self.storage
        if identity.user_id is not None:
            if app_role is not None or storage is None:
                return replace(identity, role=rank_role(RoleFacts(), app_role))
            key = (space_id, "user", identity.user_id)
        elif identity.session_token:
            if storage is None:
                return replace(identity, role=rank_role(RoleFacts(), app_role))
            digest = hashlib.sha256(identity.session_token.encode("utf-8", "surrogatepass"))
            key = (space_id, "guest", digest.hexdigest())
        else:
            return replace(identity, role=rank_role(RoleFacts(), app_role))
        cached = self._cached(key)
        if cached is not None:
            role, guest_id = cached
        else:
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    role, guest_id = await self._lookup(storage, identity, space_id)
            except (StorageError, TimeoutError) as exc:
                self._lookup_failed("role", exc, ctx)
                return replace(identity, role=rank_role(RoleFacts(), app_role))
            self._remember(key, role, guest_id)
        return replace(
            identity, role=rank_role(RoleFacts(), app_role or role), guest_session_id=guest_id
        )

    async def _lookup(
        self, storage: Storage, identity: Identity, space_id: str
    ) -> tuple[str, str | None]:
        if identity.user_id is not None:
            user_id = identity.user_id
            facts = RoleFacts(super_admin=await storage.is_super_admin(user_id))
            if not facts.super_admin:
                facts = RoleFacts(owns_space=await storage.space_owner(space_id) == user_id)
            if not facts.owns_space and not facts.super_admin:
                facts = RoleFacts(member_role=await storage.member_role(space_id, user_id=user_id))
            return rank_role(facts), None
        assert identity.session_token is not None
        guest_id = await storage.guest_session_id(space_id, identity.session_token)
        if guest_id is None:
            return "PARTICIPANT", None
        member = await storage.member_role(space_id, guest_session_id=guest_id)
        return rank_role(RoleFacts(member_role=member)), guest_id

    def _cached(self, key: tuple[str, str, str]) -> tuple[str, str | None] | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, role, guest_id = entry
        if expires <= self.clock():
            del self._cache[key]
            return None
        return role, guest_id

    def _remember(self, key: tuple[str, str, str], role: str, guest_id: str | None) -> None:
        self._cache.pop(key, None)
        self._cache[key] = (self.clock() + ROLE_TTL, role, guest_id)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    def _lookup_failed(self, what: str, exc: BaseException, ctx: dict[str, Any]) -> None:
        self.failures += 1
        detail = str(exc) or f"no answer within {LOOKUP_TIMEOUT:g}s"
        log.warn(
            "E4007",
            f"Database lookup at join failed ({what}); joining as PARTICIPANT: {detail}",
            **ctx,
        )

    # -- metrics -------------------------------------------------------------------------------

    async def database_figures(self) -> dict[str, Any]:
        """``/metrics`` ``database``: whether the storage answers a trivial query now, how
        fast, and how many lookups at join failed since start."""
        storage = self.storage
        kind = "postgres" if self.settings.database_url else "sqlite"
        figures: dict[str, Any] = {
            "kind": kind,
            "up": False,
            "latencyMs": None,
            "failures": self.failures,
        }
        if storage is None:
            return figures
        started = time.perf_counter()
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await storage.ping()
        except (StorageError, TimeoutError):
            return figures
        figures["up"] = True
        figures["latencyMs"] = round((time.perf_counter() - started) * 1000, 1)
        return figures

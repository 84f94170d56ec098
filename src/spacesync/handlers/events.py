"""Socket.IO event handlers: validate -> domain/store -> emit (SPEC §2, §4, §6, §7, §8).

Handlers are thin. Every payload goes through :mod:`spacesync.protocol` first; every identity is
the one bound to the socket, never one a client sends; every reply goes through the
:class:`~spacesync.fanout.Broadcaster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal

import orjson
import socketio

from .. import protocol
from ..chatlog import Author, ChatLog, Pending
from ..config import Settings
from ..domain.chat import sanitize
from ..domain.identity import (
    Identity,
    anonymous_player_id,
    distinct_nickname,
    nickname_key,
    same_name_with_suffix,
    token_user_id,
)
from ..domain.limits import (
    EVENT_LIMITS,
    INVITE_PAIR,
    INVITE_TARGET,
    JOIN_PLAYER,
    MOVE,
    EventLimit,
    KeyedHit,
    NoticeThrottle,
    Rule,
    Verdict,
)
from ..domain.parties import Arrival, Departure, Member, PartyError, SpaceParties
from ..domain.space import PlayerState
from ..fanout import Broadcaster
from ..integrations.app_api import AppClient, ExitOutbox, VerifyStatus, exit_event_for
from ..integrations.verify_guard import VerifyGuard
from ..observability.abuse import AbuseCounters
from ..observability.logging import log
from ..protocol import BadInput, ChatMessage
from ..state.base import Departed, JoinResult, StateStore, StoreUnavailable
from ..storage import Storage
from ..texts import Catalog, Text, TextError
from .identity import Access, LoginRefused
from .live import LiveEvents
from .moderation import Moderation
from .session import PreVerified, Session

Handler = Callable[[Session, Any], Awaitable[None]]

# Events a socket may send before it has joined a space; everything else is ignored until then.
_BEFORE_JOIN = frozenset({"join:space", "proximity:set"})
_MOVE_PREFIX = '42["player:move",'


def _now_ms() -> int:
    return int(time.time() * 1000)


def _message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


class AuthRefused(TextError):
    """The session cannot be accepted (production); its text and code go to the client."""

    def __init__(self, key: str, code: str) -> None:
        super().__init__(key)
        self.code = code


class SpaceServer:
    """Binds the event handlers to a Socket.IO server."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: Settings,
        store: StateStore,
        broadcaster: Broadcaster,
        app: AppClient,
        exits: ExitOutbox,
        abuse: AbuseCounters,
        storage: Storage | None = None,
        *,
        texts: Catalog,
    ) -> None:
        self.sio = sio
        self.texts = texts
        """Every text a player reads, in the node's ``LOCALE`` (logs stay English)."""
        self.abuse = abuse
        self.settings = settings
        self.store = store
        self.out = broadcaster
        self.app = app
        self.verifier = VerifyGuard(
            app,
            abuse,
            failure_ttl=settings.verify_failure_ttl,
            failures_per_minute=settings.verify_failures_per_ip,
        )
        self.exits = exits
        self.access = Access(settings, lambda: self.storage)
        """Logged-in users' tokens (``AUTH_SESSIONS``) and roles from the database."""
        self.storage = storage
        self.chat_log = ChatLog(broadcaster, Catalog(settings.locale), storage)
        """Writes chat, whispers and party messages after delivery (see :mod:`..chatlog`)."""
        self.sessions: dict[str, Session] = {}
        self.moderation = Moderation(
            sio=sio,
            out=broadcaster,
            store=store,
            texts=texts,
            sessions=self.sessions,
            storage=lambda: self.storage,
            notice=self._notice,
            refuse=self._refuse,
        )
        """Mutes, kicks, bans, message deletion, announcements (see :mod:`.moderation`)."""
        self.per_address: dict[str, int] = {}
        self.shutting_down = False
        self.events_handled = 0
        self.bad_inputs = 0
        self.notices = NoticeThrottle()
        self._deferred_lines: dict[tuple[str, str], tuple[str, bool, bool]] = {}
        self._line_tasks: set[asyncio.Task[None]] = set()
        self._changing: set[str] = set()
        """Sockets whose join or leave is under way (see :meth:`holds_socket`)."""
        self._departing = 0
        self._departures_done = asyncio.Event()
        self._departures_done.set()
        self.live = LiveEvents(self)
        """Reactions, recording, spotlight and map objects (see :mod:`.live`)."""
        self._register()

    # -- wiring --------------------------------------------------------------------------------

    def _register(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        routes: dict[str, Handler] = {
            "join:space": self.join_space,
            "leave:space": self.leave_space,
            "player:move": self.move,
            "player:jump": self.jump,
            "player:updateProfile": self.update_profile,
            "chat:message": self.chat_message,
            "whisper:send": self.whisper_send,
            "party:create": self.party_create,
            "party:invite": self.party_invite,
            "party:accept": self.party_accept,
            "party:decline": self.party_decline,
            "party:leave": self.party_leave,
            "party:message": self.party_message,
            "party:join": self.party_join_zone,
            "joinParty": self.party_join_zone,
            "leaveParty": self.party_leave_zone,
            "proximity:set": self.proximity_set,
            **self.moderation.routes(),
        }
        routes.update(self.live.routes())
        for event, handler in routes.items():
            sio.on(event, self._guard(event, handler))
        sio.on("*", self._ignore_unknown)

    async def malformed(self, sid: str, event: str | None) -> None:
        """A packet that could not be decoded at all (SPEC §8): answered with ``error
        INVALID_PAYLOAD``, except before joining when its event can be read and is not a join
        (events other than a join are ignored until then)."""
        self.bad_inputs += 1
        session = self.sessions.get(sid)
        if session is None or session.closing_reason is not None:
            return
        if not session.joined and event is not None and event != "join:space":
            return  # an event that is ignored before joining, however malformed
        await self._reply_error(session, None, self.texts.text("error.malformed_packet"))

    def fast_message(self, eio_sid: str, text: str) -> bool:
        """Handle a well-formed ``player:move`` from a joined socket without the Socket.IO
        dispatch; return False (and touch nothing) for anything else, which then takes the
        ordinary path with its validation errors and replies."""
        if not text.startswith(_MOVE_PREFIX):
            return False
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        session = self.sessions.get(sid) if sid is not None else None
        if session is None or session.closing_reason is not None or not session.joined:
            return False
        try:
            args = orjson.loads(text[2:])
            if not isinstance(args, list) or len(args) != 2:
                return False
            move = protocol.parse_move(protocol.check_envelope((args[1],)))
        except Exception:
            return False  # the ordinary path validates it again and answers
        self.events_handled += 1
        self._apply_move(session, move)
        return True

    def _apply_move(self, session: Session, move: protocol.Move) -> None:
        """Store the position and queue it for the space's next tick."""
        assert session.space_id is not None and session.identity is not None
        now = time.monotonic()
        if not session.limits.hit_move(now):
            self._hold_move(session, move, now)
            return
        player = self.store.move(
            session.space_id,
            session.identity.player_id,
            move.x,
            move.y,
            move.direction,
            move.is_moving,
        )
        if player is not None:
            self.out.queue_move(session.space_id, session.sid, player.id, player.moved())

    def _guard(self, event: str, handler: Handler) -> Callable[..., Awaitable[None]]:
        """Wrap a handler: joined check, binary check, bad input replies, no escaped errors."""
        channel = protocol.ERROR_CHANNEL.get(event)
        limit = EVENT_LIMITS.get(event)

        async def guarded(sid: str, *args: Any) -> None:
            session = self.sessions.get(sid)
            if session is None or session.closing_reason is not None:
                return
            self.events_handled += 1
            if event not in _BEFORE_JOIN and not session.joined:
                log.debug("I3000", "Event before join ignored", event=event, **session.context())
                return
            payload = args[0] if args else None
            now = time.monotonic()
            taken: KeyedHit | None = None
            if limit is not None:
                admitted, taken = await self._admit(session, event, limit, now)
                if not admitted:
                    return
            try:
                payload = protocol.check_envelope(args)
                await handler(session, payload)
                if limit is not None:
                    self._record(session, limit, now)
                    taken = None
            except BadInput as exc:
                self.bad_inputs += 1
                target = channel
                if event == "chat:message":
                    target = {"whisper": "whisper:error", "party": "party:error"}.get(
                        protocol.chat_type(payload), "chat:error"
                    )
                log.warn(
                    "E3001", f"Bad payload for {event}: {exc}", event=event, **session.context()
                )
                await self._reply_error(session, target, self.texts.render(exc.text))
            except PartyError as exc:
                message = self.texts.render(exc.text)
                await self.out.to_sid(session.sid, "party:error", {"message": message})
            except StoreUnavailable:
                log.warn(
                    "E3003",
                    f"{event} refused: shared state is unavailable",
                    event=event,
                    **session.context(),
                )
                message = self.texts.text("error.unavailable")
                if channel is None:
                    await self._safe_error(session, message, "UNAVAILABLE")
                else:
                    await self.out.to_sid(session.sid, channel, {"message": message})
            except Exception as exc:
                log.error(
                    "E3003",
                    f"Handler for {event} failed",
                    exc=exc,
                    event=event,
                    **session.context(),
                )
                await self._safe_error(session, self.texts.text("error.internal"), "INTERNAL_ERROR")
            finally:
                if taken is not None:  # refused by its handler: the allowance is not used
                    await self.store.give_back(taken)

        return guarded

    # -- rate limits (see domain/limits.py) -----------------------------------------------------

    async def _admit(
        self, session: Session, event: str, limit: EventLimit, now: float
    ) -> tuple[bool, KeyedHit | None]:
        """Whether the event fits its per-socket and per-player limits; answers it if not.

        The per-socket limit is only checked here: :meth:`_record` counts the event once its
        handler accepted it, so malformed payloads keep their own replies (SPEC §8) and do not
        eat the allowance. The per-player limit is shared by the player's sockets on every
        node, so the store checks and counts it in one step; the hit returned is given back
        if the handler does not accept the event."""
        if not session.limits.admit(limit.socket, now):
            await self._refuse_excess(session, event, limit.socket, now)
            return False, None
        if limit.player is None or session.identity is None:
            return True, None
        hit = await self.store.hit_limit(limit.player, session.identity.player_id, now)
        if hit.allowed:
            return True, hit
        await self._refuse_excess(session, event, limit.player, now, hit.retry_after)
        return False, None

    def _record(self, session: Session, limit: EventLimit, now: float) -> None:
        session.limits.record(limit.socket, now)

    async def _over_keyed_limit(self, session: Session, event: str, rule: Rule, key: str) -> bool:
        """Count one event under a limit shared by sockets (per player, per invitation target),
        on every node of a cluster; True, after answering the client, if it is over."""
        now = time.monotonic()
        hit = await self.store.hit_limit(rule, key, now)
        if hit.allowed:
            return False
        await self._refuse_excess(session, event, rule, now, hit.retry_after)
        return True

    async def _refuse_excess(
        self, session: Session, event: str, rule: Rule, now: float, wait: int | None = None
    ) -> None:
        verdict = self._note_excess(session, rule, now)
        if verdict is not Verdict.QUIET:
            await self._answer_excess(session, event, rule, verdict, now, wait)

    def _note_excess(self, session: Session, rule: Rule, now: float) -> Verdict:
        """Count one refused event and log the first of each window (logs stay bounded)."""
        verdict = session.limits.refuse(rule, now)
        self.abuse.count(rule.name)
        if verdict is Verdict.NOTIFY:
            log.info(
                "E3002",
                f"Rate limited: too many {rule.label}",
                rule=rule.name,
                limit=rule.limit,
                windowSeconds=rule.window,
                **session.context(),
            )
        elif verdict is Verdict.DISCONNECT:
            self.abuse.count("rateLimited.disconnect")
            log.warn(
                "E3002",
                "Rate limited: sustained excess, disconnecting",
                rule=rule.name,
                refused=session.limits.refused_total,
                **session.context(),
            )
        return verdict

    async def _answer_excess(
        self,
        session: Session,
        event: str,
        rule: Rule,
        verdict: Verdict,
        now: float,
        wait: int | None = None,
    ) -> None:
        """One reply per window on the event's channel, or the disconnect of a client that keeps
        going; nobody else is told anything."""
        if session.closing_reason is not None or session.sid not in self.sessions:
            return
        if verdict is Verdict.DISCONNECT:
            session.closing_reason = "disconnect:rate limited"
            message = self.texts.text("error.rate_limited.disconnected")
            await self._safe_error(session, message, "RATE_LIMITED")
            self.out.write_out()  # the error goes before the disconnect
            await self.sio.disconnect(session.sid)
            return
        if wait is None:  # a shared limit's window follows Redis time: the store gives it
            wait = rule.retry_after(now)
        message = self.texts.rate_limited(rule.name, wait)
        channel = protocol.ERROR_CHANNEL.get(event, "error")
        await self.out.to_sid(
            session.sid, channel, {"message": message, "code": "RATE_LIMITED", "retryAfter": wait}
        )

    def _hold_move(self, session: Session, move: protocol.Move, now: float) -> None:
        """A move over :data:`~spacesync.domain.limits.MOVE` is dropped, but the newest one is
        kept and applied when the window ends: positions are state, and the newest state is
        always delivered (SPEC §4). Costs one timer per window, not one per move."""
        limits = session.limits
        limits.held_move = move
        limits.held_since_join = session.joined_at
        if not limits.held_scheduled:
            limits.held_scheduled = True
            delay = (limits.move_index + 1) * MOVE.window - now + 0.001
            asyncio.get_running_loop().call_later(delay, self._release_move, session)
        verdict = self._note_excess(session, MOVE, now)
        if verdict is not Verdict.QUIET:
            self.sio.eio.spawn(self._answer_excess(session, "player:move", MOVE, verdict, now))

    def _release_move(self, session: Session) -> None:
        limits = session.limits
        limits.held_scheduled = False
        move, limits.held_move = limits.held_move, None
        if (
            move is None
            or self.sessions.get(session.sid) is not session
            or session.closing_reason is not None
            or not session.joined
            or session.joined_at != limits.held_since_join
        ):
            return
        try:
            self._apply_move(session, move)
        except Exception as exc:
            log.error("E3003", "Applying a held move failed", exc=exc, **session.context())

    async def _reply_error(self, session: Session, channel: str | None, message: str) -> None:
        if channel is None:
            await self.out.to_sid(
                session.sid, "error", {"message": message, "code": "INVALID_PAYLOAD"}
            )
        else:
            await self.out.to_sid(session.sid, channel, {"message": message})

    async def _safe_error(self, session: Session, message: str, code: str) -> None:
        try:
            await self.out.to_sid(session.sid, "error", {"message": message, "code": code})
        except Exception:  # pragma: no cover - the socket may already be gone
            pass

    async def _ignore_unknown(self, event: Any, sid: str, *args: Any) -> None:
        if isinstance(event, str):
            log.debug("I3001", "Unknown event ignored", event=event[:100], socketId=sid)
            return
        # An event "name" that is not a string is a malformed packet, not an unknown event.
        self.bad_inputs += 1
        log.warn("E3001", "Event name must be a string", socketId=sid)
        message = self.texts.text("error.event_name")
        await self.out.to_sid(sid, "error", {"message": message, "code": "INVALID_PAYLOAD"})

    # -- connection ----------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.shutting_down:
            raise socketio.exceptions.ConnectionRefusedError(protocol.CONNECT_SHUTTING_DOWN)
        # The client address the transport resolved (X-Forwarded-For from a trusted proxy).
        address = environ.get("spacesync.address") or _client_address(environ)
        # The request's environment (every header, the request object) would otherwise stay
        # referenced for the whole life of the connection; nothing reads it after this.
        environ.clear()
        session = Session(sid=sid, address=address)
        if isinstance(auth, dict) and isinstance(auth.get("sessionToken"), str):
            await self._verify_at_connect(session, auth)
        self.sessions[sid] = session
        self.per_address[address] = self.per_address.get(address, 0) + 1
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self.sio.environ.pop(eio_sid, None)  # not needed after the connect
        log.info("E2001", "Client connected", socketId=sid, address=address)

    async def _verify_at_connect(self, session: Session, auth: dict[str, Any]) -> None:
        """Connect-time authentication (SPEC §2.2), bound to the space it was verified for.

        The app is asked whether a session is valid *for a space*, so its answer counts only
        there. The token is verified here only when ``auth.spaceId`` is a usable space id; a later
        join of that space uses the identity without a second call. A join of another space, and
        every join after a connect that named no usable space (missing, null, numeric,
        malformed), verifies the token at the join for the join's space: an identity verified
        for ``{spaceId: null}`` would otherwise open every space. The token is kept for a join
        that sends none. The join's token rule applies (:func:`protocol.parse_session_token`):
        a token the join would refuse is never sent to the app from here either.
        """
        ctx = {"socketId": session.sid, "address": session.address}
        try:
            token = protocol.parse_session_token(auth.get("sessionToken"))
        except BadInput as exc:
            self.abuse.count("sessionTokenTooLong")
            log.warn("E1002", f"Session token refused at connect: {exc}", **ctx)
            raise socketio.exceptions.ConnectionRefusedError(
                protocol.CONNECT_INVALID_SESSION
            ) from None
        if token is None:
            return
        session.connect_token = token
        space_id = auth.get("spaceId")
        if not isinstance(space_id, str) or not protocol.ID_RE.fullmatch(space_id):
            return  # verified at the join, for the join's space
        if self.settings.development and token.startswith("dev-"):
            return  # development tokens are resolved from the join payload
        if self.access.checks_locally(token):
            # Checked here so a forged token fails the connection; resolved at the join, which
            # brings the nickname and avatar a logged-in user chose.
            try:
                self.access.logged_in_user(token)
            except LoginRefused as exc:
                log.warn("E1002", f"Session verification failed: {exc}", spaceId=space_id, **ctx)
                if not self.settings.development:
                    raise socketio.exceptions.ConnectionRefusedError(
                        protocol.CONNECT_INVALID_SESSION
                    ) from None
            return
        result = await self.verifier.verify(
            token, space_id, session.address, self._verify_url(token)
        )
        if result.verification is not None:
            v = result.verification
            identity = Identity(
                player_id=v.participant_id,
                nickname=v.nickname or "",
                avatar_color=v.avatar_color,
                avatar_config=v.avatar_config,
                role=v.role,
                session_token=token,
                user_id=v.user_id or token_user_id(token),
                verified=True,
            )
            app_role = v.role if v.role_given else None
            session.pre_verified = PreVerified(token, space_id, identity, app_role)
            return
        self._log_verification_failure(result.status, result.detail, spaceId=space_id, **ctx)
        if not self.settings.development:
            raise socketio.exceptions.ConnectionRefusedError(protocol.CONNECT_INVALID_SESSION)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        left = self.per_address.get(session.address, 1) - 1
        if left > 0:
            self.per_address[session.address] = left
        else:
            self.per_address.pop(session.address, None)
        why = session.closing_reason or f"disconnect:{reason or 'unknown'}"
        if session.closing_reason not in ("replaced", "reaped"):
            # Also when not joined yet: a join under way finishes first (see _membership).
            try:
                await self._tracked_leave(session, why, connected=False)
            except Exception as exc:
                log.error("E3003", "Leaving on disconnect failed", exc=exc, **session.context())
        log.info("E2002", "Client disconnected", reason=str(reason), socketId=sid)

    # -- identity ------------------------------------------------------------------------------

    def _log_verification_failure(self, status: VerifyStatus, detail: str, **ctx: Any) -> None:
        if status is VerifyStatus.INVALID:
            log.warn("E1002", f"Session verification failed: {detail}", **ctx)
        elif status is VerifyStatus.TIMEOUT:
            log.error("E4003", f"Session verification timed out: {detail}", **ctx)
        else:
            log.error("E4002", f"Session verification API unreachable: {detail}", **ctx)

    async def _resolve_identity(self, session: Session, join: protocol.JoinSpace) -> Identity:
        """Decide who is joining (SPEC §2.1); raises :class:`AuthRefused` in production."""
        dev = self.settings.development
        token = join.session_token
        pre = session.pre_verified
        if pre is not None and token in (None, pre.token) and pre.space_id == join.space_id:
            identity = pre.identity
            if not identity.nickname:
                if join.nickname is None:
                    raise BadInput("error.nickname.required")
                identity = identity.with_profile(join.nickname, None, None)
            return await self.access.complete(
                identity, join.space_id, app_role=pre.app_role, **session.context()
            )
        if token is None:
            token = session.connect_token  # verified below, for this join's space

        def client_identity(player_id: str | None, role: str | None) -> Identity:
            if join.nickname is None:
                raise BadInput("error.nickname.required")
            return Identity(
                player_id=player_id or anonymous_player_id(),
                nickname=join.nickname,
                avatar_color=join.avatar_color,
                avatar_config=join.avatar_config,
                role=role or "PARTICIPANT",
                session_token=token,
                user_id=token_user_id(token),
                verified=False,
            )

        ctx = session.context() | {"spaceId": join.space_id}
        if not token:
            if not dev:
                log.warn("E1001", "Session token required", **ctx)
                raise AuthRefused("error.session.required", "SESSION_REQUIRED")
            log.warn("E1001", "Joining without a session token (development)", **ctx)
            return client_identity(None, join.role)
        if dev and token.startswith("dev-"):
            return client_identity(join.player_id, join.role)
        if self.access.checks_locally(token):
            try:
                user_id = self.access.logged_in_user(token)
                if await self.access.unknown_user(user_id, **ctx):
                    raise LoginRefused("no such user in the database")
            except LoginRefused as exc:
                log.warn("E1002", f"Session verification failed: {exc}", **ctx)
                if not dev:
                    raise AuthRefused("error.session.invalid", "INVALID_SESSION") from None
                return client_identity(join.player_id, join.role)
            if join.nickname is None:
                raise BadInput("error.nickname.required")
            # As the original: the player id is the user's, the name and avatar the ones the
            # user chose on the page (the client's join).
            user = Identity(
                player_id=f"user-{user_id}",
                nickname=join.nickname,
                avatar_color=join.avatar_color,
                avatar_config=join.avatar_config,
                session_token=token,
                user_id=user_id,
                verified=True,
            )
            return await self.access.complete(user, join.space_id, app_role=None, **ctx)
        result = await self.verifier.verify(
            token, join.space_id, session.address, self._verify_url(token)
        )
        verification = result.verification
        if verification is None:
            self._log_verification_failure(
                result.status, result.detail, address=session.address, **ctx
            )
            if not dev:
                raise AuthRefused("error.session.invalid", "INVALID_SESSION")
            return client_identity(join.player_id, join.role)
        nickname = verification.nickname or join.nickname
        if nickname is None:
            raise BadInput("error.nickname.required")
        app_gave_avatar = verification.avatar_given
        verified = Identity(
            player_id=verification.participant_id,
            nickname=nickname,
            avatar_color=verification.avatar_color if app_gave_avatar else join.avatar_color,
            avatar_config=verification.avatar_config if app_gave_avatar else join.avatar_config,
            role=verification.role,
            session_token=token,
            user_id=verification.user_id or token_user_id(token),
            verified=True,
        )
        app_role = verification.role if verification.role_given else None
        return await self.access.complete(verified, join.space_id, app_role=app_role, **ctx)

    def _verify_url(self, token: str) -> str | None:
        """``AUTH_VERIFY_URL`` for a logged-in user's token, the guest route for the rest."""
        return self.access.verify_url if token.startswith("auth-") else None

    # -- join / leave --------------------------------------------------------------------------

    async def join_space(self, session: Session, payload: Any) -> None:
        join = protocol.parse_join(payload)
        try:
            identity = await self._resolve_identity(session, join)
        except AuthRefused as exc:
            await self._refuse(session, self.texts.render(exc.text), exc.code)
            return
        if session.sid not in self.sessions:
            return  # disconnected while the app was verifying
        if await self._over_keyed_limit(session, "join:space", JOIN_PLAYER, identity.player_id):
            return
        if not await self.moderation.admit(session, join.space_id, identity):
            return  # banned from this space
        async with self._membership(session):
            if self.sessions.get(session.sid) is not session or session.closing_reason:
                return  # closed while an earlier join or leave of this socket ran
            await self._enter(session, join, identity)

    @contextlib.asynccontextmanager
    async def _membership(self, session: Session) -> AsyncIterator[None]:
        """One join, leave or departure of a socket at a time.

        In a cluster each of them awaits Redis several times. Two joins sent together (two
        long-polling requests at once) would otherwise both see the socket in no space and
        put it in two; a disconnect arriving while a join awaits Redis would find nothing to
        leave, and the join would then list a player whose socket is gone, for ever. The
        departure at disconnect waits here for the join under way, then removes the player.
        """
        await session.membership.acquire()
        session.membership_holder = asyncio.current_task()
        self._changing.add(session.sid)
        try:
            yield
        finally:
            self._changing.discard(session.sid)
            session.membership_holder = None
            session.membership.release()

    def holds_socket(self, space_id: str, player_id: str, sid: str) -> bool:
        """Whether ``sid`` is a live socket of this node joined to ``space_id`` as
        ``player_id``, or one whose join or leave is under way (its entry may be changing)."""
        if sid in self._changing:
            return True
        session = self.sessions.get(sid)
        return (
            session is not None
            and session.space_id == space_id
            and session.identity is not None
            and session.identity.player_id == player_id
        )

    async def _enter(self, session: Session, join: protocol.JoinSpace, identity: Identity) -> None:
        """The join itself, under the socket's :meth:`_membership`."""
        if session.joined:
            same = session.space_id == join.space_id and (
                session.identity is not None and session.identity.player_id == identity.player_id
            )
            if same:
                await self._send_room_state(session, join.space_id)
                return
            await self._leave(session, "leave", connected=True)
        now = time.time()
        try:
            result = await self.store.join(join.space_id, identity, session.sid, now)
        except Exception as exc:
            log.error("E2004", "Joining the space failed", exc=exc, **session.context())
            await self._safe_error(session, self.texts.text("error.join.failed"), "JOIN_FAILED")
            return
        if result.replaced_sid is None and self.sessions.get(session.sid) is not session:
            # Closed while Redis wrote the entry: undone before anyone was told. (A join that
            # took over an older socket goes on; the departure at disconnect then follows.)
            await self._undo_join(join.space_id, identity.player_id, session.sid)
            return
        identity = await self._distinct_nickname(join.space_id, result)
        session.identity = identity
        session.space_id = join.space_id
        if result.replaced_sid is None:
            # The same session back within the EXIT grace period: its stay goes on.
            started = await self.exits.resume_stay(
                join.space_id, identity.player_id, identity.session_token
            )
            if started is not None:
                now = started
                await self.store.continue_stay(join.space_id, identity.player_id, session.sid, now)
        session.joined_at = now
        session.batching = join.position_batching
        await self.out.enter_space(
            session.sid, join.space_id, identity.player_id, join.position_batching
        )
        if result.replaced_node is not None and result.replaced_sid is not None:
            self.out.evict_elsewhere(
                result.replaced_node, join.space_id, identity.player_id, result.replaced_sid
            )
            log.warn(
                "E2003",
                "Duplicate session: older connection on another node closed",
                replacedSocketId=result.replaced_sid,
                replacedNode=result.replaced_node,
                **session.context(),
            )
        elif result.replaced_sid is not None:
            await self._evict_replaced(result.replaced_sid, session.context())
        await self.out.to_sid(
            session.sid,
            "room:joined",
            {
                "spaceId": join.space_id,
                "players": [p.position() for p in result.roster],
                "yourPlayerId": identity.player_id,
                "proximity": await self.store.proximity(join.space_id),
            },
        )
        await self.live.send_join_state(session, join.space_id)
        await self.out.to_sid(
            session.sid, "proximity:status", {"enabled": await self.store.proximity(join.space_id)}
        )
        if result.replaced_sid is None:
            await self.out.to_space(
                join.space_id, "player:joined", result.player.position(), skip_sid=session.sid
            )
            await self._presence_line(join.space_id, identity.player_id, identity.nickname, True)
        log.info(
            "I2001",
            "Player joined space",
            verified=identity.verified,
            role=identity.role,
            replaced=result.replaced_sid is not None,
            **session.context(),
        )

    async def _distinct_nickname(self, space_id: str, result: JoinResult) -> Identity:
        """Give the joiner a name no other player of the space has: "Ann" becomes "Ann (2)".

        A join is not refused for a taken name, since the name may be the app's and the player
        could not pick another. The roster the join returned is enough (no second read of the
        space); the player's own earlier socket does not count, so a player rejoining keeps
        their name. Two players joining under one name at the same instant on two nodes can
        still both get it: each join sees only the entries written before it.
        """
        player = result.player
        taken = {nickname_key(p.identity.nickname) for p in result.roster if p.id != player.id}
        nickname = distinct_nickname(player.identity.nickname, taken)
        if nickname != player.identity.nickname:
            player.identity = replace(player.identity, nickname=nickname)
            await self.store.update_identity(space_id, player.identity)
        return player.identity

    async def _undo_join(self, space_id: str, player_id: str, sid: str) -> None:
        """Remove the entry of a join whose socket closed before it was announced. No EXIT
        (the stay never began) and no notice; only ``player:left``, for a newcomer whose
        ``room:joined`` may have listed the entry meanwhile."""
        try:
            removed = await self.store.leave(space_id, player_id, sid)
        except StoreUnavailable:
            return  # held by the store and settled when Redis answers again
        if removed is not None:
            await self.out.to_space(space_id, "player:left", {"id": player_id}, about=player_id)
        log.info("I2003", "Join undone: the socket closed first", socketId=sid, spaceId=space_id)

    async def _presence_line(
        self,
        space_id: str,
        player_id: str,
        nickname: str,
        present: bool,
        *,
        tell_local: bool = True,
        lost: bool = False,
    ) -> None:
        """The "X joined" / "X left" chat line about a player, now or coalesced for later
        (churn of one player is not announced line by line; see :class:`NoticeThrottle`).
        ``lost``: the player did not leave but lost the connection, which players are told
        apart, as in FlowSpace (a drop may be worth waiting for; a leave is not)."""
        key = (space_id, player_id)
        when = self.notices.change(space_id, player_id, present, time.monotonic())
        if when == 0.0:
            await self._send_presence_line(
                space_id, player_id, nickname, present, tell_local, lost=lost
            )
            return
        if when is None:
            if key in self._deferred_lines:
                self._deferred_lines[key] = (nickname, tell_local, lost)
            self.abuse.count("churnNoticeSuppressed")
            return
        self._deferred_lines[key] = (nickname, tell_local, lost)
        self.abuse.count("churnNoticeDeferred")
        asyncio.get_running_loop().call_later(when, self._presence_line_due, space_id, player_id)

    def _presence_line_due(self, space_id: str, player_id: str) -> None:
        nickname, tell_local, lost = self._deferred_lines.pop(
            (space_id, player_id), ("", True, False)
        )
        present = self.notices.due(space_id, player_id, time.monotonic())
        if present is None or not nickname or self.shutting_down:
            return
        task = asyncio.create_task(
            self._send_presence_line(space_id, player_id, nickname, present, tell_local, lost=lost)
        )
        self._line_tasks.add(task)
        task.add_done_callback(self._line_tasks.discard)

    async def _send_presence_line(
        self,
        space_id: str,
        player_id: str,
        nickname: str,
        present: bool,
        tell_local: bool,
        *,
        lost: bool = False,
    ) -> None:
        key = "notice.joined" if present else "notice.disconnected" if lost else "notice.left"
        notice = self._notice(self.texts.text(key, nickname=sanitize(nickname)))
        about = None if present else player_id  # a departure notice names its player
        if tell_local:
            await self.out.to_space(space_id, "chat:system", notice, about=about)
        else:
            self.out.publish_remote(space_id, "chat:system", notice, about=about)

    async def _send_room_state(self, session: Session, space_id: str) -> None:
        assert session.identity is not None
        roster = await self.store.players(space_id)
        enabled = await self.store.proximity(space_id)
        await self.out.to_sid(
            session.sid,
            "room:joined",
            {
                "spaceId": space_id,
                "players": [p.position() for p in roster],
                "yourPlayerId": session.identity.player_id,
                "proximity": enabled,
            },
        )
        await self.live.send_join_state(session, space_id)
        await self.out.to_sid(session.sid, "proximity:status", {"enabled": enabled})

    async def evict_replaced_here(self, space_id: str, player_id: str, sid: str) -> None:
        """Another node took over this player's socket ``sid`` (SPEC §2.3)."""
        old = self.sessions.get(sid)
        if old is None or old.space_id != space_id or old.identity is None:
            return
        if old.identity.player_id != player_id:
            return
        self.store.forget_local(space_id, player_id, sid)
        await self._evict_replaced(sid, {"spaceId": space_id, "playerId": player_id})

    async def _evict_replaced(self, old_sid: str, context: dict[str, str | None]) -> None:
        """The player joined again elsewhere: close the older socket quietly (SPEC §2.3)."""
        old = self.sessions.get(old_sid)
        if old is None:
            return
        old.closing_reason = "replaced"
        if old.space_id is not None and old.identity is not None:
            await self.out.leave_space(old_sid, old.space_id, old.identity.player_id)
        log.warn(
            "E2003",
            "Duplicate session: older connection closed",
            replacedSocketId=old_sid,
            **context,
        )
        await self.out.to_sid(
            old_sid,
            "error",
            {
                "message": self.texts.text("error.session.duplicate"),
                "code": "DUPLICATE_SESSION",
            },
        )
        self.out.write_out()  # the error goes before the disconnect
        await self.sio.disconnect(old_sid)

    async def _refuse(self, session: Session, message: str, code: str) -> None:
        session.closing_reason = "refused"
        await self.out.to_sid(session.sid, "error", {"message": message, "code": code})
        self.out.write_out()  # the error goes before the disconnect
        await self.sio.disconnect(session.sid)

    async def leave_space(self, session: Session, payload: Any) -> None:
        await self._tracked_leave(session, "leave", connected=True)

    async def _tracked_leave(self, session: Session, reason: str, *, connected: bool) -> None:
        """``_leave``, counted while it runs: in a cluster a departure awaits Redis several
        times before its EXIT reaches the outbox, and a node that stops must wait for it
        (:meth:`departures_settled`) rather than close the outbox under it."""
        self._departing += 1
        self._departures_done.clear()
        try:
            if session.membership_holder is asyncio.current_task():
                await self._leave(session, reason, connected=connected)  # closed by itself
                return
            async with self._membership(session):
                if not connected and session.closing_reason in ("replaced", "reaped"):
                    return  # taken over (or removed by the others) while waiting
                await self._leave(session, reason, connected=connected)
        finally:
            self._departing -= 1
            if not self._departing:
                self._departures_done.set()

    async def departures_settled(self, timeout: float) -> int:
        """Wait until no departure is under way, or ``timeout``; returns how many still are."""
        if self._departing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._departures_done.wait(), max(0.0, timeout))
        return self._departing

    async def _leave(self, session: Session, reason: str, *, connected: bool) -> None:
        space_id, identity = session.space_id, session.identity
        if space_id is None or identity is None:
            return
        player_id = identity.player_id
        session.space_id = None
        await self.out.flush(space_id)
        if connected:
            await self.out.leave_space(session.sid, space_id, player_id)
        removed = await self.store.leave(space_id, player_id, session.sid)
        if removed is None:
            return
        leaver = session if connected else None
        await self._depart(space_id, identity, session.sid, session.joined_at, reason, leaver)

    async def _depart(
        self,
        space_id: str,
        identity: Identity,
        sid: str,
        joined_at: float,
        reason: str,
        leaver: Session | None,
        *,
        log_exit: bool = True,
        tell_local: bool = True,
    ) -> None:
        """Everything that follows a player leaving a space: parties, notices, the EXIT."""
        player_id = identity.player_id
        departures: list[Departure] = []
        try:
            # The party lock only for a player in a party: departures do not queue on it.
            if await self.store.in_parties(space_id, player_id):
                async with self.store.parties(space_id) as parties:
                    departures = parties.leave_all(player_id)
        except StoreUnavailable:
            departures = []
        for departure in departures:
            await self._announce_departure(space_id, departure, leaver)
        await self.live.player_departed(space_id, identity)  # before player:left
        left = {"id": player_id}
        if tell_local:
            await self.out.to_space(space_id, "player:left", left, about=player_id)
        else:
            self.out.publish_remote(space_id, "player:left", left, about=player_id)
        await self._presence_line(
            space_id,
            player_id,
            identity.nickname,
            False,
            tell_local=tell_local,
            lost=reason != "leave",
        )
        duration = time.time() - joined_at
        if log_exit:
            event = exit_event_for(
                identity.session_token, space_id, reason, duration, player_id, joined_at
            )
            if event is not None and not self.store.defer_exit(space_id, player_id, sid, event):
                # Held for the grace period: a rejoin of the same session cancels it.
                await self.exits.hold(event)
        log.info(
            "I2002",
            "Player left space",
            reason=reason,
            durationSeconds=round(duration),
            socketId=sid,
            spaceId=space_id,
            playerId=player_id,
        )

    async def depart_ghost(self, departed: Departed, reason: str, *, log_exit: bool) -> None:
        """A player whose socket is gone with its node (or left while Redis was away)."""
        player = departed.player
        await self._depart(
            departed.space_id,
            player.identity,
            player.sid,
            player.joined_at,
            reason,
            None,
            log_exit=log_exit,
            tell_local=log_exit,
        )

    async def drop_reaped(self, entries: set[tuple[str, str, str]]) -> None:
        """Close the sockets of players the other nodes removed while this node was cut off
        (they logged the EXITs); the official client reconnects and joins again."""
        for space_id, player_id, sid in entries:
            self.store.forget_local(space_id, player_id, sid)
            session = self.sessions.get(sid)
            if session is None or session.space_id != space_id:
                continue
            session.closing_reason = "reaped"
            await self.out.leave_space(sid, space_id, player_id)
            self.out.write_out()
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
            sock = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
            if sock is not None and not sock.closed:
                await sock.close(wait=False, reason=self.sio.eio.reason.SERVER_DISCONNECT)

    def submit_exit(self, event: Any) -> None:
        self.exits.hold_soon(event)

    async def party_lost(self, space_id: str, player_id: str, party_id: str) -> None:
        """A party membership this node could not write back after Redis lost it."""
        await self.out.to_players(space_id, [player_id], "party:left", {"partyId": party_id})

    async def announce_restored(self, space_id: str, player: PlayerState) -> None:
        """A player of this node the others did not know of (after a Redis outage)."""
        self.out.publish_remote(space_id, "player:joined", player.position())

    # -- movement ------------------------------------------------------------------------------

    async def move(self, session: Session, payload: Any) -> None:
        self._apply_move(session, protocol.parse_move(payload))

    async def jump(self, session: Session, payload: Any) -> None:
        jump = protocol.parse_jump(payload)
        assert session.space_id is not None and session.identity is not None
        await self.out.flush(session.space_id)
        await self.out.to_space(
            session.space_id,
            "player:jumped",
            {"id": session.identity.player_id, "x": jump.x, "y": jump.y},
            skip_sid=session.sid,
        )

    async def update_profile(self, session: Session, payload: Any) -> None:
        update = protocol.parse_profile(payload)
        assert session.space_id is not None and session.identity is not None
        nickname = await self._own_nickname(session, update.nickname)
        if nickname is None:
            await self.out.to_sid(
                session.sid,
                "error",
                {
                    "message": self.texts.text("error.profile.nickname_taken"),
                    "code": "NICKNAME_TAKEN",
                },
            )
            return
        identity = session.identity.with_profile(
            nickname, update.avatar_color, update.avatar_config
        )
        session.identity = identity
        await self.store.update_identity(session.space_id, identity)
        async with self.store.parties(session.space_id) as parties:
            parties.update_member(_member(identity))
        data: dict[str, Any] = {
            "id": identity.player_id,
            "nickname": identity.nickname,
            "avatarColor": identity.avatar_color,
        }
        if identity.avatar_config is not None:
            data["avatarConfig"] = identity.avatar_config
        await self.out.to_space(
            session.space_id, "player:profileUpdated", data, skip_sid=session.sid
        )

    async def _own_nickname(self, session: Session, requested: str) -> str | None:
        """The nickname a profile update gives the player, or ``None`` when another player of
        the space has it. Unlike a join, the player is choosing a name here, so a taken one is
        refused rather than suffixed; but a player whose join made them "Ann (2)" and who sends
        "Ann" again (with a new avatar, say) keeps "Ann (2)". Nicknames are looked up only
        when this player's own changes, since in a cluster that reads the space's roster."""
        assert session.space_id is not None and session.identity is not None
        me = session.identity
        if nickname_key(requested) == nickname_key(me.nickname):
            return requested
        holders = await self.store.players_named(session.space_id, requested)
        if all(p.id == me.player_id for p in holders):
            return requested
        return me.nickname if same_name_with_suffix(me.nickname, requested) else None

    # -- chat ----------------------------------------------------------------------------------

    def _chat_data(self, session: Session, message: ChatMessage, **extra: Any) -> dict[str, Any]:
        assert session.identity is not None
        nickname = session.identity.nickname
        data: dict[str, Any] = {
            "id": _message_id(),
            "senderId": session.identity.player_id,
            "senderNickname": nickname,
            "senderName": nickname,
            "content": sanitize(message.content),
            "timestamp": _now_ms(),
            "type": message.type,
        }
        if message.reply_to is not None:
            data["replyTo"] = message.reply_to.to_wire()  # checked and neutralised by protocol
        data.update({k: v for k, v in extra.items() if v is not None})
        return data

    def _save(
        self,
        session: Session,
        kind: Literal["chat", "whisper", "party"],
        data: dict[str, Any],
        recipients: tuple[str, ...] = (),
        *,
        target: Author | None = None,
        party_id: str | None = None,
    ) -> None:
        """Hand a delivered message to the history writer: the rows keep what the players saw
        (the neutralised content, the nickname at the time), and ``data["id"]`` is the
        temporary id the writer's id update replaces."""
        assert session.space_id is not None and session.identity is not None
        self.chat_log.submit(
            Pending(
                kind=kind,
                space_id=session.space_id,
                temp_id=data["id"],
                author=Author.of(session.identity),
                sender_name=session.identity.nickname,
                content=data["content"],
                timestamp_ms=data["timestamp"],
                sender_sid=session.sid,
                recipients=recipients,
                target=target,
                party_id=party_id,
            )
        )

    async def _rate_limited(self, session: Session, content: str, channel: str) -> bool:
        assert session.identity is not None
        decision = await self.store.allow_chat(session.identity.player_id, content, time.time())
        if decision.allowed:
            return False
        log.info(
            "E3002", "Message rejected by rate limit", rule=decision.reason, **session.context()
        )
        refusal = decision.refusal or Text("error.rate_limited.generic", {"seconds": 1})
        payload: dict[str, Any] = {"message": self.texts.render(refusal)}
        if decision.retry_after:
            payload["retryAfter"] = decision.retry_after
        await self.out.to_sid(session.sid, channel, payload)
        return True

    async def chat_message(self, session: Session, payload: Any) -> None:
        message = protocol.parse_chat(payload)
        if message.type == "whisper":
            if message.target_id is None and message.target_nickname is None:
                raise BadInput("error.whisper.no_target")
            await self._whisper(session, message)
            return
        if message.type == "party":
            await self._party_chat(session, message)
            return
        _require_text(message)
        if await self.moderation.refuse_muted(session, "chat:error"):
            return
        if await self._rate_limited(session, message.content, "chat:error"):
            return
        assert session.space_id is not None
        data = self._chat_data(session, message)
        await self.out.to_space(session.space_id, "chat:message", data)
        self._save(session, "chat", data)

    async def whisper_send(self, session: Session, payload: Any) -> None:
        await self._whisper(session, protocol.parse_whisper(payload))

    async def _whisper(self, session: Session, message: ChatMessage) -> None:
        assert session.space_id is not None and session.identity is not None
        _require_text(message)
        space_id, me = session.space_id, session.identity.player_id
        if message.target_id == me:
            await self._whisper_error(session, "error.whisper.self")
            return
        if await self.moderation.refuse_muted(session, "whisper:error"):
            return
        # The limit before the lookup: in a cluster a lookup reads Redis, so a flood of
        # whispers must be refused before it costs anything.
        if await self._rate_limited(session, message.content, "whisper:error"):
            return
        if message.target_id is not None:
            target = await self.store.player(space_id, message.target_id)
            if target is None:
                await self._whisper_error(session, "error.whisper.target_absent")
                return
        else:
            assert message.target_nickname is not None
            matches = await self.store.players_named(space_id, message.target_nickname)
            if not matches:
                await self._whisper_error(
                    session, "error.whisper.nickname_absent", nickname=message.target_nickname
                )
                return
            if len(matches) > 1:
                await self._whisper_error(
                    session, "error.whisper.nickname_ambiguous", nickname=message.target_nickname
                )
                return
            target = matches[0]
        if target.id == me:
            await self._whisper_error(session, "error.whisper.self")
            return
        data = self._chat_data(
            session, message, targetId=target.id, targetNickname=target.identity.nickname
        )
        await self.out.to_players(
            space_id,
            [target.id],
            "whisper:received",
            {
                "senderId": me,
                "senderName": session.identity.nickname,
                "content": data["content"],
                "timestamp": data["timestamp"],
                "id": data["id"],
            },
        )
        await self.out.to_players(space_id, [target.id], "whisper:receive", data)
        await self.out.to_sid(session.sid, "whisper:sent", data)
        self._save(session, "whisper", data, (target.id,), target=Author.of(target.identity))

    async def _whisper_error(self, session: Session, key: str, **params: Any) -> None:
        """The text ``key`` on ``whisper:error``; a nickname among ``params`` is the
        neutralised one the client sent (the original names it too)."""
        message = self.texts.text(key, **params)
        await self.out.to_sid(session.sid, "whisper:error", {"message": message})

    # -- parties -------------------------------------------------------------------------------

    async def party_message(self, session: Session, payload: Any) -> None:
        await self._party_chat(session, protocol.parse_party_message(payload))

    async def _party_chat(self, session: Session, message: ChatMessage) -> None:
        assert session.space_id is not None and session.identity is not None
        _require_text(message)
        if await self.moderation.refuse_muted(session, "party:error"):
            return
        if await self._rate_limited(session, message.content, "party:error"):
            return  # before the party lock, which a flood would otherwise keep busy
        async with self.store.parties(session.space_id) as parties:
            party = parties.member_party(session.identity.player_id, message.party_id)
            party_id, party_name, members = party.id, party.name, list(party.members)
        data = self._chat_data(session, message, partyId=party_id, partyName=party_name)
        await self.out.to_players(session.space_id, members, "party:message", data)
        self._save(session, "party", data, tuple(members), party_id=party_id)

    async def party_create(self, session: Session, payload: Any) -> None:
        request = protocol.parse_party_create(payload)
        assert session.space_id is not None and session.identity is not None
        name = sanitize(request.name).strip()
        if not name:
            raise BadInput("error.party.name_no_text")  # it was only markup
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.create(_member(session.identity), name)
        await self._announce_arrival(session, arrival)
        log.info("I5001", "Party created", partyId=arrival.party.id, **session.context())

    async def party_invite(self, session: Session, payload: Any) -> None:
        request = protocol.parse_party_invite(payload)
        assert session.space_id is not None and session.identity is not None
        target = await self.store.player(session.space_id, request.target_id)
        if target is None:
            raise PartyError("error.party.target_absent")
        pair = f"{session.identity.player_id}\n{target.id}"
        if await self._over_keyed_limit(
            session, "party:invite", INVITE_PAIR, pair
        ) or await self._over_keyed_limit(session, "party:invite", INVITE_TARGET, target.id):
            return
        async with self.store.parties(session.space_id) as parties:
            invitation = parties.invite(
                session.identity.player_id, request.party_id, request.target_id, time.time()
            )
            party = parties.get(invitation.party_id)
            name = party.name if party else ""
        await self.out.to_players(
            session.space_id,
            [target.id],
            "party:invited",
            {
                "partyId": invitation.party_id,
                "partyName": name,
                "inviterId": session.identity.player_id,
                "inviterName": session.identity.nickname,
                "expiresAt": int(invitation.expires_at * 1000),
            },
        )

    async def party_accept(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:accept", required=True)
        assert session.space_id is not None and session.identity is not None
        assert ref.party_id is not None
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.accept(_member(session.identity), ref.party_id, time.time())
        await self._announce_arrival(session, arrival)

    async def party_decline(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:decline", required=True)
        assert session.space_id is not None and session.identity is not None
        assert ref.party_id is not None
        async with self.store.parties(session.space_id) as parties:
            invitation = parties.decline(session.identity.player_id, ref.party_id, time.time())
        await self.out.to_players(
            session.space_id,
            [invitation.inviter_id],
            "party:declined",
            {
                "partyId": invitation.party_id,
                "targetId": invitation.target_id,
            },
        )

    async def party_leave(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:leave", required=False)
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            departure = parties.leave(session.identity.player_id, ref.party_id)
        await self._announce_departure(session.space_id, departure, session)

    async def party_leave_zone(self, session: Session, payload: Any) -> None:
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            departure = parties.leave_zone(session.identity.player_id)
        await self._announce_departure(session.space_id, departure, session)

    async def party_join_zone(self, session: Session, payload: Any) -> None:
        request = protocol.parse_zone_join(payload)
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.join_zone(
                _member(session.identity),
                request.party_id,
                sanitize(request.party_name).strip() or request.party_id,
            )
        await self._announce_arrival(session, arrival)

    async def _announce_arrival(self, session: Session, arrival: Arrival) -> None:
        assert session.space_id is not None
        for departure in arrival.departures:
            await self._announce_departure(session.space_id, departure, session)
        party = arrival.party
        await self.out.to_sid(
            session.sid,
            "party:joined",
            {
                "partyId": party.id,
                "partyName": party.name,
                "members": party.members_wire(),
                "leaderId": party.leader_id,
                "kind": party.kind,
            },
        )
        if not arrival.new_member:
            return
        others = [pid for pid in party.members if pid != arrival.member.id]
        await self.out.to_players(
            session.space_id,
            others,
            "party:member_joined",
            {
                "partyId": party.id,
                "member": arrival.member.to_wire(),
            },
        )

    async def _announce_departure(
        self, space_id: str, departure: Departure, leaver: Session | None
    ) -> None:
        if leaver is not None:
            await self.out.to_sid(leaver.sid, "party:left", {"partyId": departure.party.id})
        if departure.deleted:
            return
        data: dict[str, Any] = {"partyId": departure.party.id, "memberId": departure.member_id}
        if departure.party.leader_id is not None:
            data["leaderId"] = departure.party.leader_id
        await self.out.to_players(
            space_id, list(departure.party.members), "party:member_left", data
        )

    # -- proximity -----------------------------------------------------------------------------

    async def proximity_set(self, session: Session, payload: Any) -> None:
        if not session.joined:
            message = self.texts.text("error.not_joined")
            await self.out.to_sid(session.sid, "proximity:error", {"message": message})
            return
        request = protocol.parse_proximity(payload)
        assert session.space_id is not None and session.identity is not None
        if not session.identity.privileged:
            log.warn(
                "E1004",
                "Permission denied: proximity:set",
                role=session.identity.role,
                **session.context(),
            )
            message = self.texts.text("error.permission_denied")
            await self.out.to_sid(session.sid, "proximity:error", {"message": message})
            return
        await self.store.set_proximity(session.space_id, request.enabled)
        await self.out.to_space(
            session.space_id,
            "proximity:changed",
            {
                "spaceId": session.space_id,
                "enabled": request.enabled,
                "changedBy": session.identity.nickname,
            },
        )
        key = "notice.proximity_on" if request.enabled else "notice.proximity_off"
        nickname = sanitize(session.identity.nickname)
        await self._system(session.space_id, self.texts.text(key, nickname=nickname))

    # -- system messages -----------------------------------------------------------------------

    def _notice(self, content: str) -> dict[str, Any]:
        """A ``chat:system`` message under the system's name in the node's language."""
        return system_message(content, self.texts.system_sender())

    async def _system(self, space_id: str, content: str) -> None:
        await self.out.to_space(space_id, "chat:system", self._notice(content))

    async def broadcast_system(self, content: str) -> None:
        """A system notice to every space this node serves (e.g. before a restart)."""
        spaces = {s.space_id for s in self.sessions.values() if s.space_id is not None}
        for space_id in spaces:
            await self.out.to_space(space_id, "chat:system", self._notice(content), local_only=True)

    # -- housekeeping --------------------------------------------------------------------------

    def socket_count(self) -> int:
        return len(self.sessions)

    def local_spaces(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.sessions.values():
            if s.space_id is not None:
                counts[s.space_id] = counts.get(s.space_id, 0) + 1
        return counts


def system_message(content: str, sender: str) -> dict[str, Any]:
    """A ``chat:system`` message; ``sender`` is the system's name in the node's language
    (``senderId`` stays "system": clients recognise system messages by it)."""
    return {
        "id": _message_id(),
        "senderId": "system",
        "senderNickname": sender,
        "senderName": sender,
        "content": content,
        "timestamp": _now_ms(),
        "type": "system",
    }


def _require_text(message: ChatMessage) -> None:
    """A message that was only markup would reach the others empty: refused instead."""
    if not sanitize(message.content).strip():
        raise BadInput("error.chat.no_text")


def _member(identity: Identity) -> Member:
    return Member(identity.player_id, identity.nickname, identity.avatar_color)


def _client_address(environ: dict[str, Any]) -> str:
    request = environ.get("aiohttp.request")
    if request is not None and getattr(request, "remote", None):
        return str(request.remote)
    return str(environ.get("REMOTE_ADDR", ""))


__all__ = ["SpaceParties", "SpaceServer", "system_message"]

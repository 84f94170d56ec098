"""What every event handler shares: the socket link, the session table and the guard.

- :class:`SocketLink` is the only place the handlers reach into the Socket.IO server (event
  registration, disconnects, closing a connection, background tasks).
- :class:`SessionTable` is what this node knows of its sockets (see :class:`Session`).
- :class:`Dispatch` wraps each handler (:meth:`Dispatch.guard`): the count of events by name,
  the joined check, per-socket and per-player rate limits (SPEC §6, ``domain/limits.py``),
  bad-input replies on the event's error channel (SPEC §8), and no exception escaping to the
  transport.

The use-case modules (``membership``, ``movement``, ``chat``, ``parties``, ``proximity``,
``profile``, ``moderation``, ``live``) each expose ``routes() -> {event: handler}``; the
facade (:mod:`.events`) merges them and hands them to :meth:`Dispatch.register`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from .. import protocol
from ..domain.limits import EVENT_LIMITS, EventLimit, KeyedHit, Rule, Verdict
from ..domain.parties import PartyError
from ..fanout import Broadcaster
from ..observability.abuse import AbuseCounters
from ..observability.event_counts import OTHER_EVENT, EventCounts
from ..observability.logging import log
from ..protocol import BadInput
from ..state.base import StateStore, StoreUnavailable
from ..texts import Catalog
from ..transport import ConnectionRefused, SocketServer
from . import payloads
from .session import Session

Handler = Callable[[Session, Any], Awaitable[None]]
"""An event handler: the sender's session and the payload (already through the envelope
check of :func:`protocol.check_envelope`)."""

BEFORE_JOIN = frozenset({"join:space", "proximity:set"})
"""Events a socket may send before it has joined a space; everything else is ignored until
then."""


def connect_refused(text: str) -> Exception:
    """What ``connect`` raises to refuse a connection with ``text`` (``connect_error``)."""
    return ConnectionRefused(text)


class SocketLink:
    """The handlers' every use of the Socket.IO server, in one place."""

    def __init__(self, sio: SocketServer) -> None:
        self.sio = sio

    def on(self, event: str, handler: Callable[..., Awaitable[Any]]) -> None:
        """Register ``handler`` for ``event`` (``connect``, ``disconnect``, ``*`` included)."""
        self.sio.on(event, handler)

    def on_raw_event(self, handler: Callable[[str, str], bool]) -> None:
        """Register the hot path for event packets (see :meth:`SocketServer.on_raw_event`)."""
        self.sio.on_raw_event(handler)

    async def disconnect(self, sid: str) -> None:
        """Close the socket ``sid`` from the server side (its ``disconnect`` handler runs)."""
        await self.sio.disconnect(sid)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (from code that cannot await)."""
        self.sio.engine.spawn(work)

    async def close_transport(self, sid: str) -> None:
        """Close the connection under ``sid`` without a Socket.IO disconnect packet: the
        official client reconnects and joins again."""
        self.sio.close_connection(sid)


class SessionTable:
    """This node's sockets by sid, and how many each client address has open."""

    def __init__(self) -> None:
        self.by_sid: dict[str, Session] = {}
        self.per_address: dict[str, int] = {}
        self.shutting_down = False
        """Set when the node stops: no new connections, no late notices."""

    def get(self, sid: str) -> Session | None:
        return self.by_sid.get(sid)

    def __contains__(self, sid: object) -> bool:
        return sid in self.by_sid

    def __len__(self) -> int:
        return len(self.by_sid)

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_sid)

    def values(self) -> list[Session]:
        return list(self.by_sid.values())

    def add(self, session: Session) -> None:
        self.by_sid[session.sid] = session
        self.per_address[session.address] = self.per_address.get(session.address, 0) + 1

    def remove(self, sid: str) -> Session | None:
        session = self.by_sid.pop(sid, None)
        if session is None:
            return None
        left = self.per_address.get(session.address, 1) - 1
        if left > 0:
            self.per_address[session.address] = left
        else:
            self.per_address.pop(session.address, None)
        return session

    def local_spaces(self) -> dict[str, int]:
        """Joined sockets per space."""
        counts: dict[str, int] = {}
        for s in self.by_sid.values():
            if s.space_id is not None:
                counts[s.space_id] = counts.get(s.space_id, 0) + 1
        return counts


class Dispatch:
    """The guard around every handler, its rate limits and its replies."""

    def __init__(
        self,
        *,
        link: SocketLink,
        sessions: SessionTable,
        store: StateStore,
        out: Broadcaster,
        texts: Catalog,
        abuse: AbuseCounters,
        events: EventCounts,
    ) -> None:
        self.link = link
        self.sessions = sessions
        self.store = store
        self.out = out
        self.texts = texts
        self.abuse = abuse
        self.events = events
        """Every event received, by name: counted by :meth:`guard`, :meth:`ignore_unknown` and
        :meth:`took_fast_move`, before any check."""
        self._unknown = events.cell(OTHER_EVENT)
        self._fast_moves = events.cell("player:move")
        self.events_handled = 0
        self.bad_inputs = 0

    def register(
        self,
        routes: dict[str, Handler],
        *,
        connect: Callable[..., Awaitable[None]],
        disconnect: Callable[..., Awaitable[None]],
        recover: Callable[..., Awaitable[None]],
    ) -> None:
        """Bind the connection handlers and every route, guarded; unknown events are ignored."""
        self.link.on("connect", connect)
        self.link.on("disconnect", disconnect)
        self.link.on("recover", recover)
        for event, handler in routes.items():
            self.link.on(event, self.guard(event, handler))
        self.link.on("*", self.ignore_unknown)

    def guard(self, event: str, handler: Handler) -> Callable[..., Awaitable[None]]:
        """Wrap a handler: event count, joined check, binary check, bad input replies, no
        escaped errors."""
        channel = protocol.ERROR_CHANNEL.get(event)
        limit = EVENT_LIMITS.get(event)
        received = self.events.cell(event)

        async def guarded(sid: str, *args: Any) -> None:
            received[0] += 1
            session = self.sessions.get(sid)
            if session is None or session.closing_reason is not None:
                return
            self.events_handled += 1
            if event not in BEFORE_JOIN and not session.joined:
                log.debug("I3000", "Event before join ignored", event=event, **session.context())
                return
            payload = args[0] if args else None
            now = time.monotonic()
            taken: KeyedHit | None = None
            if limit is not None:
                admitted, taken = await self.admit(session, event, limit, now)
                if not admitted:
                    return
            try:
                payload = protocol.check_envelope(args)
                await handler(session, payload)
                if limit is not None:
                    session.limits.record(limit.socket, now)
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
                await self.reply_error(session, target, self.texts.render(exc.text))
            except PartyError as exc:
                message = self.texts.render(exc.text)
                await self.out.to_sid(session.sid, "party:error", payloads.refusal(message))
            except StoreUnavailable:
                log.warn(
                    "E3003",
                    f"{event} refused: shared state is unavailable",
                    event=event,
                    **session.context(),
                )
                message = self.texts.text("error.unavailable")
                if channel is None:
                    await self.safe_error(session, message, "UNAVAILABLE")
                else:
                    await self.out.to_sid(session.sid, channel, payloads.refusal(message))
            except Exception as exc:
                log.error(
                    "E3003",
                    f"Handler for {event} failed",
                    exc=exc,
                    event=event,
                    **session.context(),
                )
                await self.safe_error(session, self.texts.text("error.internal"), "INTERNAL_ERROR")
            finally:
                if taken is not None:  # refused by its handler: the allowance is not used
                    await self.store.give_back(taken)

        return guarded

    # -- rate limits (see domain/limits.py) -----------------------------------------------------

    async def admit(
        self, session: Session, event: str, limit: EventLimit, now: float
    ) -> tuple[bool, KeyedHit | None]:
        """Whether the event fits its per-socket and per-player limits; answers it if not.

        The per-socket limit is only checked here: the guard counts the event once its handler
        accepted it, so malformed payloads keep their own replies (SPEC §8) and do not eat the
        allowance. The per-player limit is shared by the player's sockets on every node, so
        the store checks and counts it in one step; the hit returned is given back if the
        handler does not accept the event."""
        if not session.limits.admit(limit.socket, now):
            await self.refuse_excess(session, event, limit.socket, now)
            return False, None
        if limit.player is None or session.identity is None:
            return True, None
        hit = await self.store.hit_limit(limit.player, session.identity.player_id, now)
        if hit.allowed:
            return True, hit
        await self.refuse_excess(session, event, limit.player, now, hit.retry_after)
        return False, None

    async def over_keyed_limit(self, session: Session, event: str, rule: Rule, key: str) -> bool:
        """Count one event under a limit shared by sockets (per player, per invitation target),
        on every node of a cluster; True, after answering the client, if it is over."""
        now = time.monotonic()
        hit = await self.store.hit_limit(rule, key, now)
        if hit.allowed:
            return False
        await self.refuse_excess(session, event, rule, now, hit.retry_after)
        return True

    async def refuse_excess(
        self, session: Session, event: str, rule: Rule, now: float, wait: int | None = None
    ) -> None:
        verdict = self.note_excess(session, rule, now)
        if verdict is not Verdict.QUIET:
            await self.answer_excess(session, event, rule, verdict, now, wait)

    def note_excess(self, session: Session, rule: Rule, now: float) -> Verdict:
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

    async def answer_excess(
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
            await self.safe_error(session, message, "RATE_LIMITED")
            self.out.write_out()  # the error goes before the disconnect
            await self.link.disconnect(session.sid)
            return
        if wait is None:  # a shared limit's window follows Redis time: the store gives it
            wait = rule.retry_after(now)
        message = self.texts.rate_limited(rule.name, wait)
        channel = protocol.ERROR_CHANNEL.get(event, "error")
        await self.out.to_sid(session.sid, channel, payloads.rate_limited(message, wait))

    # -- replies -------------------------------------------------------------------------------

    async def reply_error(self, session: Session, channel: str | None, message: str) -> None:
        """Bad input: on the event's error channel, else ``error INVALID_PAYLOAD``."""
        if channel is None:
            await self.out.to_sid(session.sid, "error", payloads.error(message, "INVALID_PAYLOAD"))
        else:
            await self.out.to_sid(session.sid, channel, payloads.refusal(message))

    async def safe_error(self, session: Session, message: str, code: str) -> None:
        try:
            await self.out.to_sid(session.sid, "error", payloads.error(message, code))
        except Exception:  # pragma: no cover - the socket may already be gone
            pass

    async def refuse(self, session: Session, message: str, code: str) -> None:
        """``error {message, code}``, then the disconnect (a refused join, a ban)."""
        session.closing_reason = "refused"
        await self.out.to_sid(session.sid, "error", payloads.error(message, code))
        self.out.write_out()  # the error goes before the disconnect
        await self.link.disconnect(session.sid)

    def took_fast_move(self) -> None:
        """Count a ``player:move`` the fast path took: it never passes :meth:`guard`."""
        self._fast_moves[0] += 1
        self.events_handled += 1

    async def ignore_unknown(self, event: Any, sid: str, *args: Any) -> None:
        self._unknown[0] += 1  # counted under one name: a client's choice is never a label
        if isinstance(event, str):
            log.debug("I3001", "Unknown event ignored", event=event[:100], socketId=sid)
            return
        # An event "name" that is not a string is a malformed packet, not an unknown event.
        self.bad_inputs += 1
        log.warn("E3001", "Event name must be a string", socketId=sid)
        message = self.texts.text("error.event_name")
        await self.out.to_sid(sid, "error", payloads.error(message, "INVALID_PAYLOAD"))

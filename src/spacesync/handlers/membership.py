"""Sessions and membership of a space: connect, disconnect, ``join:space``, ``leave:space``
(SPEC §2, §4, §7), the eviction of a replaced session (SPEC §2.3), and the departures the
cluster monitor reports (players whose node died, or who left while Redis was away).

One join, leave or departure of a socket runs at a time (:meth:`Membership._membership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from .. import protocol
from ..domain.identity import Identity, distinct_nickname, nickname_key
from ..domain.limits import JOIN_PLAYER
from ..domain.parties import Departure
from ..domain.space import PlayerState
from ..fanout import Broadcaster
from ..integrations.app_api import ExitOutbox, exit_event_for
from ..observability.logging import log
from ..state.base import Departed, JoinResult, StateStore, StoreUnavailable
from ..texts import Catalog
from . import payloads
from .auth import Authenticator, AuthRefused
from .dispatch import Dispatch, Handler, SessionTable, SocketLink, connect_refused
from .live import LiveEvents
from .notices import Notices
from .session import Session

Admit = Callable[[Session, str, Identity], Awaitable[bool]]
AnnounceDeparture = Callable[[str, Departure, Session | None], Awaitable[None]]


class Membership:
    """Connections and the joins and departures of players."""

    def __init__(
        self,
        *,
        link: SocketLink,
        dispatch: Dispatch,
        sessions: SessionTable,
        store: StateStore,
        out: Broadcaster,
        texts: Catalog,
        exits: ExitOutbox,
        auth: Authenticator,
        notices: Notices,
        live: LiveEvents,
        admit: Admit,
        announce_departure: AnnounceDeparture,
    ) -> None:
        self.link = link
        self.dispatch = dispatch
        self.sessions = sessions
        self.store = store
        self.out = out
        self.texts = texts
        self.exits = exits
        self.auth = auth
        self.notices = notices
        self.live = live
        self._admit = admit
        """Moderation's check at the join (a ban refuses it, a mute is put back)."""
        self._announce_departure = announce_departure
        """The parties' announcement of a member leaving."""
        self._changing: set[str] = set()
        """Sockets whose join or leave is under way (see :meth:`holds_socket`)."""
        self._departing = 0
        self._departures_done = asyncio.Event()
        self._departures_done.set()

    def routes(self) -> dict[str, Handler]:
        return {"join:space": self.join_space, "leave:space": self.leave_space}

    # -- connection ----------------------------------------------------------------------------

    async def on_connect(self, sid: str, address: str, auth: Any = None) -> None:
        """``address``: the client address the transport resolved (``X-Forwarded-For`` from a
        trusted proxy)."""
        if self.sessions.shutting_down:
            raise connect_refused(protocol.CONNECT_SHUTTING_DOWN)
        session = Session(sid=sid, address=address)
        if isinstance(auth, dict) and isinstance(auth.get("sessionToken"), str):
            await self.auth.verify_at_connect(session, auth)
        self.sessions.add(session)
        log.info("E2001", "Client connected", socketId=sid, address=address)

    async def on_recover(self, sid: str) -> None:
        """A socket came back within ``RECOVERY_WINDOW``: the transport replayed the events it
        missed, and it never left its space. Positions are not replayed (only the newest
        counts), so it is sent where everyone in its space is now."""
        session = self.sessions.get(sid)
        if session is None or session.closing_reason is not None:
            return
        log.info("E2001", "Client resumed its connection", **session.context())
        if not session.joined or session.space_id is None or session.identity is None:
            return
        own = session.identity.player_id
        try:
            players = await self.store.players(session.space_id)
        except StoreUnavailable:
            return
        moved = [p.moved() for p in players if p.identity.player_id != own]
        if not moved:
            return
        if session.batching:
            await self.out.to_sid(sid, "players:moved", moved)
        else:
            for payload in moved:
                await self.out.to_sid(sid, "player:moved", payload)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.remove(sid)
        if session is None:
            return
        why = session.closing_reason or f"disconnect:{reason or 'unknown'}"
        if session.closing_reason not in ("replaced", "reaped"):
            # Also when not joined yet: a join under way finishes first (see _membership).
            try:
                await self._tracked_leave(session, why, connected=False)
            except Exception as exc:
                log.error("E3003", "Leaving on disconnect failed", exc=exc, **session.context())
        log.info("E2002", "Client disconnected", reason=str(reason), socketId=sid)

    # -- join ----------------------------------------------------------------------------------

    async def join_space(self, session: Session, payload: Any) -> None:
        join = protocol.parse_join(payload)
        try:
            identity = await self.auth.resolve(session, join)
        except AuthRefused as exc:
            await self.dispatch.refuse(session, self.texts.render(exc.text), exc.code)
            return
        if session.sid not in self.sessions:
            return  # disconnected while the app was verifying
        if await self.dispatch.over_keyed_limit(
            session, "join:space", JOIN_PLAYER, identity.player_id
        ):
            return
        if not await self._admit(session, join.space_id, identity):
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

        The socket's lock is made here when none of them holds it or waits for it, and is
        dropped when the last one is done.
        """
        lock = session.membership
        if lock is None:
            lock = session.membership = asyncio.Lock()
        session.membership_queue += 1
        try:
            async with lock:
                session.membership_holder = asyncio.current_task()
                self._changing.add(session.sid)
                try:
                    yield
                finally:
                    self._changing.discard(session.sid)
                    session.membership_holder = None
        finally:
            session.membership_queue -= 1
            if not session.membership_queue:
                session.membership = None

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
            message = self.texts.text("error.join.failed")
            await self.dispatch.safe_error(session, message, "JOIN_FAILED")
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
        players = payloads.positions(result.roster)
        proximity = await self.store.proximity(join.space_id)
        await self.out.to_sid(
            session.sid,
            "room:joined",
            payloads.room_joined(join.space_id, players, identity.player_id, proximity),
        )
        await self.live.send_join_state(session, join.space_id)
        enabled = await self.store.proximity(join.space_id)
        await self.out.to_sid(session.sid, "proximity:status", payloads.proximity_status(enabled))
        if result.replaced_sid is None:
            await self.out.to_space(
                join.space_id, "player:joined", result.player.position(), skip_sid=session.sid
            )
            await self.notices.presence_line(
                join.space_id, identity.player_id, identity.nickname, True
            )
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
            await self.out.to_space(
                space_id, "player:left", payloads.player_left(player_id), about=player_id
            )
        log.info("I2003", "Join undone: the socket closed first", socketId=sid, spaceId=space_id)

    async def _send_room_state(self, session: Session, space_id: str) -> None:
        assert session.identity is not None
        roster = await self.store.players(space_id)
        enabled = await self.store.proximity(space_id)
        await self.out.to_sid(
            session.sid,
            "room:joined",
            payloads.room_joined(
                space_id, payloads.positions(roster), session.identity.player_id, enabled
            ),
        )
        await self.live.send_join_state(session, space_id)
        await self.out.to_sid(session.sid, "proximity:status", payloads.proximity_status(enabled))

    # -- replaced sessions (SPEC §2.3) ---------------------------------------------------------

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
        message = self.texts.text("error.session.duplicate")
        await self.out.to_sid(old_sid, "error", payloads.error(message, "DUPLICATE_SESSION"))
        self.out.write_out()  # the error goes before the disconnect
        await self.link.disconnect(old_sid)

    # -- leave ---------------------------------------------------------------------------------

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
        left = payloads.player_left(player_id)
        if tell_local:
            await self.out.to_space(space_id, "player:left", left, about=player_id)
        else:
            self.out.publish_remote(space_id, "player:left", left, about=player_id)
        await self.notices.presence_line(
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

    # -- what the cluster monitor reports ------------------------------------------------------

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
            await self.link.close_transport(sid)

    def submit_exit(self, event: Any) -> None:
        self.exits.hold_soon(event)

    async def announce_restored(self, space_id: str, player: PlayerState) -> None:
        """A player of this node the others did not know of (after a Redis outage)."""
        self.out.publish_remote(space_id, "player:joined", player.position())

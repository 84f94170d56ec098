"""Movement: ``player:move`` (with its fast path and the held moves of a socket over its rate)
and ``player:jump`` (SPEC §4).

Positions are state: the store keeps the newest, and the broadcaster sends it with the space's
next tick (coalesced, ``player:moved`` built by the store's player). Jumps are events, sent at
once and never coalesced.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import protocol
from ..domain.limits import MOVE, Verdict
from ..fanout import Broadcaster
from ..observability.logging import log
from ..state.base import StateStore
from . import payloads
from .dispatch import Dispatch, Handler, SessionTable, SocketLink
from .session import Session

_MOVE_PREFIX = '2["player:move",'


class Movement:
    """``player:move`` and ``player:jump``."""

    def __init__(
        self,
        *,
        link: SocketLink,
        dispatch: Dispatch,
        sessions: SessionTable,
        store: StateStore,
        out: Broadcaster,
    ) -> None:
        self.link = link
        self.dispatch = dispatch
        self.sessions = sessions
        self.store = store
        self.out = out

    def routes(self) -> dict[str, Handler]:
        return {"player:move": self.move, "player:jump": self.jump}

    def fast_message(self, sid: str, text: str) -> bool:
        """Handle a well-formed ``player:move`` (the Socket.IO packet text ``2["player:move",
        ...]``) from a joined socket without the Socket.IO dispatch; return False (and touch
        nothing) for anything else, which then takes the ordinary path with its validation
        errors and replies."""
        if not text.startswith(_MOVE_PREFIX):
            return False
        session = self.sessions.get(sid)
        if session is None or session.closing_reason is not None or not session.joined:
            return False
        move = protocol.decode_move_event(text[1:])
        if move is None:
            return False  # the ordinary path validates it again and answers
        self.dispatch.took_fast_move()
        self._apply_move(session, move)
        return True

    async def move(self, session: Session, payload: Any) -> None:
        self._apply_move(session, protocol.parse_move(payload))

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
        verdict = self.dispatch.note_excess(session, MOVE, now)
        if verdict is not Verdict.QUIET:
            answer = self.dispatch.answer_excess(session, "player:move", MOVE, verdict, now)
            self.link.spawn(answer)

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

    async def jump(self, session: Session, payload: Any) -> None:
        jump = protocol.parse_jump(payload)
        assert session.space_id is not None and session.identity is not None
        await self.out.flush(session.space_id)
        await self.out.to_space(
            session.space_id,
            "player:jumped",
            payloads.player_jumped(session.identity.player_id, jump.x, jump.y),
            skip_sid=session.sid,
        )

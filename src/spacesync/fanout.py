"""The broadcast path: rooms, targeted emits and coalesced position ticks (SPEC §4).

Positions are state, not events. Moves are stored at once and relayed on a per-space tick of at
most :data:`TICK_SECONDS`: only the newest position of each player goes out, except that a change
of ``isMoving`` is never folded away. When a space has been quiet for a tick the first move goes
out immediately, so idle spaces see no added latency. Events that must follow a player's last
position (a jump, leaving) flush the space's pending moves first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import socketio

TICK_SECONDS = 0.05


def space_room(space_id: str) -> str:
    return f"space:{space_id}"


def plain_moves_room(space_id: str) -> str:
    return f"moves:{space_id}"


def player_room(space_id: str, player_id: str) -> str:
    return f"player:{space_id}:{player_id}"


@dataclass(slots=True)
class _SpaceMoves:
    pending: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    transitions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    batched_sids: set[str] = field(default_factory=set)
    last_flush: float = 0.0
    scheduled: bool = False


class Broadcaster:
    """Everything the handlers send goes through here."""

    def __init__(self, sio: socketio.AsyncServer, tick: float = TICK_SECONDS) -> None:
        self.sio = sio
        self.tick = tick
        self._spaces: dict[str, _SpaceMoves] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.moves_relayed = 0

    # -- membership ----------------------------------------------------------------------------

    async def enter_space(self, sid: str, space_id: str, player_id: str, batching: bool) -> None:
        await self.sio.enter_room(sid, space_room(space_id))
        await self.sio.enter_room(sid, player_room(space_id, player_id))
        if batching:
            self._space(space_id).batched_sids.add(sid)
        else:
            await self.sio.enter_room(sid, plain_moves_room(space_id))

    async def leave_space(self, sid: str, space_id: str, player_id: str) -> None:
        for room in (
            space_room(space_id),
            player_room(space_id, player_id),
            plain_moves_room(space_id),
        ):
            await self.sio.leave_room(sid, room)
        moves = self._spaces.get(space_id)
        if moves is not None:
            moves.batched_sids.discard(sid)
            if not moves.batched_sids and not moves.pending and not moves.scheduled:
                del self._spaces[space_id]

    def _space(self, space_id: str) -> _SpaceMoves:
        moves = self._spaces.get(space_id)
        if moves is None:
            moves = self._spaces[space_id] = _SpaceMoves()
        return moves

    # -- plain emits ---------------------------------------------------------------------------

    async def to_sid(self, sid: str, event: str, data: Any) -> None:
        await self.sio.emit(event, data, to=sid)

    async def to_space(
        self, space_id: str, event: str, data: Any, skip_sid: str | None = None
    ) -> None:
        await self.sio.emit(event, data, room=space_room(space_id), skip_sid=skip_sid)

    async def to_players(
        self,
        space_id: str,
        player_ids: list[str],
        event: str,
        data: Any,
        skip_sid: str | None = None,
    ) -> None:
        if not player_ids:
            return
        rooms = [player_room(space_id, pid) for pid in player_ids]
        await self.sio.emit(event, data, to=rooms, skip_sid=skip_sid)

    # -- positions -----------------------------------------------------------------------------

    def queue_move(self, space_id: str, sid: str, player_id: str, moved: dict[str, Any]) -> None:
        """Record a ``player:moved`` payload to relay on this space's next tick."""
        moves = self._space(space_id)
        previous = moves.pending.get(player_id)
        if previous is not None and previous[1]["isMoving"] != moved["isMoving"]:
            moves.transitions.append(previous)
        moves.pending[player_id] = (sid, moved)
        if not moves.scheduled:
            moves.scheduled = True
            loop = asyncio.get_running_loop()
            delay = moves.last_flush + self.tick - time.monotonic()
            if delay <= 0:
                loop.call_soon(self._start_flush, space_id)
            else:
                loop.call_later(delay, self._start_flush, space_id)

    def _start_flush(self, space_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.flush(space_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, space_id: str) -> None:
        """Send every pending position of a space now."""
        moves = self._spaces.get(space_id)
        if moves is None:
            return
        moves.scheduled = False
        if not moves.pending and not moves.transitions:
            return
        entries = [*moves.transitions, *moves.pending.values()]
        moves.transitions = []
        moves.pending = {}
        moves.last_flush = time.monotonic()
        self.moves_relayed += len(entries)
        room = plain_moves_room(space_id)
        for sender_sid, payload in entries:
            await self.sio.emit("player:moved", payload, room=room, skip_sid=sender_sid)
        if moves.batched_sids:
            everything = [payload for _, payload in entries]
            senders = {sid for sid, _ in entries}
            for sid in list(moves.batched_sids):
                batch = (
                    [payload for s, payload in entries if s != sid]
                    if sid in senders
                    else everything
                )
                if batch:
                    await self.sio.emit("players:moved", batch, to=sid)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The broadcast path: rooms, targeted emits and coalesced position ticks (SPEC §4).

Positions are state, not events. Moves are stored at once and relayed on a per-space tick of at
most :data:`TICK_SECONDS`: only the newest position of each player goes out, except that a change
of ``isMoving`` is never folded away. When a space has been quiet for a tick the first move goes
out immediately, so idle spaces see no added latency. Events that must follow a player's last
position (a jump, leaving) flush the space's pending moves first.

Every recipient of a tick receives the same bytes, less its own moves: the frames are built once
and written to each WebSocket in one call, instead of one task and one frame write per recipient
and event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .observability.timing import NOT_OBSERVED, Observer
from .transport import Connection, SocketServer
from .transport.codec import ws_frame as _ws_frame
from .transport.codec import ws_text_head as _ws_text_head

if TYPE_CHECKING:
    from .bus import Bus

TICK_SECONDS = 0.05
LAGGING_BYTES = 64 * 1024
"""The most a WebSocket may have waiting in its send buffer before it counts as lagging (the
server sets the transport's ``lagging_bytes`` from it). A lagging client gets positions folded:
only the newest of each player is kept, and written once the client has caught up."""
_PLAIN_PREFIX = b'42["player:moved",'
_BATCH_PREFIX = b'42["players:moved",['


def _packet(event: str, data: Any) -> bytes:
    return b"42" + orjson.dumps([event, data])


@dataclass(slots=True)
class _Lagging:
    """Positions held back for a client that cannot keep up: the newest per player."""

    batched: bool
    latest: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _SpaceMoves:
    pending: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    transitions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    batched_sids: set[str] = field(default_factory=set)
    plain: set[str] = field(default_factory=set)
    """Sockets that get one ``player:moved`` per position."""
    last_flush: float = 0.0
    scheduled: bool = False
    queued_at: float = 0.0
    """When the oldest move of the next tick was queued (monotonic)."""


class Broadcaster:
    """Everything the handlers send goes through here."""

    def __init__(
        self,
        sio: SocketServer,
        bus: Bus,
        tick: float = TICK_SECONDS,
    ) -> None:
        self.sio = sio
        self.bus = bus
        """What is sent here also goes to the players on the other nodes (if there are any)."""
        self.tick = tick
        self._lagging: dict[Connection, _Lagging] = {}
        self._lag_timer = False
        self.positions_folded = 0
        self._spaces: dict[str, _SpaceMoves] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.moves_relayed = 0
        self.tick_seconds: Observer = NOT_OBSERVED
        """How long each tick of positions takes to build and write (one figure per tick)."""
        self.move_wait_seconds: Observer = NOT_OBSERVED
        """Per tick: how long its oldest move waited between being queued and written."""
        self._players: dict[str, dict[str, str]] = {}
        """space -> player -> the socket of that player on this node (for targeted events)."""
        self._members: dict[str, set[str]] = {}
        """space -> this node's sockets in the space."""

    @property
    def lagging_bytes(self) -> int:
        """Send-buffer bytes past which a client is lagging: the transport's own threshold, so
        the two cannot disagree."""
        return self.sio.options.lagging_bytes

    @property
    def slow_disconnects(self) -> int:
        """Clients disconnected for not taking what they were sent."""
        return self.sio.engine.slow_disconnects

    # -- membership ----------------------------------------------------------------------------

    async def enter_space(self, sid: str, space_id: str, player_id: str, batching: bool) -> None:
        if not self.sio.is_connected(sid):
            return  # the socket is already gone
        self._members.setdefault(space_id, set()).add(sid)
        self._players.setdefault(space_id, {})[player_id] = sid
        moves = self._space(space_id)
        if batching:
            moves.batched_sids.add(sid)
        else:
            moves.plain.add(sid)

    async def leave_space(self, sid: str, space_id: str, player_id: str) -> None:
        members = self._members.get(space_id)
        if members is not None:
            members.discard(sid)
            if not members:
                del self._members[space_id]
        players = self._players.get(space_id)
        if players is not None and players.get(player_id) == sid:
            del players[player_id]
            if not players:
                del self._players[space_id]
        moves = self._spaces.get(space_id)
        if moves is not None:
            moves.batched_sids.discard(sid)
            moves.plain.discard(sid)
            if (
                not moves.batched_sids
                and not moves.plain
                and not moves.pending
                and not moves.scheduled
            ):
                del self._spaces[space_id]

    def _space(self, space_id: str) -> _SpaceMoves:
        moves = self._spaces.get(space_id)
        if moves is None:
            moves = self._spaces[space_id] = _SpaceMoves()
        return moves

    # -- plain emits ---------------------------------------------------------------------------

    async def to_sid(self, sid: str, event: str, data: Any) -> None:
        self._deliver(sid, _packet(event, data))

    def write_out(self) -> None:
        """Write everything collected for the clients now (before a socket is disconnected, so
        that nothing sent earlier is overtaken by the disconnect)."""
        self.sio.engine.flush_all()

    async def to_space(
        self,
        space_id: str,
        event: str,
        data: Any,
        skip_sid: str | None = None,
        *,
        local_only: bool = False,
        about: str | None = None,
    ) -> None:
        """``about``: the player a departure notice concerns (see :meth:`.Bus.publish_event`)."""
        packet = _packet(event, data)
        self.deliver_event(space_id, packet, None, skip_sid)
        if not local_only:
            self.bus.publish_event(space_id, packet, None, about)

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
        packet = _packet(event, data)
        self.deliver_event(space_id, packet, player_ids, skip_sid)
        self.bus.publish_event(space_id, packet, player_ids)

    def evict_elsewhere(self, node: str, space_id: str, player_id: str, sid: str) -> None:
        """Ask another node to close a socket replaced by a newer one (SPEC §2.3)."""
        self.bus.publish_evict(node, space_id, player_id, sid)

    def signal_elsewhere(self, space_id: str, body: dict[str, Any]) -> None:
        """An order about players of a space (kick, mute) for the other nodes serving it."""
        self.bus.publish_signal(space_id, body)

    def publish_remote(
        self, space_id: str, event: str, data: Any, about: str | None = None
    ) -> None:
        """An event for the space's players on the other nodes only."""
        self.bus.publish_event(space_id, _packet(event, data), None, about)

    def holds(self, space_id: str, player_id: str) -> bool:
        """Whether a socket of this node is in the space as that player."""
        players = self._players.get(space_id)
        return players is not None and player_id in players

    def deliver_event(
        self,
        space_id: str,
        packet: bytes,
        player_ids: list[str] | None,
        skip_sid: str | None = None,
    ) -> None:
        """A packet to this node's sockets in a space, or only to those of ``player_ids``."""
        if player_ids is None:
            recipients = self._members.get(space_id)
        else:
            players = self._players.get(space_id)
            if not players:
                return
            recipients = {players[pid] for pid in player_ids if pid in players}
        self._broadcast(recipients, packet, skip_sid)

    def _broadcast(self, recipients: set[str] | None, packet: bytes, skip_sid: str | None) -> None:
        """One event to many sockets: the same frame written to each."""
        if not recipients:
            return
        stamped, seq = self.sio.stamp(packet)
        frame = _ws_frame(stamped)
        for sid in list(recipients):
            if sid != skip_sid:
                self._deliver(sid, stamped, frame, seq)

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
            moves.queued_at = now = time.monotonic()
            delay = moves.last_flush + self.tick - now
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
            if not moves.plain and not moves.batched_sids:
                del self._spaces[space_id]  # everyone left meanwhile
            return
        entries = [*moves.transitions, *moves.pending.values()]
        moves.transitions = []
        moves.pending = {}
        moves.last_flush = started = time.monotonic()
        self.moves_relayed += len(entries)
        bodies = [orjson.dumps(payload) for _, payload in entries]
        ids = [payload["id"] for _, payload in entries]
        own: dict[str, list[int]] = {}
        for index, (sid, _) in enumerate(entries):
            own.setdefault(sid, []).append(index)
        self._send_moves(space_id, bodies, ids, own)
        self.bus.publish_moves(space_id, bodies, ids)
        done = time.monotonic()
        self.tick_seconds.observe(done - started)
        self.move_wait_seconds.observe(done - moves.queued_at)

    def deliver_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        """A tick of positions from another node, to this node's players in the space."""
        self.moves_relayed += len(bodies)
        self._send_moves(space_id, bodies, ids, {})

    def _send_moves(
        self, space_id: str, bodies: list[bytes], ids: list[str], own: dict[str, list[int]]
    ) -> None:
        moves = self._spaces.get(space_id)
        if moves is None:
            return
        if moves.plain:
            packets = [_PLAIN_PREFIX + b + b"]" for b in bodies]
            self._send_each(moves.plain, packets, bodies, ids, own)
        if moves.batched_sids:
            self._send_batches(moves.batched_sids, bodies, ids, own)

    def _lags(self, conn: Connection) -> bool:
        return conn in self._lagging or conn.lagging

    def _fold(
        self,
        conn: Connection,
        batched: bool,
        bodies: list[bytes],
        ids: list[str],
        mine: list[int] | None,
    ) -> None:
        """Hold this tick's positions back for a client that is behind, newest per player."""
        lag = self._lagging.get(conn)
        if lag is None:
            lag = self._lagging[conn] = _Lagging(batched)
            if not self._lag_timer:
                self._lag_timer = True
                asyncio.get_running_loop().call_later(self.tick, self._check_lagging)
        latest = lag.latest
        for index, body in enumerate(bodies):
            if mine is None or index not in mine:
                if ids[index] in latest:
                    self.positions_folded += 1
                latest[ids[index]] = body

    def _check_lagging(self) -> None:
        """Write the held-back positions of clients that have caught up."""
        self._lag_timer = False
        low = self.lagging_bytes // 2
        for conn in list(self._lagging):
            if conn.closed:
                del self._lagging[conn]
            elif conn.buffered_bytes <= low:
                self._release(conn)
        if self._lagging:
            self._lag_timer = True
            asyncio.get_running_loop().call_later(self.tick, self._check_lagging)

    def _release(self, conn: Connection) -> None:
        lag = self._lagging.pop(conn, None)
        if lag is None or not lag.latest:
            return
        bodies = list(lag.latest.values())
        if lag.batched:
            conn.send(_BATCH_PREFIX + b",".join(bodies) + b"]]")
        else:
            conn.send_frames(b"".join(_ws_frame(_PLAIN_PREFIX + b + b"]") for b in bodies))

    @property
    def lagging_clients(self) -> int:
        return len(self._lagging)

    def _send_each(
        self,
        recipients: set[str],
        packets: list[bytes],
        bodies: list[bytes],
        ids: list[str],
        own: dict[str, list[int]],
    ) -> None:
        """Every recipient gets every packet but its own, as separate events, in one write."""
        frames = [_ws_frame(p) for p in packets]
        blob = b"".join(frames)
        offsets = [0]
        for frame in frames:
            offsets.append(offsets[-1] + len(frame))
        connection = self.sio.connection
        for sid in list(recipients):
            conn = connection(sid)
            if conn is None:
                continue
            mine = own.get(sid)
            if not conn.direct:
                for index, packet in enumerate(packets):
                    if mine is None or index not in mine:
                        conn.send(packet)
            elif self._lags(conn):
                self._fold(conn, False, bodies, ids, mine)
            elif mine is None:
                conn.send_frames(blob)
            elif len(mine) == 1:
                i = mine[0]
                if len(frames) > 1:
                    conn.send_frames(blob[: offsets[i]] + blob[offsets[i + 1] :])
            else:
                rest = [f for index, f in enumerate(frames) if index not in mine]
                if rest:
                    conn.send_frames(b"".join(rest))

    def _send_batches(
        self, sids: set[str], bodies: list[bytes], ids: list[str], own: dict[str, list[int]]
    ) -> None:
        """One ``players:moved`` array per batched recipient, its own moves left out.

        The array of everything is built once; a recipient that moved this tick gets it with
        its own entry cut out by slicing, not rebuilt item by item.
        """
        joined = b",".join(bodies)
        view = memoryview(joined)
        starts: list[int] = []
        position = 0
        for body in bodies:
            starts.append(position)
            position += len(body) + 1
        everything = _BATCH_PREFIX + joined + b"]]"
        everything_frame = _ws_frame(everything)
        last = len(bodies) - 1
        framing = len(_BATCH_PREFIX) + 2
        total = len(joined)
        connection = self.sio.connection
        for sid in list(sids):
            conn = connection(sid)
            if conn is None:
                continue
            mine = own.get(sid)
            if self._lags(conn):
                self._fold(conn, True, bodies, ids, mine)
                continue
            if mine is None:
                conn.send(everything, everything_frame)
                continue
            if len(mine) == 1 and last > 0:
                # the shared array without this recipient's entry: slices of one buffer,
                # written as they are (no copy per recipient)
                i = mine[0]
                if i == last:
                    cut = starts[i] - 1
                    parts = [view[:cut]]
                    size = framing + cut
                else:
                    parts = [view[: starts[i]], view[starts[i + 1] :]]
                    size = framing + total - (starts[i + 1] - starts[i])
                if conn.direct:
                    conn.send_pieces([_ws_text_head(size) + _BATCH_PREFIX, *parts, b"]]"])
                else:
                    conn.send(_BATCH_PREFIX + b"".join(parts) + b"]]")
                continue
            kept = [b for index, b in enumerate(bodies) if index not in mine]
            if kept:
                conn.send(_BATCH_PREFIX + b",".join(kept) + b"]]")

    def _deliver(
        self, sid: str, packet: bytes, frame: bytes | None = None, seq: int | None = None
    ) -> None:
        """One event to one socket, after any positions held back for it; kept for a replay
        when connection state recovery is on. ``seq``: the packet is already stamped."""
        own = seq is None
        if seq is None:
            packet, seq = self.sio.stamp(packet)
            frame = None
        conn = self.sio.connection(sid)
        if conn is not None and conn in self._lagging:
            self._release(conn)  # positions held back go before what follows them
        self.sio.deliver(sid, packet, frame, seq, own=own)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The broadcast path: rooms, targeted emits and coalesced position ticks (SPEC §4).

Positions are state, not events. Moves are stored at once and relayed on a per-space tick of at
most :data:`TICK_SECONDS`: only the newest position of each player goes out, except that a change
of ``isMoving`` is never folded away. When a space has been quiet for a tick the first move goes
out immediately, so idle spaces see no added latency. Events that must follow a player's last
position (a jump, leaving) flush the space's pending moves first.

Every recipient of a tick receives the same bytes, less its own moves: the frames are built once
and written to each WebSocket in one call, instead of one task and one frame write per recipient
and event as python-socketio's ``emit`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import socketio
from engineio import packet as eio_packet

from .observability.logging import log
from .observability.timing import NOT_OBSERVED, Observer
from .wire import ws_frame as _ws_frame

if TYPE_CHECKING:
    from .bus import Bus

TICK_SECONDS = 0.05
WRITE_WINDOW = 0.005
LAGGING_BYTES = 64 * 1024
"""A WebSocket with more than this waiting in its send buffer gets positions folded: only the
newest of each player is kept, and written once the client has caught up."""
DEFAULT_CLIENT_BUFFER_LIMIT = 4 * 1024 * 1024
"""A client with more than this waiting (WebSocket bytes) is disconnected; long-polling clients
are held to the same limit in queued packets / 256."""
_PLAIN_PREFIX = b'42["player:moved",'
_BATCH_PREFIX = b'42["players:moved",['


def _enqueue(sock: Any, packet: bytes) -> None:
    """Queue a pre-encoded ``4…`` engine.io message on the socket's ordinary send path."""
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, packet[1:].decode()))


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
    plain: dict[str, str] = field(default_factory=dict)
    """Sockets that get one ``player:moved`` per position: socket id -> engine.io id."""
    last_flush: float = 0.0
    scheduled: bool = False
    queued_at: float = 0.0
    """When the oldest move of the next tick was queued (monotonic)."""


class Broadcaster:
    """Everything the handlers send goes through here."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        bus: Bus,
        tick: float = TICK_SECONDS,
        buffer_limit: int = DEFAULT_CLIENT_BUFFER_LIMIT,
    ) -> None:
        self.sio = sio
        self.bus = bus
        """What is sent here also goes to the players on the other nodes (if there are any)."""
        self.tick = tick
        self.buffer_limit = buffer_limit
        self.lagging_bytes = min(LAGGING_BYTES, buffer_limit // 4)
        self._lagging: dict[Any, _Lagging] = {}
        self._lag_timer = False
        self.positions_folded = 0
        self.slow_disconnects = 0
        self._spaces: dict[str, _SpaceMoves] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: dict[Any, list[bytes]] = {}
        self._flush_scheduled = False
        self._last_write_out = 0.0
        self.moves_relayed = 0
        self.tick_seconds: Observer = NOT_OBSERVED
        """How long each tick of positions takes to build and write (one figure per tick)."""
        self.move_wait_seconds: Observer = NOT_OBSERVED
        """Per tick: how long its oldest move waited between being queued and written."""
        self._players: dict[str, dict[str, str]] = {}
        """space -> player -> the socket of that player on this node (for targeted events)."""
        self._members: dict[str, dict[str, str]] = {}
        """space -> socket id -> engine.io id, for this node's sockets in the space (kept here
        rather than in Socket.IO rooms, whose two-way dictionaries cost more per socket)."""

    # -- membership ----------------------------------------------------------------------------

    async def enter_space(self, sid: str, space_id: str, player_id: str, batching: bool) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return  # the socket is already gone
        self._members.setdefault(space_id, {})[sid] = eio_sid
        self._players.setdefault(space_id, {})[player_id] = sid
        moves = self._space(space_id)
        if batching:
            moves.batched_sids.add(sid)
        else:
            moves.plain[sid] = eio_sid

    async def leave_space(self, sid: str, space_id: str, player_id: str) -> None:
        members = self._members.get(space_id)
        if members is not None:
            members.pop(sid, None)
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
            moves.plain.pop(sid, None)
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
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self._deliver(eio_sid, _packet(event, data))

    def write(self, transport: Any, data: bytes) -> None:
        """Collect what each socket is sent and write it in one call per socket: at the end of
        this turn of the event loop, or, when the previous write-out was less than
        :data:`WRITE_WINDOW` ago, at the end of that window. A quiet server answers at once; a
        join storm or a busy space costs one system call per socket per window, not one per
        event."""
        pending = self._out.get(transport)
        if pending is None:
            self._out[transport] = [data]
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop = asyncio.get_running_loop()
                delay = self._last_write_out + WRITE_WINDOW - loop.time()
                if delay <= 0:
                    loop.call_soon(self._flush_writes)
                else:
                    loop.call_later(delay, self._flush_writes)
        else:
            pending.append(data)

    def write_out(self) -> None:
        """Write everything collected now; called before a socket is closed or disconnected
        through the engine's own queue, so that nothing sent earlier is overtaken."""
        if self._out:
            self._flush_writes()

    def _flush_writes(self) -> None:
        self._flush_scheduled = False
        self._last_write_out = asyncio.get_running_loop().time()
        out, self._out = self._out, {}
        limit = self.buffer_limit
        for transport, chunks in out.items():
            if transport.is_closing():
                continue
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if transport.get_write_buffer_size() > limit:
                self._too_slow(transport=transport)
                continue
            transport.write(data)

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
            manager = self.sio.manager
            recipients = {}
            for pid in player_ids:
                sid = players.get(pid)
                eio_sid = manager.eio_sid_from_sid(sid, "/") if sid is not None else None
                if eio_sid is not None:
                    recipients[sid] = eio_sid
        self._broadcast(recipients, packet, skip_sid)

    def _broadcast(self, recipients: Any, packet: bytes, skip_sid: str | None) -> None:
        """One event to many sockets: the same frame written to each."""
        if not recipients:
            return
        frame = _ws_frame(packet)
        for sid, eio_sid in list(recipients.items()):
            if sid != skip_sid:
                self._deliver(eio_sid, packet, frame)

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

    def _lags(self, transport: Any) -> bool:
        return transport in self._lagging or (
            transport.get_write_buffer_size() > self.lagging_bytes
        )

    def _fold(
        self,
        transport: Any,
        batched: bool,
        bodies: list[bytes],
        ids: list[str],
        mine: list[int] | None,
    ) -> None:
        """Hold this tick's positions back for a client that is behind, newest per player."""
        lag = self._lagging.get(transport)
        if lag is None:
            lag = self._lagging[transport] = _Lagging(batched)
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
        for transport in list(self._lagging):
            if transport.is_closing():
                del self._lagging[transport]
            elif transport.get_write_buffer_size() <= low:
                self._release(transport)
        if self._lagging:
            self._lag_timer = True
            asyncio.get_running_loop().call_later(self.tick, self._check_lagging)

    def _release(self, transport: Any) -> None:
        lag = self._lagging.pop(transport, None)
        if lag is None or not lag.latest:
            return
        bodies = list(lag.latest.values())
        if lag.batched:
            data = _ws_frame(_BATCH_PREFIX + b",".join(bodies) + b"]]")
        else:
            data = b"".join(_ws_frame(_PLAIN_PREFIX + b + b"]") for b in bodies)
        self.write(transport, data)

    @property
    def lagging_clients(self) -> int:
        return len(self._lagging)

    def _send_each(
        self,
        recipients: Any,
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
        for sid, eio_sid in list(recipients.items()):
            mine = own.get(sid)
            transport, sock = self._direct(eio_sid)
            if sock is None:
                continue
            if transport is None:
                for index, packet in enumerate(packets):
                    if mine is None or index not in mine:
                        self._enqueue(sock, packet)
            elif self._lags(transport):
                self._fold(transport, False, bodies, ids, mine)
            elif mine is None:
                self.write(transport, blob)
            elif len(mine) == 1:
                i = mine[0]
                if len(frames) > 1:
                    self.write(transport, blob[: offsets[i]] + blob[offsets[i + 1] :])
            else:
                rest = [f for index, f in enumerate(frames) if index not in mine]
                if rest:
                    self.write(transport, b"".join(rest))

    def _send_batches(
        self, sids: set[str], bodies: list[bytes], ids: list[str], own: dict[str, list[int]]
    ) -> None:
        """One ``players:moved`` array per batched recipient, its own moves left out.

        The array of everything is built once; a recipient that moved this tick gets it with
        its own entry cut out by slicing, not rebuilt item by item.
        """
        joined = b",".join(bodies)
        starts: list[int] = []
        position = 0
        for body in bodies:
            starts.append(position)
            position += len(body) + 1
        everything = _BATCH_PREFIX + joined + b"]]"
        last = len(bodies) - 1
        manager = self.sio.manager
        for sid in list(sids):
            eio_sid = manager.eio_sid_from_sid(sid, "/")
            if eio_sid is None:
                continue
            mine = own.get(sid)
            transport, sock = self._direct(eio_sid)
            if sock is None:
                continue
            if transport is not None and self._lags(transport):
                self._fold(transport, True, bodies, ids, mine)
                continue
            if mine is None:
                packet = everything
            elif len(mine) == 1 and last > 0:
                i = mine[0]
                if i == last:
                    rest = joined[: starts[i] - 1]
                else:
                    rest = joined[: starts[i]] + joined[starts[i + 1] :]
                packet = _BATCH_PREFIX + rest + b"]]"
            else:
                kept = [b for index, b in enumerate(bodies) if index not in mine]
                if not kept:
                    continue
                packet = _BATCH_PREFIX + b",".join(kept) + b"]]"
            if transport is None:
                self._enqueue(sock, packet)
            else:
                self.write(transport, _ws_frame(packet))

    def _deliver(self, eio_sid: str, packet: bytes, frame: bytes | None = None) -> None:
        """One engine.io message to one socket: straight to its WebSocket when that is safe,
        else through its engine.io queue (long-polling, upgrading, or packets already queued)."""
        transport, sock = self._direct(eio_sid)
        if sock is None:
            return
        if transport is None:
            self._enqueue(sock, packet)
            return
        if transport in self._lagging:
            self._release(transport)  # positions held back go before what follows them
        self.write(transport, frame if frame is not None else _ws_frame(packet))

    def _enqueue(self, sock: Any, packet: bytes) -> None:
        """Through the engine.io queue; a client that lets it grow past the limit is dropped."""
        if sock.queue.qsize() * 256 > self.buffer_limit:
            self._too_slow(sock=sock)
            return
        _enqueue(sock, packet)

    def _too_slow(self, transport: Any = None, sock: Any = None) -> None:
        """Disconnect a client that does not take what it is sent (SPEC §8: it may not make the
        server's memory grow without bound, nor slow the others)."""
        self.slow_disconnects += 1
        if transport is not None:
            self._lagging.pop(transport, None)
            peer = transport.get_extra_info("peername")
            log.warn(
                "E2005",
                "Client too slow: its send buffer passed the limit; disconnected",
                address=str(peer[0]) if peer else None,
                limitBytes=self.buffer_limit,
            )
            transport.abort()
        elif sock is not None and not sock.closed:
            log.warn(
                "E2005",
                "Client too slow: its packet queue passed the limit; disconnected",
                socketId=self.sio.manager.sid_from_eio_sid(sock.sid, "/"),
                queued=sock.queue.qsize(),
            )
            task = asyncio.get_running_loop().create_task(
                sock.close(wait=False, abort=True, reason=self.sio.eio.reason.TRANSPORT_ERROR)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _direct(self, eio_sid: str) -> tuple[Any, Any]:
        """``(transport, socket)``: the raw transport when frames may be written straight to it.

        That is the case for a WebSocket client once the WebSocket has taken over; during an
        upgrade, or on long-polling, packets go through the engine.io queue.
        """
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            return None, None
        return sock.direct_transport(), sock

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

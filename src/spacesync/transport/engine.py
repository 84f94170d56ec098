"""An Engine.IO v4 server: sessions over HTTP long-polling (aiohttp requests) and WebSocket
(connections taken over from the listener, see :mod:`.http`), the upgrade from one to the other,
the heartbeat, ``maxPayload`` and CORS.

Each session is a :class:`Connection`, the one object the layers above send through. What is sent
to a WebSocket is collected per connection and written once per turn of the event loop (or per
:data:`WRITE_WINDOW` when the server is busy), so a burst of events costs one system call per
client, and pre-built frames can be shared by every recipient of a broadcast.

The protocol is the one specified in ``socketio/engine.io-protocol``; where it leaves room, the
choices are the reference server's: a session is closed when it sends something that is not a
packet, when two long-polling requests of the same kind overlap, or when it misses a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from . import codec
from .codec import BadPacket, ws_frame
from .http import Reply, RequestHead
from .websocket import WebSocket, handshake_key, switching_protocols

WRITE_WINDOW = 0.005
"""Writes to WebSockets are collected for at most this long while the server is busy."""
KERNEL_SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a WebSocket (the kernel doubles it). Left to autotuning, each socket of a
client that stops reading may hold megabytes in the kernel, out of the server's sight; capped, a
client that falls behind shows up in the transport's own buffer, where the per-client limit
applies."""

# Reasons a session ends, as the reference server names them.
TRANSPORT_CLOSE = "transport close"
TRANSPORT_ERROR = "transport error"
PING_TIMEOUT = "ping timeout"
PARSE_ERROR = "parse error"
FORCED_CLOSE = "forced close"
SERVER_SHUTDOWN = "server shutting down"
TOO_SLOW = "too slow"

INBOX_LIMIT = 64
"""Messages of one WebSocket waiting for a handler still busy with an earlier one; past this,
the connection is no longer read until the handler catches up."""

log = logging.getLogger("spacesync.transport")

_ERRORS = {
    0: "Transport unknown",
    1: "Session ID unknown",
    2: "Bad handshake method",
    3: "Bad request",
    4: "Forbidden",
    5: "Unsupported protocol version",
}


@dataclass(slots=True)
class EngineOptions:
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    cors_origins: Sequence[str] | str = ()
    """Allowed browser origins, or ``"*"`` for any. A request from another origin is refused."""
    allow_own_origin: bool = False
    """Also accept requests from the server's own origin (``Origin`` naming the ``Host`` the
    request was sent to): a page the server itself serves."""
    upgrade_timeout: float = 10.0
    """A WebSocket opened to upgrade a session must finish the upgrade within this time."""
    buffer_limit: int = 4 * 1024 * 1024
    """A client with more than this waiting to be sent is disconnected."""
    lagging_bytes: int = 64 * 1024
    """A WebSocket with more than this waiting in its send buffer is lagging."""
    max_poll_packets: int = 1024
    """Packets in one long-polling request body."""


class EngineHandler(Protocol):
    """What the layer above is told."""

    def opened(self, conn: Connection) -> None: ...

    async def message(self, conn: Connection, data: str | bytes) -> None: ...

    # optional: ``message_nowait(conn, text) -> bool``, a synchronous hot path tried first for
    # text messages read from a WebSocket; ``refuses_binary(conn) -> bool``, asked (and left to
    # close the session) when a binary message starts arriving on a WebSocket, before it is read;
    # ``pinging(conn)`` and ``ponged(conn)``, told when a PING goes out and when it is answered

    def closed(self, conn: Connection, reason: str) -> None: ...


class Gate(Protocol):
    """Counts sessions per client address, from handshake to close."""

    def opened(self, address: str) -> None: ...

    def closed(self, address: str) -> None: ...


class Connection:
    """One Engine.IO session: what the layers above send through.

    ``send`` takes an encoded Engine.IO message (``b"4..."``), with its WebSocket frame when the
    caller already built one for several recipients; ``lagging`` and ``buffered_bytes`` tell how
    far behind the client is; ``close`` ends the session.
    """

    __slots__ = (
        "__weakref__",
        "_due",
        "_poll",
        "_posting",
        "_queue",
        "_queued_bytes",
        "_tx",
        "_ws",
        "address",
        "close_reason",
        "closed",
        "engine",
        "owner",
        "pinged",
        "sid",
        "transport",
        "upgrading",
    )

    def __init__(self, engine: EngineServer, sid: str, address: str, transport: str) -> None:
        self.engine = engine
        self.sid = sid
        self.address = address
        self.transport = transport
        self.closed = False
        self.close_reason = ""
        self.upgrading = False
        self.pinged = False
        self.owner: Any = None
        """The layer above's object for this session (set when it is opened)."""
        self._queue: list[str | bytes] = []
        self._queued_bytes = 0
        self._poll: asyncio.Future[None] | None = None
        self._posting = False
        self._tx: asyncio.Transport | None = None
        self._ws: EngineSocket | None = None
        self._due = 0
        """The :class:`Heartbeats` slot in which the heartbeat next acts on this session."""

    def __repr__(self) -> str:
        return f"<Connection {self.sid} {self.transport}{' closed' if self.closed else ''}>"

    # -- sending ------------------------------------------------------------------------------

    @property
    def direct(self) -> bool:
        """Whether packets go straight to a WebSocket (not queued for long-polling)."""
        return self._tx is not None and not self.upgrading

    def send(self, packet: bytes, frame: bytes | None = None) -> None:
        """An encoded Engine.IO packet (``b"4..."`` for a message); ``frame`` is its WebSocket
        frame, when already built."""
        if self.closed:
            return
        if self._tx is not None and not self.upgrading:
            self.engine.write(self, frame if frame is not None else ws_frame(packet))
        else:
            self._enqueue(packet.decode())

    def send_frames(self, frames: bytes) -> None:
        """Pre-built WebSocket frames, for a connection that is :attr:`direct`."""
        if not self.closed and self._tx is not None and not self.upgrading:
            self.engine.write(self, frames)

    def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        """One WebSocket frame in pieces (its header first), written without joining them:
        a broadcast can hand each recipient slices of one shared buffer. For a connection
        that is :attr:`direct`."""
        if not self.closed and self._tx is not None and not self.upgrading:
            self.engine.write_pieces(self, pieces)

    def send_text(self, packet: str) -> None:
        if self.closed:
            return
        if self._tx is not None and not self.upgrading:
            self.engine.write(self, ws_frame(packet.encode()))
        else:
            self._enqueue(packet)

    def send_text_now(self, packet: str) -> None:
        """Like :meth:`send_text`, but written at once in a write of its own (after what is
        already collected), not with what follows it."""
        self.send_text(packet)
        if self._tx is not None and not self.upgrading:
            self.engine.flush(self)

    def send_binary(self, data: bytes) -> None:
        """A binary message (raw on WebSocket, base64 on long-polling)."""
        if self.closed:
            return
        if self._tx is not None and not self.upgrading:
            self.engine.write(self, ws_frame(data, binary=True))
        else:
            self._enqueue(data)

    def _enqueue(self, packet: str | bytes) -> None:
        self._queue.append(packet)
        self._queued_bytes += len(packet)
        if self._queued_bytes > self.engine.options.buffer_limit:
            self.engine.too_slow(self)
            return
        poll = self._poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    @property
    def buffered_bytes(self) -> int:
        """What is waiting to be sent to the client."""
        tx = self._tx
        if tx is not None and not self.upgrading:
            return tx.get_write_buffer_size() + self.engine.pending_bytes(self)
        return self._queued_bytes

    @property
    def lagging(self) -> bool:
        tx = self._tx
        return (
            tx is not None
            and not self.upgrading
            and tx.get_write_buffer_size() > self.engine.options.lagging_bytes
        )

    # -- heartbeat ----------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        self.pinged = False
        self.engine.heartbeat_due(self, self.engine.options.ping_interval)

    def _ping(self) -> None:
        self.pinged = True
        self.send_text(codec.PING)
        engine = self.engine
        engine.heartbeat_due(self, engine.options.ping_timeout)
        if engine._pinging is not None:
            engine._pinging(self)

    def _pong(self) -> None:
        if self.pinged:
            self._schedule_ping()
            if self.engine._ponged is not None:
                self.engine._ponged(self)

    # -- closing ------------------------------------------------------------------------------

    def close(self, reason: str = FORCED_CLOSE, graceful: bool = True) -> None:
        """End the session. ``graceful``: what was sent before goes out first, then a close
        (a WebSocket close frame, or a CLOSE packet for a waiting long-poll)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        engine = self.engine
        tx = self._tx
        if tx is not None and not self.upgrading:
            if graceful:
                engine.flush(self)
                if not tx.is_closing():
                    tx.write(codec.WS_CLOSE_FRAME)
                    tx.close()
            else:
                engine.discard(self)
                tx.abort()
        else:
            if tx is not None:  # a WebSocket that was still upgrading
                tx.abort()
            poll = self._poll
            if poll is not None and not poll.done():
                self._queue.append(codec.CLOSE if graceful else codec.NOOP)
                poll.set_result(None)
            elif graceful:
                # What was sent before the close (a Socket.IO DISCONNECT, an error) is still
                # handed to the client's next long-poll, with the CLOSE packet.
                self._queue.append(codec.CLOSE)
                engine.forget(self, reason, drain=True)
                return
        engine.forget(self, reason)

    def abort(self, reason: str) -> None:
        """Close at once, without sending anything (hostile or broken input)."""
        self.close(reason, graceful=False)


class Heartbeats:
    """Every session's next heartbeat action, in slots of ``step`` seconds, with one timer for
    the earliest slot (instead of a timer per session: a few bytes per session, not half a
    kilobyte). Actions run at the start of their slot, at most ``step`` early, never late."""

    __slots__ = ("_act", "_keys", "_loop", "_slots", "_timer", "_timer_slot", "step")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, step: float, act: Callable[[Connection], None]
    ) -> None:
        self._loop = loop
        self.step = step
        self._act = act
        self._slots: dict[int, list[Connection]] = {}
        self._keys: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0

    def add(self, conn: Connection, delay: float) -> None:
        slot = int((self._loop.time() + delay) / self.step)
        conn._due = slot
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.append(conn)
            return
        self._slots[slot] = [conn]
        heapq.heappush(self._keys, slot)
        if self._timer is None or slot < self._timer_slot:
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self._loop.call_at(slot * self.step, self._run)

    def _run(self) -> None:
        self._timer = None
        keys = self._keys
        limit = self._loop.time() + 0.001
        while keys and keys[0] * self.step <= limit:
            slot = heapq.heappop(keys)
            for conn in self._slots.pop(slot):
                if conn._due == slot:  # not moved to a later slot since
                    try:
                        self._act(conn)
                    except Exception:
                        log.exception("A heartbeat failed")
        if keys:
            self._arm(keys[0])

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()
        self._keys.clear()


@dataclass(slots=True)
class _Writes:
    pending: dict[Connection, list[bytes | memoryview]] = field(default_factory=dict)
    scheduled: bool = False
    last: float = 0.0


class EngineServer:
    """Engine.IO sessions over aiohttp; :meth:`handle` is the request handler for the path."""

    def __init__(
        self,
        handler: EngineHandler,
        options: EngineOptions | None = None,
        *,
        gate: Gate | None = None,
        address_of: Callable[[Any], str] | None = None,
        on_too_slow: Callable[[Connection], None] | None = None,
    ) -> None:
        self.handler = handler
        self.options = options or EngineOptions()
        self.gate = gate
        self.address_of = address_of or (lambda request: request.remote or "")
        self.on_too_slow = on_too_slow
        self._nowait: Callable[[Connection, str], bool] | None = getattr(
            handler, "message_nowait", None
        )
        self._refuses_binary: Callable[[Connection], bool] | None = getattr(
            handler, "refuses_binary", None
        )
        self._pinging: Callable[[Connection], None] | None = getattr(handler, "pinging", None)
        self._ponged: Callable[[Connection], None] | None = getattr(handler, "ponged", None)
        self.sessions: dict[str, Connection] = {}
        self.slow_disconnects = 0
        self._writes = _Writes()
        self._heartbeats: Heartbeats | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- heartbeat ----------------------------------------------------------------------------

    def heartbeat_due(self, conn: Connection, delay: float) -> None:
        """Have the heartbeat act on ``conn`` in ``delay`` seconds."""
        heartbeats = self._heartbeats
        if heartbeats is None:
            o = self.options
            heartbeats = self._heartbeats = Heartbeats(
                self.loop, min(o.ping_interval, o.ping_timeout) / 20, self._beat
            )
        heartbeats.add(conn, delay)

    def _beat(self, conn: Connection) -> None:
        if conn.closed:
            return
        if conn.pinged:
            conn.close(PING_TIMEOUT, graceful=False)
        else:
            conn._ping()

    # -- writes -------------------------------------------------------------------------------

    def write(self, conn: Connection, data: bytes) -> None:
        pending = self._writes.pending.get(conn)
        if pending is None:
            self._writes.pending[conn] = [data]
            self._schedule_flush()
        else:
            pending.append(data)

    def write_pieces(self, conn: Connection, pieces: list[bytes | memoryview]) -> None:
        pending = self._writes.pending.get(conn)
        if pending is None:
            self._writes.pending[conn] = pieces
            self._schedule_flush()
        else:
            pending.extend(pieces)

    def _schedule_flush(self) -> None:
        writes = self._writes
        if not writes.scheduled:
            writes.scheduled = True
            loop = self.loop
            delay = writes.last + WRITE_WINDOW - loop.time()
            if delay <= 0:
                loop.call_soon(self.flush_all)
            else:
                loop.call_later(delay, self.flush_all)

    def pending_bytes(self, conn: Connection) -> int:
        pending = self._writes.pending.get(conn)
        return sum(map(len, pending)) if pending else 0

    def flush_all(self) -> None:
        writes = self._writes
        writes.scheduled = False
        writes.last = self.loop.time()
        pending, writes.pending = writes.pending, {}
        limit = self.options.buffer_limit
        for conn, chunks in pending.items():
            tx = conn._tx
            if tx is None or tx.is_closing():
                continue
            if tx.get_write_buffer_size() > limit:
                self.too_slow(conn)
                continue
            if len(chunks) == 1:
                tx.write(chunks[0])
            else:
                tx.writelines(chunks)

    def flush(self, conn: Connection) -> None:
        """Write what is collected for ``conn`` now (before it is closed)."""
        chunks = self._writes.pending.pop(conn, None)
        tx = conn._tx
        if chunks and tx is not None and not tx.is_closing():
            tx.writelines(chunks)

    def discard(self, conn: Connection) -> None:
        self._writes.pending.pop(conn, None)

    def too_slow(self, conn: Connection) -> None:
        """Disconnect a client that does not take what it is sent."""
        if conn.closed:
            return
        self.slow_disconnects += 1
        if self.on_too_slow is not None:
            self.on_too_slow(conn)
        conn.close(TOO_SLOW, graceful=False)

    # -- sessions -----------------------------------------------------------------------------

    def _open(self, address: str, transport: str) -> Connection:
        sid = secrets.token_urlsafe(15)
        conn = Connection(self, sid, address, transport)
        self.sessions[sid] = conn
        if self.gate is not None:
            self.gate.opened(address)
        return conn

    def _handshake(self, conn: Connection) -> str:
        upgrades = '["websocket"]' if conn.transport == "polling" else "[]"
        o = self.options
        return (
            f'0{{"sid":"{conn.sid}","upgrades":{upgrades},'
            f'"pingInterval":{round(o.ping_interval * 1000)},'
            f'"pingTimeout":{round(o.ping_timeout * 1000)},"maxPayload":{o.max_payload}}}'
        )

    def forget(self, conn: Connection, reason: str, drain: bool = False) -> None:
        """A closed session: gone from the table, uncounted, and the layer above told.

        ``drain``: a long-polling session keeps its entry until its next GET has fetched what
        is queued (or for one heartbeat period, if that GET never comes)."""
        if drain:
            self.loop.call_later(
                self.options.ping_interval + self.options.ping_timeout, self._drop, conn
            )
        else:
            self._drop(conn)
        if self.gate is not None:
            self.gate.closed(conn.address)
        try:
            self.handler.closed(conn, reason)
        except Exception:
            log.exception("Closing a session failed")

    def _drop(self, conn: Connection) -> None:
        if self.sessions.get(conn.sid) is conn:
            del self.sessions[conn.sid]

    async def close_all(self, reason: str = SERVER_SHUTDOWN) -> None:
        for conn in list(self.sessions.values()):
            conn.close(reason)
        await asyncio.sleep(0)

    async def shutdown(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- HTTP ---------------------------------------------------------------------------------

    def _cors(self, request: RequestHead | web.Request) -> dict[str, str] | None:
        """CORS headers for the request's origin, or ``None`` when the origin is refused."""
        origin = request.headers.get("Origin")
        allowed = self.options.cors_origins
        if origin is None:
            return {}
        if allowed == "*":
            return {"Access-Control-Allow-Origin": "*"}
        if origin in allowed or (self.options.allow_own_origin and _own_origin(origin, request)):
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        return None

    def _refusal(
        self, code: int, headers: dict[str, str] | None = None, status: int = 400
    ) -> Reply:
        return Reply(status, {"code": code, "message": _ERRORS[code]}, headers or {})

    def _error(self, code: int, headers: dict[str, str] | None = None, status: int = 400) -> Any:
        return self._refusal(code, headers, status).response()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        cors = self._cors(request)
        if cors is None:
            return self._error(4, status=403)  # not an accepted origin
        if request.method == "OPTIONS":
            headers = dict(cors)
            headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            wanted = request.headers.get("Access-Control-Request-Headers")
            if wanted:
                headers["Access-Control-Allow-Headers"] = wanted
            return web.Response(status=204, headers=headers)
        query = request.query
        if query.get("EIO") != "4":
            return self._error(5, cors)
        transport = query.get("transport")
        if transport not in ("polling", "websocket"):
            return self._error(0, cors)
        sid = query.get("sid")
        if transport == "websocket":
            return await self._websocket_after_http(request, cors)
        if sid is None:
            if request.method != "GET":
                return self._error(2, cors)
            conn = self._open(self.address_of(request), "polling")
            conn._queue.append(self._handshake(conn))
            self.handler.opened(conn)
            conn._schedule_ping()
            return await self._get(conn, cors)
        conn = self.sessions.get(sid)
        if conn is None:
            return self._error(1, cors)
        if conn.closed:
            self._drop(conn)
            if request.method != "GET" or not conn._queue:
                return self._error(1, cors)
            packets, conn._queue = conn._queue, []
            return web.Response(
                text=codec.encode_payload(packets),
                headers={"Content-Type": "text/plain; charset=UTF-8", **cors},
            )
        if conn.transport != "polling" or (conn._tx is not None and not conn.upgrading):
            return self._error(3, cors)
        if request.method == "GET":
            return await self._get(conn, cors)
        if request.method == "POST":
            return await self._post(conn, request, cors)
        return self._error(2, cors)

    async def _get(self, conn: Connection, cors: dict[str, str]) -> web.Response:
        headers = {"Content-Type": "text/plain; charset=UTF-8", **cors}
        if conn._poll is not None:
            # Two long-polls at once: the protocol says the session is over. The first gets
            # the CLOSE packet, this one an error.
            conn.close(TRANSPORT_ERROR)
            return self._error(3, cors)
        if not conn._queue:
            poll = conn._poll = self.loop.create_future()
            try:
                await poll
            finally:
                conn._poll = None
        if not conn._queue:
            return self._error(1, cors) if conn.closed else web.Response(text="6", headers=headers)
        packets, conn._queue = conn._queue, []
        conn._queued_bytes = 0
        return web.Response(text=codec.encode_payload(packets), headers=headers)

    async def _post(
        self, conn: Connection, request: web.Request, cors: dict[str, str]
    ) -> web.Response:
        headers = {"Content-Type": "text/html", **cors}
        if conn._posting:
            conn.close(TRANSPORT_ERROR)
            return self._error(3, cors)
        limit = self.options.max_payload
        if request.content_length is not None and request.content_length > limit:
            conn.close(TRANSPORT_ERROR, graceful=False)
            return web.json_response(
                {"code": 3, "message": "Payload too large"}, status=413, headers=cors
            )
        conn._posting = True
        try:
            body = bytearray()
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) > limit:
                conn.close(TRANSPORT_ERROR, graceful=False)
                return web.json_response(
                    {"code": 3, "message": "Payload too large"}, status=413, headers=cors
                )
            try:
                packets = codec.decode_payload(body.decode())
            except (BadPacket, UnicodeDecodeError):
                conn.close(PARSE_ERROR, graceful=False)
                return self._error(3, cors)
            if len(packets) > self.options.max_poll_packets:
                conn.close(PARSE_ERROR, graceful=False)
                return self._error(3, cors)
            for packet in packets:
                if conn.closed:
                    break
                await self._receive(conn, packet)
        finally:
            conn._posting = False
        if conn.closed and conn.close_reason in (PARSE_ERROR, TRANSPORT_ERROR):
            return self._error(3, cors)
        return web.Response(text="ok", headers=headers)

    async def _receive(self, conn: Connection, packet: str | bytes) -> None:
        """One packet from the client (over either transport)."""
        if isinstance(packet, bytes):
            await self.handler.message(conn, packet)
        elif packet[:1] == codec.MESSAGE:
            await self.handler.message(conn, packet[1:])
        else:
            self._control(conn, packet)

    def _control(self, conn: Connection, packet: str) -> None:
        """A packet other than a message."""
        kind = packet[:1]
        if kind == codec.PONG:
            conn._pong()
        elif kind == codec.CLOSE:
            conn.close(TRANSPORT_CLOSE, graceful=False)
        elif kind == codec.NOOP:
            pass
        else:
            # OPEN, a PING (a v4 client never sends one), an UPGRADE outside an upgrade, or
            # anything else: not a packet this side of the protocol accepts.
            conn.close(PARSE_ERROR, graceful=False)

    # -- WebSocket ----------------------------------------------------------------------------

    async def _websocket_after_http(
        self, request: web.Request, cors: dict[str, str]
    ) -> web.StreamResponse:
        """A WebSocket upgrade that reached aiohttp: one sent on a connection that already
        carried a request (a proxy reusing its upstream connections does that). It is accepted
        as the listener would, and the connection is taken from aiohttp the same way; aiohttp's
        protocol is told when it is lost, and this handler waits for that."""
        tx = request.transport
        if tx is None or request.method != "GET":
            return self._error(3, cors)
        http_protocol = tx.get_protocol()
        refused = self.accept_websocket(request)
        if refused is not None:
            return refused.response()
        socket = tx.get_protocol()
        if not isinstance(socket, EngineSocket):
            # answered and closed already (a second WebSocket for an upgrading session)
            return web.Response()  # never written: the transport is closing
        ended = self.loop.create_future()
        socket.after_http(http_protocol, ended)
        await ended
        return web.Response()  # never written: aiohttp knows the connection is gone

    def accept_websocket(self, request: RequestHead | web.Request) -> Reply | None:
        """A WebSocket upgrade request (from the listener, or from aiohttp on a reused
        connection): a new session, or the upgrade of a long-polling one (``sid``). ``None``
        when accepted: the ``101`` is written and the transport now delivers to an
        :class:`EngineSocket`."""
        cors = self._cors(request)
        if cors is None:
            return self._refusal(4, status=403)
        query = request.query
        if query.get("EIO") != "4":
            return self._refusal(5, cors)
        key = handshake_key(request.headers)
        if key is None:
            return self._refusal(3, cors)
        sid = query.get("sid")
        upgrading: Connection | None = None
        if sid is not None:
            upgrading = self.sessions.get(sid)
            if upgrading is None or upgrading.closed:
                return self._refusal(1, cors)
        tx = request.transport
        if tx.is_closing():
            return None
        if upgrading is not None and (
            upgrading.transport != "polling" or upgrading.upgrading or upgrading._tx is not None
        ):
            # A second WebSocket for a session that is already upgrading or upgraded.
            tx.write(switching_protocols(key) + codec.WS_CLOSE_FRAME)
            tx.close()
            return None
        sock = tx.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        tx.write(switching_protocols(key))
        if upgrading is None:
            conn = self._open(self.address_of(request), "websocket")
            conn._tx = tx
            conn._ws = EngineSocket(self, conn, tx, probing=False)
            tx.set_protocol(conn._ws)
            conn.send_text(self._handshake(conn))
            self.handler.opened(conn)
            conn._schedule_ping()
        else:
            upgrading._tx = tx
            upgrading.upgrading = True
            upgrading._ws = EngineSocket(self, upgrading, tx, probing=True)
            tx.set_protocol(upgrading._ws)
        return None


class EngineSocket(WebSocket):
    """The WebSocket of one session: Engine.IO packets in, in order.

    Messages go to the handler's synchronous hot path when it takes them; otherwise to its
    coroutine, and while that runs, later messages wait in a small inbox (reading pauses when
    it fills), so one client's messages are always handled in the order they were sent.

    A WebSocket opened to upgrade a long-polling session first goes through the probe
    (``2probe``, ``3probe``, then ``5``) within ``upgrade_timeout``; until then the session stays
    on long-polling, and a failed upgrade only closes this WebSocket.
    """

    __slots__ = ("_after", "_end", "_inbox", "_probe", "_timer", "conn", "engine")

    def __init__(
        self, engine: EngineServer, conn: Connection, tx: asyncio.Transport, *, probing: bool
    ) -> None:
        super().__init__(tx, engine.options.max_payload)
        self.engine = engine
        self.conn = conn
        self._inbox: deque[str | bytes] | None = None
        self._end: tuple[str, bool] | None = None
        """How the connection ended, while messages read before its end are still handled."""
        self._after: tuple[asyncio.BaseProtocol, asyncio.Future[None]] | None = None
        self._probe = 1 if probing else 0
        """1: waiting for ``2probe``; 2: waiting for ``5``; 0: open."""
        self._timer: asyncio.TimerHandle | None = None
        if probing:
            self._timer = engine.loop.call_later(
                engine.options.upgrade_timeout, self._abandon_upgrade
            )

    def after_http(self, protocol: asyncio.BaseProtocol, ended: asyncio.Future[None]) -> None:
        """This WebSocket replaced ``protocol`` (aiohttp's, mid-request): it is told when the
        connection is lost, and ``ended`` is resolved."""
        self._after = (protocol, ended)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        after, self._after = self._after, None
        if after is not None:
            protocol, ended = after
            try:
                protocol.connection_lost(exc)
            finally:
                if not ended.done():
                    ended.set_result(None)

    def on_text(self, text: str) -> None:
        if self._probe:
            self._probing(text)
        elif self._inbox is not None:
            self._queue(text)
        elif text[:1] == codec.MESSAGE:
            conn = self.conn
            nowait = self.engine._nowait
            if conn.closed or (nowait is not None and nowait(conn, text[1:])):
                return
            self._queue(text)
        elif not self.conn.closed:
            self.engine._control(self.conn, text)

    def on_binary(self, data: bytes) -> None:
        if self._probe:
            self._abandon_upgrade()
        else:
            self._queue(data)

    def binary_allowed(self) -> bool:
        if self._probe:
            self._abandon_upgrade()
            return False
        if self._inbox is not None:
            return True  # decided in order, after what is still waiting (its announcement)
        refuses = self.engine._refuses_binary
        return refuses is None or not refuses(self.conn)

    def on_end(self, reason: str, graceful: bool) -> None:
        if self._probe:
            self._abandon_upgrade()
        elif self.conn._ws is not self:
            return
        elif self._inbox is not None:
            self._end = (reason, graceful)  # what was read before the end is handled first
        else:
            self.conn.close(reason, graceful=graceful)

    # -- messages in order --------------------------------------------------------------------

    def _queue(self, packet: str | bytes) -> None:
        inbox = self._inbox
        if inbox is None:
            self._inbox = deque((packet,))
            self.engine.spawn(self._drain())
            return
        inbox.append(packet)
        if len(inbox) >= INBOX_LIMIT:
            self.hold()

    async def _drain(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        conn = self.conn
        engine = self.engine
        nowait = engine._nowait
        try:
            while inbox and not conn.closed:
                packet = inbox.popleft()
                if not (
                    nowait is not None
                    and type(packet) is str
                    and packet[:1] == codec.MESSAGE
                    and nowait(conn, packet[1:])
                ):
                    await engine._receive(conn, packet)
                if self.held and len(inbox) <= INBOX_LIMIT // 2:
                    self.release()
        except asyncio.CancelledError:
            conn.close(TRANSPORT_CLOSE, graceful=False)
            raise
        except Exception:
            log.exception("Handling a WebSocket message failed")
            conn.close(TRANSPORT_ERROR, graceful=False)
        finally:
            self._inbox = None
            end, self._end = self._end, None
            if end is not None:
                conn.close(end[0], graceful=end[1])
            elif self.held and not conn.closed:
                self.release()

    # -- the upgrade of a long-polling session -------------------------------------------------

    def _probing(self, text: str) -> None:
        conn = self.conn
        if conn.closed:
            self._abandon_upgrade()
        elif self._probe == 1 and text == "2probe":
            self._probe = 2
            self.tx.write(ws_frame(b"3probe"))
            conn._enqueue(codec.NOOP)  # ends a long-poll in progress (or answers the next one)
        elif self._probe == 2 and text == codec.UPGRADE:
            self._upgraded()
        elif self._probe == 2 and text == codec.PONG:
            conn._pong()
        else:
            self._abandon_upgrade()

    def _upgraded(self) -> None:
        self._probe = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self.conn
        conn.transport = "websocket"
        conn.upgrading = False
        queued, conn._queue = conn._queue, []
        conn._queued_bytes = 0
        poll = conn._poll
        if poll is not None and not poll.done():
            poll.set_result(None)  # a long-poll still open is answered with nothing (NOOP)
        for packet in queued:
            if packet == codec.NOOP:
                continue
            if isinstance(packet, bytes):
                conn.send_binary(packet)
            else:
                conn.send_text(packet)

    def _abandon_upgrade(self) -> None:
        """The upgrade failed or timed out: this WebSocket closes, the session stays on
        long-polling."""
        if not self._probe:
            return
        self._probe = 0
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self.conn
        if conn._ws is self:
            conn._tx = None
            conn._ws = None
            conn.upgrading = False
        if not self.tx.is_closing():
            self.tx.write(codec.WS_CLOSE_FRAME)
            self.tx.close()


def _own_origin(origin: str, request: RequestHead | web.Request) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    host = request.headers.get("Host", "")
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host

"""A Socket.IO v5 server over :mod:`.engine`: namespaces, events, acknowledgements, binary
attachments (when allowed) and connection state recovery.

Events of one client are handled one at a time, in the order sent. A packet that is not valid
Socket.IO closes the client's connection, as the protocol specifies.

**Connection state recovery** (as Socket.IO 4.6 defines it): the CONNECT answer carries a private
session id (``pid``) and every event sent carries an offset as its last argument. When a client
loses its connection without saying goodbye (the link dropped, a missed heartbeat), its sockets
are held for ``recovery_window`` seconds with everything sent to them meanwhile; a client that
reconnects within that time and presents its ``pid`` and last offset gets the same socket id back,
with the missed events replayed, and the application never sees a disconnect. Events sent while
the client was still connected are kept for one heartbeat period too, since the last ones may
have been lost with the link.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import time
import zlib
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import codec
from .codec import (
    S_ACK,
    S_BINARY_ACK,
    S_BINARY_EVENT,
    S_CONNECT,
    S_DISCONNECT,
    S_EVENT,
    BadPacket,
    Packet,
)
from .engine import (
    FORCED_CLOSE,
    PARSE_ERROR,
    PING_TIMEOUT,
    TRANSPORT_CLOSE,
    TRANSPORT_ERROR,
    Connection,
    EngineOptions,
    EngineServer,
    Gate,
)
from .http import Reply, RequestHead

log = logging.getLogger("spacesync.transport")

CLIENT_DISCONNECT = "client namespace disconnect"
SERVER_DISCONNECT = "server namespace disconnect"
RECOVERABLE = frozenset({TRANSPORT_CLOSE, TRANSPORT_ERROR, PING_TIMEOUT})
"""Ways of losing a client after which its sockets are held for recovery."""
REPLAY_SWEEP = 15.0
"""Seconds between sweeps of the events kept for replays."""
MAX_REPLAY = 1000
"""Events kept per socket for a replay; a held socket that would need more is let go."""

Handler = Callable[..., Awaitable[Any]]
OWN = frozenset({"connect", "connected", "disconnect", "recover", "*"})
"""Handler names of the server's own: an event of that name is an unknown event."""


class ConnectionRefused(Exception):
    """Raised by a connect handler: the client gets ``CONNECT_ERROR`` with this message."""

    def __init__(self, message: str = "Connection refused", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class Socket:
    """A client's connection to one namespace."""

    __slots__ = (
        "client",
        "connected",
        "expiry",
        "last_seq",
        "lost",
        "namespace",
        "pid",
        "pinged_seq",
        "pruned",
        "replay",
        "sid",
    )

    def __init__(self, sid: str, namespace: str, client: Client | None) -> None:
        self.sid = sid
        self.namespace = namespace
        self.client = client
        self.connected = False
        self.pid: str | None = None
        self.replay: Replay | None = None
        self.last_seq = 0
        self.pinged_seq = 0
        """``last_seq`` when the connection's last PING went out: once it is answered, the
        client has every event up to there."""
        self.pruned = False
        self.expiry: asyncio.TimerHandle | None = None
        self.lost = ""
        """Why the connection was lost, while the socket is held for recovery."""

    @property
    def conn(self) -> Connection | None:
        client = self.client
        return client.conn if client is not None else None


PACK_OVER = 1024
"""A packet sent to one socket only and longer than this is kept deflated for its replay."""


class Packed(bytes):
    """A kept packet, deflated."""


class Replay:
    """The events kept for a socket's replay, in three compact columns (a few bytes per event
    instead of a tuple each: thousands of sockets keep dozens of events).

    A broadcast's packet is one object shared by every recipient's replay; a large packet of
    one socket's own (the roster of ``room:joined``, kept for as long as any other event) is
    kept deflated, a fraction of its size, and inflated only for a replay."""

    __slots__ = ("packets", "seqs", "times")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self.packets: list[bytes] = []

    def add(self, seq: int, at: float, packet: bytes, own: bool = False) -> None:
        if own and len(packet) > PACK_OVER:
            packet = Packed(zlib.compress(packet, 1))
        self.seqs.append(seq)
        self.times.append(at)
        self.packets.append(packet)

    def drop_received(self, seq: int) -> bool:
        """Forget the events before ``seq`` (the client has them; ``seq`` itself is kept, as
        the offset a reconnecting client names); True when anything was forgotten."""
        return self._forget(bisect.bisect_left(self.seqs, seq))

    def drop_before(self, at: float, room: int) -> bool:
        """Forget the events kept from before ``at``, and the oldest beyond ``room``; True when
        anything was forgotten."""
        times = self.times
        n = 0
        limit = len(times)
        while n < limit and times[n] < at:
            n += 1
        return self._forget(max(n, limit - room))

    def _forget(self, n: int) -> bool:
        """Forget the ``n`` oldest events; True when there were any."""
        if n <= 0:
            return False
        del self.seqs[:n]
        del self.times[:n]
        del self.packets[:n]
        return True


class Client:
    """What belongs to one Engine.IO session: its sockets, by namespace."""

    __slots__ = ("attachments", "conn", "pending", "refused", "sockets", "timer")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sockets: dict[str, Socket] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.pending: Packet | None = None
        """A binary packet waiting for its attachments."""
        self.attachments: list[bytes] = []
        self.refused = False
        """Closed for its input (and reported as such)."""


class Namespace:
    __slots__ = ("handlers", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: dict[str, Handler] = {}


class SocketServer:
    """The Socket.IO server. Register handlers with :meth:`on`; mount :meth:`handle` on the
    Socket.IO path.

    Handlers: ``connect(sid, address, auth)`` (may raise :class:`ConnectionRefused`),
    ``disconnect(sid, reason)``, ``recover(sid)`` (a held socket came back), ``<event>(sid,
    *args)`` (its return value answers an acknowledgement), and ``*`` (``(event, sid, *args)``,
    for events without a handler of their own).
    """

    def __init__(
        self,
        options: EngineOptions | None = None,
        *,
        connect_timeout: float = 45.0,
        allow_binary: bool = False,
        recovery_window: float = 0.0,
        on_refused: Callable[[Connection, str | None, str, str], None] | None = None,
        gate: Gate | None = None,
        address_of: Callable[[web.Request], str] | None = None,
        on_too_slow: Callable[[Connection], None] | None = None,
    ) -> None:
        self.engine = EngineServer(
            self, options, gate=gate, address_of=address_of, on_too_slow=on_too_slow
        )
        self.options = self.engine.options
        self.connect_timeout = connect_timeout
        self.allow_binary = allow_binary
        self.recovery_window = recovery_window
        self.fast: Callable[[str, str], bool] | None = None
        self.on_refused = on_refused
        """``(connection, sid, kind, detail)``: input the connection was closed for."""
        self.namespaces: dict[str, Namespace] = {"/": Namespace("/")}
        self.sockets: dict[str, Socket] = {}
        """Every socket, connected or held for recovery, by id."""
        self._held: dict[str, Socket] = {}
        """Sockets held for recovery, by pid."""
        self._seq = 0
        self._acks: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._ack_ids = 0
        self.recovered = 0
        self.recovery_failed = 0
        self._sweeping = False

    # -- registration -------------------------------------------------------------------------

    def on(self, event: str, handler: Handler, namespace: str = "/") -> None:
        nsp = self.namespaces.get(namespace)
        if nsp is None:
            nsp = self.namespaces[namespace] = Namespace(namespace)
        nsp.handlers[event] = handler

    def on_raw_event(self, handler: Callable[[str, str], bool]) -> None:
        """Register ``(sid, packet text) -> handled``, called for each event packet of the main
        namespace before it is decoded (a hot path); the packet goes the ordinary way when it
        returns False."""
        self.fast = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The HTTP handler of the path (long-polling)."""
        return await self.engine.handle(request)

    def accept_websocket(self, request: RequestHead) -> Reply | None:
        """A WebSocket upgrade request on the path (see :data:`.http.WEBSOCKET_ROUTES`)."""
        return self.engine.accept_websocket(request)

    # -- lookups ------------------------------------------------------------------------------

    def connection(self, sid: str) -> Connection | None:
        """The live connection of a socket (``None`` if gone or held for recovery)."""
        sock = self.sockets.get(sid)
        if sock is None or not sock.connected:
            return None
        conn = sock.conn
        return conn if conn is not None and not conn.closed else None

    def is_connected(self, sid: str) -> bool:
        sock = self.sockets.get(sid)
        return sock is not None and sock.connected

    # -- sending ------------------------------------------------------------------------------

    def stamp(self, packet: bytes) -> tuple[bytes, int]:
        """An event packet (``b"42[...]"``) with a recovery offset appended, and that offset's
        number (0 and the packet unchanged when recovery is off)."""
        if not self.recovery_window:
            return packet, 0
        self._seq += 1
        seq = self._seq
        return b'%s,"%d"]' % (packet[:-1], seq), seq

    def deliver(
        self,
        sid: str,
        packet: bytes,
        frame: bytes | None = None,
        seq: int = 0,
        own: bool = False,
    ) -> None:
        """A stamped event (see :meth:`stamp`) to one socket of the main namespace: sent, and
        kept for a replay; kept only, while the socket is held for recovery. ``own``: the
        packet was made for this socket alone (not shared with other recipients)."""
        sock = self.sockets.get(sid)
        if sock is None:
            return
        if seq and sock.pid is not None:
            self._keep(sock, seq, packet, own)
        if sock.connected:
            client = sock.client
            if client is not None:
                client.conn.send(packet, frame)

    def send_volatile(self, sid: str, packet: bytes, frame: bytes | None = None) -> None:
        """A packet that is not worth replaying (a position): sent if the socket is live."""
        sock = self.sockets.get(sid)
        if sock is not None and sock.connected and sock.client is not None:
            sock.client.conn.send(packet, frame)

    def _keep(self, sock: Socket, seq: int, packet: bytes, own: bool) -> None:
        replay = sock.replay
        if replay is None:
            replay = sock.replay = Replay()  # made at the first event: most sockets idle
        now = time.monotonic()
        sock.last_seq = seq
        if sock.connected:
            keep = self.options.ping_interval + self.options.ping_timeout + 5.0
            if replay.drop_before(now - keep, MAX_REPLAY - 1):
                sock.pruned = True
        elif len(replay.packets) >= MAX_REPLAY:
            self._expire(sock)  # too much missed: the client starts afresh
            return
        replay.add(seq, now, packet, own)

    async def emit(
        self, event: str, *args: Any, to: str, namespace: str = "/", volatile: bool = False
    ) -> None:
        """One event to one socket."""
        sock = self.sockets.get(to)
        if sock is None or sock.namespace != namespace:
            return
        packet = Packet(S_EVENT, namespace, [event, *args])
        data, buffers = codec.deconstruct(packet.data) if self.allow_binary else (None, [])
        if buffers:
            packet.type, packet.data, packet.attachments = S_BINARY_EVENT, data, len(buffers)
        encoded = b"4" + codec.encode_packet(packet).encode()
        if buffers:
            if sock.connected and sock.client is not None:
                conn = sock.client.conn
                conn.send(encoded)
                for buffer in buffers:
                    conn.send_binary(buffer)
            return
        if volatile or namespace != "/":
            self.send_volatile(to, encoded) if namespace == "/" else self._send(sock, encoded)
            return
        stamped, seq = self.stamp(encoded)
        self.deliver(to, stamped, None, seq, own=True)

    def _send(self, sock: Socket, encoded: bytes) -> None:
        if sock.connected and sock.client is not None:
            sock.client.conn.send(encoded)

    async def call(
        self, event: str, *args: Any, to: str, timeout: float = 10.0, namespace: str = "/"
    ) -> Any:
        """An event with an acknowledgement: what the client answers."""
        sock = self.sockets.get(to)
        if sock is None or not sock.connected or sock.client is None:
            raise ConnectionError("not connected")
        self._ack_ids += 1
        ack_id = self._ack_ids
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[(to, ack_id)] = future
        packet = Packet(S_EVENT, namespace, [event, *args], ack_id)
        sock.client.conn.send(b"4" + codec.encode_packet(packet).encode())
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._acks.pop((to, ack_id), None)

    # -- disconnecting ------------------------------------------------------------------------

    async def disconnect(self, sid: str) -> None:
        """Disconnect a socket from the server side: the client is told (and does not come
        back on its own); the disconnect handler runs."""
        sock = self.sockets.get(sid)
        if sock is None:
            return
        if sock.connected and sock.client is not None:
            ns = "" if sock.namespace == "/" else sock.namespace + ","
            sock.client.conn.send_text(f"41{ns}")
        await self._disconnected(sock, SERVER_DISCONNECT)

    def close_connection(self, sid: str) -> None:
        """Close the whole connection a socket is on (all its namespaces)."""
        sock = self.sockets.get(sid)
        if sock is not None and sock.connected and sock.client is not None:
            sock.client.conn.close(FORCED_CLOSE)

    async def _disconnected(self, sock: Socket, reason: str) -> None:
        """A socket is gone for good: forgotten, and its disconnect handler run."""
        if self.sockets.get(sock.sid) is not sock:
            return
        del self.sockets[sock.sid]
        if sock.pid is not None:
            self._held.pop(sock.pid, None)
        if sock.expiry is not None:
            sock.expiry.cancel()
            sock.expiry = None
        was_connected = sock.connected
        sock.connected = False
        client = sock.client
        if client is not None and client.sockets.get(sock.namespace) is sock:
            del client.sockets[sock.namespace]
            if not client.sockets and not client.conn.closed:
                self._arm_connect_timeout(client)
        sock.replay = None
        handler = self.namespaces[sock.namespace].handlers.get("disconnect")
        if handler is not None and (was_connected or sock.pid is not None):
            try:
                await handler(sock.sid, reason)
            except Exception:
                log.exception("Disconnect handler failed")

    def _expire(self, sock: Socket) -> None:
        """A held socket whose client did not come back in time."""
        sock.expiry = None
        if self.sockets.get(sock.sid) is sock:
            self.engine.spawn(self._disconnected(sock, sock.lost or TRANSPORT_CLOSE))

    async def shutdown(self) -> None:
        """Let every held socket go (their disconnect handlers run now)."""
        for sock in list(self._held.values()):
            await self._disconnected(sock, sock.lost or TRANSPORT_CLOSE)

    # -- engine events ------------------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        client = Client(conn)
        conn.owner = client
        self._arm_connect_timeout(client)
        if self.recovery_window and not self._sweeping:
            self._sweeping = True
            self.engine.loop.call_later(REPLAY_SWEEP, self._sweep_replays)

    def pinging(self, conn: Connection) -> None:
        """A PING is going out to ``conn``: what its sockets were sent so far is received once
        it is answered (both transports deliver in order, and the client handles packets in
        order, noting each event's offset)."""
        client: Client | None = conn.owner
        if client is not None and self.recovery_window:
            for sock in client.sockets.values():
                sock.pinged_seq = sock.last_seq

    def ponged(self, conn: Connection) -> None:
        """``conn`` answered its PING: its sockets' replays forget what the client has."""
        client: Client | None = conn.owner
        if client is None or not self.recovery_window:
            return
        for sock in client.sockets.values():
            replay = sock.replay
            if replay is not None and sock.pinged_seq and replay.drop_received(sock.pinged_seq):
                sock.pruned = True

    def _sweep_replays(self) -> None:
        """Forget what connected sockets were sent longer ago than a heartbeat period (a quiet
        socket would otherwise keep its last events for good)."""
        now = time.monotonic()
        before = now - (self.options.ping_interval + self.options.ping_timeout + 5.0)
        for sock in list(self.sockets.values()):
            replay = sock.replay
            if replay is not None and sock.connected and replay.drop_before(before, MAX_REPLAY):
                sock.pruned = True
                if not replay.packets:
                    sock.replay = None
        self.engine.loop.call_later(REPLAY_SWEEP, self._sweep_replays)

    def _arm_connect_timeout(self, client: Client) -> None:
        if client.timer is not None:
            client.timer.cancel()
        client.timer = self.engine.loop.call_later(
            self.connect_timeout, self._connect_timed_out, client
        )

    def _connect_timed_out(self, client: Client) -> None:
        client.timer = None
        if not client.sockets and not client.conn.closed:
            if self.on_refused is not None:
                self.on_refused(client.conn, None, "connectTimeout", "no Socket.IO connect")
            client.conn.close(FORCED_CLOSE)

    def closed(self, conn: Connection, reason: str) -> None:
        client: Client | None = conn.owner
        if client is None:
            return
        if reason == PARSE_ERROR and not client.refused and self.on_refused is not None:
            # not an Engine.IO packet at all (the engine closed the session)
            self.on_refused(conn, self._sid(client), "malformedPacket", "not an Engine.IO packet")
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        client.pending = None
        client.attachments = []
        recoverable = bool(self.recovery_window) and reason in RECOVERABLE
        for sock in list(client.sockets.values()):
            if recoverable and sock.pid is not None and sock.connected:
                sock.connected = False
                sock.client = None
                sock.expiry = self.engine.loop.call_later(self.recovery_window, self._expire, sock)
                sock.lost = reason
                self._held[sock.pid] = sock
                log.debug("Socket %s held for recovery (%s)", sock.sid, reason)
            else:
                self.engine.spawn(self._disconnected(sock, reason))
        client.sockets = {}

    def message_nowait(self, conn: Connection, data: str) -> bool:
        """The hot path, without a coroutine: an event of the main namespace (the text of an
        Engine.IO message, ``2[...``) that the raw-event handler takes; False for anything
        else, which then goes through :meth:`message`."""
        fast = self.fast
        if fast is None or data[:2] != "2[":
            return False
        client: Client | None = conn.owner
        if client is None or client.pending is not None:
            return False
        sock = client.sockets.get("/")
        return sock is not None and fast(sock.sid, data)

    def refuses_binary(self, conn: Connection) -> bool:
        """Whether a binary message starting to arrive is refused (and the session closed)
        before it is read: always, unless binary packets are allowed and one is waiting for
        its attachments."""
        client: Client | None = conn.owner
        if client is None:
            return False
        if self.allow_binary and client.pending is not None:
            return False
        self._refuse(client, self._sid(client), "binaryPacket", "a binary message")
        return True

    async def message(self, conn: Connection, data: str | bytes) -> None:
        client: Client | None = conn.owner
        if client is None or conn.closed:
            return
        if isinstance(data, bytes):
            await self._attachment(client, data)
            return
        if client.pending is not None:
            self._refuse(client, None, "malformedPacket", "text while attachments are due")
            return
        kind = data[:1]
        if kind == "2" and data[1:2] == "[":
            sock = client.sockets.get("/")
            if sock is not None and self.fast is not None and self.fast(sock.sid, data):
                return
        elif kind in ("5", "6") and not self.allow_binary:
            head = data[1:12].split("-", 1)[0]
            what = "binary event" if kind == "5" else "binary acknowledgement"
            detail = f"a {what} announcing {head} attachments" if head.isdigit() else f"a {what}"
            self._refuse(client, self._sid(client), "binaryPacket", detail)
            return
        try:
            packet = codec.decode_packet(data)
        except BadPacket as exc:
            self._refuse(client, self._sid(client), "malformedPacket", str(exc))
            return
        if packet.attachments:
            if packet.attachments > codec.MAX_ATTACHMENTS:
                self._refuse(client, self._sid(client), "malformedPacket", "too many attachments")
                return
            client.pending = packet
            client.attachments = []
            return
        await self._dispatch(client, packet)

    def _sid(self, client: Client) -> str | None:
        sock = client.sockets.get("/")
        return sock.sid if sock is not None else None

    def _refuse(self, client: Client, sid: str | None, kind: str, detail: str) -> None:
        conn = client.conn
        client.refused = True
        if self.on_refused is not None:
            self.on_refused(conn, sid, kind, detail)
        conn.abort(PARSE_ERROR)

    async def _attachment(self, client: Client, data: bytes) -> None:
        if self.refuses_binary(client.conn):
            return
        packet = client.pending
        assert packet is not None
        client.attachments.append(data)
        if len(client.attachments) < packet.attachments:
            return
        buffers, client.attachments, client.pending = client.attachments, [], None
        try:
            packet.data = codec.reconstruct(packet.data, buffers)
        except BadPacket as exc:
            self._refuse(client, self._sid(client), "malformedPacket", str(exc))
            return
        packet.type = S_EVENT if packet.type == S_BINARY_EVENT else S_ACK
        await self._dispatch(client, packet)

    async def _dispatch(self, client: Client, packet: Packet) -> None:
        kind = packet.type
        if kind == S_CONNECT:
            await self._connect(client, packet)
            return
        sock = client.sockets.get(packet.namespace)
        if sock is None:
            return  # not connected to that namespace: ignored, as the reference server does
        if kind == S_DISCONNECT:
            await self._disconnected(sock, CLIENT_DISCONNECT)
        elif kind == S_EVENT:
            await self._event(sock, packet)
        elif kind == S_ACK:
            future = self._acks.pop((sock.sid, packet.id or 0), None)
            if future is not None and not future.done():
                future.set_result(packet.data)

    async def _connect(self, client: Client, packet: Packet) -> None:
        name = packet.namespace
        conn = client.conn
        prefix = "" if name == "/" else name + ","
        nsp = self.namespaces.get(name)
        if nsp is None:
            conn.send_text(f"44{prefix}" + '{"message":"Invalid namespace"}')
            return
        if name in client.sockets:
            return  # already connected there
        auth = packet.data if isinstance(packet.data, dict) else {}
        if self.recovery_window and "pid" in auth:
            if self._recover(client, name, auth):
                return
            auth = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
        sid = secrets.token_urlsafe(15)
        sock = Socket(sid, name, client)
        client.sockets[name] = sock
        self.sockets[sid] = sock
        handler = nsp.handlers.get("connect")
        try:
            if handler is not None:
                await handler(sid, conn.address, auth)
        except ConnectionRefused as exc:
            self._forget_unconnected(client, sock)
            body: dict[str, Any] = {"message": exc.message}
            if exc.data is not None:
                body["data"] = exc.data
            conn.send_text(f"44{prefix}" + codec.dumps(body).decode())
            return
        except Exception:
            log.exception("Connect handler failed")
            self._forget_unconnected(client, sock)
            conn.send_text(f"44{prefix}" + '{"message":"Internal error"}')
            return
        if conn.closed or client.sockets.get(name) is not sock:
            self._forget_unconnected(client, sock)
            return
        sock.connected = True
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        body = {"sid": sid}
        if self.recovery_window and name == "/":
            sock.pid = secrets.token_urlsafe(16)
            body["pid"] = sock.pid
        after = nsp.handlers.get("connected")
        if after is None:
            conn.send_text(f"40{prefix}" + codec.dumps(body).decode())
        else:
            # What the handler sends reaches the client apart from the CONNECT answer, as
            # with the reference server (some clients read one message per network read).
            conn.send_text_now(f"40{prefix}" + codec.dumps(body).decode())
            await asyncio.sleep(0.005)
            if not sock.connected:
                return
            try:
                await after(sid)
            except Exception:
                log.exception("Connected handler failed")

    def _forget_unconnected(self, client: Client, sock: Socket) -> None:
        if client.sockets.get(sock.namespace) is sock:
            del client.sockets[sock.namespace]
        if self.sockets.get(sock.sid) is sock:
            del self.sockets[sock.sid]

    def _recover(self, client: Client, name: str, auth: dict[str, Any]) -> bool:
        """Resume a held socket; False (and the client connects afresh) when it cannot be."""
        pid, offset = auth.get("pid"), auth.get("offset")
        sock = self._held.get(pid) if isinstance(pid, str) else None
        if sock is None or sock.namespace != name or sock.connected:
            self.recovery_failed += 1
            return False
        replay = sock.replay or Replay()
        missed: list[bytes] | None
        if offset is None:
            missed = None if sock.pruned else list(replay.packets)
        elif isinstance(offset, str) and offset.isascii() and offset.isdigit() and len(offset) < 20:
            seq = int(offset)
            if seq == sock.last_seq:
                missed = []
            elif seq in replay.seqs:
                missed = replay.packets[replay.seqs.index(seq) + 1 :]
            else:
                missed = None
        else:
            missed = None
        if missed is None:
            self.recovery_failed += 1
            return False
        if sock.expiry is not None:
            sock.expiry.cancel()
            sock.expiry = None
        self._held.pop(pid, None)  # type: ignore[arg-type]
        sock.client = client
        sock.connected = True
        sock.pinged_seq = 0  # a PING of the lost connection proves nothing about the replay
        client.sockets[name] = sock
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        conn = client.conn
        conn.send_text("40" + codec.dumps({"sid": sock.sid, "pid": sock.pid}).decode())
        for packet in missed:
            conn.send(zlib.decompress(packet) if type(packet) is Packed else packet)
        self.recovered += 1
        handler = self.namespaces[name].handlers.get("recover")
        if handler is not None:
            self.engine.spawn(_run(handler, sock.sid))
        return True

    async def _event(self, sock: Socket, packet: Packet) -> None:
        args = packet.data
        event = args[0]
        handlers = self.namespaces[sock.namespace].handlers
        handler = handlers.get(event) if isinstance(event, str) and event not in OWN else None
        try:
            if handler is not None:
                result = await handler(sock.sid, *args[1:])
            else:
                catch_all = handlers.get("*")
                if catch_all is None:
                    return
                result = await catch_all(event, sock.sid, *args[1:])
        except Exception:
            log.exception("Handler for %r failed", event)
            return
        if packet.id is not None and sock.connected and sock.client is not None:
            if result is None:
                values: list[Any] = []
            elif isinstance(result, tuple):
                values = list(result)
            else:
                values = [result]
            ack = Packet(S_ACK, sock.namespace, values, packet.id)
            data, buffers = codec.deconstruct(values) if self.allow_binary else (values, [])
            conn = sock.client.conn
            if buffers:
                ack.type, ack.data, ack.attachments = S_BINARY_ACK, data, len(buffers)
                conn.send_text("4" + codec.encode_packet(ack))
                for buffer in buffers:
                    conn.send_binary(buffer)
            else:
                conn.send_text("4" + codec.encode_packet(ack))


async def _run(handler: Handler, *args: Any) -> None:
    try:
        await handler(*args)
    except Exception:
        log.exception("Recover handler failed")

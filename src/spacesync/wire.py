"""The Socket.IO server class and its JSON codec.

orjson encodes and decodes the common case quickly; anything it refuses (integers beyond 64 bits,
``NaN``) falls back to the standard library so that such payloads still reach validation and get a
proper error reply. Packets that cannot be decoded at all are dropped with a warning, never a
traceback or an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _stdlib_json
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import engineio
import engineio.async_server
import engineio.payload
import orjson
import socketio
from aiohttp.web import WebSocketResponse
from engineio import async_socket, exceptions, packet
from engineio.async_drivers import aiohttp as _aiohttp_driver

from .admission import ADDRESS_KEY, Admission
from .observability.abuse import AbuseCounters
from .observability.logging import log
from .texts import Catalog, catalog

_socket_module = engineio.async_server.async_socket
_STOCK_SOCKET = async_socket.AsyncSocket


class FastJson:
    """A ``json``-module lookalike for python-socketio."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return _stdlib_json.dumps(obj, separators=(",", ":"), default=str)

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                value = _stdlib_json.loads(text)
            except RecursionError as exc:
                raise ValueError("payload nested too deeply") from exc
            _check_unicode(value)
            return value


def _check_unicode(value: Any) -> None:
    """The standard library accepts lone surrogates (``"\\ud800"``), which cannot be sent on to
    anyone: refuse the payload like any other malformed one."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError("payload is not valid Unicode") from exc
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_FAST_PATH_SLICE = 5.0
SERVICE_SECONDS = 0.5
KERNEL_SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a WebSocket (the kernel doubles it). Left to autotuning, each socket of
a client that stops reading may hold megabytes in the kernel, out of the server's sight; capped,
a client that falls behind shows up in the transport's own buffer, where positions are folded
and the per-client limit applies."""


def _cap_send_buffer(request: Any) -> None:
    transport = getattr(request, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)


class _UncompressedWebSocket(_aiohttp_driver.WebSocket):  # type: ignore[misc]
    """The aiohttp WebSocket wrapper without per-message deflate, remembered by its socket.

    Compressing every small position frame costs more CPU than the bytes it saves (the official
    Node.js server also ships with compression off). The engine.io socket keeps a reference to
    its ``WebSocketResponse`` so the broadcast path can write pre-built frames straight to it.
    """

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        _cap_send_buffer(request)
        self.environ = environ
        self._owner = getattr(self.handler, "__self__", None)
        if self._owner is not None:
            self._owner.raw_ws = self._sock
        await self.handler(self)
        return self._sock

    async def wait(self) -> str | bytes:
        """The next message for engine.io, after handling the hot events inline.

        A ``player:move`` that the fast handler accepts never goes through engine.io's and
        Socket.IO's per-message machinery (a task, a timeout, two packet decodes and a handler
        dispatch each); anything else — pings, other events, malformed or unusual moves — goes
        the ordinary way, in the order received. Every few seconds of uninterrupted moves a
        NOOP is handed up so engine.io's read-timeout loop comes round.
        """
        fast = getattr(self.server, "fast_message", None)
        owner = self._owner
        loop = asyncio.get_running_loop()
        hand_up_at = loop.time() + _FAST_PATH_SLICE
        while True:
            msg = await self._sock.receive()
            data = msg.data
            if isinstance(data, str):
                if (
                    fast is not None
                    and owner is not None
                    and owner.upgraded
                    and data.startswith('42["')
                    and fast(owner.sid, data)
                ):
                    if loop.time() >= hand_up_at:
                        return "6"
                    continue
                return data
            if isinstance(data, bytes):
                return data
            raise OSError()


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked, final WebSocket frame (text unless ``binary``)."""
    first = 0x82 if binary else 0x81
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


class LightQueue:
    """The part of ``asyncio.Queue`` engine.io uses, at a tenth of its size.

    Every engine.io socket has a queue, and an ``asyncio.Queue`` with its deques, waiter lists
    and ``Event`` weighs about 3 KB; a WebSocket client's stays empty once the WebSocket takes
    over, so with thousands of idle clients this is a good part of the memory per connection.
    """

    __slots__ = ("_getter", "_items", "_joiner", "_unfinished")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getter: asyncio.Future[None] | None = None
        self._unfinished = 0
        self._joiner: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished > 0:
            self._unfinished -= 1
        if self._unfinished == 0 and self._joiner is not None and not self._joiner.done():
            self._joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            if self._joiner is None or self._joiner.done():
                self._joiner = asyncio.get_running_loop().create_future()
            await self._joiner


class SpaceSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """An engine.io socket that keeps no task of its own once it is on WebSocket.

    engine.io's own socket runs, for each WebSocket client, a writer task draining a queue, a
    task per message received (to put a timeout on the read) and a task per ping cycle. Here the
    connection's aiohttp handler task does the reading, packets are written straight to the
    transport through the same per-socket write path as broadcasts (so their order is kept), and
    pings are timer callbacks. A client that stops answering pings is still closed by the
    engine's service task. Long-polling is unchanged.
    """

    raw_ws: WebSocketResponse | None = None
    _transport: Any = None
    next_ping: float = 0.0
    """When the next ping is due (``time.monotonic()``); 0 when none is scheduled. The engine's
    service task sends them, so a socket needs no timer of its own."""
    address: str = ""
    """The client address the session was opened from (see :mod:`spacesync.admission`)."""
    deadline: float = 0.0
    """When the session must have moved on (``time.monotonic()``): sent its Socket.IO CONNECT
    (``waiting_for == "connect"``) or joined a space (``"join"``); checked by the engine's
    service task, so an idle session costs no timer of its own."""
    waiting_for: str = "connect"
    was_joined: bool = False
    _counted: bool = False

    def __init__(self, server: Any, sid: str) -> None:
        super().__init__(server, sid)
        admission: Admission | None = getattr(server, "admission", None)
        self.address = getattr(server, "new_address", "") or ""
        self.deadline = time.monotonic() + getattr(server, "connect_timeout", 10.0)
        if admission is not None:
            admission.opened(self.address)
            self._counted = True

    def _release(self) -> None:
        """The session no longer counts against its address (once, whatever closed it)."""
        if self._counted:
            self._counted = False
            self.deadline = 0.0
            admission: Admission | None = getattr(self.server, "admission", None)
            if admission is not None:
                admission.closed(self.address)

    async def refuse(self, reason: str) -> None:
        """Close the session at once for hostile input: no CLOSE packet, no waiting for the
        client's close handshake (it may be busy streaming), just the TCP connection gone."""
        transport = self._transport if self.upgraded else None
        if transport is not None and not transport.is_closing():
            transport.close()
        await self.close(wait=False, abort=True, reason=reason)
        # Gone at once: a long-polling client's next request is answered 400 (unknown
        # session) instead of reaching a closed socket.
        self.server.sockets.pop(self.sid, None)

    # -- sending ------------------------------------------------------------------------------

    def direct_transport(self) -> Any:
        """The transport to write to, when packets no longer go through the queue."""
        transport = self._transport
        if (
            transport is None
            or not self.upgraded
            or self.upgrading
            or transport.is_closing()
            or not self.queue.empty()
        ):
            return None
        return transport

    async def send(self, pkt: packet.Packet) -> None:
        if not await self.check_ping_timeout():
            return
        self.send_now(pkt)

    def send_now(self, pkt: packet.Packet) -> None:
        transport = self.direct_transport()
        if transport is None:
            self.queue.put_nowait(pkt)
        else:
            self._write(transport, pkt)

    def _write(self, transport: Any, pkt: packet.Packet) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            frame = ws_frame(encoded.encode())
        else:
            frame = ws_frame(encoded, binary=True)
        writer = self.server.frame_writer
        if writer is not None:
            writer(transport, frame)
        else:
            transport.write(frame)

    def _drain_queue(self, transport: Any) -> None:
        """Packets queued before the WebSocket took over (the open packet, or what was sent
        during an upgrade) go out first, in order."""
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self.queue.task_done()
            if pkt is not None:
                self._write(transport, pkt)

    # -- pings --------------------------------------------------------------------------------

    def schedule_ping(self) -> None:
        if self.last_ping:
            self.last_ping = None
            self.next_ping = time.monotonic() + self.server.ping_interval

    def ping(self) -> None:
        self.next_ping = 0.0
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.send_now(packet.Packet(packet.PING))

    # -- closing ------------------------------------------------------------------------------

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        """Close the session without waiting for the client to fetch anything.

        engine.io's ``wait`` waits until the queue is empty, that is, for a long-polling
        client to come and GET the CLOSE packet. One that never does (it POSTed a packet type
        a client may not send, so the server closes it during that POST) would hold the POST
        and a task forever; and once the session is gone its GETs are refused anyway. A GET
        already waiting still receives the CLOSE packet."""
        self.next_ping = 0.0
        self._release()
        direct = self.direct_transport() is not None
        await super().close(wait=False, abort=abort, reason=reason)
        if not direct:
            # A long-poll still waiting for packets is answered now rather than when its
            # timeout (35 s) runs out: the socket is gone.
            self.queue.put_nowait(None)
        ws = self.raw_ws
        if direct and ws is not None and not ws.closed:
            flush = self.server.flush_writes
            if flush is not None:
                flush()  # what was written before goes before the WebSocket close frame
            self.server.spawn(ws.close())

    # -- receiving ----------------------------------------------------------------------------

    async def _websocket_handler(self, ws: Any) -> None:
        server = self.server
        if self.connected:
            # an upgrade from long-polling: the probe, then the upgrade packet
            self.upgrading = True
            try:
                pkt = await ws.wait()
            except OSError:
                self.upgrading = False
                return
            probe = packet.Packet(encoded_packet=pkt)
            if probe.packet_type != packet.PING or probe.data != "probe":
                self.upgrading = False
                return
            await ws.send(packet.Packet(packet.PONG, data="probe").encode())
            self.queue.put_nowait(packet.Packet(packet.NOOP))  # ends the pending poll
            try:
                pkt = await ws.wait()
            except OSError:
                self.upgrading = False
                return
            if packet.Packet(encoded_packet=pkt).packet_type != packet.UPGRADE:
                self.upgraded = False
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True
        raw = self.raw_ws
        writer = getattr(raw, "_writer", None)
        self._transport = getattr(writer, "transport", None)
        if self._transport is not None:
            self._drain_queue(self._transport)
        limit = server.max_http_buffer_size
        while True:
            try:
                data = await ws.wait()
            except Exception:
                break
            if data is None or len(data) > limit:
                break
            try:
                await self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                server.logger.exception("Unknown receive error")
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    fast_message: Callable[[str, str], bool] | None = None
    """``(engine.io sid, message) -> handled``: inline handling of hot events (see above)."""
    frame_writer: Callable[[Any, bytes], None] | None = None
    """``(transport, frame)``: the per-socket write path shared with broadcasts."""
    flush_writes: Callable[[], None] | None = None
    admission: Admission | None = None
    """Per-address session counts; every session is counted from its handshake to its close."""
    connect_timeout: float = 10.0
    join_timeout: float = 60.0
    socketio: SpaceSocketServer | None = None
    new_address: str = ""
    """The address of the session being created (read by :class:`SpaceSocket` as it is built,
    synchronously inside ``_handle_connect``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async)
        self._async["websocket"] = _UncompressedWebSocket
        self._spawned: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _handle_connect(self, *args: Any, **kwargs: Any) -> Any:
        # engine.io builds each socket from ``async_socket.AsyncSocket``; this server's are
        # SpaceSockets (the class is looked up on the module at the time of the call).
        environ = args[0] if args else kwargs.get("environ", {})
        request = environ.get("aiohttp.request")
        address = request.get(ADDRESS_KEY) if request is not None else None
        if address is None:
            address = (getattr(request, "remote", None) or environ.get("REMOTE_ADDR")) or ""
        environ[ADDRESS_KEY] = address
        self.new_address = address
        _socket_module.AsyncSocket = SpaceSocket
        try:
            return await super()._handle_connect(*args, **kwargs)
        finally:
            _socket_module.AsyncSocket = _STOCK_SOCKET

    def create_queue(self, *args: Any, **kwargs: Any) -> LightQueue:
        return LightQueue()

    async def _service_task(self) -> None:
        """Pings, and closing the clients that stopped answering them: one sweep every
        :data:`SERVICE_SECONDS` over every socket (the stock service task sleeps once per
        socket, with a task each time, and each socket has a ping task of its own)."""
        self.service_task_event = self.create_event()
        while not self.service_task_event.is_set():
            await asyncio.sleep(SERVICE_SECONDS)
            now = time.time()
            due = time.monotonic()
            timeout = self.ping_timeout
            for sock in list(self.sockets.values()):
                if sock.closed:
                    self.sockets.pop(sock.sid, None)
                    continue
                next_ping = getattr(sock, "next_ping", 0.0)
                if next_ping and next_ping <= due:
                    sock.ping()
                elif not sock.closing and sock.last_ping and now - sock.last_ping > timeout:
                    try:
                        await sock.close(wait=False, abort=False, reason=self.reason.PING_TIMEOUT)
                    except Exception:
                        self.logger.exception("Closing a silent client failed")
                deadline = getattr(sock, "deadline", 0.0)
                if deadline and deadline <= due and not sock.closing:
                    try:
                        await self._deadline_passed(sock, due)
                    except Exception:
                        self.logger.exception("Closing an idle client failed")

    async def _deadline_passed(self, sock: SpaceSocket, now: float) -> None:
        """A session that sent no Socket.IO CONNECT within ``connect_timeout`` is closed; a
        connected socket that has not joined a space ``join_timeout`` after connecting (or after
        it left its space) is disconnected from Socket.IO, which the official client takes as
        final (no automatic reconnect), and its session is then held to ``connect_timeout``
        again. Each check is two dictionary lookups, made only when a deadline has passed, so
        thousands of idle sessions cost next to nothing."""
        sio = self.socketio
        sid = sio.manager.sid_from_eio_sid(sock.sid, "/") if sio is not None else None
        if sock.waiting_for == "connect":
            if sid is not None:  # connected (or its connect handler is still running)
                sock.waiting_for, sock.was_joined = "join", False
                sock.deadline = now + self.join_timeout
                return
            sock.deadline = 0.0
            if self.admission is not None:
                self.admission.refused(
                    "E2005",
                    "connectTimeout",
                    "Connection closed: no Socket.IO connect within the time allowed",
                    sock.address,
                    seconds=self.connect_timeout,
                )
            await sock.refuse(self.reason.SERVER_DISCONNECT)
            return
        if sid is None or sio is None:  # left the namespace but kept the session
            sock.waiting_for = "connect"
            sock.deadline = now + self.connect_timeout
            return
        if sio.is_joined(sid):
            sock.was_joined = True
            sock.deadline = now + self.join_timeout
            return
        if sock.was_joined:  # it left a space since the last look: a full period from now
            sock.was_joined = False
            sock.deadline = now + self.join_timeout
            return
        sock.waiting_for = "connect"
        sock.deadline = now + self.connect_timeout
        if self.admission is not None:
            self.admission.refused(
                "E2005",
                "joinTimeout",
                "Connection closed: no space joined within the time allowed",
                sock.address,
                socketId=sid,
                seconds=self.join_timeout,
            )
        await sio.disconnect(sid)


# A long-polling client sends everything queued since its last POST in one payload; at 60 moves
# a second a slow round trip easily exceeds engine.io's default of 16 packets, and the client
# would be disconnected for it. The payload stays bounded by the 64 KiB transport limit.
engineio.payload.Payload.max_decode_packets = 1024


RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "*"})
"""Names python-socketio uses for its own handlers: a client sending one would otherwise run
the connect or disconnect handler of its socket."""


_BINARY_HEAD_RE = re.compile(r"[56](\d{1,10})-")


class SpaceSocketServer(socketio.AsyncServer):
    """``AsyncServer`` that treats undecodable packets as bad input from one client, and accepts
    no binary input at all.

    No event of this server carries binary data, yet python-socketio keeps every message that
    follows a BINARY_EVENT or BINARY_ACK header as an attachment until as many have arrived as
    the header announced (``451000000000-[...]`` announces a billion): a client could make the
    server hold gigabytes without joining anything. Answering small binary events while
    dropping their attachments one by one would still leave per-socket bookkeeping that a
    client controls, and nothing a real client of this server sends is binary. So a BINARY_EVENT
    or BINARY_ACK packet, whatever it announces, and a binary message that no header announced
    (a binary WebSocket frame, a ``b``-prefixed long-polling packet) close the connection before
    anything of them is decoded or kept.
    """

    abuse: AbuseCounters | None = None
    admission: Admission | None = None
    is_joined: Callable[[str], bool] = staticmethod(lambda sid: False)
    """``(Socket.IO sid) -> joined a space`` (set by the node)."""
    texts: Catalog = catalog()
    """The texts players read, in the node's ``LOCALE`` (set by the node)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eio.socketio = self

    async def _handle_connect(self, eio_sid: str, namespace: Any, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        sock = self.eio.sockets.get(eio_sid)
        if (
            isinstance(sock, SpaceSocket)
            and sock.waiting_for == "connect"
            and self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is not None
        ):
            sock.waiting_for, sock.was_joined = "join", False
            sock.deadline = time.monotonic() + self.eio.join_timeout

    async def _screen_binary(self, eio_sid: str, data: Any) -> bool:
        """Refuse ``data`` if it is binary or a binary packet; ``True`` when it was.

        The one place binary input is looked at: the connection is closed (logged E3001,
        counted as ``binaryPacket``) before python-socketio sees the packet, so nothing of it
        is decoded or buffered, whether or not the socket ever connected or joined."""
        if isinstance(data, str):
            if not data.startswith(("5", "6")):
                return False
            head = _BINARY_HEAD_RE.match(data)
            kind = "binary event" if data[0] == "5" else "binary acknowledgement"
            what = f"a {kind} announcing {head.group(1)} attachments" if head else f"a {kind}"
        else:
            what = "a binary message"
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closing or sock.closed:
            return True  # what is still in flight from a closed session
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if self.admission is not None:
            self.admission.refused(
                "E3001",
                "binaryPacket",
                f"Binary input refused: {what}; connection closed",
                sock.address,
                socketId=sid or sock.sid,
            )
        elif self.abuse is not None:
            self.abuse.count("binaryPacket")
        await sock.refuse(self.eio.reason.TRANSPORT_ERROR)
        return True

    async def _handle_event(self, eio_sid: str, namespace: Any, id: Any, data: Any) -> None:
        name = data[0] if isinstance(data, list) and data else None
        if data and not isinstance(name, str):
            # Not an event name at all (a number, a list, an object): the catch-all handler
            # answers it, whatever its type (an unhashable one would fail the handler lookup).
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
            catch_all = self.handlers.get(namespace or "/", {}).get("*")
            if sid is not None and catch_all is not None:
                await catch_all(None, sid)
            return
        if isinstance(name, str) and name in RESERVED_EVENTS:
            # Treated like any unknown event: ignored.
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
            log.debug("I3001", "Reserved event name ignored", event=name, socketId=sid)
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineServer

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        # Only bytes are binary: engine.io hands over a message that reads as a number ("-1")
        # as an int, which is a malformed packet like any other.
        binary = isinstance(data, bytes | bytearray)
        if (binary or (isinstance(data, str) and data.startswith(("5", "6")))) and (
            await self._screen_binary(eio_sid, data)
        ):
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (
            ValueError,
            IndexError,
            TypeError,
            KeyError,
            AttributeError,
            RecursionError,
        ) as exc:
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            log.warn(
                "E3001",
                f"Malformed Socket.IO packet dropped: {type(exc).__name__}",
                socketId=sid or eio_sid,
            )
            if sid is not None:
                await self.malformed(sid, _event_name(data))

    async def malformed(self, sid: str, event: str | None) -> None:
        """Answer a packet that could not be decoded (replaced by the node, which answers on
        the event's own error channel, and not before the socket joined unless it is a join)."""
        message = self.texts.text("error.malformed_packet")
        await self.emit("error", {"message": message, "code": "INVALID_PAYLOAD"}, to=sid)


_EVENT_NAME_RE = re.compile(r'\d*-?(?:/[^,]*,)?\d*\[\s*"([A-Za-z0-9:_-]{1,40})"')


def _event_name(data: Any) -> str | None:
    """The event name at the start of an undecodable Socket.IO packet, if it can be read."""
    if not isinstance(data, str) or not data[:1].isdigit():
        return None
    match = _EVENT_NAME_RE.match(data, 1)
    return match.group(1) if match else None

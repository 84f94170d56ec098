"""The listening socket: WebSocket upgrades on the engine's path are taken here, every other
request is served by aiohttp; the first request of every connection must arrive within the
header deadline.

A WebSocket lives for hours and carries thousands of small messages, so it is not left on the
HTTP stack: a connection whose first request asks to upgrade on an engine path is read by
:class:`Front` itself (the request head, up to :data:`MAX_HEAD` bytes), answered with ``101`` and
handed to a frame reader of the engine's (``transport.websocket``), with no request object, no
handler task and no reader queue kept for its life. Any other connection is handed, with the
bytes read so far, to aiohttp's own connection protocol (``AppRunner.server``, the protocol
factory aiohttp documents for ``loop.create_server``), so plain HTTP, long-polling and the
application's routes behave exactly as before.

The first request head of a connection is read here whole (up to :data:`MAX_HEAD`), within
``header_timeout``: a client that trickles it (slowloris) or sends nothing is cut off and
reported, whichever route it asks for. Only then is the connection handed over, and only
``GET <engine path>?…transport=websocket…`` with a WebSocket upgrade's headers stays here. Later
requests of a keep-alive connection are aiohttp's, whose ``keepalive_timeout`` (set to the same
deadline) closes a connection that sends no complete request within it after a response.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("spacesync.transport")

MAX_HEAD = 32 * 1024
"""Largest request head (request line and headers) read for a WebSocket upgrade."""
MAX_LINE = 8190
"""Longest request line or header line (aiohttp's limit)."""
MAX_HEADERS = 100

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(slots=True)
class Reply:
    """An HTTP answer that ends the connection (a refused upgrade, an error)."""

    status: int
    body: Any = None
    """Sent as JSON (``None``: no body)."""
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = b"" if self.body is None else json.dumps(self.body).encode()
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        lines = [f"HTTP/1.1 {self.status} {phrase}"]
        if self.body is not None:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def response(self) -> web.Response:
        """The same answer through aiohttp."""
        if self.body is None:
            return web.Response(status=self.status, headers=dict(self.headers))
        return web.json_response(self.body, status=self.status, headers=dict(self.headers))


class RequestHead:
    """A parsed request head: what an engine needs to accept a WebSocket (the parts of
    ``aiohttp.web.Request`` it reads, by the same names)."""

    __slots__ = ("_values", "headers", "method", "path", "query", "remote", "transport")

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: CIMultiDictProxy[str],
        remote: str | None,
        transport: asyncio.Transport,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.remote = remote
        self.transport = transport
        self._values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value


class BadHead(ValueError):
    """Not a well-formed HTTP/1.1 request head."""


def parse_head(head: bytes) -> tuple[str, str, str, CIMultiDict[str]]:
    """``method``, ``path``, raw query and headers of a request head (without its blank line)."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadHead("too many headers")
    try:
        method, target, version = lines[0].split(b" ")
    except ValueError:
        raise BadHead("bad request line") from None
    if version not in (b"HTTP/1.1",) or not target.startswith(b"/"):
        raise BadHead("bad request line")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            raise BadHead("header line too long")
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise BadHead("bad header line")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise BadHead("bad header value")
        headers.add(name.decode("ascii"), value.strip(b" \t").decode("latin-1"))
    text = target.decode("latin-1")
    path, _, query = text.partition("?")
    return method.decode("ascii"), path, query, headers


def first_values(query: str) -> dict[str, str]:
    """The query's parameters, the first value of each."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(name, value)
    return values


Accept = Callable[[RequestHead], Reply | None]
"""Takes a WebSocket upgrade request: ``None`` when it was accepted (the engine wrote the
``101`` and now owns the transport), or the refusal to send."""

OnHeaderTimeout = Callable[[str], None]

WEBSOCKET_ROUTES: web.AppKey[dict[str, Accept]] = web.AppKey("websocket_routes", dict)
"""An application's engine paths and the function accepting WebSockets on each."""


def _peer(tx: asyncio.BaseTransport) -> str | None:
    """The client's address on ``tx``."""
    peer = tx.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class Front(asyncio.Protocol):
    """The first protocol of every connection: reads its first request head, within the header
    deadline, and keeps a WebSocket upgrade on an engine path or hands the connection to aiohttp
    (see the module's description)."""

    __slots__ = ("_buffer", "_listener", "_timer", "_tx")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._tx: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tx = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's
        timeout = self._listener.header_timeout
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._tx = None

    def eof_received(self) -> bool:
        self._stop_timer()
        return False  # the transport closes itself

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0 and len(buffer) <= MAX_HEAD:
            return  # more to come
        if not self._listener.is_upgrade_line(buffer[: buffer.find(b"\r\n")]):
            self._hand_over()  # aiohttp applies its own limits to a long head
        elif head_end < 0:
            self._answer(Reply(431, {"error": "Request header fields too large"}))
        else:
            self._upgrade(buffer[:head_end], buffer[head_end + 4 :])

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        tx = self._tx
        assert tx is not None
        try:
            method, path, query, headers = parse_head(head)
        except (BadHead, UnicodeDecodeError):
            self._answer(Reply(400, {"error": "Bad request"}))
            return
        values = first_values(query)
        accept = self._listener.routes.get(path)
        if (
            accept is None
            or method != "GET"
            or values.get("transport") != "websocket"
            or "content-length" in headers
            or "transfer-encoding" in headers
        ):
            self._hand_over()  # an ordinary request after all
            return
        self._stop_timer()
        self._buffer = b""
        request = RequestHead(method, path, values, CIMultiDictProxy(headers), _peer(tx), tx)
        try:
            refused = accept(request)
        except Exception:
            log.exception("Accepting a WebSocket failed")
            refused = Reply(500, {"error": "Internal server error"})
        if refused is not None:
            self._answer(refused)
            return
        protocol = tx.get_protocol()
        if rest and protocol is not self and not tx.is_closing():
            protocol.data_received(rest)  # type: ignore[attr-defined]

    def _answer(self, reply: Reply) -> None:
        self._stop_timer()
        self._buffer = b""
        tx = self._tx
        if tx is not None and not tx.is_closing():
            tx.write(reply.encode())
            tx.close()

    def _hand_over(self) -> None:
        """Give the connection, and what was read of it, to aiohttp."""
        self._stop_timer()
        tx = self._tx
        buffer, self._buffer = self._buffer, b""
        if tx is None or tx.is_closing():
            return
        protocol = self._listener.http()
        tx.set_protocol(protocol)
        protocol.connection_made(tx)
        if buffer:
            protocol.data_received(buffer)

    def _late(self) -> None:
        """No complete request head within the deadline (slowloris, or a silent client)."""
        self._timer = None
        tx = self._tx
        if tx is None or tx.get_protocol() is not self:
            return
        on_timeout = self._listener.on_header_timeout
        if on_timeout is not None:
            on_timeout(_peer(tx) or "")
        tx.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Listener:
    """A listening socket for an aiohttp application whose engines take their WebSockets
    themselves (the application's :data:`WEBSOCKET_ROUTES`)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        header_timeout: float | None = None,
        on_header_timeout: OnHeaderTimeout | None = None,
        reuse_address: bool = True,
    ) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.header_timeout = header_timeout
        self.on_header_timeout = on_header_timeout
        self.reuse_address = reuse_address
        self.routes: dict[str, Accept] = {}
        self._prefixes: tuple[bytes, ...] = ()
        self._server: asyncio.Server | None = None

    def http(self) -> asyncio.Protocol:
        server = self.runner.server
        assert server is not None, "the runner is not set up"
        protocol: asyncio.Protocol = server()
        return protocol

    def is_upgrade_line(self, line: bytes) -> bool:
        return line.startswith(self._prefixes) and b"transport=websocket" in line

    @property
    def addresses(self) -> list[Any]:
        if self._server is None:
            return []
        return [sock.getsockname() for sock in self._server.sockets]

    async def start(self) -> None:
        self.routes = dict(self.runner.app.get(WEBSOCKET_ROUTES, {})) if self.runner.app else {}
        self._prefixes = tuple(f"GET {path}?".encode() for path in self.routes)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Front(self),
            self.host,
            self.port,
            reuse_address=self.reuse_address,
        )

    async def stop(self) -> None:
        """Stop accepting connections (open ones are the engines' and aiohttp's to close)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()


async def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` (with its WebSocket routes) until cancelled."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    listener = Listener(runner, host, port)
    await listener.start()
    try:
        await asyncio.Event().wait()
    finally:
        await listener.stop()
        await runner.cleanup()

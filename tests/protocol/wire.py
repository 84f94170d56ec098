"""A raw Engine.IO / Socket.IO client on aiohttp, for the protocol tests.

Nothing here speaks the protocol for the test: the test sends exact packet texts and checks the
exact texts that come back. The WebSocket side reads every message into a queue as soon as it
arrives (several messages in one TCP segment are each kept), and can answer the server's
heartbeat by itself so that a slow test is not cut off by a ping timeout. The HTTP side offers
the long-polling GET and POST with status and body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from spacesync.transport.http import Listener

Message = str | bytes

RS = "\x1e"
"""The record separator between packets of a long-polling body."""


class Closed(AssertionError):
    """The WebSocket ended while a message was expected."""


class WsClient:
    """One WebSocket, its messages in arrival order.

    ``auto_pong``: each ``"2"`` (an Engine.IO PING) is answered with ``"3"`` at once by the
    reader. Pings are still recorded; :meth:`recv` leaves them out unless asked.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, auto_pong: bool) -> None:
        self.ws = ws
        self.auto_pong = auto_pong
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.pings = 0
        self.closed_at: float | None = None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    if msg.data == "2":
                        self.pings += 1
                        if self.auto_pong and not self.ws.closed:
                            try:
                                await self.ws.send_str("3")
                            except (ConnectionError, RuntimeError):
                                pass
                    self.queue.put_nowait(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.queue.put_nowait(bytes(msg.data))
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed_at = time.monotonic()
            self.queue.put_nowait(None)

    async def send(self, data: Message) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def recv(self, timeout: float = 5.0, pings: bool = False) -> Message:
        """The next message (PINGs left out unless ``pings``); :class:`Closed` if the socket
        ended first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message within {timeout} s")
            try:
                item = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                raise TimeoutError(f"no message within {timeout} s") from None
            if item is None:
                self.queue.put_nowait(None)  # later calls see the end too
                raise Closed("the server closed the WebSocket")
            if item == "2" and not pings:
                continue
            return item

    async def recv_text(self, timeout: float = 5.0, pings: bool = False) -> str:
        item = await self.recv(timeout, pings)
        assert isinstance(item, str), f"expected a text message, got {item!r}"
        return item

    async def collect(self, duration: float, pings: bool = False) -> list[Message]:
        """Everything (but PINGs) that arrives within ``duration`` seconds."""
        items: list[Message] = []
        deadline = time.monotonic() + duration
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                items.append(await self.recv(remaining, pings))
            except (TimeoutError, Closed):
                break
        return items

    async def wait_closed(self, timeout: float = 5.0) -> list[Message]:
        """Wait until the server ends the WebSocket; what arrived before (PINGs left out)."""
        items: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the WebSocket was still open after {timeout} s: {items}")
            try:
                items.append(await self.recv(remaining))
            except Closed:
                return items
            except TimeoutError:
                continue

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a lost network would."""
        conn = self.ws._conn
        assert conn is not None and conn.transport is not None
        conn.transport.abort()

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass


class Client:
    """HTTP and WebSocket access to one server path (``/engine.io/`` or ``/socket.io/``)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, path: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.path = path
        self.sockets: list[WsClient] = []

    def url(self, query: str, ws: bool = False) -> str:
        base = self.base.replace("http://", "ws://") if ws else self.base
        return f"{base}{self.path}?{query}"

    def session_url(self, sid: str, ws: bool = False) -> str:
        transport = "websocket" if ws else "polling"
        return self.url(f"EIO=4&transport={transport}&sid={sid}", ws)

    # -- long-polling ---------------------------------------------------------------------------

    async def request(
        self, method: str, url: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        async with self.http.request(method, url, data=data, headers=headers) as response:
            return response.status, await response.text(), dict(response.headers)

    async def open_polling(self) -> tuple[str, dict[str, Any]]:
        """A new long-polling session: its sid and the handshake's values."""
        status, text, _ = await self.request("GET", self.url("EIO=4&transport=polling"))
        assert status == 200, (status, text)
        assert text.startswith("0"), text
        handshake = json.loads(text[1:])
        return handshake["sid"], handshake

    async def get(self, sid: str) -> tuple[int, str]:
        status, text, _ = await self.request("GET", self.session_url(sid))
        return status, text

    async def post(self, sid: str, body: str | bytes) -> tuple[int, str]:
        status, text, _ = await self.request("POST", self.session_url(sid), data=body)
        return status, text

    async def get_messages(self, sid: str) -> list[str]:
        """One long-poll, its packets without the heartbeat: a PING in the answer is answered
        with a PONG first, so that a slow machine does not fail the check."""
        status, text = await self.get(sid)
        assert status == 200, (status, text)
        packets = text.split(RS)
        if "2" in packets:
            assert (await self.post(sid, "3"))[0] == 200
        return [p for p in packets if p != "2"]

    # -- WebSocket ------------------------------------------------------------------------------

    async def websocket(
        self, query: str = "EIO=4&transport=websocket", auto_pong: bool = True, **kwargs: Any
    ) -> WsClient:
        ws = await self.http.ws_connect(self.url(query, ws=True), autoping=True, **kwargs)
        client = WsClient(ws, auto_pong)
        self.sockets.append(client)
        return client

    async def open_websocket(self, auto_pong: bool = True) -> tuple[WsClient, dict[str, Any]]:
        """A new WebSocket session and its handshake's values."""
        client = await self.websocket(auto_pong=auto_pong)
        first = await client.recv_text()
        assert first.startswith("0"), first
        return client, json.loads(first[1:])

    async def upgrade_socket(self, sid: str, auto_pong: bool = True) -> WsClient:
        return await self.websocket(f"EIO=4&transport=websocket&sid={sid}", auto_pong=auto_pong)

    async def close(self) -> None:
        for client in self.sockets:
            await client.close()
        self.sockets.clear()


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp application on a free loopback port for the block; its base URL.

    Requests still running at the end (a long-poll nobody answered) are cut after half a
    second."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    listener = Listener(runner, "127.0.0.1", 0)
    await listener.start()
    host, port = listener.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await listener.stop()
        await runner.cleanup()

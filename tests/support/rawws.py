"""A bare Engine.IO WebSocket client that can stop reading, like a phone on a bad network.

Its receive buffer is kept small, so a client that stops reading makes the server's side fill
up quickly. ``read_all`` later drains everything that arrived, parses the frames and returns the
Socket.IO events in order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

from support.rawio import _frame as masked_frame
from support.rawio import read_frame


class StalledClient:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        # A small limit: when nobody reads, the stream stops taking data off the socket.
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        opened = await self._frame()
        assert opened is not None and opened.startswith("0"), opened
        self.send("40")
        connected = await self._frame()
        assert connected is not None and connected.startswith("40"), connected

    def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(masked_frame(text.encode(), binary=False))

    def emit(self, event: str, data: Any) -> None:
        self.send("42" + json.dumps([event, data]))

    async def _frame(self, timeout: float = 5.0) -> str | None:
        """The next text frame, or ``None`` when the connection ends."""
        assert self.reader is not None
        frame = await read_frame(self.reader, timeout)
        return None if frame is None else frame[1].decode()

    async def read_all(self, quiet: float = 1.0) -> tuple[list[tuple[str, Any]], bool]:
        """Read until nothing arrives for ``quiet`` seconds: ``(events, still_open)``.

        Engine.IO pings are answered on the way, so the server keeps the client."""
        events: list[tuple[str, Any]] = []
        while True:
            try:
                text = await self._frame(timeout=quiet)
            except TimeoutError:
                return events, True
            if text is None:
                return events, False
            if text == "2":
                self.send("3")
            elif text.startswith("42"):
                name, *args = json.loads(text[2:])
                events.append((name, args[0] if args else None))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

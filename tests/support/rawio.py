"""Bare Engine.IO clients that send exactly what a test tells them: WebSocket frames (text or
binary, of any size) and long-polling requests, with nothing of their own in between."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import httpx


def _frame(payload: bytes, binary: bool) -> bytes:
    """A masked, final client frame."""
    first = 0x82 if binary else 0x81
    length = len(payload)
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    if payload:
        whole = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(
            length, "big"
        )
    else:
        masked = b""
    return head + mask + masked


async def read_frame(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes] | None:
    """The next server frame as ``(opcode, payload)``, or ``None`` when the connection ends
    (closed, or a close frame). ``TimeoutError`` when no frame starts within ``timeout``."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    opcode = head[0] & 0x0F
    if opcode == 0x8:
        return None
    return opcode, payload


class RawWebSocket:
    """An Engine.IO WebSocket session driven frame by frame."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = headers or {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.status = 0
        self.sid = ""

    async def open(self, timeout: float = 5.0) -> int:
        """Handshake; returns the HTTP status (101 when the session opened)."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status = int(head.split(b" ", 2)[1])
        if self.status == 101:
            opened = await self.text(timeout)
            assert opened is not None and opened.startswith("0"), opened
            self.sid = json.loads(opened[1:])["sid"]
        return self.status

    async def connect(self, timeout: float = 5.0) -> None:
        """Socket.IO CONNECT to the main namespace, without authentication."""
        self.send("40")
        while True:
            reply = await self.text(timeout)
            assert reply is not None, "closed before the Socket.IO connect was answered"
            if reply.startswith("40"):
                return

    def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(_frame(text.encode(), binary=False))

    def send_binary(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(_frame(data, binary=True))

    async def drain(self) -> bool:
        """Flush what was written; ``False`` once the server has closed the connection."""
        assert self.writer is not None
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return not self.writer.is_closing()

    async def text(self, timeout: float = 5.0) -> str | None:
        """The next text frame (pings are answered), or ``None`` when the connection ends."""
        assert self.reader is not None
        while True:
            frame = await read_frame(self.reader, timeout)
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x2:
                continue
            text = payload.decode()
            if text == "2":
                self.send("3")
                continue
            return text

    async def closed_within(self, timeout: float) -> bool:
        """Whether the server ends the connection within ``timeout`` seconds (frames that
        arrive meanwhile are read and dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                if await self.text(timeout=left) is None:
                    return True
            except TimeoutError:
                return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RawPolling:
    """An Engine.IO long-polling session driven request by request."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=10, headers=headers or {})
        self.sid = ""

    async def open(self) -> httpx.Response:
        response = await self.http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        if response.status_code == 200:
            self.sid = json.loads(response.text[1:])["sid"]
        return response

    def _params(self) -> dict[str, Any]:
        return {"EIO": "4", "transport": "polling", "sid": self.sid}

    async def post(self, *packets: str) -> httpx.Response:
        return await self.http.post(
            "/socket.io/", params=self._params(), content="\x1e".join(packets).encode()
        )

    async def get(self) -> httpx.Response:
        return await self.http.get("/socket.io/", params=self._params())

    async def connect(self) -> None:
        assert (await self.post("40")).status_code == 200
        reply = await self.get()
        assert reply.status_code == 200 and "40" in reply.text, reply.text

    async def aclose(self) -> None:
        await self.http.aclose()


def binary_packet(data: bytes) -> str:
    """A binary Engine.IO message as it travels in a long-polling payload."""
    return "b" + base64.b64encode(data).decode()


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")

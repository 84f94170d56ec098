"""The WebSocket layer under the engine, byte by byte: the upgrade request as the listener reads
it, the frames as the reader parses them, and what is refused (with RFC 6455's close codes).

A raw TCP client writes exact bytes here (no WebSocket library in between), so frames can be
split anywhere, fragmented, left unmasked or announced larger than allowed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from wire import serve

from spacesync.transport.engine import INBOX_LIMIT, Connection, EngineOptions, EngineServer
from spacesync.transport.http import WEBSOCKET_ROUTES
from spacesync.transport.socketio import SocketServer

PATH = "/engine.io/"
KEY = base64.b64encode(b"0123456789abcdef").decode()


@dataclass
class Recorder:
    """Echoes messages; a message ``slow:<n>`` is answered after a pause (through the
    coroutine path), so later ones must wait for it."""

    messages: list[str | bytes] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def opened(self, conn: Connection) -> None:
        pass

    async def message(self, conn: Connection, data: str | bytes) -> None:
        self.messages.append(data)
        if isinstance(data, str) and data.startswith("slow:"):
            await asyncio.sleep(0.05)
        if isinstance(data, bytes):
            conn.send_binary(data)
        else:
            conn.send_text("4" + data)

    def message_nowait(self, conn: Connection, data: str) -> bool:
        if data.startswith("fast:"):
            self.messages.append(data)
            conn.send_text("4" + data)
            return True
        return False

    def closed(self, conn: Connection, reason: str) -> None:
        self.reasons[conn.sid] = reason


@dataclass
class Setup:
    url: str
    engine: EngineServer
    recorder: Recorder


@asynccontextmanager
async def engine_server(**options: Any) -> AsyncIterator[Setup]:
    recorder = Recorder()
    engine = EngineServer(
        recorder, EngineOptions(**{"ping_interval": 5.0, "ping_timeout": 5.0, **options})
    )
    app = web.Application()
    app.router.add_route("*", PATH, engine.handle)
    app[WEBSOCKET_ROUTES] = {PATH: engine.accept_websocket}
    async with serve(app) as url:
        try:
            yield Setup(url, engine, recorder)
        finally:
            await engine.close_all()
            await engine.shutdown()


class Raw:
    """A TCP connection speaking WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> Raw:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def upgrade(self, query: str = "EIO=4&transport=websocket", **headers: str) -> bytes:
        """Send an upgrade request; the response head."""
        self.send(request(query, **headers))
        return await self.reader.readuntil(b"\r\n\r\n")

    async def frame(self, timeout: float = 3.0) -> tuple[int, bytes]:
        """The next server frame: opcode and payload (the server never masks)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not head[1] & 0x80, "a server frame must not be masked"
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return head[0] & 0x0F, await self.reader.readexactly(length)

    async def text(self) -> str:
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x1:
                return payload.decode()
            assert opcode in (0x9, 0xA), (opcode, payload)

    async def close_code(self, timeout: float = 3.0) -> int | None:
        """Read until the server's close frame (its status code), skipping messages; None if
        the connection ended without one."""
        try:
            while True:
                opcode, payload = await self.frame(timeout)
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except asyncio.IncompleteReadError:
            return None

    async def ended(self, timeout: float = 3.0) -> bool:
        """Whether the server closes the connection within ``timeout``."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def request(query: str, **headers: str) -> bytes:
    fields = {
        "Host": "localhost",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value == "":
            fields.pop(name, None)
        else:
            fields[name] = value
    lines = [f"GET {PATH}?{query} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(
    payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """A client frame (masked, as the protocol requires, unless ``mask`` is False)."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def closed_session(s: Setup, sid: str) -> None:
    """Wait (up to a second) until the session ``sid`` has ended."""
    for _ in range(100):
        if sid in s.recorder.reasons:
            return
        await asyncio.sleep(0.01)


async def opened(url: str) -> tuple[Raw, str]:
    """A new WebSocket session: the client and its sid."""
    raw = await Raw.connect(url)
    head = await raw.upgrade()
    assert head.startswith(b"HTTP/1.1 101 "), head
    first = await raw.text()
    assert first.startswith("0")
    return raw, json.loads(first[1:])["sid"]


# -- the upgrade request --------------------------------------------------------------------------


async def test_the_accept_key_is_the_one_rfc_6455_computes() -> None:
    async with engine_server() as s:
        raw = await Raw.connect(s.url)
        head = await raw.upgrade(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==")
        # the example of RFC 6455, section 1.3
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        raw.close()


async def test_a_request_split_into_single_bytes_is_read() -> None:
    async with engine_server() as s:
        raw = await Raw.connect(s.url)
        for byte in request("EIO=4&transport=websocket"):
            raw.send(bytes((byte,)))
            await raw.writer.drain()
        head = await raw.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert (await raw.text()).startswith("0{")
        raw.close()


async def test_frames_sent_with_the_request_are_read() -> None:
    async with engine_server() as s:
        raw = await Raw.connect(s.url)
        raw.send(request("EIO=4&transport=websocket") + frame(b"4early") + frame(b"4second"))
        assert (await raw.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        assert (await raw.text()).startswith("0{")
        assert await raw.text() == "4early"
        assert await raw.text() == "4second"
        raw.close()


async def test_upgrade_requests_missing_their_parts_are_refused() -> None:
    async with engine_server() as s:
        for headers in (
            {"Sec_WebSocket_Key": ""},
            {"Sec_WebSocket_Key": "short"},
            {"Sec_WebSocket_Version": "8"},
            {"Upgrade": ""},
            {"Connection": "keep-alive"},
        ):
            raw = await Raw.connect(s.url)
            head = await raw.upgrade(**headers)
            assert head.startswith(b"HTTP/1.1 400 "), (headers, head)
            assert await raw.ended()
        assert s.engine.sessions == {}


async def test_a_malformed_request_head_is_refused() -> None:
    async with engine_server() as s:
        for bad in (
            request("EIO=4&transport=websocket").replace(b"HTTP/1.1", b"HTTP/1.0"),
            request("EIO=4&transport=websocket").replace(b"Upgrade:", b"Up grade:"),
            request("EIO=4&transport=websocket").replace(b"\r\nHost", b"\r\n Host"),
        ):
            raw = await Raw.connect(s.url)
            raw.send(bad)
            head = await raw.reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), head
            assert await raw.ended()
        assert s.engine.sessions == {}


async def test_an_endless_request_head_is_refused() -> None:
    async with engine_server() as s:
        raw = await Raw.connect(s.url)
        raw.send(f"GET {PATH}?EIO=4&transport=websocket HTTP/1.1\r\n".encode())
        for i in range(2000):
            raw.send(f"X-Filler-{i}: {'x' * 30}\r\n".encode())
        head = await raw.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 ")
        assert await raw.ended()


async def test_other_requests_on_the_path_still_reach_http() -> None:
    async with engine_server() as s, aiohttp.ClientSession() as http:
        # long-polling handshakes, and a POST that mentions the WebSocket transport
        async with http.get(f"{s.url}{PATH}?EIO=4&transport=polling") as r:
            assert r.status == 200
            assert (await r.text()).startswith("0{")
        async with http.post(f"{s.url}{PATH}?EIO=4&transport=websocket", data="x") as r:
            assert r.status == 400
            assert (await r.json())["code"] == 3


# -- frames ---------------------------------------------------------------------------------------


async def test_frames_split_anywhere_are_reassembled() -> None:
    async with engine_server() as s:
        raw, _ = await opened(s.url)
        data = frame(b"4" + b"a" * 300) + frame(b"4short") + frame(b"4" + b"b" * 70000)
        for i in range(0, len(data), 7):
            raw.send(data[i : i + 7])
        assert await raw.text() == "4" + "a" * 300
        assert await raw.text() == "4short"
        assert await raw.text() == "4" + "b" * 70000
        raw.close()


async def test_a_fragmented_message_with_a_ping_inside_is_one_message() -> None:
    async with engine_server() as s:
        raw, _ = await opened(s.url)
        raw.send(frame(b"4hel", fin=False))
        raw.send(frame(b"lo", opcode=0x0, fin=False))
        raw.send(frame(b"are you there", opcode=0x9))
        raw.send(frame(b" world", opcode=0x0))
        opcode, payload = await raw.frame()
        assert (opcode, payload) == (0xA, b"are you there")
        assert await raw.text() == "4hello world"
        raw.close()


async def test_a_binary_message_is_echoed_as_binary() -> None:
    async with engine_server() as s:
        raw, _ = await opened(s.url)
        raw.send(frame(b"\x00\xff\x01", opcode=0x2))
        assert await raw.frame() == (0x2, b"\x00\xff\x01")
        raw.close()


async def refused(data: bytes, code: int, **options: Any) -> Setup:
    async with engine_server(**options) as s:
        raw, sid = await opened(s.url)
        raw.send(data)
        assert await raw.close_code() == code
        assert await raw.ended()
        await closed_session(s, sid)
        assert sid in s.recorder.reasons
        assert sid not in s.engine.sessions
        return s


async def test_an_unmasked_frame_is_a_protocol_error() -> None:
    s = await refused(frame(b"4hi", mask=False), 1002)
    assert s.recorder.messages == []


async def test_reserved_bits_are_a_protocol_error() -> None:
    await refused(frame(b"4hi", rsv=0x40), 1002)


async def test_an_unknown_opcode_is_a_protocol_error() -> None:
    await refused(frame(b"4hi", opcode=0x3), 1002)


async def test_a_continuation_without_a_message_is_a_protocol_error() -> None:
    await refused(frame(b"4hi", opcode=0x0), 1002)


async def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    await refused(frame(b"4a", fin=False) + frame(b"4b"), 1002)


async def test_a_long_or_fragmented_control_frame_is_a_protocol_error() -> None:
    await refused(frame(b"x" * 126, opcode=0x9), 1002)
    await refused(frame(b"x", opcode=0x9, fin=False), 1002)


async def test_text_that_is_not_utf8_is_invalid_data() -> None:
    s = await refused(frame(b"4\xff\xfe"), 1007)
    assert s.recorder.messages == []


async def test_a_message_announced_over_the_limit_is_refused_before_it_is_sent() -> None:
    # only the header: the server must not wait for (or buffer) the 2 MB it announces
    head = struct.pack("!BBQ", 0x81, 0xFF, 2_000_000) + os.urandom(4)
    await refused(head, 1009, max_payload=1000)


async def test_fragments_adding_up_over_the_limit_are_refused() -> None:
    data = b"".join(
        frame(b"4" + b"x" * 399 if i == 0 else b"x" * 400, opcode=0x1 if i == 0 else 0x0, fin=False)
        for i in range(3)
    )
    s = await refused(data, 1009, max_payload=1000)
    assert s.recorder.messages == []


async def test_a_close_frame_is_answered_and_ends_the_session() -> None:
    async with engine_server() as s:
        raw, sid = await opened(s.url)
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8))
        assert await raw.close_code() == 1000
        assert await raw.ended()
        await asyncio.sleep(0.05)
        assert s.recorder.reasons[sid] == "transport close"


async def test_a_dropped_connection_ends_the_session() -> None:
    async with engine_server() as s:
        raw, sid = await opened(s.url)
        raw.writer.transport.abort()
        await closed_session(s, sid)
        assert s.recorder.reasons[sid] == "transport close"
        assert sid not in s.engine.sessions


# -- order and back-pressure ----------------------------------------------------------------------


async def test_messages_keep_their_order_behind_a_slow_handler() -> None:
    async with engine_server() as s:
        raw, _ = await opened(s.url)
        sent = ["slow:1", "fast:2", "plain:3", "slow:4", "fast:5"]
        raw.send(b"".join(frame(("4" + m).encode()) for m in sent))
        assert [await raw.text() for _ in sent] == ["4" + m for m in sent]
        assert s.recorder.messages == sent
        raw.close()


async def test_messages_read_before_the_close_are_handled_before_it() -> None:
    async with engine_server() as s:
        raw, sid = await opened(s.url)
        closing = frame(struct.pack("!H", 1000), opcode=0x8)
        raw.send(frame(b"4slow:1") + frame(b"4plain:2") + closing)
        assert await raw.close_code() == 1000
        await closed_session(s, sid)
        assert s.recorder.messages == ["slow:1", "plain:2"]
        assert s.recorder.reasons[sid] == "transport close"


async def test_a_flood_behind_a_slow_handler_pauses_reading_and_loses_nothing() -> None:
    async with engine_server() as s:
        raw, sid = await opened(s.url)
        count = INBOX_LIMIT * 4
        sent = ["slow:0"] + [f"plain:{i}" for i in range(1, count)]
        raw.send(b"".join(frame(("4" + m).encode()) for m in sent))
        await raw.writer.drain()
        await asyncio.sleep(0.02)
        sock = s.engine.sessions[sid]._ws
        assert sock is not None
        peak = len(sock._inbox or ())
        received = [await raw.text() for _ in sent]
        assert received == ["4" + m for m in sent]
        assert peak <= INBOX_LIMIT, peak  # the rest waited in the kernel, not in memory
        raw.close()


async def test_binary_refused_from_its_header_when_binary_events_are_off() -> None:
    sio = SocketServer(EngineOptions(ping_interval=5.0, ping_timeout=5.0))

    async def connect(sid: str, address: str, auth: Any) -> None:
        pass

    sio.on("connect", connect)
    app = web.Application()
    app.router.add_route("*", "/socket.io/", sio.handle)
    app[WEBSOCKET_ROUTES] = {"/socket.io/": sio.accept_websocket}
    async with serve(app) as url:
        raw = await Raw.connect(url)
        raw.send(request("EIO=4&transport=websocket").replace(b"/engine.io/", b"/socket.io/"))
        assert (await raw.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        assert (await raw.text()).startswith("0{")
        raw.send(frame(b"40"))
        assert (await raw.text()).startswith("40{")
        # the header of a 900 KB binary frame, and nothing of its payload
        raw.send(struct.pack("!BBQ", 0x82, 0xFF, 900_000) + os.urandom(4))
        assert await raw.ended()
        await sio.engine.close_all()
        await sio.engine.shutdown()


# -- heartbeat ------------------------------------------------------------------------------------


async def test_heartbeat_of_many_sessions_ends_exactly_the_silent_ones() -> None:
    async with engine_server(ping_interval=0.3, ping_timeout=0.6) as s:
        clients = [await opened(s.url) for _ in range(20)]
        answering = clients[::2]

        async def answer(raw: Raw) -> int:
            pings = 0
            while True:
                try:
                    text = await raw.text()
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return pings
                if text == "2":
                    pings += 1
                    raw.send(frame(b"3"))

        tasks = [asyncio.ensure_future(answer(raw)) for raw, _ in answering]
        await asyncio.sleep(2.0)  # the silent ones are closed after about 0.9 s
        silent = {sid for _, sid in clients[1::2]}
        assert {sid for sid, reason in s.recorder.reasons.items()} == silent
        assert set(s.recorder.reasons.values()) == {"ping timeout"}
        assert all(sid in s.engine.sessions for _, sid in answering)
        for raw, _ in answering:
            raw.close()
        pings = await asyncio.gather(*tasks)
        # a PING 0.3 s after each answer, for 2 s: about six each, none skipped
        assert all(4 <= n <= 8 for n in pings), pings


async def test_an_upgrade_on_a_reused_keep_alive_connection_works_the_same() -> None:
    # a proxy (nginx with upstream keepalive) sends upgrades on connections that carried
    # other requests before: the second request of this connection never reaches the listener
    async with engine_server() as s:
        raw = await Raw.connect(s.url)
        raw.send(f"GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        head = await raw.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        assert (await raw.reader.readexactly(length)).startswith(b"0{")
        head = await raw.upgrade()
        assert head.startswith(b"HTTP/1.1 101 "), head
        first = await raw.text()
        sid = json.loads(first[1:])["sid"]
        raw.send(frame(b"4slow:1") + frame(b"4fast:2"))
        assert [await raw.text(), await raw.text()] == ["4slow:1", "4fast:2"]
        raw.send(frame(struct.pack("!H", 1000), opcode=0x8))
        assert await raw.close_code() == 1000
        assert await raw.ended()
        await closed_session(s, sid)
        assert s.recorder.reasons[sid] == "transport close"
        assert sid not in s.engine.sessions

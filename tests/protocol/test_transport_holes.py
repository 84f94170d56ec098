"""Edges of the transport that the official protocol suites leave alone, each on a server built
in the test (real aiohttp server on a loopback port, raw aiohttp client): heartbeat packets in a
long-polling POST, the upgrade timeout, overlapping polls and upgrades, maxPayload, CORS,
refused binary packets and connection state recovery.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wire import Client, WsClient, serve

from spacesync.transport.engine import Connection, EngineOptions, EngineServer
from spacesync.transport.http import WEBSOCKET_ROUTES, Accept
from spacesync.transport.socketio import SocketServer

QUICK = 2.0
"""Seconds within which an answer that needs no waiting must come, with room for a busy
machine."""


class Echo:
    """Echoes every message; remembers why each session ended."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def opened(self, conn: Connection) -> None:
        pass

    async def message(self, conn: Connection, data: str | bytes) -> None:
        if isinstance(data, bytes):
            conn.send_binary(data)
        else:
            conn.send_text("4" + data)

    def closed(self, conn: Connection, reason: str) -> None:
        self.reasons[conn.sid] = reason


@dataclass
class EngineSetup:
    client: Client
    engine: EngineServer
    echo: Echo


@asynccontextmanager
async def running(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    accept: Accept,
    path: str,
    on_close: Callable[[], Awaitable[None]],
) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_route("*", path, handle)
    app[WEBSOCKET_ROUTES] = {path: accept}
    async with serve(app) as url:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            client = Client(http, url, path)
            try:
                yield client
            finally:
                await client.close()
                await on_close()


@asynccontextmanager
async def engine_server(**options: Any) -> AsyncIterator[EngineSetup]:
    settings: dict[str, Any] = {"ping_interval": 5.0, "ping_timeout": 5.0, **options}
    echo = Echo()
    engine = EngineServer(echo, EngineOptions(**settings))

    async def stop() -> None:
        await engine.close_all()
        await engine.shutdown()

    async with running(engine.handle, engine.accept_websocket, "/engine.io/", stop) as client:
        yield EngineSetup(client, engine, echo)


async def timed(coro: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- 1. heartbeat packets in a long-polling POST --------------------------------------------------


async def test_a_noop_post_is_answered_at_once() -> None:
    async with engine_server() as s:
        sid, _ = await s.client.open_polling()
        for _ in range(200):
            answer, took = await timed(s.client.post(sid, "6"))
            assert answer == (200, "ok")
            assert took < QUICK
        # the session is untouched: messages still go both ways
        assert await s.client.post(sid, "6\x1e4after\x1e6") == (200, "ok")
        assert await s.client.get(sid) == (200, "4after")
        assert sid not in s.echo.reasons


async def test_a_ping_post_closes_the_session_and_is_answered_at_once() -> None:
    async with engine_server() as s:
        sid, _ = await s.client.open_polling()
        (status, _), took = await timed(s.client.post(sid, "2"))
        assert status == 400
        assert took < QUICK
        assert s.echo.reasons[sid] == "parse error"
        assert (await s.client.get(sid))[0] == 400


async def test_many_ping_posts_leave_nothing_pending() -> None:
    async with engine_server() as s:
        sids = []
        for _ in range(200):
            sid, _ = await s.client.open_polling()
            sids.append(sid)
            (status, _), took = await timed(s.client.post(sid, "2"))
            assert status == 400
            assert took < QUICK
        assert s.engine.sessions == {}
        assert set(s.echo.reasons) == set(sids)


async def test_many_ping_posts_at_once_are_all_answered() -> None:
    async with engine_server() as s:
        sids = [(await s.client.open_polling())[0] for _ in range(200)]
        results = await asyncio.wait_for(
            asyncio.gather(*(timed(s.client.post(sid, "2")) for sid in sids)), 30
        )
        assert [status for (status, _), _ in results] == [400] * 200
        slowest = max(took for _, took in results)
        assert slowest < 10.0, slowest
        assert s.engine.sessions == {}


async def test_a_noop_post_does_not_end_a_waiting_poll() -> None:
    async with engine_server() as s:
        sid, _ = await s.client.open_polling()
        poll = asyncio.ensure_future(s.client.get(sid))
        await asyncio.sleep(0.1)
        assert await s.client.post(sid, "6") == (200, "ok")
        await asyncio.sleep(0.1)
        assert not poll.done()
        assert await s.client.post(sid, "4wake") == (200, "ok")
        assert await asyncio.wait_for(poll, QUICK) == (200, "4wake")


@pytest.mark.parametrize("size", [500_000, 1_000_000])
async def test_a_large_polling_body_arrives_whole(size: int) -> None:
    async with engine_server(max_payload=1_000_000) as s:
        sid, _ = await s.client.open_polling()
        body = "4" + "w" * (size - 1)
        assert await s.client.post(sid, body) == (200, "ok")
        assert await s.client.get_messages(sid) == [body]


async def test_overlapping_posts_close_the_session() -> None:
    async with engine_server() as s:
        sid, _ = await s.client.open_polling()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"4slow"
            await asyncio.sleep(0.5)
            yield b"\x1e4end"

        first = asyncio.ensure_future(s.client.post(sid, slow_body()))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        (status, _), took = await timed(s.client.post(sid, "4second"))
        assert status == 400
        assert took < QUICK
        await asyncio.wait_for(first, QUICK + 1)
        assert s.echo.reasons[sid] == "transport error"


async def test_too_many_packets_in_one_post_close_the_session() -> None:
    async with engine_server(max_poll_packets=100) as s:
        sid, _ = await s.client.open_polling()
        assert await s.client.post(sid, "\x1e".join(["6"] * 100)) == (200, "ok")
        status, _ = await s.client.post(sid, "\x1e".join(["6"] * 101))
        assert status == 400
        assert s.echo.reasons[sid] == "parse error"


async def test_a_polling_client_that_does_not_fetch_is_let_go() -> None:
    async with engine_server(buffer_limit=10_000) as s:
        sid, _ = await s.client.open_polling()
        for _ in range(20):
            status, _ = await s.client.post(sid, "4" + "q" * 999)
            if status != 200:
                break
        assert s.echo.reasons.get(sid) == "too slow"
        assert s.engine.slow_disconnects == 1
        assert (await s.client.get(sid))[0] == 400


# -- 2. the upgrade timeout -----------------------------------------------------------------------


async def test_an_upgrade_without_upgrade_packet_is_closed_after_the_timeout() -> None:
    async with engine_server(upgrade_timeout=0.5) as s:
        sid, _ = await s.client.open_polling()
        ws = await s.client.upgrade_socket(sid)
        probed = time.monotonic()
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        assert await ws.wait_closed(5.0) == []
        assert ws.closed_at is not None
        assert 0.4 < ws.closed_at - probed < 4.0
        # the session goes on over long-polling, and may try the upgrade again
        assert sid not in s.echo.reasons
        assert await s.client.get_messages(sid) == ["6"]
        assert await s.client.post(sid, "4still polling") == (200, "ok")
        assert await s.client.get_messages(sid) == ["4still polling"]
        again = await s.client.upgrade_socket(sid)
        await again.send("2probe")
        assert await again.recv() == "3probe"
        await again.send("5")
        await again.send("4upgraded")
        assert await again.recv() == "4upgraded"
        assert s.engine.sessions[sid].transport == "websocket"


async def test_an_upgrade_socket_that_sends_nothing_is_closed_after_the_timeout() -> None:
    async with engine_server(upgrade_timeout=0.5) as s:
        sid, _ = await s.client.open_polling()
        ws = await s.client.upgrade_socket(sid)
        assert await ws.wait_closed(5.0) == []
        assert sid not in s.echo.reasons
        assert s.engine.sessions[sid].transport == "polling"


async def test_one_upgrade_socket_per_session_at_a_time() -> None:
    async with engine_server(upgrade_timeout=3.0) as s:
        sid, _ = await s.client.open_polling()
        first = await s.client.upgrade_socket(sid)
        await first.send("2probe")
        assert await first.recv() == "3probe"
        opened = time.monotonic()
        second = await s.client.upgrade_socket(sid)
        assert await second.wait_closed(QUICK) == []
        assert second.closed_at is not None and second.closed_at - opened < QUICK
        # the first one is not disturbed and completes the upgrade
        await first.send("5")
        await first.send("4hello")
        assert await first.recv() == "4hello"
        assert await first.collect(0.3) == []


# -- 3. overlapping long-polls --------------------------------------------------------------------


async def test_a_second_poll_is_refused_at_once_and_ends_the_session() -> None:
    async with engine_server() as s:
        sid, _ = await s.client.open_polling()
        first = asyncio.ensure_future(s.client.get(sid))
        await asyncio.sleep(0.1)
        (status, _), took = await timed(s.client.get(sid))
        assert status == 400
        assert took < QUICK
        assert await asyncio.wait_for(first, QUICK) == (200, "1")
        assert s.echo.reasons[sid] == "transport error"
        assert (await s.client.get(sid))[0] == 400


# -- 4. racing upgrades ---------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
async def test_racing_upgrade_sockets_leave_one_winner(round_: int) -> None:
    async with engine_server(upgrade_timeout=5.0) as s:
        sid, _ = await s.client.open_polling()
        sockets = await asyncio.gather(*(s.client.upgrade_socket(sid) for _ in range(2)))
        await eventually(lambda: any(ws.is_closed for ws in sockets), QUICK)
        await asyncio.sleep(0.1)
        losers = [ws for ws in sockets if ws.is_closed]
        winners = [ws for ws in sockets if not ws.is_closed]
        assert len(losers) == 1 and len(winners) == 1
        winner = winners[0]
        await winner.send("2probe")
        assert await winner.recv() == "3probe"
        await winner.send("5")
        for text in ("4one", "4two"):
            await winner.send(text)
        assert await winner.recv() == "4one"
        assert await winner.recv() == "4two"
        assert await winner.collect(0.3) == []  # each message echoed exactly once
        assert s.engine.sessions[sid].transport == "websocket"
        assert (await s.client.get(sid))[0] == 400


# -- 5. maxPayload --------------------------------------------------------------------------------


async def test_polling_body_over_max_payload_is_refused_and_ends_the_session() -> None:
    async with engine_server(max_payload=1000) as s:
        sid, handshake = await s.client.open_polling()
        assert handshake["maxPayload"] == 1000
        at_limit = "4" + "x" * 999
        assert await s.client.post(sid, at_limit) == (200, "ok")
        assert await s.client.get_messages(sid) == [at_limit]
        status, _ = await s.client.post(sid, "4" + "x" * 1000)
        assert status == 413
        assert sid not in s.engine.sessions
        assert (await s.client.get(sid))[0] == 400


async def test_chunked_polling_body_over_max_payload_is_refused() -> None:
    async with engine_server(max_payload=1000) as s:
        sid, _ = await s.client.open_polling()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"4"
            for _ in range(11):
                yield b"x" * 100

        status, _ = await s.client.post(sid, chunks())  # type: ignore[arg-type]
        assert status == 413
        assert sid not in s.engine.sessions


async def test_websocket_message_over_max_payload_closes_the_connection() -> None:
    async with engine_server(max_payload=1000) as s:
        ws, handshake = await s.client.open_websocket()
        assert handshake["maxPayload"] == 1000
        await ws.send("4" + "y" * 98)
        assert await ws.recv() == "4" + "y" * 98
        await ws.send("4" + "y" * 1000)
        assert await ws.wait_closed(QUICK + 1) == []
        assert handshake["sid"] not in s.engine.sessions


async def test_binary_websocket_message_over_max_payload_closes_the_connection() -> None:
    async with engine_server(max_payload=1000) as s:
        ws, _ = await s.client.open_websocket()
        await ws.send(b"\x01" * 100)
        assert await ws.recv() == b"\x01" * 100
        await ws.send(b"\x01" * 1001)
        assert await ws.wait_closed(QUICK + 1) == []


@pytest.mark.parametrize("message", ["4" + "z" * 999, b"\x02" * 1000], ids=["text", "binary"])
async def test_websocket_message_of_exactly_max_payload_is_accepted(message: str | bytes) -> None:
    # maxPayload is the largest message a client may send, as a long-polling body of exactly
    # that size is accepted (see above) and as the reference server counts it
    async with engine_server(max_payload=1000) as s:
        ws, _ = await s.client.open_websocket()
        await ws.send(message)
        assert await ws.recv() == message


# -- 6. CORS --------------------------------------------------------------------------------------

OK = "http://ok.example"
EVIL = "http://evil.example"


async def test_a_refused_origin_gets_403_on_polling_and_websocket() -> None:
    async with engine_server(cors_origins=[OK]) as s:
        c = s.client
        status, _, headers = await c.request(
            "GET", c.url("EIO=4&transport=polling"), headers={"Origin": EVIL}
        )
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await c.websocket(headers={"Origin": EVIL})
        assert refused.value.status == 403
        assert s.engine.sessions == {}
        # nor can another origin use a session opened from the right one
        sid, _ = await c.open_polling()
        status, _, _ = await c.request(
            "POST", c.session_url(sid), data="4hi", headers={"Origin": EVIL}
        )
        assert status == 403
        assert await c.post(sid, "4mine") == (200, "ok")
        assert await c.get_messages(sid) == ["4mine"]


async def test_an_allowed_origin_gets_credentialed_cors_headers() -> None:
    async with engine_server(cors_origins=[OK]) as s:
        c = s.client
        status, text, headers = await c.request(
            "GET", c.url("EIO=4&transport=polling"), headers={"Origin": OK}
        )
        assert status == 200 and text.startswith("0")
        assert headers["Access-Control-Allow-Origin"] == OK
        assert headers["Access-Control-Allow-Credentials"] == "true"
        sid = json.loads(text[1:])["sid"]
        status, _, headers = await c.request(
            "POST", c.session_url(sid), data="4x", headers={"Origin": OK}
        )
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == OK
        ws = await c.websocket(headers={"Origin": OK})
        assert (await ws.recv_text()).startswith("0")


async def test_preflight() -> None:
    async with engine_server(cors_origins=[OK]) as s:
        c = s.client
        status, _, headers = await c.request(
            "OPTIONS",
            c.url("EIO=4&transport=polling"),
            headers={
                "Origin": OK,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == OK
        assert headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "content-type"
        status, _, _ = await c.request(
            "OPTIONS", c.url("EIO=4&transport=polling"), headers={"Origin": EVIL}
        )
        assert status == 403


async def test_any_origin_when_all_are_allowed() -> None:
    async with engine_server(cors_origins="*") as s:
        status, _, headers = await s.client.request(
            "GET", s.client.url("EIO=4&transport=polling"), headers={"Origin": EVIL}
        )
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == "*"


# -- Socket.IO servers built in the test ----------------------------------------------------------


@dataclass
class SocketSetup:
    client: Client
    sio: SocketServer
    refused: list[tuple[str | None, str, str, Any, list[bytes]]] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    disconnects: dict[str, tuple[str, float]] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)
    auths: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def socket_server(
    options: EngineOptions | None = None, **kwargs: Any
) -> AsyncIterator[SocketSetup]:
    options = options or EngineOptions(ping_interval=5.0, ping_timeout=5.0)
    holder: list[SocketSetup] = []

    def on_refused(conn: Connection, sid: str | None, kind: str, detail: str) -> None:
        # what the connection had buffered at the moment it was refused
        owner = conn.owner
        holder[0].refused.append((sid, kind, detail, owner.pending, list(owner.attachments)))

    sio = SocketServer(options, connect_timeout=5.0, on_refused=on_refused, **kwargs)

    async def connect(sid: str, address: str, auth: Any) -> None:
        holder[0].auths[sid] = auth

    async def disconnect(sid: str, reason: str) -> None:
        holder[0].disconnects[sid] = (reason, time.monotonic())

    async def recover(sid: str) -> None:
        holder[0].recovered.append(sid)

    async def message(sid: str, *args: Any) -> None:
        holder[0].calls.append((sid, args))
        await sio.emit("message-back", *args, to=sid)

    async def send_me(sid: str, count: int) -> None:
        for i in range(count):
            await sio.emit("tick", i, to=sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on("recover", recover)
    sio.on("message", message)
    sio.on("send-me", send_me)

    async def stop() -> None:
        await sio.engine.close_all()
        await sio.shutdown()
        await sio.engine.shutdown()

    async with running(sio.handle, sio.accept_websocket, "/socket.io/", stop) as client:
        holder.append(SocketSetup(client, sio))
        yield holder[0]


async def sio_connect(
    client: Client, payload: str = "", auto_pong: bool = True
) -> tuple[WsClient, dict[str, Any]]:
    ws, _ = await client.open_websocket(auto_pong=auto_pong)
    await ws.send("40" + payload)
    answer = await ws.recv_text()
    assert answer.startswith("40{"), answer
    return ws, json.loads(answer[2:])


# -- 7. binary refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    ['451-["message",{"_placeholder":true,"num":0}]', '461-7[{"_placeholder":true,"num":0}]'],
    ids=["binary event", "binary ack"],
)
async def test_a_binary_packet_is_refused_without_binary(packet: str) -> None:
    async with socket_server(allow_binary=False) as s:
        ws, answer = await sio_connect(s.client)
        await ws.send(packet)
        assert await ws.wait_closed(QUICK) == []
        assert len(s.refused) == 1
        sid, kind, detail, pending, attachments = s.refused[0]
        assert (sid, kind) == (answer["sid"], "binaryPacket")
        assert "1 attachments" in detail
        assert pending is None and attachments == []  # refused before anything was kept
        assert s.calls == []


async def test_a_binary_frame_is_refused_without_binary() -> None:
    async with socket_server(allow_binary=False) as s:
        ws, answer = await sio_connect(s.client)
        await ws.send(b"\x01\x02\x03")
        assert await ws.wait_closed(QUICK) == []
        assert [(sid, kind) for sid, kind, *_ in s.refused] == [(answer["sid"], "binaryPacket")]
        assert s.calls == []


async def test_a_binary_polling_packet_is_refused_without_binary() -> None:
    async with socket_server(allow_binary=False) as s:
        c = s.client
        sid, _ = await c.open_polling()
        assert await c.post(sid, "40") == (200, "ok")
        assert (await c.get_messages(sid))[0].startswith("40{")
        status, _ = await c.post(sid, "bAQID")
        assert status == 400
        assert [kind for _, kind, *_ in s.refused] == ["binaryPacket"]
        assert (await c.get(sid))[0] == 400


async def test_plain_events_still_work_without_binary() -> None:
    async with socket_server(allow_binary=False) as s:
        ws, _ = await sio_connect(s.client)
        await ws.send('42["message","plain"]')
        assert await ws.recv() == '42["message-back","plain"]'
        assert s.refused == []


# -- 8. connection state recovery -----------------------------------------------------------------

WINDOW = 2.0


def parse_event(packet: str | bytes) -> list[Any]:
    assert isinstance(packet, str) and packet.startswith("42["), packet
    args = json.loads(packet[2:])
    assert isinstance(args, list)
    return args


async def recoverable(s: SocketSetup) -> tuple[WsClient, str, str, str]:
    """A connected socket that has received 3 events: (ws, sid, pid, last offset)."""
    ws, answer = await sio_connect(s.client)
    assert set(answer) == {"sid", "pid"}
    await ws.send('42["send-me",3]')
    events = [parse_event(await ws.recv()) for _ in range(3)]
    offsets = [event[-1] for event in events]
    assert [event[:2] for event in events] == [["tick", 0], ["tick", 1], ["tick", 2]]
    assert all(isinstance(o, str) and o.isdigit() for o in offsets)
    assert [int(o) for o in offsets] == sorted(int(o) for o in offsets)
    return ws, answer["sid"], answer["pid"], offsets[-1]


async def lose(s: SocketSetup, ws: WsClient, sid: str, abrupt: bool = True) -> None:
    """The client's link goes away; returns once the server holds the socket."""
    if abrupt:
        ws.abort()
    else:
        await ws.close()
    await eventually(lambda: not s.sio.is_connected(sid))
    assert sid in s.sio.sockets


def reconnect_payload(pid: Any, offset: Any, **extra: Any) -> str:
    return json.dumps({"pid": pid, "offset": offset, **extra})


@pytest.mark.parametrize("abrupt", [True, False], ids=["dropped link", "close frame"])
async def test_a_lost_connection_is_recovered_with_the_missed_events(abrupt: bool) -> None:
    async with socket_server(recovery_window=WINDOW, allow_binary=True) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid, abrupt)
        lost_at = time.monotonic()
        await s.sio.emit("tick", "missed 1", to=sid)
        await s.sio.emit("tick", "missed 2", to=sid)

        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer == {"sid": sid, "pid": pid}
        missed = [parse_event(await ws2.recv()) for _ in range(2)]
        assert [event[:2] for event in missed] == [["tick", "missed 1"], ["tick", "missed 2"]]
        assert int(last) < int(missed[0][-1]) < int(missed[1][-1])
        await eventually(lambda: s.recovered == [sid])
        assert s.sio.is_connected(sid)
        # the socket goes on as before: events, with offsets, on the new connection
        await ws2.send('42["message","again"]')
        assert parse_event(await ws2.recv())[:2] == ["message-back", "again"]
        assert s.calls[-1] == (sid, ("again",))
        if abrupt:
            # past the end of the window: still no disconnect
            await asyncio.sleep(max(0.0, lost_at + WINDOW + 0.5 - time.monotonic()))
        assert s.disconnects == {}
        assert s.auths.keys() == {sid}  # the connect handler ran once, at the first connect


async def test_a_large_event_of_ones_own_is_kept_small_and_replayed_whole() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid)
        roster = [
            {"id": f"player-{i}", "x": i, "y": 2 * i, "nickname": f"N{i}"} for i in range(300)
        ]
        await s.sio.emit("room:joined", {"players": roster}, to=sid)
        kept = s.sio.sockets[sid].replay
        assert kept is not None
        sent = len(json.dumps(roster))
        assert sent > 10_000
        assert len(kept.packets[-1]) < sent / 3  # kept deflated
        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer == {"sid": sid, "pid": pid}
        event = parse_event(await ws2.recv())
        assert event[:2] == ["room:joined", {"players": roster}]
        assert int(event[-1]) > int(last)


async def test_an_answered_ping_lets_the_replay_forget_what_the_client_has() -> None:
    options = EngineOptions(ping_interval=0.3, ping_timeout=5.0)
    async with socket_server(options, recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        replay = s.sio.sockets[sid].replay
        assert replay is not None and len(replay.seqs) == 3
        await eventually(lambda: ws.pings >= 1 and list(replay.seqs) == [int(last)])
        # the offset the client holds is still known: it recovers with what it missed
        await lose(s, ws, sid)
        await s.sio.emit("tick", "missed", to=sid)
        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer == {"sid": sid, "pid": pid}
        assert parse_event(await ws2.recv())[:2] == ["tick", "missed"]


async def test_an_unanswered_ping_forgets_nothing() -> None:
    options = EngineOptions(ping_interval=0.3, ping_timeout=5.0)
    async with socket_server(options, recovery_window=WINDOW) as s:
        ws, answer = await sio_connect(s.client, auto_pong=False)
        sid, pid = answer["sid"], answer["pid"]
        await ws.send('42["send-me",3]')
        first = parse_event(await ws.recv())[-1]
        await eventually(lambda: ws.pings >= 1)
        await asyncio.sleep(0.3)
        replay = s.sio.sockets[sid].replay
        assert replay is not None and len(replay.seqs) == 3
        # a client that lost the link before answering gets everything after its offset
        await lose(s, ws, sid)
        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, first))
        assert answer == {"sid": sid, "pid": pid}
        assert [parse_event(await ws2.recv())[:2] for _ in range(2)] == [["tick", 1], ["tick", 2]]


async def test_recovery_with_nothing_missed() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid)
        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer == {"sid": sid, "pid": pid}
        assert await ws2.collect(0.3) == []
        assert s.disconnects == {}


async def test_a_wrong_pid_gets_a_new_socket_and_the_old_one_ends_with_the_window() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid)
        lost_at = time.monotonic()
        ws2, answer = await sio_connect(s.client, reconnect_payload("not-" + pid, last, token="t"))
        assert answer["sid"] != sid and answer["pid"] != pid
        assert s.auths[answer["sid"]] == {"token": "t"}  # pid and offset are not the app's
        assert await ws2.collect(0.2) == []
        await eventually(lambda: sid in s.disconnects, WINDOW + 3)
        reason, at = s.disconnects[sid]
        assert reason == "transport close"
        assert at - lost_at > WINDOW - 0.5
        assert answer["sid"] not in s.disconnects
        assert s.recovered == []


@pytest.mark.parametrize("offset", ["999999999", "abc", 7], ids=str)
async def test_an_unknown_offset_gets_a_new_socket(offset: Any) -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, _ = await recoverable(s)
        await lose(s, ws, sid)
        await s.sio.emit("tick", "while away", to=sid)
        ws2, answer = await sio_connect(s.client, reconnect_payload(pid, offset))
        assert answer["sid"] != sid
        assert await ws2.collect(0.2) == []
        assert s.recovered == []


async def test_recovery_without_an_offset_replays_everything_kept() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, _ = await recoverable(s)
        await lose(s, ws, sid)
        await s.sio.emit("tick", "while away", to=sid)
        ws2, answer = await sio_connect(s.client, json.dumps({"pid": pid}))
        assert answer == {"sid": sid, "pid": pid}
        replayed = [parse_event(await ws2.recv())[1] for _ in range(4)]
        assert replayed == [0, 1, 2, "while away"]


async def test_no_recovery_after_a_client_disconnect() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await ws.send("41")
        await eventually(lambda: sid in s.disconnects, QUICK)
        assert s.disconnects[sid][0] == "client namespace disconnect"
        assert sid not in s.sio.sockets
        ws.abort()
        _, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer["sid"] != sid
        assert s.recovered == []


async def test_the_window_ending_runs_the_disconnect_handler() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid)
        lost_at = time.monotonic()
        await asyncio.sleep(WINDOW / 2)
        assert sid not in s.disconnects  # still held
        await eventually(lambda: sid in s.disconnects, WINDOW + 3)
        reason, at = s.disconnects[sid]
        assert reason == "transport close"
        assert at - lost_at > WINDOW - 0.5
        assert sid not in s.sio.sockets
        _, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer["sid"] != sid
        assert s.recovered == []


async def test_a_missed_heartbeat_is_recoverable_and_ends_with_its_reason() -> None:
    fast_heartbeat = EngineOptions(ping_interval=0.3, ping_timeout=0.2)
    async with socket_server(fast_heartbeat, recovery_window=WINDOW) as s:
        ws, answer = await sio_connect(s.client)
        sid = answer["sid"]
        ws.auto_pong = False
        await ws.wait_closed(QUICK + 1)
        await eventually(lambda: not s.sio.is_connected(sid))
        assert sid in s.sio.sockets and s.disconnects == {}  # held, not gone
        await eventually(lambda: sid in s.disconnects, WINDOW + 3)
        assert s.disconnects[sid][0] == "ping timeout"


async def test_a_held_socket_that_misses_too_much_is_let_go() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        await lose(s, ws, sid)
        for i in range(1000):
            await s.sio.emit("tick", i, to=sid)
        await eventually(lambda: sid in s.disconnects, QUICK)
        assert s.disconnects[sid][0] == "transport close"
        _, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer["sid"] != sid


async def test_a_server_side_close_is_not_recoverable() -> None:
    async with socket_server(recovery_window=WINDOW) as s:
        ws, sid, pid, last = await recoverable(s)
        s.sio.close_connection(sid)
        assert await ws.wait_closed(QUICK) == []
        await eventually(lambda: sid in s.disconnects, QUICK)
        assert s.disconnects[sid][0] == "forced close"
        _, answer = await sio_connect(s.client, reconnect_payload(pid, last))
        assert answer["sid"] != sid

"""The Engine.IO v4 protocol, checked on the wire against the reference apps.

The transport-level checks (handshake, request validation, heartbeat, close, upgrade) run
against both apps: the Engine.IO echo app under ``/engine.io/`` and the Socket.IO app under
``/socket.io/``. The echo checks run against the Engine.IO app only. Both apps are configured
with a 300 ms ping interval, a 200 ms ping timeout and a 1,000,000 byte maxPayload.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from wire import RS, Client, WsClient

PING_INTERVAL_MS = 300
PING_TIMEOUT_MS = 200
MAX_PAYLOAD = 1_000_000
HANDSHAKE_KEYS = {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}


@pytest.fixture(params=["engine.io", "socket.io"])
def eio(request: pytest.FixtureRequest) -> Client:
    """A client of either app, for the checks both must pass."""
    name = "engineio" if request.param == "engine.io" else "socketio"
    client: Client = request.getfixturevalue(name)
    return client


def check_handshake(value: dict[str, object], upgrades: list[str]) -> None:
    assert set(value) == HANDSHAKE_KEYS
    assert isinstance(value["sid"], str) and value["sid"]
    assert value["upgrades"] == upgrades
    assert value["pingInterval"] == PING_INTERVAL_MS
    assert value["pingTimeout"] == PING_TIMEOUT_MS
    assert value["maxPayload"] == MAX_PAYLOAD


async def ws_refused(client: Client, query: str) -> int:
    """The HTTP status a WebSocket handshake with this query is refused with."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.websocket(query)
    return refused.value.status


async def complete_upgrade(client: Client, sid: str) -> WsClient:
    """Probe, then UPGRADE, on a WebSocket for the long-polling session ``sid``; returns once
    the server has shown it switched (an echo, or a Socket.IO CONNECT answer, on the
    WebSocket)."""
    ws = await client.upgrade_socket(sid)
    await ws.send("2probe")
    assert await ws.recv_text() == "3probe"
    await ws.send("5")
    if client.path == "/engine.io/":
        await ws.send("4after upgrade")
        assert await ws.recv_text() == "4after upgrade"
    else:
        await ws.send("40")
        assert (await ws.recv_text()).startswith('40{"sid":')
    return ws


# -- handshake ----------------------------------------------------------------------------------


async def test_polling_handshake_opens_a_session(eio: Client) -> None:
    status, text, headers = await eio.request("GET", eio.url("EIO=4&transport=polling"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert text.startswith("0")
    check_handshake(json.loads(text[1:]), ["websocket"])


async def test_websocket_handshake_opens_a_session(eio: Client) -> None:
    _, handshake = await eio.open_websocket()
    check_handshake(handshake, [])


async def test_polling_sessions_get_distinct_ids(eio: Client) -> None:
    sids = {(await eio.open_polling())[0] for _ in range(5)}
    assert len(sids) == 5


@pytest.mark.parametrize(
    "query", ["transport=polling", "EIO=abc&transport=polling", "EIO=3&transport=polling"]
)
async def test_polling_with_a_bad_protocol_version_is_refused(eio: Client, query: str) -> None:
    status, text, _ = await eio.request("GET", eio.url(query))
    assert status == 400
    assert json.loads(text) == {"code": 5, "message": "Unsupported protocol version"}


@pytest.mark.parametrize("query", ["transport=websocket", "EIO=abc&transport=websocket"])
async def test_websocket_with_a_bad_protocol_version_is_refused(eio: Client, query: str) -> None:
    assert await ws_refused(eio, query) == 400


@pytest.mark.parametrize("query", ["EIO=4", "EIO=4&transport=abc"])
async def test_an_unknown_transport_is_refused(eio: Client, query: str) -> None:
    status, text, _ = await eio.request("GET", eio.url(query))
    assert status == 400
    assert json.loads(text) == {"code": 0, "message": "Transport unknown"}
    assert await ws_refused(eio, query) == 400


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_a_handshake_must_be_a_get(eio: Client, method: str) -> None:
    status, _, _ = await eio.request(method, eio.url("EIO=4&transport=polling"))
    assert status == 400


async def test_an_unknown_session_id_is_refused(eio: Client) -> None:
    status, text = await eio.get("no-such-session")
    assert status == 400
    assert json.loads(text) == {"code": 1, "message": "Session ID unknown"}
    assert await ws_refused(eio, "EIO=4&transport=websocket&sid=no-such-session") == 400


# -- messages over long-polling -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA=="],
    ids=["one packet", "several packets", "text and binary"],
)
async def test_polling_messages_are_echoed(engineio: Client, body: str) -> None:
    sid, _ = await engineio.open_polling()
    assert await engineio.post(sid, body) == (200, "ok")
    assert await engineio.get_messages(sid) == body.split(RS)


async def test_polling_binary_is_sent_back_as_base64(engineio: Client) -> None:
    sid, _ = await engineio.open_polling()
    assert await engineio.post(sid, "b" + "AAECAwT/") == (200, "ok")
    assert await engineio.get_messages(sid) == ["bAAECAwT/"]


@pytest.mark.parametrize("body", ["abc", "4ok\x1e\x1e4ok", "bnot base64!"])
async def test_an_invalid_polling_body_closes_the_session(engineio: Client, body: str) -> None:
    sid, _ = await engineio.open_polling()
    status, _ = await engineio.post(sid, body)
    assert status == 400
    status, _ = await engineio.get(sid)
    assert status == 400


async def test_duplicate_polls_close_the_session(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    first = asyncio.ensure_future(eio.get(sid))
    await asyncio.sleep(0.1)  # the first long-poll is waiting on the server
    assert not first.done()
    started = time.monotonic()
    status, _, _ = await eio.request("GET", eio.session_url(sid) + "&t=burst")
    assert status == 400
    assert time.monotonic() - started < 2.0
    assert await asyncio.wait_for(first, 5) == (200, "1")
    status, _ = await eio.get(sid)
    assert status == 400


# -- messages over WebSocket ----------------------------------------------------------------------


async def test_websocket_text_is_echoed(engineio: Client) -> None:
    ws, _ = await engineio.open_websocket()
    await ws.send("4hello")
    assert await ws.recv() == "4hello"
    await ws.send("4héllo ✓")
    assert await ws.recv() == "4héllo ✓"


async def test_websocket_binary_is_echoed(engineio: Client) -> None:
    ws, _ = await engineio.open_websocket()
    await ws.send(bytes([1, 2, 3, 4]))
    assert await ws.recv() == bytes([1, 2, 3, 4])


async def test_messages_in_one_burst_are_all_echoed_in_order(engineio: Client) -> None:
    ws, _ = await engineio.open_websocket()
    for i in range(50):
        await ws.send(f"4m{i}")
    assert [await ws.recv() for _ in range(50)] == [f"4m{i}" for i in range(50)]


@pytest.mark.parametrize("packet", ["abc", "", "0", "2", "5", "7x"])
async def test_an_invalid_websocket_packet_closes_the_session(
    engineio: Client, packet: str
) -> None:
    ws, _ = await engineio.open_websocket()
    await ws.send(packet)
    assert await ws.wait_closed(3.0) == []


# -- heartbeat ----------------------------------------------------------------------------------


def heartbeat_rounds(client: Client) -> int:
    # The Socket.IO app closes a session that has not connected to a namespace after 1 s, so
    # only two rounds fit there before that limit on a busy machine.
    return 3 if client.path == "/engine.io/" else 2


async def test_polling_ping_pong(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    for _ in range(heartbeat_rounds(eio)):
        started = time.monotonic()
        assert await eio.get(sid) == (200, "2")
        # the PING comes after the ping interval, not at once
        assert time.monotonic() - started > 0.2
        assert await eio.post(sid, "3") == (200, "ok")


async def test_polling_session_without_pong_times_out(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    await asyncio.sleep((PING_INTERVAL_MS + PING_TIMEOUT_MS) / 1000 + 0.4)
    status, _ = await eio.get(sid)
    assert status == 400


async def test_websocket_ping_pong(eio: Client) -> None:
    ws, _ = await eio.open_websocket(auto_pong=False)
    for _ in range(heartbeat_rounds(eio)):
        started = time.monotonic()
        assert await ws.recv(pings=True) == "2"
        assert time.monotonic() - started > 0.2
        await ws.send("3")
    assert not ws.is_closed


async def test_websocket_without_pong_times_out(engineio: Client) -> None:
    ws, _ = await engineio.open_websocket(auto_pong=False)
    opened = time.monotonic()
    assert await ws.recv(pings=True) == "2"
    await ws.wait_closed(3.0)
    assert ws.closed_at is not None
    # closed after the ping interval plus the ping timeout, not before
    assert ws.closed_at - opened > 0.4


async def test_socketio_websocket_without_pong_times_out(socketio: Client) -> None:
    ws, _ = await socketio.open_websocket(auto_pong=False)
    await ws.send("40")  # connected: the connect timeout is out of the way
    assert (await ws.recv_text()).startswith("40")
    assert await ws.recv(pings=True) == '42["auth",{}]'
    assert await ws.recv(pings=True) == "2"
    await ws.wait_closed(3.0)


# -- close ----------------------------------------------------------------------------------------


async def test_polling_close_packet_ends_the_session(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    poll = asyncio.ensure_future(eio.get(sid))
    await asyncio.sleep(0.1)
    assert not poll.done()
    assert await eio.post(sid, "1") == (200, "ok")
    assert await asyncio.wait_for(poll, 5) == (200, "6")
    status, _ = await eio.get(sid)
    assert status == 400


async def test_websocket_close_packet_ends_the_session(eio: Client) -> None:
    ws, _ = await eio.open_websocket()
    await ws.send("1")
    assert await ws.wait_closed(3.0) == []


# -- upgrade --------------------------------------------------------------------------------------


async def test_upgrade_from_polling_to_websocket(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    ws = await eio.upgrade_socket(sid)
    await ws.send("2probe")
    assert await ws.recv_text() == "3probe"
    # the long-poll still in use is ended with a NOOP so that the client can let it go
    assert await eio.get_messages(sid) == ["6"]
    await ws.send("5")
    if eio.path == "/engine.io/":
        await ws.send("4hello")
        assert await ws.recv() == "4hello"
    else:
        await ws.send("40")
        reply = await ws.recv_text()
        assert reply.startswith("40") and set(json.loads(reply[2:])) == {"sid"}


async def test_a_pending_poll_is_answered_by_the_probe(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    poll = asyncio.ensure_future(eio.get(sid))
    await asyncio.sleep(0.1)
    ws = await eio.upgrade_socket(sid)
    await ws.send("2probe")
    assert await ws.recv_text() == "3probe"
    status, text = await asyncio.wait_for(poll, 5)
    assert status == 200 and "6" in text.split(RS)


async def test_messages_queued_before_the_upgrade_move_to_the_websocket(engineio: Client) -> None:
    sid, _ = await engineio.open_polling()
    ws = await engineio.upgrade_socket(sid)
    await ws.send("2probe")
    assert await ws.recv_text() == "3probe"
    # sent over long-polling during the upgrade: the echo waits for the new transport
    assert await engineio.post(sid, "4during") == (200, "ok")
    await ws.send("5")
    assert await ws.recv() == "4during"


async def test_http_requests_after_the_upgrade_are_refused(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    ws = await complete_upgrade(eio, sid)
    status, _ = await eio.get(sid)
    assert status == 400
    status, _ = await eio.post(sid, "4hello")
    assert status == 400
    if eio.path == "/engine.io/":
        await ws.send("4still here")
        assert await ws.recv() == "4still here"
    assert not ws.is_closed


async def test_a_second_websocket_after_the_upgrade_is_closed(eio: Client) -> None:
    sid, _ = await eio.open_polling()
    ws = await complete_upgrade(eio, sid)
    second = await eio.upgrade_socket(sid)
    assert await second.wait_closed(3.0) == []
    if eio.path == "/engine.io/":
        await ws.send("4hello")
        assert await ws.recv() == "4hello"
    assert not ws.is_closed


async def test_a_websocket_session_cannot_be_upgraded(eio: Client) -> None:
    ws, handshake = await eio.open_websocket()
    second = await eio.upgrade_socket(handshake["sid"])
    assert await second.wait_closed(3.0) == []
    assert not ws.is_closed

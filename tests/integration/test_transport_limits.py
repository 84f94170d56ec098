"""The transport refuses what would let one client hold the server's memory or connections:
binary packets, sessions past the per-address limits, sessions that never connect or never
join, JSONP polling; limits apply to the client address behind a trusted proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.rawio import RawPolling, RawWebSocket, binary_packet, rss_bytes
from support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]

MIB = 1024 * 1024
FRAME = b"\xab" * 65_000
BILLION_ATTACHMENTS = '451000000000-["x",{"_placeholder":true,"num":0}]'


async def metrics(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def joined(bridge: Bridge, server: ServerProcess, space: str, nickname: str) -> JsClient:
    client = await bridge.connected(server.url)
    await client.join(space, nickname, session_token=dev_token(), playerId=unique("p"))
    return client


async def pair(bridge: Bridge, server: ServerProcess) -> tuple[JsClient, JsClient]:
    space = space_id()
    first = await joined(bridge, server, space, "Bystander")
    second = await joined(bridge, server, space, "Listener")
    return first, second


async def assert_undisturbed(sender: JsClient, listener: JsClient, marker: str) -> None:
    await sender.emit("chat:message", {"content": marker})
    await listener.wait_for("chat:message", lambda m: m["content"] == marker, timeout=5)
    assert (await sender.state())["connected"] is True
    assert (await listener.state())["connected"] is True


# -- binary packets -------------------------------------------------------------------------------


async def test_binary_attachment_flood_over_websocket_is_refused_without_buffering(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """An unauthenticated socket that never joins announces a billion attachments and streams
    64 KiB frames: the connection is closed at the announcement, logged as E3001 and counted;
    1,000 such frames across 20 sockets leave the server's memory where it was, and players
    already in a space notice nothing."""
    server = start_server(NODE_ENV="development")
    bystander, listener = await pair(bridge, server)
    assert server.proc is not None
    mark = server.mark()
    await asyncio.sleep(0.5)
    before = rss_bytes(server.proc.pid)

    closed = 0
    for _ in range(20):
        raw = RawWebSocket(server.host, server.port)
        assert await raw.open() == 101
        await raw.connect()
        raw.send(BILLION_ATTACHMENTS)
        for _ in range(50):
            raw.send_binary(FRAME)
            if not await raw.drain():
                break
        if await raw.closed_within(3.0):
            closed += 1
        raw.close()
    await asyncio.sleep(0.5)
    growth = rss_bytes(server.proc.pid) - before
    assert closed == 20
    assert growth < 20 * MIB, f"server RSS grew by {growth / MIB:.1f} MiB"

    entry = await server.wait_for_log(code="E3001", since=mark)
    assert entry["level"] == "warn"
    assert (entry.get("context") or {}).get("reason") == "binaryPacket"
    assert (await metrics(server))["abuse"].get("binaryPacket", 0) >= 20
    await assert_undisturbed(bystander, listener, "after the binary flood")


async def test_binary_attachments_over_polling_are_refused(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """The same announcement over long-polling closes the session: the attachments that follow
    are answered 400 (no session), not kept."""
    server = start_server(NODE_ENV="development")
    bystander, listener = await pair(bridge, server)
    mark = server.mark()
    raw = RawPolling(server.url)
    try:
        assert (await raw.open()).status_code == 200
        await raw.connect()
        await raw.post(BILLION_ATTACHMENTS)
        refused = await raw.post(*[binary_packet(b"\xab" * 16_000)] * 3)
        assert refused.status_code == 400, refused.text
    finally:
        await raw.aclose()
    await server.wait_for_log(code="E3001", since=mark)
    assert (await metrics(server))["abuse"].get("binaryPacket", 0) >= 1
    await assert_undisturbed(bystander, listener, "after the polling attachments")


# What a client may try instead of a billion attachments (Socket.IO packets, without the
# Engine.IO message prefix): a binary event or acknowledgement
# announcing a few or none, either type without a count, and a binary message that no packet
# announced (here one that reads like a binary-event header itself). Every one closes the
# connection: no event of this server takes binary data.
BINARY_INPUT: list[tuple[str, str | bytes]] = [
    (
        "event-1-attachment",
        '51-["chat:message",{"content":"a file","file":{"_placeholder":true,"num":0}}]',
    ),
    ("event-0-attachments", '50-["chat:message",{"content":"none"}]'),
    ("event-no-count", '5["chat:message",{"content":"hi"}]'),
    ("ack-1-attachment", '61-0[{"_placeholder":true,"num":0}]'),
    ("ack-no-count", "6"),
    ("unannounced-binary", b'51000000000-["x",{"_placeholder":true,"num":0}]'),
]


def _join_packet() -> str:
    player = unique("lone")
    return (
        f'42["join:space",{{"spaceId":"{space_id()}","playerId":"{player}",'
        f'"nickname":"Lone","sessionToken":"{dev_token()}"}}]'
    )


async def _refused_over_websocket(server: ServerProcess, data: str | bytes, join: bool) -> None:
    raw = RawWebSocket(server.host, server.port)
    try:
        assert await raw.open() == 101
        await raw.connect()
        if join:
            raw.send(_join_packet())
            while not (await raw.text() or "").startswith('42["room:joined"'):
                pass
        if isinstance(data, bytes):
            raw.send_binary(data)
        else:
            raw.send("4" + data)
        raw.send('42["chat:message",{"content":"after the binary input"}]')
        assert await raw.closed_within(3.0), "the connection stayed open"
    finally:
        raw.close()


async def _refused_over_polling(server: ServerProcess, data: str | bytes, join: bool) -> None:
    polling = RawPolling(server.url)
    try:
        assert (await polling.open()).status_code == 200
        await polling.connect()
        if join:
            assert (await polling.post(_join_packet())).status_code == 200
            replies = ""
            for _ in range(5):
                replies += (await polling.get()).text
                if '"room:joined"' in replies:
                    break
            assert '"room:joined"' in replies, replies
        await polling.post(binary_packet(data) if isinstance(data, bytes) else "4" + data)
        after = await polling.post('42["chat:message",{"content":"after the binary input"}]')
        assert after.status_code == 400, f"the session is still open: {after.text}"
    finally:
        await polling.aclose()


@pytest.mark.parametrize("joined_first", [False, True], ids=["unjoined", "joined"])
@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("case", BINARY_INPUT, ids=[c[0] for c in BINARY_INPUT])
async def test_binary_input_closes_the_connection(
    bridge: Bridge,
    dev_server: ServerProcess,
    case: tuple[str, str | bytes],
    transport: str,
    joined_first: bool,
) -> None:
    """Any binary packet (type 5 or 6, any attachment count, none at all) and any binary
    message nobody announced close the connection at once, from a socket that never joined as
    from a player; nothing of it is answered or relayed, the refusal is counted as
    `binaryPacket` (and logged E3001, at most once a minute per address), and players already in
    a space notice nothing."""
    server = dev_server
    bystander, listener = await pair(bridge, server)
    before = (await metrics(server))["abuse"].get("binaryPacket", 0)
    refuse = _refused_over_websocket if transport == "websocket" else _refused_over_polling
    await refuse(server, case[1], joined_first)
    assert (await metrics(server))["abuse"]["binaryPacket"] == before + 1
    entry = await server.wait_for_log(code="E3001", predicate=_reason("binaryPacket"))
    assert entry["level"] == "warn"
    await listener.expect_nothing(
        "chat:message",
        within=0.2,
        predicate=lambda m: m["content"] == "after the binary input",
    )
    await assert_undisturbed(bystander, listener, f"after {case[0]} over {transport}")


async def test_binary_event_from_the_official_client_closes_its_connection(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """An event carrying a `Blob` (the official client sends it as a binary event with one
    attachment) closes the sender's connection: the others see it leave, hear nothing of the
    event, and go on; logged E3001 and counted once."""
    server = start_server(NODE_ENV="development")
    sender, listener = await pair(bridge, server)
    mark = server.mark()
    await sender.emit("chat:message", {"content": "a file", "file": b"\x00\x01"})
    reason = await sender.wait_disconnect(timeout=5)
    assert reason in {"transport close", "transport error"}, reason
    assert await listener.wait_for("player:left") == {"id": sender.player_id}
    await listener.expect_nothing(
        "chat:message", within=0.2, predicate=lambda m: m["content"] == "a file"
    )
    entry = await server.wait_for_log(code="E3001", predicate=_reason("binaryPacket"), since=mark)
    assert "connection closed" in entry["message"], entry
    assert (await metrics(server))["abuse"]["binaryPacket"] == 1
    other = await joined(bridge, server, listener.space_id or "", "Other")
    await assert_undisturbed(other, listener, "after a binary event")


async def test_polling_noop_is_answered_at_once(start_server: ServerFactory) -> None:
    """A long-polling POST of a NOOP is answered at once (the protocol lets it through without
    effect); 200 of them leave nothing held: every request is answered, the session still
    works."""
    server = start_server(NODE_ENV="development")
    polling = RawPolling(server.url)
    polling.http.timeout = httpx.Timeout(3.0)
    try:
        assert (await polling.open()).status_code == 200
        await polling.connect()
        for _ in range(200):
            answer = await polling.post("6")
            assert (answer.status_code, answer.text) == (200, "ok")
        assert (await polling.post("3")).status_code == 200
    finally:
        await polling.aclose()
    server.stop()
    assert server.find_logs(level="error") == []


@pytest.mark.parametrize("engine_packet", ["2", "0"], ids=["ping", "open"])
async def test_polling_packet_a_client_may_not_send_is_refused_at_once(
    start_server: ServerFactory, engine_packet: str
) -> None:
    """A long-polling POST of an Engine.IO packet only the server sends closes the session and
    is answered 400 at once: the close does not wait for a GET that will never come (it held
    the request and a task for good, logged at shutdown as an error). Nothing is left open."""
    server = start_server(NODE_ENV="development")
    polling = RawPolling(server.url)
    polling.http.timeout = httpx.Timeout(3.0)
    try:
        assert (await polling.open()).status_code == 200
        await polling.connect()
        assert (await polling.post(engine_packet)).status_code == 400
        assert (await polling.post("3")).status_code == 400
    finally:
        await polling.aclose()
    await asyncio.sleep(0.6)
    assert (await metrics(server))["connections"]["total"] == 0
    server.stop()
    assert server.find_logs(level="error") == []


# -- per-address sessions and handshake rate ------------------------------------------------------


async def test_limit_counts_engineio_sessions_from_their_handshake(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """`MAX_CONNECTIONS_PER_IP=5`: 50 Engine.IO handshakes that have not sent a Socket.IO
    CONNECT yet are 5 sessions and 45 refusals (429); the 5 can connect; a closed one frees
    its place."""
    server = start_server(NODE_ENV="development", MAX_CONNECTIONS_PER_IP="5")
    sessions = [RawPolling(server.url) for _ in range(50)]
    try:
        statuses = [(await s.open()).status_code for s in sessions]
        assert statuses.count(200) == 5, statuses
        assert statuses.count(429) == 45, statuses
        opened = [s for s, code in zip(sessions, statuses, strict=True) if code == 200]
        for session in opened:
            await session.connect()
        assert (await metrics(server))["connections"]["total"] == 5
        assert (await metrics(server))["abuse"]["connectionsPerAddress"] == 45
        assert server.find_logs(code="E2005", predicate=_reason("connectionsPerAddress"))

        await opened[0].post("1")  # Engine.IO close
        await asyncio.sleep(0.3)
        again = RawPolling(server.url)
        sessions.append(again)
        assert (await again.open()).status_code == 200
        assert (await RawPolling(server.url).open()).status_code == 429
    finally:
        for session in sessions:
            await session.aclose()


async def test_handshake_rate_per_address(start_server: ServerFactory) -> None:
    """`HANDSHAKES_PER_IP=5`: a sixth handshake within 10 s is refused with 429 even though
    every earlier session was closed; the allowance refills over the window."""
    server = start_server(NODE_ENV="development", HANDSHAKES_PER_IP="5")
    codes = []
    for _ in range(6):
        session = RawPolling(server.url)
        codes.append((await session.open()).status_code)
        if session.sid:
            await session.post("1")
        await session.aclose()
    assert codes == [200] * 5 + [429], codes
    assert (await metrics(server))["abuse"]["handshakeRate"] == 1
    assert server.find_logs(code="E2005", predicate=_reason("handshakeRate"))
    await asyncio.sleep(2.2)  # one handshake back per 2 s
    late = RawPolling(server.url)
    assert (await late.open()).status_code == 200
    await late.aclose()


def _reason(reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (e.get("context") or {}).get("reason") == reason


async def test_forwarded_address_from_a_trusted_proxy(start_server: ServerFactory) -> None:
    """Behind `TRUSTED_PROXIES=127.0.0.1` the limit applies to the right-most
    `X-Forwarded-For` entry that is not a trusted proxy (what the client writes to the left
    does not matter), and logs name that address."""
    server = start_server(
        NODE_ENV="development", MAX_CONNECTIONS_PER_IP="2", TRUSTED_PROXIES="127.0.0.1"
    )
    alice = {"X-Forwarded-For": "10.0.0.1"}
    spoofing_alice = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1, 127.0.0.1"}
    bob = {"X-Forwarded-For": "10.0.0.2"}
    sessions = [RawPolling(server.url, h) for h in (alice, spoofing_alice, alice, bob)]
    try:
        codes = [(await s.open()).status_code for s in sessions]
        assert codes == [200, 200, 429, 200], codes
        await sessions[3].connect()
        connected = await server.wait_for_log(code="E2001")
        assert connected["context"]["address"] == "10.0.0.2"
        refused = server.find_logs(code="E2005", predicate=_reason("connectionsPerAddress"))
        assert refused and refused[0]["context"]["address"] == "10.0.0.1"
    finally:
        for session in sessions:
            await session.aclose()


async def test_forwarded_address_is_ignored_without_trusted_proxies(
    start_server: ServerFactory,
) -> None:
    server = start_server(NODE_ENV="development", MAX_CONNECTIONS_PER_IP="2")
    sessions = [RawPolling(server.url, {"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(3)]
    try:
        codes = [(await s.open()).status_code for s in sessions]
        assert codes == [200, 200, 429], codes
    finally:
        for session in sessions:
            await session.aclose()


# -- idle sessions --------------------------------------------------------------------------------


async def test_session_without_socketio_connect_is_closed(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """`CONNECT_TIMEOUT=1`: an Engine.IO session that never sends a Socket.IO CONNECT is closed
    (E2005, counted); an official client, which connects at once, stays."""
    server = start_server(NODE_ENV="development", CONNECT_TIMEOUT="1")
    client = await bridge.connected(server.url)
    raw = RawWebSocket(server.host, server.port)
    assert await raw.open() == 101
    assert await raw.closed_within(4.0)
    raw.close()
    await server.wait_for_log(code="E2005", predicate=_reason("connectTimeout"))
    assert (await metrics(server))["abuse"]["connectTimeout"] == 1
    assert (await client.state())["connected"] is True


async def test_socket_that_joins_no_space_is_disconnected(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """`JOIN_TIMEOUT=1`: a connected socket that joins nothing is disconnected by the server
    ("io server disconnect": the official client does not come back by itself); a player who
    joined stays."""
    server = start_server(NODE_ENV="development", JOIN_TIMEOUT="1")
    idle = await bridge.connected(server.url)
    player = await joined(bridge, server, space_id(), "Stays")
    assert await idle.wait_disconnect(timeout=5) == "io server disconnect"
    await server.wait_for_log(code="E2005", predicate=_reason("joinTimeout"))
    await asyncio.sleep(1.5)
    assert (await player.state())["connected"] is True
    assert (await metrics(server))["abuse"]["joinTimeout"] == 1


async def test_raw_session_that_joins_no_space_is_closed(start_server: ServerFactory) -> None:
    """A raw client that connects, joins nothing and ignores the disconnect is closed once the
    connect timeout has passed again."""
    server = start_server(NODE_ENV="development", JOIN_TIMEOUT="1", CONNECT_TIMEOUT="1")
    raw = RawWebSocket(server.host, server.port)
    assert await raw.open() == 101
    await raw.connect()
    assert await raw.closed_within(6.0)
    raw.close()


# -- JSONP ----------------------------------------------------------------------------------------


async def test_jsonp_polling_is_refused(start_server: ServerFactory) -> None:
    server = start_server(NODE_ENV="development")
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "j": "0"}
        )
    assert response.status_code == 400
    assert (await metrics(server))["abuse"]["jsonp"] == 1
    assert server.find_logs(code="E2005", predicate=_reason("jsonp"))

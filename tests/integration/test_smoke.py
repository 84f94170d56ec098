"""Smoke tests: the server starts, both transports connect, a development join works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge
from support.server import ServerProcess
from support.standins import AppStandIn, DiscordStandIn

ServerFactory = Callable[..., ServerProcess]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_official_client_connects(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §1: WebSocket and HTTP long-polling are both served at /socket.io/."""
    client = bridge.client(dev_server.url, transports=[transport])
    sid = await client.connect()
    assert sid
    state = await client.state()
    assert state["connected"] is True
    assert state["transport"] == transport
    reason = await client.disconnect()
    assert reason == "io client disconnect"


async def test_polling_upgrades_to_websocket(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §1: a browser's default connection (polling, then upgrade) works."""
    client = bridge.client(dev_server.url, transports=["polling", "websocket"])
    await client.connect()
    deadline = time.monotonic() + 5
    while (await client.state())["transport"] != "websocket":
        assert time.monotonic() < deadline, "the transport was never upgraded to websocket"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_dev_join_gets_room_joined_then_proximity_status(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §2.1, §4: in development a `dev-` token joins without verification; the joiner
    receives `room:joined`, then (as FlowSpace's server sends them) `spotlight:status` and
    `proximity:status`, before anything else (an empty space has no map objects and no
    recording, so no `objects:sync` or `recording:status`)."""
    space = space_id()
    player = unique("player")
    client = await bridge.connected(dev_server.url, transports=[transport])
    joined = await client.join(space, "Alice", session_token=dev_token(), playerId=player)
    status = await client.wait_for("proximity:status")

    assert joined["spaceId"] == space
    assert joined["yourPlayerId"] == player
    assert [p["id"] for p in joined["players"]] == [player]
    assert status == {"enabled": False}
    assert client.event_names()[:3] == ["room:joined", "spotlight:status", "proximity:status"]
    assert client.received("spotlight:status")[0]["activeSpotlights"] == []


async def test_health_shape(dev_server: ServerProcess) -> None:
    """SPEC §10: `GET /health` and `GET /` answer `{status: "ok", timestamp (ms), uptime (s)}`."""
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=5) as http:
        for path in ("/health", "/"):
            before_ms = time.time() * 1000
            response = await http.get(path)
            after_ms = time.time() * 1000
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("application/json"), path
            assert response.headers.get("access-control-allow-origin") == "*", path
            body = response.json()
            assert set(body) == {"status", "timestamp", "uptime"}, body
            assert body["status"] == "ok"
            assert isinstance(body["timestamp"], int | float)
            assert before_ms - 1000 <= body["timestamp"] <= after_ms + 1000
            assert isinstance(body["uptime"], int | float)
            assert body["uptime"] >= 0


async def test_python_client_sees_js_client_move(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §1, §4: a python-socketio client and the official JS client share a space; the
    Python client sees the JS client's `player:move` as `player:moved`."""
    space = space_id()
    moved: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    joined: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    py = socketio.AsyncClient(reconnection=False)
    py.on("player:moved", moved.put_nowait)
    py.on("room:joined", joined.put_nowait)
    await py.connect(dev_server.url, transports=["websocket"])
    try:
        await py.emit(
            "join:space",
            {
                "spaceId": space,
                "playerId": unique("py"),
                "nickname": "Snake",
                "sessionToken": dev_token(),
            },
        )
        await asyncio.wait_for(joined.get(), 5)

        js = await bridge.connected(dev_server.url)
        await js.join(space, "Node", session_token=dev_token(), playerId=unique("js"))
        await js.emit("player:move", {"x": 123, "y": 456, "direction": "left", "isMoving": True})

        while True:
            event = await asyncio.wait_for(moved.get(), 5)
            if event["x"] == 123:
                break
        assert event == {
            "id": js.player_id,
            "nickname": "Node",
            "x": 123,
            "y": 456,
            "direction": "left",
            "isMoving": True,
        }
    finally:
        await py.disconnect()


async def test_raw_packet_reaches_the_server_and_binary_attachment_closes(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """A raw Socket.IO packet written on the Engine.IO connection is handled like any other
    event; an event with a binary attachment closes its sender's connection (no event takes
    binary data), and the other player sees it leave."""
    space = space_id()
    alice = await bridge.connected(dev_server.url)
    await alice.join(space, "Alice", session_token=dev_token(), playerId=unique("alice"))
    bob = await bridge.connected(dev_server.url, transports=["polling"])
    await bob.join(space, "Bob", session_token=dev_token(), playerId=unique("bob"))

    await alice.send_raw('2["chat:message",{"content":"raw packet"}]')
    assert (await bob.wait_for("chat:message"))["content"] == "raw packet"

    await alice.emit("chat:message", {"content": "with a file", "file": b"\x00\x01\x02"})
    assert await alice.wait_disconnect(timeout=5) in {"transport close", "transport error"}
    assert await bob.wait_for("player:left") == {"id": alice.player_id}
    await bob.expect_nothing("chat:message", predicate=lambda m: m["content"] == "with a file")


async def test_production_join_is_verified_by_the_app(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1, §7: in production a guest token is verified with `POST /api/guest/verify`
    and the app's identity wins; leaving logs an EXIT with `POST /api/guest/event`."""
    space = space_id()
    token = unique("guest-token")
    participant = unique("participant")
    app_standin.accept(token, participant, "Guesty", avatar="classic:red")

    client = await bridge.connected(prod_server.url)
    joined = await client.join(space, "Claimed", session_token=token, playerId=unique("spoof"))
    assert joined["yourPlayerId"] == participant
    me = next(p for p in joined["players"] if p["id"] == participant)
    assert me["nickname"] == "Guesty"
    assert me.get("avatarColor") == "red"

    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}
    assert verify.headers["content-type"].startswith("application/json")

    await client.emit("leave:space")
    (exit_call,) = await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body.get("spaceId") == space
    )
    assert exit_call.body["sessionToken"] == token
    assert exit_call.body["eventType"] == "EXIT"
    assert exit_call.body["payload"]["reason"] == "leave"
    assert isinstance(exit_call.body["payload"]["durationSeconds"], int | float)


async def test_unreachable_app_alerts_discord(
    bridge: Bridge,
    start_server: ServerFactory,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §2.1, §11: when the app answers 5xx, production refuses the session and the
    error E4002 is sent to the Discord webhook."""
    server = start_server(NODE_ENV=None)
    app_standin.fail_all()
    client = await bridge.connected(server.url)
    await client.emit(
        "join:space",
        {"spaceId": space_id(), "nickname": "Guest", "sessionToken": unique("guest-token")},
    )
    error = await client.wait_for("error")
    assert error == {"message": "Invalid session", "code": "INVALID_SESSION"}
    await client.wait_disconnect()
    await server.wait_for_log(code="E4002", level="error")

    (alert,) = await discord_standin.wait_for_request("POST")
    embed = alert.body["embeds"][0]
    assert embed["title"] == "🚨 Socket Server Error"
    assert embed["color"] == 15158332
    assert {"name": "Error Code", "value": "E4002"} in embed["fields"]
    assert embed["footer"]["text"] == "test-node | spacesync"

"""Slow and greedy clients (SPEC §4 positions are state, §8 no input may disturb other players):
a client that stops reading has its positions folded to the newest per player and gets them
when it catches up; one that lets its send buffer pass `CLIENT_BUFFER_LIMIT` is disconnected,
and the server's memory does not grow for it; `MAX_CONNECTIONS_PER_IP` caps handshakes per
address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio

from support.ids import space_id, unique
from support.jsclient import Bridge, ConnectRefused
from support.players import dev_player
from support.rawws import StalledClient
from support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]


async def metrics(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def python_player(server: ServerProcess, space: str, nickname: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    joined = asyncio.get_running_loop().create_future()
    client.on("room:joined", lambda data: joined.done() or joined.set_result(data))
    await client.connect(server.url, transports=["websocket"])
    await client.emit(
        "join:space",
        {
            "spaceId": space,
            "nickname": nickname,
            "sessionToken": "dev-" + unique("t"),
            "playerId": unique("mover"),
        },
    )
    data = await asyncio.wait_for(joined, 5)
    client.player_id = data["yourPlayerId"]  # type: ignore[attr-defined]
    return client


async def stalled_player(server: ServerProcess, space: str) -> StalledClient:
    stalled = StalledClient(server.host, server.port)
    await stalled.open()
    stalled.emit(
        "join:space",
        {"spaceId": space, "nickname": "Stalled", "sessionToken": "dev-stalled", "playerId": "st"},
    )
    return stalled


async def test_stalled_client_gets_the_newest_positions_when_it_catches_up(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """Positions for a client that stops reading are folded (newest per player, counted in
    `/metrics` `slowClients`); when it reads again it receives every mover's final position,
    and a bystander on the official client sees everything as usual."""
    server = start_server(NODE_ENV="development", CLIENT_BUFFER_LIMIT=str(1 << 20))
    space = space_id()
    stalled = await stalled_player(server, space)
    bystander = await dev_player(bridge, server, space, "Bystander")
    movers = [await python_player(server, space, f"Mover-{i:02d}-" + "x" * 22) for i in range(20)]

    deadline = time.monotonic() + 30
    step = 0
    while (await metrics(server))["slowClients"]["catchingUp"] == 0:
        assert time.monotonic() < deadline, "the stalled client never fell behind"
        for _ in range(10):
            step += 1
            for i, mover in enumerate(movers):
                await mover.emit(
                    "player:move", {"x": step, "y": i, "direction": "up", "isMoving": True}
                )
            await asyncio.sleep(0.02)
    for i, mover in enumerate(movers):
        await mover.emit(
            "player:move", {"x": 5000 + i, "y": 7, "direction": "left", "isMoving": False}
        )
    await asyncio.sleep(0.3)
    slow = (await metrics(server))["slowClients"]
    assert slow["positionsFolded"] > 0 and slow["disconnected"] == 0, slow

    events, still_open = await stalled.read_all()
    assert still_open, "the stalled client was disconnected although it stayed under the limit"
    last: dict[str, dict[str, Any]] = {}
    for name, data in events:
        if name == "player:moved":
            last[data["id"]] = data
    for i, mover in enumerate(movers):
        final = last.get(mover.player_id)  # type: ignore[attr-defined]
        assert final is not None and (final["x"], final["y"]) == (5000 + i, 7), final
        assert final["isMoving"] is False and final["direction"] == "left"
    for i, mover in enumerate(movers):
        await bystander.wait_for(
            "player:moved",
            lambda p, m=mover, x=5000 + i: p["id"] == m.player_id and p["x"] == x,  # type: ignore[attr-defined]
        )
    assert (await metrics(server))["slowClients"]["catchingUp"] == 0
    stalled.close()
    for mover in movers:
        await mover.disconnect()


async def test_client_past_the_buffer_limit_is_disconnected_and_others_carry_on(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """Chat is never folded: a client that stops reading while the space chats past its limit
    is disconnected (warning E2005, `slowClients.disconnected`), leaves the space like any
    disconnect, and the other players receive every message."""
    server = start_server(NODE_ENV="development", CLIENT_BUFFER_LIMIT="65536")
    space = space_id()
    stalled = await stalled_player(server, space)
    bystander = await dev_player(bridge, server, space, "Bystander")
    talkers = [await python_player(server, space, f"Talker{i}") for i in range(10)]
    rss_before = (await metrics(server))["memory"]["rssMB"]

    # Each message reaches every client as about 8 KB ("<" is escaped); a round is well inside
    # what a reading client takes in at once, five rounds far beyond the stalled one's limit.
    for round_ in range(5):
        for i, talker in enumerate(talkers):
            await talker.emit("chat:message", {"content": f"{round_}-{i} " + "<" * 1990})
        await asyncio.sleep(0.3)

    await server.wait_for_log(code="E2005", timeout=10)
    left = await bystander.wait_for("player:left", lambda p: p["id"] == "st", timeout=10)
    assert left == {"id": "st"}
    messages = await bystander.wait_for_all("chat:message", 50, timeout=10)
    assert len({m["content"][:4] for m in messages}) == 50
    slow = (await metrics(server))["slowClients"]
    assert slow["disconnected"] == 1, slow
    assert (await metrics(server))["memory"]["rssMB"] - rss_before < 50
    _, still_open = await stalled.read_all(quiet=2.0)
    assert not still_open
    for talker in talkers:
        assert talker.connected
        await talker.disconnect()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connections_per_address_are_capped(
    bridge: Bridge, start_server: ServerFactory, transport: str
) -> None:
    """`MAX_CONNECTIONS_PER_IP=3`: a fourth handshake from the same address is refused (the
    official client reports `connect_error`), logged once as E2005; once one socket leaves, a
    new one gets in. Plain HTTP (health, metrics) is not limited."""
    server = start_server(NODE_ENV="development", MAX_CONNECTIONS_PER_IP="3")
    space = space_id()
    players = [
        await dev_player(bridge, server, space, f"P{i}", transport=transport) for i in range(3)
    ]
    extra = bridge.client(server.url, transports=[transport], reconnection=False)
    with pytest.raises(ConnectRefused):
        await extra.connect()
    another = bridge.client(server.url, transports=[transport], reconnection=False)
    with pytest.raises(ConnectRefused):
        await another.connect()
    assert len(server.find_logs(code="E2005")) == 1
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/health")).status_code == 200

    await players[0].disconnect()
    await asyncio.sleep(0.3)
    late = await dev_player(bridge, server, space, "Late", transport=transport)
    assert late.player_id
    await players[1].wait_for("player:joined", lambda p: p["nickname"] == "Late")

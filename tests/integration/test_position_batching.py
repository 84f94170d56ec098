"""Coalesced positions and the opt-in ``players:moved`` batches (SPEC §4, §6).

Positions are state: the server may fold a player's moves within one tick, but the newest state,
every ``isMoving`` change and every jump must arrive, for plain and batched clients alike, over
either transport.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess

TRANSPORTS = ["websocket", "polling"]


def move(x: float, y: float = 0, moving: bool = True, direction: str = "right") -> tuple[str, list]:
    return ("player:move", [{"x": x, "y": y, "direction": direction, "isMoving": moving}])


async def joined(
    bridge: Bridge, server: ServerProcess, space: str, name: str, transport: str, batching: bool
) -> JsClient:
    client = await bridge.connected(server.url, transports=[transport])
    fields: dict[str, Any] = {"playerId": unique(name)}
    if batching:
        fields["positionBatching"] = True
    await client.join(space, name, session_token=dev_token(), **fields)
    return client


def batched_positions(client: JsClient) -> list[dict[str, Any]]:
    return [item for batch in client.received("players:moved") for item in batch]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_batched_and_plain_clients_share_a_space(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §4 batched positions: a batched client gets arrays, a plain one single events; each
    sees the other's final position and neither gets its own moves back."""
    space = space_id()
    plain = await joined(bridge, dev_server, space, "Plain", transport, batching=False)
    batched = await joined(bridge, dev_server, space, "Batched", transport, batching=True)

    await plain.emit_many([move(i) for i in range(1, 31)] + [move(30, moving=False)])
    await batched.emit_many([move(100 + i, 7) for i in range(30)] + [move(129, 7, moving=False)])

    def final_of(player_id: str) -> Any:
        return lambda batch: any(
            p["id"] == player_id and p["x"] == 30 and p["isMoving"] is False for p in batch
        )

    await batched.wait_for("players:moved", final_of(plain.player_id))
    last = await plain.wait_for(
        "player:moved",
        lambda m: m["id"] == batched.player_id and m["x"] == 129 and m["isMoving"] is False,
    )
    assert last == {
        "id": batched.player_id,
        "nickname": "Batched",
        "x": 129,
        "y": 7,
        "direction": "right",
        "isMoving": False,
    }
    assert batched.received("player:moved") == [], "a batched client gets no single events"
    assert all(p["id"] != batched.player_id for p in batched_positions(batched))
    assert all(m["id"] != plain.player_id for m in plain.received("player:moved"))
    for item in batched_positions(batched):
        assert set(item) == {"id", "nickname", "x", "y", "direction", "isMoving"}


async def test_batches_fold_a_burst_and_keep_is_moving_changes(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4: within a tick only the newest state is needed, but start and stop both arrive."""
    space = space_id()
    walker = await joined(bridge, dev_server, space, "Walker", "websocket", batching=False)
    watcher = await joined(bridge, dev_server, space, "Watcher", "websocket", batching=True)

    burst = [move(i, moving=True) for i in range(50)]
    burst += [move(50, moving=False), move(51, moving=True), move(52, moving=False)]
    await walker.emit_many(burst)
    await watcher.wait_for(
        "players:moved", lambda b: any(p["x"] == 52 and p["isMoving"] is False for p in b)
    )
    seen = [p for p in batched_positions(watcher) if p["id"] == walker.player_id]
    assert len(seen) < len(burst), "a burst inside one tick is folded"
    states = [p["isMoving"] for p in seen]
    changes = sum(1 for a, b in itertools.pairwise(states) if a != b)
    assert changes >= 3, f"stop, start and stop again must all arrive: {states}"
    xs = [p["x"] for p in seen]
    assert xs == sorted(xs), "positions arrive in the order they were sent"


async def test_jumps_are_events_for_batched_clients_too(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 player:jump: jumps are never coalesced, and a jump follows the mover's position."""
    space = space_id()
    jumper = await joined(bridge, dev_server, space, "Jumper", "websocket", batching=False)
    watcher = await joined(bridge, dev_server, space, "Watcher", "websocket", batching=True)
    items = []
    for i in range(5):
        items.append(move(i * 10))
        items.append(("player:jump", [{"x": i * 10, "y": 0}]))
    await jumper.emit_many(items)
    for i in range(5):
        await watcher.wait_for("player:jumped", lambda j, i=i: j["x"] == i * 10)
    assert len(watcher.received("player:jumped")) == 5
    positions = [p["x"] for p in batched_positions(watcher) if p["id"] == jumper.player_id]
    assert positions and positions[-1] == 40


async def test_leaving_player_position_arrives_before_player_left(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4: a player's last position is flushed before ``player:left``, so no client
    resurrects a player who has gone."""
    space = space_id()
    leaver = await joined(bridge, dev_server, space, "Leaver", "websocket", batching=False)
    plain = await joined(bridge, dev_server, space, "Plain", "websocket", batching=False)
    batched = await joined(bridge, dev_server, space, "Batched", "websocket", batching=True)
    await leaver.emit_many([move(i) for i in range(20)] + [("leave:space", [])])
    await plain.wait_for("player:left", lambda m: m["id"] == leaver.player_id)
    await batched.wait_for("player:left", lambda m: m["id"] == leaver.player_id)
    names = plain.event_names()
    assert names.index("player:left") > max(i for i, n in enumerate(names) if n == "player:moved")
    names = batched.event_names()
    assert names.index("player:left") > max(i for i, n in enumerate(names) if n == "players:moved")
    assert plain.received("player:moved")[-1]["x"] == 19


async def test_position_batching_flag_must_be_boolean(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §8: ``positionBatching`` is a boolean; anything else is bad input and no join."""
    client = await bridge.connected(dev_server.url, transports=["websocket"])
    await client.emit(
        "join:space",
        {
            "spaceId": space_id(),
            "playerId": unique("x"),
            "nickname": "X",
            "sessionToken": dev_token(),
            "positionBatching": "yes",
        },
    )
    error = await client.wait_for("error")
    assert error["code"] == "INVALID_PAYLOAD"
    await client.expect_nothing("room:joined", within=0.3)

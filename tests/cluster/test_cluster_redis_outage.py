"""Redis outages (SPEC §9 "A Redis outage must not crash a node: it keeps serving its local
players, reports not-ready on `/health/ready`, and resynchronises its state when Redis
returns"; §10 `/health`, `/health/ready`; §11 every output line stays JSON).

Each test owns a private `redis-server` (no persistence: killing it loses every key) shared by
two nodes, and stops and starts it on the same port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from support.cluster import (
    Cluster,
    PrivateRedis,
    dev_join,
    http_status,
    node_name,
    presence_ids,
    until_received,
    wait_ready,
    wait_status,
)
from support.ids import space_id
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import DiscordStandIn

pytestmark = pytest.mark.cluster

# How soon a node must notice that Redis is gone, and be ready again once it is back.
NOT_READY_WITHIN = 5.0
READY_AGAIN_WITHIN = 10.0


# How Redis goes away: killed (data lost), shut down cleanly (data lost), or hung (SIGSTOP: no
# answers, connections left open, like a network black hole; data kept for SIGCONT).
OUTAGES = ["sigkill", "shutdown-nosave", "hang"]


async def stop_redis(redis_server: PrivateRedis, how: str) -> None:
    if how == "sigkill":
        await asyncio.to_thread(redis_server.kill)
    elif how == "shutdown-nosave":
        await asyncio.to_thread(redis_server.shutdown_nosave)
    else:
        redis_server.pause()


async def restore_redis(redis_server: PrivateRedis, how: str) -> None:
    if how == "hang":
        redis_server.resume()
    else:
        await asyncio.to_thread(redis_server.start)


def move(x: float, y: float, moving: bool = False) -> dict[str, Any]:
    return {"x": x, "y": y, "direction": "left", "isMoving": moving}


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


async def assert_alive(nodes: list[ServerProcess]) -> None:
    for node in nodes:
        assert node.running, f"{node_name(node)} exited:\n{node.output()[-4000:]}"
        assert await http_status(node, "/health") == 200, node_name(node)


async def assert_local_service(mover: JsClient, watcher: JsClient, tag: str) -> None:
    """Two players of one node still see each other's moves, jumps and chat."""
    await mover.emit("player:move", move(11, 22, moving=True))
    await mover.emit("player:move", move(12, 23))
    moved = await watcher.wait_for("player:moved", lambda m: m["x"] == 12)
    assert (moved["id"], moved["isMoving"]) == (mover.player_id, False)
    await mover.emit("player:jump", {"x": 12, "y": 23})
    assert await watcher.wait_for("player:jumped") == {"id": mover.player_id, "x": 12, "y": 23}
    await mover.emit("chat:message", {"content": f"local chat {tag}"})
    for client in (mover, watcher):
        message = await client.wait_for(
            "chat:message", lambda m: m["content"] == f"local chat {tag}"
        )
        assert message["senderId"] == mover.player_id
    await watcher.emit("whisper:send", {"targetId": mover.player_id, "content": f"psst {tag}"})
    assert (await mover.wait_for("whisper:receive"))["content"] == f"psst {tag}"


async def assert_cluster_restored(
    bridge: Bridge,
    a: ServerProcess,
    b: ServerProcess,
    space: str,
    on_a: list[JsClient],
    on_b: list[JsClient],
    gone: list[str],
    mover_position: tuple[float, float],
) -> None:
    """After Redis returned: a newcomer on node B is told of every still-connected player of
    node A (at its current position) and of nobody who left; cross-node moves and chat flow."""
    alice = on_a[0]
    newcomer = await dev_join(bridge, b, space, "Newcomer")
    players = by_id(newcomer.received("room:joined")[-1]["players"])
    expected = {c.player_id for c in (*on_a, *on_b, newcomer)}
    assert set(players) == expected, (sorted(players), sorted(expected))
    assert not set(gone) & set(players)
    assert (players[alice.player_id]["x"], players[alice.player_id]["y"]) == mover_position

    for client in on_a:
        await client.wait_for("player:joined", lambda p: p["id"] == newcomer.player_id)

    await alice.emit("player:move", move(501, 502))
    for client in (*on_b, newcomer):
        moved = await client.wait_for("player:moved", lambda m: m["x"] == 501)
        assert moved["id"] == alice.player_id
    bob = on_b[0]
    await bob.emit("chat:message", {"content": "across again"})
    for client in (*on_a, newcomer):
        message = await client.wait_for("chat:message", lambda m: m["content"] == "across again")
        assert message["senderId"] == bob.player_id
    await newcomer.emit("whisper:send", {"targetId": alice.player_id, "content": "found you"})
    assert (await alice.wait_for("whisper:receive"))["content"] == "found you"

    for node in (a, b):
        assert sorted(await presence_ids(node, space)) == sorted(expected), node_name(node)


@pytest.mark.parametrize("how", OUTAGES)
async def test_outage_keeps_local_service_and_recovers(
    bridge: Bridge,
    private_redis: PrivateRedis,
    cluster: Cluster,
    discord_standin: DiscordStandIn,
    how: str,
) -> None:
    """SPEC §9, §10: with Redis gone, both nodes keep running (`/health` 200) and report 503 on
    `/health/ready` within a few seconds; players of one node still see each other's moves,
    jumps, chat and whispers; a player who disconnects meanwhile leaves for its neighbours.
    When Redis is back (empty), `/health/ready` is 200 again within 10 s and the cluster state is
    rebuilt from the live sockets: a newcomer on node B gets node A's players at their current
    positions and nobody who left; cross-node moves, chat and whispers flow again. The outage
    alerts (§11) at most once per node and code."""
    a, b = await cluster(2, REDIS_URL=private_redis.url(0))
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    carol = await dev_join(bridge, a, space, "Carol", transport="polling")
    dropper = await dev_join(bridge, a, space, "Dropper")
    bob = await dev_join(bridge, b, space, "Bob")
    for client in (alice, carol):
        await client.wait_for("player:joined", lambda p: p["id"] == bob.player_id)

    await stop_redis(private_redis, how)
    down_at = time.monotonic()
    for node in (a, b):
        await wait_status(node, "/health/ready", 503, timeout=remaining_from(down_at))
    await assert_alive([a, b])

    await assert_local_service(alice, carol, "during")
    await dropper.disconnect()
    for client in (alice, carol):
        await client.wait_for("player:left", lambda m: m["id"] == dropper.player_id)
    await alice.emit("player:move", move(77, 88))
    await carol.wait_for("player:moved", lambda m: m["x"] == 77)
    await asyncio.sleep(1.0)  # the nodes keep retrying Redis for a while
    await assert_alive([a, b])

    await restore_redis(private_redis, how)
    for node in (a, b):
        took = await wait_ready(node, READY_AGAIN_WITHIN)
        assert took <= READY_AGAIN_WITHIN
    await asyncio.sleep(0.5)
    await assert_cluster_restored(
        bridge, a, b, space, [alice, carol], [bob], [dropper.player_id], (77, 88)
    )
    await assert_alive([a, b])
    alerts = [alert_key(m) for m in discord_standin.messages]
    assert len(alerts) == len(set(alerts)), f"an outage alert was repeated: {alerts}"


def alert_key(message: Any) -> tuple[str, str]:
    """(footer "<HOSTNAME> | spacesync", error code) of one Discord alert (SPEC §11)."""
    embed = message["embeds"][0]
    code = next(f["value"] for f in embed["fields"] if f["name"] == "Error Code")
    return embed["footer"]["text"], code


def remaining_from(started: float, budget: float = NOT_READY_WITHIN) -> float:
    return max(0.1, started + budget - time.monotonic())


async def test_short_outage_is_survived(
    bridge: Bridge, private_redis: PrivateRedis, cluster: Cluster
) -> None:
    """SPEC §9: Redis killed and started again within a second: the nodes survive, become
    ready again within 10 s and the cluster works as before (state rebuilt, fan-out resumed),
    however briefly they may have been not-ready."""
    a, b = await cluster(2, REDIS_URL=private_redis.url(0))
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await alice.wait_for("player:joined", lambda p: p["id"] == bob.player_id)
    await alice.emit("player:move", move(150, 160))
    await bob.wait_for("player:moved", lambda m: m["x"] == 150)

    await asyncio.to_thread(private_redis.kill)
    await asyncio.sleep(0.8)
    await asyncio.to_thread(private_redis.start)
    await assert_alive([a, b])
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    # Give the nodes a moment to notice and rebuild, whichever way they learnt of the outage.
    await asyncio.sleep(2.5)
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    await assert_cluster_restored(bridge, a, b, space, [alice], [bob], [], (150, 160))


async def test_node_started_while_redis_is_down_serves_and_joins_later(
    bridge: Bridge, private_redis: PrivateRedis, cluster: Cluster
) -> None:
    """SPEC §9, §10: a node that starts while Redis is unreachable does not crash: `/health`
    answers 200 and `/health/ready` 503; its players are served; once Redis is reachable it
    becomes ready and joins the cluster (a player on the other node sees its players)."""
    (a,) = await cluster(1, REDIS_URL=private_redis.url(0))
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    await asyncio.to_thread(private_redis.kill)
    await wait_status(a, "/health/ready", 503, timeout=NOT_READY_WITHIN)

    (b,) = await cluster(1, ready=False, REDIS_URL=private_redis.url(0))
    await asyncio.sleep(1.0)
    await assert_alive([a, b])
    assert await http_status(b, "/health/ready") == 503
    bob = await dev_join(bridge, b, space, "Bob")
    bert = await dev_join(bridge, b, space, "Bert")
    await bob.wait_for("player:joined", lambda p: p["id"] == bert.player_id)

    await asyncio.to_thread(private_redis.start)
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    await asyncio.sleep(0.5)
    await assert_cluster_restored(bridge, a, b, space, [alice], [bob, bert], [], (480, 320))


@pytest.mark.parametrize("how", ["sigkill", "hang"])
async def test_other_nodes_views_converge_after_the_outage(
    bridge: Bridge, private_redis: PrivateRedis, cluster: Cluster, how: str
) -> None:
    """SPEC §9 ("resynchronises its state when Redis returns"), §4: changes made on node A while
    Redis was down reach the players of node B once it is back, so that nobody is left looking
    at a ghost or missing a neighbour: a player who left node A meanwhile gets `player:left` on
    node B, one who joined node A meanwhile gets `player:joined` there, and a player who walked
    meanwhile is eventually shown where it stands (its next move is relayed).

    (SPEC §9 does not name the events; these are what a user would expect to see.)"""
    a, b = await cluster(2, REDIS_URL=private_redis.url(0))
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    dropper = await dev_join(bridge, a, space, "Dropper")
    bob = await dev_join(bridge, b, space, "Bob")
    await alice.wait_for("player:joined", lambda p: p["id"] == bob.player_id)

    await stop_redis(private_redis, how)
    await wait_status(a, "/health/ready", 503, timeout=NOT_READY_WITHIN)
    await dropper.disconnect()
    await alice.wait_for("player:left", lambda m: m["id"] == dropper.player_id)
    joiner = await dev_join(bridge, a, space, "Joiner")
    await alice.wait_for("player:joined", lambda p: p["id"] == joiner.player_id)

    await restore_redis(private_redis, how)
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    await bob.wait_for("player:joined", lambda p: p["id"] == joiner.player_id, timeout=10)
    await joiner.emit("player:move", move(9, 9))
    await bob.wait_for("player:moved", lambda m: m["id"] == joiner.player_id)
    # The player who left node A during the outage must not stay on node B's screens.
    await until_received(bob, "player:left", lambda m: m["id"] == dropper.player_id, timeout=10)

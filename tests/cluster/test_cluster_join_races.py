"""Joins racing with closes, and with each other, in a cluster (SPEC §2, §4, §9).

In a cluster a join awaits Redis, so a socket can close while its join is under way, and a
long-polling request can carry two joins at once. Whatever the interleaving, a socket that is
gone must leave nothing behind (no ghost in `/presence`, in later `room:joined` rosters or in
Redis), every `player:joined` an observer saw must be followed by a `player:left`, and one
socket is in at most one space.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import redis.asyncio as aioredis

from support.cluster import CLUSTER_REDIS_URL, Cluster, dev_join, presence_ids
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.rawplayer import PollingPlayer, WsPlayer, event_frame, join_payload
from support.server import ServerProcess

pytestmark = pytest.mark.cluster

RACES = 100
AT_ONCE = 10
SETTLE = 3.0
# Roster entries are reconciled against live sockets within this many seconds.
RECONCILE_DEADLINE = 25.0


def joined_then_left(observer: JsClient) -> tuple[list[str], list[str]]:
    """Ids the observer saw join, and those of them it never saw leave afterwards."""
    joined: list[str] = []
    pending: dict[str, int] = {}
    for message in observer.log():
        if message.get("type") != "event":
            continue
        args = message.get("args") or [None]
        payload: Any = args[0]
        if not isinstance(payload, dict):
            continue
        if message.get("event") == "player:joined":
            joined.append(payload["id"])
            pending[payload["id"]] = pending.get(payload["id"], 0) + 1
        elif message.get("event") == "player:left" and pending.get(payload["id"]):
            pending[payload["id"]] -= 1
    return joined, [pid for pid, n in pending.items() if n]


async def roster_in_redis(space: str) -> set[str]:
    client = aioredis.Redis.from_url(CLUSTER_REDIS_URL)
    try:
        keys = await client.hkeys(f"spacesync:space:{space}:players")
        indexed = set()
        async for name in client.scan_iter("spacesync:node:*:players"):
            for field in await client.hkeys(name):
                space_of, _, player = field.decode().partition("\x1f")
                if space_of == space:
                    indexed.add(player)
        return {k.decode() for k in keys} | indexed
    finally:
        await client.aclose()


async def race_over_websocket(node: ServerProcess, space: str, player_id: str, i: int) -> None:
    """A join and the end of the connection in one TCP write (or 0-6 ms apart)."""
    player = await WsPlayer(node).open()
    join = event_frame("join:space", join_payload(space, player_id, player_id))
    if i % 3 == 0:
        player.send_all([join, "1"])  # the join, then an Engine.IO CLOSE packet
    else:
        player.emit("join:space", join_payload(space, player_id, player_id))
        await asyncio.sleep((i % 7) * 0.001)
    player.abort()


async def race_over_polling(node: ServerProcess, space: str, player_id: str, i: int) -> None:
    """A POST carrying the join and, 0-6 ms later while it is under way, a second POST
    carrying an Engine.IO CLOSE (the two requests are handled at the same time)."""
    player = await PollingPlayer(node).open()
    join = event_frame("join:space", join_payload(space, player_id, player_id))

    async def close_soon() -> None:
        await asyncio.sleep((i % 7) * 0.001)
        await player.post("1")

    try:
        await asyncio.gather(player.post(join), close_soon())
    finally:
        await player.aclose()


async def test_a_socket_closing_during_its_join_leaves_no_ghost(
    bridge: Bridge, cluster: Cluster
) -> None:
    """100 sockets (half WebSocket, half long-polling, over both nodes) each send `join:space`
    and close at once. Afterwards `/presence` on both nodes and Redis list only the two
    observers, a newcomer's `room:joined` too, and every `player:joined` an observer received
    was followed by a `player:left`."""
    a, b = await cluster(2, HANDSHAKES_PER_IP="0")
    space = space_id()
    watch_a = await dev_join(bridge, a, space, "WatchA")
    watch_b = await dev_join(bridge, b, space, "WatchB")
    observers = {watch_a.player_id, watch_b.player_id}

    async def race(i: int) -> None:
        node = (a, b)[i % 2]
        player_id = unique(f"racer{i}")
        if (i // 2) % 2 == 0:
            await race_over_websocket(node, space, player_id, i)
        else:
            await race_over_polling(node, space, player_id, i)

    numbers = iter(range(RACES))
    while batch := list(itertools.islice(numbers, AT_ONCE)):
        await asyncio.gather(*(race(i) for i in batch))
    await asyncio.sleep(SETTLE)
    assert set(await presence_ids(a, space)) == observers
    assert set(await presence_ids(b, space)) == observers
    assert await roster_in_redis(space) == observers
    newcomer = await dev_join(bridge, b, space, "Newcomer")
    listed = {p["id"] for p in newcomer.received("room:joined")[0]["players"]}
    assert listed == observers | {newcomer.player_id}
    for observer in (watch_a, watch_b):
        joined, never_left = joined_then_left(observer)
        never_left = [pid for pid in never_left if pid not in listed]
        assert never_left == [], f"{len(never_left)} of {len(joined)} joins never left"


async def test_two_joins_at_once_put_a_socket_in_one_space(
    bridge: Bridge, cluster: Cluster
) -> None:
    """Two long-polling POSTs at once (or one WebSocket write) carrying joins of two spaces:
    the socket ends up in at most one of them, on every node and in Redis, and when it closes
    it is in none. Overlapping POSTs close the session (the Engine.IO protocol says so) while
    the first join may still be under way: such a socket must end up in no space at all;
    otherwise (the POSTs did not overlap, or one WebSocket write) it is in exactly one."""
    a, b = await cluster(2, HANDSHAKES_PER_IP="0")
    first, second = space_id(), space_id()
    tries = 20
    players: list[tuple[str, PollingPlayer | WsPlayer]] = []
    closed: set[str] = set()
    for i in range(tries):
        node = (a, b)[i % 2]
        player_id = unique(f"double{i}")
        joins = [
            event_frame("join:space", join_payload(space, player_id, player_id))
            for space in (first, second)
        ]
        if i % 4 < 3:
            # Two POSTs at once, one join each: the requests are handled concurrently.
            polling = await PollingPlayer(node).open()
            statuses = await asyncio.gather(*(polling.post(join) for join in joins))
            if any(status != 200 for status in statuses):
                closed.add(player_id)
            players.append((player_id, polling))
        else:
            ws = await WsPlayer(node).open()
            ws.send_all(joins)
            players.append((player_id, ws))
    await asyncio.sleep(SETTLE)

    in_first = set(await presence_ids(a, first))
    in_second = set(await presence_ids(b, second))
    both = in_first & in_second
    assert not both, f"{len(both)} of {tries} sockets are in two spaces at once"
    assert in_first | in_second == {pid for pid, _ in players} - closed
    assert await roster_in_redis(first) | await roster_in_redis(second) == in_first | in_second

    for _, player in players:
        if isinstance(player, PollingPlayer):
            await player.post("1")
            await player.aclose()
        else:
            player.abort()
    await asyncio.sleep(SETTLE)
    for node in (a, b):
        assert await presence_ids(node, first) == []
        assert await presence_ids(node, second) == []
    assert await roster_in_redis(first) == set()
    assert await roster_in_redis(second) == set()


async def test_a_roster_entry_without_a_live_socket_is_removed(
    bridge: Bridge, cluster: Cluster
) -> None:
    """An entry a live node wrote for a socket it no longer has (whatever left it behind) is
    removed by that node's reconciliation: the others get `player:left` and it is gone from
    `/presence` and Redis."""
    a, b = await cluster(2)
    space = space_id()
    watcher = await dev_join(bridge, b, space, "Watcher")
    ghost = await dev_join(bridge, a, space, "Ghost")
    await watcher.wait_for("player:joined", lambda p: p["id"] == ghost.player_id)

    # Forge the aftermath of a lost departure: the entry stays, the socket is gone.
    client = aioredis.Redis.from_url(CLUSTER_REDIS_URL)
    try:
        players_key = f"spacesync:space:{space}:players"
        entry = await client.hget(players_key, ghost.player_id)
        assert entry is not None
        sid = entry.decode().split('"sid":"', 1)[1].split('"', 1)[0]
        (node_key,) = [
            k.decode() async for k in client.scan_iter("spacesync:node:node-a:*:players")
        ]
        await ghost.disconnect()
        await watcher.wait_for("player:left", lambda p: p["id"] == ghost.player_id)
        await client.hset(players_key, ghost.player_id, entry)
        await client.hset(node_key, f"{space}\x1f{ghost.player_id}", sid)
        await client.sadd("spacesync:spaces", space)
    finally:
        await client.aclose()
    watcher.consume("player:left")
    assert ghost.player_id in await presence_ids(b, space)

    await watcher.wait_for(
        "player:left", lambda p: p["id"] == ghost.player_id, timeout=RECONCILE_DEADLINE
    )
    assert await presence_ids(a, space) == [watcher.player_id]
    assert await roster_in_redis(space) == {watcher.player_id}

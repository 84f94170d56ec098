"""Per-player and per-target rate limits hold across the cluster (SPEC §8, §9): a player whose
sockets are spread over two nodes gets one allowance, not one per node.

Windows are fixed and aligned on Redis time, so a run that crosses a window boundary may pass
the limit once more; the figures below allow exactly that (the windows a run touched are read
from Redis time before and after it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from spacesync.domain.limits import INVITE_PAIR, INVITE_TARGET, JOIN_PLAYER, Rule
from spacesync.state.redis import RedisStore
from support.cluster import CLUSTER_REDIS_URL, Cluster, dev_join, flush_cluster_db
from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient

pytestmark = pytest.mark.cluster

JOIN_ATTEMPTS = 50
INVITERS_PER_NODE = 12
ANSWER_TIMEOUT = 5.0
SETTLE = 0.5


def redis_seconds() -> float:
    client = redis.Redis.from_url(CLUSTER_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return seconds + micros / 1_000_000


@contextmanager
def windows_touched(rule: Rule) -> Iterator[list[int]]:
    """How many windows of ``rule`` (in Redis time) the block ran across: 1, or 2 when it
    crossed a boundary."""
    touched: list[int] = []
    start = int(redis_seconds() / rule.window)
    yield touched
    touched.append(int(redis_seconds() / rule.window) - start + 1)


def rate_limited(client: JsClient, channel: str) -> list[dict[str, Any]]:
    return [e for e in client.received(channel) if e.get("code") == "RATE_LIMITED"]


async def join_answer(client: JsClient) -> str:
    """ "joined" or "refused": how the node answered a `join:space`."""
    for _ in range(int(ANSWER_TIMEOUT / 0.02)):
        if client.received("room:joined"):
            return "joined"
        if rate_limited(client, "error"):
            return "refused"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{client.id}: no answer to join:space")


async def invite_answer(inviter: JsClient, target: JsClient, party_id: str) -> str:
    """ "invited" or "refused": how an invitation to ``target`` was answered."""
    for _ in range(int(ANSWER_TIMEOUT / 0.02)):
        if any(p.get("partyId") == party_id for p in target.received("party:invited")):
            return "invited"
        if rate_limited(inviter, "party:error"):
            return "refused"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{inviter.id}: no answer to party:invite")


async def test_joins_of_one_player_through_two_nodes_share_one_allowance(
    bridge: Bridge, cluster: Cluster
) -> None:
    """One player (one playerId) joins 50 spaces, one socket each, alternately through two
    nodes: no more joins are accepted than the per-player limit allows in the windows the run
    touched (each node counting alone would accept twice that)."""
    nodes = await cluster(2)
    player_id = unique("joiner")
    answers: list[str] = []
    with windows_touched(JOIN_PLAYER) as touched:
        for i in range(JOIN_ATTEMPTS):
            client = await bridge.connected(nodes[i % 2].url, transports=["websocket"])
            await client.emit(
                "join:space",
                {
                    "spaceId": space_id(),
                    "nickname": "Joiner",
                    "sessionToken": dev_token(),
                    "playerId": player_id,
                },
            )
            answers.append(await join_answer(client))
    accepted = answers.count("joined")
    assert accepted <= JOIN_PLAYER.limit * touched[0], (accepted, touched)
    assert accepted >= JOIN_PLAYER.limit, answers  # the limit, not an outage, refused them
    assert answers.count("refused") == JOIN_ATTEMPTS - accepted


async def test_invitations_to_one_target_from_two_nodes_share_one_allowance(
    bridge: Bridge, cluster: Cluster
) -> None:
    """Twelve players on each node invite the same target once each: no more invitations
    reach the target than the per-target limit allows in the windows the run touched."""
    a, b = await cluster(2)
    space = space_id()
    target = await dev_join(bridge, a, space, "Target")
    inviters = []
    for i in range(2 * INVITERS_PER_NODE):
        inviter = await dev_join(bridge, (a, b)[i % 2], space, f"Inviter{i}")
        await inviter.emit("party:create", {"name": f"Party {i}"})
        inviters.append((inviter, (await inviter.wait_for("party:joined"))["partyId"]))
    answers: list[str] = []
    with windows_touched(INVITE_TARGET) as touched:
        for inviter, party_id in inviters:
            await inviter.emit("party:invite", {"partyId": party_id, "targetId": target.player_id})
            answers.append(await invite_answer(inviter, target, party_id))
    invited = answers.count("invited")
    assert invited <= INVITE_TARGET.limit * touched[0], (invited, touched)
    assert invited >= INVITE_TARGET.limit, answers


async def test_invitations_of_one_inviter_through_two_nodes_share_one_allowance(
    bridge: Bridge, cluster: Cluster
) -> None:
    """One inviter (one playerId) rejoins through each node in turn and invites the same
    target twice from each socket: the pair limit holds across both nodes."""
    a, b = await cluster(2)
    space = space_id()
    target = await dev_join(bridge, a, space, "Target")
    inviter_id = unique("inviter")
    refused = 0
    with windows_touched(INVITE_PAIR) as touched:
        for round_ in range(4):
            node = (a, b)[round_ % 2]
            inviter = await dev_join(bridge, node, space, "Inviter", player_id=inviter_id)
            for n in range(2):
                await inviter.emit("party:create", {"name": f"Party {round_}-{n}"})
                party_id = (await inviter.wait_for("party:joined"))["partyId"]
                await inviter.emit(
                    "party:invite", {"partyId": party_id, "targetId": target.player_id}
                )
            await asyncio.sleep(SETTLE)  # a socket hears of its first refusal only
            refused += len(rate_limited(inviter, "party:error"))
    invited = len(target.received("party:invited"))
    assert invited <= INVITE_PAIR.limit * touched[0], (invited, touched)
    assert invited >= INVITE_PAIR.limit and refused, (invited, refused)


async def test_shared_counters_expire_with_their_window_and_fall_back_to_the_node() -> None:
    """The store on its own: one counter per rule, key and window, under the prefix, expiring
    with the window; a key known to be full is refused without asking Redis; while Redis is
    away the node counts alone, going on from what Redis had counted."""
    flush_cluster_db()
    client = aioredis.Redis.from_url(CLUSTER_REDIS_URL)
    store = RedisStore(client, "node-test")
    store.healthy = True
    try:
        hits = [await store.hit_limit(INVITE_PAIR, "ann\nbob", 0.0) for _ in range(3)]
        assert [h.allowed for h in hits] == [True] * 3 and all(h.shared for h in hits)
        names = [k.decode() for k in await client.keys("*")]
        assert names == [f"spacesync:limit:rateLimited.invitePair:ann\nbob:{hits[0].window}"]
        assert 0 < await client.pttl(names[0]) <= INVITE_PAIR.window * 1000 + 1000
        await client.delete(names[0])  # only the node's own knowledge can refuse now
        refused = await store.hit_limit(INVITE_PAIR, "ann\nbob", 0.0)
        assert not refused.allowed and 1 <= refused.retry_after <= INVITE_PAIR.window
        assert await client.keys("*") == []
        await store.give_back(hits[-1])
        assert (await store.hit_limit(INVITE_PAIR, "ann\nbob", 0.0)).allowed
        await store.hit_limit(JOIN_PLAYER, "ann", 0.0)
        assert (await store.hit_limit(JOIN_PLAYER, "ann", 0.0)).count == 2
        store.healthy = False  # Redis away: the node's own count, from what Redis had counted
        offline = [await store.hit_limit(JOIN_PLAYER, "ann", 0.0) for _ in range(20)]
        assert sum(h.allowed for h in offline) == JOIN_PLAYER.limit - 2
        assert not any(h.shared for h in offline)
    finally:
        await client.aclose()

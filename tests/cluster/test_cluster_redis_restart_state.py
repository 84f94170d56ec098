"""Parties and the proximity setting survive a restart of Redis (SPEC §4, §9).

Redis is not persisted: restarted, it is empty. The nodes write back what they know: their
players, the parties those players are in (members, leader, kind), open invitations from or to
them, and the proximity flag of each space they serve. A party spanning two nodes keeps
working, and a player joining afterwards sees proximity as the owner left it."""

from __future__ import annotations

import asyncio

import pytest

from support.cluster import Cluster, PrivateRedis, dev_join, until_received, wait_ready
from support.ids import space_id, unique
from support.jsclient import Bridge

pytestmark = pytest.mark.cluster

READY_AGAIN_WITHIN = 10.0
REBUILT_WITHIN = 3.0
"""A node writes its state back at its next heartbeat (every 2 s) after Redis is back."""


async def test_parties_and_proximity_are_rebuilt_after_redis_restarts_empty(
    bridge: Bridge, private_redis: PrivateRedis, cluster: Cluster
) -> None:
    a, b = await cluster(2, REDIS_URL=private_redis.url(0))
    space = space_id()
    owner = await dev_join(bridge, a, space, "Owner", role="OWNER")
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    carol = await dev_join(bridge, b, space, "Carol")
    await alice.wait_for("player:joined", lambda p: p["id"] == carol.player_id)

    await alice.emit("party:create", {"name": "Crew"})
    party_id = (await alice.wait_for("party:joined"))["partyId"]
    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    await bob.wait_for("party:invited")
    await bob.emit("party:accept", {"partyId": party_id})
    await bob.wait_for("party:joined", lambda p: p["partyId"] == party_id)
    await alice.wait_for("party:member_joined")
    await alice.emit("party:invite", {"partyId": party_id, "targetId": carol.player_id})
    await carol.wait_for("party:invited")
    zone = unique("zone")
    for client in (alice, bob):
        await client.emit("party:join", {"partyId": zone, "partyName": "Stage"})
        await client.wait_for("party:joined", lambda p: p["partyId"] == zone)
    await owner.emit("proximity:set", {"enabled": True})
    await bob.wait_for("proximity:changed", lambda p: p["enabled"] is True)

    await asyncio.to_thread(private_redis.kill)
    await asyncio.to_thread(private_redis.start)
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    await asyncio.sleep(REBUILT_WITHIN)

    await alice.emit("party:message", {"partyId": party_id, "content": "still a crew"})
    got = await bob.wait_for("party:message", lambda m: m["content"] == "still a crew")
    assert got["partyId"] == party_id
    await bob.emit("party:message", {"partyId": party_id, "content": "yes we are"})
    assert (await alice.wait_for("party:message", lambda m: m["content"] == "yes we are"))[
        "partyId"
    ] == party_id
    await bob.emit("party:message", {"partyId": zone, "content": "on stage"})
    assert (await alice.wait_for("party:message", lambda m: m["content"] == "on stage"))[
        "partyId"
    ] == zone
    assert not alice.received("party:error") and not bob.received("party:error")

    await carol.emit("party:accept", {"partyId": party_id})
    joined = await carol.wait_for("party:joined", lambda p: p["partyId"] == party_id)
    assert [m["id"] for m in joined["members"]] == [
        alice.player_id,
        bob.player_id,
        carol.player_id,
    ]
    assert joined["leaderId"] == alice.player_id

    await alice.emit("party:leave", {"partyId": party_id})
    left = await until_received(
        bob, "party:member_left", lambda m: m["partyId"] == party_id, timeout=5
    )
    assert left["leaderId"] == bob.player_id

    dan = await dev_join(bridge, b, space, "Dan")
    assert dan.received("room:joined")[-1]["proximity"] is True
    assert (await dan.wait_for("proximity:status"))["enabled"] is True
    eve = await dev_join(bridge, a, space, "Eve")
    assert eve.received("room:joined")[-1]["proximity"] is True

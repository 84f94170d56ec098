"""What two running nodes write to Redis is what :mod:`spacesync.state.keys` says they write.

Players on two nodes join a space, move, chat, react, form a party, and one leaves within the
EXIT grace period; then every key of the database (``SCAN``) and every pub/sub channel is read
back and must match a row of the layout table, with that row's Redis type and expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from spacesync.state import keys
from support.cluster import CLUSTER_REDIS_URL, Cluster, guest_join
from support.ids import space_id
from support.jsclient import Bridge
from support.standins import AppStandIn

pytestmark = pytest.mark.cluster

GRACE = 60.0
"""Long enough that the held EXIT is still in Redis when the keys are read."""
SETTLE = 0.5


def snapshot() -> tuple[list[tuple[str, str, int]], list[str]]:
    """Every key of the database as ``(name, type, ms to live)``, and every channel."""
    client = redis.Redis.from_url(CLUSTER_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        found = []
        for raw in client.scan_iter(match="*", count=1000):
            name = raw.decode()
            kind = client.type(raw).decode()
            found.append((name, kind, int(client.pttl(raw))))
        channels = [c.decode() for c in client.pubsub_channels("*")]
    finally:
        client.close()
    return found, channels


def undescribed(found: list[tuple[str, str, int]]) -> list[Any]:
    wrong = []
    for name, kind, ttl in found:
        rows = keys.described(name, kind)
        if not rows:
            wrong.append((name, kind, "not in the layout"))
            continue
        fits = [
            r
            for r in rows
            if r.expires == "maybe"
            or (r.expires == "never" and ttl == -1)
            or (r.expires == "always" and ttl > 0)
        ]
        if not fits:
            wrong.append((name, kind, f"ttl {ttl} ms, layout says {rows[0].expires}"))
    return wrong


async def test_every_key_and_channel_in_redis_is_in_the_layout(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    a, b = await cluster(2, NODE_ENV=None, EXIT_GRACE_SECONDS=str(GRACE))
    space = space_id()
    ann = await guest_join(bridge, a, app_standin, space, "Ann")
    bob = await guest_join(bridge, b, app_standin, space, "Bob")
    cy = await guest_join(bridge, b, app_standin, space, "Cy")
    await ann.wait_for("player:joined", lambda p: p["id"] == cy.player_id)

    await ann.emit("player:move", {"x": 40, "y": 50, "direction": "left", "isMoving": True})
    await bob.wait_for("player:moved", lambda p: p["id"] == ann.player_id)
    await ann.emit("chat:message", {"content": "where the keys are"})
    line = await bob.wait_for("chat:message", lambda m: m.get("content") == "where the keys are")
    await bob.emit("reaction:toggle", {"messageId": line["id"], "type": "thumbsup"})
    await ann.wait_for("reaction:updated")

    await ann.emit("party:create", {"name": "Layout"})
    party_id = (await ann.wait_for("party:joined"))["partyId"]
    await ann.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    await bob.wait_for("party:invited")
    await bob.emit("party:accept", {"partyId": party_id})
    await bob.wait_for("party:joined", lambda p: p["partyId"] == party_id)

    await cy.emit("leave:space")
    await ann.wait_for("player:left", lambda p: p["id"] == cy.player_id)
    await asyncio.sleep(SETTLE)  # positions and the held EXIT reach Redis

    found, channels = snapshot()
    assert undescribed(found) == []
    assert [c for c in channels if not keys.described(c, "channel")] == []

    seen = {row.pattern for name, kind, _ in found for row in keys.described(name, kind)}
    seen |= {row.pattern for c in channels for row in keys.described(c, "channel")}
    expected = {
        "spaces",
        "space:<space>:players",
        "space:<space>:pos",
        "space:<space>:names",
        "space:<space>:parties",
        "space:<space>:reactions",
        "party-counts",
        "chat:<player>",
        "limit:<rule>:<key>:<win>",
        "nodes",
        "node-index",
        "node:<node>:players",
        "node:<node>",
        "held:<exitKey>",
        "stay:<space>:<p>:<digest>",
        "ch:space:<space>",
        "ch:node:<node>",
    }
    assert expected <= seen, sorted(expected - seen)
    # The builders name what the nodes wrote.
    names = {name for name, _, _ in found}
    assert {keys.spaces(), keys.space_players(space), keys.space_positions(space)} <= names
    assert keys.space_channel(space) in channels

"""Connection state recovery across nodes (SPEC §9): a player on node A whose link drops and
whose client reconnects to A within ``RECOVERY_WINDOW`` gets what a player on node B said
meanwhile, and where that player is now; the player on B never sees it leave."""

from __future__ import annotations

import asyncio
import time

import pytest

from support.cluster import Cluster, dev_join, sees_join
from support.ids import space_id, unique
from support.jsclient import Bridge

pytestmark = pytest.mark.cluster

RECONNECT_DELAY_MS = 2000
TIMEOUT = 10.0
SETTLE = 1.0


async def test_a_player_resumes_on_its_node_with_what_the_other_node_said(
    bridge: Bridge, cluster: Cluster
) -> None:
    a, b = await cluster(2, RECOVERY_WINDOW="30")
    space = space_id()
    ann = bridge.client(
        a.url,
        reconnection=True,
        reconnectionDelay=RECONNECT_DELAY_MS,
        reconnectionDelayMax=RECONNECT_DELAY_MS,
        randomizationFactor=0,
    )
    await ann.connect(TIMEOUT)
    await ann.join(space, "Ann", session_token=unique("dev-token"), playerId=unique("ann"))
    bob = await dev_join(bridge, b, space, "Bob")
    await sees_join([ann], bob)
    first_sid = ann.sid
    bob_mark = len(bob.log())

    await ann.drop_transport()
    missed = [f"from node B {i} {unique('m')}" for i in range(3)]
    await bob.emit("player:move", {"x": 222, "y": 111, "direction": "up", "isMoving": False})
    for line in missed:
        await bob.emit("chat:message", {"content": line})
    for line in missed:
        await bob.wait_for("chat:message", lambda m, t=line: m["content"] == t, TIMEOUT)
    bob_done = time.monotonic()

    assert await ann.wait_reconnect(20.0) == first_sid
    assert ann.recovered is True
    resumed = [m for m in ann.log() if m.get("type") == "connect"][-1]
    assert resumed["at"] > bob_done, "Ann's client came back before Bob had said anything"

    for line in missed:
        await ann.wait_for("chat:message", lambda m, t=line: m["content"] == t, TIMEOUT)
    moved = await ann.wait_for("player:moved", lambda p: p["id"] == bob.player_id, TIMEOUT)
    assert (moved["x"], moved["y"]) == (222, 111), moved
    await asyncio.sleep(SETTLE)
    got = [m["content"] for m in ann.received("chat:message") if m["content"] in missed]
    assert got == missed, "missed messages not replayed once, in order"

    after = f"back on node A {unique('m')}"
    await ann.emit("chat:message", {"content": after})
    await bob.wait_for("chat:message", lambda m: m["content"] == after, TIMEOUT)
    await asyncio.sleep(SETTLE)
    told = [
        (m["event"], m["args"])
        for m in bob.log()[bob_mark:]
        if m.get("type") == "event"
        and (
            (m["event"] in ("player:left", "player:joined") and m["args"][0]["id"] == ann.player_id)
            or (m["event"] == "chat:system" and str(m["args"][0]["content"]).startswith("Ann "))
        )
    ]
    assert told == [], "Bob was told Ann left or came back"

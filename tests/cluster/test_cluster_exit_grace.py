"""The EXIT grace period across nodes (SPEC §7, §9): a session that leaves through node A and
joins the same space again through node B within `EXIT_GRACE_SECONDS` continues its stay: A's
held EXIT is never sent, and the one EXIT sent when the player leaves for good (from B) covers
the whole stay. Production mode, with guest tokens the app stand-in accepts."""

from __future__ import annotations

import asyncio
import time

import pytest

from support.cluster import Cluster, exit_calls, guest_join, metrics, wait_exits
from support.ids import space_id, unique
from support.jsclient import Bridge
from support.standins import AppStandIn

pytestmark = pytest.mark.cluster

GRACE = 2.0
SETTLE = 1.5


async def test_rejoin_on_another_node_continues_the_stay(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    a, b = await cluster(2, NODE_ENV=None, EXIT_GRACE_SECONDS=str(GRACE))
    space, token = space_id(), unique("guest")
    started = time.monotonic()
    on_a = await guest_join(bridge, a, app_standin, space, "Mover", token=token)
    await asyncio.sleep(1.0)
    await on_a.emit("leave:space")
    await on_a.disconnect()
    await asyncio.sleep(0.3)
    assert (await metrics(a))["exits"]["held"] == 1

    on_b = await guest_join(bridge, b, app_standin, space, "Mover", token=token)
    await asyncio.sleep(GRACE + SETTLE)
    assert exit_calls(app_standin, space, token) == [], "EXIT sent although the player is back"
    assert (await metrics(a))["exits"]["held"] == 0

    await on_b.emit("leave:space")
    stay = time.monotonic() - started
    found = await wait_exits(app_standin, space, [token], timeout=GRACE + 5)
    await asyncio.sleep(SETTLE)
    calls = exit_calls(app_standin, space, token)
    assert len(calls) == 1, [c.body for c in calls]
    assert found[token][0] is calls[0]
    assert abs(calls[0].body["payload"]["durationSeconds"] - stay) <= 1.5, (calls[0].body, stay)
    for node in (a, b):
        assert (await metrics(node))["exits"]["held"] == 0


async def test_leave_for_good_through_one_node_gives_one_exit(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    """No rejoin: the node that held the EXIT sends it once, after the grace period; a rejoin
    after that starts a new stay."""
    a, b = await cluster(2, NODE_ENV=None, EXIT_GRACE_SECONDS=str(GRACE))
    space, token = space_id(), unique("guest")
    on_a = await guest_join(bridge, a, app_standin, space, "Goner", token=token)
    await on_a.emit("leave:space")
    left = time.monotonic()
    await asyncio.sleep(GRACE * 0.6)
    assert exit_calls(app_standin, space, token) == []
    await wait_exits(app_standin, space, [token], timeout=GRACE + 5)
    assert time.monotonic() - left >= GRACE * 0.8
    await asyncio.sleep(SETTLE)
    assert len(exit_calls(app_standin, space, token)) == 1

    later = await guest_join(bridge, b, app_standin, space, "Goner", token=token)
    await later.emit("leave:space")
    await asyncio.sleep(GRACE + SETTLE + 1)
    calls = exit_calls(app_standin, space, token)
    assert len(calls) == 2, [c.body for c in calls]
    assert calls[0].headers["idempotency-key"] != calls[1].headers["idempotency-key"]

"""EXITs of players who leave just before a cluster node is stopped (SPEC §7, §9, §12).

A departure in cluster mode awaits Redis several times (the player's entry, parties, the
notices) before its EXIT reaches the outbox. When SIGTERM arrives in between, the node must wait
for those departures and keep the outbox open until they are written: otherwise the EXIT is
neither delivered nor on disk, and no restart can send it. Production mode, guest sessions,
the app stand-in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from support.cluster import Cluster, exit_calls, guest_join, wait_exits
from support.ids import space_id, unique
from support.jsclient import Bridge
from support.standins import AppStandIn

pytestmark = pytest.mark.cluster

PLAYERS = 20
SETTLE = 1.5


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1])
async def test_exits_of_players_leaving_right_before_sigterm_are_kept(
    bridge: Bridge,
    cluster: Cluster,
    app_standin: AppStandIn,
    tmp_path: Path,
    delay: float,
) -> None:
    """20 guests on node A disconnect at once and A gets SIGTERM ``delay`` seconds later. It
    exits 0, never writes to a closed outbox, and once it has been started again on the same
    outbox file every guest has exactly one EXIT, each with its own key."""
    outbox = str(tmp_path / "node-a-exits.sqlite3")
    a = await cluster.add("node-a", NODE_ENV=None, EXIT_OUTBOX_PATH=outbox)
    await cluster.add("node-b", NODE_ENV=None)
    space = space_id()
    tokens = [unique("guest") for _ in range(PLAYERS)]
    guests = [
        await guest_join(bridge, a, app_standin, space, f"Guest{i}", token=token)
        for i, token in enumerate(tokens)
    ]

    await asyncio.gather(*(guest.disconnect() for guest in guests))
    await asyncio.sleep(delay)
    started = time.monotonic()
    code = await a.astop()
    took = time.monotonic() - started
    assert code == 0, a.output()[-4000:]
    assert took < 10.0, took
    closed = a.find_logs(predicate=lambda e: "closed database" in str(e))
    assert not closed, closed[:3]

    delivered_before_restart = {t for t in tokens if exit_calls(app_standin, space, t)}
    await cluster.restart(a)
    await wait_exits(app_standin, space, tokens, timeout=10.0)
    await asyncio.sleep(SETTLE)
    counts = {t: len(exit_calls(app_standin, space, t)) for t in tokens}
    assert all(n == 1 for n in counts.values()), counts
    keys = [exit_calls(app_standin, space, t)[0].headers["idempotency-key"] for t in tokens]
    assert len(set(keys)) == PLAYERS
    print(
        f"delay {delay * 1000:.0f} ms: SIGTERM to exit {took:.2f} s, "
        f"{len(delivered_before_restart)} EXITs delivered before the restart, "
        f"{PLAYERS - len(delivered_before_restart)} after it"
    )

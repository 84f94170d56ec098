"""A stay ends only when the player has really gone (SPEC §7): the EXIT of a departure is held
for `EXIT_GRACE_SECONDS`; the same session joining the same space again within that time cancels
it, and the EXIT finally sent covers the whole stay. Held EXITs are in the durable outbox from
the moment the player leaves: a `kill -9` during the grace period loses none, a restart sends
none twice, and SIGTERM sends them before the node exits."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from support.exits import calls_for, wait_until
from support.ids import space_id, unique
from support.jsclient import Bridge
from support.server import ServerProcess
from support.standins import AppStandIn

ServerFactory = Callable[..., ServerProcess]

GRACE = 2.0
# After the EXIT arrived, keep watching this long for a second (duplicate) one.
SETTLE = 1.0


async def metrics(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_churn_sends_one_exit_covering_the_whole_stay(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """20 join/leave cycles of one session (page reloads, a flaky network), each rejoin within
    the 2 s grace period: no EXIT during the churn, exactly one after the player finally left,
    sent about a grace period later, whose durationSeconds counts from the first join."""
    server = start_server(NODE_ENV=None, EXIT_GRACE_SECONDS=str(GRACE))
    space, token = space_id(), unique("guest")
    app_standin.accept(token, unique("participant"), "Churner")
    started = time.monotonic()
    for cycle in range(20):
        client = await bridge.connected(server.url, transports=["websocket"])
        await client.join(space, "Churner", session_token=token)
        await asyncio.sleep(0.2)  # each visit lasts a while, so the whole stay is several seconds
        if cycle % 2:
            await client.emit("leave:space")
            await asyncio.sleep(0.05)
        await client.disconnect()
        assert calls_for(app_standin, token) == [], f"EXIT sent during the churn (cycle {cycle})"
    left = time.monotonic()
    stay = left - started
    assert stay >= 3.0, stay

    await asyncio.sleep(GRACE * 0.6)
    assert calls_for(app_standin, token) == [], "EXIT sent before the grace period was over"
    await wait_until(lambda: bool(calls_for(app_standin, token)), GRACE + 3, "the final EXIT")
    await asyncio.sleep(SETTLE)
    calls = calls_for(app_standin, token)
    assert len(calls) == 1, [c.body for c in calls]
    payload = calls[0].body["payload"]
    assert abs(payload["durationSeconds"] - stay) <= 1.5, (payload, stay)
    assert calls[0].headers.get("idempotency-key")
    assert (await metrics(server))["exits"]["held"] == 0


async def test_player_who_leaves_for_good_gets_one_exit_after_the_grace_period(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """The EXIT is held (`/metrics` `exits.held` 1, nothing sent) for the grace period, then sent
    once; another session of the same player does not cancel it."""
    server = start_server(NODE_ENV=None, EXIT_GRACE_SECONDS=str(GRACE))
    space, token, other = space_id(), unique("guest"), unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Leaver")
    app_standin.accept(other, participant, "Leaver")
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, "Leaver", session_token=token)
    await client.emit("leave:space")
    left = time.monotonic()
    await wait_until(lambda: server.find_logs(code="I2002") != [], 5, "the leave")
    assert (await metrics(server))["exits"]["held"] == 1
    # Another session of the same player is another stay: the held EXIT stands.
    again = await bridge.connected(server.url, transports=["websocket"])
    await again.join(space, "Leaver", session_token=other)

    await wait_until(lambda: bool(calls_for(app_standin, token)), GRACE + 3, "the EXIT")
    took = time.monotonic() - left
    assert GRACE * 0.8 <= took <= GRACE + 2.5, took
    await asyncio.sleep(SETTLE)
    assert len(calls_for(app_standin, token)) == 1
    assert calls_for(app_standin, token)[0].body["payload"]["reason"] == "leave"
    exits = (await metrics(server))["exits"]
    assert exits["held"] == 0 and exits["delivered"] == 1, exits


def outbox_rows(path: str) -> list[tuple[str, float]]:
    db = sqlite3.connect(path)
    try:
        return [(str(k), float(d)) for k, d in db.execute("SELECT key, due_at FROM exits")]
    finally:
        db.close()


async def test_held_exit_survives_kill_9_and_is_sent_once(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, tmp_path: Path
) -> None:
    """A node killed during the grace period has the held EXIT on disk (with its due time); the
    next start on the same outbox sends it once, with the key it was given at the leave."""
    outbox = str(tmp_path / "exits.sqlite3")
    server = start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox, EXIT_GRACE_SECONDS="3")
    space, token = space_id(), unique("guest")
    app_standin.accept(token, unique("participant"), "Crasher")
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, "Crasher", session_token=token)
    await client.emit("leave:space")
    await wait_until(lambda: server.find_logs(code="I2002") != [], 5, "the leave")
    server.send_signal(signal.SIGKILL)
    server.kill()
    assert calls_for(app_standin, token) == []
    rows = outbox_rows(outbox)
    assert len(rows) == 1 and rows[0][1] > 0, rows

    again = start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox, EXIT_GRACE_SECONDS="3")
    await wait_until(lambda: bool(calls_for(app_standin, token)), 8, "the EXIT after restart")
    await asyncio.sleep(SETTLE)
    calls = calls_for(app_standin, token)
    assert len(calls) == 1, [c.body for c in calls]
    assert calls[0].headers["idempotency-key"] == rows[0][0]
    assert calls[0].body["spaceId"] == space
    exits = (await metrics(again))["exits"]
    assert exits["held"] == 0 and exits["owed"] == 0, exits


async def test_rejoin_after_a_restart_continues_the_stay(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, tmp_path: Path
) -> None:
    """The node is killed while the player's EXIT is held; the player is back (on the restarted
    node) within the grace period: no EXIT for the break, and one, for the whole stay, when the
    player leaves for good."""
    outbox = str(tmp_path / "exits.sqlite3")
    env = {"NODE_ENV": None, "EXIT_OUTBOX_PATH": outbox, "EXIT_GRACE_SECONDS": "6"}
    server = start_server(**env)
    space, token = space_id(), unique("guest")
    app_standin.accept(token, unique("participant"), "Returner")
    started = time.monotonic()
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, "Returner", session_token=token)
    await asyncio.sleep(1.0)
    await client.emit("leave:space")
    await wait_until(lambda: server.find_logs(code="I2002") != [], 5, "the leave")
    server.send_signal(signal.SIGKILL)
    server.kill()

    again = start_server(**env)
    back = await bridge.connected(again.url, transports=["websocket"])
    await back.join(space, "Returner", session_token=token)
    await asyncio.sleep(6.5)
    assert calls_for(app_standin, token) == [], "EXIT sent although the player came back"
    await back.emit("leave:space")
    stay = time.monotonic() - started
    await wait_until(lambda: bool(calls_for(app_standin, token)), 10, "the final EXIT")
    await asyncio.sleep(SETTLE)
    calls = calls_for(app_standin, token)
    assert len(calls) == 1, [c.body for c in calls]
    assert abs(calls[0].body["payload"]["durationSeconds"] - stay) <= 1.5, (calls[0].body, stay)


async def test_sigterm_sends_held_exits_once(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, tmp_path: Path
) -> None:
    """A node stopped during the grace period sends the held EXIT before it exits (its players
    are gone from it), in time; its next start sends nothing more."""
    outbox = str(tmp_path / "exits.sqlite3")
    env = {"NODE_ENV": None, "EXIT_OUTBOX_PATH": outbox, "EXIT_GRACE_SECONDS": "30"}
    server = start_server(**env)
    space, token = space_id(), unique("guest")
    app_standin.accept(token, unique("participant"), "Stopper")
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, "Stopper", session_token=token)
    await client.emit("leave:space")
    await wait_until(lambda: server.find_logs(code="I2002") != [], 5, "the leave")
    assert calls_for(app_standin, token) == []
    stopping = time.monotonic()
    assert await server.astop(timeout=12) == 0
    assert time.monotonic() - stopping < 10.5
    calls = calls_for(app_standin, token)
    assert len(calls) == 1, [c.body for c in calls]
    assert outbox_rows(outbox) == []

    start_server(**env)
    await asyncio.sleep(SETTLE)
    assert len(calls_for(app_standin, token)) == 1

"""EXITs are never lost (SPEC §7, §12): the outbox on disk (SQLite, `EXIT_OUTBOX_PATH`) keeps
every EXIT the app has not acknowledged, across a restart or a `kill -9`, and the next start of
the node sends them with the same `Idempotency-Key`."""

from __future__ import annotations

import asyncio
import signal
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


async def metrics(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def leave_as_guest(
    bridge: Bridge, server: ServerProcess, app: AppStandIn, space: str, token: str
) -> None:
    app.accept(token, unique("participant"), "Leaver")
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, "Leaver", session_token=token)
    await client.emit("leave:space")


async def test_exit_owed_at_shutdown_is_sent_by_the_next_start(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, tmp_path: Path
) -> None:
    """The app is down when the node stops: the EXIT stays on disk (a warning says so, the node
    still exits 0 in time), and the node's next start delivers it, once, same key."""
    outbox = str(tmp_path / "exits.sqlite3")
    server = start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox)
    space, token = space_id(), unique("guest")
    app_standin.event_status = 503
    await leave_as_guest(bridge, server, app_standin, space, token)
    await wait_until(lambda: bool(calls_for(app_standin, token)), 5, "the first attempt")
    first_key = calls_for(app_standin, token)[0].headers["idempotency-key"]
    assert (await metrics(server))["exits"]["owed"] == 1

    assert await server.astop(timeout=12) == 0
    kept = server.find_logs(code="E4001", level="warn")
    assert any("outbox" in entry["message"] for entry in kept), server.output()[-2000:]

    app_standin.event_status = 200
    attempts_before = len(calls_for(app_standin, token))
    again = start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox)
    await wait_until(
        lambda: len(calls_for(app_standin, token)) > attempts_before, 5, "the EXIT after restart"
    )
    await asyncio.sleep(0.5)
    delivered = calls_for(app_standin, token)[attempts_before:]
    assert len(delivered) == 1, [c.body for c in delivered]
    assert delivered[0].headers["idempotency-key"] == first_key
    assert delivered[0].body["payload"]["reason"] == "leave"
    assert again.find_logs(code="I4002")
    assert (await metrics(again))["exits"]["owed"] == 0


async def test_exit_survives_kill_9(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, tmp_path: Path
) -> None:
    """A node killed without warning while the app is failing loses no EXIT."""
    outbox = str(tmp_path / "exits.sqlite3")
    server = start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox)
    space = space_id()
    tokens = [unique("guest") for _ in range(3)]
    app_standin.event_status = 500
    for token in tokens:
        await leave_as_guest(bridge, server, app_standin, space, token)
    await wait_until(lambda: all(calls_for(app_standin, t) for t in tokens), 5, "first attempts")
    server.send_signal(signal.SIGKILL)
    server.kill()

    app_standin.event_status = 200
    seen = {t: len(calls_for(app_standin, t)) for t in tokens}
    start_server(NODE_ENV=None, EXIT_OUTBOX_PATH=outbox)
    await wait_until(
        lambda: all(len(calls_for(app_standin, t)) > seen[t] for t in tokens),
        5,
        "every EXIT after the restart",
    )
    await asyncio.sleep(0.5)
    for token in tokens:
        after = calls_for(app_standin, token)[seen[token] :]
        assert len(after) == 1, (token, [c.body for c in after])
        assert after[0].body["spaceId"] == space


async def test_metrics_show_the_backlog_until_the_app_recovers(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """`/metrics` `exits.owed` counts EXITs not yet acknowledged; it falls to 0 once the app
    answers again (retries with backoff), and the outbox reports itself durable."""
    server = start_server(NODE_ENV=None)
    space = space_id()
    app_standin.event_status = 500
    tokens = [unique("guest") for _ in range(3)]
    for token in tokens:
        await leave_as_guest(bridge, server, app_standin, space, token)
    await wait_until(lambda: all(calls_for(app_standin, t) for t in tokens), 5, "attempts")
    exits = (await metrics(server))["exits"]
    assert exits["owed"] == 3 and exits["durable"] is True, exits
    app_standin.event_status = 200
    deadline = time.monotonic() + 10
    while (await metrics(server))["exits"]["owed"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    exits = (await metrics(server))["exits"]
    assert exits["owed"] == 0 and exits["delivered"] == 3, exits


def test_two_nodes_cannot_share_one_outbox(start_server: ServerFactory, tmp_path: Path) -> None:
    """Two processes on one outbox would send the same EXITs twice: the second refuses to start
    with one clear JSON line and exit code 2."""
    outbox = str(tmp_path / "shared.sqlite3")
    start_server(EXIT_OUTBOX_PATH=outbox)
    second = ServerProcess({"EXIT_OUTBOX_PATH": outbox})
    assert second.run_to_exit() == 2
    errors = second.find_logs(level="error")
    assert len(errors) == 1 and "in use" in errors[0]["message"], second.output()
    second.assert_all_lines_json()


def test_unusable_outbox_path_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = ServerProcess({"EXIT_OUTBOX_PATH": str(blocker / "exits.sqlite3")})
    assert server.run_to_exit() == 2
    errors = server.find_logs(level="error")
    assert len(errors) == 1 and "EXIT outbox" in errors[0]["message"], server.output()
    assert "Traceback" not in server.output()

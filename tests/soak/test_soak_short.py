"""A short soak: a minute of churn must leave no task, descriptor or socket behind.

Runs ``bench/soak.py`` (the bounded soak tool; its long run gives the real memory figures) for
about 45 s with 80 virtual players against a development-mode server started here, and checks:

- SPEC §2.1 / §4: players join with ``dev-`` tokens, move, jump, chat, whisper, use party zones
  and invite parties, then ``leave:space`` and rejoin, switch spaces directly, disconnect
  cleanly, drop the TCP connection abruptly, or go silent until the server times them out
  (SPEC §1 ping timeout; the player then comes back, so SPEC §2.3 closes the silent socket);
- SPEC §6: the tool keeps under the chat limit, so no ``chat:error`` comes back; nothing it
  sends is bad input (no ``error`` events at all);
- SPEC §10: ``/metrics`` after the clients have gone shows ``connections.total`` 0, asyncio
  tasks and open files within 5 of the figures before the clients came (no leaked tasks, sockets
  or descriptors), and ``/health`` still answers ``ok``;
- SPEC §7: no EXIT is owed for ``dev-`` sessions (``exits.owed`` 0, and no app is needed);
- SPEC §11 / §12: every server output line is one JSON object, no error-level line was logged,
  and SIGTERM still stops the server with exit code 0.

RSS is only bounded generously here (a short run on a busy 2-core machine is mostly warm-up);
the flat-memory figure comes from ``bench/soak.py --clients 300 --duration 600``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
SOAK_TOOL = REPO / "bench" / "soak.py"

CLIENTS = 80
DURATION_S = 45
LEAK_MARGIN = 5
RSS_GROWTH_LIMIT_MB = 120.0  # generous: the strict figure is the long run's slope


@pytest.fixture
def soak_server() -> Iterator[ServerProcess]:
    server = ServerProcess(
        {
            "NODE_ENV": "development",
            "LOG_LEVEL": "warn",
            "APP_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: dev tokens only
            "EXIT_OUTBOX_PATH": ":memory:",
        }
    )
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.kill()


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return json.loads(response.read())


@pytest.mark.timeout(360)
def test_short_soak_leaves_no_tasks_descriptors_or_sockets(
    soak_server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(SOAK_TOOL),
        "--url",
        soak_server.url,
        "--clients",
        str(CLIENTS),
        "--duration",
        str(DURATION_S),
        "--sample",
        "3",
        "--settle",
        "8",
        "--ramp",
        "5",
        "--warmup",
        "10",
        "--min-stay",
        "3",
        "--max-stay",
        "12",
        "--leak-margin",
        str(LEAK_MARGIN),
        "--slope-threshold",
        "1000",  # not judged on a short run (see the module docstring)
        "--seed",
        "20261126",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.exists(), (
        f"the soak tool wrote no results (exit {done.returncode})\n"
        f"stderr:\n{done.stderr[-4000:]}\nserver:\n{soak_server.output()[-4000:]}"
    )
    summary = json.loads(out.read_text())
    report = "\n".join(
        [
            f"soak tool exit {done.returncode}",
            json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=1)[:6000],
            f"stderr:\n{done.stderr[-2000:]}",
        ]
    )

    # The load really happened: most players were connected at once, and they churned.
    counts = summary["counts"]
    assert summary["connections"]["underLoadMax"] >= CLIENTS * 0.8, report
    assert counts.get("joins", 0) >= CLIENTS, report
    for activity in ("leaves", "abrupt_disconnects", "moves", "chats", "jumps", "zone_joins"):
        assert counts.get(activity, 0) > 0, f"no {activity}\n{report}"
    assert counts.get("abrupt_disconnects", 0) + counts.get("clean_disconnects", 0) >= 10, report
    # The server neither refused nor dropped anyone, and nothing sent was bad input.
    assert counts.get("connect_failures", 0) == 0, report
    assert counts.get("join_timeouts", 0) == 0, report
    assert counts.get("server_closed", 0) == 0, report
    bad = {k: n for k, n in summary["errors"].items() if k.startswith(("error:", "chat:error"))}
    assert not bad, report
    sent = sum(counts.get(k, 0) for k in ("chats", "whispers", "party_messages", "party_invites"))
    assert counts.get("errors_received", 0) <= max(3, sent // 50), report

    # No leaks once every client has gone (SPEC §10 figures).
    checks = summary["verdicts"]["leakChecks"]
    assert checks["connections"], f"sockets left on the server\n{report}"
    assert checks["tasks"], f"asyncio tasks leaked\n{report}"
    assert checks["openFiles"], f"file descriptors leaked\n{report}"
    assert summary["verdicts"]["healthy"], report
    rss = summary["rssMB"]
    assert rss["max"] - rss["baseline"] < RSS_GROWTH_LIMIT_MB, report
    assert summary["tool"]["fdsEnd"] is None or summary["tool"]["fdsEnd"] < 64, report

    # The server is still healthy, holds nothing, and owes no EXIT for dev sessions (SPEC §7).
    assert get_json(f"{soak_server.url}/health")["status"] == "ok"
    metrics = get_json(f"{soak_server.url}/metrics")
    assert metrics["connections"]["total"] == 0, metrics["connections"]
    assert metrics["connections"]["roomCount"] == 0, metrics["connections"]
    assert metrics["parties"]["count"] == 0, metrics["parties"]
    assert metrics["exits"]["owed"] == 0, metrics["exits"]
    assert done.returncode == 0, report

    # SPEC §11 / §12: clean JSON logs, nothing at error level, and a clean stop.
    assert soak_server.stop() == 0
    soak_server.assert_all_lines_json()
    errors = soak_server.find_logs(level="error")
    assert not errors, json.dumps(errors[:5], indent=1)

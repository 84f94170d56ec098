"""EXIT drill: the app goes down, players leave, the node is killed, the node comes back.

A stand-in for the app (a loopback HTTP server in this process) accepts every guest session and
records the EXIT calls it receives. The drill:

1. starts spacesync in production mode with a fresh outbox file;
2. joins ``--players`` guests (python-socketio clients) to a few spaces;
3. makes the app answer 503 to every EXIT, and lets every guest leave (half with
   ``leave:space``, half by disconnecting);
4. kills the node with SIGKILL while every EXIT is owed;
5. brings the app back, starts the node again on the same outbox, and waits;
6. counts: EXITs owed, EXITs delivered after the restart, sessions with exactly one delivered
   EXIT, duplicates (same Idempotency-Key delivered twice), sessions with none.

    .venv/bin/python bench/exit_drill.py --players 200

Prints a Markdown table and a JSON line; exits non-zero unless every EXIT arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import socketio
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class App:
    """The app stand-in: accepts every session; EXITs answered with ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.delivered: list[tuple[str, str]] = []  # (sessionToken, Idempotency-Key), 2xx only
        self.refused = 0
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/guest/verify", self.verify)
        app.router.add_post("/api/guest/event", self.event)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def verify(self, request: web.Request) -> web.Response:
        body = await request.json()
        token = str(body.get("sessionToken"))
        return web.json_response(
            {"valid": True, "participantId": f"p-{token}", "nickname": token[-12:]}
        )

    async def event(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.status >= 300:
            self.refused += 1
            return web.json_response({"error": "down"}, status=self.status)
        self.delivered.append(
            (str(body.get("sessionToken")), request.headers.get("Idempotency-Key", ""))
        )
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def start_node(port: int, app: App, outbox: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HOSTNAME": "drill",
        "APP_URL": f"http://127.0.0.1:{app.port}",
        "EXIT_OUTBOX_PATH": outbox,
        "LOG_LEVEL": "warn",
        "HANDSHAKES_PER_IP": "0",  # every drill client comes from 127.0.0.1
    }
    env.pop("NODE_ENV", None)
    env.pop("REDIS_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "spacesync"], env=env, stdout=out, stderr=out, cwd=ROOT
        )


async def wait_healthy(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("node did not start")


async def owed_on(port: int) -> int:
    async with httpx.AsyncClient(timeout=2) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    return int(response.json()["exits"]["owed"])


async def drill(players: int, spaces: int) -> dict[str, Any]:
    app = App()
    await app.start()
    work = Path(tempfile.mkdtemp(prefix="exit-drill-"))
    outbox = str(work / "exits.sqlite3")
    log = work / "node.log"
    port = free_port()
    node = start_node(port, app, outbox, log)
    await wait_healthy(port)
    url = f"http://127.0.0.1:{port}"
    tokens = [f"drill-{i:05d}-{os.urandom(3).hex()}" for i in range(players)]
    clients: list[socketio.AsyncClient] = []
    for i, token in enumerate(tokens):
        client = socketio.AsyncClient(reconnection=False)
        joined = asyncio.get_running_loop().create_future()
        client.on("room:joined", lambda data, f=joined: f.done() or f.set_result(data))
        await client.connect(url, transports=["websocket"])
        await client.emit(
            "join:space",
            {"spaceId": f"drill-{i % spaces}", "nickname": f"G{i}", "sessionToken": token},
        )
        await asyncio.wait_for(joined, 10)
        clients.append(client)

    app.status = 503
    for i, client in enumerate(clients):
        if i % 2 == 0:
            await client.emit("leave:space")
        await client.disconnect()
    deadline = time.monotonic() + 20
    owed = 0
    while time.monotonic() < deadline:
        owed = await owed_on(port)
        if owed >= players:
            break
        await asyncio.sleep(0.2)
    node.send_signal(signal.SIGKILL)
    node.wait()

    app.status = 200
    restarted = start_node(port, app, outbox, log)
    await wait_healthy(port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and await owed_on(port) > 0:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    left_owed = await owed_on(port)
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(15)
    await app.stop()

    per_token = Counter(token for token, _ in app.delivered)
    per_key = Counter(key for _, key in app.delivered)
    return {
        "players": players,
        "exits_owed_at_kill": owed,
        "refused_while_down": app.refused,
        "delivered_after_restart": len(app.delivered),
        "sessions_exactly_once": sum(1 for t in tokens if per_token[t] == 1),
        "sessions_missing": sum(1 for t in tokens if per_token[t] == 0),
        "duplicate_deliveries": sum(n - 1 for n in per_key.values() if n > 1),
        "owed_after_restart": left_owed,
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--spaces", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(drill(args.players, args.spaces))
    print("| figure | value |\n|---|---:|")
    for name, value in result.items():
        if name != "log":
            print(f"| {name.replace('_', ' ')} | {value} |")
    print(json.dumps(result))
    ok = (
        result["sessions_exactly_once"] == args.players
        and result["duplicate_deliveries"] == 0
        and result["owed_after_restart"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

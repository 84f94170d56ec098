"""Cluster mode (SPEC §9) building blocks: several server nodes sharing one Redis.

- ``Cluster``: starts nodes (``HOSTNAME`` node-a, node-b, ...; each on its own free port) wired to
  the app and Discord stand-ins and to ``REDIS_URL``; waits until each one answers
  ``GET /health/ready`` with 200; restarts a node under the same name and port; stops them all
  at teardown and checks that every output line was one JSON object.
- ``PrivateRedis``: a ``redis-server`` subprocess owned by one test, which the test may kill and
  start again on the same port (Redis outages).
- ``flush_cluster_db``: empties the Redis database the cluster tests use (db 9 of the machine's
  Redis), so that no test sees another's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from support.ids import unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess, free_port
from support.standins import AppStandIn, DiscordStandIn, RecordedRequest

# The machine's Redis, database 9: dedicated to these tests and flushed before each one.
CLUSTER_REDIS_URL = os.environ.get("SPACESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

NODE_NAMES = ("node-a", "node-b", "node-c", "node-d", "node-e")

# SPEC §9: a dead node is detected within 15 s.
DEAD_NODE_DEADLINE = 15.0
# How long a node may take to become ready (Redis connected, state synchronised).
READY_TIMEOUT = 10.0
# Positions reach Redis asynchronously; give them this long before a join reads them.
POSITION_SETTLE = 0.3


# -- Redis -----------------------------------------------------------------------------------


def redis_reachable(url: str = CLUSTER_REDIS_URL) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def flush_cluster_db(url: str = CLUSTER_REDIS_URL) -> None:
    """``FLUSHDB`` on the cluster tests' database (skips the test when Redis is missing)."""
    if not redis_reachable(url):
        pytest.skip(f"cluster tests need a Redis server at {url}")
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


class PrivateRedis:
    """A ``redis-server`` on a free loopback port, owned by one test (no persistence)."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server") or "redis-server"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="spacesync-redis-")
        self.log_path = Path(self._dir) / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 5.0) -> PrivateRedis:
        """Start (or start again, on the same port) and wait until it answers PING."""
        if self.running:
            raise RuntimeError("private redis-server is already running")
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._dir,
                ],
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
            if redis_reachable(self.url()):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the data is gone (nothing is persisted)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: Redis stops answering but keeps its connections and data (like a network
        black hole or a hung server)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``: Redis answers again, with its data intact."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE`` through the protocol, then wait for the process to end."""
        if not self.running:
            return
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=1, socket_timeout=2)
        with contextlib.suppress(redis.RedisError):
            client.shutdown(nosave=True)
        client.close()
        assert self.proc is not None
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no redis log)"

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class CuttableProxy:
    """A loopback TCP proxy to ``target`` that can be cut like a network link: ``cut()`` stops
    moving bytes in both directions (connections stay open, nothing is answered: a black
    hole), ``heal()`` moves them again. Used to cut one node off from Redis while the others
    keep it."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self._open.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        try:
            while not self._closed.is_set():
                self._open.wait()
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# -- HTTP ------------------------------------------------------------------------------------


async def get_json(node: ServerProcess, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """``GET path`` on ``node``; returns (status, parsed JSON body)."""
    async with httpx.AsyncClient(base_url=node.url, timeout=timeout) as http:
        response = await http.get(path)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body


async def http_status(node: ServerProcess, path: str, timeout: float = 2.0) -> int | None:
    """The status of ``GET path`` (``None`` when the node does not answer)."""
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=timeout) as http:
            return (await http.get(path)).status_code
    except httpx.HTTPError:
        return None


async def wait_status(
    node: ServerProcess, path: str, status: int, timeout: float = READY_TIMEOUT
) -> float:
    """Poll ``GET path`` until it answers ``status``; returns how long that took."""
    started = time.monotonic()
    deadline = started + timeout
    last: int | None = None
    while True:
        last = await http_status(node, path)
        if last == status:
            return time.monotonic() - started
        if not node.running:
            raise AssertionError(
                f"{node.env.get('HOSTNAME')} exited (code {node.poll()}) while waiting for "
                f"{path} to answer {status}\n{node.output()[-4000:]}"
            )
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{node.env.get('HOSTNAME')}: {path} answered {last}, not {status}, "
                f"within {timeout}s\n{node.output()[-4000:]}"
            )
        await asyncio.sleep(0.1)


async def wait_ready(node: ServerProcess, timeout: float = READY_TIMEOUT) -> float:
    """Wait until ``GET /health/ready`` answers 200 (SPEC §10: Redis reachable)."""
    return await wait_status(node, "/health/ready", 200, timeout)


async def presence_ids(node: ServerProcess, space: str) -> list[str]:
    """The player ids ``GET /presence/{space}`` lists on ``node``."""
    status, body = await get_json(node, f"/presence/{space}")
    assert status == 200, (status, body)
    return [user["id"] for user in body["onlineUsers"]]


async def metrics(node: ServerProcess) -> dict[str, Any]:
    status, body = await get_json(node, "/metrics")
    assert status == 200, (status, body)
    assert isinstance(body, dict), body
    return body


# -- nodes -----------------------------------------------------------------------------------


def node_name(node: ServerProcess) -> str:
    return str(node.env.get("HOSTNAME"))


def instance_name(node: ServerProcess) -> str:
    """SPEC §9 contract: a node's instance name is ``HOSTNAME:PORT``."""
    return f"{node_name(node)}:{node.port}"


class Cluster:
    """Starts cluster nodes wired to the stand-ins and one Redis, and stops them all at once.

    ``await cluster(3)`` starts node-a, node-b and node-c in development mode and returns them
    once each is ready; keywords are environment variables (``NODE_ENV=None`` for production,
    ``REDIS_URL=...`` for another Redis). ``await cluster.add("node-x")`` starts one more;
    ``await cluster.restart(node)`` starts a node again under the same name and port.
    """

    def __init__(
        self, app: AppStandIn, discord: DiscordStandIn, redis_url: str = CLUSTER_REDIS_URL
    ) -> None:
        self.app = app
        self.discord = discord
        self.redis_url = redis_url
        self.started: list[ServerProcess] = []
        self._requested: dict[int, dict[str, str | None]] = {}

    def _env(self, hostname: str, env: dict[str, str | None]) -> dict[str, str | None]:
        full: dict[str, str | None] = {
            "APP_URL": self.app.url,
            "DISCORD_WEBHOOK_URL": self.discord.url,
            "REDIS_URL": self.redis_url,
            "NODE_ENV": "development",
            "HOSTNAME": hostname,
        }
        full.update(env)
        return full

    def _next_names(self, count: int) -> list[str]:
        used = {node_name(n) for n in self.started}
        names = [name for name in NODE_NAMES if name not in used][:count]
        if len(names) < count:
            raise RuntimeError(f"no more than {len(NODE_NAMES)} node names")
        return names

    async def add(
        self,
        hostname: str,
        *,
        port: int | None = None,
        ready: bool = True,
        **env: str | None,
    ) -> ServerProcess:
        """Start one node named ``hostname``; wait for ``/health`` (and ``/health/ready``)."""
        requested = self._env(hostname, env)
        node = ServerProcess(requested, port=port)
        self._requested[id(node)] = requested
        self.started.append(node)
        await asyncio.to_thread(node.start, 15.0)
        if ready:
            await wait_ready(node)
        return node

    async def start(self, count: int = 2, *, ready: bool = True, **env: str | None) -> list[Any]:
        """Start ``count`` nodes at once (named after the ones already started)."""
        names = self._next_names(count)
        nodes = await asyncio.gather(*(self.add(name, ready=ready, **env) for name in names))
        return list(nodes)

    __call__ = start

    async def restart(self, node: ServerProcess, *, ready: bool = True) -> ServerProcess:
        """Start ``node`` (which must have exited) again with the same name, port and env."""
        assert not node.running, f"{node_name(node)} is still running"
        requested = dict(self._requested[id(node)])
        hostname = str(requested.pop("HOSTNAME"))
        return await self.add(hostname, port=node.port, ready=ready, **requested)

    def stop_all(self) -> None:
        problems: list[str] = []
        for node in self.started:
            if node.proc is None:
                continue
            try:
                node.stop()
            except AssertionError as exc:
                problems.append(f"{node_name(node)}: {exc}")
            try:
                node.assert_all_lines_json()
            except AssertionError as exc:
                problems.append(f"{node_name(node)}: {exc}")
        self.started.clear()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


async def kill_node(node: ServerProcess) -> float:
    """SIGKILL ``node``; returns the monotonic time of the kill."""
    killed_at = time.monotonic()
    await asyncio.to_thread(node.kill)
    return killed_at


def remaining(deadline: float, floor: float = 0.1) -> float:
    return max(floor, deadline - time.monotonic())


# -- players ---------------------------------------------------------------------------------


async def dev_join(
    bridge: Bridge,
    node: ServerProcess,
    space: str,
    nickname: str,
    *,
    transport: str = "websocket",
    player_id: str | None = None,
    **fields: Any,
) -> JsClient:
    """A client connected to ``node`` that joined ``space`` with a development token."""
    client = await bridge.connected(node.url, transports=[transport])
    await client.join(
        space,
        nickname,
        session_token=unique("dev-token"),
        playerId=player_id or unique(nickname.lower()),
        **fields,
    )
    return client


async def guest_join(
    bridge: Bridge,
    node: ServerProcess,
    app: AppStandIn,
    space: str,
    nickname: str,
    *,
    token: str | None = None,
    participant: str | None = None,
    transport: str = "websocket",
    **client_opts: Any,
) -> JsClient:
    """A client connected to ``node`` that joined ``space`` with a guest token the app accepts
    (such sessions owe an EXIT, SPEC §7)."""
    token = token or unique("guest")
    if token not in app.verify_answers:
        app.accept(token, participant or unique("participant"), nickname)
    client = bridge.client(node.url, transports=[transport], **client_opts)
    await client.connect()
    await client.join(space, nickname, session_token=token)
    return client


def exit_calls(app: AppStandIn, space: str, token: str | None = None) -> list[RecordedRequest]:
    """Guest EXIT calls (``POST /api/guest/event``) recorded for ``space`` (and ``token``)."""
    return [
        r
        for r in app.event_calls(space)
        if isinstance(r.body, dict)
        and r.body.get("eventType") == "EXIT"
        and (token is None or r.body.get("sessionToken") == token)
    ]


async def wait_exits(
    app: AppStandIn, space: str, tokens: Sequence[str], timeout: float
) -> dict[str, list[RecordedRequest]]:
    """Wait until every token in ``tokens`` has at least one EXIT; returns them by token."""
    deadline = time.monotonic() + timeout
    while True:
        found = {t: exit_calls(app, space, t) for t in tokens}
        if all(found.values()):
            return found
        if time.monotonic() >= deadline:
            seen = [(r.method, r.path, r.body) for r in app.snapshot()]
            missing = [t for t, calls in found.items() if not calls]
            raise AssertionError(f"no EXIT within {timeout}s for {missing}; app saw {seen!r}")
        await asyncio.sleep(0.05)


async def until_received(client: JsClient, event: str, predicate: Any, timeout: float = 5.0) -> Any:
    """Wait until ``client`` has received an ``event`` matching ``predicate`` (consumed or not,
    in any order); consumes nothing. Returns the payload."""
    deadline = time.monotonic() + timeout
    while True:
        for payload in client.received(event):
            with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
                if predicate(payload):
                    return payload
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{client.id}: no matching {event!r} within {timeout}s; "
                f"received: {client.received(event)!r}"
            )
        await asyncio.sleep(0.02)


async def sees_join(watchers: Sequence[JsClient], *newcomers: JsClient) -> None:
    """Every watcher received `player:joined` for each newcomer (in whatever order)."""
    for watcher in watchers:
        for newcomer in newcomers:
            await until_received(
                watcher, "player:joined", lambda p, n=newcomer: p["id"] == n.player_id
            )


def left_ids(client: JsClient) -> list[str]:
    """Ids of every ``player:left`` the client received."""
    return [m["id"] for m in client.received("player:left")]

"""What cross-node fan-out of position traffic costs: python-socketio's Redis manager vs ClusterBus.

Two "nodes" in two OS processes share one Redis. The *sender* plays the node that N moving
players are connected to (each player moves 60 times a second, spread evenly over time); the
*receiver* plays a node with players in the same space. Each process measures its own CPU
(``time.process_time()``) over the same window of wall time; the runner measures Redis's.

Variants (``--variants``):

- ``stock``: ``socketio.AsyncRedisManager`` the way it is normally used: one AsyncServer with its
  manager per node, all nodes on one channel, and for every move one
  ``mgr.emit("player:moved", payload, room=space)`` in a task of its own (python-socketio runs
  every event handler in a task). Every node receives every message, its own included.
- ``stock-tick``: the same manager, but the sender coalesces like spacesync does: every 50 ms
  one emit per mover that moved, with its newest position. Separates what the coalescing saves
  from what the bus's encoding saves.
- ``bus``: spacesync's ``ClusterBus``: one channel per space; once per 50 ms tick one
  ``publish_moves(space_id, bodies)`` with the newest position of each mover (each body
  orjson-encoded, as spacesync encodes them for its own players anyway). The receiver's bus
  hands every tick to a ``BusReceiver`` stub that only counts (``deliver_moves``).
- ``loop``: the sender's move loop alone (building each move's payload), no Redis: the part of
  the sender's CPU that is the harness, not the fan-out.

The receivers do not write to any client socket in any variant (the stock receiver's local emit
finds its room empty; the bus receiver's stub only counts), so the receiver figure is what it
costs a node to take the other node's traffic off Redis.

    python bench/busfanout.py                         # N = 50, 100, 200, 400; 4 s each
    python bench/busfanout.py --movers 50,100 --duration 2 --variants stock,bus

Uses Redis database 10 of ``--redis-url`` (FLUSHDB before each measurement). Pub/sub channels are
server-wide in Redis, so the channels get unique names. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from procstats import proc_cpu_seconds

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
TESTS_REDIS_DB = "9"  # the cluster tests' database (tests/support/cluster.py): never flushed here
TICK_SECONDS = 0.05
WARMUP_SECONDS = 1.0
# stock: emits in flight before the sender holds moves back. redis-py's asyncio pool allows 100
# connections by default; past that a publish fails ("Too many connections"), the manager drops
# its client and reconnects, and throughput collapses. Held below it, the stock manager is
# measured at its best; moves it cannot take in time show as "moves/s handled" < offered.
MAX_INFLIGHT = 64
SENDER_CORE = "0"
RECEIVER_CORE = "1"
VARIANTS = ("stock", "stock-tick", "bus", "loop")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[busfanout] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Child processes: one node each
# --------------------------------------------------------------------------------------------


async def read_start_at() -> float:
    """Announce readiness, then wait for the runner's start time (wall clock, on stdin)."""
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return float(line)


def wall_to_perf(wall: float) -> float:
    return wall - time.time() + time.perf_counter()


async def sleep_until(t_perf: float) -> None:
    await asyncio.sleep(max(0.0, t_perf - time.perf_counter()))


def make_stock_manager(args: argparse.Namespace, counting: bool) -> Any:
    import socketio

    base = socketio.AsyncRedisManager

    class CountingManager(base):  # type: ignore[misc, valid-type]
        """The stock manager, counting what it takes off the channel."""

        rx_msgs = 0
        rx_bytes = 0
        rx_positions = 0

        async def _listen(self):  # type: ignore[no-untyped-def]
            async for data in super()._listen():
                self.rx_msgs += 1
                self.rx_bytes += len(data)
                yield data

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            if message.get("host_id") != self.host_id:
                self.rx_positions += 1
            await super()._handle_emit(message)

    mgr = (CountingManager if counting else base)(args.redis_url, channel=args.channel)
    sio = socketio.AsyncServer(client_manager=mgr)
    # What AsyncServer does on its first connection: start the manager's listener task.
    sio.manager_initialized = True
    mgr.initialize()
    return mgr


def make_bus(args: argparse.Namespace, node: str) -> Any:
    import redis.asyncio as aioredis

    try:
        from spacesync.cluster import RedisBus as ClusterBus
        from spacesync.state.link import RedisLink
    except ImportError:  # versions before the bus took a link and one handler
        from spacesync.cluster import ClusterBus  # type: ignore[attr-defined,no-redef]

        RedisLink = None  # type: ignore[assignment,misc]

    class CountingBus(ClusterBus):
        tx_bytes = 0
        rx_bytes = 0

        def _publish(self, channel: str, message: bytes) -> None:
            self.tx_bytes += len(message)
            super()._publish(channel, message)

        async def _dispatch(self, data: bytes) -> None:
            self.rx_bytes += len(data)
            await super()._dispatch(data)

    class CountingReceiver:
        """A BusReceiver stub: counts what another node would write to its players."""

        ticks = 0
        positions = 0
        events = 0

        def deliver_moves(self, space_id: str, bodies: list[bytes], *_ids: Any) -> None:
            self.ticks += 1
            self.positions += len(bodies)

        def deliver_event(self, space_id: str, packet: bytes, players: list[str] | None) -> None:
            self.events += 1

        def holds(self, space_id: str, player_id: str) -> bool:
            return False

        async def evict(self, space_id: str, player_id: str, sid: str) -> None:
            return None

        async def signal(self, space_id: str, body: dict[str, Any]) -> None:
            return None

    client = aioredis.Redis.from_url(args.redis_url)
    if RedisLink is None:
        bus = CountingBus(client, node)
        bus.receiver = CountingReceiver()
    else:
        bus = CountingBus(client, node, RedisLink())
        bus.register(CountingReceiver())
    return bus


async def start_bus(bus: Any, space: str) -> None:
    await bus.watch(space)
    bus.start()
    deadline = time.monotonic() + 10
    while not bus.connected:
        if time.monotonic() > deadline:
            raise RuntimeError("ClusterBus did not connect to Redis within 10 s")
        await asyncio.sleep(0.01)


async def child_send(args: argparse.Namespace) -> dict[str, Any]:
    import orjson

    variant, n, space = args.variant, args.n, args.space
    loop = asyncio.get_running_loop()
    mgr = bus = None
    inflight: set[asyncio.Task[Any]] = set()
    done = [0]
    if variant in ("stock", "stock-tick"):
        mgr = make_stock_manager(args, counting=False)
    elif variant == "bus":
        bus = make_bus(args, f"busfanout-send-{os.getpid()}")
        await start_bus(bus, space)

    queue: deque[dict[str, Any]] = deque()

    def finished(task: asyncio.Task[Any]) -> None:
        inflight.discard(task)
        if not task.cancelled() and task.exception() is None:
            done[0] += 1
        pump()

    def pump() -> None:
        while queue and len(inflight) < MAX_INFLIGHT:
            payload = queue.popleft()
            task = loop.create_task(mgr.emit("player:moved", payload, room=space, namespace="/"))
            inflight.add(task)
            task.add_done_callback(finished)

    def emit(payload: dict[str, Any]) -> None:
        queue.append(payload)
        pump()

    pending: dict[int, dict[str, Any]] = {}
    # ClusterBus.publish_moves(space_id, bodies[, ids]): newer versions take the movers' ids too.
    with_ids = bus is not None and "ids" in inspect.signature(bus.publish_moves).parameters

    def flush() -> None:
        if not pending:
            return
        if variant == "bus":
            bodies = [orjson.dumps(p) for p in pending.values()]
            if with_ids:
                bus.publish_moves(space, bodies, [p["id"] for p in pending.values()])
            else:
                bus.publish_moves(space, bodies)
        else:
            for payload in pending.values():
                emit(payload)
        pending.clear()

    start = wall_to_perf(await read_start_at())
    t_move0 = start - WARMUP_SECONDS
    end = start + args.duration
    slot = 1.0 / (args.rate * n)
    ticking = variant in ("bus", "stock-tick")
    names = [f"p{i}" for i in range(n)]
    next_tick = t_move0 + TICK_SECONDS
    k = 0
    mark: dict[str, float] | None = None

    def counters() -> dict[str, float]:
        return {
            "t": time.perf_counter(),
            "cpu": time.process_time(),
            "moves": k,
            "emits": done[0],
            "published": bus.published if bus else 0,
            "tx_bytes": bus.tx_bytes if bus else 0,
        }

    await sleep_until(t_move0)
    while True:
        now = time.perf_counter()
        if mark is None and now >= start:
            mark = counters()
        if now >= end:
            break
        due = int((now - t_move0) / slot) + 1
        while k < due:
            seq, i = divmod(k, n)
            payload = {
                "id": names[i],
                "nickname": names[i],
                "x": seq,
                "y": 100 + i,
                "direction": "right",
                "isMoving": True,
            }
            if ticking:
                pending[i] = payload
            elif mgr is not None:
                emit(payload)
            k += 1
        if ticking and now >= next_tick:
            flush()
            while next_tick <= now:
                next_tick += TICK_SECONDS
        wake = t_move0 + k * slot
        if ticking:
            wake = min(wake, next_tick)
        await asyncio.sleep(max(0.001, wake - time.perf_counter()))
    last = counters()
    assert mark is not None
    wall = last["t"] - mark["t"]
    result = {
        "role": "send",
        "variant": variant,
        "n": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(last["cpu"] - mark["cpu"], 4),
        "moves": int(last["moves"] - mark["moves"]),
        "emits_completed": int(last["emits"] - mark["emits"]),
        "published": int(last["published"] - mark["published"]),
        "tx_bytes": int(last["tx_bytes"] - mark["tx_bytes"]),
        "backlog_at_end": len(queue) + len(inflight),
    }
    # Let what is in flight finish (not measured), then leave.
    queue.clear()
    deadline = time.monotonic() + 5
    while inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if bus is not None:
        await bus.drain(5)
        await bus.close()
    for task in list(inflight):
        task.cancel()
    return result


async def child_recv(args: argparse.Namespace) -> dict[str, Any]:
    variant = args.variant
    mgr = bus = None
    if variant in ("stock", "stock-tick"):
        mgr = make_stock_manager(args, counting=True)
    else:
        bus = make_bus(args, f"busfanout-recv-{os.getpid()}")
        await start_bus(bus, args.space)

    def counters() -> dict[str, float]:
        if mgr is not None:
            msgs, nbytes, positions = mgr.rx_msgs, mgr.rx_bytes, mgr.rx_positions
        else:
            msgs, nbytes, positions = bus.received, bus.rx_bytes, bus.receiver.positions
        return {
            "t": time.perf_counter(),
            "cpu": time.process_time(),
            "msgs": msgs,
            "bytes": nbytes,
            "positions": positions,
        }

    start = wall_to_perf(await read_start_at())
    await sleep_until(start)
    a = counters()
    await sleep_until(start + args.duration)
    b = counters()
    await asyncio.sleep(1.5)  # what was still on its way when the window closed
    c = counters()
    if bus is not None:
        await bus.close()
    wall = b["t"] - a["t"]
    return {
        "role": "recv",
        "variant": variant,
        "n": args.n,
        "wall_s": round(wall, 3),
        "cpu_s": round(b["cpu"] - a["cpu"], 4),
        "msgs": int(b["msgs"] - a["msgs"]),
        "bytes": int(b["bytes"] - a["bytes"]),
        "positions": int(b["positions"] - a["positions"]),
        "positions_total": int(c["positions"]),
    }


def child_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))
    runner = child_send if args.role == "send" else child_recv
    try:
        import uvloop

        result = uvloop.run(runner(args))
    except ImportError:
        result = asyncio.run(runner(args))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def pinned(core: str, argv: list[str], pin: bool) -> list[str]:
    if not pin or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", core, *argv]


class Child:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"child not ready: {self.stderr_tail()}")

    def go(self, start_at: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{start_at!r}\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            tail = " | ".join(err.strip().splitlines()[-3:])
            return {"failed": f"exited {self.proc.returncode}: {tail}"}
        return dict(json.loads(lines[-1]))

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate()
        return " | ".join((err or "").strip().splitlines()[-3:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def measure(
    args: argparse.Namespace, redis: Any, redis_pid: int | None, variant: str, n: int
) -> dict[str, Any]:
    tag = f"{os.getpid()}-{n}-{variant}-{int(time.time() * 1000) % 1_000_000}"
    space = f"busfanout-{tag}"
    channel = f"socketio-busfanout-{tag}"
    common = [
        "--variant",
        variant,
        "--n",
        str(n),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--redis-url",
        args.redis_url,
        "--space",
        space,
        "--channel",
        channel,
    ]
    me = [args.python, str(Path(__file__).resolve()), "_child"]
    redis.flushdb()
    children: list[Child] = []
    try:
        if variant != "loop":
            children.append(
                Child(pinned(RECEIVER_CORE, [*me, "--role", "recv", *common], args.pin))
            )
        children.append(Child(pinned(SENDER_CORE, [*me, "--role", "send", *common], args.pin)))
        for child in children:
            child.wait_ready()
        if variant != "loop":
            # Both nodes must be subscribed before the first move.
            try:
                from spacesync.state.keys import space_channel
            except ImportError:  # older versions
                from spacesync.cluster import space_channel  # type: ignore[attr-defined,no-redef]

            watched = space_channel(space) if variant == "bus" else channel
            deadline = time.monotonic() + 10
            while dict(redis.pubsub_numsub(watched)).get(watched.encode(), 0) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the two nodes did not subscribe to {watched}")
                time.sleep(0.02)
        start_at = time.time() + 0.3 + WARMUP_SECONDS
        for child in children:
            child.go(start_at)
        time.sleep(max(0.0, start_at - time.time()))
        r0 = proc_cpu_seconds(redis_pid) if redis_pid else None
        k0 = core_busy_seconds()
        t0 = time.perf_counter()
        time.sleep(args.duration)
        r1 = proc_cpu_seconds(redis_pid) if redis_pid else None
        k1 = core_busy_seconds()
        redis_wall = time.perf_counter() - t0
        results = [child.result(timeout=args.duration + 30) for child in children]
    finally:
        for child in children:
            child.kill()
    send = results[-1]
    recv = results[0] if variant != "loop" else {}
    redis_cpu = (r1 - r0) / redis_wall if r0 is not None and r1 is not None else None
    row = summarise(args, variant, n, send, recv, redis_cpu)
    if args.pin and "failed" not in row:
        busy = {c: (k1[c] - k0[c]) / redis_wall for c in k0 if c in k1}
        row["noise_pct"] = noise_pct(busy, row, redis_cpu)
    return row


def core_busy_seconds() -> dict[str, float]:
    """Busy seconds (user + nice + system + steal) of the sender's and the receiver's cores."""
    wanted = {f"cpu{SENDER_CORE}", f"cpu{RECEIVER_CORE}"}
    busy: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name in wanted:
                v = [int(x) for x in values[:8]]
                busy[name] = (v[0] + v[1] + v[2] + v[7]) / CLK_TCK
    return busy


def noise_pct(busy: dict[str, float], row: dict[str, Any], redis_cpu: float | None) -> float | None:
    """CPU that other processes took from the two pinned cores during the window, in % of a
    core (the larger of the two). Redis is not pinned: its CPU is taken off first."""
    s_core, r_core = busy.get(f"cpu{SENDER_CORE}"), busy.get(f"cpu{RECEIVER_CORE}")
    if s_core is None or r_core is None:
        return None
    excess = sorted(
        [s_core - row["sender_cpu_per_s"], r_core - (row.get("receiver_cpu_per_s") or 0.0)],
        reverse=True,
    )
    left = redis_cpu or 0.0
    for k in range(2):
        take = min(left, max(0.0, excess[k]))
        excess[k] -= take
        left -= take
    return round(100 * max(0.0, *excess), 1)


def summarise(
    args: argparse.Namespace,
    variant: str,
    n: int,
    send: dict[str, Any],
    recv: dict[str, Any],
    redis_cpu: float | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"n": n, "variant": variant, "send": send, "recv": recv}
    failed = send.get("failed") or recv.get("failed")
    if failed:
        row["failed"] = failed
        return row
    sw = send["wall_s"]
    offered = n * args.rate
    row.update(
        {
            "moves_offered_per_s": offered,
            "moves_per_s": send["moves"] / sw,
            "sender_cpu_per_s": send["cpu_s"] / sw,
            "redis_cpu_per_s": redis_cpu,
        }
    )
    if variant in ("stock", "stock-tick"):
        row["published_per_s"] = send["emits_completed"] / sw
        if variant == "stock":
            row["moves_per_s"] = row["published_per_s"]  # a move is handled once it is published
    elif variant == "bus":
        row["published_per_s"] = send["published"] / sw
    if recv:
        rw = recv["wall_s"]
        row.update(
            {
                "redis_msgs_per_s": recv["msgs"] / rw,
                "bytes_per_s": recv["bytes"] / rw,
                "positions_per_s": recv["positions"] / rw,
                "receiver_cpu_per_s": recv["cpu_s"] / rw,
                "bytes_per_msg": recv["bytes"] / recv["msgs"] if recv["msgs"] else None,
            }
        )
    # The sender could not keep up with the moves (or the manager with the emits).
    row["saturated"] = row["moves_per_s"] < 0.95 * offered or send.get("backlog_at_end", 0) > n
    return row


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def report(args: argparse.Namespace, rows: list[dict[str, Any]], info: dict[str, str]) -> str:
    out = [
        f"## Cross-node fan-out of positions — {args.rate:g} moves/s per mover, "
        f"{args.duration:g} s window per measurement\n",
        "Two nodes in two processes on one Redis: the sender holds the N movers, the receiver "
        "has players in the same space. CPU is each process's own (`time.process_time()`), in "
        "CPU seconds per second of wall time (1.0 = a whole core); Redis's CPU is its process's "
        "over the same window (the machine's Redis, which other work may be using too).\n",
        "**Not the same relay.** `stock` (python-socketio's `AsyncRedisManager`, one "
        '`emit("player:moved", …, room=space)` per move) relays **every move**: '
        f"{args.rate:g} per mover per second. `bus` (spacesync's `ClusterBus`) relays, once per "
        f"{TICK_SECONDS * 1000:g} ms tick of the space, the **newest position** of each mover "
        "(at most 20 per mover per second), which SPEC §4 allows: positions are state, the "
        "newest one supersedes the others. `stock-tick` is the stock manager fed the same "
        "coalesced positions (one emit per mover per tick), to tell the coalescing's share from "
        "the bus's own (one pre-encoded message per tick on a per-space channel). `loop` is the "
        "sender's move loop alone, without Redis: the harness's share of the sender CPU.\n",
        "Noise % is the CPU other processes took from the sender's and the receiver's cores "
        "during the window (the larger of the two, Redis's own CPU taken off): when it is high, a "
        "saturated sender shows less than 1.0 CPU s/s and the row measures a shared core.\n",
        "Receivers write to no client socket in any variant (the stock manager's local emit finds "
        "its room empty, the bus's BusReceiver stub only counts): the receiver figure is the cost "
        "of taking the other node's traffic off Redis. Bytes/s is the payload of the messages "
        "published (what each subscribed node receives; Redis sends it to every subscriber, the "
        "sender's own node included).\n",
        "| N | variant | moves/s offered | moves/s handled | Redis msgs/s | positions/s to "
        "the other node | bytes/msg | KB/s published | sender CPU s/s | receiver CPU s/s "
        "| Redis CPU s/s | noise % | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['n']} | {r['variant']} |" + " |" * 10 + f" failed: {r['failed']} |")
            continue
        note = "sender saturated: could not keep up" if r["saturated"] else ""
        kb = r.get("bytes_per_s")
        out.append(
            f"| {r['n']} | {r['variant']} | {fmt(r['moves_offered_per_s'], 0)} "
            f"| {fmt(r['moves_per_s'], 0)} | {fmt(r.get('redis_msgs_per_s'), 0)} "
            f"| {fmt(r.get('positions_per_s'), 0)} | {fmt(r.get('bytes_per_msg'), 0)} "
            f"| {fmt(None if kb is None else kb / 1024, 1)} "
            f"| {fmt(r['sender_cpu_per_s'], 3)} | {fmt(r.get('receiver_cpu_per_s'), 3)} "
            f"| {fmt(r.get('redis_cpu_per_s'), 3)} | {fmt(r.get('noise_pct'))} | {note} |"
        )
    by = {(r["n"], r["variant"]): r for r in rows if "failed" not in r}
    pairs = [(a, b) for a, b in (("stock", "bus"), ("stock-tick", "bus")) if a in args.variants]
    if "bus" in args.variants and pairs:
        out.append("")
        for a, b in pairs:
            out.append(f"### Ratios {a} / {b} (how many times more the stock manager costs)\n")
            out.append(
                "| N | Redis msgs/s | bytes/s | sender CPU | sender CPU net of `loop` "
                "| receiver CPU | Redis CPU |"
            )
            out.append("|---:|---:|---:|---:|---:|---:|---:|")
            for n in args.movers:
                x, y, base = by.get((n, a)), by.get((n, b)), by.get((n, "loop"))
                if x is None or y is None:
                    continue
                net_x = net_y = None
                if base is not None:
                    net_x = x["sender_cpu_per_s"] - base["sender_cpu_per_s"]
                    net_y = y["sender_cpu_per_s"] - base["sender_cpu_per_s"]
                sat = " (stock saturated)" if x["saturated"] else ""
                out.append(
                    f"| {n} | {ratio(x.get('redis_msgs_per_s'), y.get('redis_msgs_per_s'))}{sat} "
                    f"| {ratio(x.get('bytes_per_s'), y.get('bytes_per_s'))} "
                    f"| {ratio(x['sender_cpu_per_s'], y['sender_cpu_per_s'])} "
                    f"| {ratio(net_x, net_y) if net_y and net_y > 0 else '–'} "
                    f"| {ratio(x.get('receiver_cpu_per_s'), y.get('receiver_cpu_per_s'))} "
                    f"| {ratio(x.get('redis_cpu_per_s'), y.get('redis_cpu_per_s'))} |"
                )
            out.append("")
        out.append(
            "A saturated stock sender handled fewer moves than offered, so its ratios understate "
            "what relaying every move would cost."
        )
    out.append("\n| | |\n|---|---|")
    out += [f"| {k} | {v} |" for k, v in info.items()]
    return "\n".join(out) + "\n"


def machine_info(args: argparse.Namespace, redis: Any) -> dict[str, str]:
    from importlib.metadata import version

    import redis as redis_pkg

    from spacesync import __version__

    try:
        rv = redis.info("server").get("redis_version", "unknown")
    except Exception:
        rv = "unknown"
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "pinning": (
            f"sender on core {SENDER_CORE}, receiver on core {RECEIVER_CORE}, Redis not pinned"
            if args.pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
            else "none"
        ),
        "python": sys.version.split()[0],
        "python-socketio": version("python-socketio"),
        "redis-py": redis_pkg.__version__,
        "redis server": f"{rv} at {args.redis_url.split('@')[-1]}",
        "spacesync": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_child"]:
        c = argparse.ArgumentParser()
        c.add_argument("--role", choices=["send", "recv"], required=True)
        c.add_argument("--variant", choices=VARIANTS, required=True)
        c.add_argument("--n", type=int, required=True)
        c.add_argument("--rate", type=float, required=True)
        c.add_argument("--duration", type=float, required=True)
        c.add_argument("--redis-url", required=True)
        c.add_argument("--space", required=True)
        c.add_argument("--channel", required=True)
        args = c.parse_args(argv[1:])
        args.child = True
        return args
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--movers", default="50,100,200,400", help="comma-separated N values")
    p.add_argument("--rate", type=float, default=60.0, help="moves per second per mover")
    p.add_argument("--duration", type=float, default=4.0, help="seconds measured per N/variant")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    p.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help="a spare database: FLUSHDB before each run"
    )
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--python", default=sys.executable, help="interpreter for the two nodes")
    p.add_argument("--out", default=None, help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    args.child = False
    args.movers = [int(x) for x in args.movers.split(",") if x.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r} (use {', '.join(VARIANTS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    sys.path.insert(0, str(REPO / "src"))
    import redis as redis_pkg

    if ((urlsplit(args.redis_url).path or "/0").strip("/") or "0") == TESTS_REDIS_DB:
        raise SystemExit(
            f"{args.redis_url}: database {TESTS_REDIS_DB} belongs to the cluster tests"
        )
    redis = redis_pkg.Redis.from_url(args.redis_url, socket_timeout=10)
    redis.ping()
    redis_pid: int | None = None
    with contextlib.suppress(Exception):
        pid = int(redis.info("server")["process_id"])
        redis_pid = pid if proc_cpu_seconds(pid) is not None else None
    rows: list[dict[str, Any]] = []
    for i, n in enumerate(args.movers):
        order = args.variants if i % 2 == 0 else list(reversed(args.variants))
        for variant in order:
            log(f"N={n} {variant}")
            row = measure(args, redis, redis_pid, variant, n)
            rows.append(row)
            if "failed" in row:
                log(f"  failed: {row['failed']}")
            else:
                log(
                    f"  moves/s {row['moves_per_s']:.0f}, msgs/s "
                    f"{row.get('redis_msgs_per_s', 0):.0f}, sender CPU "
                    f"{row['sender_cpu_per_s']:.3f} s/s, receiver CPU "
                    f"{row.get('receiver_cpu_per_s') or 0:.3f} s/s"
                )
    rank = {v: k for k, v in enumerate(args.variants)}
    rows.sort(key=lambda r: (r["n"], rank[r["variant"]]))
    redis.flushdb()
    info = machine_info(args, redis)
    print(report(args, rows, info))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

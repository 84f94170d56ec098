"""Cheap load generator for the spacesync capacity benchmark.

Speaks raw Engine.IO v4 / Socket.IO v5 over WebSocket on plain asyncio protocols (no Socket.IO or
WebSocket client library), so that one generator core can keep hundreds of players busy:

- every player is one TCP connection running the WebSocket handshake, the Engine.IO open packet
  (``0{...}``), the Socket.IO connect (``40`` / ``40{"sid":...}``) and ``join:space``;
- client frames are masked with an all-zero key (valid RFC 6455 framing), so payloads are written
  as they are, without an XOR pass;
- *observers* (a small sample of players) parse every frame and record latency, per-sender
  update counts and the last sequence seen of every other player;
- every other player, once ``room:joined`` has arrived, stops reading through the event loop: a
  sweeper drains all those sockets every 10 ms with one ``recv_into`` each into a shared buffer,
  counts the bytes and scans them (with ``memchr``) for the two frames that need an answer, the
  Engine.IO ping (``\\x81\\x01 2``) and a WebSocket ping (opcode 9). Nothing is JSON-parsed,
  and the cost is per sweep, not per frame (reading frame by frame as they arrive costs about as
  much CPU as the server spends sending them).

Each position is stamped: ``x`` is the sender's sequence number, and the generator keeps the send
time of every sequence, so an observer turns every position it receives into a latency sample.

Modes (each prints one JSON object on stdout; progress goes to stderr):

    loadgen.py move  --url URL --n N --rate 60 --duration 8 [--observers 8] [--batched]
    loadgen.py idle  --url URL --n 1000 [--space-size 50]
    loadgen.py storm --url URL --n 1000 [--concurrency 100]

``--server-pid`` lets the generator read the server's CPU time and RSS from /proc over exactly
the window it measures; the generator's own CPU time is always reported.

Cluster mode: ``--url`` may list several nodes (``--url URL1,URL2``). Players are then spread
round-robin over the nodes, observers and the other players each in turn (so that observers
are spread evenly too), and a space spans the nodes. ``--server-pid PID1,PID2`` then reports
the sums over the pids as the server's CPU and RSS, and each pid's own figures under
``server_pids``; with several nodes the JSON also splits latency, pair rates and convergence into
``same_node`` and ``cross_node`` pairs (observer and sender on the same node or not).
``--redis-pid`` adds Redis's own CPU over the same window (``redis_cpu_pct``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import math
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from procstats import own_cpu_seconds, raise_nofile_limit

CLK_TCK = os.sysconf("SC_CLK_TCK")

EIO_PING_FRAME = b"\x81\x012"  # unmasked text frame carrying the Engine.IO ping "2"
WS_PING_OPCODE_BYTE = 0x89
ROOM_JOINED_PREFIX = b'42["room:joined"'
# Drainers count, without decoding anything, the position frames they receive: by the bytes that
# start the Socket.IO event (one scan of what they read, ~2 % of the generator's core per 100 MB/s).
BATCH_PREFIX = b'42["players:moved"'
PLAIN_PREFIX = b'42["player:moved"'
TAIL = len(BATCH_PREFIX) - 1  # bytes kept between reads, for patterns split across two reads
GEN_SATURATED_PCT = 85.0  # the generator's own CPU (% of one core) above which a step is invalid
ZERO_MASK = b"\x00\x00\x00\x00"
SWEEP_SLICE = 40  # drained sockets read per event-loop turn


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A final client frame (masked with an all-zero key, so the payload is sent unchanged)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + ZERO_MASK + payload


EIO_PONG = ws_frame(b"3")
SIO_CONNECT = ws_frame(b"40")
WS_CLOSE = ws_frame(b"\x03\xe8", opcode=8)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc/<pid>/status."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def per_core_ticks() -> dict[str, list[int]]:
    """Per-core jiffies from /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal."""
    cores: dict[str, list[int]] = {}
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"cpu") and line[3:4].isdigit():
                    name, *values = line.split()
                    cores[name.decode()] = [int(v) for v in values[:8]]
    except OSError:
        pass
    return cores


def core_usage(before: dict[str, list[int]], after: dict[str, list[int]], wall: float) -> dict:
    """% of each core over a window: ``busy`` (user + nice + system, any process),
    ``irq`` (hard + soft interrupts, which is where loopback networking often lands) and
    ``steal`` (time the hypervisor gave to someone else)."""
    usage: dict[str, dict[str, float]] = {}
    for name, b in before.items():
        a = after.get(name)
        if a is None or wall <= 0:
            continue
        d = [(x - y) / CLK_TCK / wall * 100.0 for x, y in zip(a, b, strict=False)]
        usage[name] = {
            "busy": round(d[0] + d[1] + d[2], 1),
            "irq": round(d[5] + d[6], 1),
            "steal": round(d[7], 1),
        }
    return usage


# --------------------------------------------------------------------------------------------
# Shared state of one generator run
# --------------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    host: str
    port: int
    path: str


@dataclass
class Run:
    host: str
    port: int
    path: str
    batched: bool = False
    # cluster mode: every node's endpoint, and the node of every player (empty with one node)
    endpoints: list[Endpoint] = field(default_factory=list)
    node_of: list[int] = field(default_factory=list)
    # cluster mode: latencies of observer/sender pairs on the same node [0] and across nodes [1]
    split: tuple[list[float], list[float]] | None = None
    # player id -> index, and the send time of every sequence number of every sender
    id_index: dict[str, int] = field(default_factory=dict)
    send_times: list[list[float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    recording: bool = False
    errors: list[str] = field(default_factory=list)
    disconnects: int = 0
    drainers: list[Client] = field(default_factory=list)
    sweep_interval: float = 0.01
    sweeper: asyncio.Task[None] | None = None

    def start_sweeper(self) -> None:
        if self.sweeper is None:
            self.sweeper = asyncio.ensure_future(self._sweep_loop())

    def stop_sweeper(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None

    async def _sweep_loop(self) -> None:
        buf = bytearray(1 << 18)
        while True:
            await asyncio.sleep(self.sweep_interval)
            drainers = list(self.drainers)
            for start in range(0, len(drainers), SWEEP_SLICE):
                if start:
                    # Let observers and senders run between slices, so that a sweep through
                    # hundreds of busy sockets does not delay them (and their timestamps).
                    await asyncio.sleep(0)
                for client in drainers[start : start + SWEEP_SLICE]:
                    client.sweep(buf)

    def error(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)

    def assign_nodes(self, count: int, observer_set: set[int]) -> None:
        """Spread ``count`` players round-robin over the nodes: observers in turn, and the other
        players in turn, so that both are balanced over the nodes (a no-op with one node)."""
        nodes = len(self.endpoints)
        if nodes <= 1:
            self.node_of = []
            self.split = None
            return
        turn = [0, 0]
        self.node_of = []
        for i in range(count):
            group = 1 if i in observer_set else 0
            self.node_of.append(turn[group] % nodes)
            turn[group] += 1
        self.split = ([], [])

    def endpoint(self, index: int) -> Endpoint:
        if self.node_of:
            return self.endpoints[self.node_of[index]]
        return Endpoint(self.host, self.port, self.path)


class Client(asyncio.Protocol):
    """One player: a raw WebSocket connection speaking Engine.IO v4 / Socket.IO v5."""

    def __init__(self, run: Run, index: int, space_id: str, observer: bool, n_players: int) -> None:
        self.run = run
        self.index = index
        self.player_id = f"p{index}"
        self.space_id = space_id
        self.observer = observer
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[float] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.handshake_done = False
        self.draining = False
        self.raw: socket.socket | None = None
        self.buf = b""
        self.tail = b""
        self.bytes_in = 0
        self.frames_in = 0  # drainers: position frames received (counted by prefix)
        self.frame_prefix = BATCH_PREFIX if run.batched else PLAIN_PREFIX
        self.pings = 0
        self.t_connect = 0.0
        self.last_seq = [-1] * n_players if observer else []
        self.counts = [0] * n_players if observer else []
        self.stale = 0
        self.duplicates = 0
        self.self_echo = 0
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.node = run.node_of[index] if run.node_of else 0
        self.endpoint = run.endpoint(index)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ep = self.endpoint
        request = (
            f"GET {ep.path}?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {ep.host}:{ep.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"{self.player_id}: closed before joining"))
        elif self.run.recording and self.raw is None:
            self.run.disconnects += 1

    def data_received(self, data: bytes) -> None:
        if self.draining:  # only until pause_reading() takes effect
            self._drain(data)
            return
        now = time.perf_counter()
        if not self.handshake_done:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.run.error(f"handshake refused: {status.decode(errors='replace')}")
                self.close()
                return
            self.handshake_done = True
            self.buf = b""
            data = data[end + 4 :]
            if not data:
                return
        self._frames(data, now)

    # --- frames ------------------------------------------------------------------------------

    def _frames(self, data: bytes, now: float) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        size = len(data)
        pos = 0
        mv = memoryview(data)
        while size - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                header = 10
            stop = pos + header + length
            if stop > size:
                break
            opcode = b0 & 0x0F
            if opcode == 1:
                self._text(mv[pos + header : stop], now)
            elif opcode == 9:
                self._write(ws_frame(bytes(mv[pos + header : stop]), opcode=10))
            elif opcode == 8:
                self.close()
                return
            elif opcode in (0, 2):
                self.run.error(f"{self.player_id}: unexpected frame opcode {opcode}")
            pos = stop
            if self.draining:
                if pos < size:
                    self._drain(data[pos:])
                return
        if pos < size:
            self.buf = data[pos:]

    def _text(self, p: memoryview, now: float) -> None:
        c0 = p[0]
        if c0 == 0x34 and len(p) > 1:  # "4": Socket.IO packet
            c1 = p[1]
            if c1 == 0x32:  # "42": event
                if self.observer and self.joined.done():
                    self._observe(p, now)
                elif bytes(p[: len(ROOM_JOINED_PREFIX)]) == ROOM_JOINED_PREFIX:
                    self._on_joined(now)
                elif not self.joined.done() and bytes(p[:10]) == b'42["error"':
                    self.run.error(f"{self.player_id}: {bytes(p[:200]).decode(errors='replace')}")
            elif c1 == 0x30:  # "40": namespace connected
                self._send_join()
            elif c1 == 0x34:  # "44": connect error
                self.run.error(f"{self.player_id}: connect_error {bytes(p).decode()}")
                self.close()
        elif c0 == 0x32:  # "2": Engine.IO ping
            self.pings += 1
            self._write(EIO_PONG)
        elif c0 == 0x30:  # "0": Engine.IO open
            self._write(SIO_CONNECT)
        elif c0 == 0x31:  # "1": Engine.IO close
            self.close()

    def _observe(self, p: memoryview, now: float) -> None:
        try:
            event = orjson.loads(p[2:])
        except orjson.JSONDecodeError:
            self.run.error(f"{self.player_id}: undecodable event")
            return
        name = event[0]
        if name == "player:moved":
            self._position(event[1], now)
        elif name == "players:moved":
            for item in event[1]:
                self._position(item, now)
        elif name == "room:joined":
            self._on_joined(now)

    def _position(self, item: dict[str, Any], now: float) -> None:
        idx = self.run.id_index.get(item.get("id"))  # type: ignore[arg-type]
        if idx is None:
            return
        if idx == self.index:
            self.self_echo += 1  # its own move sent back: the others only should receive it
            return
        seq = item.get("x")
        if not isinstance(seq, int):
            if not isinstance(seq, float) or not seq.is_integer():
                return
            seq = int(seq)
        sent = self.run.send_times[idx]
        if 0 <= seq < len(sent) and self.run.recording:
            self.run.latencies.append(now - sent[seq])
            split = self.run.split
            if split is not None:
                split[self.run.node_of[idx] != self.node].append(now - sent[seq])
        last = self.last_seq[idx]
        if seq > last:
            self.last_seq[idx] = seq
        elif seq < last:
            self.stale += 1  # older than a position already delivered
        else:
            self.duplicates += 1
        self.counts[idx] += 1

    def _drain(self, data: bytes | bytearray, size: int | None = None) -> None:
        """Account for drained bytes and answer pings, without parsing frames.

        Server frames are unmasked and every payload here is ASCII JSON, so the byte 0x81
        followed by 0x01 and "2" can only be an Engine.IO ping frame, and 0x89 only the first
        byte of a WebSocket ping (or, harmlessly, part of a length field of a frame over 35 KB,
        which gets an unsolicited pong).
        """
        if size is None:
            size = len(data)
        self.bytes_in += size
        tail = self.tail
        # Position frames, counted without parsing: a frame's first payload bytes are its event
        # name. A prefix split between the previous read and this one is found in the joined
        # edges (the tail is shorter than the prefix, so nothing is counted twice).
        prefix = self.frame_prefix
        self.frames_in += data.count(prefix, 0, size)
        if tail:
            k = len(prefix) - 1
            self.frames_in += (tail[-k:] + bytes(data[: min(k, size)])).count(prefix)
        # Look for the byte 0x01 (a memchr, unlike a search for the 3-byte pattern, whose first
        # byte starts every frame); it only occurs as a length byte, so hits are rare.
        ping = bool(tail) and EIO_PING_FRAME in tail[-2:] + bytes(data[:2])
        at = data.find(b"\x01", 1, size - 1)
        while at >= 0 and not ping:
            ping = data[at - 1] == 0x81 and data[at + 1] == 0x32
            at = data.find(b"\x01", at + 1, size - 1)
        if ping:
            self.pings += 1
            self._write(EIO_PONG)
        at = data.find(b"\x89", 0, size)
        if at >= 0:
            # Echo the ping's payload when the whole frame is in this chunk.
            payload = b""
            if at + 1 < size and data[at + 1] < 126:
                payload = bytes(data[at + 2 : min(size, at + 2 + data[at + 1])])
            self._write(ws_frame(payload, opcode=10))
        self.tail = (tail + bytes(data[max(0, size - TAIL) : size]))[-TAIL:]

    def sweep(self, buf: bytearray) -> None:
        """Read whatever is waiting on this (paused) socket."""
        raw = self.raw
        if raw is None:
            return
        while True:
            try:
                size = raw.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if size == 0:
                self._lost_raw()
                return
            self._drain(buf, size)
            if size < len(buf):
                return

    def _start_draining(self) -> None:
        self.draining = True
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return  # keep reading through the event loop
        self.raw = socket.socket(fileno=os.dup(sock.fileno()))
        self.raw.setblocking(False)
        transport.pause_reading()
        self.run.drainers.append(self)

    def _lost_raw(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
            with contextlib.suppress(ValueError):
                self.run.drainers.remove(self)
        if self.run.recording:
            self.run.disconnects += 1
        if self.transport is not None:
            self.transport.abort()

    # --- actions -----------------------------------------------------------------------------

    def _on_joined(self, now: float) -> None:
        if not self.joined.done():
            self.joined.set_result(now)
        if not self.observer:
            self._start_draining()

    def _send_join(self) -> None:
        payload: dict[str, Any] = {
            "spaceId": self.space_id,
            "playerId": self.player_id,
            "nickname": self.player_id,
            "sessionToken": f"dev-{self.player_id}",
            "avatarColor": "default",
        }
        if self.run.batched:
            payload["positionBatching"] = True
        self._write(ws_frame(b'42["join:space",' + orjson.dumps(payload) + b"]"))

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_move(self, seq: int, moving: bool) -> None:
        # the payload the product's web client sends: its player id and the new position
        y = 100 + self.index
        payload = (
            f'42["player:move",{{"id":"{self.player_id}","x":{seq},"y":{y},'
            f'"direction":"right","isMoving":{"true" if moving else "false"}}}]'
        ).encode()
        self._write(ws_frame(payload))

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(WS_CLOSE)
            self.transport.close()


# --------------------------------------------------------------------------------------------
# Connecting players
# --------------------------------------------------------------------------------------------


async def connect_players(
    run: Run,
    count: int,
    space_of: Callable[[int], str],
    observer_set: set[int],
    concurrency: int,
    join_timeout: float,
    n_players: int,
) -> tuple[list[Client], list[float]]:
    """Connect and join ``count`` players, at most ``concurrency`` handshakes in flight.

    Returns the clients (in index order) and each one's connect-to-``room:joined`` time.
    """
    loop = asyncio.get_running_loop()
    run.assign_nodes(count, observer_set)
    run.start_sweeper()
    sem = asyncio.Semaphore(concurrency)
    clients: list[Client | None] = [None] * count
    join_times: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            ep = run.endpoint(i)
            _, proto = await loop.create_connection(
                lambda: Client(run, i, space_of(i), i in observer_set, n_players), ep.host, ep.port
            )
            clients[i] = proto
            proto.t_connect = t0
            joined_at = await proto.joined
            join_times.append(joined_at - t0)

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=join_timeout)
    for t in pending:
        t.cancel()
    failures = [t.exception() for t in done if t.exception() is not None]
    ready = [c for c in clients if c is not None]
    if pending or failures:
        run.stop_sweeper()
        for c in ready:
            c.close()
        reason = failures[0] if failures else "timeout"
        raise RuntimeError(
            f"only {len(join_times)}/{count} players joined ({len(pending)} pending): {reason}"
        )
    return [c for c in clients if c is not None], join_times


async def close_all(run: Run, clients: list[Client], wait: float = 2.0) -> None:
    run.stop_sweeper()
    for c in clients:
        c.close()
    if clients:
        await asyncio.wait([c.closed for c in clients], timeout=wait)


class LagMonitor:
    """Measures how late the generator's event loop wakes up (a busy generator wakes late)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.perf_counter() - t - self.interval))

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._loop())

    def stop(self) -> dict[str, float | None]:
        if self.task is not None:
            self.task.cancel()
        s = sorted(self.samples)
        return {
            "p99_ms": None if not s else round(percentile(s, 99) * 1000, 2),  # type: ignore[operator]
            "max_ms": None if not s else round(s[-1] * 1000, 2),
        }


def sum_cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds summed over processes (``None`` if any cannot be read)."""
    total = 0.0
    for pid in pids:
        cpu = proc_cpu_seconds(pid)
        if cpu is None:
            return None
        total += cpu
    return total


def sum_rss_bytes(pids: list[int]) -> int | None:
    """RSS summed over processes (``None`` if any cannot be read)."""
    total = 0
    for pid in pids:
        rss = proc_rss_bytes(pid)
        if rss is None:
            return None
        total += rss
    return total


class ServerProbe:
    """CPU and RSS of the server process(es) over a window (``pids`` may be empty).

    With several processes (cluster nodes) the figures are sums: CPU over the window, and the
    highest sampled total RSS; ``per_pid`` has each one's own."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.rss_max = 0
        self.rss_max_each = [0] * len(pids)
        self.task: asyncio.Task[None] | None = None
        self.cpu0: list[float | None] = []
        self.t0 = 0.0
        self.cores0: dict[str, list[int]] = {}

    async def _sample(self) -> None:
        while True:
            self._rss()
            await asyncio.sleep(0.5)

    def _rss(self) -> None:
        total = 0
        for k, pid in enumerate(self.pids):
            rss = proc_rss_bytes(pid)
            if rss is None:
                return
            self.rss_max_each[k] = max(self.rss_max_each[k], rss)
            total += rss
        self.rss_max = max(self.rss_max, total)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.cores0 = per_core_ticks()
        if self.pids:
            self.cpu0 = [proc_cpu_seconds(pid) for pid in self.pids]
            self.task = asyncio.ensure_future(self._sample())

    def stop(self) -> dict[str, Any]:
        if self.task is not None:
            self.task.cancel()
        cores = per_core_ticks()
        self._rss()
        wall = time.perf_counter() - self.t0
        each: list[float | None] = []
        for pid, c0 in zip(self.pids, self.cpu0, strict=True):
            c1 = proc_cpu_seconds(pid)
            ok = c0 is not None and c1 is not None and wall > 0
            each.append(100.0 * (c1 - c0) / wall if ok else None)  # type: ignore[operator]
        cpu_pct = None
        if each and all(e is not None for e in each):
            cpu_pct = round(sum(each), 1)  # type: ignore[arg-type]
        result: dict[str, Any] = {
            "cpu_pct": cpu_pct,
            "rss_mb": round(self.rss_max / 2**20, 1) if self.rss_max else None,
            "cores": core_usage(self.cores0, cores, wall),
        }
        if len(self.pids) > 1:
            result["per_pid"] = [
                {
                    "pid": pid,
                    "cpu_pct": None if e is None else round(e, 1),
                    "rss_mb": round(r / 2**20, 1) if r else None,
                }
                for pid, e, r in zip(self.pids, each, self.rss_max_each, strict=True)
            ]
        return result


class CpuWindow:
    """CPU of one other process (e.g. Redis) over a window, in % of one core."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu0: float | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = proc_cpu_seconds(self.pid) if self.pid else None

    def stop(self) -> float | None:
        cpu1 = proc_cpu_seconds(self.pid) if self.pid else None
        wall = time.perf_counter() - self.t0
        if self.cpu0 is None or cpu1 is None or wall <= 0:
            return None
        return round(100.0 * (cpu1 - self.cpu0) / wall, 1)


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    path = parts.path if parts.path not in ("", "/") else "/socket.io/"
    if not path.endswith("/"):
        path += "/"
    return Endpoint(host, port, path)


def new_run(url: str, batched: bool = False) -> Run:
    """``url`` is one node's base URL, or several separated by commas (cluster mode)."""
    endpoints = [parse_endpoint(u.strip()) for u in url.split(",") if u.strip()]
    first = endpoints[0]
    return Run(
        host=first.host,
        port=first.port,
        path=first.path,
        batched=batched,
        endpoints=endpoints if len(endpoints) > 1 else [],
    )


def parse_pids(raw: str | None) -> list[int]:
    """``--server-pid``: one pid, or several separated by commas."""
    if not raw:
        return []
    return [int(p) for p in raw.split(",") if p.strip()]


def space_name(tag: str) -> str:
    return f"bench-{tag}-{os.getpid()}-{random.randrange(1 << 30):x}"


def log(message: str) -> None:
    print(f"[loadgen] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Mode: move (capacity step)
# --------------------------------------------------------------------------------------------


async def move(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.n
    rate: float = args.rate
    run = new_run(args.url, batched=args.batched)
    space = space_name(f"move{n}")
    k_obs = max(1, min(args.observers, n))
    observers = sorted({round(i * n / k_obs) for i in range(k_obs)})
    run.id_index = {f"p{i}": i for i in range(n)}
    run.send_times = [[] for _ in range(n)]
    moves_each = max(2, round(rate * args.duration))
    result: dict[str, Any] = {
        "mode": "move",
        "n": n,
        "rate": rate,
        "duration_s": moves_each / rate,
        "observers": len(observers),
        "batched": args.batched,
    }

    t_join = time.perf_counter()
    clients, join_times = await connect_players(
        run, n, lambda _i: space, set(observers), args.concurrency, args.join_timeout, n
    )
    result["join_s"] = round(time.perf_counter() - t_join, 3)
    await asyncio.sleep(args.settle)

    # Moving phase: player i sends its k-th move at t0 + (i / n + k) / rate, so sends are
    # spread evenly over time instead of arriving in bursts.
    gc.collect()
    gc.freeze()
    gc.disable()
    lag = LagMonitor()
    probe = ServerProbe(parse_pids(args.server_pid))
    redis_cpu = CpuWindow(args.redis_pid)
    run.recording = True
    lag.start()
    probe.start()
    redis_cpu.start()
    observer_set = set(observers)
    drainers = [c for c in clients if c.index not in observer_set]
    drain0 = [c.frames_in for c in drainers]
    cpu0 = own_cpu_seconds()
    t0 = time.perf_counter() + 0.01
    slot = 1.0 / (rate * n)
    total = moves_each * n
    k = 0
    send_times = run.send_times
    while k < total:
        now = time.perf_counter()
        due = min(total, int((now - t0) / slot) + 1)
        while k < due:
            seq, i = divmod(k, n)
            send_times[i].append(now)
            clients[i].send_move(seq, seq < moves_each - 1)
            k += 1
        if k < total:
            # Never spin: wake at most once per millisecond (the loop's timer resolution).
            await asyncio.sleep(max(0.001, t0 + k * slot - time.perf_counter()))
    t_sent = time.perf_counter()
    server_move = probe.stop()
    redis_cpu_pct = redis_cpu.stop()
    gen_cpu = own_cpu_seconds() - cpu0
    moving_wall = t_sent - (t0 - 0.01)
    # Every drainer's reads are at most one sweep (10 ms) behind: let the last sweep finish.
    await asyncio.sleep(2 * run.sweep_interval)
    drain1 = [c.frames_in for c in drainers]

    # Convergence: 2 s after the last send, every observer must hold every other player's final
    # position. Deliveries are recorded until then.
    await asyncio.sleep(args.converge)
    run.recording = False
    gen_lag = lag.stop()
    gc.enable()
    gc.unfreeze()

    final = moves_each - 1
    pair_rates: list[float] = []
    held = 0
    pairs = 0
    stale = 0
    duplicates = 0
    self_echo = 0
    deliveries = 0
    active = moves_each / rate
    for o in observers:
        c = clients[o]
        stale += c.stale
        duplicates += c.duplicates
        self_echo += c.self_echo
        for j in range(n):
            if j == o:
                continue
            pairs += 1
            deliveries += c.counts[j]
            pair_rates.append(c.counts[j] / active)
            if c.last_seq[j] == final:
                held += 1
    lats = sorted(run.latencies)
    rates_sorted = sorted(pair_rates)
    bytes_in = sum(c.bytes_in for c in clients)
    # Updates the whole space received per second, extrapolated from the observed pairs.
    updates_per_s = deliveries / pairs * n * (n - 1) / active if pairs else 0.0
    cpu_pct = server_move["cpu_pct"]
    us_per_update = (
        round(cpu_pct / 100.0 * 1e6 / updates_per_s, 2) if cpu_pct and updates_per_s else None
    )
    result.update(
        {
            "join_p99_ms": round(percentile(sorted(join_times), 99) * 1000, 1),  # type: ignore[operator]
            "sent": total,
            "deliveries": deliveries,
            "expected_deliveries": pairs * moves_each,
            "latency_samples": len(lats),
            "p50_ms": _ms(percentile(lats, 50)),
            "p99_ms": _ms(percentile(lats, 99)),
            "max_ms": _ms(lats[-1] if lats else None),
            "pair_rate_min": round(rates_sorted[0], 2) if rates_sorted else None,
            "pair_rate_median": round(percentile(rates_sorted, 50), 2) if rates_sorted else None,  # type: ignore[arg-type]
            "convergence_pct": round(100.0 * held / pairs, 2) if pairs else None,
            "stale": stale,
            "duplicates": duplicates,
            "self_echo": self_echo,
            "server_cpu_pct": server_move["cpu_pct"],
            "server_rss_mb": server_move["rss_mb"],
            "updates_per_s": round(updates_per_s),
            "server_us_per_update": us_per_update,
            "gen_cpu_pct": round(100.0 * gen_cpu / moving_wall, 1),
            "cores": server_move["cores"],
            "gen_lag_p99_ms": gen_lag["p99_ms"],
            "gen_lag_max_ms": gen_lag["max_ms"],
            "send_overrun_ms": round((t_sent - (t0 + (total - 1) * slot)) * 1000, 1),
            "drained_mb_per_s": round(bytes_in / 2**20 / (moving_wall + args.converge), 2),
            "disconnects": run.disconnects,
            "pings_answered": sum(c.pings for c in clients),
            "errors": run.errors,
        }
    )
    result.update(drain_figures(drain0, drain1, n, moving_wall, args.batched))
    gen_pct = result["gen_cpu_pct"]
    result["gen_saturated"] = gen_pct >= GEN_SATURATED_PCT
    if result["gen_saturated"]:
        log(
            f"WARNING: the generator used {gen_pct} % of its core (>= {GEN_SATURATED_PCT:g} %): "
            "this step measures the generator, not the server"
        )
    if "per_pid" in server_move:
        result["server_pids"] = server_move["per_pid"]
    if args.redis_pid:
        result["redis_cpu_pct"] = redis_cpu_pct
    if run.split is not None:
        result.update(node_split(run, clients, observers, n, final, active))
    await close_all(run, clients)
    return result


def drain_figures(
    before: list[int], after: list[int], n: int, wall: float, batched: bool
) -> dict[str, Any]:
    """What every non-observer received while the players moved, counted without decoding.

    Position frames per second: ``players:moved`` batches (batched clients), or ``player:moved``
    events (plain clients). The rate that is compared with the observers' pair rates is frames
    per second for batched clients (each batch carries every player that moved since the last
    one), and frames per other player per second for plain clients."""
    if not before or wall <= 0:
        return {"drainers": 0}
    frames = sorted((a - b) / wall for b, a in zip(before, after, strict=True))
    per_pair = frames if batched else [f / max(1, n - 1) for f in frames]
    return {
        "drainers": len(frames),
        "drain_frames_per_s_min": round(frames[0], 2),
        "drain_frames_per_s_median": round(percentile(frames, 50), 2),  # type: ignore[arg-type]
        "drain_pair_rate_min": round(per_pair[0], 2),
        "drain_pair_rate_median": round(percentile(per_pair, 50), 2),  # type: ignore[arg-type]
    }


def node_split(
    run: Run, clients: list[Client], observers: list[int], n: int, final: int, active: float
) -> dict[str, Any]:
    """Cluster mode: the figures of same-node and cross-node (observer, sender) pairs apart."""
    nodes = len(run.endpoints)
    out: dict[str, Any] = {
        "nodes": [f"http://{e.host}:{e.port}" for e in run.endpoints],
        "players_per_node": [run.node_of.count(k) for k in range(nodes)],
        "observers_per_node": [
            sum(1 for o in observers if run.node_of[o] == k) for k in range(nodes)
        ],
    }
    for cross, name in ((False, "same_node"), (True, "cross_node")):
        rates: list[float] = []
        held = 0
        for o in observers:
            c = clients[o]
            for j in range(n):
                if j == o or (run.node_of[j] != c.node) != cross:
                    continue
                rates.append(c.counts[j] / active)
                held += c.last_seq[j] == final
        lats = sorted(run.split[cross]) if run.split is not None else []
        rates.sort()
        out[name] = {
            "pairs": len(rates),
            "latency_samples": len(lats),
            "p50_ms": _ms(percentile(lats, 50)),
            "p99_ms": _ms(percentile(lats, 99)),
            "pair_rate_min": round(rates[0], 2) if rates else None,
            "pair_rate_median": round(percentile(rates, 50), 2) if rates else None,  # type: ignore[arg-type]
            "convergence_pct": round(100.0 * held / len(rates), 2) if rates else None,
        }
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --------------------------------------------------------------------------------------------
# Mode: idle (memory per joined idle connection)
# --------------------------------------------------------------------------------------------


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.n
    run = new_run(args.url)
    size = max(1, args.space_size)
    prefix = space_name("idle")
    pids = parse_pids(args.server_pid)
    rss0 = sum_rss_bytes(pids) if pids else None
    each0 = [proc_rss_bytes(pid) for pid in pids]
    t = time.perf_counter()
    clients, _ = await connect_players(
        run, n, lambda i: f"{prefix}-{i // size}", set(), args.concurrency, args.join_timeout, n
    )
    join_s = time.perf_counter() - t
    await asyncio.sleep(args.settle)
    rss1 = sum_rss_bytes(pids) if pids else None
    result: dict[str, Any] = {
        "mode": "idle",
        "n": n,
        "space_size": size,
        "join_s": round(join_s, 2),
        "rss_before_mb": round(rss0 / 2**20, 1) if rss0 else None,
        "rss_after_mb": round(rss1 / 2**20, 1) if rss1 else None,
        "kb_per_conn": round((rss1 - rss0) / 1024 / n, 1) if rss0 and rss1 else None,
        "errors": run.errors,
    }
    if len(pids) > 1:
        result["server_pids"] = [
            {"pid": pid, "rss_before_mb": _mb(r0), "rss_after_mb": _mb(proc_rss_bytes(pid))}
            for pid, r0 in zip(pids, each0, strict=True)
        ]
    if run.node_of:
        result["players_per_node"] = [run.node_of.count(k) for k in range(len(run.endpoints))]
    await close_all(run, clients, wait=5.0)
    return result


# --------------------------------------------------------------------------------------------
# Mode: storm (1,000 players join one space at once)
# --------------------------------------------------------------------------------------------


async def storm(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.n
    run = new_run(args.url)
    space = space_name("storm")
    pids = parse_pids(args.server_pid)
    cpu0 = sum_cpu_seconds(pids) if pids else None
    each0 = [proc_cpu_seconds(pid) for pid in pids]
    gen0 = own_cpu_seconds()
    t = time.perf_counter()
    clients, join_times = await connect_players(
        run, n, lambda _i: space, set(), args.concurrency, args.join_timeout, n
    )
    total = time.perf_counter() - t
    cpu1 = sum_cpu_seconds(pids) if pids else None
    each1 = [proc_cpu_seconds(pid) for pid in pids]
    join_times.sort()
    result: dict[str, Any] = {
        "mode": "storm",
        "n": n,
        "concurrency": args.concurrency,
        "total_s": round(total, 3),
        "joins_per_s": round(n / total, 1),
        "join_p50_ms": _ms(percentile(join_times, 50)),
        "join_p99_ms": _ms(percentile(join_times, 99)),
        "server_cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None,
        "gen_cpu_s": round(own_cpu_seconds() - gen0, 2),
        "server_rss_mb": _mb(sum_rss_bytes(pids)) if pids else None,
        "errors": run.errors,
    }
    if len(pids) > 1:
        result["server_pids"] = [
            {
                "pid": pid,
                "cpu_s": round(c1 - c0, 2) if c0 is not None and c1 is not None else None,
                "rss_mb": _mb(proc_rss_bytes(pid)),
            }
            for pid, c0, c1 in zip(pids, each0, each1, strict=True)
        ]
    if run.node_of:
        result["players_per_node"] = [run.node_of.count(k) for k in range(len(run.endpoints))]
    await close_all(run, clients, wait=5.0)
    return result


def _mb(rss: int | None) -> float | None:
    return round(rss / 2**20, 1) if rss else None


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p: argparse.ArgumentParser, n: int, concurrency: int) -> None:
        p.add_argument(
            "--url",
            default="http://127.0.0.1:3001",
            help="server base URL, or several (comma-separated) cluster nodes: players are "
            "spread round-robin over them",
        )
        p.add_argument("--n", type=int, default=n, help="number of players")
        p.add_argument(
            "--server-pid",
            default=None,
            help="read its CPU/RSS; several comma-separated pids are summed",
        )
        p.add_argument("--redis-pid", type=int, default=None, help="also report this process's CPU")
        p.add_argument("--concurrency", type=int, default=concurrency, help="joins in flight")
        p.add_argument("--join-timeout", type=float, default=120.0, help="seconds")
        p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")

    p_move = sub.add_parser("move", help="one capacity step: N players moving in one space")
    common(p_move, 40, 50)
    p_move.add_argument("--rate", type=float, default=60.0, help="moves per second per player")
    p_move.add_argument("--duration", type=float, default=8.0, help="seconds of moving")
    p_move.add_argument("--observers", type=int, default=8, help="players that measure")
    p_move.add_argument("--batched", action="store_true", help="join with positionBatching")
    p_move.add_argument("--settle", type=float, default=0.5, help="pause after the joins")
    p_move.add_argument("--converge", type=float, default=2.0, help="wait after the last move")

    p_idle = sub.add_parser("idle", help="RSS per joined idle connection")
    common(p_idle, 1000, 100)
    p_idle.add_argument("--space-size", type=int, default=50, help="players per space")
    p_idle.add_argument("--settle", type=float, default=3.0, help="pause before reading RSS")

    p_storm = sub.add_parser("storm", help="time for N players to join one space")
    common(p_storm, 1000, 100)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    runner = {"move": move, "idle": idle, "storm": storm}[args.mode]
    run_loop: Callable[..., Any] = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            run_loop = uvloop.run
        except ImportError:
            log("uvloop not installed; using the stock asyncio event loop")
    try:
        result = run_loop(runner(args))
    except (RuntimeError, OSError) as exc:
        print(orjson.dumps({"mode": args.mode, "n": args.n, "failed": str(exc)}).decode())
        return 1
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bounded soak test for spacesync: churn for minutes, then check memory and leaks.

A few hundred virtual players, all in this one asyncio process, speak raw Engine.IO v4 /
Socket.IO v5 text frames over aiohttp WebSocket connections (no Socket.IO client library; the
protocol is the one ``bench/loadgen.py`` speaks). Each player loops:

1. connect (WebSocket transport: Engine.IO open ``0{...}``, Socket.IO connect ``40``);
2. ``join:space`` one of ``--spaces`` spaces with a ``dev-`` session token (SPEC §2.1, so no app
   is needed), about half of them with ``positionBatching`` (SPEC §4);
3. stay a random ``--min-stay``..``--max-stay`` seconds: move at about ``--move-rate`` moves/s
   (stopping now and then), chat (keeping under the 5-in-5-s limit of SPEC §6, never three
   identical messages), whisper a player of the same space, jump, enter and leave party zones,
   create invite parties, invite, accept or decline invitations, send party messages;
4. then, at random: ``leave:space`` and join another space on the same socket; join another
   space directly (which leaves the current one); disconnect cleanly (``41`` and a WebSocket
   close); close the TCP connection abruptly (no Socket.IO or WebSocket goodbye); or go silent
   (stop reading and answering pings, so the server must time the socket out, SPEC §1); after a
   disconnect the player reconnects after a short pause.

``GET /metrics`` (SPEC §10) is sampled every ``--sample`` seconds: RSS, asyncio tasks, open file
descriptors, threads, sockets, events handled. Before the clients start, a baseline is taken;
when ``--duration`` is over, every client is closed, the server is left to settle, and it is
sampled again. The tool prints a JSON summary and a Markdown table and writes everything to
``bench/results/soak-<timestamp>.json`` (``--out`` to choose). Verdicts:

- **flat memory**: the least-squares RSS slope over the second half of the load phase is under
  ``--slope-threshold`` MB/min;
- **no leaks**: after settling, ``connections.total`` is 0 and tasks and file descriptors are
  within ``--leak-margin`` of the baseline (the smallest value of the last three settle samples
  is used, so that a request in flight does not count as a leak);
- **healthy**: ``/health`` answers 200 after settling (and, when the tool started the server,
  the server logged no error-level line, every line was JSON, and it exited 0 on SIGTERM).

The exit status is 1 when a verdict fails (2 for a usage or start-up error).

    python bench/soak.py --clients 300 --duration 600          # starts its own server
    python bench/soak.py --url http://127.0.0.1:3001 --clients 100 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from procstats import own_cpu_seconds, raise_nofile_limit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

CHAT_WINDOW_S = 5.5  # the server allows 5 messages in any 5 s; stay a little below
CHAT_PER_WINDOW = 4
JOIN_TIMEOUT_S = 10.0
MAP_W, MAP_H = 2000.0, 1500.0
DIRECTIONS = ("up", "down", "left", "right")
COLORS = ("default", "red", "green", "purple", "orange", "pink", "yellow", "blue")

# Events whose arrival is only counted (the hot path: nothing is parsed).
COUNTED_ONLY = frozenset(
    {
        "player:moved",
        "players:moved",
        "player:jumped",
        "player:joined",
        "player:left",
        "chat:message",
        "chat:system",
        "whisper:received",
        "whisper:receive",
        "whisper:sent",
        "party:message",
        "party:member_joined",
        "party:member_left",
        "party:declined",
        "proximity:status",
        "player:profileUpdated",
    }
)


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def own_open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value units per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx <= 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0


# --------------------------------------------------------------------------------------------
# Shared state of one soak run
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    url: str
    clients: int
    duration: float
    spaces: int
    sample: float
    settle: float
    warmup: float
    ramp: float
    move_rate: float
    min_stay: float
    max_stay: float
    batched_fraction: float
    slope_threshold: float
    leak_margin: int
    seed: int | None


@dataclass
class Run:
    cfg: Config
    ws_url: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    received: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    error_samples: list[str] = field(default_factory=list)
    # space -> indices of the players whose room:joined arrived there (whisper/invite targets)
    members: dict[str, set[int]] = field(default_factory=dict)
    ghosts: list[Ghost] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def error(self, kind: str, detail: str) -> None:
        key = f"{kind}: {detail[:90]}"
        self.errors[key] += 1
        self.counts["errors_received"] += 1
        if len(self.error_samples) < 30:
            self.error_samples.append(key)


@dataclass
class Ghost:
    """A socket its player abandoned without a goodbye; closed for good after ``until``."""

    ws: aiohttp.ClientWebSocketResponse
    until: float


class Disconnected(Exception):
    """The connection ended (closed by the server, or a protocol failure)."""


class Player:
    """One virtual player: a long-lived identity that connects, joins, plays and leaves."""

    def __init__(self, run: Run, index: int, session: aiohttp.ClientSession) -> None:
        self.run = run
        self.index = index
        self.id = f"soak-{index}"
        self.nickname = f"Soak{index}"
        self.session = session
        self.rng = random.Random(run.rng.random())
        self.batched = self.rng.random() < run.cfg.batched_fraction
        self.color = self.rng.choice(COLORS)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.connected: asyncio.Future[None] | None = None
        self.joined: asyncio.Future[None] | None = None
        self.closing_on_purpose = False
        self.space: str | None = None
        self.zone: str | None = None
        self.party: str | None = None  # invite party id (server-generated)
        self.pending_invite_party: str | None = None
        self.chat_times: collections.deque[float] = collections.deque()
        self.serial = 0
        self.x = self.rng.uniform(100, MAP_W - 100)
        self.y = self.rng.uniform(100, MAP_H - 100)
        self.direction = "down"

    # --- wire --------------------------------------------------------------------------------

    async def send(self, event: str, payload: Any = None) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            raise Disconnected("send on a closed socket")
        if payload is None:
            frame = b'42["' + event.encode() + b'"]'
        else:
            frame = b'42["' + event.encode() + b'",' + orjson.dumps(payload) + b"]"
        try:
            await ws.send_str(frame.decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise Disconnected(f"send failed: {exc!r}") from exc

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        run = self.run
        received = run.received
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            if not data:
                continue
            c0 = data[0]
            if c0 == "4":
                if data.startswith('42["'):
                    end = data.find('"', 4)
                    name = data[4:end]
                    received[name] += 1
                    if name in COUNTED_ONLY:
                        continue
                    await self._event(name, data[end + 2 : -1])
                elif data.startswith("40"):
                    if self.connected is not None and not self.connected.done():
                        self.connected.set_result(None)
                elif data.startswith("44"):
                    run.error("connect_error", data[2:])
                    break
                elif data.startswith("41"):
                    break  # the server disconnected this socket
            elif c0 == "2":  # Engine.IO ping
                with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                    await ws.send_str("3")
            elif c0 == "0":  # Engine.IO open
                await ws.send_str("40")
            elif c0 == "1":  # Engine.IO close
                break

    async def _event(self, name: str, raw: str) -> None:
        run = self.run
        if name == "room:joined":
            if self.joined is not None and not self.joined.done():
                self.joined.set_result(None)
            return
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            run.error("undecodable", f"{name} {raw[:60]}")
            return
        if name == "party:joined":
            party_id = payload.get("partyId") if isinstance(payload, dict) else None
            if isinstance(party_id, str) and not party_id.startswith("zone-"):
                self.party = party_id
                if self.pending_invite_party == "create":
                    self.pending_invite_party = party_id
        elif name == "party:left":
            party_id = payload.get("partyId") if isinstance(payload, dict) else None
            if party_id == self.party:
                self.party = None
            if party_id == self.zone:
                self.zone = None
        elif name == "party:invited":
            if not isinstance(payload, dict):
                return
            roll = self.rng.random()
            ref = {"partyId": payload.get("partyId")}
            with contextlib.suppress(Disconnected):
                if roll < 0.5 and self.party is None:
                    run.counts["party_accepts"] += 1
                    await self.send("party:accept", ref)
                elif roll < 0.8:
                    run.counts["party_declines"] += 1
                    await self.send("party:decline", ref)
                # else: left to expire (SPEC §4: after 5 minutes)
        elif name.endswith("error"):
            message = ""
            if isinstance(payload, dict):
                message = str(payload.get("code") or payload.get("message") or "")
            run.error(name, message)
        elif name == "proximity:changed":
            pass
        else:
            run.counts["other_events"] += 1

    # --- connection lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.connected = loop.create_future()
        self.closing_on_purpose = False
        try:
            ws = await self.session.ws_connect(
                self.run.ws_url,
                autoping=True,
                max_msg_size=1 << 20,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.run.counts["connect_failures"] += 1
            raise Disconnected(f"connect failed: {exc!r}") from exc
        self.ws = ws
        self.reader = asyncio.create_task(self._read_guarded(ws))
        try:
            await asyncio.wait_for(asyncio.shield(self.connected), JOIN_TIMEOUT_S)
        except TimeoutError:
            self.run.counts["connect_failures"] += 1
            await self.abort()
            raise Disconnected("no Socket.IO connect") from None
        self.run.counts["connects"] += 1

    async def _read_guarded(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            await self._read(ws)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            if not self.closing_on_purpose:
                self.run.error("read", repr(exc))
        finally:
            if not self.closing_on_purpose and not self.run.stop.is_set():
                self.run.counts["server_closed"] += 1
            self._forget_space()
            for fut in (self.connected, self.joined):
                if fut is not None and not fut.done():
                    fut.set_exception(Disconnected("closed"))
                    fut.exception()  # retrieved: no "never retrieved" warning

    def _forget_space(self) -> None:
        if self.space is not None:
            self.run.members.get(self.space, set()).discard(self.index)
        self.space = None
        self.zone = None
        self.party = None

    async def _finish_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        self.ws = None

    async def close_clean(self) -> None:
        """Socket.IO disconnect, then a WebSocket close handshake."""
        self.closing_on_purpose = True
        self._forget_space()
        ws = self.ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.send_str("41")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3.0)
        await self._finish_reader()

    async def abort(self) -> None:
        """Close the TCP connection with no Socket.IO or WebSocket goodbye."""
        self.closing_on_purpose = True
        self._forget_space()
        ws = self.ws
        if ws is not None:
            hard_close(ws)
        await self._finish_reader()

    async def go_silent(self) -> None:
        """Stop reading and answering pings; the server has to time the socket out."""
        self.closing_on_purpose = True
        self._forget_space()
        ws = self.ws
        await self._finish_reader()
        if ws is not None:
            # pingInterval 25 s + pingTimeout 10 s (SPEC §1), plus a margin
            self.run.ghosts.append(Ghost(ws, time.monotonic() + 45.0))

    # --- behaviour ---------------------------------------------------------------------------

    def pick_space(self, avoid: str | None = None) -> str:
        n = self.run.cfg.spaces
        k = self.rng.randrange(n)
        if n > 1 and f"soak-space-{k}" == avoid:
            k = (k + 1 + self.rng.randrange(n - 1)) % n
        return f"soak-space-{k}"

    async def join(self, space: str) -> None:
        loop = asyncio.get_running_loop()
        self.joined = loop.create_future()
        if self.space is not None:
            self.run.members.get(self.space, set()).discard(self.index)
        self.space = None
        self.zone = None
        self.party = None
        payload: dict[str, Any] = {
            "spaceId": space,
            "playerId": self.id,
            "nickname": self.nickname,
            "avatarColor": self.color,
            "sessionToken": f"dev-{self.id}",
        }
        if self.batched:
            payload["positionBatching"] = True
        await self.send("join:space", payload)
        try:
            await asyncio.wait_for(asyncio.shield(self.joined), JOIN_TIMEOUT_S)
        except TimeoutError:
            self.run.counts["join_timeouts"] += 1
            raise Disconnected("no room:joined") from None
        self.space = space
        self.run.members.setdefault(space, set()).add(self.index)
        self.run.counts["joins"] += 1

    def may_chat(self, now: float) -> bool:
        times = self.chat_times
        while times and now - times[0] > CHAT_WINDOW_S:
            times.popleft()
        return len(times) < CHAT_PER_WINDOW

    def text(self, what: str) -> str:
        self.serial += 1
        return f"{what} #{self.serial} from {self.nickname} <b>hi</b> & bye"

    def other_member(self) -> int | None:
        if self.space is None:
            return None
        here = self.run.members.get(self.space)
        if not here or len(here) < 2:
            return None
        for _ in range(4):
            k = self.rng.choice(tuple(here))
            if k != self.index:
                return k
        return None

    async def move(self, moving: bool) -> None:
        if moving:
            self.direction = (
                self.rng.choice(DIRECTIONS) if self.rng.random() < 0.2 else (self.direction)
            )
            step = self.rng.uniform(8, 40)
            dx, dy = {"up": (0, -step), "down": (0, step), "left": (-step, 0), "right": (step, 0)}[
                self.direction
            ]
            self.x = min(MAP_W, max(0.0, self.x + dx))
            self.y = min(MAP_H, max(0.0, self.y + dy))
        await self.send(
            "player:move",
            {
                "x": round(self.x, 1),
                "y": round(self.y, 1),
                "direction": self.direction,
                "isMoving": moving,
            },
        )
        self.run.counts["moves"] += 1

    async def act(self) -> None:
        """Maybe one non-movement action, at the rates of a lively space."""
        cfg = self.run.cfg
        counts = self.run.counts
        per_step = 1.0 / max(cfg.move_rate, 0.1)
        roll = self.rng.random()
        now = time.monotonic()
        # rates per second: chat 1/10, whisper 1/30, party message 1/25, jump 1/15, party 1/30
        p_chat, p_whisper, p_pmsg, p_jump, p_party = (
            x * per_step for x in (0.1, 1 / 30, 1 / 25, 1 / 15, 1 / 30)
        )
        if roll < p_chat:
            if self.may_chat(now):
                self.chat_times.append(now)
                counts["chats"] += 1
                await self.send("chat:message", {"content": self.text("hello")})
            return
        roll -= p_chat
        if roll < p_whisper:
            target = self.other_member()
            if target is not None and self.may_chat(now):
                self.chat_times.append(now)
                counts["whispers"] += 1
                await self.send(
                    "whisper:send", {"targetId": f"soak-{target}", "content": self.text("psst")}
                )
            return
        roll -= p_whisper
        if roll < p_pmsg:
            party = self.zone or self.party
            if party is not None and self.may_chat(now):
                self.chat_times.append(now)
                counts["party_messages"] += 1
                await self.send("party:message", {"partyId": party, "content": self.text("team")})
            return
        roll -= p_pmsg
        if roll < p_jump:
            counts["jumps"] += 1
            await self.send("player:jump", {"x": round(self.x, 1), "y": round(self.y, 1)})
            return
        roll -= p_jump
        if roll < p_party:
            await self.party_action()

    async def party_action(self) -> None:
        counts = self.run.counts
        roll = self.rng.random()
        if roll < 0.35:
            if self.zone is not None and self.rng.random() < 0.5:
                counts["zone_leaves"] += 1
                self.zone = None
                await self.send("leaveParty")
            else:
                k = self.rng.randrange(3)
                self.zone = f"zone-{k}"
                counts["zone_joins"] += 1
                await self.send("party:join", {"partyId": self.zone, "partyName": f"Zone {k}"})
        elif roll < 0.6:
            if self.party is None:
                counts["party_creates"] += 1
                self.pending_invite_party = "create"
                await self.send("party:create", {"name": f"Crew of {self.nickname}"})
            else:
                counts["party_leaves"] += 1
                party, self.party = self.party, None
                await self.send("party:leave", {"partyId": party})
        elif roll < 0.9:
            target = self.other_member()
            if self.party is not None and target is not None:
                counts["party_invites"] += 1
                await self.send(
                    "party:invite", {"partyId": self.party, "targetId": f"soak-{target}"}
                )
        else:
            counts["profile_updates"] += 1
            self.color = self.rng.choice(COLORS)
            await self.send(
                "player:updateProfile", {"nickname": self.nickname, "avatarColor": self.color}
            )

    async def stay(self, seconds: float) -> None:
        cfg = self.run.cfg
        stop = self.run.stop
        end = time.monotonic() + seconds
        interval = 1.0 / max(cfg.move_rate, 0.1)
        idle_steps = 0
        while not stop.is_set() and time.monotonic() < end:
            if self.ws is None or self.ws.closed or self.space is None:
                raise Disconnected("lost while playing")
            if idle_steps > 0:
                idle_steps -= 1
                if idle_steps == 0:
                    await self.move(True)
            elif self.rng.random() < 0.08:
                idle_steps = self.rng.randint(1, 6)
                await self.move(False)
            else:
                await self.move(True)
            await self.act()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval * self.rng.uniform(0.6, 1.4))

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.run.stop.wait(), seconds)

    async def live(self, start_delay: float) -> None:
        """The player's whole life, until the run stops."""
        cfg = self.run.cfg
        counts = self.run.counts
        await self.pause(start_delay)
        while not self.run.stop.is_set():
            try:
                if self.ws is None:
                    await self.connect()
                    await self.join(self.pick_space())
                await self.stay(self.rng.uniform(cfg.min_stay, cfg.max_stay))
                if self.run.stop.is_set():
                    break
                roll = self.rng.random()
                if roll < 0.35:
                    counts["leaves"] += 1
                    old = self.space
                    self._forget_space()
                    await self.send("leave:space")
                    await self.pause(self.rng.uniform(0.2, 2.0))
                    if not self.run.stop.is_set():
                        await self.join(self.pick_space(avoid=old))
                elif roll < 0.45:
                    counts["switches"] += 1
                    await self.join(self.pick_space(avoid=self.space))
                elif roll < 0.55:
                    counts["clean_disconnects"] += 1
                    await self.close_clean()
                    await self.pause(self.rng.uniform(0.5, 4.0))
                elif roll < 0.93:
                    counts["abrupt_disconnects"] += 1
                    await self.abort()
                    await self.pause(self.rng.uniform(0.5, 4.0))
                else:
                    counts["silent_disconnects"] += 1
                    await self.go_silent()
                    await self.pause(self.rng.uniform(0.5, 4.0))
            except Disconnected:
                # A failed join or a socket the server closed: start over with a new one.
                await self.abort()
                await self.pause(self.rng.uniform(1.0, 3.0))
        await self.close_clean()


def hard_close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """End a WebSocket's TCP connection at once: no close frame, no ``41``.

    The transport is aborted (its socket closed without flushing: FIN, or RST when unread data
    is waiting), then the response is released so that aiohttp forgets the connection."""
    conn = getattr(ws, "_conn", None)
    transport = getattr(conn, "transport", None)
    if transport is not None:
        transport.abort()
    response = getattr(ws, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


async def reap_ghosts(run: Run, final: bool = False) -> None:
    """Close the silent sockets whose server-side timeout has passed (all of them if final)."""
    while True:
        now = time.monotonic()
        keep: list[Ghost] = []
        for ghost in run.ghosts:
            if final or ghost.until <= now:
                hard_close(ghost.ws)
            else:
                keep.append(ghost)
        run.ghosts = keep
        if final:
            return
        await asyncio.sleep(2.0)


# --------------------------------------------------------------------------------------------
# Sampling /metrics
# --------------------------------------------------------------------------------------------


class Sampler:
    def __init__(self, url: str, t0: float) -> None:
        self.url = url.rstrip("/")
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self.failures = 0
        self.session: aiohttp.ClientSession | None = None
        self.last_cpu: tuple[float, float, float] | None = None  # wall, server cpu s, own cpu s

    async def __aenter__(self) -> Sampler:
        # A new connection per request: a kept-alive one could close between samples and
        # make the server's descriptor count jump by one.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def metrics(self) -> dict[str, Any] | None:
        assert self.session is not None
        try:
            async with self.session.get(f"{self.url}/metrics") as response:
                if response.status != 200:
                    self.failures += 1
                    return None
                return await response.json(loads=orjson.loads)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            self.failures += 1
            return None

    async def health(self) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(f"{self.url}/health") as response:
                body = await response.json(loads=orjson.loads)
                return response.status == 200 and body.get("status") == "ok"
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return False

    async def sample(self, phase: str, players: int = 0) -> dict[str, Any] | None:
        m = await self.metrics()
        now = time.monotonic()
        if m is None:
            return None
        proc = m.get("process", {})
        mem = m.get("memory", {})
        cpu = m.get("cpu", {})
        server_cpu = (cpu.get("totalMicroseconds") or 0) / 1e6
        own_cpu = own_cpu_seconds()
        server_pct = own_pct = None
        if self.last_cpu is not None:
            wall = now - self.last_cpu[0]
            if wall >= 0.5:
                server_pct = round((server_cpu - self.last_cpu[1]) / wall * 100, 1)
                own_pct = round((own_cpu - self.last_cpu[2]) / wall * 100, 1)
        self.last_cpu = (now, server_cpu, own_cpu)
        record = {
            "t": round(now - self.t0, 2),
            "phase": phase,
            "rssMB": round((mem.get("rss") or 0) / (1 << 20), 2),
            "heapUsedMB": round((mem.get("heapUsed") or 0) / (1 << 20), 2),
            "tasks": proc.get("tasks"),
            "openFiles": proc.get("openFiles"),
            "threads": proc.get("threads"),
            "connections": m.get("connections", {}).get("total"),
            "rooms": m.get("connections", {}).get("roomCount"),
            "parties": m.get("parties", {}).get("count"),
            "eventsHandled": m.get("events", {}).get("handled"),
            "exitsOwed": m.get("exits", {}).get("owed"),
            "slowClientsDisconnected": m.get("slowClients", {}).get("disconnected"),
            "serverCpuPct": server_pct,
            "toolCpuPct": own_pct,
            "toolFds": own_open_fds(),
            "players": players,
        }
        self.samples.append(record)
        return record


# --------------------------------------------------------------------------------------------
# The server (when the tool starts it)
# --------------------------------------------------------------------------------------------


class OwnServer:
    def __init__(self, log_path: Path, python: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ)
        for key in ("SOCKET_PORT", "REDIS_URL", "DISCORD_WEBHOOK_URL", "DISCORD_ERROR_WEBHOOK_URL"):
            env.pop(key, None)
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            NODE_ENV="development",
            LOG_LEVEL="warn",
            APP_URL=f"http://127.0.0.1:{free_port()}",  # unused: dev tokens owe no EXIT
            EXIT_OUTBOX_PATH=":memory:",
            HOSTNAME="soak-node",
            HANDSHAKES_PER_IP="0",  # every soak client comes from 127.0.0.1
            PYTHONUNBUFFERED="1",
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [self.python, "-m", "spacesync"],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy within {timeout}s; see {self.log_path}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode
        return self.exit_code

    def log_summary(self) -> dict[str, Any]:
        levels: collections.Counter[str] = collections.Counter()
        codes: collections.Counter[str] = collections.Counter()
        bad: list[str] = []
        errors: list[str] = []
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                if len(bad) < 10:
                    bad.append(line[:300])
                levels["non-json"] += 1
                continue
            level = str(entry.get("level"))
            levels[level] += 1
            codes[f"{level}:{entry.get('code')}"] += 1
            if level == "error" and len(errors) < 10:
                errors.append(line[:600])
        return {
            "path": str(self.log_path),
            "lines": sum(levels.values()),
            "levels": dict(levels),
            "codes": dict(codes.most_common(20)),
            "nonJsonLines": bad,
            "errorLines": errors,
        }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def soak(cfg: Config, own: OwnServer | None) -> dict[str, Any]:
    ws_url = cfg.url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
    run = Run(cfg=cfg, ws_url=f"{ws_url}/socket.io/?EIO=4&transport=websocket")
    run.rng.seed(cfg.seed)
    t0 = time.monotonic()
    lag: list[float] = []

    async def lag_monitor() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lag.append(max(0.0, time.monotonic() - t - 0.1))

    async with Sampler(cfg.url, t0) as sampler:
        if not await sampler.health():
            raise RuntimeError(f"{cfg.url}/health does not answer")
        # Baseline: before any client, three samples a second apart.
        for _ in range(3):
            await sampler.sample("baseline")
            await asyncio.sleep(1.0)
        baseline = [s for s in sampler.samples if s["phase"] == "baseline"]
        if not baseline:
            raise RuntimeError("no /metrics sample before the clients started")
        log(
            f"baseline: rss {baseline[-1]['rssMB']} MB, tasks {baseline[-1]['tasks']}, "
            f"fds {baseline[-1]['openFiles']}; starting {cfg.clients} clients over {cfg.ramp:.0f} s"
        )

        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        session = aiohttp.ClientSession(connector=connector)
        players = [Player(run, i, session) for i in range(cfg.clients)]
        load_t0 = time.monotonic()
        cpu0 = own_cpu_seconds()
        monitor = asyncio.create_task(lag_monitor())
        reaper = asyncio.create_task(reap_ghosts(run))
        tasks = [
            asyncio.create_task(p.live(cfg.ramp * i / max(1, cfg.clients)))
            for i, p in enumerate(players)
        ]

        def live_sockets() -> int:
            return sum(1 for p in players if p.ws is not None and not p.ws.closed)

        next_sample = load_t0 + cfg.sample
        next_log = load_t0 + 60.0
        deadline = load_t0 + cfg.duration
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            await asyncio.sleep(max(0.0, min(next_sample, deadline) - now))
            if time.monotonic() >= next_sample:
                next_sample += cfg.sample
                s = await sampler.sample("load", live_sockets())
                dead = [t for t in tasks if t.done() and t.exception() is not None]
                if dead:
                    raise RuntimeError(f"a player task failed: {dead[0].exception()!r}")
                if own is not None and not own.alive:
                    log("the server process has exited!")
                    break
                if s is not None and time.monotonic() >= next_log:
                    next_log += 60.0
                    log(
                        f"t={s['t'] - (load_t0 - t0):.0f}s rss {s['rssMB']} MB tasks {s['tasks']} "
                        f"fds {s['openFiles']} sockets {s['connections']} "
                        f"server cpu {s['serverCpuPct']}% tool cpu {s['toolCpuPct']}% "
                        f"joins {run.counts['joins']} errors {run.counts['errors_received']}"
                    )
        load_end = time.monotonic()
        load_cpu = own_cpu_seconds() - cpu0
        s_end = await sampler.sample("load", live_sockets())
        # Stop every client, then the silent ones too.
        log("stopping the clients")
        run.stop.set()
        _done, pending = await asyncio.wait(tasks, timeout=30.0)
        for t in pending:
            t.cancel()
        stop_failures = [
            repr(t.exception()) for t in _done if not t.cancelled() and t.exception() is not None
        ]
        reaper.cancel()
        await reap_ghosts(run, final=True)
        await session.close()
        monitor.cancel()
        stopped_at = time.monotonic()

        # Settle: at least cfg.settle seconds, and until the server holds no socket (max +60 s).
        settle_deadline = stopped_at + cfg.settle + 60.0
        while True:
            await asyncio.sleep(min(2.0, max(0.5, cfg.settle / 5)))
            s = await sampler.sample("settle")
            now = time.monotonic()
            settled_long_enough = now - stopped_at >= cfg.settle
            if settled_long_enough and s is not None and s["connections"] == 0:
                break
            if now >= settle_deadline:
                break
        for _ in range(2):  # two more, for the min-of-last-three rule
            await asyncio.sleep(1.0)
            await sampler.sample("settle")
        healthy = await sampler.health()
        tool_fds_end = own_open_fds()

    return analyse(
        cfg,
        run,
        sampler,
        load_t0 - t0,
        load_end - t0,
        load_end - load_t0,
        load_cpu,
        lag,
        healthy,
        stop_failures,
        s_end,
        tool_fds_end,
    )


def analyse(
    cfg: Config,
    run: Run,
    sampler: Sampler,
    load_start: float,
    load_end: float,
    load_wall: float,
    load_cpu: float,
    lag: list[float],
    healthy: bool,
    stop_failures: list[str],
    end_sample: dict[str, Any] | None,
    tool_fds_end: int | None,
) -> dict[str, Any]:
    samples = sampler.samples
    baseline = [s for s in samples if s["phase"] == "baseline"]
    load = [s for s in samples if s["phase"] == "load"]
    settle = [s for s in samples if s["phase"] == "settle"]
    base = baseline[-1]
    warm = [s for s in load if s["t"] - load_start >= cfg.warmup]
    start = warm[0] if warm else (load[0] if load else base)
    end = end_sample or (load[-1] if load else base)
    half = load_start + (load_end - load_start) / 2
    second_half = [(s["t"], s["rssMB"]) for s in load if s["t"] >= half]
    slope = slope_per_minute(second_half)
    # heapUsed drops at every full garbage collection: compare its floors (lowest values) in
    # the first and second half after warm-up, besides its least-squares slope.
    heap_first = [s["heapUsedMB"] for s in warm if s["t"] < half]
    heap_second = [s["heapUsedMB"] for s in load if s["t"] >= half]
    heap_slope = slope_per_minute([(s["t"], s["heapUsedMB"]) for s in load if s["t"] >= half])
    last3 = settle[-3:] if settle else []

    def settled(key: str) -> Any:
        values = [s[key] for s in last3 if s.get(key) is not None]
        return min(values) if values else None

    def peak(key: str, rows: list[dict[str, Any]]) -> Any:
        values = [s[key] for s in rows if s.get(key) is not None]
        return max(values) if values else None

    settled_tasks = settled("tasks")
    settled_fds = settled("openFiles")
    settled_conn = last3[-1]["connections"] if last3 else None
    leak_checks = {
        "tasks": settled_tasks is not None
        and base["tasks"] is not None
        and settled_tasks <= base["tasks"] + cfg.leak_margin,
        "openFiles": settled_fds is not None
        and base["openFiles"] is not None
        and settled_fds <= base["openFiles"] + cfg.leak_margin,
        "connections": settled_conn == 0,
    }
    flat = slope is not None and slope < cfg.slope_threshold
    lag_sorted = sorted(lag)
    summary: dict[str, Any] = {
        "config": cfg.__dict__,
        "loadSeconds": round(load_wall, 1),
        "rssMB": {
            "baseline": base["rssMB"],
            "start": start["rssMB"],
            "startAtSeconds": round(start["t"] - load_start, 1),
            "end": end["rssMB"],
            "settled": last3[-1]["rssMB"] if last3 else None,
            "max": peak("rssMB", samples),
            "slopeSecondHalfMBPerMin": None if slope is None else round(slope, 3),
            "secondHalfSamples": len(second_half),
        },
        "heapUsedMB": {
            "baseline": base["heapUsedMB"],
            "start": start["heapUsedMB"],
            "end": end["heapUsedMB"],
            "settled": last3[-1]["heapUsedMB"] if last3 else None,
            "max": peak("heapUsedMB", samples),
            "floorFirstHalf": min(heap_first) if heap_first else None,
            "floorSecondHalf": min(heap_second) if heap_second else None,
            "slopeSecondHalfMBPerMin": None if heap_slope is None else round(heap_slope, 3),
        },
        "tasks": {
            "baseline": base["tasks"],
            "underLoadMax": peak("tasks", load),
            "end": end["tasks"],
            "settled": settled_tasks,
        },
        "openFiles": {
            "baseline": base["openFiles"],
            "underLoadMax": peak("openFiles", load),
            "end": end["openFiles"],
            "settled": settled_fds,
        },
        "threads": {
            "baseline": base["threads"],
            "underLoadMax": peak("threads", load),
            "settled": settled("threads"),
        },
        "connections": {
            "baseline": base["connections"],
            "underLoadMax": peak("connections", load),
            "end": end["connections"],
            "settled": settled_conn,
        },
        "eventsHandled": end.get("eventsHandled"),
        "serverCpuPctMean": _mean([s["serverCpuPct"] for s in load[1:]]),
        "tool": {
            "cpuPct": round(load_cpu / load_wall * 100, 1) if load_wall > 0 else None,
            "cpuPctMax": peak("toolCpuPct", load[1:]),
            "loopLagP99ms": round(lag_sorted[int(0.99 * (len(lag_sorted) - 1))] * 1000, 1)
            if lag_sorted
            else None,
            "loopLagMaxMs": round(lag_sorted[-1] * 1000, 1) if lag_sorted else None,
            "fdsEnd": tool_fds_end,
        },
        "counts": dict(sorted(run.counts.items())),
        "received": dict(run.received.most_common()),
        "errors": dict(run.errors.most_common(30)),
        "stopFailures": stop_failures[:5],
        "metricsFailures": sampler.failures,
        "healthAfterSettle": healthy,
        "verdicts": {
            "flatMemory": flat,
            "noLeaks": all(leak_checks.values()),
            "leakChecks": leak_checks,
            "healthy": healthy and not stop_failures,
        },
        "samples": samples,
    }
    return summary


def _mean(values: list[Any]) -> float | None:
    real = [v for v in values if isinstance(v, int | float)]
    return round(sum(real) / len(real), 1) if real else None


def yes(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def markdown(summary: dict[str, Any]) -> str:
    cfg = summary["config"]
    r, t, f, c = summary["rssMB"], summary["tasks"], summary["openFiles"], summary["connections"]
    th, tool, v = summary["threads"], summary["tool"], summary["verdicts"]
    h = summary["heapUsedMB"]
    n = summary["counts"]
    lines = [
        f"### Soak: {cfg['clients']} clients, {summary['loadSeconds']:.0f} s, "
        f"{cfg['spaces']} spaces",
        "",
        "| figure | baseline (no clients) | start (after warm-up) | end (under load) | "
        "max | settled (clients gone) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| RSS MB | {r['baseline']} | {r['start']} (at {r['startAtSeconds']} s) | {r['end']} | "
        f"{r['max']} | {r['settled']} |",
        f"| heapUsed MB | {h['baseline']} | {h['start']} | {h['end']} | {h['max']} | "
        f"{h['settled']} |",
        f"| asyncio tasks | {t['baseline']} | – | {t['end']} | {t['underLoadMax']} | "
        f"{t['settled']} |",
        f"| open fds | {f['baseline']} | – | {f['end']} | {f['underLoadMax']} | {f['settled']} |",
        f"| threads | {th['baseline']} | – | – | {th['underLoadMax']} | {th['settled']} |",
        f"| sockets (connections.total) | {c['baseline']} | – | {c['end']} | {c['underLoadMax']} "
        f"| {c['settled']} |",
        "",
        f"RSS slope over the second half of the load: **{r['slopeSecondHalfMBPerMin']} MB/min** "
        f"({r['secondHalfSamples']} samples; threshold {cfg['slope_threshold']} MB/min). "
        f"heapUsed: slope {h['slopeSecondHalfMBPerMin']} MB/min, lowest value "
        f"{h['floorFirstHalf']} MB in the first half after warm-up and "
        f"{h['floorSecondHalf']} MB in the second half (it drops at each full garbage "
        "collection; a rising floor would be a leak).",
        "",
        "| activity | count |",
        "|---|---:|",
    ]
    for key in (
        "connects",
        "joins",
        "leaves",
        "switches",
        "abrupt_disconnects",
        "clean_disconnects",
        "silent_disconnects",
        "server_closed",
        "moves",
        "chats",
        "whispers",
        "party_messages",
        "jumps",
        "zone_joins",
        "zone_leaves",
        "party_creates",
        "party_invites",
        "party_accepts",
        "party_declines",
        "party_leaves",
        "profile_updates",
        "join_timeouts",
        "connect_failures",
        "errors_received",
    ):
        lines.append(f"| {key.replace('_', ' ')} | {n.get(key, 0)} |")
    lines.append(f"| events handled by the server | {summary['eventsHandled']} |")
    if summary["errors"]:
        lines += [
            "",
            "Errors received (kind: count): "
            + "; ".join(f"{k} ×{cnt}" for k, cnt in list(summary["errors"].items())[:8]),
        ]
    lines += [
        "",
        f"Server CPU (mean under load): {summary['serverCpuPctMean']} %. Soak tool CPU: "
        f"{tool['cpuPct']} % of one core (max sample {tool['cpuPctMax']} %), event-loop lag "
        f"p99 {tool['loopLagP99ms']} ms.",
        "",
        "| verdict | result |",
        "|---|---|",
        f"| flat memory (slope < {cfg['slope_threshold']} MB/min) | {yes(v['flatMemory'])} |",
        f"| no leaks (tasks, fds ≤ baseline + {cfg['leak_margin']}; 0 sockets) | "
        f"{yes(v['noLeaks'])} |",
        f"| healthy after settling | {yes(v['healthy'])} |",
    ]
    server = summary.get("server")
    if server:
        lines.append(
            f"| server log: {server['log']['lines']} lines, levels {server['log']['levels']}; "
            f"exit code {server['exitCode']} | {yes(server['ok'])} |"
        )
    return "\n".join(lines)


def code_state() -> dict[str, Any]:
    """The commit the server code comes from, and the files of src/ that differ from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD"),
        "srcChanges": status.splitlines() if status else [],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="target this server instead of starting one")
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--spaces", type=int, default=10)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between /metrics samples")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to wait after the clients")
    ap.add_argument("--warmup", type=float, help="start RSS is taken after this (10%% of duration)")
    ap.add_argument(
        "--ramp", type=float, help="seconds over which clients start (default min(30, duration/10))"
    )
    ap.add_argument("--move-rate", type=float, default=3.0, help="moves/s of a moving player")
    ap.add_argument("--min-stay", type=float, default=5.0)
    ap.add_argument("--max-stay", type=float, default=40.0)
    ap.add_argument(
        "--batched-fraction",
        type=float,
        default=0.5,
        help="share of players joining with positionBatching",
    )
    ap.add_argument("--slope-threshold", type=float, default=1.0, help="MB/min")
    ap.add_argument("--leak-margin", type=int, default=5)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out", help="JSON results file (default bench/results/soak-<time>.json)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the server")
    ap.add_argument("--no-uvloop", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.sample <= 0 or args.spaces < 1:
        log("--clients, --duration, --sample and --spaces must be positive")
        return 2
    if args.min_stay <= 0 or args.max_stay < args.min_stay:
        log("need 0 < --min-stay <= --max-stay")
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"soak-{stamp}.json"
    raise_nofile_limit()
    code = code_state()  # before the server starts: the code it runs
    own: OwnServer | None = None
    url = args.url
    if url is None:
        own = OwnServer(out.with_suffix(".server.log"), args.python)
        try:
            own.start()
        except RuntimeError as exc:
            log(str(exc))
            return 2
        url = own.url
        log(f"started the server (pid {own.pid}) at {url}; log {own.log_path}")
    cfg = Config(
        url=url,
        clients=args.clients,
        duration=args.duration,
        spaces=args.spaces,
        sample=args.sample,
        settle=args.settle,
        warmup=args.warmup if args.warmup is not None else 0.1 * args.duration,
        ramp=args.ramp if args.ramp is not None else min(30.0, args.duration / 10),
        move_rate=args.move_rate,
        min_stay=args.min_stay,
        max_stay=args.max_stay,
        batched_fraction=args.batched_fraction,
        slope_threshold=args.slope_threshold,
        leak_margin=args.leak_margin,
        seed=args.seed,
    )
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        summary = asyncio.run(soak(cfg, own))
    except RuntimeError as exc:
        log(f"soak failed: {exc}")
        if own is not None:
            own.stop()
        return 2
    if own is not None:
        alive = own.alive
        code = own.stop()
        log_info = own.log_summary()
        ok = (
            alive
            and code == 0
            and not log_info["nonJsonLines"]
            and log_info["levels"].get("error", 0) == 0
        )
        summary["server"] = {
            "pid": own.pid,
            "aliveAtEnd": alive,
            "exitCode": code,
            "log": log_info,
            "ok": ok,
        }
        summary["verdicts"]["healthy"] = summary["verdicts"]["healthy"] and ok
    summary["code"] = code
    summary["results"] = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    printed = {k: v for k, v in summary.items() if k != "samples"}
    print(json.dumps(printed, indent=2))
    print()
    print(markdown(printed))
    print()
    print(f"Samples: {out}")
    v = summary["verdicts"]
    return 0 if v["flatMemory"] and v["noLeaks"] and v["healthy"] else 1


if __name__ == "__main__":
    sys.exit(main())

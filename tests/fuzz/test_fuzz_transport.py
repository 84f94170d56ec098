"""Hostile sessions below the events, fuzzed through a real server: binary input and sessions
that never send a Socket.IO CONNECT.

README "Security" (connections): no event carries binary data, so a Socket.IO binary packet
(types 5 and 6, whatever it announces) or a binary frame nobody announced closes the
connection before anything is buffered (E3001, ``abuse.binaryPacket``); a session that sends no
Socket.IO CONNECT within ``CONNECT_TIMEOUT`` is closed (``abuse.connectTimeout``). SPEC §8: no
input may disconnect other players.

Bare Engine.IO clients (WebSocket and long-polling) do what no Socket.IO client would. Binary
examples open a few sessions at once, each before its Socket.IO CONNECT, after it, or after
joining the arena's space; each sends one binary packet or frame (headers announcing nothing,
a few or billions of attachments, malformed counts, binary acknowledgements, binary frames of
up to 60 KB) and keeps streaming frames. Then: every session was closed within 3 s, each
counted once as ``binaryPacket``; the server's memory stayed within a bound of where it
started; a player that joined through such a session has left the space; the bystander got
nothing and still hears the probe; the logs are clean. Handshake examples open sessions that
send nothing, or anything but a CONNECT to the main namespace: all are closed once the connect
timeout (1 s here) has passed, and the count of open connections returns to where it was.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    Arena,
    BinaryKept,
    BystanderDisturbed,
    StateCorrupted,
    Verdict,
    WrongReplies,
    aget_json,
    arena_on,
    fresh_tag,
    fuzz_settings,
    run,
    seeds,
)
from support.ids import dev_token, unique
from support.rawio import RawPolling, RawWebSocket, binary_packet, rss_bytes
from support.server import ServerProcess

BINARY_EXAMPLES = 12
HANDSHAKE_EXAMPLES = 6
MIB = 1024 * 1024
RSS_BOUND = 32 * MIB
"""How far the server's memory may rise above where it was when the module started."""

HEADERS = [
    '51-["chat:message",{"_placeholder":true,"num":0}]',
    '50-["chat:message",{"content":"none"}]',
    '5["chat:message",{"content":"no count"}]',
    '59999999999-["x",{"_placeholder":true,"num":0}]',
    '51000000000-["x"]',
    "5-",
    "5abc",
    "5 1-[]",
    "5",
    '61-0[{"_placeholder":true,"num":0}]',
    "6",
    "60-0[]",
    '61/admin,0[{"_placeholder":true,"num":0}]',
]


@dataclass(frozen=True)
class Session:
    """One bare client: its transport, how far it gets first (``"open"``: the Engine.IO
    handshake only, ``"connect"``: the Socket.IO CONNECT too, ``"join"``: a join as well), the
    binary input that must close it, and how many frames it streams after."""

    transport: str
    stage: str
    first: str | bytes
    stream: int
    seed: int


def sessions() -> st.SearchStrategy[Session]:
    def build(transport: str, stage: str, kind: int, stream: int, seed: int) -> Session:
        r = random.Random(seed)
        if kind == 0:
            first: str | bytes = r.randbytes(
                r.randrange(1, 60_000 if transport == "websocket" else 30_000)
            )
        elif kind == 1:
            first = r.choice(HEADERS).encode()  # a header as a binary frame: still binary input
        else:
            first = r.choice(HEADERS)
        return Session(transport, stage, first, stream, seed)

    return st.builds(
        build,
        st.sampled_from(["websocket", "polling"]),
        st.sampled_from(["open", "connect", "join"]),
        st.integers(0, 2),
        st.integers(0, 40),
        seeds,
    )


@pytest.fixture(scope="module")
def transport_server(module_servers: Any) -> ServerProcess:
    server: ServerProcess = module_servers.start(
        NODE_ENV="development", CONNECT_TIMEOUT="1", JOIN_TIMEOUT="30"
    )
    return server


@pytest.fixture(scope="module")
def arena(transport_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(transport_server)


@pytest.fixture(scope="module")
def baseline_rss(arena: Arena) -> int:
    run(arena, arena.ensure_clean())
    assert arena.server.proc is not None
    return rss_bytes(arena.server.proc.pid)


async def _abuse(arena: Arena, reason: str) -> int:
    status, metrics = await aget_json(f"{arena.server.url}/metrics")
    assert status == 200, status
    return int(metrics["abuse"].get(reason, 0))


def _join_text(arena: Arena, player: str) -> str:
    return (
        f'42["join:space",{{"spaceId":"{arena.space}","playerId":"{player}",'
        f'"nickname":"Raw","sessionToken":"{dev_token()}"}}]'
    )


async def _run_websocket(arena: Arena, s: Session, player: str) -> bool:
    """The session over WebSocket; whether the server closed it."""
    r = random.Random(s.seed)
    raw = RawWebSocket(arena.server.host, arena.server.port)
    try:
        assert await raw.open() == 101
        if s.stage != "open":
            await raw.connect()
        if s.stage == "join":
            raw.send(_join_text(arena, player))
            while not (await raw.text() or "").startswith('42["room:joined"'):
                pass
        if isinstance(s.first, bytes):
            raw.send_binary(s.first)
        else:
            raw.send("4" + s.first)
        for _ in range(s.stream):
            raw.send_binary(r.randbytes(r.randrange(1, 60_000)))
            if not await raw.drain():
                break
        return await raw.closed_within(3.0)
    finally:
        raw.close()


async def _run_polling(arena: Arena, s: Session, player: str) -> bool:
    """The session over long-polling; whether the server closed it (its next request is
    answered 400: the session is gone)."""
    r = random.Random(s.seed)
    polling = RawPolling(arena.server.url)
    try:
        assert (await polling.open()).status_code == 200
        if s.stage != "open":
            await polling.connect()
        if s.stage == "join":
            assert (await polling.post(_join_text(arena, player))).status_code == 200
            replies = ""
            for _ in range(5):
                replies += (await polling.get()).text
                if '"room:joined"' in replies:
                    break
        first = binary_packet(s.first) if isinstance(s.first, bytes) else "4" + s.first
        await polling.post(first)
        for _ in range(s.stream // 4):
            if (await polling.post(binary_packet(r.randbytes(16_000)))).status_code == 400:
                return True
        return (await polling.post("3")).status_code == 400
    finally:
        await polling.aclose()


async def binary_example(arena: Arena, batch: list[Session], baseline: int) -> None:
    await arena.ensure_clean()
    assert arena.bystander is not None and arena.server.proc is not None
    verdict = Verdict(arena, [])
    start = len(arena.bystander.events)
    before = await _abuse(arena, "binaryPacket")
    players = [unique("raw") for _ in batch]
    results = await asyncio.gather(
        *(
            (_run_websocket if s.transport == "websocket" else _run_polling)(arena, s, p)
            for s, p in zip(batch, players, strict=True)
        ),
        return_exceptions=True,
    )
    for s, result in zip(batch, results, strict=True):
        if result is not True:
            verdict.add(
                BinaryKept,
                f"{s.transport} session at {s.stage!r} after {s.first!r:.80}: {result!r}",
            )
    counted = await _abuse(arena, "binaryPacket") - before
    if counted != len(batch):
        verdict.add(WrongReplies, f"{len(batch)} sessions refused, binaryPacket counted {counted}")
    arena.payloads_sent["<raw binary session>"] = arena.payloads_sent.get(
        "<raw binary session>", 0
    ) + len(batch)
    await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(fresh_tag()))
    joined = {p for s, p in zip(batch, players, strict=True) if s.stage == "join"}
    _, presence = await aget_json(f"{arena.server.url}/presence/{arena.space}")
    left = joined & {u["id"] for u in presence["onlineUsers"]}
    if left:
        verdict.add(StateCorrupted, f"players of closed sessions still in the space: {left}")
    heard = {e.event for e in arena.bystander.since(start)} - {
        "player:joined",
        "player:left",
        "chat:system",
        "player:jumped",
        "chat:message",
        "chat:messageIdUpdate",  # the probe's chat line, saved
    }
    if heard:
        verdict.add(BystanderDisturbed, f"the bystander heard {sorted(heard)}")
    growth = rss_bytes(arena.server.proc.pid) - baseline
    if growth > RSS_BOUND:
        verdict.add(StateCorrupted, f"server RSS {growth / MIB:.1f} MiB above its start")
    verdict.check_logs()
    verdict.raise_if_any()


@pytest.mark.timeout(900)
@fuzz_settings(BINARY_EXAMPLES)
@given(batch=st.lists(sessions(), min_size=1, max_size=4))
def test_binary_input_closes_any_session(
    arena: Arena, baseline_rss: int, batch: list[Session]
) -> None:
    """README "Security": binary input closes its session at once, whoever sends it, and the
    server keeps nothing of it."""
    run(arena, binary_example(arena, batch, baseline_rss))


NOT_CONNECT = [
    None,  # nothing at all
    '42["join:space",{"spaceId":"x","nickname":"Early"}]',
    "41",
    "43[]",
    "40/admin,",
    "40/socket.io,{}",
    "4garbage",
    "4",
    "2",
    "3",
    "6",
]


async def _silent_session(arena: Arena, transport: str, sends: str | None) -> bool:
    """A session that never connects to the main namespace; whether it was closed in time."""
    if transport == "websocket":
        raw = RawWebSocket(arena.server.host, arena.server.port)
        try:
            assert await raw.open() == 101
            if sends is not None:
                raw.send(sends)
            return await raw.closed_within(3.5)
        finally:
            raw.close()
    polling = RawPolling(arena.server.url)
    try:
        assert (await polling.open()).status_code == 200
        if sends is not None:
            await polling.post(sends)
        await asyncio.sleep(2.5)
        return (await polling.post("3")).status_code == 400
    finally:
        await polling.aclose()


async def handshake_example(arena: Arena, batch: list[tuple[str, str | None]]) -> None:
    await arena.ensure_clean()
    assert arena.bystander is not None
    verdict = Verdict(arena, [])
    _, metrics = await aget_json(f"{arena.server.url}/metrics")
    connections = metrics["connections"]["total"]
    before = await _abuse(arena, "connectTimeout")
    results = await asyncio.gather(
        *(_silent_session(arena, t, sends) for t, sends in batch), return_exceptions=True
    )
    for (transport, sends), result in zip(batch, results, strict=True):
        if result is not True:
            verdict.add(StateCorrupted, f"{transport} session sending {sends!r} open: {result!r}")
    counted = await _abuse(arena, "connectTimeout") - before
    silent = sum(1 for _, sends in batch if sends is None)
    if not silent <= counted <= len(batch):
        verdict.add(WrongReplies, f"{len(batch)} sessions, connectTimeout counted {counted}")
    _, metrics = await aget_json(f"{arena.server.url}/metrics")
    if metrics["connections"]["total"] != connections:
        verdict.add(StateCorrupted, f"connections {connections} then {metrics['connections']}")
    arena.payloads_sent["<session without connect>"] = arena.payloads_sent.get(
        "<session without connect>", 0
    ) + len(batch)
    await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(fresh_tag()))
    verdict.check_logs()
    verdict.raise_if_any()


@pytest.mark.timeout(900)
@fuzz_settings(HANDSHAKE_EXAMPLES)
@given(
    batch=st.lists(
        st.tuples(st.sampled_from(["websocket", "polling"]), st.sampled_from(NOT_CONNECT)),
        min_size=1,
        max_size=6,
    )
)
def test_sessions_without_connect_are_closed(
    arena: Arena, batch: list[tuple[str, str | None]]
) -> None:
    """README "Security": a session that sends no Socket.IO CONNECT to the main namespace
    within ``CONNECT_TIMEOUT`` is closed, whatever else it sends."""
    run(arena, handshake_example(arena, batch))

"""Floods of every event that reaches other players, fuzzed through a real server.

README "Security" (rate limits): every event that reaches other players is limited per socket
(and where noted per player or per target); windows are fixed and aligned on the clock, so up to
twice a limit passes around a window boundary; the first refused event of a window is answered
once with ``RATE_LIMITED``, the others silently; only a socket over the same limit in 10 windows
in a row, or with 5,000 refused events, is disconnected. Chat, whispers and party messages share
5 per 5 s per player (every refusal answered); moves are capped at 120 a second, the newest move
is still delivered.

Each example joins a fresh flooder to the arena's space and has it send a burst of one event
(valid payloads, so that every one would go through but for the limit), all at once or in a few
spaced waves. Then: the bystander received at most what the limit lets through in the time the
burst took (and, where nothing else limits it, at least the limit's worth); the flooder got at
most one ``RATE_LIMITED`` answer per limit and window and is still connected; the bystander got no
error and still hears the probe; the logs are clean.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    CHAT_LIMIT,
    RATE_LIMITS,
    Arena,
    BystanderDisturbed,
    Received,
    SocketDropped,
    Stalled,
    StateCorrupted,
    Verdict,
    WrongReplies,
    arena_on,
    count_errors,
    count_rate_limited,
    fresh_tag,
    fuzz_settings,
    received_problems,
    run,
)
from support.ids import dev_token, unique
from support.server import ServerProcess

EXAMPLES = 24
TICK = 0.05  # positions go out once per 50 ms tick


@dataclass(frozen=True)
class Flood:
    """One event to flood: the arguments of the ``i``-th (given the arena and the flooder's
    ``player`` and ``party`` ids), what the bystander receives for it, the most it may get for
    ``n`` sent in ``seconds``, and the least for ``n`` (``None``: no lower bound)."""

    event: str
    payload: Callable[[int, Arena, dict[str, str]], list[Any]]
    heard: tuple[str, ...]
    most: Callable[[int, float], int]
    least: Callable[[int], int] | None


def _windows(limit: int, window: float) -> Callable[[int, float], int]:
    return lambda n, seconds: min(n, limit * (math.floor(seconds / window) + 2))


def _rule(event: str) -> Callable[[int, float], int]:
    rule = RATE_LIMITS[event]
    return _windows(rule.limit, rule.window)


def _chat_most(n: int, seconds: float) -> int:
    """5 in any 5 s (a sliding window, not a fixed one)."""
    return min(n, CHAT_LIMIT[0] * (math.floor(seconds / CHAT_LIMIT[1]) + 1))


FLOODS = [
    Flood(
        "player:jump",
        lambda i, a, ids: [{"x": i, "y": -i}],
        ("player:jumped",),
        _rule("player:jump"),
        lambda n: min(n, RATE_LIMITS["player:jump"].limit),
    ),
    Flood(
        "player:updateProfile",
        lambda i, a, ids: [{"nickname": f"Flood {i}", "avatarColor": "red"}],
        ("player:profileUpdated",),
        _rule("player:updateProfile"),
        lambda n: min(n, RATE_LIMITS["player:updateProfile"].limit),
    ),
    Flood(
        "chat:message",
        lambda i, a, ids: [{"content": f"flood {i}"}],
        ("chat:message",),
        _chat_most,
        lambda n: min(n, CHAT_LIMIT[0]),
    ),
    Flood(
        "whisper:send",
        lambda i, a, ids: [{"targetId": a.bystander_id, "content": f"psst {i}"}],
        ("whisper:received",),
        _chat_most,
        lambda n: min(n, CHAT_LIMIT[0]),
    ),
    Flood(
        "proximity:set",
        lambda i, a, ids: [{"enabled": i % 2 == 0}],
        ("proximity:changed",),
        _rule("proximity:set"),
        None,  # setting the state it already has may tell nobody
    ),
    Flood(
        "party:invite",
        lambda i, a, ids: [{"partyId": ids["party"], "targetId": a.bystander_id}],
        ("party:invited",),
        _windows(3, 30.0),  # per inviter and target
        None,  # the bystander's allowance as a target is shared by every example
    ),
    Flood(
        "leave:space",  # alternating with join:space
        lambda i, a, ids: [] if i % 2 == 0 else [_join_payload(a, ids)],
        ("player:left", "player:joined"),
        lambda n, s: 2 * _rule("leave:space")(n, s),
        None,
    ),
]


def _join_payload(arena: Arena, ids: dict[str, str]) -> dict[str, Any]:
    return {
        "spaceId": arena.space,
        "playerId": ids["player"],
        "nickname": "Flooder",
        "sessionToken": dev_token(),
    }


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


def _from(player: str) -> Callable[[Received], bool]:
    def match(item: Received) -> bool:
        p = item.payload
        if not isinstance(p, dict):
            return False
        return player in (p.get("id"), p.get("senderId"), p.get("changedBy"), p.get("inviterId"))

    return match


async def flood_example(arena: Arena, flood: Flood, n: int, waves: int) -> None:
    await arena.ensure_clean()
    assert arena.bystander is not None
    tag = fresh_tag()
    verdict = Verdict(arena, [])
    flooder = await arena.client("flooder")
    player = unique("flooder")
    await flooder.join(arena.space, "Flooder", player, role="OWNER")
    ids = {"player": player, "party": "none"}
    if flood.event == "party:invite":
        await flooder.emit_args("party:create", [{"name": "Flood party"}])
        ids["party"] = (await flooder.wait_for("party:joined"))["partyId"]
    await arena.bystander.wait_for("player:joined", lambda p: p["id"] == player)
    start = len(arena.bystander.events)
    mine = len(flooder.events)

    began = time.monotonic()
    per_wave = math.ceil(n / waves)
    for i in range(n):
        if i and i % per_wave == 0:
            await asyncio.sleep(0.15)
        event = flood.event
        if flood.event == "leave:space" and i % 2:
            event = "join:space"
        await flooder.emit_args(event, flood.payload(i, arena, ids))
    await verdict.step(Stalled, flooder.sync())
    await verdict.step(Stalled, flooder.sync())
    seconds = time.monotonic() - began
    arena.payloads_sent[f"<flood {flood.event}>"] = (
        arena.payloads_sent.get(f"<flood {flood.event}>", 0) + n
    )
    # The probe's jump is written to the bystander after everything the flood made the server
    # send it, so once it has arrived the count below is complete.
    await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))

    heard = [e for e in arena.bystander.since(start) if e.event in flood.heard and _from(player)(e)]
    most = flood.most(n, seconds)
    if len(heard) > most:
        verdict.add(
            WrongReplies,
            f"{n} {flood.event} in {seconds:.2f}s: the bystander got {len(heard)} "
            f"{'/'.join(flood.heard)}, at most {most} allowed",
        )
    if flood.least is not None and len(heard) < flood.least(n):
        verdict.add(
            StateCorrupted,
            f"{n} {flood.event}: the bystander got only {len(heard)}, the limit lets "
            f"{flood.least(n)} through",
        )
    rule = RATE_LIMITS.get(flood.event)
    limited = count_rate_limited(flooder, mine)
    if rule is not None:
        allowed = rule.rules * (math.floor(seconds / rule.window) + 2)
        if flood.event == "leave:space":
            allowed *= 2  # joins too
        if limited > allowed:
            verdict.add(WrongReplies, f"the flooder got {limited} RATE_LIMITED answers")
    if not flooder.connected:
        verdict.add(SocketDropped, f"the flooder was disconnected: {flooder.disconnect_reason}")
    if any(count_errors(arena.bystander, start).values()):
        verdict.add(BystanderDisturbed, "the bystander got an error reply")
    verdict.add_all(StateCorrupted, received_problems(arena.bystander, start))
    verdict.add_all(StateCorrupted, received_problems(flooder, mine))
    await arena.drop(flooder)
    await verdict.step(
        StateCorrupted,
        arena.bystander.wait_for("player:left", lambda p: p == {"id": player}, start=start),
    )
    verdict.check_logs()
    verdict.raise_if_any()


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(
    flood=st.sampled_from(FLOODS),
    n=st.integers(8, 160),
    waves=st.integers(1, 3),
)
def test_flood_reaches_others_only_within_the_limit(
    arena: Arena, flood: Flood, n: int, waves: int
) -> None:
    """README "Security": a flood of any event reaches the others only as far as its limit
    allows; the flooder is answered once per window and stays connected."""
    run(arena, flood_example(arena, flood, n, waves))


async def move_flood_example(arena: Arena, n: int) -> None:
    """``player:move``: excess moves are dropped, yet the newest position reaches the others
    (once the second is over), and they never get more than one position per tick."""
    await arena.ensure_clean()
    assert arena.bystander is not None
    verdict = Verdict(arena, [])
    flooder = await arena.client("mover")
    player = unique("mover")
    await flooder.join(arena.space, "Mover", player)
    await arena.bystander.wait_for("player:joined", lambda p: p["id"] == player)
    start = len(arena.bystander.events)
    began = time.monotonic()
    for i in range(n):
        move = {"x": i, "y": 2 * i, "direction": "right", "isMoving": i < n - 1}
        await flooder.emit_args("player:move", [move])
    await verdict.step(Stalled, flooder.sync())
    seconds = time.monotonic() - began
    last = {"id": player, "x": n - 1, "y": 2 * (n - 1), "isMoving": False}
    arena.payloads_sent["<flood player:move>"] = (
        arena.payloads_sent.get("<flood player:move>", 0) + n
    )
    await verdict.step(
        StateCorrupted,
        arena.bystander.wait_for(
            "player:moved",
            lambda p: {k: p[k] for k in last} == last,
            start=start,
            timeout=3,
        ),
    )
    moved = [e for e in arena.bystander.since(start) if e.event == "player:moved"]
    mine = [e for e in moved if e.payload.get("id") == player]
    ticks = math.ceil((time.monotonic() - began) / TICK) + 2
    if len(mine) > ticks:
        verdict.add(WrongReplies, f"{len(mine)} positions of one player in {ticks} ticks")
    if mine and {k: mine[-1].payload[k] for k in last} != last:
        verdict.add(StateCorrupted, f"the newest position is not the last: {mine[-1].payload}")
    if count_rate_limited(flooder, 0) > 2 * (math.floor(seconds) + 2):
        verdict.add(WrongReplies, "more than one RATE_LIMITED answer per second")
    if not flooder.connected:
        verdict.add(SocketDropped, f"the mover was disconnected: {flooder.disconnect_reason}")
    verdict.add_all(StateCorrupted, received_problems(arena.bystander, start))
    await arena.drop(flooder)
    verdict.check_logs()
    verdict.raise_if_any()


@pytest.mark.timeout(900)
@fuzz_settings(4)
@given(n=st.integers(100, 400))
def test_move_flood_keeps_the_newest_position(arena: Arena, n: int) -> None:
    """README "Security": moves over 120 a second are dropped, the newest still delivered."""
    run(arena, move_flood_example(arena, n))

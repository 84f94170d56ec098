"""What the limit and notice state keeps per player once they joined and went idle: little while
it can still matter, and nothing once it can no longer change what happens."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from spacesync.domain.limits import (
    EVENT_LIMITS,
    JOIN_PLAYER,
    KeyedLimits,
    NoticeThrottle,
    Rule,
    SocketLimits,
    Verdict,
)
from spacesync.handlers.session import Session

N = 2000
JOIN = EVENT_LIMITS["join:space"].socket
NOW = 100_000.0


def bytes_each(make: Callable[[int], Any]) -> float:
    """Bytes allocated per call of ``make`` and still held, over ``N`` calls."""
    kept: list[Any] = [None] * N
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(N):
            kept[i] = make(i)
        return (tracemalloc.get_traced_memory()[0] - before) / N
    finally:
        tracemalloc.stop()


# -- sockets -------------------------------------------------------------------------------


def test_a_socket_that_joined_holds_no_lock_and_no_limit_window() -> None:
    def joined(i: int) -> Session:
        session = Session(sid=f"sid-{i:016d}", address="127.0.0.1")
        session.limits.record(JOIN, NOW)
        return session

    assert joined(0).membership is None  # made by a join or leave while it runs
    assert bytes_each(joined) < 500  # about 400; with a lock and a window for the join, 710


def test_a_count_kept_without_a_window_carries_over_to_one() -> None:
    rule = Rule("test.lone", 3, 10.0, "tests")
    other = Rule("test.other", 3, 10.0, "tests")
    state = SocketLimits()
    state.record(rule, 1.0)
    state.record(rule, 2.0)
    state.record(other, 3.0)  # the count of ``rule`` moves into a window
    assert state.admit(rule, 4.0)
    state.record(rule, 4.0)
    assert not state.admit(rule, 5.0)
    assert state.admit(rule, 10.0)  # the next window

    state = SocketLimits()
    for t in (1.0, 2.0, 3.0):
        state.record(rule, t)
    assert not state.admit(rule, 4.0)
    assert state.refuse(rule, 4.0) is Verdict.NOTIFY  # refused: a window of its own
    assert state.refuse(rule, 5.0) is Verdict.QUIET
    assert not state.admit(rule, 6.0)
    state.record(rule, 12.0)  # an old count is not carried into a new window
    assert state.admit(rule, 12.0)


# -- limits per player ---------------------------------------------------------------------


def test_a_players_join_count_takes_little_room() -> None:
    keyed = KeyedLimits(sweep_every=10**9)
    players = [f"player-{i:08d}" for i in range(N)]
    assert bytes_each(lambda i: keyed.count(JOIN_PLAYER, players[i], NOW).count) < 160


def test_entries_of_each_rule_are_forgotten_when_their_own_window_ends() -> None:
    short, long = Rule("test.short", 2, 10.0, "tests"), Rule("test.long", 2, 60.0, "tests")
    keyed = KeyedLimits(sweep_every=10**9)
    for rule in (short, long):
        assert keyed.hit(rule, "ann", 1.0) and keyed.hit(rule, "ann", 1.0)
    keyed.sweep(9.9)
    assert len(keyed) == 2
    keyed.sweep(10.0)
    assert len(keyed) == 1 and not keyed.admit(long, "ann", 59.0)
    keyed.sweep(60.0)
    assert len(keyed) == 0


def test_counts_late_in_a_long_uptime_are_kept_apart_by_window() -> None:
    """Monotonic clocks of hosts up for a year give window indexes in the millions."""
    rule = Rule("test.uptime", 3, 10.0, "tests")
    keyed = KeyedLimits(sweep_every=10**9)
    now = 3.2e7
    hits = [keyed.count(rule, "ann", now) for _ in range(3)]
    assert [h.count for h in hits] == [1, 2, 3] and hits[0].window == 3_200_000
    assert not keyed.admit(rule, "ann", now + 5)
    keyed.give_back(hits[-1])
    assert keyed.count(rule, "ann", now + 5).count == 3
    assert keyed.count(rule, "ann", now + 10).count == 1
    keyed.note(rule, "ann", 7, now + 10)
    assert not keyed.admit(rule, "ann", now + 10)  # noted up to the limit, not beyond
    assert keyed.count(rule, "ann", now + 10).count == 3


# -- presence notices ----------------------------------------------------------------------


def test_a_joined_player_costs_the_notice_throttle_a_few_hundred_bytes() -> None:
    notices = NoticeThrottle()
    players = [f"player-{i:08d}" for i in range(N)]
    assert bytes_each(lambda i: notices.change("s", players[i], True, 100_000.0)) < 400


def test_the_sweep_keeps_what_can_still_hold_back_a_line() -> None:
    notices = NoticeThrottle(interval=15.0, burst=3)
    assert notices.change("s", "recent", True, 10.0) == 0.0
    for t, present in ((0.0, True), (1.0, False), (2.0, True)):
        assert notices.change("s", "churner", present, t) == 0.0
    assert notices.change("s", "churner", False, 3.0) == pytest.approx(12.0)
    assert notices.change("s", "idle", True, 0.0) == 0.0
    notices.sweep(20.0)
    assert len(notices) == 2  # "idle" is forgotten
    assert notices.change("s", "recent", False, 20.0) == 0.0
    assert notices.change("s", "recent", True, 20.0) == 0.0
    assert notices.change("s", "recent", False, 20.0) > 0  # the line 10 s ago still counts
    assert notices.due("s", "churner", 20.0) is False  # the deferred "left" is still told


def test_a_forgotten_player_is_announced_as_a_remembered_one_would_be() -> None:
    """After a quiet interval the next change differs from what the space was told, so it is
    announced at once whether the player is remembered or not."""
    swept, kept = NoticeThrottle(interval=15.0, burst=3), NoticeThrottle(interval=15.0, burst=3)
    for notices in (swept, kept):
        for t, present in ((0.0, True), (1.0, False), (2.0, True)):
            assert notices.change("s", "p", present, t) == 0.0
    swept.sweep(17.0)
    assert len(swept) == 0 and len(kept) == 1
    for t, present in ((30.0, False), (31.0, True), (32.0, False), (33.0, True)):
        assert swept.change("s", "p", present, t) == kept.change("s", "p", present, t)
    assert swept.change("s", "p", True, 34.0) is kept.change("s", "p", True, 34.0) is None

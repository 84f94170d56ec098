"""What the limit and notice state keeps per player once they joined and went idle: little while
it can still matter, and nothing once it can no longer change what happens."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from spacesync.domain.limits import NoticeThrottle

N = 2000


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

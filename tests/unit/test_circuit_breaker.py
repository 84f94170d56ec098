"""The app API circuit breaker: a failing app is not called again and again, so verification calls
do not pile up behind it while it is down (SPEC §2.1 verification, hard 5 s timeout)."""

from __future__ import annotations

import pytest

from spacesync.integrations import app_api
from spacesync.integrations.app_api import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(app_api.time, "monotonic", clock)
    return clock


def test_stays_closed_below_the_threshold(clock: Clock) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and not breaker.open
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.allow(), "a success in between starts the count again"


def test_opens_after_failures_in_a_row_then_lets_one_trial_through(clock: Clock) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.open and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(10)
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow(), "after the cooldown one call goes through"
    assert not breaker.allow(), "only one while the trial is out"
    breaker.success()
    assert not breaker.open and breaker.allow() and breaker.allow()
    assert breaker.times_opened == 1


def test_a_failed_trial_opens_it_for_another_cooldown(clock: Clock) -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=5)
    breaker.failure()
    breaker.failure()
    clock.now += 5.1
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()
    assert breaker.times_opened == 2

"""The guard in front of session verification: refused tokens are remembered for a while, and an
address whose tokens keep failing is refused without asking the app (SPEC §2.1)."""

from __future__ import annotations

import asyncio
from typing import Any

from spacesync.domain.identity import Verification
from spacesync.integrations.app_api import VerifyResult, VerifyStatus
from spacesync.integrations.verify_guard import (
    FAILURE_WINDOW,
    REFUSED_FOR_ADDRESS,
    REFUSED_FROM_MEMORY,
    FailedTokens,
    VerifyGuard,
)
from spacesync.observability.abuse import AbuseCounters


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeApp:
    """Answers ``valid`` for tokens starting with "good", ``invalid`` otherwise; ``status``
    overrides every answer; each call takes ``delay`` seconds and is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str | None]] = []
        self.status: VerifyStatus | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def verify(
        self, token: str, space_id: str | None, url: str | None = None
    ) -> VerifyResult:
        self.calls.append((token, space_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.status is not None:
            return VerifyResult(self.status, detail="forced")
        if token.startswith("good"):
            verification = Verification.from_answer({"participantId": f"p-{token}"})
            return VerifyResult(VerifyStatus.VALID, verification)
        return VerifyResult(VerifyStatus.INVALID, detail="session not valid")


def guard(
    app: FakeApp, clock: Clock, *, ttl: float = 30.0, limit: int = 3, **kwargs: Any
) -> tuple[VerifyGuard, AbuseCounters]:
    abuse = AbuseCounters()
    g = VerifyGuard(
        app,  # type: ignore[arg-type]
        abuse,
        failure_ttl=ttl,
        failures_per_minute=limit,
        clock=clock,
        **kwargs,
    )
    return g, abuse


async def test_a_refused_token_is_refused_again_from_memory_until_it_expires() -> None:
    app, clock = FakeApp(), Clock()
    g, abuse = guard(app, clock, limit=0)
    first = await g.verify("bogus", "space-a", "10.0.0.1")
    again = await g.verify("bogus", "space-a", "10.0.0.9")
    assert first.status is again.status is VerifyStatus.INVALID
    assert "not asked" in again.detail
    assert app.calls == [("bogus", "space-a")]
    assert abuse.get(REFUSED_FROM_MEMORY) == 1

    await g.verify("bogus", "space-b", "10.0.0.1")
    assert len(app.calls) == 2, "the app's answer was about space-a only"

    clock.now += 30.1
    await g.verify("bogus", "space-a", "10.0.0.1")
    assert len(app.calls) == 3, "forgotten after the TTL"


async def test_valid_sessions_and_outages_are_not_remembered() -> None:
    app, clock = FakeApp(), Clock()
    g, abuse = guard(app, clock, limit=1)
    for _ in range(3):
        assert (await g.verify("good-1", "s", "10.0.0.1")).valid
    app.status = VerifyStatus.TIMEOUT
    for _ in range(3):
        await g.verify("bogus", "s", "10.0.0.1")
    app.status = VerifyStatus.UNREACHABLE
    await g.verify("bogus", "s", "10.0.0.1")
    assert len(app.calls) == 7
    assert abuse.snapshot() == {}


async def test_memory_off_asks_the_app_every_time() -> None:
    app, clock = FakeApp(), Clock()
    g, _ = guard(app, clock, ttl=0, limit=0)
    for _ in range(5):
        await g.verify("bogus", "s", "10.0.0.1")
    assert len(app.calls) == 5
    assert len(g.failed) == 0


def test_remembered_tokens_are_bounded_and_kept_as_digests() -> None:
    table = FailedTokens(ttl=30, max_entries=100)
    keys = [FailedTokens.key(f"token-{i}", "s") for i in range(250)]
    for key in keys:
        table.remember(key, 0.0)
    assert len(table) == 100
    assert not table.refused(keys[0], 1.0), "the oldest made room"
    assert table.refused(keys[-1], 1.0)
    assert all(len(key) == 16 for key in keys)
    long_key = FailedTokens.key("x" * 4096, "s")
    assert len(long_key) == 16, "memory does not grow with the token's length"


async def test_an_address_past_the_limit_is_refused_for_the_rest_of_the_minute() -> None:
    app, clock = FakeApp(), Clock()
    g, abuse = guard(app, clock, limit=3)
    for i in range(3):
        await g.verify(f"bogus-{i}", "s", "10.0.0.1")
    refused = await g.verify("good-real", "s", "10.0.0.1")
    assert refused.status is VerifyStatus.INVALID and "last minute" in refused.detail
    assert len(app.calls) == 3
    assert abuse.get(REFUSED_FOR_ADDRESS) == 1

    assert (await g.verify("good-other", "s", "10.0.0.2")).valid, "other addresses unaffected"

    clock.now += FAILURE_WINDOW + 0.1
    assert (await g.verify("good-real", "s", "10.0.0.1")).valid


async def test_a_burst_cannot_get_more_than_the_limit_to_the_app() -> None:
    """Verifications waiting for an answer count against the budget: of 50 sent at once, the
    app sees 3; the rest wait for those answers and are refused."""
    app, clock = FakeApp(delay=0.05), Clock()
    g, abuse = guard(app, clock, limit=3)
    results = await asyncio.gather(*(g.verify(f"bogus-{i}", "s", "10.0.0.1") for i in range(50)))
    assert all(r.status is VerifyStatus.INVALID for r in results)
    assert len(app.calls) == 3
    assert app.most_in_flight == 3
    assert abuse.get(REFUSED_FOR_ADDRESS) == 47


async def test_a_burst_of_valid_sessions_from_one_address_all_get_through() -> None:
    """Valid logins from one address (a school behind one router) wait for budget, never fail
    for it: only failures are held against an address."""
    app, clock = FakeApp(delay=0.01), Clock()
    g, abuse = guard(app, clock, limit=3)
    results = await asyncio.gather(*(g.verify(f"good-{i}", "s", "10.0.0.1") for i in range(20)))
    assert all(r.valid for r in results)
    assert app.most_in_flight <= 3
    assert abuse.snapshot() == {}


async def test_limit_off_lets_every_failure_through() -> None:
    app, clock = FakeApp(), Clock()
    g, _ = guard(app, clock, limit=0)
    for i in range(30):
        await g.verify(f"bogus-{i}", "s", "10.0.0.1")
    assert len(app.calls) == 30


async def test_addresses_are_forgotten_when_clean_and_bounded_otherwise() -> None:
    app, clock = FakeApp(), Clock()
    g, _ = guard(app, clock, limit=3, max_addresses=50)
    for i in range(200):
        await g.verify("good", "s", f"10.0.1.{i}")
    assert len(g._addresses) == 0, "an address with nothing against it is not kept"
    for i in range(200):
        await g.verify(f"bogus-{i}", "s", f"10.0.2.{i}")
    assert len(g._addresses) == 50

"""Session verification that made-up tokens cannot turn into work for the app (SPEC §2.1).

Every verification is a call to the app, and all calls share a fixed number of slots
(:data:`~spacesync.integrations.app_api.VERIFY_CONCURRENCY`). Without a guard, anyone can queue
real logins behind a flood of invented tokens: each costs a call, and each call holds a slot
until the app answers. Two checks stop that before the app is asked:

- **Refused tokens are remembered.** A token the app called invalid (an answer, not an outage or
  a timeout) is refused again for ``failure_ttl`` seconds without asking, for the same space: the
  app is asked whether a session is valid *for a space*, so its answer says nothing about another.
  Only a digest of the token is kept, in a table of bounded size whose oldest entries go first.
- **Failures are limited per address.** An address whose tokens failed ``failures_per_minute``
  times in the last minute has every further token refused at once until the oldest failure is a
  minute old. Verifications still waiting for an answer count against the same budget, so a burst
  sent all at once cannot get more than the limit to the app either: the rest wait for those
  answers and are then let through or refused.

Outages are not held against anyone: a timeout or an unreachable app is the circuit breaker's
business (:class:`~spacesync.integrations.app_api.CircuitBreaker`), and valid sessions are never
cached, so a session the app revokes is refused at its next verification.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from ..observability.abuse import AbuseCounters
from .app_api import AppClient, VerifyResult, VerifyStatus

FAILURE_WINDOW = 60.0
MAX_REMEMBERED_TOKENS = 10_000
MAX_TRACKED_ADDRESSES = 10_000

REFUSED_FROM_MEMORY = "verifyFailureCached"
REFUSED_FOR_ADDRESS = "verifyFailuresPerAddress"

Clock = Callable[[], float]


class FailedTokens:
    """Digests of (token, space) pairs the app refused, each forgotten after ``ttl`` seconds.

    Every entry lives equally long, so insertion order is also expiry order: when the table is
    full the oldest entry, the one closest to expiring anyway, makes room.
    """

    def __init__(self, ttl: float, max_entries: int = MAX_REMEMBERED_TOKENS) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def key(token: str, space_id: str | None) -> bytes:
        raw = f"{space_id or ''}\x00{token}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(raw, digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, key: bytes, now: float) -> None:
        if self.ttl <= 0:
            return
        self._expiry.pop(key, None)
        self._expiry[key] = now + self.ttl
        while len(self._expiry) > self.max_entries:
            self._expiry.popitem(last=False)

    def refused(self, key: bytes, now: float) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[key]
            return False
        return True


class _Address:
    """One address's recent failures and the verifications it has waiting for an answer."""

    __slots__ = ("changed", "failures", "in_flight", "waiting")

    def __init__(self, limit: int) -> None:
        self.failures: deque[float] = deque(maxlen=limit)
        self.in_flight = 0
        self.waiting = 0
        self.changed: asyncio.Event | None = None

    def recent(self, now: float) -> int:
        while self.failures and self.failures[0] <= now - FAILURE_WINDOW:
            self.failures.popleft()
        return len(self.failures)

    async def wait(self) -> None:
        """Until one of this address's verifications has its answer."""
        if self.changed is None:
            self.changed = asyncio.Event()
        self.waiting += 1
        try:
            await self.changed.wait()
        finally:
            self.waiting -= 1

    def settle(self) -> None:
        """One verification finished: wake whoever waits for budget."""
        self.in_flight -= 1
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.waiting > 0

    def idle(self, now: float) -> bool:
        return not self.busy and self.recent(now) == 0


class VerifyGuard:
    """:meth:`AppClient.verify` behind the failure memory and the per-address failure limit."""

    def __init__(
        self,
        app: AppClient,
        abuse: AbuseCounters,
        *,
        failure_ttl: float,
        failures_per_minute: int,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Clock = time.monotonic,
    ) -> None:
        self.app = app
        self.abuse = abuse
        self.failed = FailedTokens(failure_ttl)
        self.limit = failures_per_minute
        self.max_addresses = max_addresses
        self.clock = clock
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    async def verify(
        self, token: str, space_id: str | None, address: str, url: str | None = None
    ) -> VerifyResult:
        key = FailedTokens.key(token, space_id)
        refused = self._refused_from_memory(key)
        if refused is not None:
            return refused
        state: _Address | None = None
        if self.limit > 0:
            state = self._address(address)
            while True:
                recent = state.recent(self.clock())
                if recent >= self.limit:
                    self.abuse.count(REFUSED_FOR_ADDRESS)
                    return VerifyResult(
                        VerifyStatus.INVALID,
                        detail=f"not asked: {recent} sessions from this address failed "
                        "verification in the last minute",
                    )
                if recent + state.in_flight < self.limit:
                    break
                await state.wait()
                refused = self._refused_from_memory(key)
                if refused is not None:
                    return refused
            state.in_flight += 1
        try:
            result = await self.app.verify(token, space_id, url)
        finally:
            if state is not None:
                state.settle()
        now = self.clock()
        if result.status is VerifyStatus.INVALID:
            self.failed.remember(key, now)
            if state is not None:
                state.failures.append(now)
        elif state is not None and state.idle(now) and self._addresses.get(address) is state:
            del self._addresses[address]  # nothing to hold against it: no memory kept
        return result

    def _refused_from_memory(self, key: bytes) -> VerifyResult | None:
        if not self.failed.refused(key, self.clock()):
            return None
        self.abuse.count(REFUSED_FROM_MEMORY)
        return VerifyResult(
            VerifyStatus.INVALID,
            detail=f"not asked: the app refused this session less than {self.failed.ttl:g}s ago",
        )

    def _address(self, address: str) -> _Address:
        state = self._addresses.get(address)
        if state is not None:
            self._addresses.move_to_end(address)
            return state
        state = self._addresses[address] = _Address(self.limit)
        if len(self._addresses) > self.max_addresses:
            self._forget_one()
        return state

    def _forget_one(self) -> None:
        """Drop the least recently seen address that has nothing in flight (its failures, if
        any, are the stalest); one that is being verified keeps its budget."""
        for address, state in self._addresses.items():
            if not state.busy:
                del self._addresses[address]
                return

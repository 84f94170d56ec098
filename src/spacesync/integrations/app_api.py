"""The app API: session verification (SPEC §2.1) and EXIT event logging (SPEC §7).

A stay ends only when the player has really gone. A page reload, a flaky network or a client
that leaves and joins again would otherwise send the app one EXIT per cycle (and the app would
count one visit per cycle). So the EXIT of a departure is held for ``EXIT_GRACE_SECONDS``: if
the same session (same player id and session token) joins the same space again within that
time, the held EXIT is cancelled and the stay goes on from its first join, so the EXIT finally
sent covers the whole stay. Held EXITs are in the durable outbox from the moment the player
leaves (see :mod:`.exit_journal`), and are sent with the key they were given then.

In a cluster the rejoin may reach another node than the one holding the EXIT; a
:class:`StayArbiter` (Redis) decides, atomically, whether the rejoin or the end of the grace
period wins (see :class:`~spacesync.state.redis.RedisStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hashlib
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from ..domain.identity import Verification, token_user_id
from ..observability.logging import log
from ..observability.timing import NOT_OBSERVED, Observer
from .exit_journal import ExitJournal

RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
MAX_EXIT_AGE = 24 * 3600.0
MAX_CLIENT_ERROR_ATTEMPTS = 3
MAX_IN_FLIGHT = 16
VERIFY_CONCURRENCY = 48
DRAIN_RETRY_DELAY = 0.5
HELD_RETRY_DELAY = 1.0
"""Seconds before a held EXIT that came due is checked again when the arbiter is unreachable."""


class VerifyStatus(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    status: VerifyStatus
    verification: Verification | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.verification is not None


CALL_OUTCOMES = ("ok", "refused", "error", "timeout", "circuit_open")
"""How a call to the app ended: answered yes; answered no (an invalid session, a 4xx); failed
(unreachable, a 5xx); no answer in time; not made because the circuit was open."""
_VERIFY_OUTCOME = {
    VerifyStatus.VALID: "ok",
    VerifyStatus.INVALID: "refused",
    VerifyStatus.UNREACHABLE: "error",
    VerifyStatus.TIMEOUT: "timeout",
}


class CircuitBreaker:
    """Stops calling an app that keeps failing, so that calls do not pile up behind it.

    After ``threshold`` failures in a row (timeouts, refused connections, 5xx) the circuit opens:
    calls fail at once for ``cooldown`` seconds. Then one call is let through; its success closes
    the circuit, its failure opens it again.
    """

    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False
        self.times_opened = 0

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.trial or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self.trial = True
        return True

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (time.monotonic() - self.opened_at))

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def failure(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            if self.opened_at is None or self.trial:
                self.times_opened += 1
            self.opened_at = time.monotonic()
            self.trial = False

    @property
    def open(self) -> bool:
        return self.opened_at is not None


class AppClient:
    """HTTP calls to the app, with the shared secret and a hard timeout on every call."""

    def __init__(self, base_url: str, secret: str | None, timeout: float = 5.0) -> None:
        headers = {"User-Agent": "spacesync"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.breaker = CircuitBreaker()
        self.calls: Counter[tuple[str, str]] = Counter()
        """(call, outcome) -> count: ``verify``/``exit`` by :data:`CALL_OUTCOMES`."""
        self.verify_seconds: Observer = NOT_OBSERVED
        # Verifications beyond this many wait their turn here, outside the 5 s timeout: in a
        # join storm (every client of a restarted node at once) a queue of joins is not a
        # failing app, and must not open the circuit.
        self._verify_slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            follow_redirects=False,
        )

    async def verify(
        self, token: str, space_id: str | None, url: str | None = None
    ) -> VerifyResult:
        """Ask the app about a session at ``url`` (default: the guest verify route)."""
        breaker = self.breaker
        if not breaker.allow():
            self.calls["verify", "circuit_open"] += 1
            return VerifyResult(
                VerifyStatus.UNREACHABLE,
                detail=f"not called: it failed {breaker.threshold} times in a row; "
                f"trying again in {breaker.retry_in():.0f}s",
            )
        started = time.monotonic()
        result = await self._verify(token, space_id, url or f"{self.base_url}/api/guest/verify")
        self.verify_seconds.observe(time.monotonic() - started)
        self.calls["verify", _VERIFY_OUTCOME[result.status]] += 1
        if result.status in (VerifyStatus.TIMEOUT, VerifyStatus.UNREACHABLE):
            breaker.failure()
        else:
            breaker.success()
        return result

    async def _verify(self, token: str, space_id: str | None, url: str) -> VerifyResult:
        try:
            async with self._verify_slots, asyncio.timeout(self.timeout):
                response = await self._client.post(
                    url, json={"sessionToken": token, "spaceId": space_id}
                )
        except (httpx.TimeoutException, TimeoutError):
            return VerifyResult(VerifyStatus.TIMEOUT, detail=f"no answer within {self.timeout}s")
        except httpx.HTTPError as exc:
            return VerifyResult(VerifyStatus.UNREACHABLE, detail=f"{type(exc).__name__}: {exc}")
        if response.status_code >= 500:
            return VerifyResult(VerifyStatus.UNREACHABLE, detail=f"HTTP {response.status_code}")
        if not 200 <= response.status_code < 300:
            return VerifyResult(VerifyStatus.INVALID, detail=f"HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError:
            return VerifyResult(VerifyStatus.INVALID, detail="malformed answer")
        verification = Verification.from_answer(body)
        if verification is None:
            return VerifyResult(VerifyStatus.INVALID, detail="session not valid")
        return VerifyResult(VerifyStatus.VALID, verification)

    async def send_exit(self, event: ExitEvent) -> httpx.Response:
        headers = {"Idempotency-Key": event.key}
        if event.user_id is not None:
            url = f"{self.base_url}/api/spaces/{quote(event.space_id, safe='')}/visit"
            headers["x-user-id"] = event.user_id
            return await self._client.delete(url, headers=headers)
        url = f"{self.base_url}/api/guest/event"
        body = {
            "sessionToken": event.session_token,
            "spaceId": event.space_id,
            "eventType": "EXIT",
            "payload": {"reason": event.reason, "durationSeconds": event.duration_seconds},
        }
        return await self._client.post(url, json=body, headers=headers)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(slots=True)
class ExitEvent:
    session_token: str
    space_id: str
    reason: str
    duration_seconds: int
    user_id: str | None = None
    player_id: str | None = None
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)
    attempts: int = 0
    started_at: float = 0.0
    """When the stay began (its first join): a rejoin within the grace period goes on from it."""
    due_at: float = 0.0
    """When a held EXIT is sent unless the session comes back; 0 once it is owed."""

    @property
    def stay(self) -> tuple[str, str, str]:
        """What identifies the stay: space, player and (a digest of) the session token."""
        return (self.space_id, self.player_id or "", token_digest(self.session_token))

    @property
    def stay_start(self) -> float:
        if self.started_at:
            return self.started_at
        return self.created_at - self.duration_seconds  # written by an earlier version


def token_digest(token: str) -> str:
    """A session token as stored in shared state: enough to tell sessions apart, useless to
    anyone who reads Redis."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def exit_event_for(
    token: str | None,
    space_id: str,
    reason: str,
    duration: float,
    player_id: str,
    started_at: float = 0.0,
) -> ExitEvent | None:
    """The EXIT owed for a stay, or ``None`` for ``dev-`` and token-less sessions (SPEC §7)."""
    if not token or token.startswith("dev-"):
        return None
    return ExitEvent(
        session_token=token,
        space_id=space_id,
        reason=reason,
        duration_seconds=max(0, round(duration)),
        user_id=token_user_id(token),
        player_id=player_id,
        started_at=started_at,
    )


@dataclass(frozen=True, slots=True)
class ClaimedStay:
    """A held EXIT a rejoin cancelled: whose it was and when its stay began."""

    key: str
    node: str
    started_at: float


class StayArbiter(Protocol):
    """Shared state that decides between a rejoin and the end of a grace period (cluster mode).

    Every method raises when the shared state cannot be reached; the outbox then keeps the
    EXIT held and asks again later."""

    node: str

    async def hold_exit(self, event: ExitEvent) -> None:
        """Publish a held EXIT so that a rejoin through any node can find and cancel it."""

    async def claim_stay(self, space_id: str, player_id: str, digest: str) -> ClaimedStay | None:
        """Cancel the held EXIT of this stay, if there is one nobody settled or claimed yet."""

    async def settle_exit(self, event: ExitEvent) -> bool:
        """At the end of the grace period: True if the EXIT is to be sent, False if a rejoin
        claimed it (the stay goes on elsewhere)."""


class ExitOutbox:
    """Delivers EXIT events in the background, retrying failures with exponential backoff.

    ``submit`` never blocks the caller. Failures are logged as E4001; a call the app refuses
    with a 4xx is retried a few times, anything else until it is delivered or a day old.

    ``hold`` keeps an EXIT back for the grace period first; ``resume_stay`` (a rejoin) cancels
    it. Without an arbiter (one node) both happen in this process, without awaiting anything in
    between, so they cannot both win. With one, the arbiter decides, and a held EXIT leaves the
    outbox only by :meth:`_settle`: sent if the arbiter says the stay is over, dropped if a
    rejoin claimed it. A node that stops sends its held EXITs (its players are gone from it;
    one that joins again elsewhere in time claims its stay first, and the EXIT is dropped);
    those it cannot settle in time stay on disk, held, for its next start.
    """

    def __init__(
        self,
        client: AppClient,
        journal: ExitJournal | None = None,
        grace: float = 0.0,
        arbiter: StayArbiter | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.grace = grace
        self.arbiter = arbiter
        """Shared state deciding between a rejoin and a held EXIT (a cluster); ``None`` on a
        node alone, which decides by itself."""
        self._queue: asyncio.Queue[ExitEvent] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        self._held: dict[str, ExitEvent] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._worker: asyncio.Task[None] | None = None
        self._draining = False
        self._holding: dict[str, ExitEvent] = {}
        self._stays: dict[tuple[str, str, str], str] = {}
        self._due: dict[str, asyncio.TimerHandle] = {}
        self._settling: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0

    def start(self) -> None:
        if self._worker is None:
            self._resume()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def _resume(self) -> None:
        """Queue what an earlier run of this node still owed (durable outbox only)."""
        if self.journal is None:
            return
        names = {f.name for f in dataclasses.fields(ExitEvent)}
        owed = held = 0
        for data in self.journal.pending():
            try:
                event = ExitEvent(**{k: v for k, v in data.items() if k in names})
            except TypeError:
                continue
            if event.due_at:
                self._keep(event)  # still within its grace period, or settled at once
                held += 1
                continue
            self._queue.put_nowait(event)
            owed += 1
        if owed or held:
            log.info(
                "I4002",
                f"{owed} EXIT events owed from an earlier run are sent, {held} held",
                owed=owed,
                held=held,
            )

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._in_flight) + len(self._waiting)

    @property
    def durable(self) -> bool:
        return self.journal is not None and self.journal.durable

    @property
    def held(self) -> int:
        """EXITs held for their grace period."""
        return len(self._holding)

    def owed(self) -> int:
        """EXITs not yet acknowledged by the app (on disk when the outbox is durable)."""
        if self.journal is None:
            return self.backlog
        try:
            return self.journal.count()
        except sqlite3.Error:
            return self.backlog

    def submit(self, event: ExitEvent) -> None:
        self._write(event)
        self._queue.put_nowait(event)

    # -- the grace period ----------------------------------------------------------------------

    async def hold(self, event: ExitEvent) -> None:
        """Keep the EXIT of a stay that just ended back for the grace period.

        It is on disk (with its due time) before this returns, and published to the arbiter
        before its timer runs, so that a rejoin can never claim an EXIT that was already sent.
        """
        if self.grace <= 0:
            self.submit(event)
            return
        event.due_at = event.created_at + self.grace
        self._write(event)
        self._holding[event.key] = event
        self._stays[event.stay] = event.key
        if self.arbiter is not None:
            try:
                await self.arbiter.hold_exit(event)
            except Exception as exc:
                # Nobody can claim it elsewhere then; settling finds that out (SPEC §7).
                log.warn(
                    "E4001",
                    "Held EXIT not shared with the other nodes",
                    error=f"{type(exc).__name__}: {exc}",
                    spaceId=event.space_id,
                    playerId=event.player_id,
                )
        if event.key in self._holding:
            self._arm(event)

    def hold_soon(self, event: ExitEvent) -> None:
        """``hold`` from code that cannot wait for it."""
        self._spawn(self.hold(event))

    async def resume_stay(self, space_id: str, player_id: str, token: str | None) -> float | None:
        """A session joins a space: if its stay there ended within the grace period, cancel
        the held EXIT and return when the stay began (the stay goes on); else ``None``."""
        if not token or (self.grace <= 0 and not self._holding):
            return None
        stay = (space_id, player_id, token_digest(token))
        if self.arbiter is None:
            key = self._stays.get(stay)
            event = self._holding.get(key) if key is not None else None
            if event is None:
                return None
            self._forget(event)
            self._journal("done", event)
            log.debug("I4003", "Held EXIT cancelled: the stay goes on", **_context(event))
            return event.stay_start
        try:
            claim = await self.arbiter.claim_stay(*stay)
        except Exception:
            return None  # the stay starts again; the held EXIT is sent when due
        if claim is None:
            return None
        mine = self._holding.get(claim.key)
        if mine is not None and claim.key not in self._settling:
            # Ours: settle it now rather than at its due time (it is dropped).
            handle = self._due.pop(claim.key, None)
            if handle is not None:
                handle.cancel()
                self._spawn(self._settle(mine))
        log.debug(
            "I4003",
            "Held EXIT cancelled: the stay goes on",
            spaceId=space_id,
            playerId=player_id,
            heldBy=claim.node,
        )
        return claim.started_at

    def _keep(self, event: ExitEvent) -> None:
        self._holding[event.key] = event
        self._stays[event.stay] = event.key
        self._arm(event)

    def _arm(self, event: ExitEvent, delay: float | None = None) -> None:
        if delay is None:
            delay = max(0.0, event.due_at - time.time())
        if self._draining:
            delay = min(delay, DRAIN_RETRY_DELAY)
        self._due[event.key] = asyncio.get_running_loop().call_later(
            delay, self._came_due, event.key
        )

    def _came_due(self, key: str) -> None:
        self._due.pop(key, None)
        event = self._holding.get(key)
        if event is not None and key not in self._settling:
            self._spawn(self._settle(event))

    async def _settle(self, event: ExitEvent) -> None:
        """The grace period is over (or the node stops): send the EXIT, or drop it if the stay
        went on through another socket."""
        send = True
        if self.arbiter is not None:
            self._settling.add(event.key)
            try:
                send = await self.arbiter.settle_exit(event)
            except Exception:
                if event.key in self._holding:
                    self._arm(event, HELD_RETRY_DELAY)
                return
            finally:
                self._settling.discard(event.key)
        if self._holding.get(event.key) is not event:
            return
        self._forget(event)
        if send:
            event.due_at = 0.0
            self._journal("release", event)
            self._queue.put_nowait(event)
        else:
            self._journal("done", event)
            log.debug("I4003", "Held EXIT dropped: the stay went on", **_context(event))

    def _forget(self, event: ExitEvent) -> None:
        self._holding.pop(event.key, None)
        if self._stays.get(event.stay) == event.key:
            del self._stays[event.stay]
        handle = self._due.pop(event.key, None)
        if handle is not None:
            handle.cancel()

    def _settle_all_now(self) -> None:
        for key, event in list(self._holding.items()):
            handle = self._due.pop(key, None)
            if handle is not None:
                handle.cancel()
            if key not in self._settling:
                self._spawn(self._settle(event))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- delivery ------------------------------------------------------------------------------

    def _write(self, event: ExitEvent) -> None:
        if self.journal is not None:
            try:
                self.journal.add(event)
            except sqlite3.Error as exc:
                log.error(
                    "E4001",
                    "EXIT event could not be written to the outbox; it is kept in memory only",
                    exc=exc,
                    spaceId=event.space_id,
                    playerId=event.player_id,
                )

    def _journal(self, action: str, event: ExitEvent) -> None:
        if self.journal is None:
            return
        try:
            getattr(self.journal, action)(event)
        except sqlite3.Error as exc:
            log.error("E4001", "The EXIT outbox could not be updated", exc=exc, action=action)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._deliver(event))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, event: ExitEvent) -> None:
        try:
            event.attempts += 1
            status: int | None = None
            problem = ""
            try:
                async with asyncio.timeout(self.client.timeout):
                    response = await self.client.send_exit(event)
                status = response.status_code
                if 200 <= status < 300:
                    self.client.calls["exit", "ok"] += 1
                    self.delivered += 1
                    self._journal("done", event)
                    log.debug(
                        "I4001", "EXIT logged", spaceId=event.space_id, playerId=event.player_id
                    )
                    return
                problem = f"HTTP {status}"
                self.client.calls["exit", "error" if status >= 500 else "refused"] += 1
            except (httpx.TimeoutException, TimeoutError):
                problem = "timeout"
                self.client.calls["exit", "timeout"] += 1
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                self.client.calls["exit", "error"] += 1
            self.failed_attempts += 1
            give_up = (
                status is not None
                and 400 <= status < 500
                and status not in (408, 425, 429)
                and event.attempts >= MAX_CLIENT_ERROR_ATTEMPTS
            ) or time.time() - event.created_at > MAX_EXIT_AGE
            delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (event.attempts - 1))
            if self._draining:
                delay = min(delay, DRAIN_RETRY_DELAY)
            log.error(
                "E4001",
                "EXIT event logging failed" + ("; giving up" if give_up else "; will retry"),
                spaceId=event.space_id,
                playerId=event.player_id,
                problem=problem,
                attempt=event.attempts,
                retryInSeconds=None if give_up else delay,
            )
            if give_up:
                self.dropped += 1
                self._journal("done", event)
                return
            self._journal("attempted", event)
            self._schedule_retry(event, delay)
        finally:
            self._slots.release()

    def _schedule_retry(self, event: ExitEvent, delay: float) -> None:
        def requeue() -> None:
            self._waiting.pop(event.key, None)
            self._held.pop(event.key, None)
            self._queue.put_nowait(event)

        self._held[event.key] = event
        self._waiting[event.key] = asyncio.get_running_loop().call_later(delay, requeue)

    async def drain(self, timeout: float) -> int:
        """Try to deliver everything owed (held EXITs included) within ``timeout``; returns
        how many are left. Held EXITs not settled by then stay on disk, held."""
        deadline = time.monotonic() + timeout
        for key, handle in list(self._waiting.items()):
            handle.cancel()
            self._waiting.pop(key)
            self._queue.put_nowait(self._held.pop(key))
        self._draining = True
        self._settle_all_now()
        while (self.backlog or self._holding) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.backlog + len(self._holding)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._in_flight):
            task.cancel()
        for handle in self._waiting.values():
            handle.cancel()
        for handle in self._due.values():
            handle.cancel()
        for pending in list(self._tasks):
            pending.cancel()
        if self.journal is not None:
            self.journal.close()


def _context(event: ExitEvent) -> dict[str, Any]:
    return {"spaceId": event.space_id, "playerId": event.player_id}

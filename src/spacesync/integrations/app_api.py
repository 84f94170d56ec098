"""The app API: session verification (SPEC §2.1) and EXIT event logging (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ..domain.identity import Verification, token_user_id
from ..observability.logging import log
from .exit_journal import ExitJournal

RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
MAX_EXIT_AGE = 24 * 3600.0
MAX_CLIENT_ERROR_ATTEMPTS = 3
MAX_IN_FLIGHT = 16
VERIFY_CONCURRENCY = 48
DRAIN_RETRY_DELAY = 0.5


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

    async def verify(self, token: str, space_id: str | None) -> VerifyResult:
        breaker = self.breaker
        if not breaker.allow():
            return VerifyResult(
                VerifyStatus.UNREACHABLE,
                detail=f"not called: it failed {breaker.threshold} times in a row; "
                f"trying again in {breaker.retry_in():.0f}s",
            )
        result = await self._verify(token, space_id)
        if result.status in (VerifyStatus.TIMEOUT, VerifyStatus.UNREACHABLE):
            breaker.failure()
        else:
            breaker.success()
        return result

    async def _verify(self, token: str, space_id: str | None) -> VerifyResult:
        url = f"{self.base_url}/api/guest/verify"
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


def exit_event_for(
    token: str | None, space_id: str, reason: str, duration: float, player_id: str
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
    )


class ExitOutbox:
    """Delivers EXIT events in the background, retrying failures with exponential backoff.

    ``submit`` never blocks the caller. Failures are logged as E4001; a call the app refuses
    with a 4xx is retried a few times, anything else until it is delivered or a day old.
    """

    def __init__(self, client: AppClient, journal: ExitJournal | None = None) -> None:
        self.client = client
        self.journal = journal
        self._queue: asyncio.Queue[ExitEvent] = asyncio.Queue()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        self._held: dict[str, ExitEvent] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._worker: asyncio.Task[None] | None = None
        self._draining = False
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
        owed = 0
        for data in self.journal.pending():
            try:
                event = ExitEvent(**{k: v for k, v in data.items() if k in names})
            except TypeError:
                continue
            self._queue.put_nowait(event)
            owed += 1
        if owed:
            log.info("I4002", f"{owed} EXIT events owed from an earlier run are sent", owed=owed)

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._in_flight) + len(self._waiting)

    @property
    def durable(self) -> bool:
        return self.journal is not None and self.journal.durable

    def owed(self) -> int:
        """EXITs not yet acknowledged by the app (on disk when the outbox is durable)."""
        if self.journal is None:
            return self.backlog
        try:
            return self.journal.count()
        except sqlite3.Error:
            return self.backlog

    def submit(self, event: ExitEvent) -> None:
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
        self._queue.put_nowait(event)

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
                    self.delivered += 1
                    self._journal("done", event)
                    log.debug(
                        "I4001", "EXIT logged", spaceId=event.space_id, playerId=event.player_id
                    )
                    return
                problem = f"HTTP {status}"
            except (httpx.TimeoutException, TimeoutError):
                problem = "timeout"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
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
        """Try to deliver everything owed within ``timeout``; returns how many are left."""
        deadline = time.monotonic() + timeout
        for key, handle in list(self._waiting.items()):
            handle.cancel()
            self._waiting.pop(key)
            self._queue.put_nowait(self._held.pop(key))
        self._draining = True
        while self.backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.backlog

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._in_flight):
            task.cancel()
        for handle in self._waiting.values():
            handle.cancel()
        if self.journal is not None:
            self.journal.close()

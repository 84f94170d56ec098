"""Discord alerts for error-level events (SPEC §11).

Rules: every error-level log alerts, without blocking the caller; authentication failures (E1xxx)
alert only as a burst of ten or more within a minute, once per burst; the same code alerts at most
once a minute; Discord's 429 ``retry_after`` is honoured; a failed alert is logged (E4004) but never
alerts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from ..observability.logging import iso_from_timestamp, log

TITLE = "🚨 Socket Server Error"
COLOR = 15158332
SAME_CODE_INTERVAL = 60.0
AUTH_BURST_WINDOW = 60.0
AUTH_BURST_THRESHOLD = 10
QUEUE_LIMIT = 100
_FIELD_LIMIT = 1000
_DESCRIPTION_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class Alert:
    code: str
    message: str
    timestamp: float
    context: dict[str, Any]


def build_embed(alert: Alert, hostname: str) -> dict[str, Any]:
    fields = [
        {"name": "Error Code", "value": alert.code},
        {"name": "Timestamp", "value": iso_from_timestamp(alert.timestamp)},
    ]
    for key, value in alert.context.items():
        if key == "node" or value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        fields.append({"name": key[:256], "value": (text or "-")[:_FIELD_LIMIT]})
    return {
        "embeds": [
            {
                "title": TITLE,
                "description": alert.message[:_DESCRIPTION_LIMIT],
                "color": COLOR,
                "fields": fields[:25],
                "footer": {"text": f"{hostname} | spacesync"},
            }
        ]
    }


class AlertPolicy:
    """Decides which log events become alerts (no I/O; time is passed in)."""

    def __init__(self) -> None:
        self._last_sent: dict[str, float] = {}
        self._auth_failures: deque[float] = deque()
        self._in_auth_burst = False

    def consider(self, code: str, level: int, now: float) -> str | None:
        """Return ``"alert"``, ``"auth-burst"`` or ``None`` for one log event."""
        if code.startswith("E1"):
            failures = self._auth_failures
            failures.append(now)
            while failures and now - failures[0] > AUTH_BURST_WINDOW:
                failures.popleft()
            if len(failures) < AUTH_BURST_THRESHOLD:
                self._in_auth_burst = False
                return None
            if self._in_auth_burst:
                return None
            self._in_auth_burst = True
            return "auth-burst" if self.allow_code(code, now) else None
        if level < logging.ERROR:
            return None
        if not self.allow_code(code, now):
            return None
        return "alert"

    def allow_code(self, code: str, now: float) -> bool:
        last = self._last_sent.get(code)
        if last is not None and now - last < SAME_CODE_INTERVAL:
            return False
        self._last_sent[code] = now
        return True

    @property
    def auth_failures_in_window(self) -> int:
        return len(self._auth_failures)


class DiscordAlerter:
    """Sends alerts from a background task through a bounded queue."""

    def __init__(self, webhook_url: str | None, hostname: str, timeout: float = 5.0) -> None:
        self.webhook_url = webhook_url
        self.hostname = hostname
        self.policy = AlertPolicy()
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._client: httpx.AsyncClient | None = None
        self._timeout = timeout
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_until = 0.0
        self._busy = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    def start(self) -> None:
        if not self.enabled or self._worker is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout))
        self._worker = self._loop.create_task(self._run())

    def observe(self, record: logging.LogRecord) -> None:
        """Logging sink: called for every warn/error record."""
        if not self.enabled or self._loop is None:
            return
        code = getattr(record, "code", None)
        if not isinstance(code, str):
            code = "E6003" if record.levelno >= logging.ERROR else "W0000"
        decision = self.policy.consider(code, record.levelno, record.created)
        if decision is None:
            return
        context = dict(getattr(record, "context", None) or {})
        if record.exc_info and record.exc_info[1] is not None:
            context["exception"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        message = record.getMessage()
        if decision == "auth-burst":
            message = (
                f"{self.policy.auth_failures_in_window} authentication failures within a minute "
                f"(latest: {message})"
            )
        self._enqueue(Alert(code, message, record.created, context))

    def _enqueue(self, alert: Alert) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(alert)
        else:
            self._loop.call_soon_threadsafe(self._put, alert)

    def _put(self, alert: Alert) -> None:
        if self._queue.full():
            self.dropped += 1
            return
        self._queue.put_nowait(alert)

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            self._busy = True
            try:
                await self._send(alert)
            finally:
                self._busy = False
                self._queue.task_done()

    async def _send(self, alert: Alert) -> None:
        assert self._client is not None and self.webhook_url is not None
        body = build_embed(alert, self.hostname)
        for _ in range(3):
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                response = await self._client.post(self.webhook_url, json=body)
            except httpx.HTTPError as exc:
                self._failed(alert, f"{type(exc).__name__}: {exc}")
                return
            if response.status_code == 429:
                self._paused_until = time.monotonic() + _retry_after(response)
                continue
            if 200 <= response.status_code < 300:
                self.sent += 1
                return
            self._failed(alert, f"HTTP {response.status_code}")
            return
        self._failed(alert, "rate limited by Discord")

    def _failed(self, alert: Alert, problem: str) -> None:
        self.failed += 1
        log.error(
            "E4004",
            "Discord alert delivery failed",
            no_alert=True,
            alertCode=alert.code,
            problem=problem,
        )

    async def flush(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for queued alerts to go out."""
        if self._worker is None:
            return
        deadline = time.monotonic() + timeout
        while (not self._queue.empty() or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._client is not None:
            await self._client.aclose()


def _retry_after(response: httpx.Response) -> float:
    value: Any = None
    try:
        body = response.json()
        if isinstance(body, dict):
            value = body.get("retry_after")
    except ValueError:
        pass
    if value is None:
        value = response.headers.get("Retry-After")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 1.0
    # Older webhook answers give milliseconds; anything huge is treated as such.
    if seconds > 3600:
        seconds /= 1000.0
    return min(max(seconds, 0.0), 60.0)

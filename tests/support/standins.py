"""Real HTTP servers on loopback standing in for the app API and the Discord webhook.

Each runs aiohttp on its own thread and event loop, so it keeps serving while a test blocks and
can outlive the event loop of a single test. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from time import time as wall_clock
from typing import Any

from aiohttp import web

JsonBody = Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: JsonBody
    raw_body: bytes
    time: float = field(default_factory=monotonic)
    wall_time: float = field(default_factory=wall_clock)

    @property
    def json(self) -> JsonBody:
        return self.body


RECORDED = web.RequestKey("recorded", RecordedRequest)


class _ThreadedHttpServer:
    """An aiohttp application served on 127.0.0.1:<random port> from a background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- to be provided by subclasses --------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> _ThreadedHttpServer:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"{type(self).__name__} did not start")
        if self._error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> _ThreadedHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()

        @web.middleware
        async def record(
            request: web.Request,
            handler: Callable[[web.Request], Any],
        ) -> web.StreamResponse:
            raw = await request.read()
            try:
                body: JsonBody = json.loads(raw) if raw else None
            except ValueError:
                body = None
            entry = RecordedRequest(
                method=request.method,
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                raw_body=raw,
            )
            with self._lock:
                self.requests.append(entry)
            request[RECORDED] = entry
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[record])
        self.routes(app)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        self._started.set()
        await self._stopping.wait()
        await runner.cleanup()

    # -- inspection --------------------------------------------------------------------------

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def find(
        self,
        method: str | None = None,
        path: str | None = None,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests matching every given criterion (``path`` matches exactly)."""
        return [
            r
            for r in self.snapshot()
            if (method is None or r.method == method)
            and (path is None or r.path == path)
            and (predicate is None or predicate(r))
        ]

    async def wait_for_request(
        self,
        method: str | None = None,
        path: str | None = None,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 5.0,
        count: int = 1,
    ) -> list[RecordedRequest]:
        """Wait until at least ``count`` matching requests were recorded; returns them all."""
        deadline = monotonic() + timeout
        while True:
            found = self.find(method, path, predicate)
            if len(found) >= count:
                return found
            if monotonic() >= deadline:
                seen = [(r.method, r.path, r.body) for r in self.snapshot()]
                raise AssertionError(
                    f"{type(self).__name__}: expected {count} request(s) "
                    f"{method} {path} within {timeout}s, got {len(found)}; all requests: {seen!r}"
                )
            await asyncio.sleep(0.02)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


class AppStandIn(_ThreadedHttpServer):
    """The app API: session verification and event logging.

    - ``POST /api/guest/verify`` answers from ``verify_answers`` (token -> (status, body)), else
      ``default_verify`` (invalid). ``accept(token, participant_id, ...)`` programs a valid one.
    - ``POST /api/guest/event`` answers ``event_status``.
    - ``DELETE /api/spaces/{spaceId}/visit`` answers ``visit_status``.

    Knobs affecting every call: ``fail_all()`` (500), ``hang(seconds)`` (delay before answering),
    ``garbage()`` (200 with a body that is not JSON), ``fail_next(n)`` (the next ``n`` calls get
    500), ``reset()``.
    """

    INVALID: tuple[int, JsonBody] = (401, {"valid": False, "error": "Invalid session"})

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.verify_answers: dict[str, tuple[int, JsonBody]] = {}
        self.default_verify: tuple[int, JsonBody] = self.INVALID
        self.event_status = 200
        self.visit_status = 200
        self.mode = "normal"
        self.hang_seconds = 0.0
        self.failures_left = 0

    @property
    def url(self) -> str:
        return self.base_url

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/guest/verify", self._verify)
        app.router.add_post("/api/auth/verify", self._verify)  # for AUTH_VERIFY_URL
        app.router.add_post("/api/guest/event", self._event)
        app.router.add_delete("/api/spaces/{spaceId}/visit", self._visit)

    # -- programming -------------------------------------------------------------------------

    def accept(
        self,
        token: str,
        participant_id: str,
        nickname: str | None = None,
        *,
        avatar: str | None = None,
        role: str | None = None,
        user_id: str | None = None,
        **extra: Any,
    ) -> None:
        """Make ``token`` verify as valid for ``participant_id``."""
        body: dict[str, Any] = {"valid": True, "participantId": participant_id, **extra}
        if nickname is not None:
            body["nickname"] = nickname
        if avatar is not None:
            body["avatar"] = avatar
        if role is not None:
            body["role"] = role
        if user_id is not None:
            body["userId"] = user_id
        self.verify_answers[token] = (200, body)

    def answer(self, token: str, status: int, body: JsonBody) -> None:
        """Answer verification of ``token`` with exactly this status and JSON body."""
        self.verify_answers[token] = (status, body)

    def fail_all(self) -> None:
        self.mode = "fail"

    def hang(self, seconds: float) -> None:
        self.mode = "hang"
        self.hang_seconds = seconds

    def garbage(self) -> None:
        self.mode = "garbage"

    def fail_next(self, count: int) -> None:
        self.failures_left = count

    def reset(self) -> None:
        """Forget programmed answers, knobs and recorded requests."""
        self.verify_answers.clear()
        self.default_verify = self.INVALID
        self.event_status = 200
        self.visit_status = 200
        self.mode = "normal"
        self.hang_seconds = 0.0
        self.failures_left = 0
        self.clear()

    # -- inspection --------------------------------------------------------------------------

    def verify_calls(self, token: str | None = None) -> list[RecordedRequest]:
        return self.find(
            "POST",
            "/api/guest/verify",
            None
            if token is None
            else lambda r: isinstance(r.body, dict) and r.body.get("sessionToken") == token,
        )

    def event_calls(self, space_id: str | None = None) -> list[RecordedRequest]:
        return self.find(
            "POST",
            "/api/guest/event",
            None
            if space_id is None
            else lambda r: isinstance(r.body, dict) and r.body.get("spaceId") == space_id,
        )

    def visit_calls(self, space_id: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.find("DELETE")
            if r.path.startswith("/api/spaces/")
            and r.path.endswith("/visit")
            and (space_id is None or r.path == f"/api/spaces/{space_id}/visit")
        ]

    # -- handlers ----------------------------------------------------------------------------

    async def _override(self) -> web.Response | None:
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.json_response({"error": "Internal Server Error"}, status=500)
        if self.mode == "fail":
            return web.json_response({"error": "Internal Server Error"}, status=500)
        if self.mode == "hang":
            await asyncio.sleep(self.hang_seconds)
        if self.mode == "garbage":
            return web.Response(status=200, text="<html>not json{", content_type="application/json")
        return None

    async def _verify(self, request: web.Request) -> web.Response:
        override = await self._override()
        if override is not None:
            return override
        body = request[RECORDED].body
        token = body.get("sessionToken") if isinstance(body, dict) else None
        status, answer = self.verify_answers.get(str(token), self.default_verify)
        return web.json_response(answer, status=status)

    async def _event(self, request: web.Request) -> web.Response:
        override = await self._override()
        if override is not None:
            return override
        return web.json_response({"success": True}, status=self.event_status)

    async def _visit(self, request: web.Request) -> web.Response:
        override = await self._override()
        if override is not None:
            return override
        if self.visit_status == 204:
            return web.Response(status=204)
        return web.json_response({"success": True}, status=self.visit_status)


class DiscordStandIn(_ThreadedHttpServer):
    """A Discord webhook: records every POSTed body.

    Answers 204 unless responses were queued: ``rate_limit(retry_after)`` (429 with
    ``retry_after`` seconds), ``fail(times)`` (500), ``queue(status, body)``.
    """

    PATH = "/api/webhooks/1234567890/test-token"

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.responses: deque[tuple[int, JsonBody, dict[str, str]]] = deque()

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.PATH}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._post)

    def queue(
        self, status: int, body: JsonBody = None, headers: dict[str, str] | None = None
    ) -> None:
        self.responses.append((status, body, headers or {}))

    def rate_limit(self, retry_after: float, times: int = 1) -> None:
        for _ in range(times):
            self.queue(
                429,
                {
                    "message": "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": False,
                },
                {"Retry-After": str(max(1, round(retry_after)))},
            )

    def fail(self, times: int = 1) -> None:
        for _ in range(times):
            self.queue(500, {"message": "Internal Server Error"})

    def reset(self) -> None:
        self.responses.clear()
        self.clear()

    @property
    def messages(self) -> list[JsonBody]:
        """Bodies of every webhook call received."""
        return [r.body for r in self.find("POST")]

    async def _post(self, request: web.Request) -> web.Response:
        if self.responses:
            status, body, headers = self.responses.popleft()
        else:
            status, body, headers = 204, None, {}
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

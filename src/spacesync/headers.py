"""A deadline for a client to finish sending request headers (``HEADER_READ_TIMEOUT``).

aiohttp reads a request's headers for as long as the client keeps sending them: a client that
sends one header byte every few seconds (slowloris) holds a connection, a file descriptor and a
parser forever, and a few thousand of them exhaust the process. aiohttp has no setting for this.
Its ``keepalive_timeout`` comes close (the timer it starts when a connection opens also fires
while headers are still arriving), but setting it to a few seconds would also cut off idle
keep-alive connections without telling them apart from slow ones, and aiohttp closes them
silently, so the attack would be neither counted nor logged.

So each connection gets one timer of its own, armed when the connection opens and again when a
response has been sent on a keep-alive connection, and cancelled as soon as aiohttp hands a
complete request to the application. A WebSocket or a long-poll therefore carries no timer once
its request has arrived. When the timer fires with no request in progress, the connection is
closed; if any byte of the next request had arrived (or none had ever been sent on the
connection), that is counted and logged as a header timeout, otherwise it was merely an idle
keep-alive connection and is closed quietly.

The timer lives in a subclass of aiohttp's per-connection protocol (``RequestHandler``), made
by a subclass of its ``Server``; the application runner builds that server in place of aiohttp's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_request

OnTimeout = Callable[[str], None]
"""Called with the peer address of a connection closed for slow headers."""


class HeaderDeadlineHandler(web_protocol.RequestHandler):
    """aiohttp's connection protocol with a deadline on each request's headers."""

    __slots__ = ("_header_bytes", "_header_limit", "_header_timer", "_on_timeout", "_served")

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        on_timeout: OnTimeout | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_limit = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = False
        self._served = False
        self._on_timeout = on_timeout

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = False
        self._header_timer = self._loop.call_later(self._header_limit, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None:
            self._header_bytes = True
        super().data_received(data)

    async def _handle_request(
        self, request: web_request.BaseRequest, start_time: float | None, request_handler: Any
    ) -> tuple[web.StreamResponse, bool]:
        self._disarm()
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._served = True
            if self.transport is not None and not self._force_close and not self._close:
                self._arm()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is None or self._request_in_progress:
            return
        if (self._header_bytes or not self._served) and self._on_timeout is not None:
            peer = self.transport.get_extra_info("peername")
            self._on_timeout(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        self.force_close()


class HeaderDeadlineServer(web.Server):
    """aiohttp's low-level server, making :class:`HeaderDeadlineHandler` connections."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        on_timeout: OnTimeout | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.on_timeout = on_timeout

    def __call__(self) -> HeaderDeadlineHandler:
        return HeaderDeadlineHandler(
            self,
            loop=self._loop,
            header_timeout=self.header_timeout,
            on_timeout=self.on_timeout,
            **self._kwargs,
        )


class HeaderDeadlineRunner(web.AppRunner):
    """``AppRunner`` whose server enforces the header deadline."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        on_timeout: OnTimeout | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._on_header_timeout = on_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        # The same server aiohttp would have made (its handler, request factory and options),
        # only making connections with a header deadline.
        return HeaderDeadlineServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            header_timeout=self._header_timeout,
            on_timeout=self._on_header_timeout,
            **made._kwargs,
        )

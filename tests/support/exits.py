"""The guest event calls the app received for one session, and waiting for them to arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from support.standins import AppStandIn, RecordedRequest


def calls_for(app: AppStandIn, token: str) -> list[RecordedRequest]:
    """The guest event calls (``POST /api/guest/event``) of the session ``token``, in order."""
    return [
        c
        for c in app.event_calls()
        if isinstance(c.body, dict) and c.body.get("sessionToken") == token
    ]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)

"""An app that hangs or fails (SPEC §2.1 verification with a 5 s timeout, §11 E4002/E4003):
verification calls do not pile up behind it. After five failures in a row the server stops
calling it for ten seconds, refusing sessions at once (production) instead of after 5 s, then
lets one call through and resumes when the app answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn

ServerFactory = Callable[..., ServerProcess]


async def app_api_figures(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{server.url}/metrics")).json()
    return body["appApi"]


async def try_join(bridge: Bridge, server: ServerProcess, space: str) -> tuple[JsClient, Any]:
    """Join with a guest token; returns the client and ``room:joined`` or the ``error``."""
    client = await bridge.connected(server.url)
    await client.emit(
        "join:space", {"spaceId": space, "nickname": "Guest", "sessionToken": unique("guest")}
    )
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        if client.received("room:joined"):
            return client, client.received("room:joined")[0]
        if client.received("error"):
            return client, client.received("error")[0]
        await asyncio.sleep(0.05)
    raise AssertionError("neither room:joined nor error")


async def test_hanging_app_is_not_called_again_and_again(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    server = start_server(NODE_ENV=None)
    space = space_id()
    app_standin.hang(30)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(try_join(bridge, server, space) for _ in range(5)))
    assert all(o[1].get("code") == "INVALID_SESSION" for o in outcomes), outcomes
    assert time.monotonic() - started >= 4.5, "each waited for the 5 s timeout"
    assert len(app_standin.verify_calls()) == 5

    started = time.monotonic()
    _, refused = await try_join(bridge, server, space)
    assert refused.get("code") == "INVALID_SESSION"
    assert time.monotonic() - started < 2, "refused at once while the app is known to hang"
    assert len(app_standin.verify_calls()) == 5, "the hanging app was not called again"
    figures = await app_api_figures(server)
    assert figures["circuitOpen"] is True and figures["circuitOpened"] == 1
    assert any("not called" in e["message"] for e in server.find_logs(code="E4002"))

    app_standin.reset()
    token = unique("guest")
    app_standin.accept(token, unique("participant"), "Back")
    await asyncio.sleep(10.5)
    client = await bridge.connected(server.url)
    joined = await client.join(space, "Back", session_token=token)
    assert joined["yourPlayerId"]
    assert (await app_api_figures(server))["circuitOpen"] is False


async def test_failing_app_opens_the_circuit_but_invalid_sessions_do_not(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """Refused sessions are answers, not failures: any number of them keeps the app called."""
    server = start_server(NODE_ENV=None)
    space = space_id()
    for _ in range(7):
        _, refused = await try_join(bridge, server, space)
        assert refused.get("code") == "INVALID_SESSION"
    assert len(app_standin.verify_calls()) == 7
    assert (await app_api_figures(server))["circuitOpen"] is False

    app_standin.fail_all()
    for _ in range(5):
        await try_join(bridge, server, space)
    assert len(app_standin.verify_calls()) == 12
    assert (await app_api_figures(server))["circuitOpen"] is True
    await try_join(bridge, server, space)
    assert len(app_standin.verify_calls()) == 12

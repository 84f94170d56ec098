"""Bogus session tokens cannot make the app work for them (SPEC §2.1, §2.2).

Every verification is a call to the app, and all calls share a fixed number of slots, so a flood
of made-up tokens would otherwise queue real logins behind it. A token the app refused is
remembered for a while and refused again without asking; an address whose tokens keep failing is
refused outright for the rest of the minute; a connect-time token gets the join's length cap; and
a connect-time identity counts only for the space it was verified for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import RECORDED, AppStandIn

ServerFactory = Callable[..., ServerProcess]

# Loopback addresses other than 127.0.0.1 reach the server from a distinct client address.
ATTACKER = "127.0.0.2"
SLOW_REFUSAL = 1.0
LIMIT = 10


class SlowRefusals(AppStandIn):
    """An app that takes ``SLOW_REFUSAL`` seconds to refuse a token it does not know (a lookup
    that misses every cache) and answers the tokens it knows at once."""

    async def _verify(self, request: web.Request) -> web.Response:
        body = request[RECORDED].body
        token = body.get("sessionToken") if isinstance(body, dict) else None
        if str(token) not in self.verify_answers:
            await asyncio.sleep(SLOW_REFUSAL)
        return await super()._verify(request)


@pytest.fixture
def slow_app() -> Iterator[SlowRefusals]:
    app = SlowRefusals()
    app.start()
    yield app
    app.stop()


async def abuse_figures(server: ServerProcess) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{server.url}/metrics")).json()
    return dict(body.get("abuse", {}))


async def refused_at_connect(
    bridge: Bridge, server: ServerProcess, auth: dict[str, Any], **opts: Any
) -> tuple[JsClient, dict[str, Any]]:
    client = bridge.client(server.url, auth=auth, **opts)
    return client, await client.connect_expect_error(timeout=15)


# -- 1. failures are cached per token and limited per address ---------------------------------


async def test_bogus_connect_tokens_from_one_address_call_the_app_at_most_the_limit(
    bridge: Bridge, start_server: ServerFactory, slow_app: SlowRefusals
) -> None:
    """A flood of made-up connect-time tokens from one address: the app sees at most
    ``VERIFY_FAILURES_PER_IP`` of them, every one is refused ("Invalid session"), and a real
    login from another address meanwhile is verified without queueing behind the flood."""
    server = start_server(NODE_ENV=None, APP_URL=slow_app.url, VERIFY_FAILURES_PER_IP=str(LIMIT))
    space = space_id()
    flood = 120

    async def bogus() -> dict[str, Any]:
        auth = {"sessionToken": unique("bogus"), "spaceId": space}
        _, refused = await refused_at_connect(bridge, server, auth, localAddress=ATTACKER)
        return refused

    attack = [asyncio.create_task(bogus()) for _ in range(flood)]
    await asyncio.sleep(0.3)  # the flood is under way

    token = unique("guest")
    participant = unique("participant")
    slow_app.accept(token, participant, "Real")
    started = time.monotonic()
    real = bridge.client(server.url, auth={"sessionToken": token, "spaceId": space})
    await real.connect(timeout=15)
    joined = await real.join(space, "Real")
    delay = time.monotonic() - started
    assert joined["yourPlayerId"] == participant

    refusals = await asyncio.gather(*attack)
    assert all(r["message"] == "Invalid session" for r in refusals), refusals
    bogus_calls = [
        r for r in slow_app.verify_calls() if r.body.get("sessionToken", "").startswith("bogus-")
    ]
    assert len(bogus_calls) <= LIMIT, f"{len(bogus_calls)} bogus tokens reached the app"
    assert delay < SLOW_REFUSAL / 2, f"the real login took {delay:.2f}s"

    figures = await abuse_figures(server)
    assert figures.get("verifyFailuresPerAddress", 0) >= flood - LIMIT
    logs = server.find_logs(code="E1002")
    assert any(ATTACKER in str(e.get("context", {}).get("address")) for e in logs), logs[-3:]


@pytest.mark.parametrize("where", ["connect", "join"])
async def test_the_same_refused_token_is_not_sent_to_the_app_twice(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, where: str
) -> None:
    """A token the app called invalid is refused again, for the same space, from memory."""
    server = start_server(NODE_ENV=None, VERIFY_FAILURES_PER_IP="0")
    space = space_id()
    token = unique("bogus")
    for _ in range(3):
        if where == "connect":
            _, refused = await refused_at_connect(
                bridge, server, {"sessionToken": token, "spaceId": space}
            )
            assert refused["message"] == "Invalid session"
        else:
            client = await bridge.connected(server.url)
            await client.emit(
                "join:space", {"spaceId": space, "nickname": "Guest", "sessionToken": token}
            )
            assert (await client.wait_for("error"))["code"] == "INVALID_SESSION"
    assert len(app_standin.verify_calls(token)) == 1
    assert (await abuse_figures(server)).get("verifyFailureCached") == 2


async def test_failure_cache_can_be_switched_off_and_outages_are_not_cached(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """``VERIFY_FAILURE_CACHE_SECONDS=0`` asks the app every time; and an app that could not
    answer (5xx) did not call the token invalid, so nothing is remembered for it."""
    server = start_server(
        NODE_ENV=None, VERIFY_FAILURE_CACHE_SECONDS="0", VERIFY_FAILURES_PER_IP="0"
    )
    space = space_id()
    token = unique("bogus")
    for _ in range(2):
        await refused_at_connect(bridge, server, {"sessionToken": token, "spaceId": space})
    assert len(app_standin.verify_calls(token)) == 2

    cached_server = start_server(NODE_ENV=None, VERIFY_FAILURES_PER_IP="0")
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Later")
    app_standin.fail_next(1)
    await refused_at_connect(bridge, cached_server, {"sessionToken": token, "spaceId": space})
    client = bridge.client(cached_server.url, auth={"sessionToken": token, "spaceId": space})
    await client.connect()
    assert (await client.join(space, "Later"))["yourPlayerId"] == participant


async def test_development_falls_back_to_client_values_when_refused_from_memory(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """Development keeps its documented behaviour: a refused token joins with the client's
    values, also when it is refused without asking the app; ``dev-`` tokens are never sent."""
    server = start_server(NODE_ENV="development", VERIFY_FAILURES_PER_IP="1")
    space = space_id()
    for _ in range(3):
        client = await bridge.connected(server.url)
        player = unique("player")
        joined = await client.join(space, "Local", session_token=unique("bogus"), playerId=player)
        assert joined["yourPlayerId"] == player
        await client.disconnect()
    assert len(app_standin.verify_calls()) == 1
    client = bridge.client(server.url, auth={"sessionToken": dev_token(), "spaceId": space})
    await client.connect()
    player = unique("player")
    assert (await client.join(space, "Dev", playerId=player))["yourPlayerId"] == player
    assert len(app_standin.verify_calls()) == 1


# -- 2. one length cap for session tokens ------------------------------------------------------


@pytest.mark.parametrize("mode", ["production", "development"])
async def test_overlong_connect_token_is_refused_without_calling_the_app(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, mode: str
) -> None:
    """The join's cap (4,096 characters after trimming) applies to ``auth.sessionToken`` too."""
    server = start_server(NODE_ENV="development" if mode == "development" else None)
    space = space_id()
    token = "x" * 60_000
    app_standin.accept(token, unique("participant"), "Long")
    _, refused = await refused_at_connect(
        bridge, server, {"sessionToken": token, "spaceId": space}, transports=["polling"]
    )
    assert refused["message"] == "Invalid session"
    assert app_standin.verify_calls() == []
    assert (await abuse_figures(server)).get("sessionTokenTooLong") == 1

    fits = "y" * 4096
    participant = unique("participant")
    app_standin.accept(fits, participant, "Fits")
    client = bridge.client(
        server.url, transports=["polling"], auth={"sessionToken": f"  {fits} ", "spaceId": space}
    )
    await client.connect()
    assert (await client.join(space, "Fits"))["yourPlayerId"] == participant
    assert len(app_standin.verify_calls(fits)) == 1


# -- 3. a connect-time identity is bound to its space -----------------------------------------


@pytest.mark.parametrize("space_field", ["missing", "numeric", "null", "malformed"])
async def test_connect_token_without_a_space_is_verified_at_join_for_the_joined_space(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, space_field: str
) -> None:
    """Without a usable ``auth.spaceId`` the token is not verified at connect (a verification
    always names the space it is for); the join verifies it with the join's space."""
    server = start_server(NODE_ENV=None)
    space = space_id()
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Guest")
    auth: dict[str, Any] = {"sessionToken": token}
    if space_field != "missing":
        auth["spaceId"] = {"numeric": 12345, "null": None, "malformed": "no spaces allowed"}[
            space_field
        ]
    client = bridge.client(server.url, auth=auth)
    await client.connect()
    await asyncio.sleep(0.1)
    assert app_standin.verify_calls(token) == []

    joined = await client.join(space, "Guest")
    assert joined["yourPlayerId"] == participant
    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}


async def test_connect_identity_does_not_carry_over_to_another_space(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """An identity verified for space A is reused by a join of A (no second call), but a join of
    another space asks the app about that space, and its answer decides."""
    server = start_server(NODE_ENV=None)
    home, other = space_id(), space_id()
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Home")

    client = bridge.client(server.url, auth={"sessionToken": token, "spaceId": home})
    await client.connect()
    assert (await client.join(home, "Home"))["yourPlayerId"] == participant
    assert len(app_standin.verify_calls(token)) == 1

    app_standin.answer(token, 403, {"valid": False, "error": "Not a member of this space"})
    await client.emit("join:space", {"spaceId": other, "nickname": "Home"})
    assert (await client.wait_for("error"))["code"] == "INVALID_SESSION"
    calls = app_standin.verify_calls(token)
    assert [c.body["spaceId"] for c in calls] == [home, other]

    third = space_id()
    second = bridge.client(server.url, auth={"sessionToken": token, "spaceId": home})
    app_standin.accept(token, participant, "Home")
    await second.connect()
    elsewhere = unique("participant")
    app_standin.accept(token, elsewhere, "Elsewhere")
    assert (await second.join(third, "Home"))["yourPlayerId"] == elsewhere
    assert app_standin.verify_calls(token)[-1].body["spaceId"] == third

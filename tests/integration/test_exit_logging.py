"""EXIT event logging to the app: which call, when, with what, and that it is never lost nor
delays the leave (SPEC §7, §12)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn, RecordedRequest

ServerFactory = Callable[..., ServerProcess]

TRANSPORTS = ["websocket", "polling"]
# How long to keep watching for a second, unwanted EXIT call.
SETTLE = 0.5
# The server's reason for a client-side `socket.disconnect()` (Socket.IO's own wording, and the
# wording of the Python Socket.IO stack) and for a cut connection.
CLIENT_DISCONNECT_REASONS = {"client namespace disconnect", "client disconnect"}
TRANSPORT_LOSS_REASONS = {"transport close", "transport error"}


# -- helpers ---------------------------------------------------------------------------------


async def guest(
    bridge: Bridge,
    server: ServerProcess,
    app: AppStandIn,
    space: str,
    nickname: str,
    *,
    token: str | None = None,
    transport: str = "websocket",
) -> JsClient:
    """A client that joined ``space`` with a token the app accepts."""
    token = token or unique("guest")
    participant = unique("participant")
    if token not in app.verify_answers:
        app.accept(token, participant, nickname)
    client = await bridge.connected(server.url, transports=[transport])
    await client.join(space, nickname, session_token=token)
    return client


def exit_calls(app: AppStandIn, space: str, token: str | None = None) -> list[RecordedRequest]:
    """Guest EXIT calls recorded for ``space`` (and ``token``)."""
    return [
        r
        for r in app.event_calls(space)
        if token is None or (isinstance(r.body, dict) and r.body.get("sessionToken") == token)
    ]


async def one_exit(app: AppStandIn, space: str, token: str | None = None) -> RecordedRequest:
    """Wait for the guest EXIT of ``space``, then make sure no second one follows."""
    await app.wait_for_request(
        "POST",
        "/api/guest/event",
        lambda r: (
            r.body.get("spaceId") == space
            and (token is None or r.body.get("sessionToken") == token)
        ),
    )
    await asyncio.sleep(SETTLE)
    calls = exit_calls(app, space, token)
    assert len(calls) == 1, [c.body for c in calls]
    return calls[0]


def assert_exit_body(call: RecordedRequest, token: str, space: str) -> dict[str, Any]:
    """SPEC §7: `{sessionToken, spaceId, eventType: "EXIT", payload: {reason, durationSeconds}}`;
    returns the payload."""
    body = call.body
    assert isinstance(body, dict), call.raw_body
    assert set(body) == {"sessionToken", "spaceId", "eventType", "payload"}, body
    assert body["sessionToken"] == token
    assert body["spaceId"] == space
    assert body["eventType"] == "EXIT"
    payload = body["payload"]
    assert set(payload) == {"reason", "durationSeconds"}, payload
    assert isinstance(payload["reason"], str)
    duration = payload["durationSeconds"]
    assert isinstance(duration, int | float) and not isinstance(duration, bool), duration
    assert duration >= 0
    assert call.headers["content-type"].startswith("application/json")
    return dict(payload)


def idempotency_key(call: RecordedRequest) -> str:
    key = call.headers.get("idempotency-key")
    assert key, f"no Idempotency-Key on {call.method} {call.path}"
    return key


def reason_detail(reason: str) -> str:
    assert reason.startswith("disconnect:"), reason
    return reason[len("disconnect:") :]


# -- which call ------------------------------------------------------------------------------


async def test_guest_leave_logs_one_exit_with_its_stay(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §7: a guest's `leave:space` logs exactly one `POST /api/guest/event` with
    `{sessionToken, spaceId, eventType: "EXIT", payload: {reason: "leave", durationSeconds}}`,
    where durationSeconds is the time since the join; it carries an Idempotency-Key."""
    space = space_id()
    token = unique("guest")
    client = await guest(
        bridge, prod_server, app_standin, space, "Stayer", token=token, transport="polling"
    )
    await asyncio.sleep(2.0)
    await client.emit("leave:space")

    call = await one_exit(app_standin, space, token)
    payload = assert_exit_body(call, token, space)
    assert payload["reason"] == "leave"
    assert 1 <= payload["durationSeconds"] <= 3, payload
    idempotency_key(call)
    assert app_standin.visit_calls(space) == []


@pytest.mark.parametrize(
    ("how", "transport"),
    [
        ("client", "websocket"),
        ("client", "polling"),
        ("cut", "websocket"),
        ("cut", "polling"),
    ],
)
async def test_guest_disconnect_logs_one_exit_with_the_transport_reason(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    how: str,
    transport: str,
) -> None:
    """SPEC §7: a disconnect logs one EXIT whose reason is `disconnect:<transport reason>`:
    the client's `socket.disconnect()` maps to the client-disconnect reason, a cut WebSocket to
    `transport close`; the other players see `player:left` as usual."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    token = unique("guest")
    client = await guest(
        bridge, prod_server, app_standin, space, "Leaver", token=token, transport=transport
    )
    await observer.wait_for("player:joined")
    if how == "client":
        await client.disconnect()
    else:
        await client.drop_transport()
    assert await observer.wait_for("player:left") == {"id": client.player_id}

    payload = assert_exit_body(await one_exit(app_standin, space, token), token, space)
    detail = reason_detail(payload["reason"])
    if how == "client":
        assert detail in CLIENT_DISCONNECT_REASONS, payload
    elif transport == "websocket":
        assert detail in TRANSPORT_LOSS_REASONS, payload
    else:
        assert detail in TRANSPORT_LOSS_REASONS | CLIENT_DISCONNECT_REASONS, payload
    assert payload["durationSeconds"] <= 2


async def test_connect_time_session_logs_its_exit(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.2, §7: a guest authenticated at connect (no token in `join:space`) still owes an
    EXIT carrying its session token."""
    space = space_id()
    token = unique("guest")
    app_standin.accept(token, unique("participant"), "Early")
    client = bridge.client(prod_server.url, auth={"sessionToken": token, "spaceId": space})
    await client.connect()
    await client.join(space, "Early")
    await client.emit("leave:space")
    payload = assert_exit_body(await one_exit(app_standin, space, token), token, space)
    assert payload["reason"] == "leave"


@pytest.mark.parametrize("end", ["leave", "disconnect"])
async def test_logged_in_user_exit_uses_the_visit_api(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn, end: str
) -> None:
    """SPEC §7: an `auth-<userId>` session's EXIT is `DELETE /api/spaces/{spaceId}/visit` with
    header `x-user-id: <userId>`, exactly once, and no guest event."""
    space = space_id()
    user = unique("user")
    token = f"auth-{user}"
    client = await guest(bridge, prod_server, app_standin, space, "Member", token=token)
    if end == "leave":
        await client.emit("leave:space")
    else:
        await client.disconnect()

    await app_standin.wait_for_request("DELETE", f"/api/spaces/{space}/visit")
    await asyncio.sleep(SETTLE)
    (visit,) = app_standin.visit_calls(space)
    assert visit.headers.get("x-user-id") == user
    idempotency_key(visit)
    assert app_standin.event_calls(space) == []


async def test_development_sessions_log_no_exit(
    bridge: Bridge, dev_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §7: `dev-*` sessions (and token-less development sessions) make no call at all,
    whether they leave or disconnect."""
    space = space_id()
    observer = await bridge.connected(dev_server.url)
    await observer.join(space, "Watcher", session_token=dev_token(), playerId=unique("w"))
    leaver = await bridge.connected(dev_server.url)
    await leaver.join(space, "Leaver", session_token=dev_token(), playerId=unique("l"))
    dropper = await bridge.connected(dev_server.url, transports=["polling"])
    await dropper.join(space, "Dropper", session_token=dev_token(), playerId=unique("d"))
    anon = await bridge.connected(dev_server.url)
    await anon.join(space, "Anon")

    await leaver.emit("leave:space")
    await dropper.disconnect()
    await anon.emit("leave:space")
    for _ in range(3):
        await observer.wait_for("player:left")
    await asyncio.sleep(SETTLE)
    about_space = [
        (r.method, r.path)
        for r in app_standin.snapshot()
        if space in r.path or (isinstance(r.body, dict) and r.body.get("spaceId") == space)
    ]
    assert about_space == []


# -- exactly once ----------------------------------------------------------------------------


async def test_leave_then_disconnect_logs_one_exit(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §4 (`leave:space`), §7: a disconnect after `leave:space` owes nothing more."""
    space = space_id()
    token = unique("guest")
    client = await guest(bridge, prod_server, app_standin, space, "Twice", token=token)
    await client.emit("leave:space")
    await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body["spaceId"] == space
    )
    await client.disconnect()
    payload = assert_exit_body(await one_exit(app_standin, space, token), token, space)
    assert payload["reason"] == "leave"


async def test_joining_another_space_logs_exit_for_the_first(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §4 (`join:space`), §7: joining another space leaves the first with reason `leave`;
    the second space's EXIT follows when the socket goes; each EXIT has its own
    Idempotency-Key."""
    first, second = space_id(), space_id()
    token = unique("guest")
    client = await guest(bridge, prod_server, app_standin, first, "Hopper", token=token)
    await client.join(second, "Hopper", session_token=token)

    first_exit = await one_exit(app_standin, first, token)
    assert assert_exit_body(first_exit, token, first)["reason"] == "leave"
    assert exit_calls(app_standin, second) == []

    await client.disconnect()
    second_exit = await one_exit(app_standin, second, token)
    assert reason_detail(assert_exit_body(second_exit, token, second)["reason"])
    assert idempotency_key(first_exit) != idempotency_key(second_exit)
    assert len(exit_calls(app_standin, first)) == 1


# -- failures, retries and never delaying the leave ------------------------------------------


async def test_failed_guest_exit_is_retried_with_backoff(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §7, §11: a failed EXIT (app answering 500) is logged as error E4001 and retried with
    backoff (about 1 s, then 2 s) until delivered; every attempt is the same EXIT (same body,
    same Idempotency-Key); nothing is sent after the delivery."""
    space = space_id()
    token = unique("guest")
    client = await guest(bridge, prod_server, app_standin, space, "Unlucky", token=token)
    mark = prod_server.mark()
    app_standin.event_status = 500
    await client.emit("leave:space")

    def ours(r: RecordedRequest) -> bool:
        return r.body.get("spaceId") == space

    await app_standin.wait_for_request("POST", "/api/guest/event", ours, timeout=4, count=2)
    app_standin.event_status = 200
    await prod_server.wait_for_log(code="E4001", level="error", since=mark)
    await app_standin.wait_for_request("POST", "/api/guest/event", ours, timeout=5, count=3)
    await asyncio.sleep(SETTLE)
    attempts = exit_calls(app_standin, space)
    assert len(attempts) == 3, [a.body for a in attempts]
    first_gap = attempts[1].time - attempts[0].time
    second_gap = attempts[2].time - attempts[1].time
    assert 0.7 <= first_gap <= 2.5, first_gap
    assert 1.4 <= second_gap <= 4.5, second_gap
    assert second_gap > first_gap
    assert {idempotency_key(a) for a in attempts} == {idempotency_key(attempts[0])}
    assert all(a.body == attempts[0].body for a in attempts)
    assert assert_exit_body(attempts[0], token, space)["reason"] == "leave"


async def test_failed_visit_exit_is_retried(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §7: the visit-API EXIT is retried as well after a failure (here one 503), with the
    same Idempotency-Key and header, and logged as E4001."""
    space = space_id()
    user = unique("user")
    client = await guest(bridge, prod_server, app_standin, space, "Member", token=f"auth-{user}")
    mark = prod_server.mark()
    app_standin.visit_status = 503
    await client.emit("leave:space")
    await app_standin.wait_for_request("DELETE", f"/api/spaces/{space}/visit")
    app_standin.visit_status = 204
    await prod_server.wait_for_log(code="E4001", level="error", since=mark)
    await app_standin.wait_for_request("DELETE", f"/api/spaces/{space}/visit", count=2, timeout=4)
    await asyncio.sleep(SETTLE)
    first, second = app_standin.visit_calls(space)
    assert idempotency_key(first) == idempotency_key(second)
    assert first.headers.get("x-user-id") == second.headers.get("x-user-id") == user


async def test_hanging_app_never_delays_the_leave(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §7: EXITs are logged asynchronously; with the app hanging, the others still see
    `player:left` (and the "left" notice) at once, for a leave and for a disconnect, and the
    EXITs arrive once the app answers."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    leaver_token, dropper_token = unique("guest"), unique("guest")
    leaver = await guest(bridge, prod_server, app_standin, space, "Leaver", token=leaver_token)
    dropper = await guest(
        bridge, prod_server, app_standin, space, "Dropper", token=dropper_token, transport="polling"
    )
    observer.consume()
    app_standin.hang(2)

    started = time.monotonic()
    await leaver.emit("leave:space")
    assert await observer.wait_for("player:left", timeout=1) == {"id": leaver.player_id}
    await observer.wait_for("chat:system", lambda m: m["content"] == "Leaver left", timeout=1)
    assert time.monotonic() - started < 1

    started = time.monotonic()
    await dropper.disconnect()
    assert await observer.wait_for("player:left", timeout=1) == {"id": dropper.player_id}
    assert time.monotonic() - started < 1

    await observer.emit("chat:message", {"content": "still responsive"})
    await observer.wait_for("chat:message", timeout=1)
    await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body["spaceId"] == space, count=2, timeout=6
    )
    assert {c.body["sessionToken"] for c in exit_calls(app_standin, space)} == {
        leaver_token,
        dropper_token,
    }


# -- shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize("first_transport", TRANSPORTS)
async def test_sigterm_delivers_owed_exits_before_exiting(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, first_transport: str
) -> None:
    """SPEC §7, §12: on SIGTERM the server logs the EXITs of all its joined guests (whatever
    their transport), and an EXIT still waiting for a retry, before it exits with code 0
    within 10 s."""
    server = start_server(NODE_ENV=None)
    space = space_id()
    tokens = [unique("guest") for _ in range(3)]
    await guest(
        bridge, server, app_standin, space, "One", token=tokens[0], transport=first_transport
    )
    await guest(bridge, server, app_standin, space, "Two", token=tokens[1])
    owed = await guest(bridge, server, app_standin, space, "Owed", token=tokens[2])

    app_standin.event_status = 500
    await owed.emit("leave:space")
    await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body["sessionToken"] == tokens[2]
    )
    app_standin.event_status = 200
    healed = time.monotonic()

    assert await server.astop(timeout=12) == 0
    stopped_after = time.monotonic() - healed
    delivered = {
        c.body["sessionToken"]: c.body for c in exit_calls(app_standin, space) if c.time > healed
    }
    assert set(delivered) == set(tokens), (delivered, server.output()[-3000:])
    assert delivered[tokens[2]]["payload"]["reason"] == "leave"
    for token in tokens[:2]:
        assert reason_detail(delivered[token]["payload"]["reason"])
        assert len(exit_calls(app_standin, space, token)) == 1
    assert stopped_after < 10, f"exited {stopped_after:.1f}s after SIGTERM"
    assert server.find_logs(code="E6002")

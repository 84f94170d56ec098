"""Connection state recovery, as a user notices it: a player whose link drops for a moment and
whose client reconnects by itself within ``RECOVERY_WINDOW`` keeps its socket id, gets what was
said meanwhile (once, in order) and where the others are now, and nobody else sees it leave or
come back; the app is not told of an exit. A goodbye (`socket.disconnect()`), a window that runs
out, or a window of 0 are departures as before. Driven by the official socket.io-client against
the real server, in production mode with guest tokens the app stand-in accepts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient, Message
from support.rawio import RawWebSocket
from support.server import ServerProcess
from support.standins import AppStandIn, RecordedRequest

ServerFactory = Callable[..., ServerProcess]

TRANSPORTS = ["websocket", "polling", "upgraded"]
"""``upgraded``: the client's default, long-polling first, then upgraded to WebSocket."""
WINDOW = "30"
# The client's own reconnection delay: long enough for the others to act while it is away.
RECONNECT_DELAY_MS = 2000
# Generous waits for a busy machine.
RECONNECT_TIMEOUT = 20.0
EVENT_TIMEOUT = 10.0
SETTLE = 1.0
TRANSPORT_LOSS_REASONS = {"disconnect:transport close", "disconnect:transport error"}


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
    reconnect: bool = False,
) -> JsClient:
    """A client that joined ``space`` with a guest token the app accepts; with ``reconnect``
    it reconnects by itself, ``RECONNECT_DELAY_MS`` after losing its connection."""
    token = token or unique("guest")
    if token not in app.verify_answers:
        app.accept(token, unique("participant"), nickname)
    options: dict[str, Any] = {}
    if reconnect:
        options = {
            "reconnection": True,
            "reconnectionDelay": RECONNECT_DELAY_MS,
            "reconnectionDelayMax": RECONNECT_DELAY_MS,
            "randomizationFactor": 0,
        }
    transports = ["polling", "websocket"] if transport == "upgraded" else [transport]
    client = bridge.client(server.url, transports=transports, **options)
    await client.connect(EVENT_TIMEOUT)
    await client.join(space, nickname, session_token=token, timeout=EVENT_TIMEOUT)
    await client.wait_for("proximity:status", timeout=EVENT_TIMEOUT)  # the end of its join
    return client


async def until_upgraded(client: JsClient) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while (await client.state())["transport"] != "websocket":
        assert time.monotonic() < deadline, f"{client.id}: not upgraded to WebSocket"
        await asyncio.sleep(0.05)


def exit_calls(app: AppStandIn, space: str, token: str) -> list[RecordedRequest]:
    return [
        r
        for r in app.event_calls(space)
        if isinstance(r.body, dict)
        and r.body.get("eventType") == "EXIT"
        and r.body.get("sessionToken") == token
    ]


async def one_exit(app: AppStandIn, space: str, token: str) -> dict[str, Any]:
    """Wait for the EXIT of ``token``, make sure no second one follows; returns its payload."""
    await app.wait_for_request(
        "POST",
        "/api/guest/event",
        lambda r: r.body.get("spaceId") == space and r.body.get("sessionToken") == token,
        timeout=EVENT_TIMEOUT,
    )
    await asyncio.sleep(SETTLE)
    calls = exit_calls(app, space, token)
    assert len(calls) == 1, [c.body for c in calls]
    return dict(calls[0].body["payload"])


def is_line(text: str) -> Callable[[Any], bool]:
    return lambda m: m.get("content") == text


def departure_line(nickname: str) -> Callable[[Any], bool]:
    """The system line about a player who left (or, after a disconnect, lost the connection)."""
    return lambda m: m.get("content") in departure_lines(nickname)


def departure_lines(nickname: str) -> set[str]:
    return {f"{nickname} left", f"{nickname} lost the connection"}


def contents(client: JsClient, wanted: list[str]) -> list[str]:
    """The ``chat:message`` contents among ``wanted`` that ``client`` received, in order."""
    return [m["content"] for m in client.received("chat:message") if m.get("content") in wanted]


def last_status(client: JsClient, kind: str) -> Message:
    found = [m for m in client.log() if m.get("type") == kind]
    assert found, f"{client.id}: no {kind!r} status message"
    return found[-1]


def chat_arrivals(client: JsClient, wanted: list[str]) -> list[float]:
    return [
        float(m["at"])
        for m in client.log()
        if m.get("type") == "event"
        and m.get("event") == "chat:message"
        and (m.get("args") or [{}])[0].get("content") in wanted
    ]


def saw_ann_leave_or_join(bob: JsClient, ann: JsClient, since: int) -> list[Any]:
    """What Bob received after log index ``since`` that tells of Ann leaving or coming in."""
    seen: list[Any] = []
    for message in bob.log()[since:]:
        if message.get("type") != "event":
            continue
        event, args = message.get("event"), message.get("args") or [None]
        payload = args[0]
        if event in ("player:left", "player:joined") and isinstance(payload, dict):
            if payload.get("id") == ann.player_id:
                seen.append((event, payload))
        elif event == "chat:system" and isinstance(payload, dict):
            nickname = str(ann.nickname)
            if payload.get("content") in departure_lines(nickname) | {f"{nickname} joined"}:
                seen.append((event, payload))
    return seen


# -- 1. a cut link, resumed ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cut_link_is_resumed_and_nobody_notices(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, transport: str
) -> None:
    server = start_server(NODE_ENV=None, RECOVERY_WINDOW=WINDOW)
    space = space_id()
    bob = await guest(bridge, server, app_standin, space, "Bob")
    ann_token = unique("guest")
    ann = await guest(
        bridge, server, app_standin, space, "Ann", token=ann_token, transport=transport,
        reconnect=True,
    )  # fmt: skip
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)
    await bob.wait_for("chat:system", is_line("Ann joined"), EVENT_TIMEOUT)
    first_sid = ann.sid
    assert first_sid and not ann.recovered
    if transport == "upgraded":
        await until_upgraded(ann)
    bob_mark = len(bob.log())

    await ann.drop_transport()
    missed = [f"while Ann is away {i} {unique('m')}" for i in range(3)]
    await bob.emit("player:move", {"x": 321, "y": 123, "direction": "left", "isMoving": False})
    for line in missed:
        await bob.emit("chat:message", {"content": line})
    for line in missed:
        await bob.wait_for("chat:message", is_line(line), EVENT_TIMEOUT)
    bob_done = time.monotonic()

    assert await ann.wait_reconnect(RECONNECT_TIMEOUT) == first_sid
    assert ann.recovered is True
    resumed = last_status(ann, "connect")
    assert resumed["at"] > bob_done, "Ann's client came back before Bob had said anything"
    assert last_status(ann, "disconnect")["at"] < resumed["at"]

    for line in missed:
        await ann.wait_for("chat:message", is_line(line), EVENT_TIMEOUT)
    moved = await ann.wait_for("player:moved", lambda p: p["id"] == bob.player_id, EVENT_TIMEOUT)
    assert (moved["x"], moved["y"]) == (321, 123), moved
    await asyncio.sleep(SETTLE)
    assert contents(ann, missed) == missed, "missed messages not replayed once, in order"
    assert all(at > resumed["at"] for at in chat_arrivals(ann, missed))

    assert saw_ann_leave_or_join(bob, ann, bob_mark) == []
    assert exit_calls(app_standin, space, ann_token) == [], "the app was told Ann left"

    after = f"Ann is back {unique('m')}"
    await ann.emit("chat:message", {"content": after})
    said = await bob.wait_for("chat:message", is_line(after), EVENT_TIMEOUT)
    assert said["senderId"] == ann.player_id
    await asyncio.sleep(SETTLE)
    assert saw_ann_leave_or_join(bob, ann, bob_mark) == []
    assert exit_calls(app_standin, space, ann_token) == []
    assert (await ann.state())["sid"] == first_sid


# -- 2. a goodbye is final -------------------------------------------------------------------


async def test_no_recovery_after_a_goodbye(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    server = start_server(NODE_ENV=None, RECOVERY_WINDOW=WINDOW)
    space = space_id()
    bob = await guest(bridge, server, app_standin, space, "Bob")
    ann_token = unique("guest")
    ann = await guest(bridge, server, app_standin, space, "Ann", token=ann_token, reconnect=True)
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)
    first_sid = ann.sid

    started = time.monotonic()
    await ann.disconnect()
    assert await bob.wait_for("player:left", timeout=EVENT_TIMEOUT) == {"id": ann.player_id}
    assert time.monotonic() - started < 5.0, "the goodbye was held like a lost link"
    await bob.wait_for("chat:system", departure_line("Ann"), EVENT_TIMEOUT)
    payload = await one_exit(app_standin, space, ann_token)
    assert payload["reason"] == "disconnect:client namespace disconnect", payload

    # The client still offers its old session; the server has let it go.
    sid = await ann.connect(EVENT_TIMEOUT)
    assert ann.recovered is False
    assert sid != first_sid
    await ann.join(space, "Ann", session_token=ann_token, timeout=EVENT_TIMEOUT)
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)


# -- 3. the window runs out ------------------------------------------------------------------


async def test_a_client_that_does_not_come_back_leaves_when_the_window_ends(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    server = start_server(NODE_ENV=None, RECOVERY_WINDOW="2")
    space = space_id()
    bob = await guest(bridge, server, app_standin, space, "Bob")
    ann_token = unique("guest")
    ann = await guest(bridge, server, app_standin, space, "Ann", token=ann_token)
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)

    await ann.drop_transport()
    dropped = time.monotonic()
    await bob.expect_nothing("player:left", within=1.0)
    assert exit_calls(app_standin, space, ann_token) == []
    assert await bob.wait_for("player:left", timeout=EVENT_TIMEOUT) == {"id": ann.player_id}
    left_at = next(
        m["at"]
        for m in bob.log()
        if m.get("event") == "player:left" and m["args"][0]["id"] == ann.player_id
    )
    assert 1.5 <= left_at - dropped <= 8.0, left_at - dropped
    await bob.wait_for("chat:system", departure_line("Ann"), EVENT_TIMEOUT)
    payload = await one_exit(app_standin, space, ann_token)
    assert payload["reason"] in TRANSPORT_LOSS_REASONS, payload


# -- 4. back after the window ----------------------------------------------------------------


async def test_a_client_back_after_the_window_starts_afresh(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    server = start_server(NODE_ENV=None, RECOVERY_WINDOW="2")
    space = space_id()
    bob = await guest(bridge, server, app_standin, space, "Bob")
    ann_token = unique("guest")
    ann = await guest(bridge, server, app_standin, space, "Ann", token=ann_token)
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)
    first_sid = ann.sid

    await ann.drop_transport()
    await bob.wait_for("player:left", timeout=EVENT_TIMEOUT)
    await one_exit(app_standin, space, ann_token)

    sid = await ann.connect(EVENT_TIMEOUT)  # offers the session the server let go
    assert ann.recovered is False
    assert sid != first_sid
    joined = await ann.join(space, "Ann", session_token=ann_token, timeout=EVENT_TIMEOUT)
    assert {p["id"] for p in joined["players"]} == {ann.player_id, bob.player_id}
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)
    line = f"hello again {unique('m')}"
    await ann.emit("chat:message", {"content": line})
    await bob.wait_for("chat:message", is_line(line), EVENT_TIMEOUT)


# -- 5. no window ----------------------------------------------------------------------------


async def test_without_a_window_a_cut_link_is_a_departure(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    server = start_server(NODE_ENV=None, RECOVERY_WINDOW="0")
    space = space_id()
    bob = await guest(bridge, server, app_standin, space, "Bob")
    ann_token = unique("guest")
    ann = await guest(bridge, server, app_standin, space, "Ann", token=ann_token, reconnect=True)
    await bob.wait_for("player:joined", lambda p: p["id"] == ann.player_id, EVENT_TIMEOUT)
    first_sid = ann.sid

    started = time.monotonic()
    await ann.drop_transport()
    assert await bob.wait_for("player:left", timeout=EVENT_TIMEOUT) == {"id": ann.player_id}
    assert time.monotonic() - started < 1.9, "the departure waited although there is no window"
    await bob.wait_for("chat:system", departure_line("Ann"), EVENT_TIMEOUT)
    payload = await one_exit(app_standin, space, ann_token)
    assert payload["reason"] in TRANSPORT_LOSS_REASONS, payload

    # Its client comes back by itself, as a new connection outside the space.
    sid = await ann.wait_reconnect(RECONNECT_TIMEOUT)
    assert ann.recovered is False
    assert sid != first_sid
    line = f"not in the space {unique('m')}"
    await ann.emit("chat:message", {"content": line})
    await bob.expect_nothing("chat:message", within=SETTLE, predicate=is_line(line))


# -- 6. hostile CONNECTs ---------------------------------------------------------------------


async def raw_connect(server: ServerProcess, packet: str) -> tuple[RawWebSocket, dict[str, Any]]:
    """A raw WebSocket client sending the Socket.IO CONNECT ``packet``; returns it and the
    server's CONNECT answer."""
    raw = RawWebSocket(server.host, server.port)
    assert await raw.open(EVENT_TIMEOUT) == 101
    raw.send(packet)
    while True:
        reply = await raw.text(EVENT_TIMEOUT)
        assert reply is not None, f"closed instead of answering {packet[:80]!r}"
        if reply.startswith("40"):
            return raw, json.loads(reply[2:])
        assert not reply.startswith("44"), reply


async def raw_join(raw: RawWebSocket, space: str) -> None:
    """The raw client joins ``space`` (development mode) and gets ``room:joined``."""
    raw.send("42" + json.dumps(["join:space", _dev_join(space)]))
    while True:
        reply = await raw.text(EVENT_TIMEOUT)
        assert reply is not None, "closed instead of answering join:space"
        if reply.startswith('42["room:joined"'):
            return


def _dev_join(space: str) -> dict[str, Any]:
    name = unique("raw")
    return {"spaceId": space, "nickname": name[:20], "sessionToken": dev_token(), "playerId": name}


async def test_hostile_recovery_attempts_get_a_fresh_socket(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    server = start_server(NODE_ENV="development", RECOVERY_WINDOW=WINDOW)
    space = space_id()
    bob = await bridge.connected(server.url)
    await bob.join(space, "Bob", session_token=dev_token(), playerId=unique("bob"))
    carol = await bridge.connected(server.url)
    await carol.join(space, "Carol", session_token=dev_token(), playerId=unique("carol"))
    bob_sid, carol_sid = bob.sid, carol.sid

    # Someone whose link dropped: held for recovery.
    held, answer = await raw_connect(server, "40")
    held_sid, held_pid = answer["sid"], answer["pid"]
    assert isinstance(held_pid, str) and held_pid
    held.close()
    await asyncio.sleep(0.5)

    wrong = held_pid[:-1] + ("A" if held_pid[-1] != "A" else "B")
    attempts = [
        {"pid": wrong, "offset": "1"},
        {"pid": wrong},
        {"pid": 12345, "offset": "1"},
        {"pid": {"sid": held_sid}, "offset": "1"},
        {"pid": [held_pid], "offset": ["1"]},
        {"pid": None, "offset": None},
        {"pid": "x" * 20_000, "offset": "1"},
        {"pid": held_pid, "offset": "9" * 20_000},
        {"pid": held_pid, "offset": 1},
        {"pid": held_pid, "offset": "-1"},
        {"pid": held_pid, "offset": {"$gt": ""}},
    ]
    sids: set[str] = {held_sid, str(bob_sid), str(carol_sid)}
    for auth in attempts:
        raw, answer = await raw_connect(server, "40" + json.dumps(auth))
        what = json.dumps(auth)[:80]
        assert answer["sid"] not in sids, f"{what}: got an existing socket id"
        assert answer["pid"] != held_pid, what
        sids.add(answer["sid"])
        await raw_join(raw, space)  # a working socket of its own
        raw.close()

    # Nobody else was disturbed.
    line = f"still here {unique('m')}"
    await carol.emit("chat:message", {"content": line})
    await bob.wait_for("chat:message", is_line(line), EVENT_TIMEOUT)
    for client, sid in ((bob, bob_sid), (carol, carol_sid)):
        state = await client.state()
        assert state["connected"] and state["sid"] == sid, state
        assert not [m for m in client.log() if m.get("type") == "disconnect"]
    assert server.find_logs(level="error") == []

    # The held socket was never handed out, and its own pid still resumes it.
    back, answer = await raw_connect(server, "40" + json.dumps({"pid": held_pid}))
    assert answer["sid"] == held_sid
    back.close()

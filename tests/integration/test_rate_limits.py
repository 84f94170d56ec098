"""Rate limits on every event that reaches other players: jumps, profile updates, parties,
proximity, joins and leaves, the flow of moves, and the chat notices of join/leave churn.

Each flood is answered with one error per window on the event's channel, counted in
``/metrics`` ``abuse`` and logged once per window (E3002); a client that keeps going is
disconnected; the other players only ever see what the limit lets through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]


async def abuse_figures(server: ServerProcess) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{server.url}/metrics")).json()
    return dict(body.get("abuse", {}))


def rate_limited(client: JsClient, channel: str) -> list[dict[str, Any]]:
    return [e for e in client.received(channel) if e.get("code") == "RATE_LIMITED"]


async def settle(within: float = 0.6) -> None:
    await asyncio.sleep(within)


async def player(
    bridge: Bridge, server: ServerProcess, space: str, nickname: str, **fields: Any
) -> JsClient:
    """A client that joined ``space`` in development mode (``fields``: extra join fields)."""
    client = await bridge.connected(server.url, transports=["websocket"])
    fields.setdefault("playerId", unique("player"))
    await client.join(space, nickname, session_token=dev_token(), **fields)
    return client


async def join_answer(client: JsClient, timeout: float = 3.0) -> str:
    """ "joined" or "refused": how the server answered a `join:space`."""
    for _ in range(int(timeout / 0.02)):
        if client.received("room:joined"):
            return "joined"
        if rate_limited(client, "error"):
            return "refused"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{client.id}: no answer to join:space")


# -- per-event limits ---------------------------------------------------------------------------

# event, payload for burst item i, event the bystander (or the sender) sees per accepted event,
# who sees it, error channel, limit per window, abuse reason.
FLOODS = [
    ("player:jump", lambda i: {"x": i, "y": 1}, "player:jumped", "other", "error", 20, "jump"),
    (
        "player:updateProfile",
        lambda i: {"nickname": f"Name{i}"},
        "player:profileUpdated",
        "other",
        "error",
        6,
        "profile",
    ),
    (
        "party:create",
        lambda i: {"name": f"Party {i}"},
        "party:joined",
        "self",
        "party:error",
        5,
        "partyCreate",
    ),
    (
        "party:join",
        lambda i: {"partyId": f"zone-{i % 2}", "partyName": "Zone"},
        "party:joined",
        "self",
        "party:error",
        20,
        "partyZone",
    ),
    (
        "proximity:set",
        lambda i: {"enabled": i % 2 == 0},
        "proximity:changed",
        "other",
        "proximity:error",
        5,
        "proximity",
    ),
]


@pytest.mark.parametrize(
    ("event", "payload", "effect", "seen_by", "channel", "limit", "reason"),
    FLOODS,
    ids=[f[0] for f in FLOODS],
)
async def test_flood_is_capped_with_one_error_per_window(
    bridge: Bridge,
    dev_server: ServerProcess,
    event: str,
    payload: Callable[[int], dict[str, Any]],
    effect: str,
    seen_by: str,
    channel: str,
    limit: int,
    reason: str,
) -> None:
    """A burst of 100 of one event: at most the limit goes through (twice that if the burst
    straddles a window boundary), the sender gets one `RATE_LIMITED` error on the event's
    channel per window (not one per refused event), and every refusal is counted."""
    space = space_id()
    watcher = await player(bridge, dev_server, space, "Watcher")
    sender = await player(bridge, dev_server, space, "Sender", role="OWNER")
    await watcher.wait_for("player:joined")
    before = (await abuse_figures(dev_server)).get(f"rateLimited.{reason}", 0)
    mark = dev_server.mark()

    burst = 100
    await sender.emit_many([(event, [payload(i)]) for i in range(burst)])
    await sender.wait_for(channel, lambda e: e.get("code") == "RATE_LIMITED")
    await settle()

    seen = (watcher if seen_by == "other" else sender).received(effect)
    assert 1 <= len(seen) <= 2 * limit, (len(seen), limit)
    errors = rate_limited(sender, channel)
    assert 1 <= len(errors) <= 2, errors
    assert all(e["retryAfter"] >= 1 and "Wait" in e["message"] for e in errors), errors
    refused = (await abuse_figures(dev_server)).get(f"rateLimited.{reason}", 0) - before
    assert refused == burst - len(seen)
    logged = [e for e in dev_server.find_logs(code="E3002", since=mark)]
    assert 1 <= len(logged) <= 2, logged
    assert (await sender.state())["connected"] is True
    await watcher.expect_nothing("error", within=0)


async def test_repeated_joins_of_one_socket_are_capped(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """`join:space` is limited per socket: a burst of rejoins gets a handful of answers and one
    `error {code: "RATE_LIMITED"}`."""
    space = space_id()
    sender = await player(bridge, dev_server, space, "Rejoiner")
    player_id = sender.player_id
    join = {"spaceId": space, "nickname": "Rejoiner", "sessionToken": dev_token()}
    await sender.emit_many([("join:space", [{**join, "playerId": player_id}])] * 30)
    await sender.wait_for("error", lambda e: e.get("code") == "RATE_LIMITED")
    await settle()
    assert len(sender.received("room:joined")) <= 1 + 2 * 5
    assert len(rate_limited(sender, "error")) <= 2


# -- invitations --------------------------------------------------------------------------------


async def test_one_player_cannot_flood_one_target_even_from_new_sockets(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """`party:invite` is limited per socket and per inviter and target: three invitations to
    the same player per 30 s, whatever the number of sockets or parties the inviter uses."""
    space = space_id()
    victim = await player(bridge, dev_server, space, "Victim")
    attacker_id = unique("attacker")
    sent = 0
    for _ in range(3):
        attacker = await player(bridge, dev_server, space, "Attacker", playerId=attacker_id)
        for n in range(2):
            await attacker.emit("party:create", {"name": f"Party {n}"})
            joined = await attacker.wait_for("party:joined")
            await attacker.emit(
                "party:invite", {"partyId": joined["partyId"], "targetId": victim.player_id}
            )
            sent += 1
        await settle(0.2)
    assert sent == 6
    await settle(0.3)
    errors = [e for e in attacker.received("party:error") if e.get("code") == "RATE_LIMITED"]
    invited = victim.received("party:invited")
    assert len(invited) == 3, invited
    assert errors, "the refused invitation was not answered"
    assert (await abuse_figures(dev_server)).get("rateLimited.invitePair", 0) >= 3


async def test_invitations_of_others_are_not_affected(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """The pair limit of one inviter does not stop another player inviting the same target."""
    space = space_id()
    target = await player(bridge, dev_server, space, "Target")
    spammer = await player(bridge, dev_server, space, "Spammer")
    friend = await player(bridge, dev_server, space, "Friend")
    await spammer.emit("party:create", {"name": "Spam"})
    spam_party = (await spammer.wait_for("party:joined"))["partyId"]
    await spammer.emit_many(
        [("party:invite", [{"partyId": spam_party, "targetId": target.player_id}])] * 4
    )
    await spammer.wait_for("party:error", lambda e: e.get("code") == "RATE_LIMITED")
    await friend.emit("party:create", {"name": "Friends"})
    friends = (await friend.wait_for("party:joined"))["partyId"]
    await friend.emit("party:invite", {"partyId": friends, "targetId": target.player_id})
    await target.wait_for("party:invited", lambda p: p["partyId"] == friends)
    await friend.expect_nothing("party:error", within=0.2)


# -- moves --------------------------------------------------------------------------------------


async def test_move_flood_is_capped_and_the_newest_state_still_arrives(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """`player:move` beyond 120 a second is dropped and counted, with one `error RATE_LIMITED`
    per second; the newest move is kept and delivered when the window allows (SPEC §4)."""
    space = space_id()
    watcher = await player(bridge, dev_server, space, "Watcher")
    walker = await player(bridge, dev_server, space, "Walker")
    await watcher.wait_for("player:joined")
    before = (await abuse_figures(dev_server)).get("rateLimited.move", 0)

    moves = [
        ("player:move", [{"x": i, "y": 5, "direction": "right", "isMoving": True}])
        for i in range(1, 600)
    ]
    moves.append(("player:move", [{"x": 600, "y": 5, "direction": "right", "isMoving": False}]))
    await walker.emit_many(moves)

    final = await watcher.wait_for("player:moved", lambda m: m["x"] == 600, timeout=5)
    assert final["isMoving"] is False
    await watcher.expect_nothing("player:moved", within=0.3)
    xs = [m["x"] for m in watcher.received("player:moved")]
    assert xs == sorted(xs), xs
    errors = rate_limited(walker, "error")
    assert 1 <= len(errors) <= 2, errors
    dropped = (await abuse_figures(dev_server)).get("rateLimited.move", 0) - before
    assert 600 - 2 * 120 <= dropped < 600


async def test_sustained_flood_disconnects_only_the_flooder(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """Thousands of refused events: the socket is disconnected with `error RATE_LIMITED` and a
    logged warning (E3002); the others keep playing."""
    space = space_id()
    watcher = await player(bridge, dev_server, space, "Watcher")
    friend = await player(bridge, dev_server, space, "Friend")
    mark = dev_server.mark()
    flooder = socketio.AsyncClient(reconnection=False)
    joined: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    flooder.on("room:joined", lambda data: joined.done() or joined.set_result(data))
    errors: list[Any] = []
    flooder.on("error", errors.append)
    await flooder.connect(dev_server.url, transports=["websocket"])
    await flooder.emit(
        "join:space",
        {
            "spaceId": space,
            "nickname": "Flooder",
            "sessionToken": dev_token(),
            "playerId": unique("flooder"),
        },
    )
    await asyncio.wait_for(joined, 5)
    move = {"x": 1, "y": 1, "direction": "up", "isMoving": True}
    try:
        for _ in range(7000):
            if not flooder.connected:
                break
            try:
                await flooder.emit("player:move", move)
            except socketio.exceptions.SocketIOError:
                break
        for _ in range(100):
            if not flooder.connected:
                break
            await asyncio.sleep(0.05)
        assert not flooder.connected, "the flooder was not disconnected"
    finally:
        await flooder.disconnect()
    assert any(e.get("code") == "RATE_LIMITED" for e in errors), errors
    warning = await dev_server.wait_for_log(
        level="warn", code="E3002", predicate=lambda e: "disconnect" in e["message"]
    )
    assert warning["context"]["spaceId"] == space
    assert (await abuse_figures(dev_server)).get("rateLimited.disconnect", 0) >= 1
    assert dev_server.find_logs(level="error", since=mark) == []

    await friend.emit("chat:message", {"content": "still here"})
    await watcher.wait_for("chat:message", lambda m: m["content"] == "still here")
    await watcher.expect_nothing("error", within=0)


# -- churn of join/leave notices ----------------------------------------------------------------


def lines_about(client: JsClient, nickname_prefix: str) -> list[str]:
    return [
        m["content"]
        for m in client.received("chat:system")
        if str(m.get("content", "")).startswith(nickname_prefix)
    ]


async def test_rename_leave_join_churn_gives_a_bystander_few_notices(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """Thirty rename/leave/join cycles in about a second give a bystander at most one more
    "left" and one more "joined" line, whatever nicknames the churner picks (the rest is
    coalesced); `player:left` and `player:joined` still keep the roster right."""
    space = space_id()
    bystander = await player(bridge, dev_server, space, "Bystander")
    churner = await player(bridge, dev_server, space, "Churn0")
    await bystander.wait_for("chat:system", lambda m: m["content"] == "Churn0 joined")
    bystander.consume()
    before = len(bystander.received("chat:system"))

    join = {
        "spaceId": space,
        "nickname": "ChurnX",
        "sessionToken": dev_token(),
        "playerId": churner.player_id,
    }
    cycles: list[tuple[str, list[Any]]] = []
    for i in range(1, 31):
        cycles.append(("player:updateProfile", [{"nickname": f"Churn{i}"}]))
        cycles.append(("leave:space", []))
        cycles.append(("join:space", [{**join, "nickname": f"Churn{i}"}]))
    await churner.emit_many(cycles)
    await settle(1.0)

    lines = bystander.received("chat:system")[before:]
    churn_lines = [m["content"] for m in lines if m["content"].startswith("Churn")]
    assert len([t for t in churn_lines if t.endswith(" left")]) <= 1, churn_lines
    assert len([t for t in churn_lines if t.endswith(" joined")]) <= 1, churn_lines
    figures = await abuse_figures(dev_server)
    coalesced = figures.get("churnNoticeSuppressed", 0) + figures.get("churnNoticeDeferred", 0)
    assert figures.get("rateLimited.leave", 0) + coalesced > 0


async def test_churn_across_new_sockets_is_throttled_per_player(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """The same player joining and leaving through one fresh socket after another: each socket
    is within its own limits, but joins per player are limited and the chat notices are not
    repeated."""
    space = space_id()
    bystander = await player(bridge, dev_server, space, "Bystander")
    churner_id = unique("churner")
    accepted = 0
    for i in range(45):
        client = await bridge.connected(dev_server.url, transports=["websocket"])
        await client.emit(
            "join:space",
            {
                "spaceId": space,
                "nickname": f"Hopper{i}",
                "sessionToken": dev_token(),
                "playerId": churner_id,
            },
        )
        answer = await join_answer(client)
        await client.emit("leave:space")
        await client.disconnect()
        if answer == "refused":
            break
        accepted += 1
    # 20 joins per player per minute (twice that if the loop straddles a window boundary)
    assert 20 <= accepted <= 40, accepted
    await settle(0.3)
    lines = [m["content"] for m in bystander.received("chat:system")]
    hopper = [t for t in lines if t.startswith("Hopper")]
    assert len(hopper) <= 3, hopper  # joined, left, joined; the rest coalesced
    assert (await abuse_figures(dev_server)).get("rateLimited.joinPlayer", 0) >= 1


# -- ordinary clients are untouched ------------------------------------------------------------


async def test_ordinary_use_is_never_limited(bridge: Bridge, dev_server: ServerProcess) -> None:
    """What a real client does in a busy minute stays far below every limit: no error, and a
    short visit is announced both ways."""
    space = space_id()
    watcher = await player(bridge, dev_server, space, "Watcher")
    visitor = await player(bridge, dev_server, space, "Visitor")
    await watcher.wait_for("chat:system", lambda m: m["content"] == "Visitor joined")
    items: list[tuple[str, list[Any]]] = []
    for i in range(60):
        items.append(("player:move", [{"x": i, "y": 0, "direction": "left", "isMoving": True}]))
    items += [("player:jump", [{"x": 1, "y": 1}])] * 5
    items.append(("player:updateProfile", [{"nickname": "Visitor2"}]))
    items.append(("party:join", [{"partyId": "zone-a", "partyName": "A"}]))
    items.append(("leaveParty", []))
    await visitor.emit_many(items)
    await watcher.wait_for("player:profileUpdated")
    await visitor.emit("leave:space")
    await watcher.wait_for("chat:system", lambda m: m["content"] == "Visitor2 left")
    for channel in ("error", "party:error"):
        assert rate_limited(visitor, channel) == []
    assert len(watcher.received("player:jumped")) == 5

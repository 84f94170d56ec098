"""Shared cluster state (SPEC §9 "Shared state lives in Redis"): `room:joined` (§4, §5) and
`GET /presence` (§10) list every player of a space cluster-wide with current positions;
`GET /metrics` (§10) adds the cluster figures; chat rate limits (§6) count a player's messages on
every node; one live socket per player per space holds across nodes (§2.3, §7)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from support.cluster import (
    POSITION_SETTLE,
    Cluster,
    dev_join,
    exit_calls,
    get_json,
    guest_join,
    metrics,
    node_name,
    presence_ids,
    until_received,
    wait_exits,
)
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.standins import AppStandIn

pytestmark = pytest.mark.cluster

QUIET = 0.5
DUPLICATE_MESSAGE = "Opened in another tab or device; this one was closed"


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


def assert_mentions_wait(message: str) -> None:
    """SPEC §6: a rate-limit rejection says how many seconds to wait (at most the window)."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b", message, re.IGNORECASE)
    assert found, f"no number of seconds in {message!r}"
    assert 0 < float(found.group(1)) <= 5, message


async def eventually(
    probe: Callable[[], Coroutine[Any, Any, Any]],
    check: Callable[[Any], bool],
    timeout: float = 5.0,
) -> Any:
    """Call ``probe`` until ``check`` accepts its result; returns the last result (asserting)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        await asyncio.sleep(0.1)


# -- room:joined -----------------------------------------------------------------------------


async def test_room_joined_lists_the_whole_space_with_current_positions(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`join:space`), §5 (`room:joined`), §9: a newcomer on node C gets every player of
    the space on nodes A and B, at their current positions (a walk that ended on node A shows
    its final, stopped position), with their avatar fields, and itself at the spawn point."""
    a, b, c = await cluster(3)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice", avatarColor="red")
    bob = await dev_join(bridge, b, space, "Bob", transport="polling")
    await alice.wait_for("player:joined")
    await dev_join(bridge, a, space_id(), "Elsewhere")

    walk = [
        ("player:move", [{"x": 300 + i, "y": 150, "direction": "left", "isMoving": True}])
        for i in range(20)
    ]
    walk.append(("player:move", [{"x": 320, "y": 151, "direction": "up", "isMoving": False}]))
    await alice.emit_many(walk)
    await bob.emit("player:move", {"x": 10.5, "y": 20, "direction": "right", "isMoving": True})
    await bob.wait_for("player:moved", lambda m: m["x"] == 320 and m["isMoving"] is False)
    await alice.wait_for("player:moved", lambda m: m["x"] == 10.5)
    await asyncio.sleep(POSITION_SETTLE)

    carol = await bridge.connected(c.url)
    joined = await carol.join(space, "Carol", session_token="dev-carol", playerId="carol-1")
    players = by_id(joined["players"])
    assert set(players) == {alice.player_id, bob.player_id, "carol-1"}
    assert joined["yourPlayerId"] == "carol-1"
    alice_now = players[alice.player_id]
    assert (alice_now["x"], alice_now["y"], alice_now["direction"], alice_now["isMoving"]) == (
        320,
        151,
        "up",
        False,
    )
    assert alice_now["nickname"] == "Alice"
    assert alice_now.get("avatarColor") == "red"
    bob_now = players[bob.player_id]
    assert (bob_now["x"], bob_now["y"], bob_now["direction"], bob_now["isMoving"]) == (
        10.5,
        20,
        "right",
        True,
    )
    me = players["carol-1"]
    assert (me["x"], me["y"], me["direction"], me["isMoving"]) == (480, 320, "down", False)

    # And the players already there learn of Carol, on both nodes.
    for client in (alice, bob):
        await client.wait_for("player:joined", lambda p: p["id"] == "carol-1")


async def test_room_joined_forgets_players_who_left_another_node(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`leave:space`, disconnect), §9: players who left node A by `leave:space`, by
    disconnecting, or by joining another space are not listed when someone joins on node B."""
    a, b = await cluster(2)
    space, other = space_id(), space_id()
    stayer = await dev_join(bridge, a, space, "Stayer")
    leaver = await dev_join(bridge, a, space, "Leaver")
    dropper = await dev_join(bridge, a, space, "Dropper", transport="polling")
    hopper = await dev_join(bridge, a, space, "Hopper")
    await stayer.wait_for("player:joined", lambda p: p["id"] == hopper.player_id)

    await leaver.emit("leave:space")
    await dropper.disconnect()
    await hopper.join(other, "Hopper", session_token="dev-hop", playerId=hopper.player_id)
    for gone in (leaver, dropper, hopper):
        await until_received(stayer, "player:left", lambda m, g=gone: m["id"] == g.player_id)

    newcomer = await dev_join(bridge, b, space, "Newcomer")
    listed = set(by_id(newcomer.received("room:joined")[-1]["players"]))
    assert listed == {stayer.player_id, newcomer.player_id}


# -- presence --------------------------------------------------------------------------------


async def test_presence_is_cluster_wide_on_every_node(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §10 (`GET /presence/{spaceId}`), §9: every node lists the players of all nodes, each
    once, with nickname and avatarColor; a leave on one node disappears from every node's
    answer; an unknown space is empty everywhere."""
    a, b, c = await cluster(3)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice", avatarColor="blue")
    bob = await dev_join(bridge, b, space, "Bob")
    carol = await dev_join(bridge, c, space, "Carol", transport="polling")
    everyone = {alice.player_id, bob.player_id, carol.player_id}

    for node in (a, b, c):
        status, body = await get_json(node, f"/presence/{space}")
        assert status == 200, (node_name(node), status, body)
        assert body["spaceId"] == space
        ids = [u["id"] for u in body["onlineUsers"]]
        assert sorted(ids) == sorted(everyone), (node_name(node), body)
        assert body["count"] == 3
        users = {u["id"]: u for u in body["onlineUsers"]}
        assert users[alice.player_id]["nickname"] == "Alice"
        assert users[alice.player_id]["avatarColor"] == "blue"
        assert users[bob.player_id]["nickname"] == "Bob"

    await bob.disconnect()
    for node in (a, b, c):
        ids = await eventually(
            lambda node=node: presence_ids(node, space), lambda ids: bob.player_id not in ids
        )
        assert sorted(ids) == sorted(everyone - {bob.player_id})

    for node in (a, b, c):
        status, body = await get_json(node, f"/presence/{space_id()}")
        assert status == 200
        assert body["onlineUsers"] == [] and body["count"] == 0


# -- metrics ---------------------------------------------------------------------------------


def cluster_rooms(body: dict[str, Any]) -> dict[str, int]:
    return {r["spaceId"]: r["connections"] for r in body["cluster"]["rooms"]}


async def test_metrics_report_this_node_and_the_cluster(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §10 (`GET /metrics`), §9: `connections.total` stays this node's sockets; the added
    `cluster` object counts live nodes, players in all spaces cluster-wide, each space's players
    and the number of spaces; `parties.count` is cluster-wide; all follow leaves and a new
    node."""
    a, b = await cluster(2)
    first, second = space_id(), space_id()
    alice = await dev_join(bridge, a, first, "Alice")
    await dev_join(bridge, a, first, "Anna")
    await bridge.connected(a.url)  # connected to node A, never joined
    bob = await dev_join(bridge, b, first, "Bob")
    await dev_join(bridge, b, second, "Berta", transport="polling")

    for client in (alice, bob):
        await client.emit("party:create", {"name": "Crew"})
        await client.wait_for("party:joined")

    body_a, body_b = await metrics(a), await metrics(b)
    assert body_a["connections"]["total"] == 3
    assert body_b["connections"]["total"] == 2
    for body in (body_a, body_b):
        figures = body["cluster"]
        assert set(figures) >= {"nodes", "connections", "rooms", "roomCount"}, figures
        assert figures["nodes"] == 2
        assert figures["connections"] == 4
        assert cluster_rooms(body) == {first: 3, second: 1}
        assert figures["roomCount"] == 2
        assert body["parties"]["count"] == 2
        for key in ("nodes", "connections", "roomCount"):
            assert isinstance(figures[key], int) and not isinstance(figures[key], bool)

    await bob.disconnect()
    for node in (a, b):
        body = await eventually(
            lambda node=node: metrics(node), lambda m: m["cluster"]["connections"] == 3
        )
        assert cluster_rooms(body) == {first: 2, second: 1}
        assert body["parties"]["count"] == 1
    assert (await metrics(b))["connections"]["total"] == 1

    (c,) = await cluster(1)
    for node in (a, b, c):
        body = await eventually(
            lambda node=node: metrics(node), lambda m: m["cluster"]["nodes"] == 3, timeout=6
        )
        assert body["cluster"]["connections"] == 3
    assert (await metrics(c))["connections"]["total"] == 0


# -- chat rate limit -------------------------------------------------------------------------


async def test_chat_rate_limit_follows_the_player_to_another_node(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §6 (5 messages per 5 s per player), §9 (rate-limit counters are shared): a player who
    sent 5 messages on node A, reconnects and joins on node B, is refused the 6th within the
    window (`chat:error` saying how long to wait; nobody receives it); other players are not
    limited; after the window the player may speak again."""
    a, b = await cluster(2)
    space = space_id()
    me = unique("talker")
    listener = await dev_join(bridge, a, space, "Listener")
    talker = await dev_join(bridge, a, space, "Talker", player_id=me)
    first_sent = time.monotonic()
    await talker.emit_many([("chat:message", [{"content": f"message {i}"}]) for i in range(5)])
    delivered = await listener.wait_for_all("chat:message", 5)
    assert [m["content"] for m in delivered] == [f"message {i}" for i in range(5)]
    await talker.disconnect()
    await listener.wait_for("player:left", lambda m: m["id"] == me)

    again = await dev_join(bridge, b, space, "Talker", player_id=me)
    await again.emit("chat:message", {"content": "one too many"})
    error = await again.wait_for("chat:error")
    assert_mentions_wait(error["message"])
    await listener.expect_nothing("chat:message", within=QUIET)
    assert again.received("chat:message") == []

    other = await dev_join(bridge, b, space, "Other")
    await other.emit("chat:message", {"content": "not limited"})
    assert (await listener.wait_for("chat:message"))["content"] == "not limited"

    await asyncio.sleep(max(0.0, 5.3 - (time.monotonic() - first_sent)))
    await again.emit("chat:message", {"content": "after the window"})
    assert (await listener.wait_for("chat:message"))["content"] == "after the window"


async def test_rate_limit_counts_a_players_messages_on_two_nodes_at_once(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §6 (per player, not per socket), §9: the same player present in two spaces through
    two nodes shares one limit: 3 messages on node A and 3 on node B ⇒ the last is refused
    (and whispers count too)."""
    a, b = await cluster(2)
    first, second = space_id(), space_id()
    me = unique("multi")
    here = await dev_join(bridge, a, first, "Multi", player_id=me)
    there = await dev_join(bridge, b, second, "Multi", player_id=me)
    listener = await dev_join(bridge, b, second, "Listener")

    await here.emit_many([("chat:message", [{"content": f"here {i}"}]) for i in range(3)])
    await here.wait_for("chat:message", lambda m: m["content"] == "here 2")
    await there.emit_many(
        [
            ("chat:message", [{"content": "there 0"}]),
            ("whisper:send", [{"targetId": listener.player_id, "content": "there 1"}]),
            ("chat:message", [{"content": "there 2"}]),
        ]
    )
    assert_mentions_wait((await there.wait_for("chat:error"))["message"])
    await listener.wait_for("whisper:receive", lambda m: m["content"] == "there 1")
    await listener.expect_nothing(
        "chat:message", within=QUIET, predicate=lambda m: m["content"] == "there 2"
    )


# -- one live socket per player --------------------------------------------------------------


async def assert_no_churn(watchers: list[JsClient], player_id: str, nickname: str) -> None:
    for watcher in watchers:
        await watcher.expect_nothing(
            "player:left", within=0.1, predicate=lambda m: m["id"] == player_id
        )
        await watcher.expect_nothing(
            "player:joined", within=0.0, predicate=lambda m: m["id"] == player_id
        )
        notices = [m["content"] for m in watcher.received("chat:system")]
        assert f"{nickname} left" not in notices, (watcher.id, notices)
        assert f"{nickname} lost the connection" not in notices, (watcher.id, notices)
        assert notices.count(f"{nickname} joined") == 1, (watcher.id, notices)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_duplicate_session_across_nodes(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn, transport: str
) -> None:
    """SPEC §2.3, §7, §9: when a guest already in the space on node A joins it again on node B,
    the node-A socket receives `error {code: "DUPLICATE_SESSION"}` and is disconnected; the new
    socket inherits the old position; players on both nodes see no `player:left` /
    `player:joined` churn; no EXIT is logged for the replaced socket (one EXIT when the new one
    leaves); the player is listed once everywhere and its new socket is the live one."""
    a, b = await cluster(2, NODE_ENV=None)
    space = space_id()
    token, participant = unique("guest"), unique("participant")
    app_standin.accept(token, participant, "Alice")
    watcher_a = await guest_join(bridge, a, app_standin, space, "WatcherA")
    watcher_b = await guest_join(bridge, b, app_standin, space, "WatcherB")
    old = await guest_join(bridge, a, app_standin, space, "Alice", token=token, transport=transport)
    assert old.player_id == participant
    for watcher in (watcher_a, watcher_b):
        await watcher.wait_for("player:joined", lambda p: p["id"] == participant)
        await watcher.wait_for("chat:system", lambda m: m["content"] == "Alice joined")

    await old.emit("player:move", {"x": 100, "y": 200, "direction": "left", "isMoving": False})
    await watcher_b.wait_for("player:moved", lambda m: m["x"] == 100)
    await asyncio.sleep(POSITION_SETTLE)

    new = await guest_join(bridge, b, app_standin, space, "Alice", token=token, transport=transport)
    error = await old.wait_for("error")
    assert error == {"message": DUPLICATE_MESSAGE, "code": "DUPLICATE_SESSION"}
    assert await old.wait_disconnect() == "io server disconnect"
    players = by_id(new.received("room:joined")[-1]["players"])
    assert set(players) == {watcher_a.player_id, watcher_b.player_id, participant}
    mine = players[participant]
    assert (mine["x"], mine["y"], mine["direction"]) == (100, 200, "left")
    assert new.received("error") == []

    await asyncio.sleep(QUIET)
    await assert_no_churn([watcher_a, watcher_b], participant, "Alice")
    assert exit_calls(app_standin, space, token) == [], "an EXIT was logged for the replacement"
    for node in (a, b):
        assert sorted(await presence_ids(node, space)) == sorted(
            [watcher_a.player_id, watcher_b.player_id, participant]
        )

    await new.emit("player:move", {"x": 101, "y": 201, "direction": "down", "isMoving": True})
    for watcher in (watcher_a, watcher_b):
        moved = await watcher.wait_for("player:moved", lambda m: m["x"] == 101)
        assert moved["id"] == participant
    await new.emit("chat:message", {"content": "from my phone"})
    assert (await watcher_a.wait_for("chat:message"))["senderId"] == participant

    await new.emit("leave:space")
    for watcher in (watcher_a, watcher_b):
        assert await watcher.wait_for("player:left") == {"id": participant}
    found = await wait_exits(app_standin, space, [token], timeout=5)
    await asyncio.sleep(QUIET)
    calls = exit_calls(app_standin, space, token)
    assert len(calls) == 1, [c.body for c in calls]
    assert found[token][0].body["payload"]["reason"] == "leave"


async def test_duplicate_session_back_and_forth(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §2.3, §9: the same player hopping node A → B → A keeps one live socket: each older
    socket is closed with DUPLICATE_SESSION, the latest one keeps working, and a watcher sees the
    player once, never leaving."""
    a, b = await cluster(2)
    space = space_id()
    me = unique("hopper")
    watcher = await dev_join(bridge, b, space, "Watcher")
    first = await dev_join(bridge, a, space, "Hopper", player_id=me)
    await watcher.wait_for("player:joined", lambda p: p["id"] == me)
    second = await dev_join(bridge, b, space, "Hopper", player_id=me)
    assert (await first.wait_for("error"))["code"] == "DUPLICATE_SESSION"
    third = await dev_join(bridge, a, space, "Hopper", player_id=me)
    assert (await second.wait_for("error"))["code"] == "DUPLICATE_SESSION"
    await first.wait_disconnect()
    await second.wait_disconnect()

    await third.emit("player:jump", {"x": 1, "y": 2})
    assert await watcher.wait_for("player:jumped") == {"id": me, "x": 1, "y": 2}
    assert third.received("error") == []
    await assert_no_churn([watcher], me, "Hopper")
    assert sorted(await presence_ids(a, space)) == sorted([watcher.player_id, me])

"""End-to-end movement, presence, chat and whisper behaviour, driven by the official JS client."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.players import CHAT_KEYS
from support.players import dev_player as player
from support.server import ServerProcess

TRANSPORTS = ["websocket", "polling"]
POSITION_KEYS = {"id", "nickname", "x", "y", "direction", "isMoving"}
QUIET = 0.5


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


def assert_spawned(position: dict[str, Any], player_id: str, nickname: str) -> None:
    """SPEC §3: new players spawn at 480,320 facing down, not moving."""
    assert POSITION_KEYS <= set(position), position
    assert position["id"] == player_id
    assert position["nickname"] == nickname
    assert (position["x"], position["y"]) == (480, 320)
    assert position["direction"] == "down"
    assert position["isMoving"] is False


def is_system(text: str) -> Callable[[Any], bool]:
    return lambda m: m.get("content") == text


def assert_system_message(message: dict[str, Any], text: str) -> None:
    """SPEC §5: `chat:system` is ChatMessageData of type `system` from `"system"`."""
    assert CHAT_KEYS <= set(message), message
    assert message["type"] == "system"
    assert message["senderId"] == "system"
    assert message["content"] == text


def assert_mentions_wait(message: str) -> None:
    """SPEC §6: a rate-limit rejection says how many seconds to wait (at most the window)."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b", message, re.IGNORECASE)
    assert found, f"no number of seconds in {message!r}"
    assert 0 < float(found.group(1)) <= 5, message


def assert_recent_ms(timestamp: Any) -> None:
    assert isinstance(timestamp, int), timestamp
    assert abs(timestamp - time.time() * 1000) < 60_000, timestamp


# -- joining and leaving ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_join_announces_and_lists_players(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §3, §4 (`join:space`), §5: `room:joined` lists every player, the joiner included,
    new players at the spawn point; the others get `player:joined`; the whole space gets
    `chat:system` "<nickname> joined"; the join is logged at info level (§11 context)."""
    space = space_id()
    alice_id, bob_id = unique("alice"), unique("bob")

    alice = await bridge.connected(dev_server.url, transports=[transport])
    joined_alice = await alice.join(space, "Alice", session_token=dev_token(), playerId=alice_id)
    assert joined_alice["spaceId"] == space
    assert joined_alice["yourPlayerId"] == alice_id
    assert "proximity" in joined_alice
    assert len(joined_alice["players"]) == 1
    assert_spawned(joined_alice["players"][0], alice_id, "Alice")
    assert_system_message(await alice.wait_for("chat:system"), "Alice joined")

    bob = await bridge.connected(dev_server.url, transports=[transport])
    joined_bob = await bob.join(space, "Bob", session_token=dev_token(), playerId=bob_id)
    players = by_id(joined_bob["players"])
    assert set(players) == {alice_id, bob_id}
    assert_spawned(players[alice_id], alice_id, "Alice")
    assert_spawned(players[bob_id], bob_id, "Bob")
    assert joined_bob["yourPlayerId"] == bob_id
    assert await bob.wait_for("proximity:status") == {"enabled": False}

    announced = await alice.wait_for("player:joined")
    assert_spawned(announced, bob_id, "Bob")
    assert_system_message(
        await alice.wait_for("chat:system", is_system("Bob joined")), "Bob joined"
    )
    assert_system_message(await bob.wait_for("chat:system", is_system("Bob joined")), "Bob joined")

    await bob.expect_nothing("player:joined")
    await dev_server.wait_for_log(
        level="info",
        predicate=lambda e: (
            (e.get("context") or {}).get("spaceId") == space
            and (e.get("context") or {}).get("playerId") == bob_id
        ),
    )


async def test_leave_space_then_disconnect_sends_nothing_again(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`leave:space`): the others get `player:left {id}` and `chat:system`
    "<nickname> left"; a later disconnect of the same socket sends nothing again."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await alice.wait_for("player:joined")
    alice.consume()

    await bob.emit("leave:space")
    assert await alice.wait_for("player:left") == {"id": bob.player_id}
    assert_system_message(await alice.wait_for("chat:system", is_system("Bob left")), "Bob left")
    await bob.expect_nothing("player:left")

    await bob.disconnect()
    await alice.expect_nothing("player:left")
    await alice.expect_nothing("chat:system", within=0.1)

    carol = await player(bridge, dev_server, space, "Carol")
    assert set(by_id(carol.received("room:joined")[0]["players"])) == {
        alice.player_id,
        carol.player_id,
    }


async def test_disconnect_leaves_space(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`leave:space`), §7: a disconnect leaves the space like `leave:space`, but the
    notice says the connection was lost, as FlowSpace's does."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob", transport="polling")
    await alice.wait_for("player:joined")

    await bob.disconnect()
    assert await alice.wait_for("player:left") == {"id": bob.player_id}
    lost = "Bob lost the connection"
    assert_system_message(await alice.wait_for("chat:system", is_system(lost)), lost)
    await alice.expect_nothing("player:left")


async def test_joining_another_space_leaves_the_first(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`join:space`): joining another space first leaves the current one."""
    first, second = space_id(), space_id()
    alice = await player(bridge, dev_server, first, "Alice")
    carol = await player(bridge, dev_server, second, "Carol")
    bob = await player(bridge, dev_server, first, "Bob")
    await alice.wait_for("player:joined")

    joined = await bob.join(second, "Bob", session_token=dev_token(), playerId=bob.player_id)
    assert set(by_id(joined["players"])) == {carol.player_id, bob.player_id}

    assert await alice.wait_for("player:left") == {"id": bob.player_id}
    assert_system_message(await alice.wait_for("chat:system", is_system("Bob left")), "Bob left")
    assert (await carol.wait_for("player:joined"))["id"] == bob.player_id

    await bob.emit("player:move", {"x": 10, "y": 20, "direction": "up", "isMoving": True})
    moved = await carol.wait_for("player:moved")
    assert (moved["id"], moved["x"], moved["y"]) == (bob.player_id, 10, 20)
    await alice.expect_nothing("player:moved")

    await bob.emit("chat:message", {"content": "only the second space hears this"})
    await carol.wait_for("chat:message")
    await alice.expect_nothing("chat:message")


# -- movement --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_move_is_relayed_to_others_and_stored(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §2, §4 (`player:move`): the others receive `player:moved` with exactly
    {id, nickname, x, y, direction, isMoving}; an `id` in the payload is ignored; the stored
    position is what later joiners see."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)
    await alice.wait_for("player:joined")

    await bob.emit(
        "player:move",
        {
            "id": alice.player_id,
            "playerId": alice.player_id,
            "x": 512.5,
            "y": 300,
            "direction": "left",
            "isMoving": True,
        },
    )
    moved = await alice.wait_for("player:moved")
    assert moved == {
        "id": bob.player_id,
        "nickname": "Bob",
        "x": 512.5,
        "y": 300,
        "direction": "left",
        "isMoving": True,
    }
    await bob.expect_nothing("player:moved")

    carol = await player(bridge, dev_server, space, "Carol")
    positions = by_id(carol.received("room:joined")[-1]["players"])
    assert_spawned(positions[alice.player_id], alice.player_id, "Alice")
    bob_now = positions[bob.player_id]
    assert (bob_now["x"], bob_now["y"], bob_now["direction"], bob_now["isMoving"]) == (
        512.5,
        300,
        "left",
        True,
    )


async def test_burst_of_moves_delivers_final_position(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §4 (`player:move`), §6: more than 60 moves per second are not relayed one by one,
    but the newest state is always delivered and nothing older arrives after it."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await alice.wait_for("player:joined")

    moves = [
        ("player:move", [{"x": i, "y": 2 * i, "direction": "right", "isMoving": True}])
        for i in range(1, 101)
    ]
    await bob.emit_many(moves)

    final = await alice.wait_for("player:moved", lambda m: m["x"] == 100, timeout=5)
    assert final == {
        "id": bob.player_id,
        "nickname": "Bob",
        "x": 100,
        "y": 200,
        "direction": "right",
        "isMoving": True,
    }
    await alice.expect_nothing("player:moved")
    xs = [m["x"] for m in alice.received("player:moved")]
    assert xs == sorted(xs), f"an older position arrived after a newer one: {xs}"
    assert len(set(xs)) == len(xs), f"a position was delivered twice: {xs}"
    assert len(xs) < 100, "100 moves sent at once (over 60 per second) were relayed one by one"


async def test_is_moving_changes_are_never_lost(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`player:move`): an `isMoving` change is never lost, even inside one tick."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await alice.wait_for("player:joined")

    def move(x: int, moving: bool) -> tuple[str, list[Any]]:
        return ("player:move", [{"x": x, "y": 0, "direction": "up", "isMoving": moving}])

    # Start walking and stop again within one tick: both changes must arrive, in order.
    await bob.emit_many([move(1, True), move(1, False)])
    await alice.wait_for("player:moved", lambda m: m["isMoving"] is True)
    await alice.wait_for("player:moved", lambda m: m["isMoving"] is False)

    # A long walk that ends with a stop: the stop is the last thing delivered.
    await bob.emit_many([move(x, True) for x in range(2, 80)] + [move(80, False)])
    stopped = await alice.wait_for("player:moved", lambda m: m["x"] == 80)
    assert stopped["isMoving"] is False
    await alice.expect_nothing("player:moved")


async def test_every_jump_is_delivered(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §3 (PlayerJumpData), §4 (`player:jump`): the others receive `player:jumped
    {id, x, y}` for every jump, in order; jumps are never coalesced."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob", transport="polling")
    await alice.wait_for("player:joined")

    await bob.emit_many([("player:jump", [{"x": i, "y": 7}]) for i in range(10)])
    jumps = await alice.wait_for_all("player:jumped", 10)
    assert jumps == [{"id": bob.player_id, "x": i, "y": 7} for i in range(10)]
    await alice.expect_nothing("player:jumped")
    await bob.expect_nothing("player:jumped", within=0.1)


async def test_update_profile(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`player:updateProfile`): the others receive `player:profileUpdated`; the new
    nickname is used from then on."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await alice.wait_for("player:joined")

    config = {"type": "classic", "colorId": "red"}
    await bob.emit(
        "player:updateProfile", {"nickname": "Bobby", "avatarColor": "red", "avatarConfig": config}
    )
    updated = await alice.wait_for("player:profileUpdated")
    assert updated["id"] == bob.player_id
    assert updated["nickname"] == "Bobby"
    assert updated.get("avatarColor") == "red"
    assert updated.get("avatarConfig") == config

    await bob.emit("player:move", {"x": 1, "y": 1, "direction": "down", "isMoving": False})
    assert (await alice.wait_for("player:moved"))["nickname"] == "Bobby"
    await bob.emit("chat:message", {"content": "new name"})
    message = await alice.wait_for("chat:message")
    assert message["senderNickname"] == message["senderName"] == "Bobby"

    carol = await player(bridge, dev_server, space, "Carol")
    bob_seen = by_id(carol.received("room:joined")[-1]["players"])[bob.player_id]
    assert bob_seen["nickname"] == "Bobby"
    assert bob_seen.get("avatarColor") == "red"


async def test_move_right_after_join_is_not_lost(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §5 (ordering): a `player:move` sent right after `join:space`, without waiting for
    `room:joined`, is handled after the join."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await bridge.connected(dev_server.url, transports=["polling"])
    bob_id = unique("bob")
    join = {"spaceId": space, "nickname": "Bob", "playerId": bob_id, "sessionToken": dev_token()}
    await bob.emit_many(
        [
            ("join:space", [join]),
            ("player:move", [{"x": 42, "y": 43, "direction": "left", "isMoving": True}]),
            ("player:jump", [{"x": 42, "y": 43}]),
        ]
    )
    await bob.wait_for("room:joined")
    assert (await alice.wait_for("player:joined"))["id"] == bob_id
    moved = await alice.wait_for("player:moved")
    assert (moved["id"], moved["x"], moved["y"], moved["isMoving"]) == (bob_id, 42, 43, True)
    assert await alice.wait_for("player:jumped") == {"id": bob_id, "x": 42, "y": 43}

    names = [n for n in alice.event_names() if n.startswith("player:")]
    assert names.index("player:joined") < names.index("player:moved")


# -- chat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_message_reaches_whole_space(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §3 (ChatMessageData), §4 (`chat:message`): the whole space, sender included,
    receives the message; `id` is `msg-<unique>`; `senderName` equals `senderNickname`."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice", transport=transport)
    bob = await player(bridge, dev_server, space, "Bob", transport=transport)
    outsider = await player(bridge, dev_server, space_id(), "Outsider")

    await alice.emit("chat:message", {"content": "  hello space  ", "senderId": bob.player_id})
    mine = await alice.wait_for("chat:message")
    theirs = await bob.wait_for("chat:message")
    assert mine == theirs
    assert CHAT_KEYS <= set(mine)
    assert re.fullmatch(r"msg-.+", mine["id"]), mine["id"]
    assert mine["senderId"] == alice.player_id
    assert mine["senderNickname"] == "Alice"
    assert mine["senderName"] == "Alice"
    assert mine["content"] == "hello space"
    assert mine["type"] == "message"
    assert_recent_ms(mine["timestamp"])
    await outsider.expect_nothing("chat:message")

    await alice.emit("chat:message", {"content": "second"})
    second = await bob.wait_for("chat:message")
    assert second["id"] != mine["id"]


async def test_chat_reply_is_relayed(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §3 (ChatMessageData `replyTo {id, senderNickname, content}`), §4 (`chat:message`)."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    await alice.emit("chat:message", {"content": "question?"})
    original = await bob.wait_for("chat:message")

    reply_to = {"id": original["id"], "senderNickname": "Alice", "content": "question?"}
    await bob.emit("chat:message", {"content": "answer", "replyTo": reply_to})
    answer = await alice.wait_for("chat:message", lambda m: m["content"] == "answer")
    assert answer["replyTo"] == reply_to


async def test_events_before_join_are_ignored(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4: events other than `join:space` sent before joining are ignored (no reply), and
    unknown event names are ignored; the socket keeps working."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    stranger = await bridge.connected(dev_server.url)
    await stranger.emit_many(
        [
            ("player:move", [{"x": 1, "y": 1, "direction": "up", "isMoving": True}]),
            ("player:jump", [{"x": 1, "y": 1}]),
            ("chat:message", [{"content": "hello?"}]),
            ("whisper:send", [{"targetId": alice.player_id, "content": "psst"}]),
            ("no:such:event", [{"x": 1}]),
        ]
    )
    for name in ("player:moved", "player:jumped", "chat:message", "whisper:receive"):
        await alice.expect_nothing(name, within=0.1 if name != "player:moved" else QUIET)
    assert stranger.event_names() == []

    joined = await stranger.join(
        space, "Stranger", session_token=dev_token(), playerId=unique("stranger")
    )
    assert {p["id"] for p in joined["players"]} == {alice.player_id, stranger.player_id}


async def test_chat_content_is_neutralised(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §6: HTML tags are removed and `& < > " '` are escaped before relay."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    content = "<img src=x onerror=alert(1)><b>Tom</b> & \"Jerry\" say 'hi', 3 > 2 and 1 < 2"
    await alice.emit("chat:message", {"content": content})
    received = (await bob.wait_for("chat:message"))["content"]

    canonical = received
    for alternative in ("&#39;", "&#x27;", "&#X27;", "&apos;"):
        canonical = canonical.replace(alternative, "&#39;")
    for alternative in ("&#34;", "&#x22;", "&#X22;"):
        canonical = canonical.replace(alternative, "&quot;")
    assert canonical == "Tom &amp; &quot;Jerry&quot; say &#39;hi&#39;, 3 &gt; 2 and 1 &lt; 2"


async def test_chat_rejects_empty_and_oversized(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §6: content is trimmed; empty or over 2000 characters is rejected (`chat:error`)."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")

    await alice.emit("chat:message", {"content": "   "})
    assert isinstance((await alice.wait_for("chat:error"))["message"], str)
    await alice.emit("chat:message", {"content": "x" * 2001})
    assert isinstance((await alice.wait_for("chat:error"))["message"], str)
    await bob.expect_nothing("chat:message")

    await alice.emit("chat:message", {"content": "y" * 2000})
    assert (await bob.wait_for("chat:message"))["content"] == "y" * 2000


async def test_chat_rate_limit(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §6: at most 5 accepted messages in any 5 s window per player; the 6th is rejected
    with `chat:error` telling how many seconds to wait; other players are unaffected."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")

    await alice.emit_many([("chat:message", [{"content": f"message {i}"}]) for i in range(6)])
    delivered = await bob.wait_for_all("chat:message", 5)
    assert [m["content"] for m in delivered] == [f"message {i}" for i in range(5)]
    error = await alice.wait_for("chat:error")
    assert_mentions_wait(error["message"])
    await bob.expect_nothing("chat:message")
    assert len(alice.received("chat:message")) == 5

    await bob.emit("chat:message", {"content": "bob is not limited"})
    from_bob = await alice.wait_for("chat:message", lambda m: m["senderId"] == bob.player_id)
    assert from_bob["content"] == "bob is not limited"


async def test_rate_limit_is_shared_by_chat_and_whispers(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §6: chat and whisper messages share one per-player limit of 5 per 5 s."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")
    whisper = {"targetId": bob.player_id}
    await alice.emit_many(
        [
            ("chat:message", [{"content": "one"}]),
            ("whisper:send", [{**whisper, "content": "two"}]),
            ("chat:message", [{"content": "three"}]),
            ("whisper:send", [{**whisper, "content": "four"}]),
            ("chat:message", [{"content": "five"}]),
            ("whisper:send", [{**whisper, "content": "six"}]),
            ("chat:message", [{"content": "seven"}]),
        ]
    )
    assert_mentions_wait((await alice.wait_for("whisper:error"))["message"])
    assert_mentions_wait((await alice.wait_for("chat:error"))["message"])
    await bob.expect_nothing("chat:message", predicate=lambda m: m["content"] == "seven")
    assert [m["content"] for m in bob.received("chat:message")] == ["one", "three", "five"]
    assert [m["content"] for m in bob.received("whisper:receive")] == ["two", "four"]


async def test_rate_limit_is_per_player_not_per_socket(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §6: the limit counts a player's messages from all of their sockets (here the same
    player is present in two spaces)."""
    first, second = space_id(), space_id()
    me = unique("player")
    here = await player(bridge, dev_server, first, "Multi", player_id=me)
    there = await player(bridge, dev_server, second, "Multi", player_id=me)
    listener = await player(bridge, dev_server, second, "Listener")

    await here.emit_many([("chat:message", [{"content": f"here {i}"}]) for i in range(3)])
    await here.wait_for("chat:message", lambda m: m["content"] == "here 2")
    await there.emit_many([("chat:message", [{"content": f"there {i}"}]) for i in range(3)])
    assert_mentions_wait((await there.wait_for("chat:error"))["message"])
    await listener.wait_for("chat:message", lambda m: m["content"] == "there 1")
    await listener.expect_nothing("chat:message", predicate=lambda m: m["content"] == "there 2")


async def test_third_identical_message_in_a_row_is_rejected(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §6: the third identical message in a row (case-insensitive, trimmed) is rejected;
    a different message is accepted again."""
    space = space_id()
    alice = await player(bridge, dev_server, space, "Alice")
    bob = await player(bridge, dev_server, space, "Bob")

    await alice.emit_many(
        [
            ("chat:message", [{"content": "Hello"}]),
            ("chat:message", [{"content": " hello "}]),
            ("chat:message", [{"content": "HELLO"}]),
        ]
    )
    first, second = await bob.wait_for_all("chat:message", 2)
    assert (first["content"], second["content"]) == ("Hello", "hello")
    assert isinstance((await alice.wait_for("chat:error"))["message"], str)
    await bob.expect_nothing("chat:message", within=0.3)

    await alice.emit("chat:message", {"content": "something else"})
    assert (await bob.wait_for("chat:message"))["content"] == "something else"


# -- whispers --------------------------------------------------------------------------------


async def three_players(
    bridge: Bridge, server: ServerProcess, transport: str = "websocket"
) -> tuple[JsClient, JsClient, JsClient]:
    space = space_id()
    alice = await player(bridge, server, space, "Alice", transport=transport)
    bob = await player(bridge, server, space, "Bob", transport=transport)
    carol = await player(bridge, server, space, "Carol", transport=transport)
    await alice.wait_for("player:joined", lambda p: p["id"] == carol.player_id)
    await bob.wait_for("player:joined", lambda p: p["id"] == carol.player_id)
    return alice, bob, carol


async def assert_whisper_delivered(
    sender: JsClient, target: JsClient, bystander: JsClient, content: str
) -> None:
    """SPEC §4 (`whisper:send`): the target receives `whisper:received` and `whisper:receive`,
    the sender `whisper:sent`, nobody else anything."""
    received = await target.wait_for("whisper:received")
    receive = await target.wait_for("whisper:receive")
    sent = await sender.wait_for("whisper:sent")

    assert {"senderId", "senderName", "content", "timestamp", "id"} <= set(received)
    assert received["senderId"] == sender.player_id
    assert received["senderName"] == sender.nickname
    assert received["content"] == content
    assert_recent_ms(received["timestamp"])

    assert CHAT_KEYS <= set(receive)
    assert receive["type"] == "whisper"
    assert receive["senderId"] == sender.player_id
    assert receive["senderNickname"] == receive["senderName"] == sender.nickname
    assert receive["content"] == content
    assert receive["targetId"] == target.player_id
    assert receive.get("targetNickname", target.nickname) == target.nickname
    assert re.fullmatch(r"msg-.+", receive["id"]), receive["id"]
    assert received["id"] == receive["id"]
    assert sent == receive

    for name in ("whisper:received", "whisper:receive", "whisper:sent", "chat:message"):
        await bystander.expect_nothing(name, within=0.05 if name != "chat:message" else QUIET)
    await sender.expect_nothing("whisper:received", within=0)
    await sender.expect_nothing("whisper:receive", within=0)
    await target.expect_nothing("whisper:sent", within=0)
    await target.expect_nothing("chat:message", within=0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_whisper_by_id(bridge: Bridge, dev_server: ServerProcess, transport: str) -> None:
    """SPEC §4 (`whisper:send`): a whisper by target id reaches only the target."""
    alice, bob, carol = await three_players(bridge, dev_server, transport)
    await alice.emit(
        "whisper:send",
        {"targetId": bob.player_id, "content": "psst", "senderId": carol.player_id},
    )
    await assert_whisper_delivered(alice, bob, carol, "psst")


async def test_whisper_by_nickname(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`whisper:send`): a whisper may name its target by nickname."""
    alice, bob, carol = await three_players(bridge, dev_server)
    await carol.emit("whisper:send", {"targetNickname": "Alice", "content": "hi <b>you</b>"})
    await assert_whisper_delivered(carol, alice, bob, "hi you")


async def test_whisper_errors(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`whisper:send`): an unknown target and yourself are answered with
    `whisper:error {message}`; nothing is delivered. (Nicknames are unique per space, so a
    nickname no longer names several players.)"""
    alice, bob, carol = await three_players(bridge, dev_server)
    outsider = await player(bridge, dev_server, space_id(), "Outsider")

    attempts: list[dict[str, Any]] = [
        {"targetId": unique("nobody"), "content": "unknown id"},
        {"targetNickname": "Nobody", "content": "unknown nickname"},
        {"targetId": outsider.player_id, "content": "player of another space"},
        {"targetId": alice.player_id, "content": "myself by id"},
        {"targetNickname": "Alice", "content": "myself by nickname"},
    ]
    for attempt in attempts:
        await alice.emit("whisper:send", attempt)
        error = await alice.wait_for("whisper:error", timeout=3)
        assert isinstance(error.get("message"), str) and error["message"], (attempt, error)

    for client in (alice, bob, carol, outsider):
        for name in ("whisper:received", "whisper:receive", "whisper:sent"):
            await client.expect_nothing(name, within=0)
    await alice.expect_nothing("whisper:error", within=0.2)


async def test_chat_message_of_type_whisper(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`chat:message`): `type: "whisper"` behaves as `whisper:send`."""
    alice, bob, carol = await three_players(bridge, dev_server)
    await alice.emit(
        "chat:message", {"type": "whisper", "targetId": bob.player_id, "content": "secret"}
    )
    await assert_whisper_delivered(alice, bob, carol, "secret")

    await alice.emit(
        "chat:message", {"type": "whisper", "targetNickname": "Carol", "content": "also secret"}
    )
    await assert_whisper_delivered(alice, carol, bob, "also secret")


async def test_chat_message_of_type_party(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`chat:message`, `party:join`, `party:message`): `type: "party"` behaves as
    `party:message`: only the members of the sender's party receive it (sender included);
    a player in no party gets `party:error`."""
    alice, bob, carol = await three_players(bridge, dev_server)

    await carol.emit("chat:message", {"type": "party", "content": "nobody hears this"})
    assert isinstance((await carol.wait_for("party:error"))["message"], str)

    zone = unique("zone")
    await alice.emit("party:join", {"partyId": zone, "partyName": "Fountain"})
    await alice.wait_for("party:joined")
    await bob.emit("party:join", {"partyId": zone, "partyName": "Fountain"})
    await bob.wait_for("party:joined")

    await alice.emit("chat:message", {"type": "party", "content": "party time"})
    for member in (alice, bob):
        message = await member.wait_for("party:message")
        assert message["type"] == "party"
        assert message["content"] == "party time"
        assert message["senderId"] == alice.player_id
        assert message["senderNickname"] == message["senderName"] == "Alice"
        assert message["partyId"] == zone
        assert message["partyName"] == "Fountain"
        assert re.fullmatch(r"msg-.+", message["id"]), message["id"]
    for name in ("party:message", "chat:message"):
        await carol.expect_nothing(name, within=0.2)
    await alice.expect_nothing("chat:message", within=0)
    await bob.expect_nothing("chat:message", within=0)

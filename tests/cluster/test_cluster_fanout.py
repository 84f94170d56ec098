"""Cluster fan-out (SPEC §9 "Fan-out crosses nodes"): players connected to different nodes of one
cluster see each other's joins and leaves (§4 `join:space`, `leave:space`), moves and jumps
(§4 `player:move`, `player:jump`, batched positions), profile changes, chat and whispers (§4,
§5, §6), parties (§4 `party:*`) and proximity changes (§4 `proximity:set`) exactly as on one
node: every event once, to exactly the players it is meant for."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest

from support.cluster import Cluster, dev_join, sees_join, until_received
from support.ids import space_id
from support.jsclient import Bridge, JsClient
from support.players import CHAT_KEYS

pytestmark = pytest.mark.cluster

TRANSPORTS = ["websocket", "polling"]
QUIET = 0.5


def move(x: float, y: float = 0, moving: bool = True, direction: str = "right") -> tuple[str, list]:
    return ("player:move", [{"x": x, "y": y, "direction": direction, "isMoving": moving}])


def is_system(text: str) -> Any:
    return lambda m: m.get("content") == text and m.get("senderId") == "system"


def party_events(client: JsClient) -> list[tuple[str, Any]]:
    return [
        (str(m["event"]), m["args"][0] if m["args"] else None)
        for m in client.log()
        if m.get("type") == "event" and str(m.get("event")).startswith("party:")
    ]


def about(client: JsClient, player_id: str) -> list[str]:
    """Names of the player events ``client`` received about ``player_id``, in arrival order."""
    names = []
    for message in client.log():
        if message.get("type") != "event":
            continue
        name, args = str(message["event"]), message["args"]
        payload = args[0] if args else None
        if name == "players:moved" and any(p.get("id") == player_id for p in payload):
            names.append(name)
        elif name.startswith("player:") and isinstance(payload, dict):
            if payload.get("id") == player_id:
                names.append(name)
    return names


def member_left(payload: dict[str, Any]) -> tuple[str, str]:
    """SPEC §4 (`party:member_left {partyId, memberId}`)."""
    return payload["partyId"], payload["memberId"]


# -- joining and leaving ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_join_and_leave_are_seen_on_the_other_node(
    bridge: Bridge, cluster: Cluster, transport: str
) -> None:
    """SPEC §4 (`join:space`, `leave:space`), §9: a player joining on node B appears to a player
    on node A (`player:joined` at the spawn point, `chat:system` "Bob joined") and B's
    `room:joined` lists A's player; a `leave:space` on B and a disconnect on B both give A one
    `player:left` and one "left" notice."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice", transport=transport)

    bob = await bridge.connected(b.url, transports=[transport])
    joined = await bob.join(space, "Bob", session_token="dev-token-bob", playerId="bob-1")
    assert {p["id"] for p in joined["players"]} == {alice.player_id, "bob-1"}
    alice_seen = next(p for p in joined["players"] if p["id"] == alice.player_id)
    assert (alice_seen["nickname"], alice_seen["x"], alice_seen["y"]) == ("Alice", 480, 320)

    announced = await alice.wait_for("player:joined")
    assert announced["id"] == "bob-1"
    assert announced["nickname"] == "Bob"
    assert (announced["x"], announced["y"], announced["direction"]) == (480, 320, "down")
    assert announced["isMoving"] is False
    await alice.wait_for("chat:system", is_system("Bob joined"))
    await bob.wait_for("chat:system", is_system("Bob joined"))

    carol = await dev_join(bridge, b, space, "Carol", transport=transport)
    await sees_join([alice, bob], carol)

    await bob.emit("leave:space")
    assert await alice.wait_for("player:left") == {"id": "bob-1"}
    await alice.wait_for("chat:system", is_system("Bob left"))
    await carol.wait_for("player:left", lambda m: m["id"] == "bob-1")

    await carol.disconnect()
    assert await alice.wait_for("player:left") == {"id": carol.player_id}
    await alice.wait_for("chat:system", is_system("Carol lost the connection"))

    await alice.expect_nothing("player:left", within=QUIET)
    assert [m["id"] for m in alice.received("player:joined")] == ["bob-1", carol.player_id]
    assert [m["id"] for m in alice.received("player:left")] == ["bob-1", carol.player_id]
    notices = [m["content"] for m in alice.received("chat:system")]
    for text in ("Bob joined", "Carol joined", "Bob left", "Carol lost the connection"):
        assert notices.count(text) == 1, notices


async def test_other_spaces_hear_nothing(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §9: fan-out across nodes stays inside the space: a player of another space on the
    other node receives none of its joins, moves or chat."""
    a, b = await cluster(2)
    space, other = space_id(), space_id()
    outsider = await dev_join(bridge, b, other, "Outsider")
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await sees_join([alice], bob)

    await alice.emit_many([move(10), move(11, moving=False), ("chat:message", [{"content": "hi"}])])
    await bob.wait_for("chat:message")
    await bob.wait_for("player:moved", lambda m: m["x"] == 11)
    for event in ("player:joined", "player:moved", "chat:message"):
        await outsider.expect_nothing(event, within=0.1 if event != "player:joined" else QUIET)
    assert [m["content"] for m in outsider.received("chat:system")] == ["Outsider joined"]


# -- movement --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_moves_cross_nodes_and_the_final_state_arrives(
    bridge: Bridge, cluster: Cluster, transport: str
) -> None:
    """SPEC §4 (`player:move`), §9: a burst of moves on node B reaches node A coalesced at most,
    in order, never twice, always ending with the newest state; `player:moved` carries exactly
    {id, nickname, x, y, direction, isMoving}; the mover gets nothing back."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice", transport=transport)
    bob = await dev_join(bridge, b, space, "Bob", transport=transport)
    await sees_join([alice], bob)

    await bob.emit_many([move(i, 2 * i) for i in range(1, 61)] + [move(60, 120, moving=False)])
    final = await alice.wait_for(
        "player:moved", lambda m: m["x"] == 60 and m["isMoving"] is False, timeout=5
    )
    assert final == {
        "id": bob.player_id,
        "nickname": "Bob",
        "x": 60,
        "y": 120,
        "direction": "right",
        "isMoving": False,
    }
    await alice.expect_nothing("player:moved", within=QUIET)
    seen = alice.received("player:moved")
    xs = [m["x"] for m in seen]
    assert xs == sorted(xs), f"an older position arrived after a newer one: {xs}"
    states = [(m["x"], m["isMoving"]) for m in seen]
    assert len(set(states)) == len(states), f"a position was delivered twice: {states}"
    assert any(m["isMoving"] is True for m in seen), "the walk (isMoving true) was lost"
    assert all(set(m) == {"id", "nickname", "x", "y", "direction", "isMoving"} for m in seen)
    await bob.expect_nothing("player:moved", within=0.1)


async def test_is_moving_changes_inside_one_tick_cross_nodes(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`player:move`): an `isMoving` change is never lost, even when start and stop are
    sent within one broadcast tick on another node."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await sees_join([alice], bob)

    await bob.emit_many([move(1, moving=True), move(1, moving=False)])
    await alice.wait_for("player:moved", lambda m: m["isMoving"] is True)
    await alice.wait_for("player:moved", lambda m: m["isMoving"] is False)

    await bob.emit_many(
        [move(x) for x in range(2, 40)]
        + [move(40, moving=False), move(41, moving=True), move(42, moving=False)]
    )
    await alice.wait_for("player:moved", lambda m: m["x"] == 42 and m["isMoving"] is False)
    states = [m["isMoving"] for m in alice.received("player:moved")]
    changes = sum(1 for x, y in itertools.pairwise(states) if x != y)
    assert changes >= 5, f"start/stop changes were lost across nodes: {states}"


async def test_batched_client_gets_players_moved_from_the_other_node(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (batched positions), §9: a client on node A that joined with
    `positionBatching: true` receives the moves of players on node B (and on its own node) as
    `players:moved` arrays, never as single `player:moved`, ending with each mover's newest
    state."""
    a, b = await cluster(2)
    space = space_id()
    watcher = await dev_join(bridge, a, space, "Watcher", positionBatching=True)
    remote = await dev_join(bridge, b, space, "Remote")
    local = await dev_join(bridge, a, space, "Local")
    await sees_join([watcher], remote, local)

    await remote.emit_many([move(i, 5) for i in range(30)] + [move(29, 5, moving=False)])
    await local.emit_many([move(100 + i, 9) for i in range(30)] + [move(129, 9, moving=False)])

    def final_of(client: JsClient, x: int) -> Any:
        return lambda batch: any(
            p["id"] == client.player_id and p["x"] == x and p["isMoving"] is False for p in batch
        )

    await until_received(watcher, "players:moved", final_of(remote, 29))
    await until_received(watcher, "players:moved", final_of(local, 129))
    assert watcher.received("player:moved") == [], "a batched client gets no single events"
    items = [item for batch in watcher.received("players:moved") for item in batch]
    assert all(isinstance(batch, list) for batch in watcher.received("players:moved"))
    assert all(p["id"] != watcher.player_id for p in items)
    remote_xs = [p["x"] for p in items if p["id"] == remote.player_id]
    assert remote_xs == sorted(remote_xs), remote_xs
    for item in items:
        assert set(item) == {"id", "nickname", "x", "y", "direction", "isMoving"}


async def test_every_jump_crosses_nodes(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §4 (`player:jump`): jumps are events, never coalesced: all ten jumps made on node B
    reach node A (plain and batched clients alike), in order, each once."""
    a, b = await cluster(2)
    space = space_id()
    plain = await dev_join(bridge, a, space, "Plain")
    batched = await dev_join(bridge, a, space, "Batched", positionBatching=True)
    jumper = await dev_join(bridge, b, space, "Jumper", transport="polling")
    await sees_join([plain, batched], jumper)

    await jumper.emit_many([("player:jump", [{"x": i, "y": 7}]) for i in range(10)])
    expected = [{"id": jumper.player_id, "x": i, "y": 7} for i in range(10)]
    assert await plain.wait_for_all("player:jumped", 10) == expected
    assert await batched.wait_for_all("player:jumped", 10) == expected
    await plain.expect_nothing("player:jumped")
    await batched.expect_nothing("player:jumped", within=0.1)
    await jumper.expect_nothing("player:jumped", within=0.1)


async def test_profile_update_crosses_nodes(bridge: Bridge, cluster: Cluster) -> None:
    """SPEC §4 (`player:updateProfile`), §9: players on the other node receive
    `player:profileUpdated`; later moves and chat carry the new nickname, and a newcomer on a
    third node sees it in `room:joined`."""
    a, b, c = await cluster(3)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await sees_join([alice], bob)

    config = {"type": "classic", "colorId": "green"}
    await bob.emit(
        "player:updateProfile",
        {"nickname": "Bobby", "avatarColor": "green", "avatarConfig": config},
    )
    updated = await alice.wait_for("player:profileUpdated")
    assert updated["id"] == bob.player_id
    assert updated["nickname"] == "Bobby"
    assert updated.get("avatarColor") == "green"
    assert updated.get("avatarConfig") == config

    await bob.emit("player:move", {"x": 5, "y": 6, "direction": "up", "isMoving": False})
    assert (await alice.wait_for("player:moved"))["nickname"] == "Bobby"
    await bob.emit("chat:message", {"content": "renamed"})
    message = await alice.wait_for("chat:message")
    assert message["senderNickname"] == message["senderName"] == "Bobby"

    await asyncio.sleep(0.3)
    carol = await dev_join(bridge, c, space, "Carol")
    seen = {p["id"]: p for p in carol.received("room:joined")[-1]["players"]}
    assert seen[bob.player_id]["nickname"] == "Bobby"
    assert seen[bob.player_id].get("avatarColor") == "green"
    await alice.expect_nothing("player:profileUpdated", within=0.2)


async def test_order_join_moves_leave_is_kept_across_nodes(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §5 (ordering), §4 (`player:move`): what one client sends on node B is seen on node A
    in the order sent: a move sent right after `join:space` arrives after `player:joined`, and
    the last position of a player who walks and leaves arrives before `player:left` (so no
    client brings back an avatar that has gone), for plain and batched watchers alike."""
    a, b = await cluster(2)
    space = space_id()
    plain = await dev_join(bridge, a, space, "Plain")
    batched = await dev_join(bridge, a, space, "Batched", positionBatching=True)
    walker = await bridge.connected(b.url)
    join = {
        "spaceId": space,
        "nickname": "Walker",
        "playerId": "walker-1",
        "sessionToken": "dev-walker",
    }
    await walker.emit_many(
        [("join:space", [join]), *(move(i) for i in range(1, 21)), ("leave:space", [])]
    )
    for watcher in (plain, batched):
        await watcher.wait_for("player:left", lambda m: m["id"] == "walker-1")
        await asyncio.sleep(0.2)
        names = about(watcher, "walker-1")
        moves = [i for i, n in enumerate(names) if n in ("player:moved", "players:moved")]
        assert moves, (watcher.id, names)
        assert names.index("player:joined") < moves[0], (watcher.id, names)
        assert moves[-1] < names.index("player:left"), (watcher.id, names)
        assert names.count("player:left") == 1 and names.count("player:joined") == 1, names
    assert plain.received("player:moved")[-1]["x"] == 20
    last = [p for batch in batched.received("players:moved") for p in batch][-1]
    assert (last["id"], last["x"]) == ("walker-1", 20)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_from_one_sender_keeps_its_order_across_nodes(
    bridge: Bridge, cluster: Cluster, transport: str
) -> None:
    """SPEC §5 (ordering), §6: five messages sent back to back on node B arrive on node A in the
    order sent, each once."""
    a, b = await cluster(2)
    space = space_id()
    listener = await dev_join(bridge, a, space, "Listener", transport=transport)
    talker = await dev_join(bridge, b, space, "Talker", transport=transport)
    await sees_join([listener], talker)
    await talker.emit_many([("chat:message", [{"content": f"line {i}"}]) for i in range(5)])
    received = await listener.wait_for_all("chat:message", 5)
    assert [m["content"] for m in received] == [f"line {i}" for i in range(5)]
    await listener.expect_nothing("chat:message", within=QUIET)


# -- chat ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_reaches_the_whole_space_once_on_every_node(
    bridge: Bridge, cluster: Cluster, transport: str
) -> None:
    """SPEC §4 (`chat:message`), §3 (ChatMessageData), §9: a message sent on node B reaches every
    player of the space on nodes A, B and C, the sender included, exactly once and identical
    everywhere (same `msg-` id)."""
    a, b, c = await cluster(3)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice", transport=transport)
    bob = await dev_join(bridge, b, space, "Bob", transport=transport)
    carol = await dev_join(bridge, c, space, "Carol", transport=transport)
    dave = await dev_join(bridge, a, space, "Dave", transport=transport)
    await sees_join([alice, bob, carol], dave)

    await bob.emit("chat:message", {"content": "  hello cluster  ", "senderId": alice.player_id})
    received = [await client.wait_for("chat:message") for client in (alice, bob, carol, dave)]
    first = received[0]
    assert all(message == first for message in received), received
    assert CHAT_KEYS <= set(first)
    assert re.fullmatch(r"msg-.+", first["id"]), first["id"]
    assert first["senderId"] == bob.player_id
    assert first["senderNickname"] == first["senderName"] == "Bob"
    assert first["content"] == "hello cluster"
    assert first["type"] == "message"

    await alice.emit("chat:message", {"content": "<b>bold</b> & back"})
    for client in (alice, bob, carol, dave):
        message = await client.wait_for("chat:message")
        assert message["content"] == "bold &amp; back"
    await asyncio.sleep(QUIET)
    for client in (alice, bob, carol, dave):
        assert len(client.received("chat:message")) == 2, client.received("chat:message")


# -- whispers --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["targetId", "targetNickname", "chat:message"])
async def test_whisper_reaches_only_the_target_on_another_node(
    bridge: Bridge, cluster: Cluster, how: str
) -> None:
    """SPEC §4 (`whisper:send`, `chat:message` type whisper), §9: a whisper from node A to a
    player on node B gives the target `whisper:received` and `whisper:receive`, the sender
    `whisper:sent`, and nobody else anything, on either node."""
    a, b = await cluster(2)
    space = space_id()
    sender = await dev_join(bridge, a, space, "Sender")
    near = await dev_join(bridge, a, space, "Near")
    target = await dev_join(bridge, b, space, "Target")
    far = await dev_join(bridge, b, space, "Far")
    await sees_join([sender, near, target], far)

    if how == "targetId":
        await sender.emit("whisper:send", {"targetId": target.player_id, "content": "psst"})
    elif how == "targetNickname":
        await sender.emit("whisper:send", {"targetNickname": "target", "content": "psst"})
    else:
        await sender.emit(
            "chat:message", {"type": "whisper", "targetId": target.player_id, "content": "psst"}
        )

    received = await target.wait_for("whisper:received")
    assert received["senderId"] == sender.player_id
    assert received["senderName"] == "Sender"
    assert received["content"] == "psst"
    assert isinstance(received["timestamp"], int)
    chat = await target.wait_for("whisper:receive")
    assert CHAT_KEYS <= set(chat)
    assert chat["type"] == "whisper"
    assert chat["senderId"] == sender.player_id
    assert chat["content"] == "psst"
    sent = await sender.wait_for("whisper:sent")
    assert sent["type"] == "whisper"
    assert sent["content"] == "psst"
    assert sent["id"] == chat["id"] == received["id"]

    await asyncio.sleep(QUIET)
    for bystander in (near, far):
        names = bystander.event_names()
        assert not [n for n in names if n.startswith("whisper:")], (bystander.id, names)
        assert bystander.received("chat:message") == []
    assert len(target.received("whisper:received")) == 1
    assert len(target.received("whisper:receive")) == 1
    assert target.received("whisper:sent") == []
    assert sender.received("whisper:receive") == [] and sender.received("whisper:received") == []
    assert len(sender.received("whisper:sent")) == 1


async def test_whisper_to_a_player_who_left_the_other_node(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`whisper:send` errors), §9: once a player on node B has left (by `leave:space` or
    by disconnecting), a whisper to them from node A gets `whisper:error` and reaches nobody."""
    a, b = await cluster(2)
    space = space_id()
    sender = await dev_join(bridge, a, space, "Sender")
    leaver = await dev_join(bridge, b, space, "Leaver")
    dropper = await dev_join(bridge, b, space, "Dropper")
    await sees_join([sender], dropper)

    await leaver.emit("leave:space")
    await sender.wait_for("player:left", lambda m: m["id"] == leaver.player_id)
    await sender.emit("whisper:send", {"targetId": leaver.player_id, "content": "still there?"})
    error = await sender.wait_for("whisper:error")
    assert isinstance(error["message"], str) and error["message"].strip()
    await sender.emit("whisper:send", {"targetNickname": "Leaver", "content": "hello?"})
    await sender.wait_for("whisper:error")

    await dropper.disconnect()
    await sender.wait_for("player:left", lambda m: m["id"] == dropper.player_id)
    await sender.emit("whisper:send", {"targetId": dropper.player_id, "content": "gone?"})
    await sender.wait_for("whisper:error")

    await leaver.expect_nothing("whisper:received", within=QUIET)
    assert leaver.received("whisper:receive") == []
    assert sender.received("whisper:sent") == []


async def test_a_nickname_taken_on_another_node_is_suffixed_and_whispers_find_one_player(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`whisper:send` by nickname), §9: nicknames are unique cluster-wide, so a player
    joining node B as "sam" while "Sam" is on node A becomes "sam (2)"; a whisper to "SAM"
    reaches only the first, a whisper to "sam (2)" only the second."""
    a, b = await cluster(2)
    space = space_id()
    sender = await dev_join(bridge, a, space, "Sender")
    sam_a = await dev_join(bridge, a, space, "Sam")
    sam_b = await dev_join(bridge, b, space, "sam")
    await sees_join([sender, sam_a], sam_b)
    (joined,) = [p for p in sender.received("player:joined") if p["id"] == sam_b.player_id]
    assert joined["nickname"] == "sam (2)"

    await sender.emit("whisper:send", {"targetNickname": "SAM", "content": "first one"})
    assert (await sam_a.wait_for("whisper:receive"))["content"] == "first one"
    await sam_b.expect_nothing("whisper:receive", within=QUIET)

    await sender.emit("whisper:send", {"targetNickname": "sam (2)", "content": "you"})
    assert (await sam_b.wait_for("whisper:receive"))["content"] == "you"
    await sam_a.expect_nothing("whisper:receive", within=0.2)


# -- parties ---------------------------------------------------------------------------------


async def test_invite_party_with_members_on_different_nodes(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`party:create`, `party:invite`, `party:accept`, `party:decline`, `party:message`,
    `party:leave`), §9: a party whose members are on nodes A, B and C works as on one node:
    the invitation reaches the target's node, accepting announces the member to the others,
    party chat reaches members only (once each), a decline reaches the inviter, a leave
    reaches the remaining members; a non-member on either node hears nothing."""
    a, b, c = await cluster(3)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    outsider_a = await dev_join(bridge, a, space, "OutsiderA")
    bob = await dev_join(bridge, b, space, "Bob")
    carol = await dev_join(bridge, c, space, "Carol")
    outsider_b = await dev_join(bridge, b, space, "OutsiderB")
    await sees_join([alice, bob, carol], outsider_b)

    await alice.emit("party:create", {"name": "Crew"})
    created = await alice.wait_for("party:joined")
    party_id = created["partyId"]
    assert [m["id"] for m in created["members"]] == [alice.player_id]

    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    invited = await bob.wait_for("party:invited")
    assert {k: invited[k] for k in ("partyId", "partyName", "inviterId", "inviterName")} == {
        "partyId": party_id,
        "partyName": "Crew",
        "inviterId": alice.player_id,
        "inviterName": "Alice",
    }
    await bob.emit("party:accept", {"partyId": party_id})
    bob_joined = await bob.wait_for("party:joined")
    assert bob_joined["partyId"] == party_id
    assert [m["id"] for m in bob_joined["members"]] == [alice.player_id, bob.player_id]
    arrived = await alice.wait_for("party:member_joined")
    assert arrived["partyId"] == party_id
    assert arrived["member"]["id"] == bob.player_id
    assert arrived["member"]["nickname"] == "Bob"

    # Bob (node B) invites Carol (node C); Carol declines: Bob is told, on node B.
    await bob.emit("party:invite", {"partyId": party_id, "targetId": carol.player_id})
    invited = await carol.wait_for("party:invited")
    assert (invited["inviterId"], invited["inviterName"]) == (bob.player_id, "Bob")
    await carol.emit("party:decline", {"partyId": party_id})
    declined = await bob.wait_for("party:declined")
    assert declined == {"partyId": party_id, "targetId": carol.player_id}
    await carol.emit("party:accept", {"partyId": party_id})
    assert isinstance((await carol.wait_for("party:error"))["message"], str)

    await bob.emit("party:message", {"partyId": party_id, "content": "party time"})
    for member in (alice, bob):
        message = await member.wait_for("party:message")
        assert CHAT_KEYS <= set(message)
        assert message["type"] == "party"
        assert message["senderId"] == bob.player_id
        assert message["senderName"] == "Bob"
        assert message["partyId"] == party_id
        assert message["partyName"] == "Crew"
        assert message["content"] == "party time"

    await bob.emit("party:leave", {"partyId": party_id})
    assert (await bob.wait_for("party:left"))["partyId"] == party_id
    assert member_left(await alice.wait_for("party:member_left")) == (party_id, bob.player_id)
    await bob.emit("party:message", {"partyId": party_id, "content": "after leaving"})
    assert isinstance((await bob.wait_for("party:error"))["message"], str)

    await asyncio.sleep(QUIET)
    assert len(alice.received("party:message")) == 1
    assert len(bob.received("party:message")) == 1
    assert carol.received("party:message") == []
    assert party_events(outsider_a) == []
    assert party_events(outsider_b) == []


async def test_invite_to_a_player_who_left_the_other_node_is_refused(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`party:invite`: only a player of the same space), §9: inviting a player who has
    just left the space on another node gets `party:error`; an invitation held by a player who
    left dies with the leave (accepting after rejoining on another node gets `party:error`)."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    carol = await dev_join(bridge, b, space, "Carol")
    await sees_join([alice], carol)
    party_id = (await _create(alice, "Crew"))["partyId"]

    await bob.emit("leave:space")
    await alice.wait_for("player:left", lambda m: m["id"] == bob.player_id)
    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    assert isinstance((await alice.wait_for("party:error"))["message"], str)
    assert bob.received("party:invited") == []

    await alice.emit("party:invite", {"partyId": party_id, "targetId": carol.player_id})
    await carol.wait_for("party:invited")
    await carol.disconnect()
    await alice.wait_for("player:left", lambda m: m["id"] == carol.player_id)
    again = await dev_join(bridge, a, space, "Carol", player_id=carol.player_id)
    await again.emit("party:accept", {"partyId": party_id})
    assert isinstance((await again.wait_for("party:error"))["message"], str)
    await alice.expect_nothing("party:member_joined", within=0.2)


async def _create(client: JsClient, name: str) -> dict[str, Any]:
    await client.emit("party:create", {"name": name})
    joined: dict[str, Any] = await client.wait_for("party:joined")
    return joined


@pytest.mark.parametrize("event", ["party:join", "joinParty"])
async def test_party_zone_spans_nodes(bridge: Bridge, cluster: Cluster, event: str) -> None:
    """SPEC §4 (`party:join` / `joinParty`, `party:message`, `leaveParty`), §9: players on
    different nodes entering the same zone form one party: the second joiner's `party:joined`
    lists both, the first gets `party:member_joined`; zone chat reaches both; `leaveParty`
    tells the one who stays."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    outsider = await dev_join(bridge, b, space, "Outsider")
    await sees_join([alice, bob], outsider)

    zone = "zone-fountain"
    await alice.emit(event, {"partyId": zone, "partyName": "Fountain"})
    first = await alice.wait_for("party:joined", lambda p: p["partyId"] == zone)
    assert [m["id"] for m in first["members"]] == [alice.player_id]
    await bob.emit(event, {"partyId": zone, "partyName": "Fountain"})
    second = await bob.wait_for("party:joined", lambda p: p["partyId"] == zone)
    assert second["partyName"] == "Fountain"
    assert sorted(m["id"] for m in second["members"]) == sorted([alice.player_id, bob.player_id])
    arrived = await alice.wait_for("party:member_joined")
    assert (arrived["partyId"], arrived["member"]["id"]) == (zone, bob.player_id)

    await alice.emit("party:message", {"content": "by the fountain"})
    for member in (alice, bob):
        message = await member.wait_for("party:message")
        assert (message["partyId"], message["content"]) == (zone, "by the fountain")
        assert message["senderId"] == alice.player_id

    await bob.emit("leaveParty")
    assert (await bob.wait_for("party:left"))["partyId"] == zone
    assert member_left(await alice.wait_for("party:member_left")) == (zone, bob.player_id)
    await asyncio.sleep(0.2)
    assert party_events(outsider) == []


async def test_disconnect_on_one_node_leaves_parties_on_the_other(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (leaving the space leaves both parties), §9: when a member on node B disconnects,
    the members on node A receive `party:member_left` for both the invite party and the zone,
    and `player:left`."""
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await sees_join([alice], bob)
    party_id = (await _create(alice, "Crew"))["partyId"]
    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    await bob.wait_for("party:invited")
    await bob.emit("party:accept", {"partyId": party_id})
    await alice.wait_for("party:member_joined")
    for client in (alice, bob):
        await client.emit("party:join", {"partyId": "zone-1", "partyName": "Zone"})
        await client.wait_for("party:joined", lambda p: p["partyId"] == "zone-1")
    await alice.wait_for("party:member_joined", lambda p: p["partyId"] == "zone-1")

    await bob.disconnect()
    await alice.wait_for("player:left", lambda m: m["id"] == bob.player_id)
    await alice.wait_for("party:member_left")
    await alice.wait_for("party:member_left")
    left = sorted(member_left(m) for m in alice.received("party:member_left"))
    assert left == sorted([(party_id, bob.player_id), ("zone-1", bob.player_id)])


# -- proximity -------------------------------------------------------------------------------


async def test_proximity_set_on_one_node_reaches_every_node(
    bridge: Bridge, cluster: Cluster
) -> None:
    """SPEC §4 (`proximity:set`), §9: an OWNER on node B switches proximity on: players on nodes
    A and B receive `proximity:changed {spaceId, enabled, changedBy}` and a `chat:system`
    notice; a newcomer on node C sees the flag in `room:joined` and `proximity:status`; a
    PARTICIPANT on node A is refused and nothing changes."""
    a, b, c = await cluster(3)
    space = space_id()
    participant = await dev_join(bridge, a, space, "Participant")
    owner = await dev_join(bridge, b, space, "Owner", role="OWNER")
    await sees_join([participant], owner)

    await participant.emit("proximity:set", {"enabled": True})
    assert (await participant.wait_for("proximity:error"))["message"] == "Permission denied"
    await owner.expect_nothing("proximity:changed", within=0.3)

    await owner.emit("proximity:set", {"enabled": True})
    for client in (participant, owner):
        changed = await client.wait_for("proximity:changed")
        assert changed["spaceId"] == space
        assert changed["enabled"] is True
        assert changed["changedBy"]
        notice = await client.wait_for("chat:system", lambda m: "joined" not in m["content"])
        assert notice["senderId"] == "system" and notice["content"]

    newcomer = await bridge.connected(c.url)
    joined = await newcomer.join(space, "Newcomer", session_token="dev-newcomer")
    assert joined["proximity"] is True
    assert await newcomer.wait_for("proximity:status") == {"enabled": True}

    staff = await dev_join(bridge, c, space, "Staff", role="STAFF")
    await sees_join([participant, owner], staff)
    await staff.emit("proximity:set", {"enabled": False})
    for client in (participant, owner, newcomer, staff):
        changed = await client.wait_for("proximity:changed", lambda p: p["enabled"] is False)
        assert changed["spaceId"] == space
    await asyncio.sleep(0.2)
    assert len(participant.received("proximity:changed")) == 2

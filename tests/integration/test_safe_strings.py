"""Every string another client receives is safe (SPEC §3, §6, §8), driven by the official JS
client: nicknames from a join, a profile update or the app's verify answer; avatar fields;
quoted replies; message content."""

from __future__ import annotations

from typing import Any

import httpx

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.players import dev_player as player
from support.server import ServerProcess
from support.standins import AppStandIn

XSS = "<img src=x onerror=alert(1)>"
# Markup, an ampersand, a right-to-left override, a zero-width space and a Hangul filler.
DISGUISED = "<b>Eve</b> & \u202eco\u200b\u3164"
SHOWN = "Eve &amp; co"
# Accepted before nicknames were neutralised, and relayed as it was.
MARKED = "<b>Eve</b> & co\u3164"
QUIET = 0.3


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


async def join_refused(client: JsClient, space: str, **fields: Any) -> dict[str, Any]:
    """Emit a `join:space` the server must refuse as bad input; returns the `error`."""
    payload = {"spaceId": space, "sessionToken": dev_token(), "playerId": unique("p"), **fields}
    await client.emit("join:space", payload)
    error: dict[str, Any] = await client.wait_for("error")
    await client.expect_nothing("room:joined", within=QUIET)
    return error


async def presence_nicknames(server: ServerProcess, space: str) -> dict[str, str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/presence/{space}")
    return {u["id"]: u["nickname"] for u in response.json()["onlineUsers"]}


async def test_markup_nickname_is_refused_at_join(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """A nickname that is only markup, a reserved name or only invisible characters is bad
    input: `error INVALID_PAYLOAD`, and nobody sees the player."""
    space = space_id()
    watcher = await player(bridge, dev_server, space, "Watcher")
    for nickname in (XSS, "System", "시스템", "SYSTEM", "\u3164", "\u2800\u200b"):
        client = await bridge.connected(dev_server.url)
        error = await join_refused(client, space, nickname=nickname)
        assert error["code"] == "INVALID_PAYLOAD", (nickname, error)
    await watcher.expect_nothing("player:joined", within=0)
    assert list(await presence_nicknames(dev_server, space)) == [watcher.player_id]


async def test_nickname_reaches_every_output_neutralised(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """The nickname is neutralised once, at the join; `player:joined`, `room:joined`,
    `player:moved`, chat, whispers, party invitations and member lists and `GET /presence` all
    carry that form (and `&` is escaped exactly once)."""
    space = space_id()
    ann = await player(bridge, dev_server, space, "Ann")
    eve = await player(bridge, dev_server, space, MARKED)
    joined = await ann.wait_for("player:joined")
    assert joined["nickname"] == SHOWN
    assert by_id(eve.received("room:joined")[0]["players"])[eve.player_id]["nickname"] == SHOWN
    system = await ann.wait_for("chat:system", lambda m: "Eve" in m["content"])
    assert system["content"] == f"{SHOWN} joined"

    late = await player(bridge, dev_server, space, "Late")
    assert by_id(late.received("room:joined")[0]["players"])[eve.player_id]["nickname"] == SHOWN

    await eve.emit("player:move", {"x": 10, "y": 20, "direction": "up", "isMoving": True})
    assert (await ann.wait_for("player:moved"))["nickname"] == SHOWN

    await eve.emit("chat:message", {"content": "hello"})
    message = await ann.wait_for("chat:message")
    assert (message["senderNickname"], message["senderName"]) == (SHOWN, SHOWN)

    await eve.emit("whisper:send", {"targetId": ann.player_id, "content": "psst"})
    assert (await ann.wait_for("whisper:received"))["senderName"] == SHOWN
    assert (await ann.wait_for("whisper:receive"))["senderNickname"] == SHOWN

    await eve.emit("party:create", {"name": "Crew"})
    party = await eve.wait_for("party:joined")
    assert party["members"][0]["nickname"] == SHOWN
    await eve.emit("party:invite", {"partyId": party["partyId"], "targetId": ann.player_id})
    assert (await ann.wait_for("party:invited"))["inviterName"] == SHOWN
    await ann.emit("party:accept", {"partyId": party["partyId"]})
    members = (await ann.wait_for("party:joined"))["members"]
    assert by_id(members)[eve.player_id]["nickname"] == SHOWN

    assert (await presence_nicknames(dev_server, space))[eve.player_id] == SHOWN


async def test_whisper_by_the_name_as_shown_or_as_relayed(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """A client may name a whisper's target as the reader sees it or as it was relayed."""
    space = space_id()
    tom = await player(bridge, dev_server, space, "Tom & Jerry")
    ann = await player(bridge, dev_server, space, "Ann")
    for name in ("Tom & Jerry", "tom &amp; jerry"):
        await ann.emit("whisper:send", {"targetNickname": name, "content": f"to {name}"})
        received = await tom.wait_for("whisper:received")
        assert received["senderName"] == "Ann"


async def test_profile_update_is_neutralised_or_refused(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """`player:updateProfile` follows the join's rule: a usable name reaches the others
    neutralised; an unusable one (or an avatar field outside the character set) is refused on
    the event's error path and changes nothing."""
    space = space_id()
    ann = await player(bridge, dev_server, space, "Ann")
    bob = await player(bridge, dev_server, space, "Bob")
    await ann.wait_for("player:joined")

    await bob.emit("player:updateProfile", {"nickname": DISGUISED})
    assert (await ann.wait_for("player:profileUpdated"))["nickname"] == SHOWN
    assert (await presence_nicknames(dev_server, space))[bob.player_id] == SHOWN

    refused: list[dict[str, Any]] = [
        {"nickname": XSS},
        {"nickname": "system"},
        {"nickname": "\u202e\u200b"},
        {"nickname": "Bob", "avatarConfig": {"type": "custom", "characterId": XSS}},
        {"nickname": "Bob", "avatarConfig": {"type": "classic", "colorId": "red\u202e"}},
    ]
    for update in refused:
        await bob.emit("player:updateProfile", update)
        error = await bob.wait_for("error")
        assert error["code"] == "INVALID_PAYLOAD", (update, error)
    await ann.expect_nothing("player:profileUpdated", within=QUIET)
    assert (await presence_nicknames(dev_server, space))[bob.player_id] == SHOWN


async def test_avatar_fields_outside_the_character_set_are_refused_at_join(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    space = space_id()
    for config in (
        {"type": "custom", "characterId": XSS},
        {"type": "custom", "characterId": "knight\u202e"},
        {"type": "classic", "colorId": '"><script>'},
    ):
        client = await bridge.connected(dev_server.url)
        error = await join_refused(client, space, nickname="Ann", avatarConfig=config)
        assert error["code"] == "INVALID_PAYLOAD", (config, error)


async def test_a_second_player_under_a_taken_name_gets_a_suffix(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """Nicknames are unique per space, ignoring case: a join under a taken name is suffixed
    ("ann (2)"), everyone sees that name; the same player joining again keeps theirs."""
    space = space_id()
    first = await player(bridge, dev_server, space, "Ann")
    second_id = unique("player")
    second = await player(bridge, dev_server, space, "ann", player_id=second_id)
    assert (await first.wait_for("player:joined"))["nickname"] == "ann (2)"
    mine = by_id(second.received("room:joined")[0]["players"])
    assert (mine[first.player_id]["nickname"], mine[second_id]["nickname"]) == ("Ann", "ann (2)")
    third = await player(bridge, dev_server, space, "ＡＮＮ")
    assert (await first.wait_for("player:joined"))["nickname"] == "ANN (3)"

    # The second player again, from another tab: still "ann (2)", and "Ann" still "Ann".
    again = await player(bridge, dev_server, space, "ann", player_id=second_id)
    assert (await second.wait_for("error"))["code"] == "DUPLICATE_SESSION"
    mine = by_id(again.received("room:joined")[0]["players"])
    assert (mine[first.player_id]["nickname"], mine[second_id]["nickname"]) == ("Ann", "ann (2)")
    names = await presence_nicknames(dev_server, space)
    assert sorted(names.values()) == ["ANN (3)", "Ann", "ann (2)"]

    # Whispering to "Ann" reaches exactly one player.
    await third.emit("whisper:send", {"targetNickname": "ann", "content": "which one?"})
    await first.wait_for("whisper:received")
    await again.expect_nothing("whisper:received", within=QUIET)


async def test_profile_update_to_a_taken_name_is_refused(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """A player choosing a name another player of the space has gets `error NICKNAME_TAKEN`;
    a suffixed player sending their base name again (with a new avatar) keeps their name."""
    space = space_id()
    ann = await player(bridge, dev_server, space, "Ann")
    bob = await player(bridge, dev_server, space, "Bob")
    await ann.wait_for("player:joined")

    await bob.emit("player:updateProfile", {"nickname": "ANN"})
    error = await bob.wait_for("error")
    assert error["code"] == "NICKNAME_TAKEN", error
    await ann.expect_nothing("player:profileUpdated", within=QUIET)

    await ann.emit("player:updateProfile", {"nickname": "ann", "avatarColor": "red"})
    update = await bob.wait_for("player:profileUpdated")
    assert (update["nickname"], update["avatarColor"]) == ("ann", "red")

    twin = await player(bridge, dev_server, space, "Bob")
    await ann.wait_for("player:joined", lambda p: p["nickname"] == "Bob (2)")
    await twin.emit("player:updateProfile", {"nickname": "Bob", "avatarColor": "blue"})
    update = await ann.wait_for("player:profileUpdated", lambda p: p["id"] == twin.player_id)
    assert (update["nickname"], update["avatarColor"]) == ("Bob (2)", "blue")


async def test_forged_replies_are_refused(bridge: Bridge, dev_server: ServerProcess) -> None:
    """`replyTo` cannot be used to forge a quote: its id follows the id rule, its sender the
    nickname rule (no "System", no NUL, no override) and its content the content rule."""
    space = space_id()
    ann = await player(bridge, dev_server, space, "Ann")
    bob = await player(bridge, dev_server, space, "Bob")
    await ann.wait_for("player:joined")
    forged: list[dict[str, Any]] = [
        {"id": "msg-1", "senderNickname": "System", "content": "Server restarting"},
        {"id": "msg-1", "senderNickname": "Ann\x00", "content": "hi"},
        {"id": "msg-1", "senderNickname": XSS, "content": "hi"},
        {"id": "msg 1\u202e", "senderNickname": "Ann", "content": "hi"},
        {"id": "msg-1", "senderNickname": "Ann", "content": "\u202e\x00"},
    ]
    events = [
        ("chat:message", {"content": "re"}, "chat:error"),
        ("whisper:send", {"targetId": ann.player_id, "content": "re"}, "whisper:error"),
    ]
    for reply in forged:
        for event, payload, channel in events:
            await bob.emit(event, {**payload, "replyTo": reply})
            error = await bob.wait_for(channel)
            assert "replyTo" in error["message"], (reply, error)
    await ann.expect_nothing("chat:message", within=QUIET)
    await ann.expect_nothing("whisper:received", within=0)


async def test_reply_and_content_are_neutralised(bridge: Bridge, dev_server: ServerProcess) -> None:
    """A valid reply is relayed with its fields neutralised; direction overrides and control
    characters are stripped from message content, line breaks are kept."""
    space = space_id()
    ann = await player(bridge, dev_server, space, "Ann")
    bob = await player(bridge, dev_server, space, "Bob")
    await ann.wait_for("player:joined")
    reply = {"id": "msg-1", "senderNickname": "<i>Ann</i>\u202e", "content": "<b>yes</b>\u202e &"}
    await bob.emit("chat:message", {"content": "a\u202eb\x00c\nd", "replyTo": reply})
    message = await ann.wait_for("chat:message")
    assert message["content"] == "abc\nd"
    assert message["replyTo"] == {"id": "msg-1", "senderNickname": "Ann", "content": "yes &amp;"}

    await bob.emit("party:create", {"name": "Crew"})
    party = await bob.wait_for("party:joined")
    await bob.emit("party:message", {"content": "x", "replyTo": {**reply, "content": "q\x00"}})
    quoted = (await bob.wait_for("party:message"))["replyTo"]
    assert quoted == {"id": "msg-1", "senderNickname": "Ann", "content": "q"}
    await bob.emit(
        "party:message",
        {"partyId": party["partyId"], "content": "x", "replyTo": {**reply, "id": "<x>"}},
    )
    assert "replyTo" in (await bob.wait_for("party:error"))["message"]


async def test_app_nickname_and_avatar_follow_the_same_rules(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """The app's verify answer is relayed like a client's choice: its nickname is neutralised
    (an unusable one counts as none, so the join's nickname is used) and an invalid custom
    avatar becomes `default`."""
    space = space_id()
    watcher_token, guest_token = unique("guest"), unique("guest")
    app_standin.accept(watcher_token, unique("participant"), "Watcher")
    watcher = await bridge.connected(prod_server.url)
    await watcher.join(space, "Watcher", session_token=watcher_token)

    participant = unique("participant")
    app_standin.accept(guest_token, participant, DISGUISED, avatar=f"custom:{XSS}")
    guest = await bridge.connected(prod_server.url)
    await guest.join(space, "Ignored", session_token=guest_token)
    joined = await watcher.wait_for("player:joined")
    assert (joined["nickname"], joined["avatarColor"]) == (SHOWN, "default")
    assert "avatarConfig" not in joined

    other_token, other = unique("guest"), unique("participant")
    app_standin.accept(other_token, other, XSS)
    client = await bridge.connected(prod_server.url)
    await client.join(space, "Fallback", session_token=other_token)
    assert (await watcher.wait_for("player:joined"))["nickname"] == "Fallback"

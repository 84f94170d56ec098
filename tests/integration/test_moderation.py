"""Moderation driven by the official JavaScript client: mute, unmute, kick, ban, unban, message
deletion and announcements, with FlowSpace's payloads and order. Development mode (roles from the
join, SQLite history) and production with FlowSpace's PostgreSQL tables (roles and restrictions
from the database, rows as the app reads them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from support.chat_db import ChatWorld, seed_chat_world
from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn
from support.storage_world import database_fixture

ServerFactory = Callable[..., ServerProcess]


async def player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    role: str = "PARTICIPANT",
    *,
    player_id: str | None = None,
) -> JsClient:
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(
        space, nickname, session_token=dev_token(), playerId=player_id or unique("p"), role=role
    )
    return client


def before(client: JsClient, first: str, then: str) -> None:
    names = client.event_names()
    assert names.index(first) < names.index(then), names


@pytest.fixture
def dev(start_server: ServerFactory) -> ServerProcess:
    return start_server(NODE_ENV="development")


# -- development mode ---------------------------------------------------------------------------


async def test_mute_blocks_every_channel_until_unmuted(bridge: Bridge, dev: ServerProcess) -> None:
    """``nickname:<nick>`` as the hook sends it: the space gets the notice, then ``member:muted``;
    the muted player's chat, whispers, party messages and reactions are refused on their own
    channels naming the time left; ``admin:unmute`` gives them their voice back."""
    space = space_id()
    staff = await player(bridge, dev, space, "Mod", "STAFF")
    ann = await player(bridge, dev, space, "Ann")
    bob = await player(bridge, dev, space, "Bob")
    await ann.emit("party:create", {"name": "crew"})
    party = await ann.wait_for("party:joined")

    await staff.emit(
        "admin:mute", {"targetMemberId": "nickname:Ann", "duration": 5, "reason": "<b>spam</b>"}
    )
    notice = await bob.wait_for("chat:system", lambda m: "muted" in m["content"])
    assert notice["content"] == "Mod muted Ann for 5 minutes. Reason: spam"
    muted = await bob.wait_for("member:muted")
    before(bob, "chat:system", "member:muted")
    assert muted["memberId"] == ann.player_id and muted["nickname"] == "Ann"
    assert muted["mutedBy"] == staff.player_id and muted["mutedByNickname"] == "Mod"
    assert muted["duration"] == 5 and muted["reason"] == "spam"
    assert muted["mutedUntil"].endswith("Z")

    await ann.emit("chat:message", {"content": "hello"})
    refused = await ann.wait_for("chat:error")
    assert refused["code"] == "MUTED" and "another 5 minutes" in refused["message"]
    assert refused["retryAfter"] > 290
    await ann.emit("whisper:send", {"targetNickname": "Bob", "content": "psst"})
    assert (await ann.wait_for("whisper:error"))["code"] == "MUTED"
    await ann.emit("party:message", {"partyId": party["partyId"], "content": "hi"})
    assert (await ann.wait_for("party:error"))["code"] == "MUTED"
    await ann.emit("chat:message", {"content": "x", "type": "party", "partyId": party["partyId"]})
    assert (await ann.wait_for("party:error"))["code"] == "MUTED"
    await ann.emit("reaction:toggle", {"messageId": "m-1", "type": "heart"})
    assert (await ann.wait_for("reaction:error"))["code"] == "MUTED"
    await bob.expect_nothing("chat:message", 0.3)
    await bob.expect_nothing("reaction:updated", 0.1)
    await bob.expect_nothing("whisper:receive", 0.1)

    await staff.emit("admin:unmute", {"targetMemberId": "nickname:Ann"})
    assert (await bob.wait_for("chat:system", lambda m: "unmuted" in m["content"]))[
        "content"
    ] == "Mod unmuted Ann."
    unmuted = await bob.wait_for("member:unmuted")
    assert unmuted == {
        "memberId": ann.player_id,
        "nickname": "Ann",
        "unmutedBy": staff.player_id,
        "unmutedByNickname": "Mod",
    }
    await ann.emit("chat:message", {"content": "back"})
    assert (await bob.wait_for("chat:message"))["content"] == "back"


async def test_permanent_mute_survives_a_rejoin(bridge: Bridge, dev: ServerProcess) -> None:
    """A development session has no database row: its mute is kept under its player id, so the
    same player joining again is still muted (and says so without a time)."""
    space = space_id()
    staff = await player(bridge, dev, space, "Mod", "OWNER")
    pid = unique("p")
    ann = await player(bridge, dev, space, "Ann", player_id=pid)
    await staff.emit("admin:mute", {"targetMemberId": pid})  # a bare player id works too
    await staff.wait_for("member:muted")
    await ann.disconnect()
    again = await player(bridge, dev, space, "Ann", player_id=pid)
    await again.emit("chat:message", {"content": "am I free?"})
    refused = await again.wait_for("chat:error")
    assert refused["code"] == "MUTED" and "retryAfter" not in refused
    assert refused["message"] == "You are muted and cannot send messages."


async def test_refusals_by_role(bridge: Bridge, dev: ServerProcess) -> None:
    """A participant may not moderate; staff may not act on staff or the owner, nor on
    themselves; an unknown nickname is named back. Each on ``admin:error {action, message}``."""
    space = space_id()
    owner = await player(bridge, dev, space, "Boss", "OWNER")
    staff = await player(bridge, dev, space, "Mod", "STAFF")
    other = await player(bridge, dev, space, "Mod2", "STAFF")
    ann = await player(bridge, dev, space, "Ann")

    await ann.emit("admin:kick", {"targetMemberId": "nickname:Mod"})
    err = await ann.wait_for("admin:error")
    assert err["action"] == "kick" and err["code"] == "FORBIDDEN"
    for event in ("admin:announce", "admin:deleteMessage"):
        await ann.emit(event, {"content": "hi", "messageId": "m1"})
        assert (await ann.wait_for("admin:error"))["code"] == "FORBIDDEN"
    await staff.emit("admin:kick", {"targetMemberId": "nickname:Boss"})
    assert (await staff.wait_for("admin:error"))["message"].startswith("You cannot do this")
    await staff.emit("admin:mute", {"targetMemberId": "nickname:Mod2"})
    assert (await staff.wait_for("admin:error"))["code"] == "FORBIDDEN"
    await staff.emit("admin:mute", {"targetMemberId": "nickname:Mod"})
    assert (await staff.wait_for("admin:error"))["message"] == "You cannot do this to yourself."
    await staff.emit("admin:mute", {"targetMemberId": "nickname:Nobody"})
    absent = await staff.wait_for("admin:error")
    assert absent == {
        "action": "mute",
        "code": "NOT_FOUND",
        "message": "No player named Nobody is here.",
    }
    await staff.emit("admin:mute", {"targetMemberId": "nickname:Ann", "duration": -3})
    assert "admin:error" in staff.event_names()
    await owner.emit("admin:mute", {"targetMemberId": "nickname:Mod2"})  # the owner may
    await other.wait_for("member:muted")
    await owner.expect_nothing("admin:error", 0.2)


async def test_kick_closes_the_socket_and_ban_keeps_them_out(
    bridge: Bridge, dev: ServerProcess
) -> None:
    """Kick: notice, ``member:kicked {banned: false}``, the target's ``error KICKED`` and a
    disconnect; a kicked player may come back. Ban: ``error BANNED``, and a rejoin is refused
    with ``error {code: "BANNED"}`` until ``admin:unban``."""
    space = space_id()
    staff = await player(bridge, dev, space, "Mod", "STAFF")
    pid = unique("p")
    ann = await player(bridge, dev, space, "Ann", player_id=pid)

    await staff.emit("admin:kick", {"targetMemberId": "nickname:Ann", "reason": "rude"})
    kicked = await staff.wait_for("member:kicked")
    assert kicked == {
        "memberId": pid,
        "nickname": "Ann",
        "kickedBy": staff.player_id,
        "kickedByNickname": "Mod",
        "reason": "rude",
        "banned": False,
    }
    notice = staff.received("chat:system")[-1]
    assert notice["content"] == "Mod removed Ann from the space. Reason: rude"
    error = await ann.wait_for("error")
    assert error == {"message": "You were removed from this space.", "code": "KICKED"}
    await ann.wait_disconnect()
    await staff.wait_for("player:left", lambda p: p["id"] == pid)

    ann = await player(bridge, dev, space, "Ann", player_id=pid)  # a kick is not a ban
    await staff.emit("admin:kick", {"targetMemberId": "nickname:Ann", "ban": True})
    assert (await staff.wait_for("member:kicked"))["banned"] is True
    assert (await ann.wait_for("error"))["code"] == "BANNED"
    await ann.wait_disconnect()

    staff.consume("player:joined")
    again = await bridge.connected(dev.url, transports=["websocket"])
    await again.emit(
        "join:space",
        {"spaceId": space, "nickname": "Ann", "playerId": pid, "sessionToken": dev_token()},
    )
    refused = await again.wait_for("error")
    assert refused == {"message": "You are banned from this space.", "code": "BANNED"}
    await again.wait_disconnect()
    await staff.expect_nothing("player:joined", 0.2, lambda p: p["id"] == pid)

    await staff.emit("admin:unban", {"targetMemberId": pid})
    assert (await staff.wait_for("member:unbanned"))["memberId"] == pid
    await staff.emit("admin:unban", {"targetMemberId": pid})
    assert (await staff.wait_for("admin:error"))["action"] == "unban"
    await player(bridge, dev, space, "Ann", player_id=pid)
    await staff.wait_for("player:joined", lambda p: p["id"] == pid)


async def test_delete_message_of_this_space_only(bridge: Bridge, dev: ServerProcess) -> None:
    """By the database id ``chat:messageIdUpdate`` gave: ``chat:messageDeleted`` to the space;
    a message of another space is not found from here, and stays."""
    space, elsewhere = space_id(), space_id()
    staff = await player(bridge, dev, space, "Mod", "STAFF")
    ann = await player(bridge, dev, space, "Ann")
    outsider = await player(bridge, dev, elsewhere, "Out", "OWNER")
    await ann.emit("chat:message", {"content": "oops"})
    real = (await staff.wait_for("chat:messageIdUpdate"))["realId"]
    await outsider.emit("admin:deleteMessage", {"messageId": real})
    assert (await outsider.wait_for("admin:error"))["message"] == "That message was not found."
    await staff.emit("admin:deleteMessage", {"messageId": real})
    deleted = await ann.wait_for("chat:messageDeleted")
    assert deleted == {"messageId": real, "deletedBy": staff.player_id, "deletedByNickname": "Mod"}
    await staff.emit("admin:deleteMessage", {"messageId": real})
    assert (await staff.wait_for("admin:error"))["action"] == "deleteMessage"


async def test_announce_sanitised_and_limited(bridge: Bridge, dev: ServerProcess) -> None:
    """``space:announcement {id, content, senderId, senderNickname, timestamp}`` neutralised
    like chat; three per 30 s per socket; a muted staff member cannot announce."""
    space = space_id()
    owner = await player(bridge, dev, space, "Boss", "OWNER")
    staff = await player(bridge, dev, space, "Mod", "STAFF")
    await staff.emit("admin:announce", {"content": "  <script>x</script>Meeting & <b>now</b> "})
    data = await owner.wait_for("space:announcement")
    assert data["content"] == "xMeeting &amp; now"
    assert data["senderId"] == staff.player_id and data["senderNickname"] == "Mod"
    assert data["id"].startswith("announce-") and isinstance(data["timestamp"], int)
    for n in range(3):
        await staff.emit("admin:announce", {"content": f"note {n}"})
    limited = await staff.wait_for("admin:error")
    assert limited["code"] == "RATE_LIMITED" and limited["retryAfter"] >= 1
    assert len(owner.received("space:announcement")) <= 3

    quiet = await player(bridge, dev, space, "Mod2", "STAFF")
    await owner.emit("admin:mute", {"targetMemberId": "nickname:Mod2"})
    await owner.wait_for("member:muted")
    await quiet.emit("admin:announce", {"content": "can I?"})
    muted = await quiet.wait_for("admin:error", lambda e: e.get("code") == "MUTED")
    assert muted["action"] == "announce"


# -- production: FlowSpace's PostgreSQL ------------------------------------------------------------


world = database_fixture(seed_chat_world)


async def query(world: ChatWorld, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(world.dsn, timeout=5)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def user(
    bridge: Bridge, server: ServerProcess, app: AppStandIn, world: ChatWorld, uid: str, name: str
) -> JsClient:
    token = f"auth-{uid}"
    app.accept(token, f"user-{uid}", name, user_id=uid)
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(world.space, name, session_token=token)
    return client


async def guest(
    bridge: Bridge, server: ServerProcess, app: AppStandIn, world: ChatWorld
) -> JsClient:
    app.accept(world.guest_token, f"guest-{world.guest_id}", "Visitor")
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(world.space, "Visitor", session_token=world.guest_token)
    return client


async def test_postgres_rows_as_the_app_reads_them(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """The space's owner (``Space.ownerId``, role from the database) mutes a guest and bans a
    user: ``SpaceMember`` rows and ``SpaceEventLog`` rows as the app's routes write them; the
    ban refuses the user's next join; ``user:<id>`` lifts it; a deleted message is marked."""
    server = start_server(NODE_ENV=None, DATABASE_URL=world.dsn)
    owner = await user(bridge, server, app_standin, world, world.owner, "Owner")
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    visitor = await guest(bridge, server, app_standin, world)

    await alice.emit("admin:mute", {"targetMemberId": "nickname:Visitor"})
    assert (await alice.wait_for("admin:error"))["code"] == "FORBIDDEN"

    await owner.emit(
        "admin:mute", {"targetMemberId": "nickname:Visitor", "duration": 10, "reason": "flood"}
    )
    await alice.wait_for("member:muted")
    [row] = await query(
        world, 'SELECT * FROM "SpaceMember" WHERE "guestSessionId" = $1', world.guest_id
    )
    assert row["restriction"] == "MUTED" and row["restrictedBy"] == world.owner
    assert row["restrictedReason"] == "flood" and row["restrictedUntil"] is not None
    await visitor.emit("chat:message", {"content": "hi"})
    assert (await visitor.wait_for("chat:error"))["code"] == "MUTED"

    await alice.emit("chat:message", {"content": "delete me"})
    real = (await owner.wait_for("chat:messageIdUpdate"))["realId"]
    await owner.emit("admin:deleteMessage", {"messageId": real})
    await alice.wait_for("chat:messageDeleted")
    [msg] = await query(world, 'SELECT * FROM "ChatMessage" WHERE id = $1', real)
    assert msg["isDeleted"] and msg["deletedBy"] == world.owner and msg["deletedAt"] is not None

    await owner.emit(
        "admin:kick", {"targetMemberId": "nickname:Alice", "ban": True, "reason": "no"}
    )
    assert (await alice.wait_for("error"))["code"] == "BANNED"
    [banned] = await query(world, 'SELECT * FROM "SpaceMember" WHERE "userId" = $1', world.alice)
    assert banned["restriction"] == "BANNED" and banned["restrictedBy"] == world.owner

    again = await bridge.connected(server.url, transports=["websocket"])
    await again.emit(
        "join:space",
        {"spaceId": world.space, "nickname": "Alice", "sessionToken": f"auth-{world.alice}"},
    )
    assert (await again.wait_for("error"))["code"] == "BANNED"

    await owner.emit("admin:unban", {"targetMemberId": f"user:{world.alice}"})
    await owner.wait_for("member:unbanned")
    [lifted] = await query(world, 'SELECT * FROM "SpaceMember" WHERE "userId" = $1', world.alice)
    assert lifted["restriction"] == "NONE" and lifted["restrictedBy"] is None
    await user(bridge, server, app_standin, world, world.alice, "Alice")

    await asyncio.sleep(0.3)  # event log rows are written in the background
    logs = await query(
        world,
        'SELECT * FROM "SpaceEventLog" WHERE "spaceId" = $1 ORDER BY "createdAt"',
        world.space,
    )
    by_type = {r["eventType"]: r for r in logs}
    muted_log = by_type["MEMBER_MUTED"]
    assert muted_log["guestSessionId"] == world.guest_id and muted_log["userId"] is None
    payload = (
        json.loads(muted_log["payload"])
        if isinstance(muted_log["payload"], str)
        else muted_log["payload"]
    )
    assert (
        payload["mutedBy"] == world.owner
        and payload["duration"] == 10
        and payload["reason"] == "flood"
    )
    kicked_log = by_type["MEMBER_KICKED"]
    assert kicked_log["userId"] == world.alice
    kp = (
        json.loads(kicked_log["payload"])
        if isinstance(kicked_log["payload"], str)
        else kicked_log["payload"]
    )
    assert kp == {"kickedBy": world.owner, "reason": "no", "banned": True}
    deleted_log = by_type["MESSAGE_DELETED"]
    dp = (
        json.loads(deleted_log["payload"])
        if isinstance(deleted_log["payload"], str)
        else deleted_log["payload"]
    )
    assert deleted_log["userId"] == world.owner
    assert dp == {"messageId": real, "deletedBy": world.owner, "originalSenderId": world.alice}


async def test_postgres_mute_restored_at_join_and_lapses(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """A mute in the database (set by the app, say) holds at the join; when its time runs out
    the space gets ``member:unmuted`` from the system and the player a notice, and may speak."""
    await query(
        world,
        'INSERT INTO "SpaceMember" ("id", "spaceId", "guestSessionId", "role", "restriction",'
        " \"restrictedUntil\", \"updatedAt\") VALUES ($1, $2, $3, 'PARTICIPANT', 'MUTED',"
        " (now() at time zone 'utc') + interval '3 seconds', now()) RETURNING id",
        unique("m"),
        world.space,
        world.guest_id,
    )
    server = start_server(NODE_ENV=None, DATABASE_URL=world.dsn)
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    visitor = await guest(bridge, server, app_standin, world)
    await visitor.emit("chat:message", {"content": "hi"})
    refused = await visitor.wait_for("chat:error")
    assert refused["code"] == "MUTED" and 1 <= refused["retryAfter"] <= 3
    lapsed = await alice.wait_for("member:unmuted", timeout=6)
    assert lapsed["memberId"] == visitor.player_id and lapsed["unmutedBy"] == "system"
    notice = await visitor.wait_for("chat:system", lambda m: "no longer muted" in m["content"])
    assert notice["content"] == "Visitor is no longer muted."
    await visitor.emit("chat:message", {"content": "free"})
    assert (await alice.wait_for("chat:message"))["content"] == "free"

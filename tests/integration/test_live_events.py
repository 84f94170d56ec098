"""Reactions, the recording indicator, spotlights and map objects, end to end with the official
JavaScript client: the original's payloads, permissions by role, what a joiner receives and in
which order, and recordings and spotlights ending with their holder. Map objects and spotlight
grants on SQLite (the default storage) and on FlowSpace's PostgreSQL tables, read back as the app
reads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from spacesync.domain.auth import sign_user_token
from spacesync.storage.sqlite import SqliteStorage
from support.chat_db import ChatWorld, seed_chat_world
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.players import dev_player_ready
from support.server import ServerProcess
from support.standins import AppStandIn
from support.storage_world import database_fixture

ServerFactory = Callable[..., ServerProcess]
SECRET = "live-secret-" + "y" * 40
JOIN_ORDER = ["room:joined", "objects:sync", "recording:status", "spotlight:status"]


def join_events(client: JsClient) -> list[str]:
    """The events a joiner got from ``room:joined`` to ``proximity:status``, in order."""
    names = client.event_names()
    start = names.index("room:joined")
    end = names.index("proximity:status", start)
    return names[start : end + 1]


# -- reactions ---------------------------------------------------------------------------------


async def test_reaction_toggles_per_message_user_and_type(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """A second toggle removes what the first added; each player and type counts apart; the
    sender is not told (its client already toggled), the others are, with ``action``."""
    server = start_server(NODE_ENV="development")
    space = space_id()
    ann = await dev_player_ready(bridge, server, space, "Ann")
    bob = await dev_player_ready(bridge, server, space, "Bob")
    toggle = {"messageId": "msg-1", "type": "heart"}

    await ann.emit("reaction:toggle", toggle)
    added = await bob.wait_for("reaction:updated")
    assert added == {
        "messageId": "msg-1",
        "type": "heart",
        "userId": ann.player_id,
        "userNickname": "Ann",
        "action": "add",
    }
    await ann.emit("reaction:toggle", toggle)
    assert (await bob.wait_for("reaction:updated"))["action"] == "remove"
    await ann.emit("reaction:toggle", {"messageId": "msg-1", "type": "check"})
    assert (await bob.wait_for("reaction:updated"))["action"] == "add"
    await bob.emit("reaction:toggle", toggle)
    theirs = await ann.wait_for("reaction:updated")
    assert (theirs["userId"], theirs["action"]) == (bob.player_id, "add")
    await ann.expect_nothing("reaction:updated", within=0.3)

    for bad in (
        {"messageId": "msg-1", "type": "poop"},
        {"messageId": "<script>", "type": "heart"},
        {"type": "heart"},
        "heart",
    ):
        await ann.emit("reaction:toggle", bad)
        assert (await ann.wait_for("reaction:error"))["message"]
    await bob.expect_nothing("reaction:updated", within=0.3)


# -- recording ---------------------------------------------------------------------------------


async def test_recording_one_per_space_for_staff_with_join_order(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """STAFF or OWNER start a recording; a participant is refused; a second recording is
    refused naming the recorder; a joiner gets ``recording:status`` between ``room:joined`` and
    ``spotlight:status``; a participant cannot stop it, the recorder and staff can."""
    server = start_server(NODE_ENV="development")
    space = space_id()
    staff = await dev_player_ready(bridge, server, space, "Stella", role="STAFF")
    owner = await dev_player_ready(bridge, server, space, "Otto", role="OWNER")
    guest = await dev_player_ready(bridge, server, space, "Gus")

    await guest.emit("recording:start", {})
    assert await guest.wait_for("recording:error") == {
        "message": "Only staff and the owner can record."
    }
    await guest.emit("recording:stop", {})
    assert await guest.wait_for("recording:error") == {"message": "Nothing is being recorded."}

    started_at = time.time() * 1000
    await staff.emit("recording:start", {})
    for client in (staff, owner, guest):
        started = await client.wait_for("recording:started")
        assert started["isRecording"] is True
        assert started["recorderId"] == staff.player_id
        assert started["recorderNickname"] == "Stella"
        assert abs(started["startedAt"] - started_at) < 2000
    await owner.emit("recording:start")
    assert await owner.wait_for("recording:error") == {"message": "Stella is already recording."}

    late = await dev_player_ready(bridge, server, space, "Late")
    assert join_events(late) == [
        "room:joined",
        "recording:status",
        "spotlight:status",
        "proximity:status",
    ]
    assert await late.wait_for("recording:status") == started
    assert await late.wait_for("spotlight:status") == {"activeSpotlights": [], "hasGrant": False}

    await guest.emit("recording:stop", {})
    assert (await guest.wait_for("recording:error"))["message"].startswith("Only the person")
    await owner.emit("recording:stop", {})
    for client in (staff, owner, guest, late):
        stopped = await client.wait_for("recording:stopped")
        assert stopped == {**started, "isRecording": False}
    # the recorder may stop their own, once
    await owner.emit("recording:start", {})
    await staff.wait_for("recording:started", lambda r: r["recorderNickname"] == "Otto")
    await owner.emit("recording:stop", {})
    await staff.wait_for("recording:stopped", lambda r: r["recorderNickname"] == "Otto")
    quiet = await dev_player_ready(bridge, server, space, "Quiet")
    assert "recording:status" not in join_events(quiet)


@pytest.mark.parametrize("how", ["leave", "disconnect"])
async def test_recording_and_spotlight_end_when_the_holder_goes(
    bridge: Bridge, start_server: ServerFactory, tmp_path: Path, how: str
) -> None:
    """The recorder leaving or losing the connection ends the recording, and their spotlight
    goes off, both announced before ``player:left``; the grant's ``isActive`` is cleared."""
    path = str(tmp_path / "store.sqlite3")
    space, uid = space_id(), unique("cuser")
    storage = await SqliteStorage.open(path)
    try:
        await storage.set_role(space, uid, "STAFF")
        await storage.grant_spotlight(space, granted_by="admin", user_id=uid)
    finally:
        await storage.close()
    server = start_server(
        NODE_ENV=None, STORAGE_PATH=path, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    host = await bridge.connected(server.url, transports=["websocket"])
    await host.join(space, "Host", session_token=sign_user_token(SECRET, uid, 2**31 - 1))
    status = await host.wait_for("spotlight:status")
    assert status["hasGrant"] is True and status["grantId"]
    watcher = await bridge.connected(server.url, transports=["websocket"])
    await watcher.join(
        space, "Watcher", session_token=sign_user_token(SECRET, unique("cuser"), 2**31 - 1)
    )
    assert (await watcher.wait_for("spotlight:status"))["hasGrant"] is False

    await host.emit("recording:start", {})
    await watcher.wait_for("recording:started")
    await host.emit("spotlight:activate", {})
    activated = await watcher.wait_for("spotlight:activated")
    assert activated == {"participantId": host.player_id, "nickname": "Host", "isActive": True}

    if how == "leave":
        await host.emit("leave:space")
    else:
        await host.drop_transport()
    stopped = await watcher.wait_for("recording:stopped")
    assert stopped["recorderId"] == host.player_id
    off = await watcher.wait_for("spotlight:deactivated")
    assert off == {"participantId": host.player_id, "nickname": "Host", "isActive": False}
    await watcher.wait_for("player:left")
    names = watcher.event_names()
    assert names.index("recording:stopped") < names.index("player:left")
    assert names.index("spotlight:deactivated") < names.index("player:left")

    storage = await SqliteStorage.open(path)
    try:
        for _ in range(50):
            grant = await storage.spotlight_grant(space, user_id=uid)
            if grant is not None and not grant.is_active:
                break
            await asyncio.sleep(0.05)
        assert grant is not None and grant.is_active is False
    finally:
        await storage.close()


async def test_spotlight_needs_a_valid_grant(
    bridge: Bridge, start_server: ServerFactory, tmp_path: Path
) -> None:
    """No grant, an expired grant and a development session are refused on
    ``spotlight:error``; a joiner sees the spotlights in force; switching off twice is refused."""
    path = str(tmp_path / "store.sqlite3")
    space, holder, expired = space_id(), unique("cuser"), unique("cuser")
    storage = await SqliteStorage.open(path)
    try:
        soon = datetime.now(UTC) + timedelta(days=1)
        await storage.grant_spotlight(space, granted_by="admin", user_id=holder, expires_at=soon)
        await storage.grant_spotlight(
            space,
            granted_by="admin",
            user_id=expired,
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
    finally:
        await storage.close()
    server = start_server(
        NODE_ENV="development", STORAGE_PATH=path, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )

    async def user(uid: str, name: str) -> JsClient:
        client = await bridge.connected(server.url, transports=["websocket"])
        await client.join(space, name, session_token=sign_user_token(SECRET, uid, 2**31 - 1))
        return client

    lit = await user(holder, "Lit")
    status = await lit.wait_for("spotlight:status")
    assert status["hasGrant"] is True
    assert status["expiresAt"].endswith("Z") and status["expiresAt"][:10] == soon.date().isoformat()
    late = await user(expired, "Late")
    assert (await late.wait_for("spotlight:status"))["hasGrant"] is False
    devo = await dev_player_ready(bridge, server, space, "Devo", role="OWNER")
    for client in (late, devo):
        await client.emit("spotlight:activate", {})
        assert await client.wait_for("spotlight:error") == {
            "message": "You have no spotlight permission."
        }
        await client.emit("spotlight:deactivate")
        assert await client.wait_for("spotlight:error") == {
            "message": "Your spotlight is already off."
        }

    await lit.emit("spotlight:activate", {})
    await devo.wait_for("spotlight:activated")
    newcomer = await dev_player_ready(bridge, server, space, "Newcomer")
    seen = await newcomer.wait_for("spotlight:status")
    assert seen["activeSpotlights"] == [{"participantId": lit.player_id, "nickname": "Lit"}]
    await lit.emit("spotlight:deactivate", {})
    await newcomer.wait_for("spotlight:deactivated")
    await lit.emit("spotlight:deactivate", {})
    assert (await lit.wait_for("spotlight:error"))["message"] == "Your spotlight is already off."


# -- map objects on SQLite ---------------------------------------------------------------------


async def test_map_objects_placed_changed_removed_and_synced(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """STAFF place, change and remove objects (linked pairs included); participants are
    refused; a joiner gets ``objects:sync`` right after ``room:joined``; bad input is refused
    on ``object:error`` and changes nothing."""
    server = start_server(NODE_ENV="development")
    space = space_id()
    editor = await dev_player_ready(bridge, server, space, "Editor", role="STAFF")
    viewer = await dev_player_ready(bridge, server, space, "Viewer")
    assert "objects:sync" not in join_events(viewer)

    await viewer.emit("object:place", {"assetId": "chair", "position": {"x": 1, "y": 2}})
    assert await viewer.wait_for("object:error") == {
        "message": "You may not place objects in this space."
    }
    for event, payload in (
        ("object:update", {"objectId": "x"}),
        ("object:delete", {"objectId": "x"}),
    ):
        await viewer.emit(event, payload)
        assert (await viewer.wait_for("object:error"))["message"].startswith("You may not")

    portal = {"pairType": "portal", "pairRole": "entrance"}
    await editor.emit(
        "object:place",
        {"assetId": "portal", "position": {"x": 3, "y": 4}, "rotation": 90, "customData": portal},
    )
    placed = await viewer.wait_for("object:placed")
    first = placed["object"]
    assert placed["placedByNickname"] == "Editor"
    assert first["assetId"] == "portal" and first["position"] == {"x": 3, "y": 4}
    assert first["rotation"] == 90 and first["customData"] == portal
    assert first["placedBy"] == editor.player_id and "linkedObjectId" not in first
    assert first["placedAt"].endswith("Z")
    await editor.emit(
        "object:place",
        {"assetId": "portal", "position": {"x": 9, "y": 9}, "linkedObjectId": first["id"]},
    )
    second = (await viewer.wait_for("object:placed"))["object"]
    assert second["linkedObjectId"] == first["id"] and second["rotation"] == 0
    await editor.emit(
        "object:place",
        {"assetId": "portal", "position": {"x": 0, "y": 0}, "linkedObjectId": first["id"]},
    )
    assert (await editor.wait_for("object:error"))["message"].startswith("That link")

    await editor.emit(
        "object:update", {"objectId": first["id"], "position": {"x": 5, "y": 6}, "rotation": 180}
    )
    updated = await viewer.wait_for("object:updated")
    assert updated["updatedByNickname"] == "Editor"
    assert updated["object"]["position"] == {"x": 5, "y": 6}
    assert updated["object"]["rotation"] == 180 and updated["object"]["customData"] == portal
    await editor.emit("object:update", {"objectId": "cmissing0000", "rotation": 0})
    assert await editor.wait_for("object:error") == {"message": "That object was not found."}

    for bad in (
        {"assetId": "chair", "position": {"x": 1.5, "y": 0}},
        {"assetId": "chair", "position": {"x": 10**9, "y": 0}},
        {"assetId": "chair", "position": {"x": 1, "y": 0}, "rotation": 45},
        {"assetId": "chair", "position": {"x": 1, "y": 0}, "customData": {"a": "x" * 5000}},
        {"assetId": "chair", "position": {"x": 1, "y": 0}, "customData": ["not", "an", "object"]},
        {"assetId": "<b>", "position": {"x": 1, "y": 0}},
        {"assetId": "chair"},
    ):
        await editor.emit("object:place", bad)
        assert (await editor.wait_for("object:error"))["message"]
    await viewer.expect_nothing("object:placed", within=0.3)

    joiner = await dev_player_ready(bridge, server, space, "Joiner")
    assert join_events(joiner)[:2] == ["room:joined", "objects:sync"]
    synced = (await joiner.wait_for("objects:sync"))["objects"]
    assert [o["id"] for o in synced] == [first["id"], second["id"]]
    assert synced[0] == updated["object"]

    await editor.emit("object:delete", {"objectId": first["id"]})
    deleted = await viewer.wait_for("object:deleted")
    assert deleted == {
        "objectId": first["id"],
        "deletedBy": editor.player_id,
        "deletedByNickname": "Editor",
    }
    last = await dev_player_ready(bridge, server, space, "Last")
    remaining = (await last.wait_for("objects:sync"))["objects"]
    assert [o["id"] for o in remaining] == [second["id"]]
    assert "linkedObjectId" not in remaining[0]  # unlinked with the deletion
    await editor.emit("object:delete", {"objectId": first["id"]})
    assert await editor.wait_for("object:error") == {"message": "That object was not found."}


# -- PostgreSQL: FlowSpace's tables ------------------------------------------------------------


world = database_fixture(seed_chat_world)


async def pg_rows(world: ChatWorld, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(world.dsn, timeout=5)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def test_postgres_objects_and_spotlight_as_the_app_reads_them(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """The space's owner (OWNER from ``Space.ownerId``) places objects: ``MapObject`` rows with
    the original's columns, ``placedBy`` the user's id; a plain user is refused. A guest with a
    ``SpotlightGrant`` row switches the spotlight on (``isActive`` true in the row) and off by
    leaving (false again)."""
    await pg_rows(
        world,
        'INSERT INTO "SpotlightGrant" ("id", "spaceId", "guestSessionId", "grantedBy")'
        " VALUES ('cgrant0000000000000000001', $1, $2, $3) RETURNING \"id\"",
        world.space,
        world.guest_id,
        world.owner,
    )
    server = start_server(NODE_ENV=None, DATABASE_URL=world.dsn)

    async def verified(token: str, participant: str, name: str, uid: str | None) -> JsClient:
        app_standin.accept(token, participant, name, user_id=uid)
        client = await bridge.connected(server.url, transports=["websocket"])
        await client.join(world.space, name, session_token=token)
        await client.wait_for("proximity:status")
        return client

    owner = await verified(f"auth-{world.owner}", f"user-{world.owner}", "Owner", world.owner)
    alice = await verified(f"auth-{world.alice}", f"user-{world.alice}", "Alice", world.alice)
    await owner.emit(
        "object:place",
        {"assetId": "desk", "position": {"x": 7, "y": 8}, "customData": {"label": "Desk 1"}},
    )
    obj = (await alice.wait_for("object:placed"))["object"]
    await alice.emit("object:place", {"assetId": "desk", "position": {"x": 1, "y": 1}})
    assert (await alice.wait_for("object:error"))["message"].startswith("You may not")
    await owner.emit(
        "object:place",
        {"assetId": "portal", "position": {"x": 2, "y": 3}, "linkedObjectId": obj["id"]},
    )
    pair = (await alice.wait_for("object:placed"))["object"]

    found = await pg_rows(
        world, 'SELECT * FROM "MapObject" WHERE "spaceId" = $1 ORDER BY "createdAt"', world.space
    )
    assert [r["id"] for r in found] == [obj["id"], pair["id"]]
    row = found[0]
    assert (row["assetId"], row["positionX"], row["positionY"], row["rotation"]) == (
        "desk",
        7,
        8,
        0,
    )
    assert row["placedBy"] == world.owner and row["placedByType"] == "USER"
    assert row["customData"] in ({"label": "Desk 1"}, '{"label": "Desk 1"}')
    assert found[1]["linkedObjectId"] == obj["id"]
    assert obj["placedAt"] == row["createdAt"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    await owner.emit("object:delete", {"objectId": obj["id"]})
    await alice.wait_for("object:deleted")
    found = await pg_rows(world, 'SELECT * FROM "MapObject" WHERE "spaceId" = $1', world.space)
    assert [(r["id"], r["linkedObjectId"]) for r in found] == [(pair["id"], None)]

    visitor = await verified(world.guest_token, f"guest-{world.guest_id}", "Visitor", None)
    assert join_events(visitor)[:2] == ["room:joined", "objects:sync"]
    status = await visitor.wait_for("spotlight:status")
    assert status["hasGrant"] is True and status["grantId"] == "cgrant0000000000000000001"
    assert "expiresAt" not in status
    await visitor.emit("spotlight:activate", {})
    await alice.wait_for("spotlight:activated")
    grant = await pg_rows(world, 'SELECT "isActive" FROM "SpotlightGrant"')
    assert grant == [{"isActive": True}]
    await visitor.emit("leave:space")
    await alice.wait_for("spotlight:deactivated")
    for _ in range(50):
        grant = await pg_rows(world, 'SELECT "isActive" FROM "SpotlightGrant"')
        if grant == [{"isActive": False}]:
            break
        await asyncio.sleep(0.05)
    assert grant == [{"isActive": False}]

    await alice.emit("recording:start", {})
    assert (await alice.wait_for("recording:error"))["message"].startswith("Only staff")
    await owner.emit("recording:start", {})
    assert (await alice.wait_for("recording:started"))["recorderNickname"] == "Owner"

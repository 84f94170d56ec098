"""The storage port's contract, run against both adapters (SQLite file, FlowSpace PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from spacesync.storage import (
    InvalidLink,
    NewMessage,
    Restriction,
    Storage,
    StorageError,
)
from spacesync.storage.base import to_ms
from support.storage_world import World

CUID = re.compile(r"^c[0-9a-z]{24}$")


def near_now(value: datetime, slack: float = 5.0) -> bool:
    return value.tzinfo is not None and abs((datetime.now(UTC) - value).total_seconds()) < slack


# -- identity and roles -------------------------------------------------------------------------


async def test_users_and_super_admins(storage: Storage, world: World) -> None:
    assert await storage.user_exists(world.owner)
    assert not await storage.user_exists("user-nobody")
    assert await storage.is_super_admin(world.admin)
    assert not await storage.is_super_admin(world.owner)
    assert not await storage.is_super_admin("user-nobody")


async def test_space_owner(storage: Storage, world: World) -> None:
    assert await storage.space_owner(world.space) == world.owner
    assert await storage.space_owner(world.other_space) == world.player
    assert await storage.space_owner("space-none") is None


async def test_roles_follow_the_apps_precedence(storage: Storage, world: World) -> None:
    """Super admin is OWNER anywhere; a member row's role; the space's owner; else nothing."""
    await storage.set_role(world.space, world.staff, "STAFF")
    assert await storage.effective_role(world.space, world.admin) == "OWNER"
    assert await storage.effective_role(world.other_space, world.admin) == "OWNER"
    assert await storage.effective_role(world.space, world.owner) == "OWNER"
    assert await storage.effective_role(world.space, world.staff) == "STAFF"
    assert await storage.effective_role(world.space, world.player) is None
    assert await storage.member_role(world.space, user_id=world.staff) == "STAFF"
    assert await storage.member_role(world.space, user_id=world.player) is None
    assert await storage.member_role(world.space, guest_session_id=world.guest) is None


async def test_set_role_upserts_one_member_row(storage: Storage, world: World) -> None:
    first = await storage.set_role(world.space, world.staff, "STAFF")
    second = await storage.set_role(world.space, world.staff, "PARTICIPANT")
    assert first.id == second.id
    assert CUID.match(first.id)
    assert second.role == "PARTICIPANT"
    assert second.updated_at >= first.updated_at
    assert near_now(second.created_at)
    rows = [m for m in await storage.list_members(world.space) if m.user_id == world.staff]
    assert len(rows) == 1


async def test_list_members_owner_first(storage: Storage, world: World) -> None:
    await storage.set_role(world.space, world.player, "PARTICIPANT")
    await storage.set_role(world.space, world.staff, "STAFF")
    members = await storage.list_members(world.space)
    assert [(m.user_id, m.role) for m in members] == [
        (world.owner, "OWNER"),
        (world.staff, "STAFF"),
        (world.player, "PARTICIPANT"),
    ]
    assert all(m.space_id == world.space and m.restriction == "NONE" for m in members)
    assert await storage.list_members("space-none") == []


async def test_bad_role_and_subject_are_refused(storage: Storage, world: World) -> None:
    with pytest.raises(ValueError, match="role"):
        await storage.set_role(world.space, world.staff, "ADMIN")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        await storage.member_role(world.space)
    with pytest.raises(ValueError, match="exactly one"):
        await storage.member_role(world.space, user_id=world.staff, guest_session_id=world.guest)


async def test_guest_session_id_is_stable(storage: Storage, world: World) -> None:
    assert await storage.guest_session_id(world.space, world.guest_token) == world.guest
    assert await storage.guest_session_id(world.space, world.guest_token) == world.guest


# -- moderation ---------------------------------------------------------------------------------


async def test_no_restriction(storage: Storage, world: World) -> None:
    assert await storage.get_restriction(world.space, user_id=world.player) is None
    assert await storage.get_restriction(world.space, user_id=world.owner) is None


async def test_timed_mute(storage: Storage, world: World) -> None:
    until = datetime.now(UTC) + timedelta(minutes=10)
    await storage.set_restriction(
        world.space, "MUTED", user_id=world.player, until=until, by=world.owner, reason="spam"
    )
    assert await storage.get_restriction(world.space, user_id=world.player) == Restriction(
        "MUTED", to_ms(until), world.owner, "spam"
    )
    # the member row was created for it, as a participant
    assert await storage.member_role(world.space, user_id=world.player) == "PARTICIPANT"
    # the same user elsewhere is not muted
    assert await storage.get_restriction(world.other_space, user_id=world.player) is None


async def test_permanent_mute_and_ban(storage: Storage, world: World) -> None:
    await storage.set_restriction(world.space, "MUTED", user_id=world.player, by=world.owner)
    assert await storage.get_restriction(world.space, user_id=world.player) == Restriction(
        "MUTED", None, world.owner, None
    )
    later = datetime.now(UTC) + timedelta(hours=1)
    await storage.set_restriction(
        world.space, "BANNED", user_id=world.player, until=later, by=world.owner, reason="abuse"
    )
    assert await storage.get_restriction(world.space, user_id=world.player) == Restriction(
        "BANNED", None, world.owner, "abuse"
    )


async def test_lapsed_mute_is_lifted_in_the_database(storage: Storage, world: World) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await storage.set_restriction(world.space, "MUTED", user_id=world.player, until=past, by="x")
    assert await storage.get_restriction(world.space, user_id=world.player) is None
    [row] = [m for m in await storage.list_members(world.space) if m.user_id == world.player]
    assert row.restriction == "NONE"
    assert row.restricted_until is None


async def test_lift_clears_and_creates_nothing(storage: Storage, world: World) -> None:
    await storage.set_restriction(world.space, "BANNED", user_id=world.player, by=world.owner)
    await storage.set_restriction(world.space, "NONE", user_id=world.player)
    assert await storage.get_restriction(world.space, user_id=world.player) is None
    before = await storage.list_members(world.space)
    await storage.set_restriction(world.space, "NONE", user_id=world.staff)
    assert await storage.list_members(world.space) == before
    with pytest.raises(ValueError, match="restriction"):
        await storage.set_restriction(world.space, "KICKED", user_id=world.player)  # type: ignore[arg-type]


async def test_guest_restriction(storage: Storage, world: World) -> None:
    await storage.set_restriction(
        world.space, "MUTED", guest_session_id=world.guest, by=world.owner, reason="caps"
    )
    found = await storage.get_restriction(world.space, guest_session_id=world.guest)
    assert found == Restriction("MUTED", None, world.owner, "caps")
    [row] = [m for m in await storage.list_members(world.space) if m.guest_session_id]
    assert row.guest_session_id == world.guest and row.user_id is None


# -- chat ---------------------------------------------------------------------------------------


def message(world: World, content: str, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "space_id": world.space,
        "sender_id": world.player,
        "sender_type": "USER",
        "sender_name": "Player",
        "content": content,
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def test_insert_messages_in_a_batch(storage: Storage, world: World) -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    ids = await storage.insert_messages(
        [
            message(world, "hello"),
            message(
                world,
                "psst",
                type="WHISPER",
                target_id=world.staff,
                sender_id=world.guest,
                sender_type="GUEST",
                sender_name="Visitor",
            ),
            message(world, "welcome", type="SYSTEM", sender_id=None, created_at=at),
        ]
    )
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(CUID.match(i) for i in ids)
    hello = await storage.get_message(world.space, ids[0])
    assert hello is not None
    assert (hello.content, hello.type, hello.sender_type, hello.target_id) == (
        "hello",
        "MESSAGE",
        "USER",
        None,
    )
    assert near_now(hello.created_at)
    assert not hello.is_deleted and hello.deleted_by is None and hello.deleted_at is None
    whisper = await storage.get_message(world.space, ids[1])
    assert whisper is not None
    assert (whisper.sender_id, whisper.sender_type, whisper.type, whisper.target_id) == (
        world.guest,
        "GUEST",
        "WHISPER",
        world.staff,
    )
    system = await storage.get_message(world.space, ids[2])
    assert system is not None
    assert system.sender_id is None
    assert system.created_at == at.replace(microsecond=678000)
    assert await storage.get_message(world.other_space, ids[0]) is None
    assert await storage.insert_messages([]) == []


async def test_a_bad_message_fails_the_batch_before_writing(storage: Storage, world: World) -> None:
    with pytest.raises(ValueError, match="type"):
        await storage.insert_messages([message(world, "ok"), message(world, "x", type="SHOUT")])
    assert await storage.recent_messages(world.space) == []


async def test_nul_characters_do_not_fail_a_batch(storage: Storage, world: World) -> None:
    [mid] = await storage.insert_messages([message(world, "a\x00b", sender_name="N\x00")])
    stored = await storage.get_message(world.space, mid)
    assert stored is not None and stored.content == "a\ufffdb" and stored.sender_name == "N\ufffd"


async def test_soft_delete(storage: Storage, world: World) -> None:
    [mid] = await storage.insert_messages([message(world, "oops")])
    assert not await storage.soft_delete_message(world.other_space, mid, world.owner)
    assert not await storage.soft_delete_message(world.space, "cnosuchmessage00000000000", "x")
    assert await storage.soft_delete_message(world.space, mid, world.owner)
    first = await storage.get_message(world.space, mid)
    assert first is not None and first.is_deleted and first.deleted_by == world.owner
    assert first.deleted_at is not None and near_now(first.deleted_at)
    # a second deletion changes nothing
    assert not await storage.soft_delete_message(world.space, mid, world.staff)
    again = await storage.get_message(world.space, mid)
    assert again == first


async def test_recent_messages_pages_oldest_first(storage: Storage, world: World) -> None:
    base = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    public = [message(world, f"m{i}", created_at=base + timedelta(seconds=i)) for i in range(6)]
    hidden = [
        message(world, "w", type="WHISPER", target_id=world.staff, created_at=base),
        message(world, "p", type="PARTY", target_id="party-1", created_at=base),
        message(world, "elsewhere", space_id=world.other_space, created_at=base),
    ]
    ids = await storage.insert_messages(public + hidden)
    announcement = message(world, "notice", type="ANNOUNCEMENT", created_at=base + timedelta(7))
    await storage.insert_messages([announcement])
    await storage.soft_delete_message(world.space, ids[5], world.owner)

    page = await storage.recent_messages(world.space, limit=3)
    assert [m.content for m in page] == ["m3", "m4", "notice"]
    older = await storage.recent_messages(world.space, limit=3, before=page[0].created_at)
    assert [m.content for m in older] == ["m0", "m1", "m2"]
    assert await storage.recent_messages(world.space, limit=3, before=older[0].created_at) == []
    assert await storage.recent_messages(world.space, limit=0) == []
    assert [m.content for m in await storage.recent_messages(world.other_space)] == ["elsewhere"]


# -- event log ----------------------------------------------------------------------------------


async def test_event_log(storage: Storage, world: World) -> None:
    first = await storage.log_event(
        world.space,
        "MEMBER_MUTED",
        user_id=world.player,
        payload={"mutedBy": world.owner, "duration": 10, "reason": None},
    )
    second = await storage.log_event(
        world.space, "MEMBER_KICKED", guest_session_id=world.guest, payload={"banned": True}
    )
    third = await storage.log_event(world.space, "MESSAGE_DELETED", user_id=world.owner)
    assert CUID.match(first) and len({first, second, third}) == 3
    events = await storage.list_events(world.space)
    by_id = {e.id: e for e in events}
    assert by_id[first].event_type == "MEMBER_MUTED"
    assert by_id[first].user_id == world.player and by_id[first].guest_session_id is None
    assert by_id[first].payload == {"mutedBy": world.owner, "duration": 10, "reason": None}
    assert by_id[second].guest_session_id == world.guest and by_id[second].payload == {
        "banned": True
    }
    assert by_id[third].payload is None
    assert all(near_now(e.created_at) for e in events)
    assert await storage.list_events(world.other_space) == []
    with pytest.raises(ValueError, match="event_type"):
        await storage.log_event(world.space, "MEMBER_HUGGED")


# -- map objects --------------------------------------------------------------------------------


async def test_place_and_list_objects(storage: Storage, world: World) -> None:
    chair = await storage.place_object(
        world.space, asset_id="chair", x=3, y=4, placed_by=world.owner, placed_by_type="USER"
    )
    portal = await storage.place_object(
        world.space,
        asset_id="portal",
        x=-1,
        y=20,
        rotation=270,
        custom_data={"pairType": "portal", "pairRole": "entrance", "n": [1, 2]},
        placed_by=world.guest,
        placed_by_type="GUEST",
    )
    assert CUID.match(chair.id) and chair.id != portal.id
    assert (chair.position_x, chair.position_y, chair.rotation) == (3, 4, 0)
    assert chair.custom_data is None and chair.linked_object_id is None
    assert near_now(chair.created_at) and chair.updated_at == chair.created_at
    assert portal.placed_by_type == "GUEST" and portal.custom_data["n"] == [1, 2]
    assert [o.id for o in await storage.list_objects(world.space)] == [chair.id, portal.id]
    assert await storage.list_objects(world.other_space) == []
    with pytest.raises(ValueError, match="rotation"):
        await storage.place_object(
            world.space, asset_id="x", x=0, y=0, rotation=45, placed_by="u", placed_by_type="USER"
        )


async def place(storage: Storage, world: World, asset: str, **kw: object) -> str:
    obj = await storage.place_object(
        str(kw.pop("space", world.space)),
        asset_id=asset,
        x=1,
        y=1,
        placed_by=world.owner,
        placed_by_type="USER",
        **kw,  # type: ignore[arg-type]
    )
    return obj.id


async def test_linked_objects(storage: Storage, world: World) -> None:
    entrance = await place(storage, world, "portal")
    exit_ = await place(storage, world, "portal", linked_object_id=entrance)
    [_, linked] = await storage.list_objects(world.space)
    assert linked.id == exit_ and linked.linked_object_id == entrance

    # a second object may not link to the same one, nor to itself, elsewhere or nowhere
    with pytest.raises(InvalidLink, match="already linked"):
        await place(storage, world, "portal", linked_object_id=entrance)
    elsewhere = await place(storage, world, "portal", space=world.other_space)
    with pytest.raises(InvalidLink, match="no object"):
        await place(storage, world, "portal", linked_object_id=elsewhere)
    with pytest.raises(InvalidLink, match="no object"):
        await place(storage, world, "portal", linked_object_id="cnosuchobject000000000000")
    with pytest.raises(InvalidLink, match="itself"):
        await storage.update_object(world.space, exit_, linked_object_id=exit_)
    assert len(await storage.list_objects(world.space)) == 2

    # deleting the linked-to object unlinks the other
    assert await storage.delete_object(world.space, entrance)
    [left] = await storage.list_objects(world.space)
    assert left.id == exit_ and left.linked_object_id is None
    assert left.updated_at >= left.created_at


async def test_update_object(storage: Storage, world: World) -> None:
    oid = await place(storage, world, "sign", custom_data={"text": "hi"})
    target = await place(storage, world, "portal")
    moved = await storage.update_object(world.space, oid, position=(7, 8), rotation=90)
    assert moved is not None
    assert (moved.position_x, moved.position_y, moved.rotation) == (7, 8, 90)
    assert moved.custom_data == {"text": "hi"}  # untouched
    assert moved.updated_at >= moved.created_at
    linked = await storage.update_object(
        world.space, oid, linked_object_id=target, custom_data={"text": "bye"}
    )
    assert linked is not None and linked.linked_object_id == target
    assert linked.custom_data == {"text": "bye"} and linked.position_x == 7
    # re-linking to the same target is not a conflict with itself
    again = await storage.update_object(world.space, oid, linked_object_id=target)
    assert again is not None and again.linked_object_id == target
    unlinked = await storage.update_object(world.space, oid, linked_object_id=None)
    assert unlinked is not None and unlinked.linked_object_id is None
    cleared = await storage.update_object(world.space, oid, custom_data=None)
    assert cleared is not None and cleared.custom_data is None
    assert await storage.update_object(world.other_space, oid, rotation=180) is None
    assert await storage.update_object(world.space, "cnosuchobject000000000000") is None


async def test_delete_object(storage: Storage, world: World) -> None:
    a = await place(storage, world, "a")
    b = await place(storage, world, "b", linked_object_id=a)
    assert not await storage.delete_object(world.other_space, b)
    assert await storage.delete_object(world.space, b)
    assert not await storage.delete_object(world.space, b)
    [left] = await storage.list_objects(world.space)
    assert left.id == a
    # the freed object can be linked to again
    c = await place(storage, world, "c", linked_object_id=a)
    assert c


# -- spotlight ----------------------------------------------------------------------------------


async def test_spotlight_grants(storage: Storage, world: World) -> None:
    assert await storage.spotlight_grant(world.space, user_id=world.player) is None
    assert not await storage.active_spotlight_grant(world.space, user_id=world.player)
    assert not await storage.set_spotlight_active(world.space, True, user_id=world.player)

    grant = await storage.grant_spotlight(world.space, granted_by=world.owner, user_id=world.player)
    assert CUID.match(grant.id) and grant.expires_at is None and not grant.is_active
    assert grant.granted_by == world.owner and near_now(grant.granted_at)
    assert await storage.active_spotlight_grant(world.space, user_id=world.player)
    assert not await storage.active_spotlight_grant(world.other_space, user_id=world.player)

    assert await storage.set_spotlight_active(world.space, True, user_id=world.player)
    on = await storage.spotlight_grant(world.space, user_id=world.player)
    assert on is not None and on.is_active and on.id == grant.id

    until = datetime.now(UTC) + timedelta(minutes=30)
    renewed = await storage.grant_spotlight(
        world.space, granted_by=world.admin, user_id=world.player, expires_at=until
    )
    assert renewed.id == grant.id and renewed.is_active
    assert renewed.expires_at == to_ms(until) and renewed.granted_by == world.admin

    assert await storage.revoke_spotlight(world.space, user_id=world.player)
    assert not await storage.revoke_spotlight(world.space, user_id=world.player)
    assert not await storage.active_spotlight_grant(world.space, user_id=world.player)


async def test_expired_spotlight_grant(storage: Storage, world: World) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await storage.grant_spotlight(
        world.space, granted_by=world.owner, guest_session_id=world.guest, expires_at=past
    )
    assert await storage.spotlight_grant(world.space, guest_session_id=world.guest) is None
    assert not await storage.active_spotlight_grant(world.space, guest_session_id=world.guest)
    assert not await storage.set_spotlight_active(world.space, True, guest_session_id=world.guest)
    # a revocation still removes the expired row
    assert await storage.revoke_spotlight(world.space, guest_session_id=world.guest)


# -- health -------------------------------------------------------------------------------------


async def test_ping_and_close(storage: Storage, world: World) -> None:
    await storage.ping()
    assert storage.kind == world.kind
    await storage.close()
    with pytest.raises(StorageError):
        await storage.ping()

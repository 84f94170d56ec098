"""PostgreSQL adapter: what the app reads back from its own tables, the schema check, and how
quickly a down, hanging or locked database gives up."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from spacesync.config import load_settings
from spacesync.storage import (
    NewMessage,
    SchemaError,
    StorageError,
    StorageUnavailable,
    open_storage,
)
from spacesync.storage.postgres import PostgresStorage, split_dsn
from support.storage_world import (
    World,
    create_database,
    drop_database,
    dsn_for,
    seed_postgres,
)

CUID = re.compile(r"^c[0-9a-z]{24}$")


@pytest.fixture
async def seeded(
    pg_database: str, pg_conn: asyncpg.Connection
) -> AsyncIterator[tuple[World, PostgresStorage, asyncpg.Connection]]:
    world = World(kind="postgres")
    await seed_postgres(pg_conn, world)
    storage = await PostgresStorage.open(pg_database)
    try:
        yield world, storage, pg_conn
    finally:
        await storage.close()


async def utc_now_in_db(conn: asyncpg.Connection) -> datetime:
    """The database's idea of now, in UTC, as the naive value a timestamp(3) column holds."""
    return await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::timestamp(3)")


# -- rows as the app reads them -----------------------------------------------------------------


async def test_chat_rows_as_the_app_reads_them(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, conn = seeded
    assert await conn.fetchval("SHOW timezone") == "Asia/Seoul"
    ids = await storage.insert_messages(
        [
            NewMessage(world.space, world.player, "USER", "Player", "hi"),
            NewMessage(world.space, world.guest, "GUEST", "Visitor", "psst", "WHISPER", "u-x"),
        ]
    )
    await storage.soft_delete_message(world.space, ids[0], world.owner)
    rows = await conn.fetch(
        'SELECT "id", "senderId", "senderType"::text AS st, "type"::text AS ty, "targetId",'
        ' "isDeleted", "deletedBy", "deletedAt", "createdAt" FROM "ChatMessage"'
        ' ORDER BY "senderType"'
    )
    now = await utc_now_in_db(conn)
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == set(ids) and all(CUID.match(i) for i in ids)
    user_row, guest_row = by_id[ids[0]], by_id[ids[1]]
    assert (user_row["st"], user_row["ty"], user_row["isDeleted"]) == ("USER", "MESSAGE", True)
    assert user_row["deletedBy"] == world.owner
    assert abs((now - user_row["deletedAt"]).total_seconds()) < 5
    assert (guest_row["senderId"], guest_row["st"], guest_row["ty"]) == (
        world.guest,
        "GUEST",
        "WHISPER",
    )
    assert guest_row["targetId"] == "u-x" and guest_row["isDeleted"] is False
    assert guest_row["deletedBy"] is None and guest_row["deletedAt"] is None
    # written in UTC although the database's time zone is nine hours ahead
    assert abs((now - guest_row["createdAt"]).total_seconds()) < 5


async def test_member_rows_as_the_app_reads_them(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, conn = seeded
    await storage.set_role(world.space, world.staff, "STAFF")
    until = datetime.now(UTC) + timedelta(minutes=5)
    await storage.set_restriction(
        world.space, "MUTED", guest_session_id=world.guest, until=until, by=world.owner, reason="r"
    )
    rows = await conn.fetch(
        'SELECT "id", "userId", "guestSessionId", "role"::text AS role,'
        ' "restriction"::text AS restriction, "restrictedUntil", "restrictedBy",'
        ' "restrictedReason", "createdAt", "updatedAt" FROM "SpaceMember"'
        ' WHERE "spaceId" = $1 AND "id" <> \'cmemberowner0000000000001\'',
        world.space,
    )
    now = await utc_now_in_db(conn)
    by_subject = {r["userId"] or r["guestSessionId"]: r for r in rows}
    staff, guest = by_subject[world.staff], by_subject[world.guest]
    assert CUID.match(staff["id"]) and CUID.match(guest["id"]) and staff["id"] != guest["id"]
    assert (staff["role"], staff["restriction"]) == ("STAFF", "NONE")
    assert (guest["role"], guest["restriction"], guest["userId"]) == ("PARTICIPANT", "MUTED", None)
    assert guest["restrictedUntil"] == until.astimezone(UTC).replace(
        tzinfo=None, microsecond=until.microsecond // 1000 * 1000
    )
    assert (guest["restrictedBy"], guest["restrictedReason"]) == (world.owner, "r")
    for row in (staff, guest):
        assert abs((now - row["updatedAt"]).total_seconds()) < 5
        assert abs((now - row["createdAt"]).total_seconds()) < 5

    # the app's own row keeps its id; an update moves its updatedAt
    await conn.execute(
        'UPDATE "SpaceMember" SET "updatedAt" = \'2020-01-01\' WHERE "userId" = $1', world.owner
    )
    member = await storage.set_role(world.space, world.owner, "STAFF")
    assert member.id == "cmemberowner0000000000001"
    assert abs((datetime.now(UTC) - member.updated_at).total_seconds()) < 5


async def test_object_event_and_grant_rows(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, conn = seeded
    a = await storage.place_object(
        world.space,
        asset_id="portal",
        x=1,
        y=2,
        custom_data={"pairType": "portal"},
        placed_by=world.guest,
        placed_by_type="GUEST",
    )
    await storage.place_object(
        world.space,
        asset_id="portal",
        x=5,
        y=6,
        linked_object_id=a.id,
        placed_by=world.owner,
        placed_by_type="USER",
    )
    row = await conn.fetchrow(
        'SELECT "placedByType"::text AS t, jsonb_typeof("customData") AS j,'
        ' "customData"->>\'pairType\' AS pair, "updatedAt" FROM "MapObject" WHERE "id" = $1',
        a.id,
    )
    assert (row["t"], row["j"], row["pair"]) == ("GUEST", "object", "portal")
    assert row["updatedAt"] is not None

    await storage.log_event(
        world.space, "MESSAGE_DELETED", user_id=world.owner, payload={"messageId": "m1"}
    )
    event = await conn.fetchrow(
        'SELECT "id", "eventType"::text AS t, "payload"->>\'messageId\' AS mid,'
        ' "participantId" FROM "SpaceEventLog"'
    )
    assert CUID.match(event["id"]) and event["t"] == "MESSAGE_DELETED" and event["mid"] == "m1"
    assert event["participantId"] is None

    # a grant the app made (isActive false, no expiry) is found, and the flag switches
    await conn.execute(
        'INSERT INTO "SpotlightGrant" ("id", "spaceId", "userId", "grantedBy")'
        " VALUES ('cgrant0000000000000000001', $1, $2, $3)",
        world.space,
        world.player,
        world.owner,
    )
    assert await storage.active_spotlight_grant(world.space, user_id=world.player)
    assert await storage.set_spotlight_active(world.space, True, user_id=world.player)
    assert await conn.fetchval('SELECT "isActive" FROM "SpotlightGrant"') is True


async def test_guest_session_lookup(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, _ = seeded
    assert await storage.guest_session_id(world.space, world.guest_token) == world.guest
    assert await storage.guest_session_id(world.other_space, world.guest_token) is None
    assert await storage.guest_session_id(world.space, "guest-unknown") is None


async def test_a_database_error_fails_the_whole_batch(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, conn = seeded
    with pytest.raises(StorageError) as caught:
        await storage.insert_messages(
            [
                NewMessage(world.space, world.player, "USER", "P", "kept?"),
                NewMessage("space-does-not-exist", world.player, "USER", "P", "fk"),
            ]
        )
    assert not isinstance(caught.value, StorageUnavailable)
    assert await conn.fetchval('SELECT count(*) FROM "ChatMessage"') == 0
    # the pool is still usable afterwards
    assert await storage.insert_messages([NewMessage(world.space, None, "USER", "P", "ok")])


# -- schema check -------------------------------------------------------------------------------


@pytest.fixture
def scratch_database() -> Iterator[list[str]]:
    """Names of extra databases a test creates; dropped when it ends."""
    names: list[str] = []
    yield names
    for name in names:
        asyncio.run(drop_database(name))


async def test_missing_table_and_column_are_named(
    pg_database: str, scratch_database: list[str]
) -> None:
    name = await create_database()
    scratch_database.append(name)
    conn = await asyncpg.connect(dsn_for(name))
    try:
        await conn.execute('DROP TABLE "SpotlightGrant"')
        await conn.execute('ALTER TABLE "ChatMessage" DROP COLUMN "deletedBy"')
        await conn.execute("ALTER TYPE \"SpaceEventType\" RENAME VALUE 'MEMBER_KICKED' TO 'KICK'")
    finally:
        await conn.close()
    started = time.monotonic()
    with pytest.raises(SchemaError) as caught:
        await PostgresStorage.open(dsn_for(name))
    assert time.monotonic() - started < 2
    assert caught.value.missing == [
        'column "ChatMessage"."deletedBy"',
        'table "SpotlightGrant"',
        'enum value "SpaceEventType".MEMBER_KICKED',
    ]
    assert 'table "SpotlightGrant"' in str(caught.value)


async def test_empty_database_is_refused(pg_database: str, scratch_database: list[str]) -> None:
    name = await create_database(load_schema=False)
    scratch_database.append(name)
    with pytest.raises(SchemaError) as caught:
        await PostgresStorage.open(dsn_for(name))
    assert 'table "ChatMessage"' in caught.value.missing
    assert 'enum type "SpaceRole"' in caught.value.missing


async def test_prisma_url_parameters(pg_database: str) -> None:
    """FlowSpace's DATABASE_URL is Prisma's: its own parameters must not reach the server."""
    url = pg_database + "?schema=public&pgbouncer=true&connection_limit=5&pool_timeout=10"
    dsn, options = split_dsn(url)
    assert dsn == pg_database
    assert options == {"server_settings": {"search_path": "public"}, "statement_cache_size": 0}
    storage = await PostgresStorage.open(url)
    try:
        await storage.ping()
    finally:
        await storage.close()


async def test_open_storage_chooses_postgres(pg_database: str) -> None:
    for url in (pg_database, pg_database.replace("postgresql://", "postgres://", 1)):
        storage = await open_storage(load_settings({"DATABASE_URL": url}))
        try:
            assert storage.kind == "postgres"
            await storage.ping()
        finally:
            await storage.close()


# -- failing fast -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_down_database_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await PostgresStorage.open(f"postgresql://postgres@127.0.0.1:{free_port()}/flowspace")
    assert time.monotonic() - started < 2


async def test_a_silent_server_times_out() -> None:
    """A server that accepts connections and never answers (a hung host) is given up on after
    the connect timeout, not waited for."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await PostgresStorage.open(
                f"postgresql://postgres@127.0.0.1:{port}/flowspace?sslmode=disable",
                connect_timeout=0.5,
            )
        assert time.monotonic() - started < 2
    finally:
        listener.close()


async def test_a_locked_table_gives_up_within_the_timeout(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection], pg_database: str
) -> None:
    world, _, conn = seeded
    storage = await PostgresStorage.open(pg_database, command_timeout=0.5, op_timeout=1.0)
    try:
        async with conn.transaction():
            await conn.execute('LOCK TABLE "ChatMessage" IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await storage.recent_messages(world.space)
            assert time.monotonic() - started < 1.5
        # once the lock is gone the same storage works again
        assert await storage.recent_messages(world.space) == []
    finally:
        await storage.close()


async def test_a_full_pool_does_not_queue_forever(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection], pg_database: str
) -> None:
    world, _, conn = seeded
    storage = await PostgresStorage.open(
        pg_database, max_connections=2, command_timeout=0.5, op_timeout=0.8
    )
    try:
        async with conn.transaction():
            await conn.execute('LOCK TABLE "ChatMessage" IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            results = await asyncio.gather(
                *(storage.recent_messages(world.space) for _ in range(6)), return_exceptions=True
            )
            assert all(isinstance(r, StorageUnavailable) for r in results)
            assert time.monotonic() - started < 1.5
    finally:
        await storage.close()


async def test_a_dropped_connection_is_replaced(
    seeded: tuple[World, PostgresStorage, asyncpg.Connection],
) -> None:
    world, storage, conn = seeded
    await storage.ping()
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    outcomes = []
    for _ in range(3):
        try:
            await storage.ping()
            outcomes.append("ok")
        except StorageUnavailable:
            outcomes.append("unavailable")
    assert outcomes[-1] == "ok"
    assert await storage.space_owner(world.space) == world.owner

"""Throwaway PostgreSQL databases with FlowSpace's tables, and the ids the storage tests use."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest

from spacesync.storage.sqlite import SqliteStorage

SCHEMA_SQL = (Path(__file__).parent.parent / "fixtures" / "flowspace_schema.sql").read_text()
ADMIN_DSN = os.environ.get("SPACESYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
FLOWSPACE_TABLES = (
    "SpotlightGrant",
    "ChatMessage",
    "MapObject",
    "SpaceMember",
    "SpaceEventLog",
    "GuestSession",
    "Space",
    "Template",
    "User",
)


def dsn_for(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(load_schema: bool = True) -> str:
    """A new empty database (FlowSpace's tables in it unless told otherwise); its name."""
    name = f"spacesync_test_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}"')
    await _admin(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Seoul'")
    if load_schema:
        conn = await asyncpg.connect(dsn_for(name), timeout=5)
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()
    return name


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_postgres() -> None:
    async def probe() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN} ({type(exc).__name__}: {exc}). The"
            " storage tests need it: start it (.ci/run does) or set SPACESYNC_TEST_PG.",
            pytrace=False,
        )


@contextmanager
def throwaway_database(load_schema: bool = True) -> Iterator[str]:
    """The name of a new database (see :func:`create_database`) for the ``with`` block, dropped
    after it. Fails the test when PostgreSQL is not reachable. Runs event loops of its own: not
    for use inside a coroutine."""
    check_postgres()
    name = asyncio.run(create_database(load_schema))
    try:
        yield name
    finally:
        asyncio.run(drop_database(name))


def database_fixture(
    seed: Callable[[str], Any], scope: Literal["function", "module", "session"] = "function"
) -> Any:
    """A fixture giving each test (or each module or session, by ``scope``) a throwaway
    database with FlowSpace's tables, dropped when done. It yields what ``seed`` returns for the
    database's name (awaited if it is a coroutine). Assign it to the fixture's name::

        world = database_fixture(seed_chat_world)
    """

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[Any]:
        with throwaway_database() as name:
            value = seed(name)
            yield asyncio.run(value) if inspect.iscoroutine(value) else value

    return fixture


@dataclass
class World:
    """Ids the contract tests use. ``owner`` owns ``space`` (and is its OWNER); ``admin`` is a
    super admin; ``staff`` and ``player`` are plain users; ``guest`` is the guest session id of
    ``guest_token`` in ``space``; ``other_space`` belongs to ``player``."""

    kind: str
    space: str = "space-a"
    other_space: str = "space-b"
    owner: str = "user-owner"
    admin: str = "user-admin"
    staff: str = "user-staff"
    player: str = "user-player"
    guest_token: str = "guest-token-1"
    guest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def seed_postgres(conn: asyncpg.Connection, world: World) -> None:
    """FlowSpace's rows as the app creates them (its ids, its updatedAt)."""
    for user in (world.owner, world.admin, world.staff, world.player):
        await conn.execute(
            'INSERT INTO "User" ("id", "email", "isSuperAdmin", "updatedAt")'
            " VALUES ($1, $2, $3, now())",
            user,
            f"{user}@example.test",
            user == world.admin,
        )
    await conn.execute(
        'INSERT INTO "Template" ("id", "key", "name", "assetsPath", "updatedAt")'
        " VALUES ('tpl-office', 'OFFICE', 'Office', '/maps/office', now())"
    )
    for space, owner in ((world.space, world.owner), (world.other_space, world.player)):
        await conn.execute(
            'INSERT INTO "Space" ("id", "name", "ownerId", "templateId", "inviteCode",'
            " \"updatedAt\") VALUES ($1, $1, $2, 'tpl-office', $3, now())",
            space,
            owner,
            f"invite-{space}",
        )
    world.guest = "cguestsession000000000001"
    await conn.execute(
        'INSERT INTO "GuestSession" ("id", "spaceId", "nickname", "sessionToken", "expiresAt")'
        " VALUES ($1, $2, 'Visitor', $3, now() + interval '1 day')",
        world.guest,
        world.space,
        world.guest_token,
    )
    await conn.execute(
        'INSERT INTO "SpaceMember" ("id", "spaceId", "userId", "role", "updatedAt")'
        " VALUES ('cmemberowner0000000000001', $1, $2, 'OWNER', now())",
        world.space,
        world.owner,
    )


async def seeded_postgres(name: str) -> World:
    """The database ``name`` seeded by :func:`seed_postgres`; its world."""
    world = World(kind="postgres")
    conn = await asyncpg.connect(dsn_for(name), timeout=5)
    try:
        await seed_postgres(conn, world)
    finally:
        await conn.close()
    return world


async def seed_sqlite(storage: SqliteStorage, world: World) -> None:
    """The same facts, told to spacesync's own file the only way it learns them."""
    await storage.set_role(world.space, world.owner, "OWNER")
    await storage.set_role(world.other_space, world.player, "OWNER")
    await storage.set_super_admin(world.admin, True)
    await storage.set_role(world.other_space, world.staff, "PARTICIPANT")
    guest = await storage.guest_session_id(world.space, world.guest_token)
    assert guest is not None
    world.guest = guest


async def empty_postgres(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=5)
    await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in FLOWSPACE_TABLES) + " CASCADE")
    return conn

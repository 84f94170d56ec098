"""Real databases for the storage tests: a SQLite file per test, and a throwaway PostgreSQL
database per test run holding FlowSpace's tables (``tests/fixtures/flowspace_schema.sql``).

PostgreSQL is expected on 127.0.0.1:5432 (user ``postgres``, trust authentication; override with
``SPACESYNC_TEST_PG``). When it is not reachable the PostgreSQL tests fail: a storage adapter
that is never run against its database is not tested. The test database runs in a time zone far
from UTC, so a time written in local time instead of UTC would show.

``storage`` runs each contract test once per adapter; ``world`` holds the users, spaces and
guest session the tests refer to, set up the way each adapter learns about them (FlowSpace's
own rows on PostgreSQL, the CLI's operations on SQLite).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from spacesync.storage import Storage
from spacesync.storage.postgres import PostgresStorage
from spacesync.storage.sqlite import SqliteStorage
from support.storage_world import (
    World,
    database_fixture,
    dsn_for,
    empty_postgres,
    seed_postgres,
    seed_sqlite,
)

# The DSN of this run's throwaway FlowSpace database (dropped at the end).
pg_database = database_fixture(dsn_for, scope="session")


@pytest.fixture
async def pg_conn(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, emptied before the test."""
    conn = await empty_postgres(pg_database)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pg_dsn(kind: str, request: pytest.FixtureRequest) -> str | None:
    """The test database's DSN for a PostgreSQL run (created on first use), else ``None``."""
    return request.getfixturevalue("pg_database") if kind == "postgres" else None


@pytest.fixture
async def world_and_storage(
    kind: str, pg_dsn: str | None, tmp_path: Path
) -> AsyncIterator[tuple[World, Storage]]:
    world = World(kind=kind)
    storage: Storage
    conn: asyncpg.Connection | None = None
    if pg_dsn is None:
        sqlite = await SqliteStorage.open(str(tmp_path / "store" / "spacesync.sqlite3"))
        await seed_sqlite(sqlite, world)
        storage = sqlite
    else:
        conn = await empty_postgres(pg_dsn)
        await seed_postgres(conn, world)
        world.extra["conn"] = conn
        storage = await PostgresStorage.open(pg_dsn)
    try:
        yield world, storage
    finally:
        await storage.close()
        if conn is not None:
            await conn.close()


@pytest.fixture
def world(world_and_storage: tuple[World, Storage]) -> World:
    return world_and_storage[0]


@pytest.fixture
def storage(world_and_storage: tuple[World, Storage]) -> Storage:
    return world_and_storage[1]

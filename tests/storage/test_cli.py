"""``spacesync members …`` and ``spacesync spotlight …`` as subprocesses, on SQLite and on
FlowSpace's PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from spacesync.storage.sqlite import SqliteStorage
from support.storage_world import World, create_database, drop_database, dsn_for, seed_postgres

CUID = re.compile(r"^c[0-9a-z]{24}$")


@dataclass
class Result:
    code: int
    out: list[Any]
    err: list[Any]
    seconds: float


async def cli(*args: str, **env: str) -> Result:
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_PATH")}
    full.update(env)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacesync",
        *args,
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    seconds = time.monotonic() - started
    assert proc.returncode is not None

    def lines(raw: bytes, strict: bool) -> list[Any]:
        parsed = []
        for line in raw.decode().splitlines():
            try:
                parsed.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                if strict:
                    raise AssertionError(f"not a JSON line: {line!r}") from None
                parsed.append(line)
        return parsed

    # stdout always JSON; stderr JSON too except argparse's usage text
    return Result(proc.returncode, lines(out, True), lines(err, proc.returncode != 2), seconds)


# -- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    return {"STORAGE_PATH": str(tmp_path / "cli" / "store.sqlite3")}


async def test_members_on_sqlite(store: dict[str, str]) -> None:
    done = await cli("members", "set-role", "space-1", "alice", "staff", **store)
    assert done.code == 0, done.err
    [answer] = done.out
    assert answer["role"] == "STAFF" and CUID.match(answer["memberId"])
    assert (answer["spaceId"], answer["userId"]) == ("space-1", "alice")
    assert (await cli("members", "set-role", "space-1", "bob", "OWNER", **store)).code == 0

    listed = await cli("members", "list", "space-1", **store)
    assert listed.code == 0
    [page] = listed.out
    assert [(m["userId"], m["role"]) for m in page["members"]] == [
        ("bob", "OWNER"),
        ("alice", "STAFF"),
    ]
    assert page["members"][0]["restriction"] == "NONE"

    # the server reads what the CLI wrote
    storage = await SqliteStorage.open(store["STORAGE_PATH"])
    try:
        assert await storage.effective_role("space-1", "alice") == "STAFF"
        assert await storage.space_owner("space-1") == "bob"
        await storage.set_restriction("space-1", "BANNED", user_id="carol", by="bob")
    finally:
        await storage.close()

    unbanned = await cli("members", "unban", "space-1", "carol", **store)
    assert unbanned.code == 0
    assert unbanned.out == [
        {"spaceId": "space-1", "userId": "carol", "restriction": "NONE", "previous": "BANNED"}
    ]
    again = await cli("members", "unban", "space-1", "carol", **store)
    assert again.out[0]["previous"] is None


async def test_spotlight_on_sqlite(store: dict[str, str]) -> None:
    granted = await cli("spotlight", "grant", "space-1", "dave", "--minutes", "30", **store)
    assert granted.code == 0, granted.err
    [answer] = granted.out
    expires = datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(minutes=30))) < timedelta(seconds=30)
    assert answer["grantedBy"] == "spacesync-cli" and CUID.match(answer["grantId"])

    forever = await cli("spotlight", "grant", "space-1", "erin", "--by", "admin-1", **store)
    assert forever.out[0]["expiresAt"] is None and forever.out[0]["grantedBy"] == "admin-1"

    storage = await SqliteStorage.open(store["STORAGE_PATH"])
    try:
        assert await storage.active_spotlight_grant("space-1", user_id="dave")
        assert await storage.active_spotlight_grant("space-1", user_id="erin")
    finally:
        await storage.close()

    revoked = await cli("spotlight", "revoke", "space-1", "dave", **store)
    assert revoked.out == [{"spaceId": "space-1", "userId": "dave", "revoked": True}]
    revoked = await cli("spotlight", "revoke", "space-1", "dave", **store)
    assert revoked.out[0]["revoked"] is False


async def test_usage_errors_exit_2(store: dict[str, str]) -> None:
    for args in (
        ("members", "set-role", "space-1", "alice", "ADMIN"),
        ("members",),
        ("spotlight", "grant", "space-1", "alice", "--minutes", "-5"),
        ("nonsense",),
    ):
        result = await cli(*args, **store)
        assert result.code == 2, args
        assert result.out == []
        assert any("usage:" in str(line) for line in result.err)


async def test_bad_configuration_exits_2_with_one_json_line() -> None:
    result = await cli("members", "list", "s", DATABASE_URL="mysql://u:hunter2@db/x")
    assert result.code == 2 and result.out == []
    [line] = result.err
    assert line["level"] == "error" and "DATABASE_URL" in line["message"]
    assert "hunter2" not in str(line)


async def test_a_file_of_a_newer_version_exits_2(store: dict[str, str]) -> None:
    assert (await cli("members", "list", "s", **store)).code == 0
    with sqlite3.connect(store["STORAGE_PATH"]) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (99)")
    result = await cli("members", "list", "s", **store)
    assert result.code == 2 and result.out == []
    [line] = result.err
    assert "newer spacesync" in line["message"]


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
async def flowspace(pg_database: str, pg_conn: asyncpg.Connection) -> World:
    world = World(kind="postgres")
    await seed_postgres(pg_conn, world)
    world.extra["conn"] = pg_conn
    world.extra["env"] = {"DATABASE_URL": pg_database + "?schema=public"}
    return world


async def test_members_on_postgres(flowspace: World) -> None:
    env, conn = flowspace.extra["env"], flowspace.extra["conn"]
    done = await cli("members", "set-role", flowspace.space, flowspace.staff, "STAFF", **env)
    assert done.code == 0, done.err
    row = await conn.fetchrow(
        'SELECT "id", "role"::text AS role, "updatedAt" FROM "SpaceMember" WHERE "userId" = $1',
        flowspace.staff,
    )
    assert row["role"] == "STAFF" and row["id"] == done.out[0]["memberId"]
    assert CUID.match(row["id"]) and row["updatedAt"] is not None

    listed = await cli("members", "list", flowspace.space, **env)
    assert [(m["userId"], m["role"]) for m in listed.out[0]["members"]] == [
        (flowspace.owner, "OWNER"),
        (flowspace.staff, "STAFF"),
    ]

    await conn.execute(
        'UPDATE "SpaceMember" SET "restriction" = \'BANNED\', "restrictedBy" = $2'
        ' WHERE "userId" = $1',
        flowspace.staff,
        flowspace.owner,
    )
    unbanned = await cli("members", "unban", flowspace.space, flowspace.staff, **env)
    assert unbanned.out[0]["previous"] == "BANNED"
    assert await conn.fetchval(
        'SELECT "restriction"::text FROM "SpaceMember" WHERE "userId" = $1', flowspace.staff
    ) == ("NONE")


async def test_unknown_user_or_space_on_postgres(flowspace: World) -> None:
    env = flowspace.extra["env"]
    result = await cli("members", "set-role", flowspace.space, "user-ghost", "STAFF", **env)
    assert result.code == 1 and result.out == []
    [line] = result.err
    assert "no user 'user-ghost'" in line["message"]
    result = await cli("spotlight", "grant", "space-ghost", flowspace.player, **env)
    assert result.code == 1 and "no space 'space-ghost'" in result.err[0]["message"]


async def test_spotlight_on_postgres(flowspace: World) -> None:
    env, conn = flowspace.extra["env"], flowspace.extra["conn"]
    granted = await cli(
        "spotlight", "grant", flowspace.space, flowspace.player, "--minutes", "5", **env
    )
    assert granted.code == 0, granted.err
    row = await conn.fetchrow('SELECT "id", "isActive", "expiresAt" FROM "SpotlightGrant"')
    assert row["id"] == granted.out[0]["grantId"] and row["isActive"] is False
    assert row["expiresAt"] is not None
    revoked = await cli("spotlight", "revoke", flowspace.space, flowspace.player, **env)
    assert revoked.out[0]["revoked"] is True
    assert await conn.fetchval('SELECT count(*) FROM "SpotlightGrant"') == 0


async def test_missing_schema_exits_2(pg_database: str) -> None:
    name = await create_database(load_schema=False)
    try:
        result = await cli("members", "list", "s", DATABASE_URL=dsn_for(name))
    finally:
        await drop_database(name)
    assert result.code == 2 and result.out == []
    [line] = result.err
    assert 'table "SpaceMember"' in line["message"]
    assert 'table "SpaceMember"' in line["context"]["missing"]


async def test_a_down_database_exits_1_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await cli(
        "members", "list", "s", DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/x"
    )
    assert result.code == 1 and result.out == []
    [line] = result.err
    assert "cannot connect" in line["message"]
    assert result.seconds < 5

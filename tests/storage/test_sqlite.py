"""SQLite adapter: migrations, WAL, a second process on the same file, guest tokens not kept."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from spacesync.config import load_settings
from spacesync.storage import NewMessage, SchemaError, StorageError, open_storage
from spacesync.storage.sqlite import SCHEMA_VERSION, SqliteStorage


async def test_migrations_create_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "store.sqlite3"
    storage = await SqliteStorage.open(str(path))
    assert await storage.schema_version() == SCHEMA_VERSION == 1
    await storage.set_role("s", "u", "STAFF")
    await storage.close()

    reopened = await SqliteStorage.open(str(path))
    try:
        assert await reopened.member_role("s", user_id="u") == "STAFF"
    finally:
        await reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "users",
        "guest_sessions",
        "members",
        "chat_messages",
        "event_log",
        "map_objects",
        "spotlight_grants",
    } <= tables


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    storage = await SqliteStorage.open(str(path))
    await storage.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError, match="newer spacesync"):
        await SqliteStorage.open(str(path))


async def test_constraints_hold_in_the_file(tmp_path: Path) -> None:
    """The CHECK constraints stand in for PostgreSQL's enum types."""
    storage = await SqliteStorage.open(str(tmp_path / "s.sqlite3"))
    await storage.close()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db, pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO members (id, space_id, user_id, role, created_at, updated_at)"
            " VALUES ('x', 's', 'u', 'ADMIN', 0, 0)"
        )


async def test_guest_tokens_are_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    storage = await SqliteStorage.open(str(path))
    try:
        token = "guest-secret-token-value"
        first = await storage.guest_session_id("space", token)
        assert first == await storage.guest_session_id("space", token)
        assert first != await storage.guest_session_id("other-space", token)
        assert first != await storage.guest_session_id("space", token + "x")
    finally:
        await storage.close()
    assert all(token.encode() not in content for content in _contents(tmp_path))


def _contents(directory: Path) -> list[bytes]:
    return [file.read_bytes() for file in directory.iterdir()]


async def test_another_process_sees_the_writes(tmp_path: Path) -> None:
    """The CLI opens the server's file while the server runs: both see each other's writes."""
    path = str(tmp_path / "s.sqlite3")
    server = await SqliteStorage.open(path)
    cli = await SqliteStorage.open(path)
    try:
        await cli.set_role("space", "alice", "STAFF")
        assert await server.member_role("space", user_id="alice") == "STAFF"
        await server.set_restriction("space", "BANNED", user_id="bob", by="alice")
        await cli.set_restriction("space", "NONE", user_id="bob")
        assert await server.get_restriction("space", user_id="bob") is None
    finally:
        await cli.close()
        await server.close()


async def test_queries_run_off_the_event_loop(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(str(tmp_path / "s.sqlite3"))
    seen: list[str] = []
    original = storage._call

    async def spy(work, **kw):  # type: ignore[no-untyped-def]
        def wrapped(db):  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            return work(db)

        return await original(wrapped, **kw)

    storage._call = spy  # type: ignore[method-assign]
    try:
        ids = await storage.insert_messages(
            [NewMessage("s", "u", "USER", "U", f"m{i}") for i in range(100)]
        )
        assert len(ids) == 100
        await asyncio.gather(*(storage.ping() for _ in range(10)))
    finally:
        await storage.close()
    assert seen and all(name.startswith("spacesync-sqlite") for name in seen)
    assert threading.current_thread().name not in seen


async def test_open_storage_defaults_to_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = await open_storage(load_settings({}))
    try:
        assert storage.kind == "sqlite"
        await storage.ping()
    finally:
        await storage.close()
    assert (tmp_path / ".spacesync" / "spacesync.sqlite3").is_file()

    custom = tmp_path / "elsewhere.sqlite3"
    storage = await open_storage(load_settings({"STORAGE_PATH": str(custom)}))
    await storage.close()
    assert custom.is_file()


async def test_an_unusable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError):
        await SqliteStorage.open(str(blocker / "store.sqlite3"))

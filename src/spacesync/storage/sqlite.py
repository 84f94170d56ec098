"""The storage port on a local SQLite file, for a spacesync without FlowSpace's database.

The schema is spacesync's own (plain snake_case names, ``CHECK`` constraints where PostgreSQL
has enum types, times as integer milliseconds since the epoch, JSON as text) and is brought up
to date at start by numbered migrations recorded in ``schema_version``; a file written by a
newer spacesync is refused rather than misread.

Why stdlib ``sqlite3`` in one worker thread rather than aiosqlite: SQLite serialises writers
anyway, so one connection used by one thread is the fastest arrangement and needs no locking of
our own; aiosqlite does exactly that internally (one thread per connection), so it would add a
dependency without adding anything. The event loop never runs a query itself: each operation is
one function shipped to the thread, so a batch of chat messages is one transaction and one
hop. The file is in write-ahead-log mode, so the CLI (another process) can read and write while
the server runs, and ``busy_timeout`` bounds how long either waits for the other's lock.

Where FlowSpace's database has tables spacesync cannot fill on its own here, the concepts are
kept small: a user "exists" once the CLI or a restriction has named it, the owner of a space is
its earliest OWNER member, and a guest's id is assigned on the first lookup of its token (only
the token's SHA-256 is kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..observability.timing import NOT_OBSERVED, Observer
from .base import (
    CHAT_RESTRICTIONS,
    PUBLIC_MESSAGE_TYPES,
    SENDER_TYPES,
    SPACE_EVENT_TYPES,
    SPACE_ROLES,
    UNSET,
    ChatRestriction,
    EventLogEntry,
    InvalidLink,
    MapObject,
    Member,
    NewMessage,
    Restriction,
    SchemaError,
    SenderType,
    SpaceRole,
    SpotlightGrant,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredMessage,
    _Unset,
    check_choice,
    check_message,
    check_position,
    clean_text,
    subject,
    utc_now,
)
from .ids import new_id

T = TypeVar("T")

BUSY_TIMEOUT_MS = 2000


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: everything
    (
        "CREATE TABLE users ("
        " id TEXT PRIMARY KEY,"
        " is_super_admin INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL)",
        "CREATE TABLE guest_sessions ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " token_sha256 TEXT NOT NULL,"
        " created_at INTEGER NOT NULL,"
        " UNIQUE (space_id, token_sha256))",
        "CREATE TABLE members ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " user_id TEXT,"
        " guest_session_id TEXT,"
        " display_name TEXT,"
        f" role TEXT NOT NULL DEFAULT 'PARTICIPANT' CHECK (role IN {_in(SPACE_ROLES)}),"
        " restriction TEXT NOT NULL DEFAULT 'NONE'"
        f"  CHECK (restriction IN {_in(CHAT_RESTRICTIONS)}),"
        " restricted_until INTEGER,"
        " restricted_by TEXT,"
        " restricted_reason TEXT,"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL,"
        " CHECK ((user_id IS NULL) <> (guest_session_id IS NULL)))",
        "CREATE UNIQUE INDEX members_space_user ON members (space_id, user_id)",
        "CREATE UNIQUE INDEX members_space_guest ON members (space_id, guest_session_id)",
        "CREATE TABLE chat_messages ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " sender_id TEXT,"
        f" sender_type TEXT NOT NULL CHECK (sender_type IN {_in(SENDER_TYPES)}),"
        " sender_name TEXT NOT NULL,"
        " content TEXT NOT NULL,"
        " type TEXT NOT NULL DEFAULT 'MESSAGE'"
        "  CHECK (type IN ('MESSAGE', 'WHISPER', 'PARTY', 'SYSTEM', 'ANNOUNCEMENT')),"
        " target_id TEXT,"
        " is_deleted INTEGER NOT NULL DEFAULT 0,"
        " deleted_by TEXT,"
        " deleted_at INTEGER,"
        " created_at INTEGER NOT NULL)",
        "CREATE INDEX chat_messages_space_created ON chat_messages (space_id, created_at)",
        "CREATE TABLE event_log ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " user_id TEXT,"
        " guest_session_id TEXT,"
        f" event_type TEXT NOT NULL CHECK (event_type IN {_in(SPACE_EVENT_TYPES)}),"
        " payload TEXT,"
        " created_at INTEGER NOT NULL)",
        "CREATE INDEX event_log_space_created ON event_log (space_id, created_at)",
        "CREATE TABLE map_objects ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " asset_id TEXT NOT NULL,"
        " position_x INTEGER NOT NULL,"
        " position_y INTEGER NOT NULL,"
        " rotation INTEGER NOT NULL DEFAULT 0,"
        " linked_object_id TEXT UNIQUE REFERENCES map_objects (id) ON DELETE SET NULL,"
        " custom_data TEXT,"
        " placed_by TEXT NOT NULL,"
        " placed_by_type TEXT NOT NULL DEFAULT 'USER'"
        f"  CHECK (placed_by_type IN {_in(SENDER_TYPES)}),"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL)",
        "CREATE INDEX map_objects_space ON map_objects (space_id, created_at)",
        "CREATE TABLE spotlight_grants ("
        " id TEXT PRIMARY KEY,"
        " space_id TEXT NOT NULL,"
        " user_id TEXT,"
        " guest_session_id TEXT,"
        " granted_by TEXT NOT NULL,"
        " granted_at INTEGER NOT NULL,"
        " expires_at INTEGER,"
        " is_active INTEGER NOT NULL DEFAULT 0,"
        " CHECK ((user_id IS NULL) <> (guest_session_id IS NULL)))",
        "CREATE UNIQUE INDEX spotlight_space_user ON spotlight_grants (space_id, user_id)",
        "CREATE UNIQUE INDEX spotlight_space_guest"
        " ON spotlight_grants (space_id, guest_session_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_SUBJECT_COLUMN = {"user": "user_id", "guest": "guest_session_id"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _ms(value: datetime | None) -> int | None:
    """Milliseconds since the epoch (a naive time is taken as UTC), exactly, no float."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MILLISECOND


def _time(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MILLISECOND


def _now_ms() -> int:
    ms = _ms(utc_now())
    assert ms is not None
    return ms


def _json_in(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _json_out(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _member(row: sqlite3.Row) -> Member:
    return Member(
        id=row["id"],
        space_id=row["space_id"],
        user_id=row["user_id"],
        guest_session_id=row["guest_session_id"],
        display_name=row["display_name"],
        role=row["role"],
        restriction=row["restriction"],
        restricted_until=_time(row["restricted_until"]),
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_time(row["updated_at"]),  # type: ignore[arg-type]
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        space_id=row["space_id"],
        sender_id=row["sender_id"],
        sender_type=row["sender_type"],
        sender_name=row["sender_name"],
        content=row["content"],
        type=row["type"],
        target_id=row["target_id"],
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        is_deleted=bool(row["is_deleted"]),
        deleted_by=row["deleted_by"],
        deleted_at=_time(row["deleted_at"]),
    )


def _object(row: sqlite3.Row) -> MapObject:
    return MapObject(
        id=row["id"],
        space_id=row["space_id"],
        asset_id=row["asset_id"],
        position_x=row["position_x"],
        position_y=row["position_y"],
        rotation=row["rotation"],
        linked_object_id=row["linked_object_id"],
        custom_data=_json_out(row["custom_data"]),
        placed_by=row["placed_by"],
        placed_by_type=row["placed_by_type"],
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_time(row["updated_at"]),  # type: ignore[arg-type]
    )


def _grant(row: sqlite3.Row) -> SpotlightGrant:
    return SpotlightGrant(
        id=row["id"],
        space_id=row["space_id"],
        user_id=row["user_id"],
        guest_session_id=row["guest_session_id"],
        granted_by=row["granted_by"],
        granted_at=_time(row["granted_at"]),  # type: ignore[arg-type]
        expires_at=_time(row["expires_at"]),
        is_active=bool(row["is_active"]),
    )


def _event(row: sqlite3.Row) -> EventLogEntry:
    return EventLogEntry(
        id=row["id"],
        space_id=row["space_id"],
        user_id=row["user_id"],
        guest_session_id=row["guest_session_id"],
        event_type=row["event_type"],
        payload=_json_out(row["payload"]),
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
    )


class SqliteStorage(Storage):
    """:class:`Storage` on a local SQLite file; build it with :meth:`open`."""

    latency: Observer = NOT_OBSERVED
    """Seconds each call took, waiting for the worker thread included."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spacesync-sqlite")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteStorage:
        """Open (creating the file and its directory) and migrate; :class:`SchemaError` for a
        file of a newer schema, :class:`StorageUnavailable` for one that cannot be opened."""
        storage = cls(path)
        try:
            await storage._call(storage._open, opening=True)
        except BaseException:
            await storage.close()
            raise
        return storage

    @property
    def kind(self) -> str:
        return "sqlite"

    # runs in the worker thread ---------------------------------------------------------------

    def _open(self, _db: sqlite3.Connection | None) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        db.row_factory = sqlite3.Row
        self._db = db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        self._migrate(db)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"the storage file has schema version {current}; this spacesync knows"
                    f" versions up to {SCHEMA_VERSION} (use a newer spacesync)",
                    [f"schema version {current}"],
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, opening: bool = False) -> T:
        """Run ``work`` in the worker thread, every sqlite3 failure as a StorageError."""

        def run() -> T:
            db = self._db
            if db is None and not opening:
                raise StorageUnavailable("the storage file is closed")
            return work(db)  # type: ignore[arg-type]

        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            return await loop.run_in_executor(self._executor, run)
        except StorageError:
            raise
        except RuntimeError as exc:  # executor shut down
            raise StorageUnavailable("the storage file is closed") from exc
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"SQLite {self.path}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"SQLite {self.path}: {exc}") from exc
        finally:
            self.latency.observe(time.monotonic() - started)

    async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`_call`, inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._call(run)

    # identity and roles ------------------------------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None

        return await self._call(work)

    async def is_super_admin(self, user_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT is_super_admin FROM users WHERE id = ?", (user_id,)).fetchone()
            return bool(row and row[0])

        return await self._call(work)

    async def set_super_admin(self, user_id: str, value: bool) -> None:
        """SQLite only: mark a user a platform administrator (the app's ``isSuperAdmin``)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO users (id, is_super_admin, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET is_super_admin = excluded.is_super_admin",
                (user_id, int(value), _now_ms()),
            )

        await self._call(work)

    async def space_owner(self, space_id: str) -> str | None:
        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT user_id FROM members WHERE space_id = ? AND role = 'OWNER'"
                " AND user_id IS NOT NULL ORDER BY created_at, id LIMIT 1",
                (space_id,),
            ).fetchone()
            return None if row is None else row[0]

        return await self._call(work)

    async def member_role(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpaceRole | None:
        kind, who = subject(user_id, guest_session_id)

        def work(db: sqlite3.Connection) -> SpaceRole | None:
            row = db.execute(
                f"SELECT role FROM members WHERE space_id = ? AND {_SUBJECT_COLUMN[kind]} = ?",
                (space_id, who),
            ).fetchone()
            return None if row is None else row[0]

        return await self._call(work)

    async def guest_session_id(self, space_id: str, session_token: str) -> str | None:
        digest = hashlib.sha256(session_token.encode("utf-8", "surrogatepass")).hexdigest()

        def work(db: sqlite3.Connection) -> str:
            db.execute(
                "INSERT INTO guest_sessions (id, space_id, token_sha256, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (space_id, token_sha256) DO NOTHING",
                (new_id(), space_id, digest, _now_ms()),
            )
            row = db.execute(
                "SELECT id FROM guest_sessions WHERE space_id = ? AND token_sha256 = ?",
                (space_id, digest),
            ).fetchone()
            return row[0]

        return await self._call(work)

    @staticmethod
    def _remember_user(db: sqlite3.Connection, user_id: str | None, now: int) -> None:
        if user_id is not None:
            db.execute(
                "INSERT INTO users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (user_id, now),
            )

    async def set_role(self, space_id: str, user_id: str, role: SpaceRole) -> Member:
        check_choice("role", role, SPACE_ROLES)

        def work(db: sqlite3.Connection) -> Member:
            now = _now_ms()
            self._remember_user(db, user_id, now)
            row = db.execute(
                "INSERT INTO members (id, space_id, user_id, role, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (space_id, user_id) DO UPDATE"
                " SET role = excluded.role, updated_at = excluded.updated_at RETURNING *",
                (new_id(), space_id, user_id, role, now, now),
            ).fetchone()
            return _member(row)

        return await self._transaction(work)

    async def list_members(self, space_id: str) -> list[Member]:
        def work(db: sqlite3.Connection) -> list[Member]:
            rows = db.execute(
                "SELECT * FROM members WHERE space_id = ? ORDER BY"
                " CASE role WHEN 'OWNER' THEN 0 WHEN 'STAFF' THEN 1 ELSE 2 END, created_at, id",
                (space_id,),
            ).fetchall()
            return [_member(r) for r in rows]

        return await self._call(work)

    # moderation --------------------------------------------------------------------------------

    async def get_restriction(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> Restriction | None:
        kind, who = subject(user_id, guest_session_id)

        def work(db: sqlite3.Connection) -> Restriction | None:
            now = _now_ms()
            row = db.execute(
                "SELECT id, restriction, restricted_until, restricted_by, restricted_reason"
                f" FROM members WHERE space_id = ? AND {_SUBJECT_COLUMN[kind]} = ?",
                (space_id, who),
            ).fetchone()
            if row is None or row["restriction"] == "NONE":
                return None
            until = row["restricted_until"]
            if row["restriction"] == "MUTED" and until is not None and until <= now:
                db.execute(
                    "UPDATE members SET restriction = 'NONE', restricted_until = NULL,"
                    " updated_at = ? WHERE id = ? AND restriction = 'MUTED'"
                    " AND restricted_until = ?",
                    (now, row["id"], until),
                )
                return None
            return Restriction(
                row["restriction"], _time(until), row["restricted_by"], row["restricted_reason"]
            )

        return await self._call(work)

    async def set_restriction(
        self,
        space_id: str,
        restriction: ChatRestriction,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        until: datetime | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> None:
        check_choice("restriction", restriction, CHAT_RESTRICTIONS)
        kind, who = subject(user_id, guest_session_id)
        column = _SUBJECT_COLUMN[kind]
        kept_until = _ms(until) if restriction == "MUTED" else None

        def work(db: sqlite3.Connection) -> None:
            now = _now_ms()
            if restriction == "NONE":
                db.execute(
                    "UPDATE members SET restriction = 'NONE', restricted_until = NULL,"
                    " restricted_by = NULL, restricted_reason = NULL, updated_at = ?"
                    f" WHERE space_id = ? AND {column} = ?",
                    (now, space_id, who),
                )
                return
            self._remember_user(db, user_id, now)
            db.execute(
                f"INSERT INTO members (id, space_id, {column}, restriction, restricted_until,"
                " restricted_by, restricted_reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (space_id, {column}) DO UPDATE SET"
                " restriction = excluded.restriction,"
                " restricted_until = excluded.restricted_until,"
                " restricted_by = excluded.restricted_by,"
                " restricted_reason = excluded.restricted_reason,"
                " updated_at = excluded.updated_at",
                (new_id(), space_id, who, restriction, kept_until, by, reason, now, now),
            )

        await self._transaction(work)

    # chat --------------------------------------------------------------------------------------

    async def insert_messages(self, messages: Sequence[NewMessage]) -> list[str]:
        if not messages:
            return []
        now = _now_ms()
        rows = []
        for message in messages:
            check_message(message)
            rows.append(
                (
                    new_id(),
                    message.space_id,
                    message.sender_id,
                    message.sender_type,
                    clean_text(message.sender_name),
                    clean_text(message.content),
                    message.type,
                    message.target_id,
                    _ms(message.created_at) if message.created_at else now,
                )
            )

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO chat_messages (id, space_id, sender_id, sender_type, sender_name,"
                " content, type, target_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._transaction(work)
        return [row[0] for row in rows]

    async def get_message(self, space_id: str, message_id: str) -> StoredMessage | None:
        def work(db: sqlite3.Connection) -> StoredMessage | None:
            row = db.execute(
                "SELECT * FROM chat_messages WHERE id = ? AND space_id = ?",
                (message_id, space_id),
            ).fetchone()
            return None if row is None else _message(row)

        return await self._call(work)

    async def soft_delete_message(self, space_id: str, message_id: str, deleted_by: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE chat_messages SET is_deleted = 1, deleted_by = ?, deleted_at = ?"
                " WHERE id = ? AND space_id = ? AND is_deleted = 0",
                (deleted_by, _now_ms(), message_id, space_id),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    async def recent_messages(
        self, space_id: str, limit: int = 50, before: datetime | None = None
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        before_ms = _ms(before)

        def work(db: sqlite3.Connection) -> list[StoredMessage]:
            rows = db.execute(
                "SELECT * FROM chat_messages WHERE space_id = ?"
                f" AND type IN {_in(PUBLIC_MESSAGE_TYPES)} AND is_deleted = 0"
                " AND (? IS NULL OR created_at < ?)"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (space_id, before_ms, before_ms, limit),
            ).fetchall()
            return [_message(r) for r in reversed(rows)]

        return await self._call(work)

    # event log ---------------------------------------------------------------------------------

    async def log_event(
        self,
        space_id: str,
        event_type: str,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        payload: Any = None,
    ) -> str:
        check_choice("event_type", event_type, SPACE_EVENT_TYPES)
        row_id = new_id()
        body = _json_in(payload)

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO event_log (id, space_id, user_id, guest_session_id, event_type,"
                " payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row_id, space_id, user_id, guest_session_id, event_type, body, _now_ms()),
            )

        await self._call(work)
        return row_id

    async def list_events(self, space_id: str, limit: int = 100) -> list[EventLogEntry]:
        def work(db: sqlite3.Connection) -> list[EventLogEntry]:
            rows = db.execute(
                "SELECT * FROM event_log WHERE space_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (space_id, limit),
            ).fetchall()
            return [_event(r) for r in rows]

        return await self._call(work)

    # map objects -------------------------------------------------------------------------------

    async def list_objects(self, space_id: str) -> list[MapObject]:
        def work(db: sqlite3.Connection) -> list[MapObject]:
            rows = db.execute(
                "SELECT * FROM map_objects WHERE space_id = ? ORDER BY created_at, id",
                (space_id,),
            ).fetchall()
            return [_object(r) for r in rows]

        return await self._call(work)

    @staticmethod
    def _check_link(db: sqlite3.Connection, space_id: str, target: str, linker: str | None) -> None:
        if target == linker:
            raise InvalidLink("an object cannot be linked to itself")
        exists = db.execute(
            "SELECT 1 FROM map_objects WHERE id = ? AND space_id = ?", (target, space_id)
        ).fetchone()
        if exists is None:
            raise InvalidLink(f"no object {target!r} in this space to link to")
        taken = db.execute(
            "SELECT id FROM map_objects WHERE linked_object_id = ?", (target,)
        ).fetchone()
        if taken is not None and taken[0] != linker:
            raise InvalidLink(f"object {target!r} is already linked to another object")

    async def place_object(
        self,
        space_id: str,
        *,
        asset_id: str,
        x: int,
        y: int,
        placed_by: str,
        placed_by_type: SenderType,
        rotation: int = 0,
        linked_object_id: str | None = None,
        custom_data: Any = None,
    ) -> MapObject:
        check_position(x, y, rotation)
        check_choice("placed_by_type", placed_by_type, SENDER_TYPES)
        body = _json_in(custom_data)

        def work(db: sqlite3.Connection) -> MapObject:
            now = _now_ms()
            if linked_object_id is not None:
                self._check_link(db, space_id, linked_object_id, None)
            row = db.execute(
                "INSERT INTO map_objects (id, space_id, asset_id, position_x, position_y,"
                " rotation, linked_object_id, custom_data, placed_by, placed_by_type,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING *",
                (
                    new_id(),
                    space_id,
                    asset_id,
                    x,
                    y,
                    rotation,
                    linked_object_id,
                    body,
                    placed_by,
                    placed_by_type,
                    now,
                    now,
                ),
            ).fetchone()
            return _object(row)

        return await self._transaction(work)

    async def update_object(
        self,
        space_id: str,
        object_id: str,
        *,
        position: tuple[int, int] | None = None,
        rotation: int | None = None,
        linked_object_id: str | _Unset | None = UNSET,
        custom_data: Any = UNSET,
    ) -> MapObject | None:
        sets: list[str] = []
        values: list[Any] = []
        if position is not None:
            check_position(position[0], position[1], 0)
            sets += ["position_x", "position_y"]
            values += [position[0], position[1]]
        if rotation is not None:
            check_position(0, 0, rotation)
            sets.append("rotation")
            values.append(rotation)
        if not isinstance(linked_object_id, _Unset):
            sets.append("linked_object_id")
            values.append(linked_object_id)
        if custom_data is not UNSET:
            sets.append("custom_data")
            values.append(_json_in(custom_data))

        def work(db: sqlite3.Connection) -> MapObject | None:
            exists = db.execute(
                "SELECT 1 FROM map_objects WHERE id = ? AND space_id = ?", (object_id, space_id)
            ).fetchone()
            if exists is None:
                return None
            if isinstance(linked_object_id, str):
                self._check_link(db, space_id, linked_object_id, object_id)
            assignments = ", ".join(f"{col} = ?" for col in [*sets, "updated_at"])
            row = db.execute(
                f"UPDATE map_objects SET {assignments} WHERE id = ? AND space_id = ? RETURNING *",
                (*values, _now_ms(), object_id, space_id),
            ).fetchone()
            return _object(row)

        return await self._transaction(work)

    async def delete_object(self, space_id: str, object_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            exists = db.execute(
                "SELECT 1 FROM map_objects WHERE id = ? AND space_id = ?", (object_id, space_id)
            ).fetchone()
            if exists is None:
                return False
            db.execute(
                "UPDATE map_objects SET linked_object_id = NULL, updated_at = ?"
                " WHERE linked_object_id = ?",
                (_now_ms(), object_id),
            )
            db.execute("DELETE FROM map_objects WHERE id = ?", (object_id,))
            return True

        return await self._transaction(work)

    # spotlight ---------------------------------------------------------------------------------

    async def spotlight_grant(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpotlightGrant | None:
        kind, who = subject(user_id, guest_session_id)

        def work(db: sqlite3.Connection) -> SpotlightGrant | None:
            row = db.execute(
                "SELECT * FROM spotlight_grants"
                f" WHERE space_id = ? AND {_SUBJECT_COLUMN[kind]} = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (space_id, who, _now_ms()),
            ).fetchone()
            return None if row is None else _grant(row)

        return await self._call(work)

    async def set_spotlight_active(
        self,
        space_id: str,
        active: bool,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
    ) -> bool:
        kind, who = subject(user_id, guest_session_id)

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE spotlight_grants SET is_active = ?"
                f" WHERE space_id = ? AND {_SUBJECT_COLUMN[kind]} = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (int(active), space_id, who, _now_ms()),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    async def grant_spotlight(
        self,
        space_id: str,
        *,
        granted_by: str,
        user_id: str | None = None,
        guest_session_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> SpotlightGrant:
        kind, who = subject(user_id, guest_session_id)
        column = _SUBJECT_COLUMN[kind]

        def work(db: sqlite3.Connection) -> SpotlightGrant:
            now = _now_ms()
            self._remember_user(db, user_id, now)
            row = db.execute(
                f"INSERT INTO spotlight_grants (id, space_id, {column}, granted_by, granted_at,"
                " expires_at, is_active) VALUES (?, ?, ?, ?, ?, ?, 0)"
                f" ON CONFLICT (space_id, {column}) DO UPDATE SET"
                " granted_by = excluded.granted_by, granted_at = excluded.granted_at,"
                " expires_at = excluded.expires_at RETURNING *",
                (new_id(), space_id, who, granted_by, now, _ms(expires_at)),
            ).fetchone()
            return _grant(row)

        return await self._transaction(work)

    async def revoke_spotlight(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> bool:
        kind, who = subject(user_id, guest_session_id)

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"DELETE FROM spotlight_grants WHERE space_id = ? AND {_SUBJECT_COLUMN[kind]} = ?",
                (space_id, who),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    # health ------------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT max(version) FROM schema_version").fetchone()[0])

        return await self._call(work)

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def shut(db: sqlite3.Connection | None) -> None:
            if db is not None:
                db.close()
            self._db = None

        if self._db is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, shut, self._db)
        self._executor.shutdown(wait=False)

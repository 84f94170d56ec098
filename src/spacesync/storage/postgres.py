"""The storage port on FlowSpace's own PostgreSQL database (the tables the app's Prisma created).

spacesync is a guest in that database: it never creates or alters a table. It writes rows the
way the app's Prisma client would, so the app cannot tell them apart:

- tables and columns are Prisma's quoted names (``"SpaceMember"."spaceId"``) and enumerated
  columns are PostgreSQL enum types, so parameters are cast (``$3::"SpaceRole"``);
- ids are cuid-style strings made here (:mod:`.ids`), because the tables have no id default;
- ``"updatedAt"`` has no database default either (Prisma sets it in the client), so every write
  sets it, and every time is written by spacesync in UTC (the columns are ``timestamp(3)``
  without time zone, which Prisma reads as UTC whatever the server's time zone is).

Because the handlers treat storage as best-effort, nothing here may keep them waiting: the pool
is bounded (``max_size``), opening a connection gives up after ``connect_timeout``, each
statement after ``command_timeout``, and each whole operation (waiting for a free connection
included) after ``op_timeout``. Whatever goes wrong comes out as a :class:`StorageError`.

At start :meth:`PostgresStorage.check_schema` compares ``information_schema`` and ``pg_enum``
with what the queries below need and names anything missing, instead of letting the first chat
message fail with an obscure error an hour later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

from ..observability.timing import NOT_OBSERVED, Observer
from .base import (
    CHAT_RESTRICTIONS,
    MESSAGE_TYPES,
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
    to_ms,
    utc_now,
)
from .ids import new_id

T = TypeVar("T")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "User": ("id", "isSuperAdmin"),
    "Space": ("id", "ownerId"),
    "GuestSession": ("id", "spaceId", "sessionToken"),
    "SpaceMember": (
        "id",
        "spaceId",
        "userId",
        "guestSessionId",
        "displayName",
        "role",
        "restriction",
        "restrictedUntil",
        "restrictedBy",
        "restrictedReason",
        "createdAt",
        "updatedAt",
    ),
    "ChatMessage": (
        "id",
        "spaceId",
        "senderId",
        "senderType",
        "senderName",
        "content",
        "type",
        "targetId",
        "isDeleted",
        "deletedBy",
        "deletedAt",
        "createdAt",
    ),
    "SpaceEventLog": (
        "id",
        "spaceId",
        "userId",
        "guestSessionId",
        "eventType",
        "payload",
        "createdAt",
    ),
    "MapObject": (
        "id",
        "spaceId",
        "assetId",
        "positionX",
        "positionY",
        "rotation",
        "linkedObjectId",
        "customData",
        "placedBy",
        "placedByType",
        "createdAt",
        "updatedAt",
    ),
    "SpotlightGrant": (
        "id",
        "spaceId",
        "userId",
        "guestSessionId",
        "grantedBy",
        "grantedAt",
        "expiresAt",
        "isActive",
    ),
}
REQUIRED_ENUMS: dict[str, tuple[str, ...]] = {
    "SpaceRole": SPACE_ROLES,
    "ChatRestriction": CHAT_RESTRICTIONS,
    "SenderType": SENDER_TYPES,
    "MessageType": MESSAGE_TYPES,
    "SpaceEventType": SPACE_EVENT_TYPES,
}

# Query parameters of a Prisma connection string that are Prisma's, not libpq's: asyncpg would
# send them to the server as settings, which refuses them.
_PRISMA_PARAMS = ("schema", "pgbouncer", "connection_limit", "pool_timeout", "socket_timeout")
_SUBJECT_COLUMN = {"user": '"userId"', "guest": '"guestSessionId"'}
_CASTS = {'"customData"': "::jsonb"}

DEFAULT_MAX_CONNECTIONS = 10
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_COMMAND_TIMEOUT = 2.0
DEFAULT_OP_TIMEOUT = 3.0


def _db_time(value: datetime | None) -> datetime | None:
    """An aware time as the naive UTC value a ``timestamp(3)`` column holds."""
    return None if value is None else to_ms(value).replace(tzinfo=None)


def _py_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _json_in(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _json_out(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def split_dsn(dsn: str) -> tuple[str, dict[str, Any]]:
    """The DSN asyncpg should see, and the connection options taken out of a Prisma URL.

    FlowSpace's ``DATABASE_URL`` is written for Prisma: ``?schema=name`` becomes the
    ``search_path``, ``pgbouncer=true`` turns off asyncpg's statement cache (a pooler in
    transaction mode cannot keep named prepared statements), and the other Prisma-only
    parameters are dropped.
    """
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {}
    kept = []
    for key, value in query:
        if key == "schema" and value:
            options["server_settings"] = {"search_path": value}
        elif key == "pgbouncer" and value.lower() == "true":
            options["statement_cache_size"] = 0
        elif key not in _PRISMA_PARAMS:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def _member(row: asyncpg.Record) -> Member:
    return Member(
        id=row["id"],
        space_id=row["spaceId"],
        user_id=row["userId"],
        guest_session_id=row["guestSessionId"],
        display_name=row["displayName"],
        role=row["role"],
        restriction=row["restriction"],
        restricted_until=_py_time(row["restrictedUntil"]),
        created_at=row["createdAt"].replace(tzinfo=UTC),
        updated_at=row["updatedAt"].replace(tzinfo=UTC),
    )


def _message(row: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        space_id=row["spaceId"],
        sender_id=row["senderId"],
        sender_type=row["senderType"],
        sender_name=row["senderName"],
        content=row["content"],
        type=row["type"],
        target_id=row["targetId"],
        created_at=row["createdAt"].replace(tzinfo=UTC),
        is_deleted=row["isDeleted"],
        deleted_by=row["deletedBy"],
        deleted_at=_py_time(row["deletedAt"]),
    )


def _object(row: asyncpg.Record) -> MapObject:
    return MapObject(
        id=row["id"],
        space_id=row["spaceId"],
        asset_id=row["assetId"],
        position_x=row["positionX"],
        position_y=row["positionY"],
        rotation=row["rotation"],
        linked_object_id=row["linkedObjectId"],
        custom_data=_json_out(row["customData"]),
        placed_by=row["placedBy"],
        placed_by_type=row["placedByType"],
        created_at=row["createdAt"].replace(tzinfo=UTC),
        updated_at=row["updatedAt"].replace(tzinfo=UTC),
    )


def _grant(row: asyncpg.Record) -> SpotlightGrant:
    return SpotlightGrant(
        id=row["id"],
        space_id=row["spaceId"],
        user_id=row["userId"],
        guest_session_id=row["guestSessionId"],
        granted_by=row["grantedBy"],
        granted_at=row["grantedAt"].replace(tzinfo=UTC),
        expires_at=_py_time(row["expiresAt"]),
        is_active=row["isActive"],
    )


def _event(row: asyncpg.Record) -> EventLogEntry:
    return EventLogEntry(
        id=row["id"],
        space_id=row["spaceId"],
        user_id=row["userId"],
        guest_session_id=row["guestSessionId"],
        event_type=row["eventType"],
        payload=_json_out(row["payload"]),
        created_at=row["createdAt"].replace(tzinfo=UTC),
    )


_MEMBER_COLUMNS = (
    '"id", "spaceId", "userId", "guestSessionId", "displayName", "role"::text AS "role",'
    ' "restriction"::text AS "restriction", "restrictedUntil", "restrictedBy",'
    ' "restrictedReason", "createdAt", "updatedAt"'
)
_MESSAGE_COLUMNS = (
    '"id", "spaceId", "senderId", "senderType"::text AS "senderType", "senderName", "content",'
    ' "type"::text AS "type", "targetId", "isDeleted", "deletedBy", "deletedAt", "createdAt"'
)
_OBJECT_COLUMNS = (
    '"id", "spaceId", "assetId", "positionX", "positionY", "rotation", "linkedObjectId",'
    ' "customData"::text AS "customData", "placedBy", "placedByType"::text AS "placedByType",'
    ' "createdAt", "updatedAt"'
)
_GRANT_COLUMNS = (
    '"id", "spaceId", "userId", "guestSessionId", "grantedBy", "grantedAt", "expiresAt", "isActive"'
)
_EVENT_COLUMNS = (
    '"id", "spaceId", "userId", "guestSessionId", "eventType"::text AS "eventType",'
    ' "payload"::text AS "payload", "createdAt"'
)


class PostgresStorage(Storage):
    """:class:`Storage` on FlowSpace's PostgreSQL database; build it with :meth:`open`."""

    latency: Observer = NOT_OBSERVED
    """Seconds each operation took, waiting for a pooled connection included."""

    def __init__(self, pool: asyncpg.Pool, op_timeout: float) -> None:
        self._pool = pool
        self._op_timeout = op_timeout

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        check: bool = True,
    ) -> PostgresStorage:
        """Connect (one connection at once, up to ``max_connections`` on demand) and, unless
        ``check`` is false, verify the schema. Raises :class:`StorageUnavailable` when the
        server cannot be reached in ``connect_timeout``, :class:`SchemaError` when tables,
        columns or enum values are missing."""
        clean_dsn, options = split_dsn(dsn)
        try:
            async with asyncio.timeout(connect_timeout + 1.0):
                pool = await asyncpg.create_pool(
                    clean_dsn,
                    min_size=1,
                    max_size=max_connections,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    max_inactive_connection_lifetime=60.0,
                    **options,
                )
        except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {_describe(exc)}") from exc
        except asyncpg.PostgresError as exc:
            raise StorageUnavailable(f"PostgreSQL refused the connection: {exc}") from exc
        storage = cls(pool, op_timeout)
        if check:
            try:
                await storage.check_schema()
            except BaseException:
                await storage.close()
                raise
        return storage

    @property
    def kind(self) -> str:
        return "postgres"

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection within ``op_timeout``, errors as StorageError."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._op_timeout):
                async with self._pool.acquire() as conn:
                    return await work(conn)
        except StorageError:
            raise
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"PostgreSQL did not answer within {self._op_timeout:g} s"
            ) from exc
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
            raise StorageUnavailable(f"PostgreSQL connection failed: {_describe(exc)}") from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"PostgreSQL error: {_describe(exc)}") from exc
        except Exception as exc:  # asyncpg's client-side errors (a connection in a bad state)
            raise StorageUnavailable(f"PostgreSQL client error: {_describe(exc)}") from exc
        finally:
            self.latency.observe(time.monotonic() - started)

    async def check_schema(self) -> None:
        """Raise :class:`SchemaError` naming every table, column, enum type or enum value
        this adapter uses that the database (its current schema) does not have."""

        async def work(conn: asyncpg.Connection) -> tuple[list[Any], list[Any]]:
            columns = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
                list(REQUIRED_COLUMNS),
            )
            labels = await conn.fetch(
                "SELECT t.typname, e.enumlabel FROM pg_type t"
                " JOIN pg_namespace n ON n.oid = t.typnamespace"
                " LEFT JOIN pg_enum e ON e.enumtypid = t.oid"
                " WHERE n.nspname = current_schema() AND t.typname = ANY($1::text[])",
                list(REQUIRED_ENUMS),
            )
            return columns, labels

        columns, labels = await self._run(work)
        have_columns = {(r["table_name"], r["column_name"]) for r in columns}
        have_tables = {table for table, _ in have_columns}
        have_types = {r["typname"] for r in labels}
        have_labels = {(r["typname"], r["enumlabel"]) for r in labels}
        missing: list[str] = []
        for table, needed in REQUIRED_COLUMNS.items():
            if table not in have_tables:
                missing.append(f'table "{table}"')
                continue
            missing.extend(
                f'column "{table}"."{col}"' for col in needed if (table, col) not in have_columns
            )
        for type_name, values in REQUIRED_ENUMS.items():
            if type_name not in have_types:
                missing.append(f'enum type "{type_name}"')
                continue
            missing.extend(
                f'enum value "{type_name}".{value}'
                for value in values
                if (type_name, value) not in have_labels
            )
        if missing:
            raise SchemaError(
                "the database lacks what spacesync needs from FlowSpace's schema"
                f" (apply the app's Prisma migrations): {', '.join(missing)}",
                missing,
            )

    # identity and roles ------------------------------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        return bool(
            await self._run(
                lambda c: c.fetchval(
                    'SELECT EXISTS (SELECT 1 FROM "User" WHERE "id" = $1)', user_id
                )
            )
        )

    async def is_super_admin(self, user_id: str) -> bool:
        value = await self._run(
            lambda c: c.fetchval('SELECT "isSuperAdmin" FROM "User" WHERE "id" = $1', user_id)
        )
        return bool(value)

    async def space_owner(self, space_id: str) -> str | None:
        return await self._run(
            lambda c: c.fetchval('SELECT "ownerId" FROM "Space" WHERE "id" = $1', space_id)
        )

    async def member_role(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpaceRole | None:
        kind, who = subject(user_id, guest_session_id)
        query = (
            'SELECT "role"::text FROM "SpaceMember"'
            f' WHERE "spaceId" = $1 AND {_SUBJECT_COLUMN[kind]} = $2'
        )
        return await self._run(lambda c: c.fetchval(query, space_id, who))

    async def guest_session_id(self, space_id: str, session_token: str) -> str | None:
        return await self._run(
            lambda c: c.fetchval(
                'SELECT "id" FROM "GuestSession" WHERE "sessionToken" = $1 AND "spaceId" = $2',
                session_token,
                space_id,
            )
        )

    async def set_role(self, space_id: str, user_id: str, role: SpaceRole) -> Member:
        check_choice("role", role, SPACE_ROLES)
        now = _db_time(utc_now())
        row = await self._run(
            lambda c: c.fetchrow(
                'INSERT INTO "SpaceMember" ("id", "spaceId", "userId", "role", "createdAt",'
                ' "updatedAt") VALUES ($1, $2, $3, $4::"SpaceRole", $5, $5)'
                ' ON CONFLICT ("spaceId", "userId") DO UPDATE'
                ' SET "role" = EXCLUDED."role", "updatedAt" = EXCLUDED."updatedAt"'
                f" RETURNING {_MEMBER_COLUMNS}",
                new_id(),
                space_id,
                user_id,
                role,
                now,
            )
        )
        return _member(row)

    async def list_members(self, space_id: str) -> list[Member]:
        rows = await self._run(
            lambda c: c.fetch(
                f'SELECT {_MEMBER_COLUMNS} FROM "SpaceMember" WHERE "spaceId" = $1'
                ' ORDER BY "SpaceMember"."role", "createdAt", "id"',
                space_id,
            )
        )
        return [_member(r) for r in rows]

    # moderation --------------------------------------------------------------------------------

    async def get_restriction(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> Restriction | None:
        kind, who = subject(user_id, guest_session_id)
        now = utc_now()

        async def work(conn: asyncpg.Connection) -> Restriction | None:
            row = await conn.fetchrow(
                'SELECT "id", "restriction"::text AS "restriction", "restrictedUntil",'
                ' "restrictedBy", "restrictedReason" FROM "SpaceMember"'
                f' WHERE "spaceId" = $1 AND {_SUBJECT_COLUMN[kind]} = $2',
                space_id,
                who,
            )
            if row is None or row["restriction"] == "NONE":
                return None
            until = _py_time(row["restrictedUntil"])
            if row["restriction"] == "MUTED" and until is not None and until <= now:
                await conn.execute(
                    'UPDATE "SpaceMember" SET "restriction" = \'NONE\', "restrictedUntil" = NULL,'
                    ' "updatedAt" = $2 WHERE "id" = $1 AND "restriction" = \'MUTED\''
                    ' AND "restrictedUntil" = $3',
                    row["id"],
                    _db_time(now),
                    row["restrictedUntil"],
                )
                return None
            return Restriction(
                row["restriction"], until, row["restrictedBy"], row["restrictedReason"]
            )

        return await self._run(work)

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
        now = _db_time(utc_now())
        if restriction == "NONE":
            query = (
                'UPDATE "SpaceMember" SET "restriction" = \'NONE\', "restrictedUntil" = NULL,'
                ' "restrictedBy" = NULL, "restrictedReason" = NULL, "updatedAt" = $3'
                f' WHERE "spaceId" = $1 AND {column} = $2'
            )
            await self._run(lambda c: c.execute(query, space_id, who, now))
            return
        query = (
            f'INSERT INTO "SpaceMember" ("id", "spaceId", {column}, "restriction",'
            ' "restrictedUntil", "restrictedBy", "restrictedReason", "createdAt", "updatedAt")'
            ' VALUES ($1, $2, $3, $4::"ChatRestriction", $5, $6, $7, $8, $8)'
            f' ON CONFLICT ("spaceId", {column}) DO UPDATE SET'
            ' "restriction" = EXCLUDED."restriction",'
            ' "restrictedUntil" = EXCLUDED."restrictedUntil",'
            ' "restrictedBy" = EXCLUDED."restrictedBy",'
            ' "restrictedReason" = EXCLUDED."restrictedReason",'
            ' "updatedAt" = EXCLUDED."updatedAt"'
        )
        kept_until = _db_time(until) if restriction == "MUTED" else None
        await self._run(
            lambda c: c.execute(
                query, new_id(), space_id, who, restriction, kept_until, by, reason, now
            )
        )

    # chat --------------------------------------------------------------------------------------

    async def insert_messages(self, messages: Sequence[NewMessage]) -> list[str]:
        if not messages:
            return []
        now = utc_now()
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
                    _db_time(message.created_at or now),
                )
            )

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    'INSERT INTO "ChatMessage" ("id", "spaceId", "senderId", "senderType",'
                    ' "senderName", "content", "type", "targetId", "createdAt")'
                    ' VALUES ($1, $2, $3, $4::"SenderType", $5, $6, $7::"MessageType", $8, $9)',
                    rows,
                )

        await self._run(work)
        return [row[0] for row in rows]

    async def get_message(self, space_id: str, message_id: str) -> StoredMessage | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f'SELECT {_MESSAGE_COLUMNS} FROM "ChatMessage" WHERE "id" = $1 AND "spaceId" = $2',
                message_id,
                space_id,
            )
        )
        return None if row is None else _message(row)

    async def soft_delete_message(self, space_id: str, message_id: str, deleted_by: str) -> bool:
        status = await self._run(
            lambda c: c.execute(
                'UPDATE "ChatMessage" SET "isDeleted" = true, "deletedBy" = $3, "deletedAt" = $4'
                ' WHERE "id" = $1 AND "spaceId" = $2 AND NOT "isDeleted"',
                message_id,
                space_id,
                deleted_by,
                _db_time(utc_now()),
            )
        )
        return status == "UPDATE 1"

    async def recent_messages(
        self, space_id: str, limit: int = 50, before: datetime | None = None
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = await self._run(
            lambda c: c.fetch(
                f'SELECT {_MESSAGE_COLUMNS} FROM "ChatMessage"'
                ' WHERE "spaceId" = $1 AND "type"::text = ANY($2::text[]) AND NOT "isDeleted"'
                ' AND ($3::timestamp IS NULL OR "createdAt" < $3)'
                ' ORDER BY "createdAt" DESC, "id" DESC LIMIT $4',
                space_id,
                list(PUBLIC_MESSAGE_TYPES),
                _db_time(before),
                limit,
            )
        )
        return [_message(r) for r in reversed(rows)]

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
        await self._run(
            lambda c: c.execute(
                'INSERT INTO "SpaceEventLog" ("id", "spaceId", "userId", "guestSessionId",'
                ' "eventType", "payload", "createdAt")'
                ' VALUES ($1, $2, $3, $4, $5::"SpaceEventType", $6::jsonb, $7)',
                row_id,
                space_id,
                user_id,
                guest_session_id,
                event_type,
                _json_in(payload),
                _db_time(utc_now()),
            )
        )
        return row_id

    async def list_events(self, space_id: str, limit: int = 100) -> list[EventLogEntry]:
        rows = await self._run(
            lambda c: c.fetch(
                f'SELECT {_EVENT_COLUMNS} FROM "SpaceEventLog" WHERE "spaceId" = $1'
                ' ORDER BY "createdAt" DESC, "id" DESC LIMIT $2',
                space_id,
                limit,
            )
        )
        return [_event(r) for r in rows]

    # map objects -------------------------------------------------------------------------------

    async def list_objects(self, space_id: str) -> list[MapObject]:
        rows = await self._run(
            lambda c: c.fetch(
                f'SELECT {_OBJECT_COLUMNS} FROM "MapObject" WHERE "spaceId" = $1'
                ' ORDER BY "createdAt", "id"',
                space_id,
            )
        )
        return [_object(r) for r in rows]

    @staticmethod
    async def _check_link(
        conn: asyncpg.Connection, space_id: str, target: str, linker: str | None
    ) -> None:
        """``target`` must be an object of this space that nothing but ``linker`` links to."""
        if target == linker:
            raise InvalidLink("an object cannot be linked to itself")
        exists = await conn.fetchval(
            'SELECT 1 FROM "MapObject" WHERE "id" = $1 AND "spaceId" = $2 FOR UPDATE',
            target,
            space_id,
        )
        if not exists:
            raise InvalidLink(f"no object {target!r} in this space to link to")
        taken = await conn.fetchval(
            'SELECT "id" FROM "MapObject" WHERE "linkedObjectId" = $1', target
        )
        if taken is not None and taken != linker:
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
        now = _db_time(utc_now())

        async def work(conn: asyncpg.Connection) -> asyncpg.Record:
            async with conn.transaction():
                if linked_object_id is not None:
                    await self._check_link(conn, space_id, linked_object_id, None)
                return await conn.fetchrow(
                    'INSERT INTO "MapObject" ("id", "spaceId", "assetId", "positionX",'
                    ' "positionY", "rotation", "linkedObjectId", "customData", "placedBy",'
                    ' "placedByType", "createdAt", "updatedAt")'
                    ' VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::"SenderType",'
                    f" $11, $11) RETURNING {_OBJECT_COLUMNS}",
                    new_id(),
                    space_id,
                    asset_id,
                    x,
                    y,
                    rotation,
                    linked_object_id,
                    _json_in(custom_data),
                    placed_by,
                    placed_by_type,
                    now,
                )

        return _object(await self._run_linking(work))

    async def _run_linking(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """:meth:`_run`, with a lost race on the unique ``linkedObjectId`` as InvalidLink."""
        try:
            return await self._run(work)
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise InvalidLink("the object is already linked to another object") from exc
            raise

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
            sets += ['"positionX"', '"positionY"']
            values += [position[0], position[1]]
        if rotation is not None:
            check_position(0, 0, rotation)
            sets.append('"rotation"')
            values.append(rotation)
        if not isinstance(linked_object_id, _Unset):
            sets.append('"linkedObjectId"')
            values.append(linked_object_id)
        if custom_data is not UNSET:
            sets.append('"customData"')
            values.append(_json_in(custom_data))
        sets.append('"updatedAt"')
        values.append(_db_time(utc_now()))
        assignments = ", ".join(
            f"{col} = ${i + 3}{_CASTS.get(col, '')}" for i, col in enumerate(sets)
        )

        async def work(conn: asyncpg.Connection) -> asyncpg.Record | None:
            async with conn.transaction():
                exists = await conn.fetchval(
                    'SELECT 1 FROM "MapObject" WHERE "id" = $1 AND "spaceId" = $2 FOR UPDATE',
                    object_id,
                    space_id,
                )
                if not exists:
                    return None
                if isinstance(linked_object_id, str):
                    await self._check_link(conn, space_id, linked_object_id, object_id)
                return await conn.fetchrow(
                    f'UPDATE "MapObject" SET {assignments} WHERE "id" = $1 AND "spaceId" = $2'
                    f" RETURNING {_OBJECT_COLUMNS}",
                    object_id,
                    space_id,
                    *values,
                )

        row = await self._run_linking(work)
        return None if row is None else _object(row)

    async def delete_object(self, space_id: str, object_id: str) -> bool:
        now = _db_time(utc_now())

        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                exists = await conn.fetchval(
                    'SELECT 1 FROM "MapObject" WHERE "id" = $1 AND "spaceId" = $2 FOR UPDATE',
                    object_id,
                    space_id,
                )
                if not exists:
                    return False
                await conn.execute(
                    'UPDATE "MapObject" SET "linkedObjectId" = NULL, "updatedAt" = $2'
                    ' WHERE "linkedObjectId" = $1',
                    object_id,
                    now,
                )
                await conn.execute('DELETE FROM "MapObject" WHERE "id" = $1', object_id)
                return True

        return await self._run(work)

    # spotlight ---------------------------------------------------------------------------------

    async def spotlight_grant(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> SpotlightGrant | None:
        kind, who = subject(user_id, guest_session_id)
        row = await self._run(
            lambda c: c.fetchrow(
                f'SELECT {_GRANT_COLUMNS} FROM "SpotlightGrant"'
                f' WHERE "spaceId" = $1 AND {_SUBJECT_COLUMN[kind]} = $2'
                ' AND ("expiresAt" IS NULL OR "expiresAt" > $3)',
                space_id,
                who,
                _db_time(utc_now()),
            )
        )
        return None if row is None else _grant(row)

    async def set_spotlight_active(
        self,
        space_id: str,
        active: bool,
        *,
        user_id: str | None = None,
        guest_session_id: str | None = None,
    ) -> bool:
        kind, who = subject(user_id, guest_session_id)
        status = await self._run(
            lambda c: c.execute(
                'UPDATE "SpotlightGrant" SET "isActive" = $3'
                f' WHERE "spaceId" = $1 AND {_SUBJECT_COLUMN[kind]} = $2'
                ' AND ("expiresAt" IS NULL OR "expiresAt" > $4)',
                space_id,
                who,
                active,
                _db_time(utc_now()),
            )
        )
        return status == "UPDATE 1"

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
        row = await self._run(
            lambda c: c.fetchrow(
                f'INSERT INTO "SpotlightGrant" ("id", "spaceId", {column}, "grantedBy",'
                ' "grantedAt", "expiresAt", "isActive") VALUES ($1, $2, $3, $4, $5, $6, false)'
                f' ON CONFLICT ("spaceId", {column}) DO UPDATE SET'
                ' "grantedBy" = EXCLUDED."grantedBy", "grantedAt" = EXCLUDED."grantedAt",'
                f' "expiresAt" = EXCLUDED."expiresAt" RETURNING {_GRANT_COLUMNS}',
                new_id(),
                space_id,
                who,
                granted_by,
                _db_time(utc_now()),
                _db_time(expires_at),
            )
        )
        return _grant(row)

    async def revoke_spotlight(
        self, space_id: str, user_id: str | None = None, guest_session_id: str | None = None
    ) -> bool:
        kind, who = subject(user_id, guest_session_id)
        status = await self._run(
            lambda c: c.execute(
                'DELETE FROM "SpotlightGrant"'
                f' WHERE "spaceId" = $1 AND {_SUBJECT_COLUMN[kind]} = $2',
                space_id,
                who,
            )
        )
        return status == "DELETE 1"

    # health ------------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(lambda c: c.fetchval("SELECT 1"))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self._op_timeout)
        except (TimeoutError, OSError, asyncpg.InterfaceError):
            self._pool.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

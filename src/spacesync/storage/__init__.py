"""Persistent storage: chat history, moderation, roles, map objects, spotlight grants, event log.

``await open_storage(settings)`` gives the adapter the settings ask for: FlowSpace's PostgreSQL
database when ``DATABASE_URL`` is set, otherwise a SQLite file at ``STORAGE_PATH``. Callers see
only :class:`Storage`; which database is behind it matters to nothing but this function.
"""

from __future__ import annotations

from typing import Protocol

from .base import (
    UNSET,
    EventLogEntry,
    InvalidLink,
    MapObject,
    Member,
    NewMessage,
    Restriction,
    SchemaError,
    SpotlightGrant,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredMessage,
)

__all__ = [
    "UNSET",
    "EventLogEntry",
    "InvalidLink",
    "MapObject",
    "Member",
    "NewMessage",
    "Restriction",
    "SchemaError",
    "SpotlightGrant",
    "Storage",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "StoredMessage",
    "open_storage",
]


class StorageSettings(Protocol):
    """The two settings :func:`open_storage` reads (``spacesync.config.Settings`` has them)."""

    @property
    def database_url(self) -> str | None: ...

    @property
    def storage_path(self) -> str: ...


async def open_storage(settings: StorageSettings) -> Storage:
    """Open, check and migrate the configured storage.

    Raises :class:`StorageUnavailable` when the database cannot be reached, and
    :class:`SchemaError` when FlowSpace's tables lack what spacesync needs (PostgreSQL) or the
    file belongs to a newer spacesync (SQLite).
    """
    url = settings.database_url
    if url and url.split("://", 1)[0] in ("postgresql", "postgres"):
        from .postgres import PostgresStorage

        return await PostgresStorage.open(url)
    if url:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    from .sqlite import SqliteStorage

    return await SqliteStorage.open(settings.storage_path)

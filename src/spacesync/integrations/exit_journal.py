"""EXIT events owed to the app, kept on disk until the app acknowledges them (SPEC §7).

A small SQLite database (stdlib ``sqlite3``, write-ahead log) holds one row per owed EXIT. A row
is written before the EXIT is first sent and deleted once the app answers 2xx, so an app that is
down for minutes, a restart or a ``kill -9`` in between loses nothing: the next start of the
node sends what is left, with the same ``Idempotency-Key``. Writes are a few tens of
microseconds (no fsync per row; the write-ahead log survives a crash of the process).

One journal belongs to one process: a lock file next to it makes a second process that is given
the same path stop at start-up instead of sending the same EXITs twice.

A row may also be a held EXIT (``due_at`` > 0): a stay that ended less than the grace period
ago, which a rejoin of the same session may still cancel. It is on disk from the moment the
player leaves, so a crash during the grace period does not lose it; the next start holds it
again until ``due_at`` (or sends it at once if that has passed). ``due_at`` 0 means the EXIT is
owed now. Schema version 2 added that column; a file written by version 1 gets it on opening
(``ALTER TABLE``, every old row owed now, as it was).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .app_api import ExitEvent

IN_MEMORY = ":memory:"
SCHEMA_VERSION = 2


class JournalError(Exception):
    """The journal cannot be opened (bad path, no permission, used by another process)."""


class ExitJournal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock: IO[str] | None = None
        try:
            if path != IN_MEMORY:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._lock = open(f"{path}.lock", "w")  # held while the process lives
                try:
                    fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._lock.close()
                    self._lock = None
                    raise JournalError(
                        f"EXIT outbox {path} is in use by another process; give each node its own"
                    ) from None
                self._lock.write(str(os.getpid()))
                self._lock.flush()
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS exits ("
                " key TEXT PRIMARY KEY, event TEXT NOT NULL, created_at REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL DEFAULT 0)"
            )
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            self._release_lock()
            raise JournalError(f"cannot open the EXIT outbox {path}: {exc}") from exc

    def _migrate(self) -> None:
        """Bring an outbox written by an earlier version up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(exits)")}
        if "due_at" not in columns:  # version 1: every row was owed at once
            self._db.execute("ALTER TABLE exits ADD COLUMN due_at REAL NOT NULL DEFAULT 0")
        if int(self._db.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def durable(self) -> bool:
        return self.path != IN_MEMORY

    def add(self, event: ExitEvent) -> None:
        body = orjson.dumps(dataclasses.asdict(event)).decode()
        self._db.execute(
            "INSERT OR REPLACE INTO exits (key, event, created_at, attempts, due_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (event.key, body, event.created_at, event.attempts, event.due_at),
        )

    def release(self, event: ExitEvent) -> None:
        """A held EXIT is owed now: its stay is over for good."""
        self._db.execute("UPDATE exits SET due_at = 0 WHERE key = ?", (event.key,))

    def attempted(self, event: ExitEvent) -> None:
        self._db.execute("UPDATE exits SET attempts = ? WHERE key = ?", (event.attempts, event.key))

    def done(self, event: ExitEvent) -> None:
        self._db.execute("DELETE FROM exits WHERE key = ?", (event.key,))

    def pending(self) -> list[dict[str, Any]]:
        """Every owed or held EXIT, oldest first, as the fields of an ``ExitEvent``."""
        rows = self._db.execute(
            "SELECT event, attempts, due_at FROM exits ORDER BY created_at, key"
        ).fetchall()
        events = []
        for body, attempts, due_at in rows:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                data["attempts"] = attempts
                data["due_at"] = due_at
                events.append(data)
        return events

    def count(self) -> int:
        """EXITs owed now (held ones are not counted)."""
        return int(self._db.execute("SELECT COUNT(*) FROM exits WHERE due_at = 0").fetchone()[0])

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            finally:
                self._lock.close()
                self._lock = None

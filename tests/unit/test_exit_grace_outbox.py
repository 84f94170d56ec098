"""The EXIT outbox's grace period and its on-disk schema (SPEC §7)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from spacesync.integrations.app_api import AppClient, ExitEvent, ExitOutbox, exit_event_for
from spacesync.integrations.exit_journal import SCHEMA_VERSION, ExitJournal


def version_1_outbox(path: Path, event: ExitEvent) -> None:
    """An outbox as the previous version wrote it: no ``due_at`` column, no stay fields."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE exits (key TEXT PRIMARY KEY, event TEXT NOT NULL,"
        " created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)"
    )
    body = json.dumps(
        {
            "session_token": event.session_token,
            "space_id": event.space_id,
            "reason": "leave",
            "duration_seconds": 7,
            "user_id": None,
            "player_id": "p1",
            "key": event.key,
            "created_at": event.created_at,
            "attempts": 2,
        }
    )
    db.execute("INSERT INTO exits VALUES (?, ?, ?, ?)", (event.key, body, event.created_at, 2))
    db.commit()
    db.close()


def test_an_outbox_of_the_previous_version_opens_and_its_exits_are_owed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = ExitEvent("guest-1", "space-1", "leave", 7, player_id="p1")
    version_1_outbox(path, old)
    journal = ExitJournal(str(path))
    try:
        pending = journal.pending()
        assert len(pending) == 1
        assert pending[0]["key"] == old.key and pending[0]["due_at"] == 0
        assert pending[0]["attempts"] == 2
        assert journal.count() == 1
        version = journal._db.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION
    finally:
        journal.close()
    ExitJournal(str(path)).close()  # opening a migrated file again changes nothing


def test_a_held_exit_is_on_disk_with_its_due_time_and_not_counted_as_owed(tmp_path: Path) -> None:
    journal = ExitJournal(str(tmp_path / "exits.sqlite3"))
    try:
        event = ExitEvent("guest-1", "space-1", "leave", 3, player_id="p1", started_at=1.0)
        event.due_at = time.time() + 10
        journal.add(event)
        assert journal.count() == 0
        assert journal.pending()[0]["due_at"] == event.due_at
        assert journal.pending()[0]["started_at"] == 1.0
        journal.release(event)
        assert journal.count() == 1 and journal.pending()[0]["due_at"] == 0
    finally:
        journal.close()


async def test_a_rejoin_within_the_grace_period_cancels_the_held_exit() -> None:
    outbox = ExitOutbox(AppClient("http://127.0.0.1:9", None), ExitJournal(":memory:"), grace=5)
    try:
        started = time.time() - 30
        event = exit_event_for("guest-1", "space-1", "leave", 30, "p1", started)
        assert event is not None
        await outbox.hold(event)
        assert outbox.held == 1 and outbox.owed() == 0 and outbox.backlog == 0
        assert await outbox.resume_stay("space-1", "p1", "guest-other") is None
        assert await outbox.resume_stay("space-2", "p1", "guest-1") is None
        assert await outbox.resume_stay("space-1", "p1", "guest-1") == started
        assert outbox.held == 0 and outbox.owed() == 0 and outbox.backlog == 0
        assert await outbox.resume_stay("space-1", "p1", "guest-1") is None
    finally:
        await outbox.close()


async def test_a_held_exit_is_owed_once_the_grace_period_is_over() -> None:
    outbox = ExitOutbox(AppClient("http://127.0.0.1:9", None), ExitJournal(":memory:"), grace=0.2)
    try:
        event = exit_event_for("guest-1", "space-1", "leave", 3, "p1", time.time() - 3)
        assert event is not None
        await outbox.hold(event)
        await asyncio.sleep(0.4)
        assert outbox.held == 0 and outbox.owed() == 1  # not started: queued, not sent
        assert await outbox.resume_stay("space-1", "p1", "guest-1") is None
    finally:
        await outbox.close()

"""The chat history writer on its own: batching, order, retries, a full queue, a message the
database refuses, a database that stays down, guest ids looked up once. A recording
broadcaster stands in for the sockets; the storage is a real SQLite file or one that fails on
demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from spacesync.chatlog import Author, ChatLog, Pending
from spacesync.domain.identity import Identity
from spacesync.fanout import Broadcaster
from spacesync.storage import NewMessage, Storage, StorageError, StorageUnavailable
from spacesync.storage.sqlite import SqliteStorage
from spacesync.texts import Catalog


class Recorder:
    """What the writer told whom: ``(route, target, event, data)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str, dict[str, Any]]] = []

    async def to_space(self, space_id: str, event: str, data: Any, *a: Any, **k: Any) -> None:
        self.sent.append(("space", space_id, event, data))

    async def to_players(self, space_id: str, ids: list[str], event: str, data: Any) -> None:
        self.sent.append(("players", tuple(ids), event, data))

    async def to_sid(self, sid: str, event: str, data: Any) -> None:
        self.sent.append(("sid", sid, event, data))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [data for _, _, name, data in self.sent if name == event]


class FlakyStorage:
    """Inserts into a list; fails the next ``failures`` calls with ``error``; refuses contents
    in ``refuse`` with a plain StorageError (as a constraint would)."""

    kind = "fake"

    def __init__(self) -> None:
        self.rows: list[NewMessage] = []
        self.calls: list[int] = []
        self.failures = 0
        self.error: StorageError = StorageUnavailable("down")
        self.refuse: set[str] = set()
        self.lookups = 0

    async def insert_messages(self, messages: Sequence[NewMessage]) -> list[str]:
        self.calls.append(len(messages))
        if self.failures:
            self.failures -= 1
            raise self.error
        if any(m.content in self.refuse for m in messages):
            raise StorageError("refused")
        start = len(self.rows)
        self.rows.extend(messages)
        return [f"row{start + i}" for i in range(len(messages))]

    async def guest_session_id(self, space_id: str, token: str) -> str | None:
        self.lookups += 1
        return f"gs-{token}" if token.startswith("guest") else None


def pending(n: int, kind: str = "chat", **extra: Any) -> Pending:
    return Pending(
        kind=kind,  # type: ignore[arg-type]
        space_id="space-1",
        temp_id=f"msg-{n}",
        author=extra.pop("author", Author("p1", user_id="u1")),
        sender_name="Ann",
        content=extra.pop("content", f"text {n}"),
        timestamp_ms=1_700_000_000_000 + n,
        sender_sid="sid-1",
        **extra,
    )


def writer(storage: Any, out: Recorder, **options: Any) -> ChatLog:
    options.setdefault("batch_window", 0.02)
    options.setdefault("retry_delays", (0.01, 0.01))
    return ChatLog(cast(Broadcaster, out), Catalog("en"), cast(Storage, storage), **options)


async def drained(log: ChatLog, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if log.figures()["queued"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(log.figures())


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    storage = await SqliteStorage.open(str(tmp_path / "history.sqlite3"))
    yield storage
    await storage.close()


async def test_one_batch_in_order_with_real_ids(sqlite: SqliteStorage) -> None:
    out = Recorder()
    log = writer(sqlite, out)
    for n in range(30):
        log.submit(pending(n))
    await drained(log)
    updates = out.events("chat:messageIdUpdate")
    assert [u["tempId"] for u in updates] == [f"msg-{n}" for n in range(30)]
    assert log.figures()["batches"] == 1 and log.figures()["written"] == 30
    stored = await sqlite.recent_messages("space-1", 100)
    assert [m.id for m in stored] == [u["realId"] for u in updates]
    assert [m.content for m in stored] == [f"text {n}" for n in range(30)]
    assert stored[0].sender_type == "USER" and stored[0].sender_id == "u1"
    assert all(route == "space" for route, *_ in out.sent)


async def test_batches_are_capped(sqlite: SqliteStorage) -> None:
    out = Recorder()
    log = writer(sqlite, out, max_batch=10)
    for n in range(25):
        log.submit(pending(n))
    await drained(log)
    assert log.figures()["batches"] == 3
    assert [u["tempId"] for u in out.events("chat:messageIdUpdate")] == [
        f"msg-{n}" for n in range(25)
    ]


async def test_retried_then_written() -> None:
    storage, out = FlakyStorage(), Recorder()
    storage.failures = 2
    log = writer(storage, out)
    log.submit(pending(1))
    await drained(log)
    assert storage.calls == [1, 1, 1]
    assert out.events("chat:messageIdUpdate") == [{"tempId": "msg-1", "realId": "row0"}]
    assert log.figures()["retries"] == 2 and log.figures()["failed"] == 0


async def test_down_database_fails_fast_after_the_first_batch() -> None:
    storage, out = FlakyStorage(), Recorder()
    storage.failures = 100
    log = writer(storage, out)
    log.submit(pending(1, "whisper", recipients=("p2",), target=Author("p2", user_id="u2")))
    await drained(log)
    assert storage.calls == [1, 1, 1]
    failed = out.events("whisper:messageFailed")
    assert failed == [{"tempId": "msg-1", "reason": "Your whisper could not be saved."}] * 2
    assert {route for route, _, name, _ in out.sent} == {"sid", "players"}
    log.submit(pending(2))
    await drained(log)
    assert storage.calls == [1, 1, 1, 1]  # one try while it is known to be down
    assert log.figures()["databaseDown"] is True
    storage.failures = 0
    log.submit(pending(3))
    await drained(log)
    assert out.events("chat:messageIdUpdate") == [{"tempId": "msg-3", "realId": "row0"}]
    assert log.figures()["databaseDown"] is False
    assert log.figures()["failed"] == 2


async def test_a_refused_message_does_not_sink_its_batch() -> None:
    storage, out = FlakyStorage(), Recorder()
    storage.refuse = {"bad"}
    log = writer(storage, out)
    log.submit(pending(1))
    log.submit(pending(2, content="bad"))
    log.submit(pending(3))
    await drained(log)
    assert [u["tempId"] for u in out.events("chat:messageIdUpdate")] == ["msg-1", "msg-3"]
    assert out.events("chat:messageFailed") == [
        {"tempId": "msg-2", "reason": "Your message could not be saved. Please send it again."}
    ]


async def test_full_queue_refuses_at_once() -> None:
    storage, out = FlakyStorage(), Recorder()
    log = writer(storage, out, max_queue=3, batch_window=0.2)
    for n in range(5):
        log.submit(pending(n))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [f["tempId"] for f in out.events("chat:messageFailed")] == ["msg-3", "msg-4"]
    await drained(log)
    assert len(out.events("chat:messageIdUpdate")) == 3
    assert log.figures()["dropped"] == 2


async def test_party_failure_is_not_taken_back_and_updates_go_to_members() -> None:
    storage, out = FlakyStorage(), Recorder()
    log = writer(storage, out)
    log.submit(pending(1, "party", recipients=("p1", "p2"), party_id="party-9"))
    await drained(log)
    assert out.sent == [
        ("players", ("p1", "p2"), "chat:messageIdUpdate", {"tempId": "msg-1", "realId": "row0"})
    ]
    assert storage.rows[0].type == "PARTY" and storage.rows[0].target_id == "party-9"
    storage.failures = 10
    log.submit(pending(2, "party", recipients=("p1", "p2"), party_id="party-9"))
    await drained(log)
    assert len(out.sent) == 1 and log.figures()["failed"] == 1


async def test_authors_as_the_app_names_them() -> None:
    storage, out = FlakyStorage(), Recorder()
    log = writer(storage, out)
    guest = Identity("guest-x", "Visitor", session_token="guest-tok", verified=True)
    user = Identity("user-u9", "Ann", session_token="auth-u9", user_id="u9", verified=True)
    dev = Identity("alice", "Alice", session_token="dev-alice")
    for n, sender, target in ((1, guest, user), (2, user, guest), (3, dev, guest), (4, guest, dev)):
        log.submit(
            pending(n, "whisper", author=Author.of(sender), target=Author.of(target), recipients=())
        )
    await drained(log)
    got = [(r.sender_type, r.sender_id, r.target_id) for r in storage.rows]
    assert got == [
        ("GUEST", "gs-guest-tok", "u9"),
        ("USER", "u9", "gs-guest-tok"),
        ("GUEST", "alice", "gs-guest-tok"),
        ("GUEST", "gs-guest-tok", "alice"),
    ]
    assert storage.lookups == 1  # cached per space and token
    assert "guest-tok" not in {r.sender_id for r in storage.rows}
    known = Identity(
        "guest-y", "Other", session_token="guest-2", verified=True, guest_session_id="gs-known"
    )
    log.submit(pending(5, author=Author.of(known)))
    await drained(log)
    assert (storage.rows[-1].sender_type, storage.rows[-1].sender_id) == ("GUEST", "gs-known")
    assert storage.lookups == 1  # the join's lookup is used as it is


async def test_without_storage_nothing_is_kept_or_told() -> None:
    out = Recorder()
    log = ChatLog(cast(Broadcaster, out), Catalog("en"), None)
    log.submit(pending(1))
    await asyncio.sleep(0.05)
    assert out.sent == [] and log.figures()["enabled"] is False


async def test_close_writes_what_is_queued(sqlite: SqliteStorage) -> None:
    out = Recorder()
    log = writer(sqlite, out, batch_window=0.05)
    for n in range(5):
        log.submit(pending(n))
    assert await log.close(2.0) == 0
    assert len(await sqlite.recent_messages("space-1", 10)) == 5
    log.submit(pending(9))
    await asyncio.sleep(0.01)
    assert out.events("chat:messageFailed")[-1]["tempId"] == "msg-9"

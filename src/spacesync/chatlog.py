"""Chat history: chat, whisper and party messages written to the database after delivery.

FlowSpace's client shows a message the moment it arrives, under the temporary id the server gave
it, and later swaps that id for the database's when it hears ``chat:messageIdUpdate`` (or
``whisper:messageIdUpdate``) ``{tempId, realId}``; deleting or reacting to a message needs the
database id. When the row cannot be written it hears ``chat:messageFailed`` (or
``whisper:messageFailed``) ``{tempId, reason}`` and takes the message away again, as the
original server did. Who hears what follows the original exactly:

- a space message: the id update, or the failure, goes to the whole space;
- a whisper: to the sender's socket and to every socket of the target;
- a party message: ``chat:messageIdUpdate`` to the party's members; a failure is only logged
  (the original never took a party message back either).

Delivery never waits for the database. Handlers :meth:`ChatLog.submit` after broadcasting;
one background task collects what arrives within :data:`BATCH_WINDOW` (at most
:data:`MAX_BATCH` messages) and writes it in one transaction, in the order submitted, so the
history keeps the order players saw. A batch that cannot be written is tried again a bounded
number of times; while the database is known to be down each batch gets a single try, so a
backlog fails quickly instead of piling up behind timeouts. A full queue refuses at once with
the failure event. In a cluster each node writes the messages of its own players, and the id
updates reach the other nodes' players through the space bus like every other event.

Senders and whisper targets are stored as the app names them: ``USER`` with the ``User.id``,
``GUEST`` with the ``GuestSession.id`` (looked up from the verified session token, never the
token itself, which is a credential the app's history route would hand to every member).
Development sessions (``dev-*`` tokens, or a token the app did not vouch for in development)
have neither; they are stored as ``GUEST`` under their player id, so the history still tells
their authors apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .domain.identity import Identity
from .fanout import Broadcaster
from .observability.logging import log
from .storage import NewMessage, Storage, StorageError, StorageUnavailable
from .storage.base import MessageType, SenderType
from .texts import Catalog

BATCH_WINDOW = 0.1
"""Seconds the writer waits for more messages after the first one of a batch."""
MAX_BATCH = 100
MAX_QUEUE = 2_000
"""Messages that may wait for the database; past this a message is refused with its failure
event straight away (memory stays bounded while the database is down)."""
RETRY_DELAYS = (0.25, 1.0)
"""Pauses between the tries of one batch: three tries in all, within a few seconds."""
GUEST_ID_CACHE = 10_000

Kind = Literal["chat", "whisper", "party"]
_TYPES: dict[Kind, MessageType] = {"chat": "MESSAGE", "whisper": "WHISPER", "party": "PARTY"}


@dataclass(frozen=True, slots=True)
class Author:
    """Who a stored message names (as sender or whisper target), before the database lookup.

    ``guest_token`` is set only for a verified guest whose ``GuestSession.id`` is not known yet;
    it is used for the lookup and never stored."""

    player_id: str
    user_id: str | None = None
    guest_session_id: str | None = None
    guest_token: str | None = None

    @classmethod
    def of(cls, identity: Identity) -> Author:
        # The join looks the guest session up when the storage answers; when it did not (a
        # database down at that moment), the writer looks it up again in the background.
        guest_id = identity.guest_session_id
        token = None
        if identity.user_id is None and guest_id is None and identity.verified:
            token = identity.session_token
        return cls(identity.player_id, identity.user_id, guest_id, token)


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivered message waiting to be written, and where its id update goes."""

    kind: Kind
    space_id: str
    temp_id: str
    author: Author
    sender_name: str
    content: str
    timestamp_ms: int
    sender_sid: str
    recipients: tuple[str, ...] = ()
    """Whisper: the target's player id; party: the members' player ids."""
    target: Author | None = None
    party_id: str | None = None


class ChatLog:
    """The background writer; see the module docstring. ``storage=None`` keeps no history."""

    def __init__(
        self,
        out: Broadcaster,
        catalog: Catalog,
        storage: Storage | None = None,
        *,
        batch_window: float = BATCH_WINDOW,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.out = out
        self.catalog = catalog
        self.storage = storage
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.retry_delays = tuple(retry_delays)
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._down = False
        self._closing = False
        self._guest_ids: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self.batches = 0
        self.last_batch_ms = 0.0
        self.max_batch_ms = 0.0

    # -- intake ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.storage is not None

    def submit(self, entry: Pending) -> None:
        """Queue a message that has just been delivered; never waits."""
        if self.storage is None:
            return
        if self._closing:
            self.dropped += 1
            self.failed += 1
            self._spawn(self._report_failure([entry]))
            return
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            self.failed += 1
            log.warn(
                "E4006",
                "Chat message not saved: the chat history queue is full",
                spaceId=entry.space_id,
                queued=self._queue.qsize(),
            )
            self._spawn(self._report_failure([entry]))
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def figures(self) -> dict[str, Any]:
        """The ``chatLog`` section of ``GET /metrics``."""
        return {
            "enabled": self.enabled,
            "storage": self.storage.kind if self.storage is not None else None,
            "written": self.written,
            "failed": self.failed,
            "dropped": self.dropped,
            "retries": self.retries,
            "queued": self._queue.qsize() + self._in_flight,
            "batches": self.batches,
            "batchMs": round(self.last_batch_ms, 1),
            "maxBatchMs": round(self.max_batch_ms, 1),
            "databaseDown": self._down,
        }

    async def close(self, timeout: float) -> int:
        """Write what is queued within ``timeout`` seconds, then stop; the number left unsaved."""
        self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        while (self._queue.qsize() or self._in_flight) and time.monotonic() < deadline:
            if self._task is None or self._task.done():
                break
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        left = self._queue.qsize() + self._in_flight
        if left:
            self.dropped += left
            log.warn("E4006", f"{left} chat messages were not saved before shutdown", left=left)
        return left

    # -- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            self._in_flight = 1
            started = loop.time()
            # Wait for the rest of the batch only when the queue cannot fill it already.
            if self._queue.qsize() + 1 < self.max_batch and not self._closing:
                await asyncio.sleep(max(0.0, started + self.batch_window - loop.time()))
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_flight = len(batch)
            try:
                await self._write(batch)
            except Exception as exc:  # the writer must outlive any mistake
                log.error("E4006", "Chat history writer failed", exc=exc)
                self.failed += len(batch)
                await self._report_failure(batch)
            finally:
                self._in_flight = 0

    async def _write(self, batch: list[Pending]) -> None:
        storage = self.storage
        assert storage is not None
        started = time.perf_counter()
        tries = 1 if self._down else len(self.retry_delays) + 1
        error: Exception | None = None
        for attempt in range(tries):
            if attempt:
                self.retries += 1
                await asyncio.sleep(self.retry_delays[attempt - 1])
            try:
                rows = [await self._row(storage, entry) for entry in batch]
                ids = await storage.insert_messages(rows)
            except StorageUnavailable as exc:
                error = exc
                if not self._down:
                    log.error("E4006", "Chat history: the database is unavailable", exc=exc)
                self._down = True
                continue
            except (StorageError, ValueError) as exc:
                if len(batch) > 1:
                    # One message the database refuses must not take the others down with it.
                    for entry in batch:
                        await self._write([entry])
                    return
                error = exc
                break
            self._note_batch(started)
            if self._down:
                log.info("I4004", "Chat history: the database answers again")
            self._down = False
            self.written += len(ids)
            for entry, real_id in zip(batch, ids, strict=True):
                await self._report_saved(entry, real_id)
            return
        self._note_batch(started)
        self.failed += len(batch)
        log.warn(
            "E4006",
            f"{len(batch)} chat messages could not be saved",
            error=str(error),
            spaces=sorted({entry.space_id for entry in batch})[:10],
        )
        await self._report_failure(batch)

    def _note_batch(self, started: float) -> None:
        self.batches += 1
        self.last_batch_ms = (time.perf_counter() - started) * 1000
        self.max_batch_ms = max(self.max_batch_ms, self.last_batch_ms)

    async def _row(self, storage: Storage, entry: Pending) -> NewMessage:
        sender_type, sender_id = await self._subject(storage, entry.space_id, entry.author)
        target_id: str | None = entry.party_id
        if entry.target is not None:
            target_id = (await self._subject(storage, entry.space_id, entry.target))[1]
        return NewMessage(
            space_id=entry.space_id,
            sender_id=sender_id,
            sender_type=sender_type,
            sender_name=entry.sender_name,
            content=entry.content,
            type=_TYPES[entry.kind],
            target_id=target_id,
            created_at=datetime.fromtimestamp(entry.timestamp_ms / 1000, UTC),
        )

    async def _subject(
        self, storage: Storage, space_id: str, author: Author
    ) -> tuple[SenderType, str]:
        """``senderType`` and ``senderId`` (or ``targetId``) as the app's history route reads
        them: the user id, else the guest session id, else (development) the player id."""
        if author.user_id is not None:
            return "USER", author.user_id
        if author.guest_session_id is not None:
            return "GUEST", author.guest_session_id
        if author.guest_token is not None:
            key = (space_id, author.guest_token)
            found = self._guest_ids.get(key)
            if found is None:
                found = await storage.guest_session_id(space_id, author.guest_token)
                if found is not None:
                    if len(self._guest_ids) >= GUEST_ID_CACHE:
                        self._guest_ids.pop(next(iter(self._guest_ids)))
                    self._guest_ids[key] = found
            if found is not None:
                return "GUEST", found
        return "GUEST", author.player_id

    # -- telling the clients ----------------------------------------------------------------

    async def _report_saved(self, entry: Pending, real_id: str) -> None:
        data = {"tempId": entry.temp_id, "realId": real_id}
        if entry.kind == "chat":
            await self.out.to_space(entry.space_id, "chat:messageIdUpdate", data)
        elif entry.kind == "whisper":
            await self.out.to_sid(entry.sender_sid, "whisper:messageIdUpdate", data)
            await self.out.to_players(
                entry.space_id, list(entry.recipients), "whisper:messageIdUpdate", data
            )
        else:
            await self.out.to_players(
                entry.space_id, list(entry.recipients), "chat:messageIdUpdate", data
            )

    async def _report_failure(self, entries: Sequence[Pending]) -> None:
        for entry in entries:
            try:
                if entry.kind == "chat":
                    data = {
                        "tempId": entry.temp_id,
                        "reason": self.catalog.text("error.chat.save_failed"),
                    }
                    await self.out.to_space(entry.space_id, "chat:messageFailed", data)
                elif entry.kind == "whisper":
                    data = {
                        "tempId": entry.temp_id,
                        "reason": self.catalog.text("error.whisper.save_failed"),
                    }
                    await self.out.to_sid(entry.sender_sid, "whisper:messageFailed", data)
                    await self.out.to_players(
                        entry.space_id, list(entry.recipients), "whisper:messageFailed", data
                    )
                # A party message stays shown when it could not be saved, as in the original.
            except Exception as exc:
                log.error("E4006", "Telling a chat message's failure failed", exc=exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

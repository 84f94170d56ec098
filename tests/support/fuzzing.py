"""Property-based fuzzing of the real server (SPEC §3, §4, §5, §6, §8, §11).

Building blocks for ``tests/fuzz``:

- :class:`LoopThread`: an asyncio event loop on a background thread, so that synchronous
  Hypothesis tests (``@given``) can drive long-lived python-socketio clients.
- :class:`FuzzClient`: a python-socketio ``AsyncClient`` over WebSocket that records everything it
  receives (and its disconnect reason) and can send any arguments, raw Socket.IO packets and raw
  binary frames.
- Strategies: hostile values (wrong types, huge and non-finite numbers, unicode edge cases,
  binary, deep nesting), per-event payload templates mutated field by field, envelopes (no
  payload, extra arguments), unknown and non-string event names, and raw packets.
- :func:`shape_problems`: what the server sends must match the shapes of SPEC §3/§5, whatever it
  was sent.
- :class:`Arena`: a space with a passive *bystander* and a well-behaved *probe*, rebuilt when an
  example leaves it in doubt, plus the checks that close every example (server healthy, fuzzing
  sockets still served, bystander undisturbed, no state corrupted, logs clean).
- :func:`message_fate`: what the server does with a message under the Socket.IO protocol: a
  packet that is not valid Socket.IO (or binary input) closes the connection unanswered, one
  for another namespace or an acknowledgement of nothing is ignored, a DISCONNECT makes the
  socket leave, an event is handled.
- :class:`ReplyOracle`: how many error replies a batch may get, knowing the documented rate
  limits (one ``RATE_LIMITED`` answer per limit and window, later excess refused silently) and
  which messages close their connection unanswered (the sender then comes back on a new one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import re
import string
import struct
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import socketio
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as _hypothesis_engine
from socketio import packet as sio_packet

from support.ids import dev_token, space_id, unique
from support.live_shapes import live_shape_problems
from support.server import ServerProcess

T = TypeVar("T")

# Payloads nested 500 levels deep go through recursive Python code (python-socketio's binary
# packet encoder, and this module's own helpers) that needs more than the default 1000 frames.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

# --------------------------------------------------------------------------------------------
# Protocol facts taken from the SPEC (not from the implementation)

ID_PATTERN = r"[A-Za-z0-9_.:@-]{1,100}"
ID_RE = re.compile(ID_PATTERN)
AVATAR_FIELD_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")  # README "Security": avatar fields
AVATAR_COLORS = ("default", "red", "green", "purple", "orange", "pink", "yellow", "blue")
DIRECTIONS = ("up", "down", "left", "right")
ROLES = ("OWNER", "STAFF", "PARTICIPANT")
CHAT_TYPES = ("message", "whisper", "party", "system", "announcement")
MAX_COORD = 1_000_000
SPAWN = {"x": 480, "y": 320, "direction": "down", "isMoving": False}

ERROR_CHANNELS = ("error", "chat:error", "whisper:error", "party:error", "proximity:error")
ERROR_CHANNELS += ("reaction:error", "recording:error", "spotlight:error", "object:error")
ERROR_CHANNELS += ("admin:error",)

# Client -> server events (SPEC §4).
CLIENT_EVENTS = (
    "join:space",
    "leave:space",
    "player:move",
    "player:jump",
    "player:updateProfile",
    "chat:message",
    "whisper:send",
    "party:create",
    "party:invite",
    "party:accept",
    "party:decline",
    "party:leave",
    "party:message",
    "party:join",
    "joinParty",
    "leaveParty",
    "proximity:set",
    "reaction:toggle",
    "recording:start",
    "recording:stop",
    "spotlight:activate",
    "spotlight:deactivate",
    "object:place",
    "object:update",
    "object:delete",
    "admin:mute",
    "admin:unmute",
    "admin:kick",
    "admin:unban",
    "admin:deleteMessage",
    "admin:announce",
)
# Events whose payload is an object (SPEC §4 table): anything else is bad input (SPEC §8).
OBJECT_PAYLOAD_EVENTS = frozenset(CLIENT_EVENTS) - {"leave:space", "leaveParty", "party:leave"}
OBJECT_PAYLOAD_EVENTS -= {"recording:start", "recording:stop"}  # the client sends {}
OBJECT_PAYLOAD_EVENTS -= {"spotlight:activate", "spotlight:deactivate"}

# Largest Engine.IO message a generated payload may produce: the transport refuses more than
# 64 KiB (SPEC §8), which is tested on its own.
MESSAGE_BUDGET = 60_000

# --------------------------------------------------------------------------------------------
# The background event loop


class LoopThread:
    """An event loop running on a daemon thread; ``run`` waits for a coroutine from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="fuzz-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"fuzz step still running after {timeout}s") from None

    def close(self) -> None:
        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(10)
            except Exception:  # pragma: no cover - best effort at teardown
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


# --------------------------------------------------------------------------------------------
# A recording python-socketio client


@dataclass
class Received:
    event: Any
    args: tuple[Any, ...]

    @property
    def payload(self) -> Any:
        if len(self.args) == 1:
            return self.args[0]
        return list(self.args) if self.args else None


class FuzzClient:
    """One WebSocket connection; everything received is kept in ``events`` in arrival order.

    A client whose connection the server closed (as it must for binary input) can
    :meth:`reconnect`: a new connection under the same name, still recording into the same
    ``events``, so indices taken before stay valid."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Received] = []
        self.disconnect_reason: str | None = None
        self.player_id: str | None = None
        self.space_id: str | None = None
        self.nickname: str | None = None
        self.messages_sent = 0
        self.connections = 0
        self.url = ""
        self.join_fields: dict[str, Any] = {}
        self._arrived = asyncio.Event()
        self.sio = self._new_sio()

    def _new_sio(self) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False)

        async def on_any(event: Any, *args: Any) -> None:
            if sio is self.sio:
                self.events.append(Received(event, args))
                self._arrived.set()

        async def on_disconnect(reason: Any = None) -> None:
            if sio is self.sio:
                self.disconnect_reason = str(reason)
                self._arrived.set()

        sio.on("*", on_any)
        sio.on("disconnect", on_disconnect)
        return sio

    @property
    def connected(self) -> bool:
        return self.sio.connected and self.disconnect_reason is None

    async def connect(self, url: str) -> FuzzClient:
        self.url = url
        self.connections += 1
        await self.sio.connect(url, transports=["websocket"], wait_timeout=10)
        return self

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes this connection within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass
        return True

    async def reconnect(self) -> FuzzClient:
        """A fresh connection (not joined to anything) after the server closed this one."""
        old = self.sio
        self.sio = self._new_sio()
        if old.connected:
            try:
                await asyncio.wait_for(old.disconnect(), 5)
            except (TimeoutError, OSError):  # pragma: no cover - best effort
                pass
        self.disconnect_reason = None
        self.player_id = self.space_id = None
        return await self.connect(self.url)

    async def close(self) -> None:
        if self.sio.connected:
            try:
                await asyncio.wait_for(self.sio.disconnect(), 10)
            except (TimeoutError, OSError):  # pragma: no cover - best effort
                pass
        if self.disconnect_reason is None:
            self.disconnect_reason = "closed by the test"

    async def emit_args(self, event: Any, args: Sequence[Any]) -> None:
        """Send ``event`` with exactly these positional arguments (none, one, or several)."""
        self.messages_sent += 1
        await self.sio.emit(event, tuple(args))

    async def send_raw(self, message: str | bytes) -> None:
        """One Engine.IO message: a raw Socket.IO packet (text) or a binary frame (bytes)."""
        self.messages_sent += 1
        if self.connected:
            await self.sio.eio.send(message)

    async def sync(self, timeout: float = 10.0) -> None:
        """Returns once the server has handled everything this client sent before (the server
        handles one client's events in order, SPEC §5; unknown events are acknowledged)."""
        if not self.connected:
            raise AssertionError(f"{self.name} is disconnected ({self.disconnect_reason})")
        try:
            await self.sio.call("fuzz:sync", timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise AssertionError(
                f"{self.name}: the server did not answer within {timeout}s "
                f"(stalled, or stopped serving this socket; connected={self.connected}, "
                f"disconnect reason={self.disconnect_reason})"
            ) from None
        except socketio.exceptions.SocketIOError as exc:
            raise AssertionError(
                f"{self.name} lost its connection ({self.disconnect_reason}): {exc!r}"
            ) from None

    async def sync_or_closed(self, timeout: float = 10.0) -> bool:
        """After input that may close this connection: True once the server has closed it,
        False once it has answered a sync (it kept the connection)."""
        synced = asyncio.ensure_future(self.sync(timeout))
        closed = asyncio.ensure_future(self.wait_closed(timeout))
        try:
            done, _ = await asyncio.wait({synced, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            closed.cancel()
        if closed in done and not closed.cancelled() and closed.result():
            return True
        if synced in done and not synced.cancelled() and synced.exception() is None:
            return False
        if await self.wait_closed(5.0):
            return True
        raise AssertionError(
            f"{self.name}: neither answered nor closed within {timeout}s "
            f"(connected={self.connected}, disconnect reason={self.disconnect_reason})"
        )

    def since(self, index: int) -> list[Received]:
        return self.events[index:]

    async def wait_for(
        self,
        event: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        start: int = 0,
        timeout: float = 10.0,
    ) -> Any:
        """The first matching event received from index ``start`` on (waits for it)."""
        deadline = time.monotonic() + timeout
        scanned = start
        while True:
            for item in self.events[scanned:]:
                if item.event == event and (predicate is None or _safe(predicate, item.payload)):
                    return item.payload
            scanned = max(scanned, len(self.events))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.connected:
                seen = [(e.event, _short(e.payload)) for e in self.events[start:]][-15:]
                raise AssertionError(
                    f"{self.name}: no {event!r} within {timeout}s "
                    f"(connected={self.connected}, disconnect reason={self.disconnect_reason}); "
                    f"last events: {seen}"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def index_of(self, event: str, predicate: Callable[[Any], bool], start: int = 0) -> int:
        """Index in ``events`` of the first matching event from ``start`` (-1 if none)."""
        for index in range(start, len(self.events)):
            item = self.events[index]
            if item.event == event and _safe(predicate, item.payload):
                return index
        return -1

    async def join(
        self,
        space: str,
        nickname: str,
        player_id: str,
        *,
        timeout: float = 10.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """Join ``space`` (development token) and return its ``room:joined``; raises
        :class:`JoinRateLimited` if the join is refused with ``RATE_LIMITED`` (a socket may
        join 5 times per 10 s, a player 20 times a minute)."""
        start = len(self.events)
        payload = {
            "spaceId": space,
            "playerId": player_id,
            "nickname": nickname,
            "sessionToken": dev_token(),
            **fields,
        }
        await self.emit_args("join:space", [payload])

        def answer(item: Received) -> bool:
            p = item.payload
            if item.event == "error":
                return isinstance(p, dict) and p.get("code") == "RATE_LIMITED"
            return (
                item.event == "room:joined"
                and isinstance(p, dict)
                and p.get("spaceId") == space
                and p.get("yourPlayerId") == player_id
            )

        deadline = time.monotonic() + timeout
        while True:
            found = next((item for item in self.events[start:] if answer(item)), None)
            if found is not None:
                break
            if time.monotonic() >= deadline or not self.connected:
                await self.wait_for("room:joined", start=len(self.events), timeout=0)
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 0.2)
            except TimeoutError:
                pass
        if found.event == "error":
            raise JoinRateLimited(f"{self.name}: join refused: {found.payload}")
        self.player_id, self.space_id, self.nickname = player_id, space, nickname
        self.join_fields = fields
        return dict(found.payload)


class JoinRateLimited(AssertionError):
    """A join was refused with ``RATE_LIMITED``."""


def _safe(predicate: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(predicate(value))
    except (KeyError, TypeError, AttributeError, IndexError):
        return False


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# --------------------------------------------------------------------------------------------
# Placeholders resolved when a payload is sent


@dataclass(frozen=True)
class Ref:
    """A value only known at run time: ``self`` (the sender's player id), ``other`` (the other
    fuzzing player), ``bystander``, ``probe``, ``space`` (the arena's space), ``party`` (a party
    id seen so far, by index), ``nick:<who>`` (a current nickname), ``message`` (a database
    message id seen so far, by index), ``member:other`` (the other fuzzing player's id, never
    anyone else's), ``member:nick:<self|other>`` (``nickname:<its nickname>``, as moderation
    names a member)."""

    name: str
    index: int = 0


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()


def resolve(value: Any, refs: Callable[[Ref], Any]) -> Any:
    if isinstance(value, Ref):
        return refs(value)
    if isinstance(value, dict):
        return {k: resolve(v, refs) for k, v in value.items() if v is not OMIT}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Messages and hostile values
#
# Hypothesis draws, for every message slot, whether it is used, its shape and a seed; a seeded
# generator (:class:`Gen`) builds the content from that. Drawing each of thousands of nested
# values through Hypothesis would cost several milliseconds per payload; this way a batch costs
# little to generate, every example is reproducible from Hypothesis's output (seed or blob), and
# shrinking still switches off every message a failure does not need.


@dataclass(frozen=True)
class Message:
    """One thing a fuzzing client sends: an event with arguments, or raw Engine.IO messages."""

    event: Any = None
    args: tuple[Any, ...] = ()
    raw: tuple[str | bytes, ...] = ()
    sender: int = 0  # which fuzzing client sends it

    def __repr__(self) -> str:
        who = f" from #{self.sender}" if self.sender else ""
        if self.raw:
            return f"raw{tuple(_short(p, 300) for p in self.raw)}{who}"
        shown = ", ".join(_short(a, 400) for a in self.args)
        return f"{self.event!r}({shown}){who}"


SPECIAL_STRINGS = [
    "",
    " ",
    " \t\n\r ",
    "\x00",
    "nul\x00inside",
    "bell\x07",
    "\x1b[31mred\x1b[0m",
    "\x7f\x80\x9f",
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u200e\u200f",  # LRM, RLM
    "\u202eevil\u202c",  # RTL override
    "\u2066isolate\u2069",
    "\u2028line\u2029para",
    "\u0085next line",
    "\ufeffbom",
    "\ufffe\uffff",
    "\U0010ffff",
    "\ue000private",
    "e\u0301\u0301\u0301",
    "Z\u0351\u0354\u0367a\u0311\u0310l\u0363g\u0342o\u036b",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🧑🏿‍🚀",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",  # Arabic
    "שלום",
    "٣١٤",  # Arabic-Indic digits
    "ｕｐ",  # fullwidth "up"
    "İ",
    "ß",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<!-- comment -->x",
    "&amp;&lt;&#x27;",
    "'\"`",
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "null",
    "undefined",
    "true",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e308",
    "1e400",
    "-0",
    "0x1F",
    "480",
    " 480 ",
    "%s%n%x",
    "{{7*7}}",
    "${7*7}",
    "../../etc/passwd",
    "a/b",
    "a b",
    "up",
    "UP",
    " up",
    "down\x00",
    "classic:red",
    "custom:",
    "custom:" + "c" * 60,
    "dev-",
    "dev-token",
    "auth-",
    "auth-user-1",
    "guest-token",
    "message",
    "whisper",
    "party",
    "system",
    "announcement",
    "OWNER",
    "owner",
    "STAFF",
    "x" * 33,
    "y" * 51,
    "z" * 101,
]


BIG_STRINGS = [
    "x" * 10_000,
    "y" * 2001,
    " " * 3000 + "padded" + " " * 3000,
    "\u200f" * 4000,
    "😀" * 2000,
    "e" + "\u0301" * 4000,
    "\x00" * 4000,
    "\u202e" * 3000,
    "a\u200d" * 3000,
    "<b>" * 2000,
    "&" * 5000,
    "s" * 4097,
]


EDGE_INTS = [
    0,
    -1,
    1,
    480,
    320,
    MAX_COORD,
    MAX_COORD + 1,
    -MAX_COORD,
    -MAX_COORD - 1,
    2**31 - 1,
    2**31,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    -(2**64),
    10**30,
    10**308,
    -(10**308),
    10**400,
]


EDGE_FLOATS = [
    0.0,
    -0.0,
    0.5,
    1e-300,
    5e-324,
    1e6,
    -1e6,
    1_000_000.0000001,
    -1_000_000.0000001,
    999_999.99999999,
    1e308,
    -1e308,
    1.7976931348623157e308,
    math.nan,
    math.inf,
    -math.inf,
]

RESERVED_NAMES = ["connect", "disconnect", "connect_error", "message", "*", "error", "ping"]
UNKNOWN_NAMES = [
    "no:such:event",
    "player:teleport",
    "room:joined",
    "chat:system",
    "player:moved",
    "party:joined",
    "proximity:changed",
    "__proto__",
    "constructor",
    "hasOwnProperty",
    "Player:Move",
    "player:move ",
    " chat:message",
    "join:space\x00",
    "",
    "n" * 500,
    *RESERVED_NAMES,
]
SPECIAL_KEYS = [
    "id",
    "playerId",
    "senderId",
    "spaceId",
    "type",
    "role",
    "x",
    "__proto__",
    "constructor",
    "",
    " ",
    "\x00",
    "_placeholder",
    "num",
    "😀",
]
ODD_NUMBERS = [
    *("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000, "-" + "9" * 4400),
    *("0x10", "+1", ".5", "01", "1.", "--1", "1e", "infinity", "nan"),
]
ODD_PACKETS = [
    *("", "4", "4{}", "6", "7", "9[]", "x", "-1", "0/admin,", "0/admin,{}", "1/admin,"),
    *('2/admin,["x"]', '2["x"', "2" + "[" * 64),
    # CONNECT again, or with data that is not an object; DISCONNECT (with data: invalid)
    *("0", "0{}", '0{"token":1}', "0[]", '0"auth"', "0/admin,[]", "1", "1/,", "1{}", "1[]"),
    *('4/admin,{"message":"x"}', "3", "3[]", "31", '3/admin,1["x"]'),
    # event names: the protocol's own, numbers, neither strings nor numbers
    *('2["connect"]', '2["disconnect"]', '2["connect_error",{}]', '2["disconnecting"]'),
    *('2["newListener","x"]', '2["removeListener"]', "2[1]", '2[1.5,{"content":"x"}]'),
    *("2[-0]", "2[NaN]", "2[true]", "2[null]", "2[{}]", '2[["x"]]', "2/admin,{}", "2/admin,[]"),
    # acknowledgement ids
    *('2999999999999999["no:such:event"]', '2123456789012345["x"]', '21234567890123456["x"]'),
    *('2/admin,5["x"]', '2 ["x"]', '2["x"] ', '2["x"]]', '2["x"],'),
]
ID_CHARS = string.ascii_letters + string.digits + "_.:@-"
_PRINTABLE = string.printable


def _characters(categories: set[str], limit: int = 0x30000) -> str:
    return "".join(
        c
        for c in map(chr, range(limit))
        if not 0xD800 <= ord(c) <= 0xDFFF and unicodedata.category(c) in categories
    )


# Control, format (bidi marks, zero-width joiners), combining, separators, symbols (emoji),
# private use and unassigned code points.
WEIRD_CHARS = _characters({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "So", "Co", "Cn"})
NICKNAME_CHARS = string.ascii_letters + string.digits + " _-.éüßİ日本語😀👍\u200d\u0301"


class Gen:
    """Valid and hostile values, all from one seed.

    Binary values (``bytes``, which python-socketio sends as attachments of a binary packet) are
    drawn only with ``binary=True``: any binary packet closes its connection, so a message that
    carries one ends the sender's socket, and a batch must keep most of its messages on an open
    one to exercise anything else."""

    def __init__(self, seed: int, *, binary: bool = False) -> None:
        self.r = random.Random(seed)
        self.binary_allowed = binary

    # -- hostile values ----------------------------------------------------------------------

    def text(self) -> str:
        r = self.r
        k = r.random()
        if k < 0.22:
            return "".join(r.choices(_PRINTABLE, k=r.randrange(25)))
        if k < 0.40:  # any code point but surrogates (JSON cannot carry lone ones)
            return "".join(chr(self._code_point()) for _ in range(r.randrange(25)))
        if k < 0.55:
            return "".join(r.choices(WEIRD_CHARS, k=r.randrange(1, 17)))
        if k < 0.75:
            return r.choice(SPECIAL_STRINGS)
        if k < 0.88:
            return self.identifier()
        if k < 0.96:
            return r.choice(SPECIAL_STRINGS) + self.text() + r.choice(SPECIAL_STRINGS)
        return r.choice(BIG_STRINGS)

    def _code_point(self) -> int:
        while True:
            c = self.r.choice([self.r.randrange(0x80), self.r.randrange(0x110000)])
            if not 0xD800 <= c <= 0xDFFF:
                return c

    def number(self) -> int | float:
        r = self.r
        k = r.random()
        if k < 0.25:
            return r.choice(EDGE_INTS)
        if k < 0.5:
            return r.choice(EDGE_FLOATS)
        if k < 0.7:  # integers of any size up to 80 bits
            return r.choice([1, -1]) * r.getrandbits(r.randrange(1, 81))
        if k < 0.85:  # any 64-bit pattern: subnormals, NaNs, infinities, huge exponents
            return float(struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0])
        return r.uniform(-2e6, 2e6)

    def binary(self) -> bytes:
        r = self.r
        if r.random() < 0.85:
            return r.randbytes(r.randrange(25))
        return r.choice([b"", b"\x00", bytes(range(256)), b"\xff" * 2048, b'42["chat:message"]'])

    def leaf(self) -> Any:
        k = self.r.random()
        if k < 0.08:
            return None
        if k < 0.16:
            return self.r.random() < 0.5
        if k < 0.45:
            return self.number()
        if k < 0.9 or not self.binary_allowed:
            return self.text()
        return self.binary()

    def key(self) -> str:
        if self.r.random() < 0.5:
            return self.r.choice(SPECIAL_KEYS)
        return self.text()[:12]

    def container(self, depth: int = 0) -> Any:
        r = self.r
        size = r.randrange(5)
        child = (lambda: self.container(depth + 1)) if depth < 3 else self.leaf

        def item() -> Any:
            return child() if r.random() < 0.25 else self.leaf()

        if r.random() < 0.5:
            return [item() for _ in range(size)]
        return {self.key(): item() for _ in range(size)}

    def deep(self) -> Any:
        """A value nested 17 to 500 levels deep (lists, objects or both)."""
        r = self.r
        depth = r.choice([17, 50, 100, 200, 500, r.randrange(17, 501)])
        style = r.choice(["list", "dict", "mixed"])
        key = r.choice(["a", "content", "x", "__proto__", ""])
        value: Any = r.choice([None, 1, "leaf", b"\x01", {}])
        for level in range(depth):
            value = [value] if style == "list" or (style == "mixed" and level % 2) else {key: value}
        return value

    def placeholder(self) -> dict[str, Any]:
        """What a binary attachment's placeholder looks like on the wire, sent as plain data."""
        value: dict[str, Any] = {"_placeholder": self.r.choice([True, False, 1, "true"])}
        if self.r.random() < 0.8:
            value["num"] = self.r.choice([0, 1, 2, 5, -1, "0", None, 2**70, 0.5])
        return value

    def hostile(self) -> Any:
        """Any value at all: leaves, small containers, fake placeholders, deep nesting."""
        k = self.r.random()
        if k < 0.62:
            return self.leaf()
        if k < 0.84:
            return self.container()
        if k < 0.94:
            return self.deep()
        return self.placeholder()

    def non_string(self) -> Any:
        while True:
            value = self.hostile()
            if not isinstance(value, str):
                return value

    # -- valid values (SPEC §3, §4) ----------------------------------------------------------

    def identifier(self) -> str:
        return "".join(self.r.choices(ID_CHARS, k=self.r.randrange(1, 31)))

    def nickname(self) -> str:
        r = self.r
        if r.random() < 0.3:
            return r.choice(["Alice", "Bob", "Bystander", "Probe", "Accomplice", "Fuzzer"])
        name = "".join(r.choices(NICKNAME_CHARS, k=r.randrange(1, 33)))
        return name if name.strip() else "n" + name[1:]

    def coordinate(self) -> int | float:
        r = self.r
        k = r.random()
        if k < 0.4:
            return r.randint(-MAX_COORD, MAX_COORD)
        if k < 0.8:
            return r.uniform(-MAX_COORD, MAX_COORD)
        return r.choice([0, 480, 320, MAX_COORD, -MAX_COORD, -0.0, 0.1, 999_999.999])

    def color(self) -> str:
        return self.r.choice([*AVATAR_COLORS, "RED", "classic:red", "", "custom:x"])

    def avatar_config(self) -> Any:
        r = self.r
        k = r.random()
        if k < 0.4:
            return {"type": "classic", "colorId": self.color()}
        if k < 0.8:
            return {"type": "custom", "characterId": self.text()[:50] or "c"}
        config: dict[str, Any] = {"type": r.choice(["classic", "custom", "robot", None, 1])}
        if r.random() < 0.7:
            config[r.choice(["colorId", "characterId"])] = self.hostile()
        return config

    def content(self) -> str:
        if self.r.random() < 0.5:
            return "".join(self.r.choices(_PRINTABLE, k=self.r.randrange(1, 80)))
        return self.text()

    def party_ref(self) -> Any:
        if self.r.random() < 0.6:
            return Ref("party", self.r.randrange(4))
        return self.identifier()

    def player_ref(self) -> Any:
        if self.r.random() < 0.75:
            return Ref(self.r.choice(["bystander", "probe", "other", "self"]))
        return self.identifier()

    def nickname_ref(self) -> Any:
        if self.r.random() < 0.6:
            return Ref(self.r.choice(["nick:bystander", "nick:other", "nick:self"]))
        return self.nickname()

    def reply_to(self) -> Any:
        reply: dict[str, Any] = {}
        for name, valid in (
            ("id", self.identifier),
            ("senderNickname", self.nickname),
            ("content", self.content),
        ):
            k = self.r.random()
            if k < 0.6:
                reply[name] = valid()
            elif k < 0.85:
                reply[name] = self.hostile()
        return reply

    def token(self) -> Any:
        r = self.r
        return r.choice(
            [
                f"dev-{self.identifier()}",
                f"dev-{self.identifier()}",
                f"auth-{self.identifier()}",
                self.identifier(),
                "",
                "   ",
                "dev-",
                "x" * 4097,
            ]
        )

    def join_space(self) -> Any:
        return Ref("space") if self.r.random() < 0.6 else self.identifier()

    def join_player(self) -> Any:
        # Never another live player's id: a valid duplicate join legitimately closes their socket.
        return Ref("self") if self.r.random() < 0.5 else f"fz-{self.identifier()}"

    def role(self) -> str:
        return self.r.choice([*ROLES, "ADMIN", "owner", ""])

    def boolean(self) -> bool:
        return self.r.random() < 0.5

    def direction(self) -> str:
        return self.r.choice(DIRECTIONS)

    def chat_type(self) -> str:
        return self.r.choice(["message", "whisper", "party", "whisper", "party", "system"])

    def message_ref(self) -> Any:
        if self.r.random() < 0.6:
            return Ref("message", self.r.randrange(4))
        return self.r.choice([self.identifier(), f"msg-{self.identifier()}"])

    def kick_target(self) -> Any:
        """A ``targetMemberId`` that is the sender itself (refused) or nobody present: a fuzzing
        player may be OWNER, and a kick of the bystander, the probe or the other fuzzing player
        would end a socket the checks rely on."""
        r = self.r
        k = r.random()
        if k < 0.2:
            return Ref("self")
        if k < 0.3:
            return Ref("member:nick:self")
        if k < 0.8:
            prefix = r.choice(["", "user:", "guest:"])
            return f"{prefix}gone-{self.identifier()}"
        if k < 0.9:
            name = "".join(r.choices(NICKNAME_CHARS, k=r.randrange(1, 33)))
            return f"nickname:{name}"
        return r.choice(["nickname:", "user:", "guest:", ":", "nickname: ", "t" * 201, "a b"])

    def member_target(self) -> Any:
        """A ``targetMemberId`` for mute, unmute and unban: as :meth:`kick_target`, or the other
        fuzzing player (by id or nickname), whom a mute leaves connected."""
        k = self.r.random()
        if k < 0.2:
            return Ref("member:other")
        if k < 0.3:
            return Ref("member:nick:other")
        return self.kick_target()

    def mute_minutes(self) -> Any:
        return self.r.choice([1, 5, 60, 1.5, 43_200, 0, None, 0.5, 43_201, -1])

    # -- messages ----------------------------------------------------------------------------

    def mutated(self, event: str) -> dict[str, Any]:
        """The event's payload object with each field valid (half the time), hostile or missing,
        sometimes with extra fields."""
        r = self.r
        data: dict[str, Any] = {}
        for name, valid in TEMPLATES[event].items():
            k = r.random()
            if k < 0.5:
                data[name] = valid(self)
            elif k < 0.85:
                data[name] = self.hostile()
        if r.random() < 0.25:
            for _ in range(r.randrange(1, 4)):
                data.setdefault(self.key(), self.hostile())
        return data

    def message(self, event: str, shape: int, *, binary: bool = False) -> Message:
        """Shapes 0-5: the payload mutated; 6: a non-object payload; 7: no payload; 8: extra
        positional arguments after the payload; 9: several hostile arguments. ``binary``: the
        same with at least one binary value somewhere (the whole payload, a field, or deep
        inside one), which makes it a binary packet."""
        if binary:
            self.binary_allowed = True
            plain = self.message(event, shape)
            args = list(plain.args) or [self.binary()]
            at = self.r.randrange(len(args))
            args[at] = self.with_binary(args[at])
            return Message(event, tuple(args))
        if shape <= 5:
            return Message(event, (self.mutated(event),))
        if shape == 6:
            value = self.hostile()
            return Message(event, (value if not isinstance(value, dict) else [value],))
        if shape == 7:
            return Message(event, ())
        if shape == 8:
            extra = [self.hostile() for _ in range(self.r.randrange(1, 4))]
            return Message(event, (self.mutated(event), *extra))
        return Message(event, tuple(self.hostile() for _ in range(self.r.randrange(2, 5))))

    def with_binary(self, value: Any) -> Any:
        """``value`` with a binary value put in somewhere: it replaces the value, one of its
        fields or items, or something nested in those."""
        r = self.r
        if isinstance(value, dict) and value and r.random() < 0.8:
            key = r.choice(list(value))
            return {**value, key: self.with_binary(value[key])}
        if isinstance(value, dict) and r.random() < 0.8:
            return {**value, r.choice(["file", "content", "avatar", "x", "_placeholder"]): b"\x01"}
        if isinstance(value, list) and value and r.random() < 0.8:
            at = r.randrange(len(value))
            return [*value[:at], self.with_binary(value[at]), *value[at + 1 :]]
        return self.binary()

    def invalid_join(self, shape: int, *, binary: bool = False) -> Message:
        """A ``join:space`` that breaks SPEC §3/§4 for sure (``binary``: one carrying a binary
        value, which closes the connection instead)."""
        r = self.r
        if binary:
            self.binary_allowed = True
            payload = self.mutated("join:space")
            payload[r.choice(["spaceId", "nickname", "avatar", "x"])] = self.binary()
            return Message("join:space", (payload,))
        if shape == 6:
            value = self.hostile()
            return Message("join:space", (value if not isinstance(value, dict) else [value],))
        if shape == 7:
            return Message("join:space", ())
        payload = self.mutated("join:space")
        if shape == 8:
            return Message("join:space", (payload, self.hostile()))
        if shape == 9:
            payload[r.choice(["spaceId", "nickname"])] = self.non_string()
            return Message("join:space", (payload,))
        k = r.random()
        if k < 0.4:
            payload["spaceId"] = self.non_string() if r.random() < 0.5 else None
        elif k < 0.8:
            bad = self.text()
            payload["spaceId"] = bad if not ID_RE.fullmatch(bad) else bad + "/"
        else:
            bad = self.text()
            payload["playerId"] = (
                self.non_string() if r.random() < 0.3 or ID_RE.fullmatch(bad) else bad
            )
            if payload["playerId"] is None:
                payload["playerId"] = "no spaces allowed"
        return Message("join:space", (payload,))

    def oversized(self, event: Any) -> Message:
        """A message for ``event`` whose payload makes one Engine.IO message over 64 KiB: a long
        string, many escaped characters, a long array, or a large binary attachment."""
        r = self.r
        payload: Any = self.mutated(event) if event in TEMPLATES else {}
        kind = r.randrange(4)
        if kind == 0:
            padding: Any = "p" * r.randrange(66_000, 200_000)
        elif kind == 1:  # characters that JSON-escaping makes 6 or 12 bytes long
            unit = r.choice(["😀", "\u200f\u200d", "\x00", "\u202e"])
            padding = unit * (r.randrange(70_000, 200_000) // (len(json.dumps(unit)) - 2))
        elif kind == 2:
            padding = [r.uniform(-1e6, 1e6) for _ in range(r.randrange(5_000, 12_000))]
        else:
            padding = r.randbytes(r.randrange(66_000, 200_000))
        key = r.choice(["padding", "content", "nickname", "x", "name"])
        if isinstance(payload, dict):
            payload[key] = padding
        return Message(event, (payload,))

    def unknown(self, *, binary: bool = False) -> Message:
        """An event that is not a client event: another string, a reserved Socket.IO name, a
        server event name, odd characters, or a name that is not a string (``binary``: with a
        binary value as its name or in its arguments)."""
        r = self.r
        if binary:
            self.binary_allowed = True
            plain = self.unknown()
            if r.random() < 0.3:
                return Message(self.binary(), plain.args)
            return Message(plain.event, (*plain.args, self.with_binary(self.hostile())))
        k = r.random()
        if k < 0.45:
            name: Any = r.choice(UNKNOWN_NAMES)
        elif k < 0.75:
            name = self.text()[:60]
            if name in CLIENT_EVENTS:
                name += "?"
        else:
            name = r.choice([None, True, False, self.number(), [self.text()[:5]], {"a": 1}])
        return Message(name, tuple(self.hostile() for _ in range(r.randrange(4))))

    def raw(self, kind: int) -> Message:
        """A raw Socket.IO packet (or a binary frame): broken JSON, non-standard numbers (NaN,
        1e400, 5000-digit integers), nesting too deep for a recursive parser, odd packet types,
        namespaces and ack ids, binary events whose placeholders do not match."""
        r = self.r
        name = json.dumps(r.choice(CLIENT_EVENTS))
        if kind == 0:  # truncated JSON
            full = f"2[{name},{_json(self.container())}]"
            cut = r.randrange(2, max(3, len(full)))
            return Message(raw=(full[:cut],))
        if kind == 1:  # number literals JSON does not have, or that overflow
            literal = r.choice(ODD_NUMBERS)
            key = r.choice(["x", "y", "content", "enabled", "name", "partyId"])
            body = f'{{"{key}":{literal},"x":1,"y":20,"direction":"up","isMoving":true}}'
            return Message(raw=(f"2[{name},{body}]",))
        if kind == 2:  # nesting too deep for recursive parsers
            depth = r.choice([1000, 1025, 3000, 10_000, 25_000])
            opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
            depth = depth if opener == "[" else min(depth, 9000)
            return Message(raw=(f"2[{name},{opener * depth}1{closer * depth}]",))
        if kind == 3:  # data that is not an event array
            body = r.choice(["{}", '"x"', "1", "null", "[]", "[[]]", "true", ""])
            return Message(raw=(f"2{body}",))
        if kind == 4:  # namespaces
            namespace = r.choice(["/admin", "//", "/\x00", "/" + "n" * 300, "/socket.io"])
            return Message(raw=(f'2{namespace},[{name},{{"content":"hi"}}]',))
        if kind == 5:  # acknowledgements of nothing
            ack = r.choice(["0", "1", "99999999999999999999", "-1", ""])
            return Message(raw=(f"3{ack}{_json([self.hostile()])}",))
        if kind == 6:  # packet types that are not events, or not packets
            text = r.choice(ODD_PACKETS)
            return Message(raw=(text,))
        if kind == 7:  # binary events whose placeholders do not match the attachments
            count = r.randrange(1, 3)
            placeholders = json.dumps([self.placeholder() for _ in range(r.randrange(1, 4))])
            frames = tuple(self.binary() for _ in range(count))
            return Message(raw=(f"5{count}-[{name},{placeholders}]", *frames))
        if kind == 8:  # an event with a hostile payload, encoded by hand
            body = _json(self.hostile())
            return Message(raw=(f"2[{name},{body}]",))
        if kind == 9:  # odd escapes and whitespace inside JSON
            body = r.choice(
                [
                    '{"content":"\\ud800"}',
                    '{"content":"\\udfff\\ud800"}',
                    '{"content":"\\u00"}',
                    '{"content":"\\x41"}',
                    '{"content":"tab\\there"}',
                    '{"content":"raw\ttab"}',
                    '{"content":"a"  ,  "type" : "message" }',
                    '{"content":"dup","content":"licate"}',
                    '{"nickname":"\\u0000","spaceId":"s"}',
                    '{"name":"\\ud83d\\ude00"}',
                ]
            )
            return Message(raw=(f"2[{name},{body}]",))
        if kind == 10:  # a binary frame that no packet is waiting for
            return Message(raw=(self.binary() or b"\x00",))
        text = "".join(chr(self._code_point()) for _ in range(r.randrange(1, 40)))
        return Message(raw=(text,))


def _json(value: Any) -> str:
    """JSON for a hand-written packet (bytes become latin-1 text)."""
    return json.dumps(value, default=lambda b: bytes(b).decode("latin-1"))


# Valid field values per event (SPEC §4); a mutation keeps, replaces or drops each field.
TEMPLATES: dict[str, dict[str, Callable[[Gen], Any]]] = {
    "join:space": {
        "spaceId": Gen.join_space,
        "playerId": Gen.join_player,
        "nickname": Gen.nickname,
        "avatarColor": Gen.color,
        "avatarConfig": Gen.avatar_config,
        "sessionToken": Gen.token,
        "role": Gen.role,
        "positionBatching": Gen.boolean,
    },
    "leave:space": {},
    "player:move": {
        "x": Gen.coordinate,
        "y": Gen.coordinate,
        "direction": Gen.direction,
        "isMoving": Gen.boolean,
        "id": Gen.player_ref,
    },
    "player:jump": {"x": Gen.coordinate, "y": Gen.coordinate, "id": Gen.player_ref},
    "player:updateProfile": {
        "nickname": Gen.nickname,
        "avatarColor": Gen.color,
        "avatarConfig": Gen.avatar_config,
        "id": Gen.player_ref,
    },
    "chat:message": {
        "content": Gen.content,
        "type": Gen.chat_type,
        "targetId": Gen.player_ref,
        "targetNickname": Gen.nickname_ref,
        "partyId": Gen.party_ref,
        "replyTo": Gen.reply_to,
        "senderId": Gen.player_ref,
    },
    "whisper:send": {
        "targetId": Gen.player_ref,
        "targetNickname": Gen.nickname_ref,
        "content": Gen.content,
        "replyTo": Gen.reply_to,
    },
    "party:create": {"name": Gen.content},
    "party:invite": {"partyId": Gen.party_ref, "targetId": Gen.player_ref},
    "party:accept": {"partyId": Gen.party_ref},
    "party:decline": {"partyId": Gen.party_ref},
    "party:leave": {"partyId": Gen.party_ref},
    "party:message": {"partyId": Gen.party_ref, "content": Gen.content, "replyTo": Gen.reply_to},
    "party:join": {"partyId": Gen.party_ref, "partyName": Gen.content},
    "joinParty": {"partyId": Gen.party_ref, "partyName": Gen.content},
    "leaveParty": {},
    "proximity:set": {"enabled": Gen.boolean},
    "reaction:toggle": {
        "messageId": Gen.identifier,
        "type": lambda g: g.r.choice(["thumbsup", "heart", "check", "like"]),
    },
    "recording:start": {},
    "recording:stop": {},
    "spotlight:activate": {},
    "spotlight:deactivate": {},
    "object:place": {
        "assetId": Gen.identifier,
        "position": lambda g: {"x": g.coordinate(), "y": g.coordinate()},
        "rotation": lambda g: g.r.choice([0, 90, 180, 270, 45]),
        "customData": lambda g: {"pairType": g.content()},
    },
    "object:update": {
        "objectId": Gen.identifier,
        "position": lambda g: {"x": g.coordinate(), "y": g.coordinate()},
        "linkedObjectId": Gen.identifier,
    },
    "object:delete": {"objectId": Gen.identifier},
    "admin:mute": {
        "targetMemberId": Gen.member_target,
        "duration": Gen.mute_minutes,
        "reason": Gen.content,
    },
    "admin:unmute": {"targetMemberId": Gen.member_target},
    "admin:kick": {"targetMemberId": Gen.kick_target, "ban": Gen.boolean, "reason": Gen.content},
    "admin:unban": {"targetMemberId": Gen.member_target},
    "admin:deleteMessage": {"messageId": Gen.message_ref},
    "admin:announce": {"content": Gen.content},
}

# -- strategies ------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)

BINARY_ONE_IN = 48
"""About one generated message in this many carries a binary value (and so closes its
connection): two or three per batch, each followed by a reconnect."""


def binary_draws() -> st.SearchStrategy[bool]:
    """Whether a message carries a binary value, about one time in :data:`BINARY_ONE_IN`.
    Hypothesis favours the ends of a range, and shrinks towards its start; neither end is the
    binary case, so binary messages keep their rate and shrinking moves away from them (a
    binary message ends its socket, which hides what a failing batch does after it)."""
    return st.integers(0, 2**16 - 1).map(lambda n: n % BINARY_ONE_IN == BINARY_ONE_IN // 2)


def event_messages(event: str) -> st.SearchStrategy[Message]:
    return st.builds(
        lambda shape, binary, seed: Gen(seed).message(event, shape, binary=binary),
        st.integers(0, 9),
        binary_draws(),
        seeds,
    )


def any_event_messages() -> st.SearchStrategy[Message]:
    """A message for any client event, or an unknown one."""
    return st.one_of(
        st.builds(
            lambda event, shape, binary, seed: Gen(seed).message(event, shape, binary=binary),
            st.sampled_from(CLIENT_EVENTS),
            st.integers(0, 9),
            binary_draws(),
            seeds,
        ),
        unknown_messages(),
    )


def invalid_joins() -> st.SearchStrategy[Message]:
    return st.builds(
        lambda shape, binary, seed: Gen(seed).invalid_join(shape, binary=binary),
        st.integers(0, 9),
        binary_draws(),
        seeds,
    )


def unknown_messages() -> st.SearchStrategy[Message]:
    return st.builds(lambda binary, seed: Gen(seed).unknown(binary=binary), binary_draws(), seeds)


def oversized_messages() -> st.SearchStrategy[Message]:
    return st.builds(
        lambda event, seed: Gen(seed).oversized(event),
        st.sampled_from([*CLIENT_EVENTS, "no:such:event"]),
        seeds,
    )


def raw_messages() -> st.SearchStrategy[Message]:
    return st.builds(lambda kind, seed: Gen(seed).raw(kind), st.integers(0, 11), seeds)


# --------------------------------------------------------------------------------------------
# Sizes


def encoded_parts(message: Message, refs: Callable[[Ref], Any]) -> list[str | bytes] | None:
    """The Engine.IO messages ``message`` becomes, or None if the client cannot encode it."""
    if message.raw:
        return list(message.raw)
    try:
        data = resolve([message.event, *message.args], refs)
        encoded = sio_packet.Packet(sio_packet.EVENT, data=data).encode()
    except (ValueError, TypeError, RecursionError, OverflowError):
        return None
    return encoded if isinstance(encoded, list) else [encoded]


def fits(parts: Iterable[str | bytes]) -> bool:
    return all(len(p.encode("utf-8") if isinstance(p, str) else p) <= MESSAGE_BUDGET for p in parts)


def contains_bytes(value: Any) -> bool:
    if isinstance(value, bytes | bytearray):
        return True
    if isinstance(value, dict):
        return any(contains_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_bytes(v) for v in value)
    return False


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, dict):
        return "_placeholder" in value or any(contains_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_placeholder(v) for v in value)
    return False


# --------------------------------------------------------------------------------------------
# What the server does with a packet: the Socket.IO v5 protocol, as its reference server does
# (README "Security"). A packet that is not valid Socket.IO closes the sender's connection
# unanswered; a valid one for a namespace the socket is not connected to is ignored.

CLOSE = "close"
"""The connection is closed unanswered (E3001, ``abuse.malformedPacket`` or ``binaryPacket``)."""
IGNORED = "ignored"
"""Nothing on the error channels: an ack of nothing, another namespace, a repeated CONNECT."""
LEAVE = "leave"
"""A DISCONNECT of the main namespace: the socket leaves, its connection stays open, unanswered."""
EVENT = "event"
"""An event of the main namespace, handled as such."""
MAYBE_CLOSE = "event or close"
"""Closed or handled as an event, depending on how deep the decoder can recurse (see
:func:`json_verdict`)."""

PROTOCOL_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Event names a client may not send: the protocol's own."""
SERVER_NAMESPACES = frozenset({"/"})
MAX_ACK_DIGITS = 15
"""An acknowledgement id of more digits is not a packet of the protocol."""
FALLBACK_SURE_DEPTH = 800
FALLBACK_MAX_DEPTH = 1000


@dataclass(frozen=True)
class Fate:
    what: str
    event: Any = None
    """The event name, for :data:`EVENT` and :data:`MAYBE_CLOSE`."""


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _nesting(text: str) -> int:
    """How deeply the arrays and objects of JSON text nest (brackets inside strings apart)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_UNREAD: Any = object()


def json_verdict(text: str) -> tuple[bool | None, Any]:
    """Whether the server reads ``text`` as JSON, and the value. The server's decoder is orjson,
    then Python's json for what orjson refuses: ``NaN``, ``Infinity``, numbers beyond a double
    (integers up to the 4,300 digits CPython converts by default), and nesting deeper than
    orjson's 1,024 levels; text that decodes to lone surrogates is refused. orjson answers the
    same here as in the server (the same package); Python's json does not, for depth: it recurses
    within the server's recursion limit (CPython's default of 1,000, less what the server's own
    frames use), while this process raises its limit. So text only the fallback reads counts as
    read up to :data:`FALLBACK_SURE_DEPTH` levels, as refused beyond :data:`FALLBACK_MAX_DEPTH`,
    and in between the verdict is None: either outcome is right."""
    try:
        return True, orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    depth = _nesting(text)
    if depth > FALLBACK_MAX_DEPTH:
        return False, _UNREAD
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False, _UNREAD
    if _has_lone_surrogate(value):
        return False, _UNREAD
    return (True if depth <= FALLBACK_SURE_DEPTH else None), value


def _is_event_name(value: Any) -> bool:
    """A string that is not the protocol's own, or a number (which the server answers with
    ``error {code: "INVALID_PAYLOAD"}``, an event name being a string)."""
    if isinstance(value, str):
        return value not in PROTOCOL_EVENTS
    return isinstance(value, int | float) and not isinstance(value, bool)


def packet_fate(text: str) -> Fate:
    """What the server does with the text of an Engine.IO message (a Socket.IO packet): type
    digit, optional ``/namespace,``, optional acknowledgement id (ASCII digits), JSON data."""
    if not text or text[0] not in "0123":
        # not a packet type; 4: CONNECT_ERROR, which only a server sends; 5, 6: binary
        return Fate(CLOSE)
    kind, i, n = text[0], 1, len(text)
    namespace = "/"
    if text.startswith("/", i):
        comma = text.find(",", i)
        namespace, i = (text[i:], n) if comma < 0 else (text[i:comma], comma + 1)
    start = i
    while i < n and text[i] in string.digits:
        i += 1
    if i - start > MAX_ACK_DIGITS:
        return Fate(CLOSE)
    has_id = i > start
    verdict: bool | None = True
    value = _UNREAD
    if i < n:
        verdict, value = json_verdict(text[i:])
        if verdict is False:
            return Fate(CLOSE)
    fate = _valid_packet_fate(kind, namespace, has_id, value)
    if verdict is None and fate.what != CLOSE:
        return Fate(MAYBE_CLOSE, fate.event)
    return fate


def _valid_packet_fate(kind: str, namespace: str, has_id: bool, value: Any) -> Fate:
    """The fate of a packet whose data (``_UNREAD`` if none) decoded."""
    if kind == "0":  # CONNECT: an object or nothing
        if value is not _UNREAD and not isinstance(value, dict):
            return Fate(CLOSE)
        # "/" again: ignored; an unknown namespace: CONNECT_ERROR, not an error channel
        return Fate(IGNORED)
    if kind == "1":  # DISCONNECT: no data
        if value is not _UNREAD:
            return Fate(CLOSE)
        return Fate(LEAVE if namespace == "/" else IGNORED)
    if kind == "2":  # EVENT: a non-empty list that starts with an event name
        if not isinstance(value, list) or not value or not _is_event_name(value[0]):
            return Fate(CLOSE)
        return Fate(EVENT, value[0]) if namespace in SERVER_NAMESPACES else Fate(IGNORED)
    # ACK: an id and a list; the server asks clients for none, so it acknowledges nothing
    if not has_id or not isinstance(value, list):
        return Fate(CLOSE)
    return Fate(IGNORED)


def message_fate(message: Message) -> Fate:
    """What the server does with ``message``: binary input (a binary value anywhere in an
    event, which python-socketio sends as a binary packet; a raw packet of type 5 or 6; a binary
    Engine.IO message) closes the connection, as does a packet that is not valid Socket.IO. A
    raw message of several parts meets the fate of the first that ends the socket."""
    if message.raw:
        fates = [Fate(CLOSE) if isinstance(p, bytes) else packet_fate(p) for p in message.raw]
        return next((f for f in fates if f.what in (CLOSE, LEAVE, MAYBE_CLOSE)), fates[0])
    if contains_bytes([message.event, *message.args]):
        return Fate(CLOSE)
    try:
        data = resolve([message.event, *message.args], lambda ref: "ref")
        encoded = sio_packet.Packet(sio_packet.EVENT, data=data).encode()
    except (ValueError, TypeError, RecursionError, OverflowError):
        return Fate(IGNORED)  # never sent (see encoded_parts)
    assert isinstance(encoded, str), encoded
    return packet_fate(encoded)


def closes_connection(message: Message) -> bool:
    """Whether ``message`` surely closes its connection unanswered (see :func:`message_fate`)."""
    return message_fate(message).what == CLOSE


def is_binary(message: Message) -> bool:
    if message.raw:
        return any(isinstance(p, bytes) or p.startswith(("5", "6")) for p in message.raw)
    return contains_bytes([message.event, *message.args])


# --------------------------------------------------------------------------------------------
# Rate limits (README "Security"): facts of the documentation, not read from the code


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` accepted events per ``window`` seconds per socket (events of one
    ``name`` share it), and ``rules`` limits in all for the event (per socket, and per player or
    per target across sockets); each limit answers its first refusal of a window once with
    ``RATE_LIMITED`` and then refuses silently."""

    name: str
    limit: int
    window: float
    rules: int = 1


RATE_LIMITS: dict[str, RateLimit] = {
    "player:jump": RateLimit("jump", 20, 2.0),
    "player:updateProfile": RateLimit("profile", 6, 10.0, rules=2),
    "party:create": RateLimit("partyCreate", 5, 10.0),
    "party:invite": RateLimit("partyInvite", 50, 10.0, rules=3),
    "party:accept": RateLimit("partyAnswer", 10, 10.0),
    "party:decline": RateLimit("partyAnswer", 10, 10.0),
    "party:join": RateLimit("partyZone", 20, 10.0),
    "joinParty": RateLimit("partyZone", 20, 10.0),
    "party:leave": RateLimit("partyLeave", 20, 10.0),
    "leaveParty": RateLimit("partyLeave", 20, 10.0),
    "proximity:set": RateLimit("proximity", 5, 10.0),
    "join:space": RateLimit("join", 5, 10.0, rules=2),
    "leave:space": RateLimit("leave", 5, 10.0, rules=2),
    "reaction:toggle": RateLimit("reaction", 30, 10.0),
    "recording:start": RateLimit("recording", 5, 10.0),
    "recording:stop": RateLimit("recording", 5, 10.0),
    "spotlight:activate": RateLimit("spotlight", 5, 10.0),
    "spotlight:deactivate": RateLimit("spotlight", 5, 10.0),
    "object:place": RateLimit("object", 40, 10.0),
    "object:update": RateLimit("object", 40, 10.0),
    "object:delete": RateLimit("object", 40, 10.0),
    "admin:mute": RateLimit("admin", 10, 10.0),
    "admin:unmute": RateLimit("admin", 10, 10.0),
    "admin:kick": RateLimit("admin", 10, 10.0),
    "admin:unban": RateLimit("admin", 10, 10.0),
    "admin:deleteMessage": RateLimit("admin", 10, 10.0),
    "admin:announce": RateLimit("announce", 3, 30.0),
}
CHAT_COUNTED = frozenset({"admin:announce"})
"""Events counted with the sender's chat as well: every refusal by the chat limit is answered,
on the event's own channel, with ``RATE_LIMITED``."""
CHAT_LIMIT = (5, 5.0)
"""Chat, whispers and party messages: 5 per 5 s per player; every refusal is answered."""
MOVES_PER_SECOND = 120
"""``player:move``: excess moves are dropped (the newest applied when the second ends)."""


# --------------------------------------------------------------------------------------------
# Expected number of error replies


@dataclass(frozen=True)
class Expectation:
    """How many replies on the error channels one message may get: at least ``low``, at most
    ``high``."""

    low: int
    high: int


def expected_errors(message: Message, *, joined: bool) -> Expectation:
    """Bounds from SPEC §4 and §8, without knowing which payloads the server finds valid.

    A joined sender gets at most one error reply per message. Sure to get one: extra positional
    arguments, or a non-object payload for an event that takes an object. Before joining, only
    ``join:space`` and ``proximity:set`` are answered. Unknown string event names are never
    answered; a number as event name gets one ``error`` (INVALID_PAYLOAD). Input that closes
    the connection (binary input, a packet that is not valid Socket.IO: an event name that is
    neither a string nor a number, or one of the protocol's own) gets none, and so do packets
    the server ignores and a DISCONNECT. A raw event gets at most one reply. (Rate limits: see
    :class:`ReplyOracle`.)
    """
    fate = message_fate(message)
    if fate.what in (CLOSE, LEAVE, IGNORED):
        return Expectation(0, 0)
    if fate.what == MAYBE_CLOSE:
        return Expectation(0, 1)
    if not isinstance(fate.event, str):
        return Expectation(1, 1)
    if message.raw:
        return Expectation(0, 1)
    if message.event not in CLIENT_EVENTS:
        return Expectation(0, 0)
    if not joined and message.event not in ("join:space", "proximity:set"):
        return Expectation(0, 0)
    if not joined:
        return Expectation(1, 1)  # proximity:set: "Join a space first"; join:space: see caller
    surely_bad = len(message.args) > 1 or (
        message.event in OBJECT_PAYLOAD_EVENTS and not _is_object(message.args)
    )
    return Expectation(1 if surely_bad else 0, 1)


def _is_object(args: tuple[Any, ...]) -> bool:
    return len(args) == 1 and isinstance(args[0], dict)


# --------------------------------------------------------------------------------------------
# Shapes of what the server sends (SPEC §3, §5)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_COORD
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


# Characters that draw nothing or reorder text (README "Security"): a relayed nickname has none
# of them, except a zero-width joiner between two emoji, where it draws one picture.
BIDI_CHARS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BLANK_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e")
ENTITIES = re.compile(r"&(amp|lt|gt|quot|#x27);")


def visible_text(value: str) -> str:
    """What a reader sees of a relayed string: the five escapes decoded."""
    entities = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "#x27": "'"}
    return ENTITIES.sub(lambda m: entities[m.group(1)], value)


def nickname_problem(value: Any) -> str | None:
    """What is wrong with a nickname another player receives, or None (README "Security"):
    escaped (no raw ``< > " '``, every ``&`` an entity), no control, format (bidi marks,
    zero-width characters) or private-use character, no blank filler, 1-32 visible characters
    with something to see, no surrounding or doubled whitespace."""
    if not isinstance(value, str):
        return "not a string"
    if not _is_message_text(value):
        return "not escaped"
    text = visible_text(value)
    if not 1 <= len(text) <= 32:
        return f"{len(text)} visible characters"
    if text != " ".join(text.split()):
        return "untrimmed or doubled whitespace"
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if char == "\u200d" and 0 < index < len(text) - 1:
            before, after = text[index - 1], text[index + 1]
            if (before == "\ufe0f" or unicodedata.category(before) in ("So", "Sk")) and (
                unicodedata.category(after) == "So"
            ):
                continue
        if char in BIDI_CHARS or char in BLANK_CHARS or category in ("Cc", "Cf", "Co", "Cn"):
            return f"contains U+{ord(char):04X}"
        if category[0] == "Z" and char != " ":
            return f"contains the separator U+{ord(char):04X}"
    return None


def nickname_key(value: str) -> str:
    """Two nicknames a reader would take for the same name: case and width ignored."""
    return unicodedata.normalize("NFKC", visible_text(value)).casefold()


def _is_nickname(value: Any) -> bool:
    return nickname_problem(value) is None


def _is_message_text(value: Any) -> bool:
    """Relayed content is neutralised (SPEC §6): no raw ``< > " '``, every ``&`` an entity."""
    if not isinstance(value, str):
        return False
    if any(c in value for c in "<>\"'"):
        return False
    return re.search(r"&(?!amp;|lt;|gt;|quot;|#x27;|#39;)", value) is None


def _avatar_problems(data: dict[str, Any], where: str) -> list[str]:
    problems = []
    color = data.get("avatarColor")
    if "avatarColor" in data and color not in AVATAR_COLORS:
        problems.append(f"{where}: avatarColor {color!r}")
    config = data.get("avatarConfig")
    if "avatarConfig" in data and config is not None:
        ok = isinstance(config, dict) and (
            (config.get("type") == "classic" and config.get("colorId") in AVATAR_COLORS)
            or (
                config.get("type") == "custom"
                and isinstance(config.get("characterId"), str)
                and AVATAR_FIELD_RE.fullmatch(config["characterId"]) is not None
            )
        )
        if not ok:
            problems.append(f"{where}: avatarConfig {config!r}")
    return problems


def position_problems(p: Any, where: str) -> list[str]:
    if not isinstance(p, dict):
        return [f"{where}: not an object: {_short(p)}"]
    problems = []
    if not _is_id(p.get("id")):
        problems.append(f"{where}: id {p.get('id')!r}")
    if not _is_nickname(p.get("nickname")):
        problems.append(f"{where}: nickname {_short(p.get('nickname'))}")
    for axis in ("x", "y"):
        if not _is_number(p.get(axis)):
            problems.append(f"{where}: {axis} {p.get(axis)!r}")
    if p.get("direction") not in DIRECTIONS:
        problems.append(f"{where}: direction {_short(p.get('direction'))}")
    if not isinstance(p.get("isMoving"), bool):
        problems.append(f"{where}: isMoving {p.get('isMoving')!r}")
    return problems + _avatar_problems(p, where)


def chat_problems(m: Any, where: str, *, system: bool = False) -> list[str]:
    if not isinstance(m, dict):
        return [f"{where}: not an object: {_short(m)}"]
    problems = []
    for key in ("id", "senderId", "senderNickname", "senderName", "content"):
        if not isinstance(m.get(key), str):
            problems.append(f"{where}: {key} {_short(m.get(key))}")
    if m.get("senderName") != m.get("senderNickname"):
        problems.append(f"{where}: senderName != senderNickname")
    if not isinstance(m.get("timestamp"), int) or isinstance(m.get("timestamp"), bool):
        problems.append(f"{where}: timestamp {m.get('timestamp')!r}")
    if m.get("type") not in CHAT_TYPES:
        problems.append(f"{where}: type {_short(m.get('type'))}")
    if not system and not _is_message_text(m.get("content")):
        problems.append(f"{where}: content not neutralised: {_short(m.get('content'))}")
    if not system and isinstance(m.get("content"), str) and not m["content"].strip():
        problems.append(f"{where}: empty content relayed")
    if isinstance(m.get("content"), str) and (problem := content_problem(m["content"])):
        problems.append(f"{where}: content {problem}: {_short(m['content'])}")
    if not system and (problem := nickname_problem(m.get("senderNickname"))):
        problems.append(f"{where}: senderNickname {problem}: {_short(m.get('senderNickname'))}")
    reply = m.get("replyTo")
    if reply is not None and (problem := reply_problem(reply)):
        problems.append(f"{where}: replyTo {problem}: {_short(reply)}")
    return problems


def content_problem(value: str, *, one_line: bool = False, limit: int | None = None) -> str | None:
    """What is wrong with relayed text (README "Security"): no control character but line breaks
    and tabs (none at all in ``one_line`` text), no direction mark or override."""
    for char in value:
        if char in BIDI_CHARS:
            return f"contains the direction mark U+{ord(char):04X}"
        if unicodedata.category(char) == "Cc" and (one_line or char not in "\n\t"):
            return f"contains the control U+{ord(char):04X}"
    if limit is not None and len(visible_text(value)) > limit:
        return f"has {len(visible_text(value))} visible characters (max {limit})"
    return None


MAX_QUOTE = 100  # README "Security": a quoted reply shows one line of at most 100 characters


def reply_problem(reply: Any) -> str | None:
    """What is wrong with a relayed ``replyTo``: the id rule, the nickname rule, the content
    rule on one line of at most :data:`MAX_QUOTE` characters."""
    if not isinstance(reply, dict):
        return "not an object"
    if not _is_id(reply.get("id")):
        return "id"
    if problem := nickname_problem(reply.get("senderNickname")):
        return f"senderNickname {problem}"
    content = reply.get("content")
    if not _is_message_text(content) or not content.strip():
        return "content not neutralised or empty"
    return content_problem(content, one_line=True, limit=MAX_QUOTE)


def _fields(data: Any, where: str, **kinds: Callable[[Any], bool]) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where}: not an object: {_short(data)}"]
    return [
        f"{where}: {key} {_short(data.get(key))}"
        for key, check in kinds.items()
        if not _safe(check, data.get(key))
    ]


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_member(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_id(value.get("id"))
        and ("nickname" not in value or _is_nickname(value["nickname"]))
    )


ADMIN_ACTIONS = ("mute", "unmute", "kick", "unban", "deleteMessage", "announce")


def _is_guard_reply(payload: Any) -> bool:
    """A reply every event's guard sends on the event's channel: ``{message}`` for a malformed
    payload, ``{message, code: "RATE_LIMITED", retryAfter}`` for a rate limit. The moderation
    handlers' own refusals name the ``action`` besides."""
    return (
        isinstance(payload, dict)
        and "action" not in payload
        and set(payload) <= {"message", "code", "retryAfter"}
        and payload.get("code", "RATE_LIMITED") == "RATE_LIMITED"
        and ("code" in payload) == ("retryAfter" in payload)
    )


MAX_MUTE_MINUTES = 43_200  # README "Events": a mute lasts 1 to 43,200 minutes, or for ever
MAX_REASON = 200
ISO_MS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# Moderation events to the space (README "Events"): the fields each must have, with the name of
# the moderator's id field; then the optional ones.
MEMBER_EVENTS: dict[str, tuple[str, frozenset[str]]] = {
    "member:muted": ("mutedBy", frozenset({"duration", "reason", "mutedUntil"})),
    "member:unmuted": ("unmutedBy", frozenset()),
    "member:kicked": ("kickedBy", frozenset({"reason"})),
    "member:unbanned": ("unbannedBy", frozenset()),
}


def _is_member_name(value: Any) -> bool:
    """A moderated member's ``nickname``: a player's (the nickname rule) or, for a member who
    is not in the space, the id the moderator named them by."""
    return _is_nickname(value) or _is_id(value)


def _is_reason(value: Any) -> bool:
    """A relayed reason: neutralised, one line, 1-200 characters."""
    return (
        _is_message_text(value)
        and bool(value.strip())
        and content_problem(value, one_line=True, limit=MAX_REASON) is None
    )


def member_event_problems(event: str, payload: Any) -> list[str]:
    by, optional = MEMBER_EVENTS[event]
    checks: dict[str, Callable[[Any], bool]] = {
        "memberId": _is_id,
        "nickname": _is_member_name,
        by: _is_id,
        f"{by}Nickname": _is_nickname,
    }
    if event == "member:kicked":
        checks["banned"] = lambda v: isinstance(v, bool)
    problems = _fields(payload, event, **checks)
    if problems:
        return problems
    extra = set(payload) - set(checks) - optional
    if extra:
        problems.append(f"{event}: unexpected fields {sorted(extra)}")
    if "reason" in payload and not _is_reason(payload["reason"]):
        problems.append(f"{event}: reason {_short(payload['reason'])}")
    if event == "member:muted":
        minutes = payload.get("duration")
        if "duration" in payload and not (
            isinstance(minutes, int | float)
            and not isinstance(minutes, bool)
            and 1 <= minutes <= MAX_MUTE_MINUTES
        ):
            problems.append(f"{event}: duration {minutes!r}")
        until = payload.get("mutedUntil")
        if "mutedUntil" in payload and not (
            isinstance(until, str) and ISO_MS_RE.fullmatch(until) is not None
        ):
            problems.append(f"{event}: mutedUntil {_short(until)}")
        if ("duration" in payload) != ("mutedUntil" in payload):
            problems.append(f"{event}: a timed mute has both duration and mutedUntil")
    return problems


def shape_problems(event: Any, payload: Any) -> list[str]:
    """Everything wrong with one server -> client event, per SPEC §3 and §5."""
    where = str(event)
    if event == "room:joined":
        problems = _fields(
            payload,
            where,
            spaceId=_is_id,
            yourPlayerId=_is_id,
            proximity=lambda v: isinstance(v, bool),
            players=lambda v: isinstance(v, list),
        )
        if not problems:
            for i, p in enumerate(payload["players"]):
                problems += position_problems(p, f"{where}.players[{i}]")
        return problems
    if event == "player:joined":
        return position_problems(payload, where)
    if event == "player:moved":
        return position_problems(payload, where)
    if event == "players:moved":
        if not isinstance(payload, list):
            return [f"{where}: not a list"]
        return [pr for i, p in enumerate(payload) for pr in position_problems(p, f"{where}[{i}]")]
    if event == "player:jumped":
        return _fields(payload, where, id=_is_id, x=_is_number, y=_is_number)
    if event == "player:left":
        return _fields(payload, where, id=_is_id)
    if event == "player:profileUpdated":
        return _fields(payload, where, id=_is_id, nickname=_is_nickname) + (
            _avatar_problems(payload, where) if isinstance(payload, dict) else []
        )
    if event in ("chat:message", "whisper:receive", "whisper:sent", "party:message"):
        return chat_problems(payload, where)
    if event == "chat:system":
        return chat_problems(payload, where, system=True)
    if event == "whisper:received":
        return _fields(
            payload,
            where,
            senderId=_is_id,
            senderName=_is_nickname,
            content=_is_message_text,
            timestamp=lambda v: isinstance(v, int),
            id=lambda v: isinstance(v, str),
        )
    if event in ERROR_CHANNELS:
        checks: dict[str, Callable[[Any], bool]] = {"message": _is_text}
        if event == "error":
            checks["code"] = _is_text
        if event == "admin:error" and not _is_guard_reply(payload):
            checks["action"] = lambda v: v in ADMIN_ACTIONS
        return _fields(payload, where, **checks)
    if event in ("chat:messageIdUpdate", "whisper:messageIdUpdate"):
        return _fields(payload, where, tempId=_is_id, realId=_is_id)
    if event in ("chat:messageFailed", "whisper:messageFailed"):
        return _fields(payload, where, tempId=_is_id, reason=_is_text)
    if event in MEMBER_EVENTS:
        return member_event_problems(event, payload)
    if event == "chat:messageDeleted":
        return _fields(
            payload, where, messageId=_is_id, deletedBy=_is_id, deletedByNickname=_is_nickname
        )
    if event == "space:announcement":
        problems = _fields(
            payload,
            where,
            id=lambda v: isinstance(v, str) and re.fullmatch(r"announce-\d+", v) is not None,
            senderId=_is_id,
            senderNickname=_is_nickname,
            timestamp=lambda v: isinstance(v, int) and not isinstance(v, bool),
            content=lambda v: _is_message_text(v) and bool(v.strip()),
        )
        if not problems and (problem := content_problem(payload["content"])):
            problems.append(f"{where}: content {problem}: {_short(payload['content'])}")
        return problems
    if event == "proximity:status":
        return _fields(payload, where, enabled=lambda v: isinstance(v, bool))
    if event == "proximity:changed":
        return _fields(
            payload,
            where,
            spaceId=_is_id,
            enabled=lambda v: isinstance(v, bool),
            changedBy=_is_nickname,
        )
    if event == "party:invited":
        return _fields(
            payload,
            where,
            partyId=_is_id,
            partyName=lambda v: isinstance(v, str),
            inviterId=_is_id,
            inviterName=_is_nickname,
        )
    if event == "party:joined":
        return _fields(
            payload,
            where,
            partyId=_is_id,
            partyName=_is_text,
            members=lambda v: isinstance(v, list) and all(_is_member(m) for m in v),
        )
    if event == "party:member_joined":
        return _fields(payload, where, partyId=_is_id, member=_is_member)
    if event == "party:member_left":
        return _fields(payload, where, partyId=_is_id, memberId=_is_id)
    if event == "party:left":
        return _fields(payload, where, partyId=_is_id)
    if event == "party:declined":
        return _fields(payload, where, partyId=_is_id, targetId=_is_id)
    if (live := live_shape_problems(event, payload)) is not None:
        return live
    return [f"unexpected event from the server: {event!r} {_short(payload)}"]


# --------------------------------------------------------------------------------------------
# HTTP


def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


async def aget_json(url: str) -> tuple[int, Any]:
    return await asyncio.to_thread(get_json, url)


# --------------------------------------------------------------------------------------------
# The arena


_counter = itertools.count()


def fresh_tag() -> int:
    """A number no other example of this run uses (the probe's chat lines carry it, and a
    third identical line in a row would be refused)."""
    return next(_counter)


@dataclass
class Outcome:
    """What one batch did, for the failure message."""

    sent: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    closed: int = 0
    """Connections closed by binary input or invalid packets, as they must be."""
    left: int = 0
    """Sockets that left the main namespace (a DISCONNECT packet)."""
    stayed_open: list[str] = field(default_factory=list)
    """Input after which the connection should have been closed but stayed open."""
    rate_disconnects: list[str] = field(default_factory=list)
    """Senders disconnected for sustained excess (``RATE_LIMITED``), then reconnected."""


class Arena:
    """A space with a passive bystander and a well-behaved probe, on one server.

    Each example gets fresh fuzzing sockets and players; the bystander and probe persist across
    examples while everything checks out, and are replaced (in a new space) after a failure, so
    that an earlier failing example cannot make later ones fail.
    """

    def __init__(self, server: ServerProcess, loop: LoopThread) -> None:
        self.server = server
        self.loop = loop
        self.space: str = ""
        self.bystander: FuzzClient | None = None
        self.probe: FuzzClient | None = None
        self.bystander_entry: dict[str, Any] = {}
        self.dirty = True
        self.last_probe_chat = 0.0
        self.last_probe_jump = 0.0
        self.clients: list[FuzzClient] = []
        self.payloads_sent: dict[str, int] = {}
        self.closed_by_input = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def ensure_clean(self) -> None:
        assert self.server.running, f"the server is not running\n{self.server.output()[-4000:]}"
        ok = (
            not self.dirty
            and self.bystander is not None
            and self.bystander.connected
            and self.probe is not None
            and self.probe.connected
        )
        if ok:
            return
        await self.teardown()
        self.space = space_id()
        self.bystander = await self.client("bystander")
        joined = await self.bystander.join(
            self.space,
            "Bystander",
            unique("bystander"),
            avatarColor="green",
            avatarConfig={"type": "classic", "colorId": "green"},
        )
        self.bystander_entry = next(
            p for p in joined["players"] if p["id"] == self.bystander.player_id
        )
        self.probe = await self.client("probe")
        await self.probe.join(self.space, "Probe", unique("probe"))
        await self.bystander.wait_for("player:joined", lambda p: p["id"] == self.probe_id)
        self.dirty = False

    async def client(self, name: str) -> FuzzClient:
        c = FuzzClient(f"{name}#{next(_counter)}")
        self.clients.append(c)
        await c.connect(self.server.url)
        return c

    async def drop(self, c: FuzzClient) -> None:
        await c.close()
        if c in self.clients:
            self.clients.remove(c)

    async def teardown(self) -> None:
        for c in list(self.clients):
            await self.drop(c)
        self.bystander = self.probe = None

    @property
    def bystander_id(self) -> str:
        assert self.bystander is not None and self.bystander.player_id is not None
        return self.bystander.player_id

    @property
    def probe_id(self) -> str:
        assert self.probe is not None and self.probe.player_id is not None
        return self.probe.player_id

    # -- sending ---------------------------------------------------------------------------

    def refs_for(self, sender: FuzzClient, other: FuzzClient | None) -> Callable[[Ref], Any]:
        parties = self.known_parties()
        messages = self.known_messages()

        def refs(ref: Ref) -> Any:
            if ref.name == "self":
                return sender.player_id or "nobody"
            if ref.name == "other":
                return (other or sender).player_id or self.bystander_id
            if ref.name == "bystander":
                return self.bystander_id
            if ref.name == "probe":
                return self.probe_id
            if ref.name == "space":
                return self.space
            if ref.name == "party":
                return parties[ref.index % len(parties)] if parties else f"party-{ref.index}"
            if ref.name == "nick:bystander":
                return "Bystander"
            if ref.name == "nick:other":
                return (other or sender).nickname or "Probe"
            if ref.name == "nick:self":
                return sender.nickname or "Nobody"
            if ref.name == "message":
                return messages[ref.index % len(messages)] if messages else f"msg-{ref.index}"
            if ref.name == "member:other":
                return (other.player_id if other else None) or "gone-other"
            if ref.name == "member:nick:other":
                return f"nickname:{(other.nickname if other else None) or 'Gone'}"
            if ref.name == "member:nick:self":
                return f"nickname:{sender.nickname or 'Nobody'}"
            raise AssertionError(ref)

        return refs

    def known_parties(self) -> list[str]:
        seen: list[str] = []
        for c in self.clients:
            for item in list(c.events):
                if item.event in ("party:joined", "party:invited") and isinstance(
                    item.payload, dict
                ):
                    party = item.payload.get("partyId")
                    if isinstance(party, str) and party not in seen:
                        seen.append(party)
        return seen

    def known_messages(self) -> list[str]:
        """Database ids of messages seen so far (``chat:messageIdUpdate``), newest first."""
        seen: list[str] = []
        for c in self.clients:
            for item in list(c.events):
                if item.event == "chat:messageIdUpdate" and isinstance(item.payload, dict):
                    real = item.payload.get("realId")
                    if isinstance(real, str) and real not in seen:
                        seen.append(real)
        return seen[::-1][:8]

    async def send_from(
        self,
        active: Sequence[FuzzClient],
        everyone: Sequence[FuzzClient],
        messages: Sequence[Message],
        outcome: Outcome,
        *,
        budget: int | None = MESSAGE_BUDGET,
        after_close: str = "rejoin",
    ) -> list[Message]:
        """Send each message from its sender (``active[message.sender]``) without waiting for
        replies; returns those sent. A message the client cannot encode, or one over the budget,
        is skipped. ``other`` refers to the next client of ``everyone``.

        Binary input and packets that are not valid Socket.IO must close their connection: the
        sender waits for that, then (``after_close``) reconnects and joins the arena's space
        again under a new player id (``"rejoin"``: a new id, because one player may join only 20
        times a minute), reconnects only (``"reconnect"``), or stops (``"stop"``). After a
        DISCONNECT of the main namespace (the socket left, its connection stays open), and a
        packet the server may close for or handle (see :func:`json_verdict`) that it closed
        for, the sender comes back the same way; so does a sender disconnected for sustained
        excess (``RATE_LIMITED``, documented)."""
        sent: list[Message] = []
        for message in messages:
            sender = active[message.sender % len(active)]
            index = everyone.index(sender)
            other = everyone[(index + 1) % len(everyone)] if len(everyone) > 1 else None
            refs = self.refs_for(sender, other)
            parts = encoded_parts(message, refs)
            if parts is None or (budget is not None and not fits(parts)):
                outcome.skipped += 1
                continue
            if not sender.connected:
                if after_close == "stop" or not rate_limit_disconnected(sender):
                    break
                outcome.rate_disconnects.append(sender.name)
                await self.come_back(sender, after_close)
            fate = message_fate(message).what
            if fate in (CLOSE, LEAVE, MAYBE_CLOSE):
                # Every reply due so far is in first: the server closes at once, and a close
                # with input still unread resets the connection, which can discard what the
                # client's kernel had received but not yet handed over (and a client that
                # comes back records nothing more of its old connection).
                await sender.sync()
            if message.raw:
                for part in message.raw:
                    await sender.send_raw(part)
            else:
                await sender.emit_args(message.event, resolve(list(message.args), refs))
            if fate == CLOSE:
                key = "<binary input>" if is_binary(message) else "<invalid packet>"
            elif fate == LEAVE:
                key = "<namespace disconnect>"
            elif message.raw:
                key = "<raw packet>"
            elif not isinstance(message.event, str):
                key = "<non-string event name>"
            elif message.event not in CLIENT_EVENTS:
                key = "<unknown event>"
            else:
                key = message.event
            self.payloads_sent[key] = self.payloads_sent.get(key, 0) + 1
            sent.append(message)
            outcome.sent += 1
            if fate == CLOSE:
                if not await sender.wait_closed(5.0):
                    outcome.stayed_open.append(f"{sender.name} after {message!r}")
                    break
            elif fate == MAYBE_CLOSE:
                if not await sender.sync_or_closed():
                    continue
            elif fate != LEAVE:
                continue
            if fate == LEAVE:
                outcome.left += 1
            else:
                outcome.closed += 1
                self.closed_by_input += 1
            if after_close == "stop":
                break
            await self.come_back(sender, after_close)
        return sent

    async def come_back(self, client: FuzzClient, how: str) -> None:
        """A new connection for ``client`` (and, for ``"rejoin"``, a join of the arena's space
        under a new player id with its nickname)."""
        await client.reconnect()
        if how == "rejoin":
            prefix = client.name.split("#")[0]
            await client.join(
                self.space, client.nickname or prefix.title(), unique(prefix), **client.join_fields
            )

    # -- checks ------------------------------------------------------------------------------

    async def probe_reaches_bystander(self, tag: int) -> None:
        """A well-behaved player's jump (and, at most once a second, chat) still reaches the
        bystander with the right content."""
        assert self.bystander is not None and self.probe is not None
        # The probe keeps under the jump limit itself (20 per 2 s), however fast examples go.
        wait = self.last_probe_jump + 0.15 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.last_probe_jump = time.monotonic()
        start = len(self.bystander.events)
        x, y = 100 + tag % 1000, -(tag % 777)
        await self.probe.emit_args("player:jump", [{"x": x, "y": y}])
        await self.bystander.wait_for(
            "player:jumped",
            lambda p: p == {"id": self.probe_id, "x": x, "y": y},
            start=start,
        )
        if time.monotonic() - self.last_probe_chat >= 1.1:  # stays under 5 per 5 s (SPEC §6)
            self.last_probe_chat = time.monotonic()
            text = f"probe says <b>hi</b> & bye #{tag}"
            await self.probe.emit_args("chat:message", [{"content": text}])
            got = await self.bystander.wait_for(
                "chat:message",
                lambda m: m["senderId"] == self.probe_id and f"#{tag}" in m["content"],
                start=start,
            )
            assert got["content"] == f"probe says hi &amp; bye #{tag}", got
            assert got["type"] == "message" and got["senderNickname"] == "Probe", got

    async def roster_check(self, expected_others: set[str], players: Iterable[FuzzClient]) -> None:
        """A newcomer's ``room:joined`` (and ``/presence``) list exactly the expected players, all
        with valid fields, and the bystander exactly as it joined."""
        newcomer = await self.client("newcomer")
        try:
            joined = await newcomer.join(self.space, "Newcomer", unique("newcomer"))
            problems = shape_problems("room:joined", joined)
            assert not problems, f"room:joined for a newcomer is malformed: {problems}"
            ids = [p["id"] for p in joined["players"]]
            expected = {self.bystander_id, self.probe_id, newcomer.player_id, *expected_others}
            assert len(ids) == len(set(ids)), f"a player is listed twice: {ids}"
            assert set(ids) == expected, (
                f"room:joined lists {sorted(ids)}, expected {sorted(expected)}"
            )
            entry = next(p for p in joined["players"] if p["id"] == self.bystander_id)
            assert entry == self.bystander_entry, (
                f"the bystander changed: {entry} (was {self.bystander_entry})"
            )
            for c in players:
                mine = next(p for p in joined["players"] if p["id"] == c.player_id)
                assert mine["nickname"] == c.nickname or _is_nickname(mine["nickname"]), mine
            status, presence = await aget_json(f"{self.server.url}/presence/{self.space}")
            assert status == 200, status
            online = {u["id"] for u in presence["onlineUsers"]}
            assert online == expected and presence["count"] == len(expected), presence
        finally:
            await self.drop(newcomer)
        if newcomer.player_id is not None:
            assert self.bystander is not None
            await self.bystander.wait_for(
                "player:left", lambda p: p == {"id": newcomer.player_id}, timeout=10
            )

    async def server_healthy(self) -> dict[str, Any]:
        assert self.server.running, f"the server died\n{self.server.output()[-6000:]}"
        status, health = await aget_json(f"{self.server.url}/health")
        assert status == 200 and health.get("status") == "ok", (status, health)
        status, metrics = await aget_json(f"{self.server.url}/metrics")
        assert status == 200 and isinstance(metrics, dict), status
        assert isinstance(metrics["connections"]["total"], int), metrics
        assert isinstance(metrics["parties"]["count"], int), metrics
        return metrics

    def log_problems(self, mark: int, raw_mark: int) -> list[str]:
        """SPEC §8, §11: bad input never logs at error level (E3003 handler failure, E6003 fatal)
        nor prints a traceback; every line is one JSON object."""
        problems = []
        for entry in self.server.find_logs(level="error", since=mark):
            problems.append(f"error-level log: {_short(entry, 3000)}")
        for entry in self.server.find_logs(code="E6003", since=mark):
            problems.append(f"fatal log: {_short(entry, 3000)}")
        for entry in self.server.find_logs(
            predicate=lambda e: "exception" in (e.get("context") or {}), since=mark
        ):
            if entry.get("level") != "error":
                problems.append(f"log with a traceback: {_short(entry, 3000)}")
        with self.server._lock:
            later = list(self.server.raw_lines[raw_mark:])
            bad = list(self.server.bad_lines)
        if any("Traceback" in line for _, line in later if not line.startswith("{")):
            problems.append("a traceback was printed outside the JSON log lines")
        if bad:
            problems.append(f"non-JSON output lines: {bad[:5]}")
        return problems


def rate_limit_disconnected(client: FuzzClient) -> bool:
    """Whether ``client`` was disconnected for sustained excess: its last error reply is
    ``error {code: "RATE_LIMITED"}`` without the ``retryAfter`` of a once-per-window answer."""
    for item in reversed(client.events):
        if item.event in ERROR_CHANNELS:
            p = item.payload
            return (
                item.event == "error"
                and isinstance(p, dict)
                and p.get("code") == "RATE_LIMITED"
                and "retryAfter" not in p
            )
    return False


def received_problems(client: FuzzClient, start: int) -> list[str]:
    problems = []
    for item in client.since(start):
        for problem in shape_problems(item.event, item.payload):
            problems.append(f"{client.name} received {problem}")
    return problems


def count_errors(client: FuzzClient, start: int, end: int | None = None) -> dict[str, int]:
    counts = {name: 0 for name in ERROR_CHANNELS}
    for item in client.events[start:end]:
        if item.event in counts:
            counts[item.event] += 1
    return counts


def explain(messages: Sequence[Message], limit: int = 40) -> str:
    shown = "\n  ".join(repr(m) for m in messages[:limit])
    more = f"\n  … and {len(messages) - limit} more" if len(messages) > limit else ""
    return f"batch ({len(messages)} messages):\n  {shown}{more}"


# --------------------------------------------------------------------------------------------
# Failure categories: distinct exception types let Hypothesis shrink each bug on its own


class FuzzFailure(AssertionError):
    """A property of SPEC §8 does not hold."""


class ServerDied(FuzzFailure):
    """The server process exited or stopped answering ``/health``."""


class ErrorLogged(FuzzFailure):
    """An error-level log (E3003 handler failure, E6003 fatal), a traceback, or a non-JSON line."""


class SocketDropped(FuzzFailure):
    """The server closed a fuzzing socket (a well-formed event with a bad payload must get a
    reply, not a disconnect; only binary input, packets that are not valid Socket.IO and
    sustained excess close a connection)."""


class BinaryKept(FuzzFailure):
    """Binary input, or a packet that is not valid Socket.IO, did not close its connection."""


class Stalled(FuzzFailure):
    """The server did not get through the batch in time."""


class BystanderDisturbed(FuzzFailure):
    """Another player was disconnected, got an error, or stopped receiving events."""


class StateCorrupted(FuzzFailure):
    """Observable state breaks the SPEC: rosters, presence, ghosts, leaked parties, shapes."""


class WrongReplies(FuzzFailure):
    """Bad input was not answered (or answered more than once) on the error channels."""


_PRIORITY: list[type[FuzzFailure]] = [
    ServerDied,
    ErrorLogged,
    SocketDropped,
    BinaryKept,
    Stalled,
    BystanderDisturbed,
    StateCorrupted,
    WrongReplies,
]


class Verdict:
    """Problems found by one example, raised as the most serious category."""

    def __init__(self, arena: Arena, messages: Sequence[Message]) -> None:
        self.arena = arena
        self.messages = messages
        self.problems: dict[type[FuzzFailure], list[str]] = {}
        self.mark = arena.server.mark()
        with arena.server._lock:
            self.raw_mark = len(arena.server.raw_lines)

    def add(self, kind: type[FuzzFailure], problem: str) -> None:
        self.problems.setdefault(kind, []).append(problem)

    def add_all(self, kind: type[FuzzFailure], problems: Iterable[str]) -> None:
        for problem in problems:
            self.add(kind, problem)

    async def step(self, kind: type[FuzzFailure], awaitable: Awaitable[Any]) -> bool:
        try:
            await awaitable
        except FuzzFailure:
            raise
        except AssertionError as exc:
            self.add(kind, str(exc))
            return False
        return True

    def check_logs(self) -> None:
        self.add_all(ErrorLogged, self.arena.log_problems(self.mark, self.raw_mark))
        if not self.arena.server.running:
            self.add(ServerDied, f"the server exited with code {self.arena.server.poll()}")

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        self.arena.dirty = True
        kind = next(k for k in _PRIORITY if k in self.problems)
        lines = [f"{k.__name__}: {p}" for k in _PRIORITY for p in self.problems.get(k, [])]
        warn = [
            _short(e, 400)
            for e in self.arena.server.find_logs(since=self.mark)
            if e.get("level") in ("warn", "error")
        ][:12]
        raise kind(
            "\n".join(lines[:30])
            + "\n\n"
            + explain(self.messages)
            + "\n\nserver warn/error logs during the example:\n  "
            + "\n  ".join(warn)
        )


def chunks(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    size = max(1, math.ceil(len(items) / parts))
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]


def _unjoining(message: Message) -> bool:
    """After this message the sender may no longer be joined (so bad input may go unanswered).
    The protocol's own event names close the connection instead (see :func:`message_fate`)."""
    if message.raw or not isinstance(message.event, str):
        return False
    return (
        message.event == "leave:space"
        and len(message.args) <= 1
        and not contains_bytes(message.args)
    )


class ReplyOracle:
    """Bounds on the error replies one sender gets for a batch, message by message.

    :func:`expected_errors` gives the bounds of one message on its own. Rate limits (README
    "Security") then allow a surely-bad message of a limited event to go unanswered once its
    socket may have used up the allowance: a refused event is answered once per window, later
    ones silently, and a malformed one is refused like any other once the window is full. So a
    reply is required only while fewer than ``limit`` events of that limit may have been
    accepted on the socket (every message that is not surely bad might have been; counting all
    of them since the socket opened over-counts any one window, which only makes the lower
    bound weaker, never wrong). Input that closes the connection (binary, or not valid
    Socket.IO) and a DISCONNECT end the socket; the sender then comes back on a fresh socket
    (joined again if it was joined), with fresh allowances.
    """

    def __init__(self, *, joined: bool, used: dict[str, int] | None = None) -> None:
        self.start_joined = joined
        self.start_used = dict(used or {})
        self.low = 0
        self.high = 0
        self.sessions = 1
        self.limits_touched: set[str] = set()
        self.rate_replies_allowed = 0
        self.chat_counted = 0
        self._certain = joined
        self._used: dict[str, int] = dict(self.start_used)

    def add(self, message: Message) -> None:
        fate = message_fate(message).what
        if fate in (CLOSE, LEAVE):
            self.sessions += 1
            self._certain = self.start_joined
            self._used = {"join": 1} if self.start_joined else {}
            return
        if fate == MAYBE_CLOSE:
            # Perhaps a fresh socket from here on (joined again if it was): its allowances and
            # whether it is joined are then no worse than what is counted for the old one.
            self.sessions += 1
        bounds = expected_errors(message, joined=self.start_joined)
        low, high = bounds.low, bounds.high
        if self.start_joined and not self._certain:
            low, high = 0, max(high, 1)
        event = message.event if isinstance(message.event, str) else None
        limit = RATE_LIMITS.get(event) if event is not None else None
        if event in CHAT_COUNTED and not message.raw:
            self.chat_counted += 1
        if limit is not None and not message.raw:
            self.limits_touched.add(message.event)
            if self._used.get(limit.name, 0) >= limit.limit:
                low = 0
            if self.start_joined:
                may_be_accepted = bounds.low == 0
            else:  # answered "Join a space first" (and counted), or an invalid join (not)
                may_be_accepted = message.event != "join:space"
            if may_be_accepted:
                self._used[limit.name] = self._used.get(limit.name, 0) + 1
        self.low += low
        self.high += high
        if self.start_joined and _unjoining(message):
            self._certain = False

    def rate_limited_bound(self, seconds: float) -> int:
        """Most ``RATE_LIMITED`` answers the batch may get in ``seconds``: one per limit per
        window, over every socket the sender used, plus one for each message also counted with
        the sender's chat (whose refusals are all answered)."""
        total = 0
        for event in self.limits_touched:
            limit = RATE_LIMITS[event]
            total += limit.rules * (math.floor(seconds / limit.window) + 2)
        return total * self.sessions + self.chat_counted


def oracle_for(messages: Sequence[Message], *, joined: bool, used: dict[str, int]) -> ReplyOracle:
    oracle = ReplyOracle(joined=joined, used=used)
    for message in messages:
        oracle.add(message)
    return oracle


def count_rate_limited(client: FuzzClient, start: int, end: int | None = None) -> int:
    return sum(
        1
        for item in client.events[start:end]
        if item.event in ERROR_CHANNELS
        and isinstance(item.payload, dict)
        and item.payload.get("code") == "RATE_LIMITED"
    )


def _spaces_joined(client: FuzzClient, start: int) -> dict[str, set[str]]:
    """Spaces the client was told it joined, with the player ids it joined as."""
    spaces: dict[str, set[str]] = {}
    for item in client.since(start):
        if item.event == "room:joined" and isinstance(item.payload, dict):
            space, me = item.payload.get("spaceId"), item.payload.get("yourPlayerId")
            if isinstance(space, str) and isinstance(me, str):
                spaces.setdefault(space, set()).add(me)
    return spaces


async def joined_example(arena: Arena, messages: Sequence[Message], *, senders: int = 1) -> None:
    """One batch from a joined fuzzer (and, with ``senders=2``, a joined accomplice that fuzzes
    too), then every property of SPEC §8."""
    await arena.ensure_clean()
    assert arena.bystander is not None and arena.probe is not None
    tag = next(_counter)
    before = await arena.server_healthy()

    fuzzer, accomplice = await asyncio.gather(arena.client("fuzzer"), arena.client("accomplice"))
    pair = [fuzzer, accomplice]
    try:
        await asyncio.gather(
            fuzzer.join(arena.space, "Fuzzer", unique("fuzzer"), role="OWNER"),
            accomplice.join(arena.space, "Accomplice", unique("accomplice")),
        )
        # Parties to aim at: the accomplice's (with an invitation for the fuzzer), the fuzzer's
        # own, and a zone party.
        await accomplice.emit_args("party:create", [{"name": "Accomplices"}])
        await fuzzer.emit_args("party:create", [{"name": "Fuzzers"}])
        await fuzzer.emit_args("party:join", [{"partyId": f"zone-{tag}", "partyName": "Zone"}])
        theirs = await accomplice.wait_for("party:joined")
        await accomplice.emit_args(
            "party:invite", [{"partyId": theirs["partyId"], "targetId": fuzzer.player_id}]
        )
        await fuzzer.wait_for("party:joined", lambda p: p["partyId"] == f"zone-{tag}")
        await fuzzer.wait_for("party:invited")
        for c in pair:
            await arena.bystander.wait_for("player:joined", lambda p, c=c: p["id"] == c.player_id)
    except BaseException:
        arena.dirty = True
        raise
    starts = {c: len(c.events) for c in (*pair, arena.bystander, arena.probe)}
    verdict = Verdict(arena, messages)
    outcome = Outcome()
    active = pair[:senders]
    # Allowances each socket used before the batch (README "Security"): its join, the parties.
    used = {
        fuzzer: {"join": 1, "partyCreate": 1, "partyZone": 1},
        accomplice: {"join": 1, "partyCreate": 1, "partyInvite": 1},
    }

    # The batch, in two rounds (party ids seen in one round are aimed at in the next). Each
    # round ends with two round trips: the server handles one client's events in order and
    # writes replies and acknowledgements in order, so once the second acknowledgement is
    # back every reply to the round has arrived (the first lets replies sent from a task
    # started by the round, such as a refused move, go out).
    sent: list[Message] = []
    began = time.monotonic()
    for chunk in chunks(messages, 2):
        sent += await arena.send_from(active, pair, chunk, outcome)
        for c in active:
            if not await verdict.step(Stalled, c.sync()):
                break
            await verdict.step(Stalled, c.sync())
        if any(not c.connected for c in pair):
            break
    seconds = time.monotonic() - began
    ends = {c: len(c.events) for c in pair}
    verdict.messages = sent
    verdict.check_logs()
    verdict.add_all(BinaryKept, outcome.stayed_open)
    for c in pair:
        if not c.connected:
            verdict.add(SocketDropped, f"{c.name} was disconnected: {c.disconnect_reason}")
    if verdict.problems:
        await _cleanup(arena, pair)
        verdict.raise_if_any()
    ids = {c: c.player_id for c in pair}

    # The fuzzing players come back to the space as themselves and are still served. A socket
    # that used up its join allowance (5 per 10 s) is answered RATE_LIMITED, as documented;
    # that player comes back on a new connection instead.
    joined_spaces = {c: _spaces_joined(c, starts[c]) for c in pair}

    async def come_back(i: int, c: FuzzClient) -> None:
        assert ids[c] is not None and arena.bystander is not None
        try:
            await c.join(arena.space, c.nickname or "Fuzzer", ids[c] or "", **c.join_fields)
        except JoinRateLimited:
            if not await verdict.step(SocketDropped, arena.come_back(c, "rejoin")):
                return
        except AssertionError as exc:
            verdict.add(SocketDropped, f"{c.name} could not join again: {exc}")
            return
        ids[c] = c.player_id
        # A move, not a jump: the batch may have used up the jump allowance (20 per 2 s).
        x, y = 7 + i, tag % 1000
        start = len(arena.bystander.events)
        await c.emit_args("player:move", [{"x": x, "y": y, "direction": "left", "isMoving": False}])
        await verdict.step(
            StateCorrupted,
            arena.bystander.wait_for(
                "player:moved",
                lambda p: p["id"] == ids[c] and (p["x"], p["y"]) == (x, y),
                start=start,
                timeout=5,
            ),
        )

    await asyncio.gather(*(come_back(i, c) for i, c in enumerate(pair)))
    for c in pair:
        if not c.connected:
            verdict.add(SocketDropped, f"{c.name} was disconnected: {c.disconnect_reason}")
        joined_spaces[c] = _spaces_joined(c, starts[c])

    # Replies: each message at most one error reply; surely-bad ones exactly one while the
    # rate limits cannot have been reached; at most one RATE_LIMITED answer per limit and window.
    for index, c in enumerate(active):
        if c.name in outcome.rate_disconnects:
            continue  # disconnected for sustained excess: what it got is its own affair
        mine = [m for m in sent if m.sender % senders == index]
        oracle = oracle_for(mine, joined=True, used=used[c])
        got = count_errors(c, starts[c], ends[c])
        total = sum(got.values())
        if not oracle.low <= total <= oracle.high:
            verdict.add(
                WrongReplies,
                f"{c.name} sent {len(mine)} messages ({oracle.low} surely answered) and got "
                f"{total} error replies {got}; expected between {oracle.low} and {oracle.high}",
            )
        limited = count_rate_limited(c, starts[c], ends[c])
        allowed = oracle.rate_limited_bound(seconds)
        if limited > allowed:
            verdict.add(
                WrongReplies,
                f"{c.name} got {limited} RATE_LIMITED answers in {seconds:.1f}s; at most one per "
                f"limit and window allows {allowed}",
            )
    for c in (*pair, arena.bystander, arena.probe):
        verdict.add_all(StateCorrupted, received_problems(c, starts[c]))
    bystander_errors = count_errors(arena.bystander, starts[arena.bystander])
    if any(bystander_errors.values()) or not arena.bystander.connected:
        verdict.add(
            BystanderDisturbed,
            f"bystander connected={arena.bystander.connected} errors={bystander_errors}",
        )
    if not verdict.problems:
        await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))
    if not verdict.problems:
        await verdict.step(StateCorrupted, arena.roster_check({i for i in ids.values() if i}, pair))

    # Leaving: the fuzzing players disappear from every space they joined; nothing leaks.
    await _cleanup(arena, pair)
    if not verdict.problems:
        for c in pair:
            await verdict.step(
                StateCorrupted,
                arena.bystander.wait_for("player:left", lambda p, c=c: p == {"id": ids[c]}),
            )
        await verdict.step(StateCorrupted, _no_ghosts(arena, pair, joined_spaces, before))
    verdict.check_logs()
    verdict.raise_if_any()


async def _cleanup(arena: Arena, clients: Iterable[FuzzClient]) -> None:
    for c in clients:
        await arena.drop(c)


async def _no_ghosts(
    arena: Arena,
    clients: Sequence[FuzzClient],
    joined_spaces: dict[FuzzClient, dict[str, set[str]]],
    before: dict[str, Any],
) -> None:
    """After the fuzzing sockets closed: no player they joined as is left in any space, the
    arena holds only the bystander and the probe, and no party or socket leaked."""
    for c in clients:
        for space, players in joined_spaces.get(c, {}).items():
            status, presence = await aget_json(f"{arena.server.url}/presence/{space}")
            assert status == 200, (space, status)
            online = {u["id"] for u in presence["onlineUsers"]}
            assert not online & players, (
                f"ghost players {sorted(online & players)} still in space {space!r} after their "
                f"socket closed: {presence}"
            )
    status, presence = await aget_json(f"{arena.server.url}/presence/{arena.space}")
    online = {u["id"] for u in presence["onlineUsers"]}
    assert online == {arena.bystander_id, arena.probe_id}, presence
    after = await arena.server_healthy()
    assert after["connections"]["total"] == before["connections"]["total"], (
        f"sockets: {before['connections']['total']} before, {after['connections']['total']} after"
    )
    assert after["parties"]["count"] == before["parties"]["count"], (
        f"parties: {before['parties']['count']} before, {after['parties']['count']} after"
    )


async def unjoined_example(arena: Arena, messages: Sequence[Message]) -> None:
    """One batch from a socket that never joined: only ``join:space`` (always invalid here) and
    ``proximity:set`` are answered (SPEC §4), nobody else hears anything, and the socket can
    still join afterwards."""
    await arena.ensure_clean()
    assert arena.bystander is not None and arena.probe is not None
    tag = next(_counter)
    before = await arena.server_healthy()
    stranger = await arena.client("stranger")
    starts = {c: len(c.events) for c in (stranger, arena.bystander, arena.probe)}
    verdict = Verdict(arena, messages)
    outcome = Outcome()
    sent: list[Message] = []
    for chunk in chunks(messages, 2):
        sent += await arena.send_from(
            [stranger], [stranger], chunk, outcome, after_close="reconnect"
        )
        if not await verdict.step(Stalled, stranger.sync()):
            break
    verdict.messages = sent
    verdict.check_logs()
    verdict.add_all(BinaryKept, outcome.stayed_open)
    if not stranger.connected:
        verdict.add(SocketDropped, f"the stranger was disconnected: {stranger.disconnect_reason}")
    if verdict.problems:
        await _cleanup(arena, [stranger])
        verdict.raise_if_any()

    # Joining now works; its room:joined (and the bystander's player:joined) come after every
    # reply to the batch, so they close the windows looked at below.
    player = unique("stranger")
    if not await verdict.step(SocketDropped, stranger.join(arena.space, "Stranger", player)):
        await _cleanup(arena, [stranger])
        verdict.raise_if_any()
    end = stranger.index_of("room:joined", lambda p: p["yourPlayerId"] == player, starts[stranger])
    await verdict.step(
        StateCorrupted,
        arena.bystander.wait_for(
            "player:joined", lambda p: p["id"] == player, start=starts[arena.bystander]
        ),
    )
    heard_end = arena.bystander.index_of(
        "player:joined", lambda p: p["id"] == player, starts[arena.bystander]
    )

    window = stranger.events[starts[stranger] : end]
    oracle = oracle_for(sent, joined=False, used={})
    low, high = oracle.low, oracle.high
    got = count_errors(stranger, starts[stranger], end)
    total = sum(got.values())
    if not low <= total <= high:
        verdict.add(
            WrongReplies,
            f"the stranger got {total} error replies {got}; expected between {low} and {high}",
        )
    prox = sum(1 for m in sent if m.event == "proximity:set")
    if got["proximity:error"] > prox:
        verdict.add(WrongReplies, f"{got['proximity:error']} proximity:error for {prox} sent")
    others = {e.event for e in window} - {"error", "proximity:error"}
    if others:
        verdict.add(StateCorrupted, f"a socket that never joined received {sorted(others)}")
    for item in window:
        if item.event == "error" and not (
            isinstance(item.payload, dict) and item.payload.get("code") == "INVALID_PAYLOAD"
        ):
            verdict.add(WrongReplies, f"unexpected error reply {item.payload!r}")
    verdict.add_all(StateCorrupted, received_problems(stranger, starts[stranger]))
    heard = [
        (e.event, _short(e.payload))
        for e in arena.bystander.events[starts[arena.bystander] : max(heard_end, 0)]
        # the probe's earlier chat line is saved in the background: its id update may land here
        if e.event != "chat:messageIdUpdate"
    ]
    if heard or not arena.bystander.connected:
        verdict.add(BystanderDisturbed, f"the bystander heard {heard[:10]}")

    if not verdict.problems:
        await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))
    if not verdict.problems:
        await verdict.step(StateCorrupted, arena.roster_check({player}, [stranger]))
    spaces = _spaces_joined(stranger, starts[stranger])
    await _cleanup(arena, [stranger])
    if not verdict.problems:
        await verdict.step(
            StateCorrupted,
            arena.bystander.wait_for("player:left", lambda p: p == {"id": player}),
        )
        await verdict.step(
            StateCorrupted, _no_ghosts(arena, [stranger], {stranger: spaces}, before)
        )
    verdict.check_logs()
    verdict.raise_if_any()


async def oversize_example(arena: Arena, event: Any, args: tuple[Any, ...]) -> None:
    """A message over the 64 KiB transport limit (SPEC §8): the transport refuses it and may
    close that one socket, but nothing is relayed, the player's departure is clean, the others
    are undisturbed, and nothing is logged at error level."""
    await arena.ensure_clean()
    assert arena.bystander is not None
    tag = next(_counter)
    before = await arena.server_healthy()
    sender = await arena.client("oversize")
    player = unique("oversize")
    before_join = len(arena.bystander.events)
    await sender.join(arena.space, "Oversize", player)
    await arena.bystander.wait_for("player:joined", lambda p: p["id"] == player, start=before_join)
    await arena.bystander.wait_for(
        "chat:system", lambda m: m["content"] == "Oversize joined", start=before_join
    )
    start = len(arena.bystander.events)
    message = Message(event, args)
    verdict = Verdict(arena, [message])
    parts = encoded_parts(message, arena.refs_for(sender, None))
    assert parts is not None and not fits(parts), "the generated message is not oversized"
    await arena.send_from([sender], [sender], [message], Outcome(), budget=None, after_close="stop")

    if not await verdict.step(
        SocketDropped,
        arena.bystander.wait_for("player:left", lambda p: p == {"id": player}, start=start),
    ):
        verdict.add(SocketDropped, f"sender connected={sender.connected}")
    deadline = time.monotonic() + 10
    while sender.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if sender.connected:
        verdict.add(SocketDropped, "the oversized message did not close its socket")
    relayed = [
        (e.event, _short(e.payload))
        for e in arena.bystander.since(start)
        if not (e.event == "player:left" or (e.event == "chat:system" and "left" in str(e.payload)))
    ]
    if relayed:
        verdict.add(BystanderDisturbed, f"relayed from an oversized message: {relayed[:5]}")
    verdict.add_all(StateCorrupted, received_problems(arena.bystander, start))
    if not verdict.problems:
        await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))
        await verdict.step(StateCorrupted, arena.roster_check(set(), []))
        await verdict.step(
            StateCorrupted,
            _no_ghosts(arena, [sender], {sender: {arena.space: {player}}}, before),
        )
    await _cleanup(arena, [sender])
    await asyncio.sleep(0.2)  # let any late complaint about the refused message be logged
    verdict.check_logs()
    verdict.raise_if_any()


# --------------------------------------------------------------------------------------------
# Wiring for the test modules


def batches(messages: st.SearchStrategy[Message], size: int) -> st.SearchStrategy[list[Message]]:
    """``size`` message slots, about nine in ten of them used. Shrinking switches slots off one
    by one, so a failure shrinks to the few messages that cause it."""
    slot = st.tuples(st.integers(0, 9), messages)
    return st.lists(slot, min_size=size, max_size=size).map(
        lambda slots: [m for used, m in slots if used]
    )


def from_sender(messages: st.SearchStrategy[Message], senders: int) -> st.SearchStrategy[Message]:
    return st.builds(
        lambda m, s: Message(m.event, m.args, m.raw, s),
        messages,
        st.integers(0, senders - 1),
    )


# Each example drives a real server, so shrinking is slow: give it at most this long per failure
# (Hypothesis's own limit is five minutes). The attribute is internal; without it nothing changes.
SHRINK_SECONDS = 30
if hasattr(_hypothesis_engine, "MAX_SHRINKING_SECONDS"):
    _hypothesis_engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS


def scaled(examples: int) -> int:
    """``FUZZ_SCALE`` (default 1) multiplies every test's number of examples."""
    try:
        scale = float(os.environ.get("FUZZ_SCALE", "1"))
    except ValueError:
        scale = 1.0
    return max(1, round(examples * scale))


def fuzz_settings(examples: int) -> settings:
    """Nothing written to the repository. By default the examples are derived from the test's
    name, so every run of the suite (and CI) sends the same payloads; ``FUZZ_RANDOM=1`` draws
    fresh ones (a new random seed, printed on failure) to hunt for new bugs."""
    return settings(
        max_examples=scaled(examples),
        deadline=None,
        database=None,
        derandomize=os.environ.get("FUZZ_RANDOM") != "1",
        print_blob=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


def arena_on(server: ServerProcess) -> Iterator[Arena]:
    """Body of a module-scoped fixture: an arena on ``server`` with its own event loop thread.
    At teardown it reports how many payloads were sent per event."""
    loop = LoopThread()
    arena = Arena(server, loop)
    try:
        yield arena
    finally:
        try:
            loop.run(arena.teardown(), 30)
        finally:
            loop.close()
        if arena.payloads_sent:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(arena.payloads_sent.items()))
            print(f"\n[fuzz] payloads sent: {counts}")
            print(f"[fuzz] connections closed by binary or invalid input: {arena.closed_by_input}")


def run(arena: Arena, coro: Awaitable[T], timeout: float = 300.0) -> T:
    return arena.loop.run(coro, timeout)

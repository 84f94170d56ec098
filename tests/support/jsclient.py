"""Python side of the Node bridge that drives the official socket.io-client.

One ``Bridge`` (one Node process) serves any number of ``JsClient`` sockets. The bridge reads the
Node process's output on a background thread and hands results to whichever asyncio event loop is
waiting, so one bridge can outlive the event loop of a single test.

Waiting is race-free: every client keeps a log of everything it received, and ``wait_for`` looks
at the log first. Each event name has a cursor: ``wait_for`` returns the first not yet consumed
matching event and consumes it (and every earlier event of that name).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent.parent / "js"
BRIDGE_SCRIPT = JS_DIR / "bridge.mjs"

Predicate = Callable[[Any], bool]
Message = dict[str, Any]

DEFAULT_TIMEOUT = 5.0


class BridgeError(RuntimeError):
    """The bridge process failed or refused a command."""


class ConnectRefused(RuntimeError):
    """The server refused the connection (``connect_error``)."""

    def __init__(self, message: str, data: Any) -> None:
        super().__init__(f"connect_error: {message} (data={data!r})")
        self.message = message
        self.data = data


def to_wire(value: Any) -> Any:
    """Encode ``bytes`` anywhere in ``value`` as ``{"$bytes": base64}`` for the bridge."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def from_wire(value: Any) -> Any:
    """Decode ``{"$bytes": base64}`` values coming from the bridge into ``bytes``."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bytes"), str):
            return base64.b64decode(value["$bytes"])
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value


def payload_of(args: list[Any]) -> Any:
    """The payload of an event: its only argument, ``None`` without any, else the arg list."""
    if len(args) == 1:
        return args[0]
    if not args:
        return None
    return list(args)


class _Waiter:
    """A result slot that can be awaited from an event loop or waited for from a thread."""

    def __init__(self, matcher: Callable[[Message], bool] | None = None) -> None:
        self.matcher = matcher
        self.result: Message | None = None
        self._event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[Message] | None = None

    def bind(self) -> asyncio.Future[Message]:
        self._loop = asyncio.get_running_loop()
        self._future = self._loop.create_future()
        if self._event.is_set():
            assert self.result is not None
            self._future.set_result(self.result)
        return self._future

    def resolve(self, message: Message) -> None:
        if self._event.is_set():
            return
        self.result = message
        self._event.set()
        loop, future = self._loop, self._future
        if loop is not None and future is not None:
            try:
                loop.call_soon_threadsafe(_set_if_pending, future, message)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def wait_sync(self, timeout: float) -> Message | None:
        if self._event.wait(timeout):
            return self.result
        return None


def _set_if_pending(future: asyncio.Future[Message], message: Message) -> None:
    if not future.done():
        future.set_result(message)


@dataclass
class _ClientState:
    log: list[Message] = field(default_factory=list)
    waiters: list[_Waiter] = field(default_factory=list)


class Bridge:
    """A Node process running ``tests/js/bridge.mjs``."""

    def __init__(self, node: str | None = None, script: Path = BRIDGE_SCRIPT) -> None:
        self.node = node or shutil.which("node") or "node"
        self.script = script
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_lines: list[str] = []
        self.fatal: list[str] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._clients: dict[str, _ClientState] = {}
        self._live: list[JsClient] = []
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- process lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Bridge:
        if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
            raise BridgeError(f"socket.io-client is not installed in {JS_DIR}/node_modules")
        self._ready.clear()
        self.proc = subprocess.Popen(
            [self.node, str(self.script)],
            cwd=str(JS_DIR),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, name="bridge-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="bridge-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise BridgeError(f"bridge did not start: {''.join(self.stderr_lines)}")
        return self

    def close(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._send({"cmd": "close", "seq": 0})
                assert proc.stdin is not None
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        self.proc = None

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- reading -----------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.fatal.append(f"unparsable bridge output: {line}")
                continue
            self._dispatch(message)
        proc.stdout.close()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for waiter in pending:
            waiter.resolve({"type": "ack", "ok": False, "error": "bridge process exited"})

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for raw in proc.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace"))
        proc.stderr.close()

    def _dispatch(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "ready":
            self._ready.set()
            return
        if kind == "fatal":
            self.fatal.append(str(message.get("message")))
            return
        if kind == "ack":
            with self._lock:
                waiter = self._pending.pop(message.get("seq", -1), None)
            if waiter is not None:
                waiter.resolve(message)
            return
        client_id = message.get("id")
        if not isinstance(client_id, str):
            return
        message["at"] = time.monotonic()
        if kind == "event":
            message["args"] = from_wire(message.get("args") or [])
        matched: list[_Waiter] = []
        with self._lock:
            state = self._clients.get(client_id)
            if state is None:
                return
            state.log.append(message)
            for waiter in list(state.waiters):
                try:
                    hit = waiter.matcher is not None and waiter.matcher(message)
                except Exception:  # a predicate that cannot judge this payload: no match
                    hit = False
                if hit:
                    state.waiters.remove(waiter)
                    matched.append(waiter)
        for waiter in matched:
            waiter.resolve(message)

    # -- commands ----------------------------------------------------------------------------

    def _send(self, command: Message) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise BridgeError("bridge is not running")
        data = (json.dumps(command) + "\n").encode()
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def _prepare(self, cmd: str, fields: dict[str, Any]) -> tuple[Message, _Waiter]:
        seq = next(self._seq)
        waiter = _Waiter()
        with self._lock:
            self._pending[seq] = waiter
        return {"cmd": cmd, "seq": seq, **fields}, waiter

    async def command(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Message:
        """Send a command and await the bridge's acknowledgement."""
        if not self.alive:
            raise BridgeError(f"bridge is not running; stderr: {''.join(self.stderr_lines)}")
        command, waiter = self._prepare(cmd, fields)
        future = waiter.bind()
        self._send(command)
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BridgeError(f"bridge did not answer {cmd} within {timeout}s") from None
        if not reply.get("ok"):
            raise BridgeError(f"{cmd} failed: {reply.get('error')}")
        return reply

    def command_sync(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Message:
        """Send a command from non-async code and wait for the acknowledgement."""
        if not self.alive:
            raise BridgeError("bridge is not running")
        command, waiter = self._prepare(cmd, fields)
        self._send(command)
        reply = waiter.wait_sync(timeout)
        if reply is None:
            raise BridgeError(f"bridge did not answer {cmd} within {timeout}s")
        if not reply.get("ok"):
            raise BridgeError(f"{cmd} failed: {reply.get('error')}")
        return reply

    async def ping(self) -> None:
        await self.command("ping")

    # -- clients -----------------------------------------------------------------------------

    def client(
        self,
        url: str,
        *,
        transports: Iterable[str] = ("websocket",),
        auth: dict[str, Any] | None = None,
        reconnection: bool = False,
        name: str | None = None,
        **opts: Any,
    ) -> JsClient:
        """A new (not yet connected) client socket.

        ``opts`` are further ``io(url, opts)`` options in socket.io-client spelling
        (e.g. ``upgrade=False``, ``timeout=2000``, ``query={...}``).
        """
        client_id = f"{name or 'c'}-{next(self._ids)}"
        options: dict[str, Any] = {
            "transports": list(transports),
            "reconnection": reconnection,
            **opts,
        }
        if auth is not None:
            options["auth"] = auth
        with self._lock:
            self._clients[client_id] = _ClientState()
        client = JsClient(self, client_id, url, options)
        self._live.append(client)
        return client

    async def connected(
        self,
        url: str,
        *,
        transports: Iterable[str] = ("websocket",),
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> JsClient:
        """``client(...)`` followed by ``connect()``."""
        client = self.client(url, transports=transports, **kwargs)
        await client.connect(timeout)
        return client

    def release_clients(self) -> None:
        """Dispose of every client created so far (used between tests)."""
        clients, self._live = self._live, []
        for client in clients:
            if self.alive:
                try:
                    self.command_sync("dispose", id=client.id)
                except BridgeError:
                    pass
            with self._lock:
                self._clients.pop(client.id, None)

    # -- per-client log access (used by JsClient) --------------------------------------------

    def _snapshot(self, client_id: str) -> list[Message]:
        with self._lock:
            return list(self._clients[client_id].log)

    def _clear(self, client_id: str) -> None:
        with self._lock:
            self._clients[client_id].log.clear()

    async def _await_message(
        self,
        client_id: str,
        scan: Callable[[list[Message]], Message | None],
        matcher: Callable[[Message], bool],
        timeout: float,
    ) -> Message | None:
        """Return the first message in the log found by ``scan``, else the next one matching."""
        with self._lock:
            state = self._clients[client_id]
            found = scan(state.log)
            if found is not None:
                return found
            waiter = _Waiter(matcher)
            state.waiters.append(waiter)
        future = waiter.bind()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            with self._lock:
                if waiter in state.waiters:
                    state.waiters.remove(waiter)


class JsClient:
    """One official socket.io-client socket, living in the bridge process."""

    def __init__(self, bridge: Bridge, client_id: str, url: str, options: dict[str, Any]) -> None:
        self.bridge = bridge
        self.id = client_id
        self.url = url
        self.options = options
        self.sid: str | None = None
        self.transport: str | None = None
        self.recovered = False
        """Whether the server resumed the previous session at the last connect (connection
        state recovery)."""
        self._cursors: dict[str, int] = {}
        self._connect_cursor = 0
        self._created = False
        self.player_id: str | None = None
        self.space_id: str | None = None
        self.nickname: str | None = None

    def __repr__(self) -> str:
        return f"JsClient({self.id!r}, sid={self.sid!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Open the socket and wait until it is connected; returns the socket id.

        Raises ``ConnectRefused`` when the server answers with ``connect_error``.
        """
        if not self._created:
            await self.bridge.command("connect", id=self.id, url=self.url, opts=self.options)
            self._created = True
        else:
            await self.bridge.command("connectAgain", id=self.id)
        message = await self._next_status({"connect", "connect_error"}, timeout)
        if message is None:
            raise TimeoutError(f"{self.id}: no connect within {timeout}s")
        if message["type"] == "connect_error":
            raise ConnectRefused(str(message.get("message")), message.get("data"))
        self._connected(message)
        return str(self.sid)

    async def wait_reconnect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until the client, created with ``reconnection=True``, has connected again by
        itself after losing its connection; returns the socket id (``recovered`` tells whether
        the server resumed the session). Failed attempts in between are not errors."""
        message = await self._next_status({"connect"}, timeout)
        if message is None:
            raise AssertionError(f"{self.id}: not connected again within {timeout}s")
        self._connected(message)
        return str(self.sid)

    def _connected(self, message: Message) -> None:
        self.sid = message.get("sid")
        self.transport = message.get("transport")
        self.recovered = bool(message.get("recovered"))

    async def connect_expect_error(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Open the socket expecting a refusal; returns ``{message, data, description}``."""
        try:
            sid = await self.connect(timeout)
        except ConnectRefused as refused:
            message = self._last_of_type("connect_error") or {}
            return {
                "message": refused.message,
                "data": refused.data,
                "description": message.get("description"),
            }
        raise AssertionError(f"{self.id}: expected connect_error, but connected as {sid}")

    async def disconnect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Disconnect from the client side and wait for the ``disconnect`` event."""
        await self.bridge.command("disconnect", id=self.id)
        return await self.wait_disconnect(timeout)

    async def drop_transport(self) -> None:
        """End the connection without a Socket.IO goodbye.

        Over WebSocket the TCP connection is cut (the server sees a transport close); over
        polling the Engine.IO session is closed.
        """
        await self.bridge.command("dropTransport", id=self.id)

    async def wait_disconnect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait for ``disconnect``; returns the reason (e.g. "io server disconnect")."""
        message = await self._next_status({"disconnect"}, timeout)
        if message is None:
            raise AssertionError(f"{self.id}: not disconnected within {timeout}s")
        return str(message.get("reason"))

    async def state(self) -> dict[str, Any]:
        """``{connected, sid, transport}`` as socket.io-client sees it right now."""
        reply = await self.bridge.command("state", id=self.id)
        return {k: reply.get(k) for k in ("connected", "sid", "transport")}

    # -- sending -----------------------------------------------------------------------------

    async def emit(self, event: str, *args: Any) -> None:
        """Emit an event; ``bytes`` anywhere in ``args`` travel as binary attachments."""
        await self.bridge.command("emit", id=self.id, event=event, args=to_wire(list(args)))

    async def emit_many(self, items: Iterable[tuple[str, list[Any]]]) -> None:
        """Emit several ``(event, args)`` back to back, in one go (for bursts and ordering)."""
        batch = [{"event": event, "args": to_wire(list(args))} for event, args in items]
        await self.bridge.command("emitBatch", id=self.id, items=batch)

    async def emit_with_ack(self, event: str, *args: Any, timeout: float = 3.0) -> Any:
        """Emit asking for an acknowledgement; returns the server's answer.

        Raises ``TimeoutError`` when the server does not acknowledge within ``timeout``.
        """
        reply = await self.bridge.command(
            "emit",
            timeout=timeout + DEFAULT_TIMEOUT,
            id=self.id,
            event=event,
            args=to_wire(list(args)),
            ackTimeout=int(timeout * 1000),
        )
        if reply.get("timedOut"):
            raise TimeoutError(f"{self.id}: no acknowledgement for {event} within {timeout}s")
        return from_wire(reply.get("response"))

    async def send_raw(self, data: str | bytes) -> None:
        """Write one raw Engine.IO message carrying a Socket.IO packet string.

        ``data`` is the Socket.IO packet without the Engine.IO "4" prefix, e.g.
        ``'2["chat:message",{}]'`` (an event) or ``'2"not a list"'`` (a malformed one).
        """
        await self.bridge.command("raw", id=self.id, data=to_wire(data))

    async def send_engine_packet(self, packet_type: str, data: str | bytes | None = None) -> None:
        """Write one raw Engine.IO packet of the given type (``"ping"``, ``"close"``, ...)."""
        await self.bridge.command(
            "enginePacket", id=self.id, packetType=packet_type, data=to_wire(data)
        )

    # -- receiving ---------------------------------------------------------------------------

    async def wait_for(
        self,
        event: str,
        predicate: Predicate | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """Return the payload of the first unconsumed ``event`` satisfying ``predicate``.

        Events received before the call count. The match and every earlier event of the same
        name are consumed, so calling twice returns two different events.
        """

        def matches(message: Message) -> bool:
            if message.get("type") != "event" or message.get("event") != event:
                return False
            if predicate is None:
                return True
            try:
                return bool(predicate(payload_of(message["args"])))
            except (KeyError, IndexError, TypeError, AttributeError):
                return False  # the payload does not have the shape the predicate expects

        def scan(log: list[Message]) -> Message | None:
            for index in range(self._cursors.get(event, 0), len(log)):
                if matches(log[index]):
                    return log[index]
            return None

        message = await self.bridge._await_message(self.id, scan, matches, timeout)
        if message is None:
            seen = [payload_of(m["args"]) for m in self._unconsumed(event)]
            raise AssertionError(
                f"{self.id}: no matching {event!r} within {timeout}s; unconsumed {event!r}: "
                f"{seen!r}; other events: {self.event_names()!r}"
            )
        log = self.bridge._snapshot(self.id)
        self._cursors[event] = _index_of(log, message) + 1
        return payload_of(message["args"])

    async def wait_for_all(
        self, event: str, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Any]:
        """Wait for ``count`` further ``event`` payloads and return them in order."""
        return [await self.wait_for(event, timeout=timeout) for _ in range(count)]

    async def expect_nothing(
        self, event: str, within: float = 0.5, predicate: Predicate | None = None
    ) -> None:
        """Assert that no unconsumed ``event`` (matching ``predicate``) arrives within ``within``
        seconds. Unconsumed events that arrived before the call count as well."""
        await asyncio.sleep(within)
        unexpected = [
            payload_of(m["args"])
            for m in self._unconsumed(event)
            if predicate is None or predicate(payload_of(m["args"]))
        ]
        if unexpected:
            raise AssertionError(f"{self.id}: unexpected {event!r}: {unexpected!r}")

    def received(self, event: str) -> list[Any]:
        """Payloads of every ``event`` received since the last ``clear()``, consumed or not."""
        return [
            payload_of(m["args"])
            for m in self.bridge._snapshot(self.id)
            if m.get("type") == "event" and m.get("event") == event
        ]

    def received_args(self, event: str) -> list[list[Any]]:
        """Full argument lists of every ``event`` received since the last ``clear()``."""
        return [
            list(m["args"])
            for m in self.bridge._snapshot(self.id)
            if m.get("type") == "event" and m.get("event") == event
        ]

    def event_names(self) -> list[str]:
        """Names of all events received since the last ``clear()``, in arrival order."""
        return [str(m["event"]) for m in self.bridge._snapshot(self.id) if m.get("type") == "event"]

    def log(self) -> list[Message]:
        """Everything the bridge reported for this client (events and status changes)."""
        return self.bridge._snapshot(self.id)

    def consume(self, event: str | None = None) -> None:
        """Mark everything received so far (of ``event``, or of every name) as consumed."""
        log = self.bridge._snapshot(self.id)
        names = {event} if event else {str(m.get("event")) for m in log if m.get("event")}
        for name in names:
            self._cursors[name] = len(log)

    def clear(self) -> None:
        """Forget everything received so far."""
        self.bridge._clear(self.id)
        self._cursors.clear()
        self._connect_cursor = 0

    # -- conveniences ------------------------------------------------------------------------

    async def join(
        self,
        space_id: str,
        nickname: str,
        *,
        session_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **fields: Any,
    ) -> dict[str, Any]:
        """Emit ``join:space`` and return the ``room:joined`` payload.

        Sets ``player_id`` (from ``yourPlayerId``), ``space_id`` and ``nickname``.

        ``fields`` are extra ``join:space`` fields in wire spelling (``playerId``,
        ``avatarColor``, ``role``, ...).
        """
        payload: dict[str, Any] = {"spaceId": space_id, "nickname": nickname, **fields}
        if session_token is not None:
            payload["sessionToken"] = session_token
        await self.emit("join:space", payload)
        joined = await self.wait_for(
            "room:joined", lambda p: isinstance(p, dict) and p.get("spaceId") == space_id, timeout
        )
        assert isinstance(joined, dict)
        self.player_id = joined.get("yourPlayerId")
        self.space_id = space_id
        self.nickname = nickname
        return joined

    # -- internals ---------------------------------------------------------------------------

    def _unconsumed(self, event: str) -> list[Message]:
        log = self.bridge._snapshot(self.id)
        start = self._cursors.get(event, 0)
        return [m for m in log[start:] if m.get("type") == "event" and m.get("event") == event]

    def _last_of_type(self, kind: str) -> Message | None:
        for message in reversed(self.bridge._snapshot(self.id)):
            if message.get("type") == kind:
                return message
        return None

    async def _next_status(self, kinds: set[str], timeout: float) -> Message | None:
        start = self._connect_cursor

        def matches(message: Message) -> bool:
            return message.get("type") in kinds

        def scan(log: list[Message]) -> Message | None:
            for index in range(start, len(log)):
                if matches(log[index]):
                    return log[index]
            return None

        message = await self.bridge._await_message(self.id, scan, matches, timeout)
        if message is not None:
            self._connect_cursor = _index_of(self.bridge._snapshot(self.id), message) + 1
        return message


def _index_of(log: list[Message], message: Message) -> int:
    for index in range(len(log) - 1, -1, -1):
        if log[index] is message:
            return index
    raise LookupError("message is no longer in the log")

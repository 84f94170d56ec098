"""The Socket.IO server class and its JSON codec.

orjson encodes and decodes the common case quickly; anything it refuses (integers beyond 64 bits,
``NaN``) falls back to the standard library so that such payloads still reach validation and get a
proper error reply. Packets that cannot be decoded at all are dropped with a warning, never a
traceback or an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _stdlib_json
import socket
from collections.abc import Callable
from typing import Any

import engineio
import engineio.payload
import orjson
import socketio
from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as _aiohttp_driver

from .observability.logging import log


class FastJson:
    """A ``json``-module lookalike for python-socketio."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return _stdlib_json.dumps(obj, separators=(",", ":"), default=str)

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                return _stdlib_json.loads(text)
            except RecursionError as exc:
                raise ValueError("payload nested too deeply") from exc


_FAST_PATH_SLICE = 5.0
KERNEL_SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a WebSocket (the kernel doubles it). Left to autotuning, each socket of
a client that stops reading may hold megabytes in the kernel, out of the server's sight; capped,
a client that falls behind shows up in the transport's own buffer, where positions are folded
and the per-client limit applies."""


def _cap_send_buffer(request: Any) -> None:
    transport = getattr(request, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)


class _UncompressedWebSocket(_aiohttp_driver.WebSocket):  # type: ignore[misc]
    """The aiohttp WebSocket wrapper without per-message deflate, remembered by its socket.

    Compressing every small position frame costs more CPU than the bytes it saves (the official
    Node.js server also ships with compression off). The engine.io socket keeps a reference to
    its ``WebSocketResponse`` so the broadcast path can write pre-built frames straight to it.
    """

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        _cap_send_buffer(request)
        self.environ = environ
        self._owner = getattr(self.handler, "__self__", None)
        if self._owner is not None:
            self._owner.raw_ws = self._sock
        await self.handler(self)
        return self._sock

    async def wait(self) -> str | bytes:
        """The next message for engine.io, after handling the hot events inline.

        A ``player:move`` that the fast handler accepts never goes through engine.io's and
        Socket.IO's per-message machinery (a task, a timeout, two packet decodes and a handler
        dispatch each); anything else — pings, other events, malformed or unusual moves — goes
        the ordinary way, in the order received. Every few seconds of uninterrupted moves a
        NOOP is handed up so engine.io's read-timeout loop comes round.
        """
        fast = getattr(self.server, "fast_message", None)
        owner = self._owner
        loop = asyncio.get_running_loop()
        hand_up_at = loop.time() + _FAST_PATH_SLICE
        while True:
            msg = await self._sock.receive()
            data = msg.data
            if isinstance(data, str):
                if (
                    fast is not None
                    and owner is not None
                    and owner.upgraded
                    and data.startswith('42["')
                    and fast(owner.sid, data)
                ):
                    if loop.time() >= hand_up_at:
                        return "6"
                    continue
                return data
            if isinstance(data, bytes):
                return data
            raise OSError()


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    fast_message: Callable[[str, str], bool] | None = None
    """``(engine.io sid, message) -> handled``: inline handling of hot events (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async)
        self._async["websocket"] = _UncompressedWebSocket


# A long-polling client sends everything queued since its last POST in one payload; at 60 moves
# a second a slow round trip easily exceeds engine.io's default of 16 packets, and the client
# would be disconnected for it. The payload stays bounded by the 64 KiB transport limit.
engineio.payload.Payload.max_decode_packets = 1024


class SpaceSocketServer(socketio.AsyncServer):
    """``AsyncServer`` that treats undecodable packets as bad input from one client."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineServer

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
            self._binary_packet.pop(eio_sid, None)
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            log.warn(
                "E3001",
                f"Malformed Socket.IO packet dropped: {type(exc).__name__}",
                socketId=sid or eio_sid,
            )
            if sid is not None:
                await self.emit(
                    "error", {"message": "Malformed packet", "code": "INVALID_PAYLOAD"}, to=sid
                )

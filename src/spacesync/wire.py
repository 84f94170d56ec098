"""The Socket.IO server class and its JSON codec.

orjson encodes and decodes the common case quickly; anything it refuses (integers beyond 64 bits,
``NaN``) falls back to the standard library so that such payloads still reach validation and get a
proper error reply. Packets that cannot be decoded at all are dropped with a warning, never a
traceback or an alert.
"""

from __future__ import annotations

import json as _stdlib_json
from typing import Any

import engineio.payload
import orjson
import socketio

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


# A long-polling client sends everything queued since its last POST in one payload; at 60 moves
# a second a slow round trip easily exceeds engine.io's default of 16 packets, and the client
# would be disconnected for it. The payload stays bounded by the 64 KiB transport limit.
engineio.payload.Payload.max_decode_packets = 1024


class SpaceSocketServer(socketio.AsyncServer):
    """``AsyncServer`` that treats undecodable packets as bad input from one client."""

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

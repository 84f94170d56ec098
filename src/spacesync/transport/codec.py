"""Encoding and decoding of Engine.IO and Socket.IO packets, and the JSON codec they use.

orjson encodes and decodes the common case quickly; anything it refuses (integers beyond 64 bits,
``NaN``) falls back to the standard library so that such payloads still reach validation and get a
proper error reply. Text that decodes to lone surrogates is refused, since it could not be sent on
to anyone.
"""

from __future__ import annotations

import base64
import binascii
import json as _stdlib_json
import struct
from dataclasses import dataclass
from typing import Any

import orjson

# -- JSON --------------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _stdlib_json.dumps(obj, separators=(",", ":"), default=str).encode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            value = _stdlib_json.loads(text)
        except RecursionError as exc:
            raise ValueError("payload nested too deeply") from exc
        _check_unicode(value)
        return value


def _check_unicode(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError("payload is not valid Unicode") from exc
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# -- WebSocket frames --------------------------------------------------------------------------


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """An unmasked, final WebSocket frame (text unless ``binary``): what a server sends."""
    first = 0x82 if binary else 0x81
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def ws_text_head(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


WS_CLOSE_FRAME = b"\x88\x02\x03\xe8"
"""A close frame with status 1000 (normal closure)."""

# -- Engine.IO ---------------------------------------------------------------------------------

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0", "1", "2", "3", "4", "5", "6"
ENGINE_TYPES = frozenset("0123456")
RECORD_SEPARATOR = "\x1e"


class BadPacket(ValueError):
    """Input that is not a packet of the protocol: the session that sent it is closed."""


def decode_payload(body: str) -> list[str | bytes]:
    """The packets of a long-polling request body (``\\x1e``-separated; ``b`` + base64 for
    binary messages)."""
    packets: list[str | bytes] = []
    for part in body.split(RECORD_SEPARATOR):
        if not part:
            raise BadPacket("empty packet")
        if part[0] == "b":
            try:
                packets.append(base64.b64decode(part[1:], validate=True))
            except (binascii.Error, ValueError) as exc:
                raise BadPacket("bad base64") from exc
        elif part[0] in ENGINE_TYPES:
            packets.append(part)
        else:
            raise BadPacket("unknown packet type")
    return packets


def encode_payload(packets: list[str | bytes]) -> str:
    return RECORD_SEPARATOR.join(
        p if isinstance(p, str) else "b" + base64.b64encode(p).decode() for p in packets
    )


# -- Socket.IO ---------------------------------------------------------------------------------

S_CONNECT, S_DISCONNECT, S_EVENT, S_ACK, S_CONNECT_ERROR, S_BINARY_EVENT, S_BINARY_ACK = range(7)
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Names a client may not send (the protocol's own events)."""
MAX_ATTACHMENTS = 10


@dataclass(slots=True)
class Packet:
    type: int
    namespace: str = "/"
    data: Any = None
    id: int | None = None
    attachments: int = 0


def decode_packet(text: str) -> Packet:
    """A Socket.IO packet from the text of an Engine.IO message; :class:`BadPacket` when it is
    not one (an unknown type, a namespace or id that does not parse, a payload that is not JSON
    or not of the shape its type requires)."""
    if not text or not ("0" <= text[0] <= "6"):
        raise BadPacket("unknown packet type")
    kind = ord(text[0]) - 48
    i = 1
    n = len(text)
    attachments = 0
    if kind in (S_BINARY_EVENT, S_BINARY_ACK):
        dash = text.find("-", i)
        digits = text[i:dash] if dash > 0 else ""
        if not _digits(digits) or len(digits) > 6:
            raise BadPacket("bad attachment count")
        attachments = int(digits)
        i = dash + 1
    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            namespace = text[i:]
            i = n
        else:
            namespace = text[i:comma]
            i = comma + 1
    ack: int | None = None
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i > start:
        if i - start > 15:
            raise BadPacket("bad ack id")
        ack = int(text[start:i])
    data: Any = None
    present = i < n
    if present:
        try:
            data = loads(text[i:])
        except ValueError as exc:
            raise BadPacket("payload is not JSON") from exc
    packet = Packet(kind, namespace, data, ack, attachments)
    if not _valid(packet, present):
        raise BadPacket("invalid payload")
    return packet


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²`` or ``٣``)."""
    return text.isascii() and text.isdigit()


def _valid(packet: Packet, present: bool) -> bool:
    kind, data = packet.type, packet.data
    if kind == S_CONNECT:
        return not present or isinstance(data, dict)
    if kind == S_DISCONNECT:
        return not present
    if kind in (S_EVENT, S_BINARY_EVENT):
        if not isinstance(data, list) or not data:
            return False
        name = data[0]
        if isinstance(name, str):
            return name not in RESERVED_EVENTS
        return isinstance(name, int | float) and not isinstance(name, bool)
    if kind in (S_ACK, S_BINARY_ACK):
        return isinstance(data, list) and packet.id is not None
    return False  # CONNECT_ERROR only goes from server to client


def encode_packet(packet: Packet) -> str:
    parts = [str(packet.type)]
    if packet.type in (S_BINARY_EVENT, S_BINARY_ACK):
        parts.append(f"{packet.attachments}-")
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if packet.data is not None:
        parts.append(dumps(packet.data).decode())
    return "".join(parts)


def deconstruct(data: Any) -> tuple[Any, list[bytes]]:
    """Replace binary values by placeholders: ``(data, attachments)``."""
    buffers: list[bytes] = []

    def walk(value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            buffers.append(bytes(value))
            return {"_placeholder": True, "num": len(buffers) - 1}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(data), buffers


def reconstruct(data: Any, buffers: list[bytes]) -> Any:
    """Put the attachments back where their placeholders are."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("_placeholder") is True and len(value) == 2:
                num = value.get("num")
                if isinstance(num, int) and not isinstance(num, bool) and 0 <= num < len(buffers):
                    return buffers[num]
                raise BadPacket("bad attachment placeholder")
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(data)

"""The server side of RFC 6455 WebSocket framing, as an asyncio protocol.

:class:`WebSocket` parses client frames straight from ``data_received``: no reader task, no
message queue and no future per message, so a small message costs one callback and a few
slices. Subclasses receive whole messages (:meth:`WebSocket.on_text`,
:meth:`WebSocket.on_binary`) and the end of the connection (:meth:`WebSocket.on_end`).

What is refused, with the close code RFC 6455 names: an unmasked client frame, reserved bits
(no extension is negotiated), unknown opcodes, a control frame that is fragmented or longer than
125 bytes, a continuation without a message to continue or a new message inside a fragmented one
(1002); a message longer than the limit, as soon as its header announces it, before any of it is
buffered (1009); text that is not UTF-8 (1007). A binary message can be refused by
:meth:`WebSocket.binary_allowed` from its header alone, too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_MAX_CONTROL = 125


def handshake_key(headers: Mapping[str, str]) -> str | None:
    """The client's ``Sec-WebSocket-Key`` of a valid upgrade request (``Upgrade: websocket``,
    ``Connection: upgrade``, version 13, a 16-byte key), or None."""
    if "websocket" not in _tokens(headers.get("Upgrade", "")):
        return None
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        return None
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    return key if valid else None


def _tokens(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


def switching_protocols(key: str) -> bytes:
    """The ``101`` answer accepting an upgrade with ``key``."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


def close_frame(code: int) -> bytes:
    return struct.pack("!BBH", 0x88, 2, code)


def unmask(mask: bytes, payload: bytes | bytearray) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (one big-integer operation)."""
    n = len(payload)
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class WebSocket(asyncio.Protocol):
    """A server-side WebSocket on an already upgraded transport."""

    __slots__ = (
        "_buffer",
        "_fragment_op",
        "_fragments",
        "_fragments_size",
        "ended",
        "held",
        "limit",
        "tx",
    )

    def __init__(self, tx: asyncio.Transport, limit: int) -> None:
        self.tx = tx
        self.limit = limit
        """Largest message, in bytes."""
        self.ended = False
        self.held = False
        self._buffer = b""
        self._fragment_op = 0
        self._fragments: list[bytes] = []
        self._fragments_size = 0

    # -- what subclasses receive ------------------------------------------------------------

    def on_text(self, text: str) -> None:
        raise NotImplementedError

    def on_binary(self, data: bytes) -> None:
        raise NotImplementedError

    def binary_allowed(self) -> bool:
        """Whether a binary message may follow (asked when its first frame's header arrives;
        on False nothing more is read)."""
        return True

    def on_end(self, reason: str, graceful: bool) -> None:
        """The connection is over: ``"transport close"`` when the client closed it (``graceful``:
        with a close frame, which the subclass answers), ``"transport error"`` or
        ``"parse error"`` when it broke or broke the protocol."""
        raise NotImplementedError

    # -- asyncio ------------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            self.ended = True
            self.on_end("transport close" if exc is None else "transport error", False)

    def eof_received(self) -> bool:
        return False

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        pos = 0
        end = len(data)
        while end - pos >= 2 and not self.held:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b0 & 0x70 or not b1 & 0x80:
                self._fail(CLOSE_PROTOCOL_ERROR, "parse error")
                return
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (data[head] << 8) | data[head + 1]
                head += 2
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            opcode = b0 & 0x0F
            if opcode >= OP_CLOSE:
                if length > _MAX_CONTROL or not b0 & 0x80:
                    self._fail(CLOSE_PROTOCOL_ERROR, "parse error")
                    return
            elif length + self._fragments_size > self.limit:
                self._fail(CLOSE_TOO_BIG, "transport error")
                return
            elif (
                opcode == OP_BINARY
                or (opcode == OP_CONTINUATION and self._fragment_op == OP_BINARY)
            ) and not self.binary_allowed():
                self.ended = True
                return
            stop = head + 4 + length
            if stop > end:
                break
            payload = unmask(data[head : head + 4], data[head + 4 : stop]) if length else b""
            pos = stop
            if not self._frame(b0 & 0x80, opcode, payload) or self.ended:
                return
        if pos < end:
            self._buffer = bytes(data[pos:])

    def hold(self) -> None:
        """Stop reading (what was already received waits, unparsed) until :meth:`release`."""
        if not self.held:
            self.held = True
            if not self.tx.is_closing():
                self.tx.pause_reading()

    def release(self) -> None:
        """Read again, starting with what was received while held."""
        if self.held:
            self.held = False
            if not self.tx.is_closing():
                self.tx.resume_reading()
            if self._buffer:
                self.data_received(b"")

    def _frame(self, fin: int, opcode: int, payload: bytes) -> bool:
        """One complete frame; False when the connection is over."""
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if self._fragment_op:
                self._fail(CLOSE_PROTOCOL_ERROR, "parse error")
                return False
            if not fin:
                self._fragment_op = opcode
                self._fragments = [payload]
                self._fragments_size = len(payload)
                return True
            return self._message(opcode, payload)
        if opcode == OP_CONTINUATION:
            if not self._fragment_op:
                self._fail(CLOSE_PROTOCOL_ERROR, "parse error")
                return False
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if not fin:
                return True
            opcode, self._fragment_op = self._fragment_op, 0
            parts, self._fragments, self._fragments_size = self._fragments, [], 0
            return self._message(opcode, b"".join(parts))
        if opcode == OP_PING:
            if not self.tx.is_closing():
                self.tx.write(bytes((0x8A, len(payload))) + payload)
            return True
        if opcode == OP_PONG:
            return True
        if opcode == OP_CLOSE:
            self.ended = True
            self.on_end("transport close", True)
            return False
        self._fail(CLOSE_PROTOCOL_ERROR, "parse error")
        return False

    def _message(self, opcode: int, payload: bytes) -> bool:
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_DATA, "parse error")
                return False
            self.on_text(text)
        else:
            self.on_binary(payload)
        return True

    def _fail(self, code: int, reason: str) -> None:
        """Close for broken input: the close frame, then the end."""
        self.ended = True
        self._buffer = b""
        self._fragments = []
        if not self.tx.is_closing():
            self.tx.write(close_frame(code))
        self.on_end(reason, False)

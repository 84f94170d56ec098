"""Nothing a player reads bypasses the message catalog.

Every reply, notice and player-facing error is asked for by key, so that ``LOCALE`` reaches all
of them. This reads the source of ``spacesync`` and fails with ``file:line`` for any literal
text handed to what answers players (the reply and notice methods, the emit calls, the payload
fields ``message`` / ``content`` / sender names, the exceptions whose text players read), and for
any catalog key used in the code that the catalog does not have.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import spacesync
from spacesync.texts import TEXTS

SOURCE = Path(spacesync.__file__).resolve().parent
EN = TEXTS["en"]

REPLY_CALLS = frozenset(
    {
        "_reply_error",
        "_safe_error",
        "_refuse",
        "_system",
        "_notice",
        "reply_error",
        "safe_error",
        "refuse",
        "system",
        "notice",
        "broadcast_system",
        "system_message",
        "refusal",
        "chat_refused",
        "muted",
        "admin_error",
        "admin_rate_limited",
        "to_sid",
        "to_space",
        "to_players",
        "publish_remote",
        "emit",
    }
)
"""Calls whose text arguments go to players."""

KEYED_CALLS: dict[str, int] = {
    "BadInput": 0,
    "PartyError": 0,
    "NicknameError": 0,
    "AuthRefused": 0,
    "TextError": 0,
    "Text": 0,
    "text": 0,
    "_whisper_error": 1,
}
"""Calls that take a catalog key, and the position of the key."""

PLAYER_FIELDS = frozenset({"message", "content", "senderNickname", "senderName"})
"""Payload fields a player reads."""

ALLOWED_LITERALS = {"ConnectionRefusedError", "connect_refused"}
"""Refusals that must name a constant from :mod:`spacesync.protocol` (see there) instead."""

KEY_RE = re.compile(r"[a-z][a-z_]*(\.[a-z_]+)+")


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literals(node: ast.expr) -> Iterator[ast.expr]:
    """String literals a value may be: itself, either branch of ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.JoinedStr):
        yield node
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value)


def _is_prose(node: ast.expr) -> bool:
    """An f-string, or a string with a space and a letter in it: words, not a name or a code."""
    if isinstance(node, ast.JoinedStr):
        return True
    assert isinstance(node, ast.Constant)
    return " " in node.value and re.search(r"[^\W\d_]", node.value) is not None


def problems_in(source: str, filename: str) -> list[str]:
    """``file:line: what`` for every text that bypasses the catalog in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in PLAYER_FIELDS:
                    for literal in _literals(value):
                        found.append(f"{filename}:{literal.lineno}: literal text in {key.value!r}")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name is None:
            continue
        args = list(node.args) + [k.value for k in node.keywords]
        if name in REPLY_CALLS:
            for arg in args:
                for literal in _literals(arg):
                    if _is_prose(literal):
                        found.append(f"{filename}:{literal.lineno}: literal text passed to {name}")
        if name in ALLOWED_LITERALS:
            for arg in args:
                for literal in _literals(arg):
                    found.append(f"{filename}:{literal.lineno}: literal text passed to {name}")
        position = KEYED_CALLS.get(name)
        if position is not None and len(node.args) > position:
            for literal in _literals(node.args[position]):
                if isinstance(literal, ast.JoinedStr) or not KEY_RE.fullmatch(literal.value):
                    found.append(f"{filename}:{literal.lineno}: {name} needs a catalog key")
                elif literal.value not in EN:
                    found.append(f"{filename}:{literal.lineno}: no text {literal.value!r}")
    return found


UNTRANSLATED = frozenset({"texts", "transport"})
"""Packages whose strings are not for players: the catalog itself, and the transport, whose few
messages (``Invalid namespace``, ``Session ID unknown``) are fixed by the protocols."""


def _sources() -> list[Path]:
    return sorted(
        p for p in SOURCE.rglob("*.py") if not UNTRANSLATED & set(p.relative_to(SOURCE).parts)
    )


def test_no_text_a_player_reads_bypasses_the_catalog() -> None:
    found: list[str] = []
    for path in _sources():
        found += problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(SOURCE)))
    assert found == [], "texts outside the catalog:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        'await self._safe_error(session, "Oops, try again", "X")',
        'await self.out.to_sid(sid, "chat:error", {"message": "Too fast"})',
        'await self.out.to_sid(sid, "x", {"message": f"{n} left"})',
        'raise BadInput("nickname is required")',
        'raise PartyError("error.party.no_such_text")',
        'await self._whisper_error(session, "That player is not here")',
        'raise ConnectionRefusedError("Invalid session")',
        'msg = {"senderNickname": "System"}',
        'await self._system(space, f"{nickname} joined" if a else "gone away")',
    ],
)
def test_the_check_finds_literal_texts(line: str) -> None:
    assert problems_in(line, "sample.py"), line


@pytest.mark.parametrize(
    "line",
    [
        'await self._safe_error(session, self.texts.text("error.internal"), "INTERNAL_ERROR")',
        'await self.out.to_sid(sid, "error", {"message": message, "code": "INVALID_PAYLOAD"})',
        'raise BadInput("error.input.required", field="spaceId")',
        'await self._whisper_error(session, "error.whisper.self")',
        "raise ConnectionRefusedError(protocol.CONNECT_INVALID_SESSION)",
    ],
)
def test_the_check_lets_keyed_texts_through(line: str) -> None:
    assert problems_in(line, "sample.py") == [], line

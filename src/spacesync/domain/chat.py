"""Chat rules (SPEC §6): neutralising content and the per-player rate limit."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..texts import Text

_TAG_RE = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>", re.DOTALL)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})
_ENTITY_RE = re.compile(r"&(?:lt|gt|amp|quot|#x27|#x2[fF]);")
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#x27;": "'", "&#x2f;": "/"}
# Control characters (newline and tab excepted) and the marks that reorder or hide text:
# a right-to-left override in a message or a name makes what follows it read backwards, so a
# relayed string could pass for something else.
_UNSAFE_RE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_LINE_BREAKS = str.maketrans({"\r": None, "\u2028": "\n", "\u2029": "\n"})

RATE_LIMIT_MESSAGES = 5
RATE_LIMIT_WINDOW = 5.0
MAX_IDENTICAL_IN_A_ROW = 2


def plain_text(text: str) -> str:
    """What a reader should see of ``text``: control and direction-override characters dropped,
    HTML tags removed, the common entities decoded (SPEC §6).

    Controls go first so that they cannot split a tag and hide it from the tag pattern.
    Decoding comes after tag removal, so an encoded tag survives as visible text (escaped again
    by :func:`escape_markup`), never as markup.
    """
    text = _UNSAFE_RE.sub("", text.translate(_LINE_BREAKS))
    text = _TAG_RE.sub("", text)
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(0).lower()], text)


def escape_markup(text: str) -> str:
    """Escape ``& < > " '`` so no client renders markup."""
    return text.translate(_ESCAPES)


def sanitize(text: str) -> str:
    """The one neutralising rule for every string relayed to other clients (SPEC §6).

    Because entities are decoded before escaping, applying it to its own output changes
    nothing: a nickname neutralised when it entered the server can go through it again on an
    output path without turning ``&amp;`` into ``&amp;amp;``.
    """
    return escape_markup(plain_text(text))


@dataclass(slots=True)
class _History:
    accepted: deque[float] = field(default_factory=deque)
    last_content: str | None = None
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class ChatDecision:
    """Whether a message may go out; a refusal names its text (rendered in the node's
    language by the handler that answers) and the seconds to wait, if waiting helps."""

    allowed: bool
    refusal: Text | None = None
    retry_after: int = 0

    @property
    def reason(self) -> str:
        """The refusal in English, for the logs."""
        return "" if self.refusal is None else str(self.refusal)


def normalized_content(content: str) -> str:
    """What "the same message" compares: case and surrounding blanks do not count."""
    return content.strip().casefold()


def too_fast(seconds_left: float) -> ChatDecision:
    """The refusal of a message over the limit, ``seconds_left`` before the oldest counted
    message leaves the window."""
    wait = max(1, math.ceil(seconds_left))
    return ChatDecision(False, Text("error.chat.too_fast", {"seconds": wait}), wait)


REPEATED = ChatDecision(False, Text("error.chat.repeated"))


class ChatRateLimiter:
    """At most five accepted messages per player in any five-second window; no third repeat.

    Shared by chat, whispers and party messages, keyed by player (not socket), so a second tab
    does not double the allowance.
    """

    def __init__(
        self,
        limit: int = RATE_LIMIT_MESSAGES,
        window: float = RATE_LIMIT_WINDOW,
        max_identical: int = MAX_IDENTICAL_IN_A_ROW,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_identical = max_identical
        self._players: dict[str, _History] = {}

    def check(self, player_id: str, content: str, now: float) -> ChatDecision:
        """Decide on one message and record it if accepted."""
        history = self._players.setdefault(player_id, _History())
        accepted = history.accepted
        while accepted and now - accepted[0] >= self.window:
            accepted.popleft()
        if len(accepted) >= self.limit:
            return too_fast(accepted[0] + self.window - now)
        normalized = normalized_content(content)
        if normalized == history.last_content and history.repeats >= self.max_identical:
            return REPEATED
        if normalized == history.last_content:
            history.repeats += 1
        else:
            history.last_content = normalized
            history.repeats = 1
        accepted.append(now)
        return ChatDecision(True)

    def export(self, player_id: str) -> list[Any] | None:
        """One player's history as JSON-ready data (for a shared store)."""
        history = self._players.get(player_id)
        if history is None:
            return None
        return [list(history.accepted), history.last_content, history.repeats]

    def restore(self, player_id: str, data: list[Any] | None) -> None:
        """Replace one player's history with what :meth:`export` gave."""
        if data is None:
            self._players.pop(player_id, None)
            return
        accepted, last_content, repeats = data
        times = deque(float(t) for t in accepted)
        self._players[player_id] = _History(times, last_content, int(repeats))

    def forget_idle(self, now: float) -> None:
        """Drop players with no message inside the window (keeps memory bounded)."""
        idle = [
            pid
            for pid, h in self._players.items()
            if not h.accepted or now - h.accepted[-1] >= self.window * 12
        ]
        for pid in idle:
            del self._players[pid]

    def __len__(self) -> int:
        return len(self._players)

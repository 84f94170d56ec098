"""Chat rules (SPEC §6): neutralising content and the per-player rate limit."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_TAG_RE = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>", re.DOTALL)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})

RATE_LIMIT_MESSAGES = 5
RATE_LIMIT_WINDOW = 5.0
MAX_IDENTICAL_IN_A_ROW = 2


def sanitize(text: str) -> str:
    """Remove HTML tags, then escape ``& < > " '`` so no client renders markup."""
    return _TAG_RE.sub("", text).translate(_ESCAPES)


@dataclass(slots=True)
class _History:
    accepted: deque[float] = field(default_factory=deque)
    last_content: str | None = None
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class ChatDecision:
    allowed: bool
    reason: str = ""
    retry_after: int = 0


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
            wait = max(1, math.ceil(accepted[0] + self.window - now))
            unit = "second" if wait == 1 else "seconds"
            return ChatDecision(
                False, f"You are sending messages too fast. Wait {wait} {unit}.", wait
            )
        normalized = content.strip().casefold()
        if normalized == history.last_content and history.repeats >= self.max_identical:
            return ChatDecision(False, "Please don't repeat the same message.")
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

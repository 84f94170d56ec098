"""Counters of refused input, by reason: the ``abuse`` section of ``/metrics``.

Every refusal of hostile or excessive input (a rate limit, a refused packet, a timeout that
closed an idle socket, a refused handshake) is counted here under a short, fixed reason name, so
an operator can see what is being attempted without reading the logs. Reasons are a closed set
chosen by the code, never derived from client input, so the section cannot grow without bound.
"""

from __future__ import annotations

from collections import Counter


class AbuseCounters:
    """Monotonic counters of refused input, one per reason."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, reason: str, n: int = 1) -> None:
        self._counts[reason] += n

    def get(self, reason: str) -> int:
        return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        """Every reason seen so far with its count, sorted by name."""
        return dict(sorted(self._counts.items()))

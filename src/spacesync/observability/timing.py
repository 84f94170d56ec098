"""Where instrumented code reports a duration, without depending on the metrics library.

The broadcaster, the app client, the storage adapters and the Redis client each hold an
:class:`Observer` (a histogram of the node's registry once the node wires it up, see
:mod:`.prom`); until then :data:`NOT_OBSERVED` takes the figures and drops them.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _NotObserved:
    __slots__ = ()

    def observe(self, amount: float) -> None:
        pass


NOT_OBSERVED: Observer = _NotObserved()

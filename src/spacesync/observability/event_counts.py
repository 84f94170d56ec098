"""Socket.IO events received, by name: the ``spacesync_events_total`` counter of ``/metrics``.

The handlers count here where every event passes (the dispatch guard, the catch-all for unknown
events, the fast path for moves); the Prometheus collector reads :meth:`EventCounts.snapshot`.
Names are the events the server handles, each given a cell when its handler is bound, and
:data:`OTHER_EVENT` for all others: a name a client chooses never becomes a label, so the number
of series stays bounded.
"""

from __future__ import annotations

OTHER_EVENT = "other"
"""The ``event`` label of events the server has no handler for (whatever their name)."""


class EventCounts:
    """One plain integer cell per handled event, and one for all others.

    A cell is a one-item list, taken once when a handler is bound and incremented in place, so
    counting an event costs one integer increment and no lookup by name."""

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: dict[str, list[int]] = {OTHER_EVENT: [0]}

    def cell(self, event: str) -> list[int]:
        """The cell of ``event`` (a name chosen by the code), made at zero on first use."""
        cell = self.cells.get(event)
        if cell is None:
            cell = self.cells[event] = [0]
        return cell

    def snapshot(self) -> dict[str, int]:
        """Every event with its count, sorted by name."""
        return {event: cell[0] for event, cell in sorted(self.cells.items())}

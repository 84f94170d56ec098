"""Whether a cluster node may use Redis right now.

One :class:`RedisLink` per node is shared by the state store, the bus and the node monitor:
whichever of them sees a Redis call fail marks the link down, the monitor's heartbeat brings it
back up once the node's state is written back, and each of them asks it before sharing anything.
"""

from __future__ import annotations

import time

from ..observability.logging import log


class RedisLink:
    """This node's view of Redis: up or down, and whether its last heartbeat is too old to
    trust (see :meth:`in_doubt`)."""

    def __init__(self, doubt_after: float | None = None) -> None:
        self.healthy = False
        """False until the first heartbeat, and from a failed call until the heartbeat that
        wrote this node's state back."""
        self.doubt_after = doubt_after
        self.confirmed_at: float | None = None
        """``time.monotonic()`` of the last heartbeat Redis accepted."""
        self.connected_since: float | None = None
        """Since when Redis has answered without a break (``None`` while it is down)."""
        self.outages = 0
        self._down_logged = False

    def in_doubt(self) -> bool:
        """True when this node has not confirmed its heartbeat for ``doubt_after`` seconds (it
        was frozen, or its event loop stalled): the others may have declared it dead and removed
        its players, so nothing its players do is shared until the next heartbeat says whether
        they were (then they are dropped) or not."""
        if self.doubt_after is None:
            return False
        confirmed = self.confirmed_at
        return confirmed is None or time.monotonic() - confirmed > self.doubt_after

    def mark_down(self, exc: BaseException) -> None:
        """A Redis call failed: serve this node's players alone until the next heartbeat."""
        if not self.healthy:
            return
        self.healthy = False
        self.connected_since = None
        if not self._down_logged:
            self._down_logged = True
            self.outages += 1
            log.error(
                "E6003",
                "Redis is unreachable: serving this node's players alone until it is back",
                error=f"{type(exc).__name__}: {exc}",
            )

    def confirm(self) -> None:
        """A heartbeat went through, with this node's state in Redis."""
        self.healthy = True
        self.confirmed_at = time.monotonic()
        if self.connected_since is None:
            self.connected_since = time.monotonic()

    def recovered(self) -> bool:
        """Whether an outage was logged since the last call (to log its end once)."""
        was, self._down_logged = self._down_logged, False
        return was

"""What this node knows about one connected socket."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..domain.identity import Identity
from ..domain.limits import SocketLimits
from ..domain.moderation import Mute


@dataclass(slots=True)
class PreVerified:
    """An identity verified at connect time (SPEC §2.2), reused by a ``join:space`` of the same
    space only: the app vouched for the session in ``space_id``, not in any other."""

    token: str
    space_id: str
    identity: Identity
    app_role: str | None = None
    """The role the app's verify answer named, if any (it outranks the database's)."""


@dataclass(slots=True)
class Session:
    sid: str
    address: str
    connected_at: float = field(default_factory=time.time)
    identity: Identity | None = None
    space_id: str | None = None
    joined_at: float = 0.0
    batching: bool = False
    pre_verified: PreVerified | None = None
    connect_token: str | None = None
    """The connect-time ``auth.sessionToken``, verified or not: a join that sends no token of its
    own is verified with this one."""
    closing_reason: str | None = None
    """Set when the server closes the socket on purpose (duplicate session, shutdown)."""
    limits: SocketLimits = field(default_factory=SocketLimits)
    """Rate-limit state of this socket: it goes when the socket goes."""
    membership: asyncio.Lock | None = None
    """Held by a join, a leave or the departure at disconnect: in a cluster each awaits Redis
    several times, and two of them interleaved could leave the socket in two spaces, or a
    player listed for a socket that is gone. Made by the first of them and dropped when the
    last one is done, so a socket that stays in its space holds no lock."""
    membership_queue: int = 0
    """Joins, leaves and departures of this socket holding :attr:`membership` or waiting
    for it."""
    membership_holder: asyncio.Task[Any] | None = None
    """The task holding :attr:`membership` (a socket closed from inside its own join does
    not wait for itself)."""
    mute: Mute | None = None
    """The mute in force on this player in this space (restored at the join, changed by
    moderation on any node): checked on every message without a round trip."""
    mute_timer: asyncio.TimerHandle | None = None
    """Lifts :attr:`mute` when it lapses (a timed mute only)."""

    @property
    def joined(self) -> bool:
        return self.space_id is not None and self.identity is not None

    def context(self) -> dict[str, str | None]:
        return {
            "socketId": self.sid,
            "spaceId": self.space_id,
            "playerId": self.identity.player_id if self.identity else None,
        }

"""Moderation rules without I/O: who may act on whom, how a target is named, what a mute is.

The FlowSpace client names its target as ``"nickname:<nick>"`` (its chat commands know only
nicknames); the app's member pages know member ids and user ids. A target that must be present
(mute, kick) is looked up in the space; one that is not there any more (unban, a late unmute)
is named by ``"user:<userId>"``, ``"guest:<GuestSession.id>"`` or a ``SpaceMember.id`` / user id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

ROLE_RANK: dict[str, int] = {"OWNER": 3, "STAFF": 2, "PARTICIPANT": 1}
MAX_MUTE_MINUTES = 30 * 24 * 60
"""Thirty days: a longer mute is a ban in all but name, and a typo of a few zeros should not
silence a player for years. A mute without a duration is permanent."""

TargetKind = Literal["nickname", "user", "guest", "id"]


@dataclass(frozen=True, slots=True)
class TargetRef:
    """How the client named the target: ``value`` is a nickname, a user id, a guest session
    id, or (``"id"``) a player id, member id or user id, tried in that order."""

    kind: TargetKind
    value: str


def parse_target(raw: str) -> TargetRef:
    """Split ``"nickname:Ann"``, ``"user:cu1"``, ``"guest:cg1"`` or a bare id (no I/O)."""
    prefix, sep, rest = raw.partition(":")
    if sep and prefix in ("nickname", "user", "guest") and rest:
        return TargetRef(prefix, rest)  # type: ignore[arg-type]
    return TargetRef("id", raw)


def may_act_on(actor_role: str, target_role: str) -> bool:
    """Staff act only on players of a lower role: STAFF on participants, OWNER on staff and
    participants. Two owners (the space's owner and a platform admin) cannot remove each
    other, and staff cannot silence their peers, as moderators of any community expect."""
    return ROLE_RANK.get(actor_role, 0) > ROLE_RANK.get(target_role, 0)


@dataclass(frozen=True, slots=True)
class Mute:
    """A mute in force: ``until`` is a UTC time, ``None`` for a permanent mute."""

    until: datetime | None
    reason: str | None = None

    def lapsed(self, now: datetime) -> bool:
        return self.until is not None and self.until <= now

    def remaining_seconds(self, now: datetime) -> int | None:
        """Whole seconds left (at least 1 while in force), ``None`` when permanent."""
        if self.until is None:
            return None
        return max(1, math.ceil((self.until - now).total_seconds()))

    def iso_until(self) -> str | None:
        """``mutedUntil`` as the original sends it: ISO 8601 with milliseconds and ``Z``."""
        if self.until is None:
            return None
        return self.until.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mute_until(now: datetime, minutes: float | None) -> datetime | None:
    """The end of a mute of ``minutes`` from ``now`` (``None``: permanent)."""
    if minutes is None:
        return None
    return now + timedelta(minutes=minutes)

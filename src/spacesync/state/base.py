"""The state-store interface handlers talk to.

Handlers never touch dictionaries or Redis directly: they call a :class:`StateStore`, so the
single-node server and a cluster run the same handler code.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain.chat import ChatDecision
from ..domain.identity import Identity
from ..domain.limits import KeyedHit, Rule
from ..domain.parties import SpaceParties
from ..domain.space import PlayerState


@dataclass(frozen=True, slots=True)
class JoinResult:
    player: PlayerState
    roster: list[PlayerState]
    replaced_sid: str | None
    """The socket this join replaced (same player already in the space), if any."""
    replaced_node: str | None = None
    """The cluster node holding ``replaced_sid`` when it is not this node."""


@dataclass(frozen=True, slots=True)
class Departed:
    """A player removed from the shared state on behalf of a socket that is gone."""

    space_id: str
    player: PlayerState
    node: str | None


class StoreUnavailable(Exception):
    """Shared state cannot be reached for a moment (cluster mode, Redis down)."""


class StateStore(Protocol):
    async def join(self, space_id: str, identity: Identity, sid: str, now: float) -> JoinResult:
        """Add a player; an earlier socket of the same player is replaced and its position kept."""

    async def leave(self, space_id: str, player_id: str, sid: str) -> PlayerState | None:
        """Remove a player if ``sid`` is still its socket; returns the removed state."""

    def forget_local(self, space_id: str, player_id: str, sid: str) -> None:
        """Drop this node's copy of a player whose socket another node took over."""

    def defer_exit(self, space_id: str, player_id: str, sid: str, event: Any) -> bool:
        """Whether the store holds the EXIT of this departure back (to be logged once shared
        state can say who logs it); if not, the caller logs it now."""

    async def continue_stay(
        self, space_id: str, player_id: str, sid: str, started_at: float
    ) -> None:
        """Record that the stay of the player joined on ``sid`` began at ``started_at`` (a
        rejoin within the EXIT grace period), so that its EXIT counts the whole stay."""

    async def player(self, space_id: str, player_id: str) -> PlayerState | None: ...

    async def players(self, space_id: str) -> list[PlayerState]: ...

    async def players_named(self, space_id: str, nickname: str) -> list[PlayerState]:
        """Players whose nickname is the same name (:func:`~spacesync.domain.identity.nickname_key`:
        ignoring case, and the same for a raw name and its neutralised form)."""

    def move(
        self, space_id: str, player_id: str, x: float, y: float, direction: str, is_moving: bool
    ) -> PlayerState | None:
        """Record a position (the hot path: synchronous, no I/O)."""

    async def update_identity(self, space_id: str, identity: Identity) -> PlayerState | None: ...

    async def proximity(self, space_id: str) -> bool: ...

    async def set_proximity(self, space_id: str, enabled: bool) -> None: ...

    def parties(self, space_id: str) -> AbstractAsyncContextManager[SpaceParties]:
        """Exclusive access to a space's parties for one operation."""

    async def in_parties(self, space_id: str, player_id: str) -> bool:
        """Whether the player may be in a party of the space or invited to one (when False,
        a departure has nothing to take out of the parties)."""

    async def allow_chat(self, player_id: str, content: str, now: float) -> ChatDecision: ...

    async def hit_limit(self, rule: Rule, key: str, now: float) -> KeyedHit:
        """Check and count one event under a limit that follows a player or a target rather
        than a socket, in one step: in a cluster the player's sockets may sit on several nodes,
        and a check followed by a separate count would let them all pass together. ``now`` is
        ``time.monotonic()``."""

    async def give_back(self, hit: KeyedHit) -> None:
        """Uncount an event :meth:`hit_limit` allowed but that was not carried out (a
        malformed payload does not eat the allowance)."""

    async def space_sizes(self) -> dict[str, int]: ...

    async def player_restriction(self, space_id: str, player_id: str) -> dict[str, Any] | None:
        """The mute or ban of a player the database cannot name (a development session has
        neither a user id nor a guest session), or ``None``; a lapsed mute is ``None``.
        Shared by the cluster, so a rejoin through another node finds it."""

    async def set_player_restriction(
        self, space_id: str, player_id: str, record: dict[str, Any] | None
    ) -> None:
        """Keep (``{"restriction", "until"?, "reason"?}``, ``until`` in epoch milliseconds) or
        lift (``None``) such a restriction; a mute is forgotten when it lapses."""

    async def party_count(self) -> int: ...

    async def housekeeping(self, now: float) -> None:
        """Expire invitations and forget idle rate-limit histories."""

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...

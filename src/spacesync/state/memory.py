"""In-memory state for a single node."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from ..domain.chat import ChatDecision, ChatRateLimiter
from ..domain.identity import Identity, nickname_key
from ..domain.limits import KeyedHit, KeyedLimits, Rule
from ..domain.parties import SpaceParties
from ..domain.space import PlayerState
from .base import JoinResult


class MemoryStore:
    """Spaces, parties, proximity flags, chat limits and per-player limits held in this
    process."""

    def __init__(self) -> None:
        self._spaces: dict[str, dict[str, PlayerState]] = {}
        self._parties: dict[str, SpaceParties] = {}
        self._proximity: dict[str, bool] = {}
        self._chat = ChatRateLimiter()
        self._limits = KeyedLimits()
        self._restrictions: dict[tuple[str, str], dict[str, Any]] = {}

    async def join(self, space_id: str, identity: Identity, sid: str, now: float) -> JoinResult:
        roster = self._spaces.setdefault(space_id, {})
        previous = roster.get(identity.player_id)
        if previous is not None and previous.sid != sid:
            player = replace(previous, identity=identity, sid=sid, joined_at=now)
            replaced = previous.sid
        elif previous is not None:
            player = replace(previous, identity=identity)
            replaced = None
        else:
            player = PlayerState(identity=identity, sid=sid, joined_at=now)
            replaced = None
        roster[identity.player_id] = player
        return JoinResult(player, list(roster.values()), replaced)

    async def leave(self, space_id: str, player_id: str, sid: str) -> PlayerState | None:
        roster = self._spaces.get(space_id)
        if roster is None:
            return None
        player = roster.get(player_id)
        if player is None or player.sid != sid:
            return None
        del roster[player_id]
        if not roster:
            del self._spaces[space_id]
            self._proximity.pop(space_id, None)
            parties = self._parties.get(space_id)
            if parties is not None and not parties.parties:
                del self._parties[space_id]
        return player

    def forget_local(self, space_id: str, player_id: str, sid: str) -> None:
        """Nothing to do on a single node: a replacing join already took the entry over."""

    def defer_exit(self, space_id: str, player_id: str, sid: str, event: Any) -> bool:
        """Never: on a single node the EXIT is logged at once."""
        return False

    async def continue_stay(
        self, space_id: str, player_id: str, sid: str, started_at: float
    ) -> None:
        """The player's stay began earlier (a rejoin within the grace period)."""
        player = self._spaces.get(space_id, {}).get(player_id)
        if player is not None and player.sid == sid:
            player.joined_at = started_at

    async def player(self, space_id: str, player_id: str) -> PlayerState | None:
        roster = self._spaces.get(space_id)
        return roster.get(player_id) if roster else None

    async def players(self, space_id: str) -> list[PlayerState]:
        return list(self._spaces.get(space_id, {}).values())

    async def players_named(self, space_id: str, nickname: str) -> list[PlayerState]:
        wanted = nickname_key(nickname)
        return [
            p
            for p in self._spaces.get(space_id, {}).values()
            if nickname_key(p.identity.nickname) == wanted
        ]

    def move(
        self, space_id: str, player_id: str, x: float, y: float, direction: str, is_moving: bool
    ) -> PlayerState | None:
        roster = self._spaces.get(space_id)
        player = roster.get(player_id) if roster else None
        if player is None:
            return None
        player.x = x
        player.y = y
        player.direction = direction
        player.is_moving = is_moving
        return player

    async def update_identity(self, space_id: str, identity: Identity) -> PlayerState | None:
        player = await self.player(space_id, identity.player_id)
        if player is not None:
            player.identity = identity
        return player

    async def proximity(self, space_id: str) -> bool:
        return self._proximity.get(space_id, False)

    async def set_proximity(self, space_id: str, enabled: bool) -> None:
        self._proximity[space_id] = enabled

    async def in_parties(self, space_id: str, player_id: str) -> bool:
        return space_id in self._parties

    @asynccontextmanager
    async def parties(self, space_id: str) -> AsyncIterator[SpaceParties]:
        parties = self._parties.get(space_id)
        if parties is None:
            parties = self._parties[space_id] = SpaceParties()
        yield parties
        if not parties.parties and not parties.invitations and space_id not in self._spaces:
            self._parties.pop(space_id, None)

    async def allow_chat(self, player_id: str, content: str, now: float) -> ChatDecision:
        return self._chat.check(player_id, content, now)

    async def hit_limit(self, rule: Rule, key: str, now: float) -> KeyedHit:
        return self._limits.count(rule, key, now)

    async def give_back(self, hit: KeyedHit) -> None:
        self._limits.give_back(hit)

    async def space_sizes(self) -> dict[str, int]:
        return {space: len(roster) for space, roster in self._spaces.items()}

    async def player_restriction(self, space_id: str, player_id: str) -> dict[str, Any] | None:
        record = self._restrictions.get((space_id, player_id))
        until = record.get("until") if record else None
        if until is not None and until <= time.time() * 1000:
            del self._restrictions[(space_id, player_id)]
            return None
        return record

    async def set_player_restriction(
        self, space_id: str, player_id: str, record: dict[str, Any] | None
    ) -> None:
        if record is None:
            self._restrictions.pop((space_id, player_id), None)
        else:
            self._restrictions[(space_id, player_id)] = dict(record)

    async def party_count(self) -> int:
        return sum(len(p) for p in self._parties.values())

    async def housekeeping(self, now: float) -> None:
        for parties in self._parties.values():
            parties.prune_invitations(now)
        self._chat.forget_idle(now)
        self._limits.sweep(time.monotonic())

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None

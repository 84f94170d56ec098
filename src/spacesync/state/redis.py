"""Shared state in Redis for a cluster of nodes (SPEC §9).

Every node keeps the players connected to it in memory as well, for three reasons: the hot
path (``player:move``) must not wait for I/O, a node keeps serving its own players while Redis
is away, and when Redis comes back (or restarts empty) the node writes its live players back.

The names of the keys, what each holds and which expire: :mod:`.keys`.

Changes that must not race (joining, leaving, replacing a socket) are Lua scripts, so a player's
entry is removed exactly once in the whole cluster: that is what makes each EXIT logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..domain.chat import (
    REPEATED,
    ChatDecision,
    ChatRateLimiter,
    normalized_content,
    too_fast,
)
from ..domain.identity import Identity, nickname_candidates, nickname_key
from ..domain.limits import KeyedHit, KeyedLimits, Rule
from ..domain.parties import Party, SpaceParties
from ..domain.space import SPAWN_DIRECTION, SPAWN_X, SPAWN_Y, PlayerState
from ..integrations.app_api import MAX_EXIT_AGE, ClaimedStay, ExitEvent, token_digest
from . import keys
from .base import Departed, JoinResult, StoreUnavailable
from .keys import SEP
from .link import RedisLink

POSITION_WRITE_SECONDS = 0.05
CHAT_HISTORY_MS = 60_000
LIMIT_TTL_MARGIN_MS = 1_000
"""A window's counter outlives the window by this much, so that a give-back arriving just after
the window ended finds it (and cannot create a counter without an expiry)."""
PARTY_LOCK_SECONDS = 5.0
PARTY_LOCK_POLL = 0.01
"""Seconds between tries for a busy party lock (the holder keeps it for a round trip or two)."""
NAME_CANDIDATES = 20
"""Names a join offers the script when its own is taken: "Ann", "Ann (2)" ... "Ann (20)"."""
T = TypeVar("T")
HELD_MEMORY_MS = int(MAX_EXIT_AGE * 1000)
"""How long a held EXIT's keys live if its node never settles it (they are deleted when it
does): far longer than any grace period, so a node back from a crash still finds its claims."""

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

# ARGV[5] and ARGV[10] are the name of a node's player index around the node's id (the
# previous entry names the node that held the player). The entry (ARGV[2]) holds ARGV[8] where
# its nickname goes and ARGV[9] where its name key goes; ARGV[11..] are candidate names, each
# its JSON string then its name key: the first not held by another player of the space
# (KEYS[5], name key -> player) is claimed, in the same step as the entry, so two joins on two
# nodes at once cannot both take a name.
_JOIN = """
local player, names = ARGV[1], KEYS[5]
local chosen = #ARGV - 1
for i = 11, #ARGV - 1, 2 do
  local owner = redis.call('HGET', names, ARGV[i + 1])
  if not owner or owner == player then chosen = i; break end
end
local name, name_key = ARGV[chosen], ARGV[chosen + 1]
local entry = ARGV[2]
local at = string.find(entry, ARGV[8], 1, true)
entry = string.sub(entry, 1, at - 1) .. name .. string.sub(entry, at + #ARGV[8])
at = string.find(entry, ARGV[9], 1, true)
entry = string.sub(entry, 1, at - 1) .. cjson.encode(name_key) .. string.sub(entry, at + #ARGV[9])
local old = redis.call('HGET', KEYS[1], player)
redis.call('HSET', KEYS[1], player, entry)
if old then
  local ok, dec = pcall(cjson.decode, old)
  if ok and type(dec) == 'table' then
    if dec['node'] and dec['node'] ~= ARGV[7] then
      local index = ARGV[5] .. dec['node'] .. ARGV[10]
      redis.call('HDEL', index, ARGV[3] .. '\\31' .. player)
    end
    local was = dec['nameKey']
    if type(was) == 'string' and was ~= name_key and redis.call('HGET', names, was) == player then
      redis.call('HDEL', names, was)
    end
  end
end
redis.call('HSET', names, name_key, player)
redis.call('HSETNX', KEYS[2], player, ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3] .. '\\31' .. player, ARGV[6])
return {old or false, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        (chosen - 11) / 2}
"""

# ARGV[4] and ARGV[5]: the name of a node's player index around the node's id.
_LEAVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local ok, dec = pcall(cjson.decode, cur)
if not ok or type(dec) ~= 'table' or dec['sid'] ~= ARGV[2] then return false end
local pos = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if dec['node'] then
  redis.call('HDEL', ARGV[4] .. dec['node'] .. ARGV[5], ARGV[3] .. '\\31' .. ARGV[1])
end
local name_key = dec['nameKey']
if type(name_key) == 'string' and redis.call('HGET', KEYS[5], name_key) == ARGV[1] then
  redis.call('HDEL', KEYS[5], name_key)
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
return {cur, pos or false}
"""

# Write back a player this node serves: 1 = it was missing (added), 0 = refreshed,
# 2 = another socket holds the player now (left alone).
_RESTORE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, dec = pcall(cjson.decode, cur)
  if ok and type(dec) == 'table' and dec['sid'] ~= ARGV[5] then return 2 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3] .. '\\31' .. ARGV[1], ARGV[5])
local ok, mine = pcall(cjson.decode, ARGV[2])
if ok and type(mine) == 'table' and type(mine['nameKey']) == 'string' then
  redis.call('HSETNX', KEYS[5], mine['nameKey'], ARGV[1])
end
if cur then return 0 end
return 1
"""

# The chat limit of one player (SPEC §6), checked and counted in one step so that sockets on
# several nodes cannot all pass it at once. Times are Redis time, the same for every node.
# ARGV: normalised content, limit, window (s), identical messages allowed in a row, TTL (ms).
# Returns {1 accepted | 0 too fast | 2 repeated, now, accepted times still in the window, the
# last accepted message and how many times in a row it came}.
_ALLOW_CHAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, window, most = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local kept, last, repeats = {}, false, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, h = pcall(cjson.decode, raw)
  if ok and type(h) == 'table' then
    if type(h[1]) == 'table' then
      for _, at in ipairs(h[1]) do
        at = tonumber(at)
        if at and now - at < window then kept[#kept + 1] = at end
      end
    end
    if type(h[2]) == 'string' then last = h[2] end
    repeats = tonumber(h[3]) or 0
  end
end
local verdict = 1
if #kept >= limit then
  verdict = 0
elseif last == ARGV[1] and repeats >= most then
  verdict = 2
else
  if last == ARGV[1] then repeats = repeats + 1 else last = ARGV[1]; repeats = 1 end
  kept[#kept + 1] = now
  redis.call('SET', KEYS[1], cjson.encode({kept, last, repeats}), 'PX', ARGV[5])
end
local times = {}
for i, at in ipairs(kept) do times[i] = string.format('%.6f', at) end
return {verdict, string.format('%.6f', now), times, last or '', repeats}
"""

# One event under a per-player or per-target limit (joins, renames, invitations), checked and
# counted in one step so that a player's sockets on several nodes share one allowance. Fixed
# windows aligned on Redis time, the same for every node; the counter's name ends with the
# window, so it is built here from KEYS[1], and it expires with the window.
# ARGV: limit, window (ms), expiry margin (ms), what goes between KEYS[1] and the window.
# Returns {1 counted | 0 over the limit, count in the window, ms until it ends, window}.
_HIT_LIMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local index = math.floor(now / window)
local counter = KEYS[1] .. ARGV[4] .. string.format('%d', index)
local left = (index + 1) * window - now
local count = tonumber(redis.call('GET', counter)) or 0
if count >= limit then return {0, count, left, index} end
count = redis.call('INCR', counter)
redis.call('PEXPIRE', counter, left + tonumber(ARGV[3]))
return {1, count, left, index}
"""

# An event counted by _HIT_LIMIT that was not carried out; a counter already gone stays gone.
_GIVE_BACK = """
local count = tonumber(redis.call('GET', KEYS[1]))
if count and count > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""

_SET_POSITIONS = """
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""

# A player's new entry (profile update, longer stay); a new name's key is claimed in the
# space's name index (KEYS[2]) unless another player took it in the same instant (the update
# checked it just before; the entry is written either way, to match what everyone is told).
_SET_ENTRY = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, dec = pcall(cjson.decode, cur)
if not ok or type(dec) ~= 'table' or dec['sid'] ~= ARGV[3] then return 0 end
local was = dec['nameKey']
local fine, new = pcall(cjson.decode, ARGV[2])
local name_key = fine and type(new) == 'table' and new['nameKey'] or nil
if type(name_key) == 'string' and name_key ~= was then
  local owner = redis.call('HGET', KEYS[2], name_key)
  if not owner or owner == ARGV[1] then redis.call('HSET', KEYS[2], name_key, ARGV[1]) end
  if type(was) == 'string' and redis.call('HGET', KEYS[2], was) == ARGV[1] then
    redis.call('HDEL', KEYS[2], was)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# Proximity with the Redis time of its change: a node writing back its copy after Redis lost
# its data replaces only an older (or missing) value, so a stale copy never wins.
_SET_PROXIMITY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], now)
return now
"""

_RESTORE_PROXIMITY = """
local at = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if redis.call('EXISTS', KEYS[1]) == 0 or tonumber(ARGV[2]) > at then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


_HOLD = """
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'startedAt', ARGV[2], 'stay', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
return 1
"""

# ARGV[1]: the name of a held EXIT without its key (the stay's key holds that).
_CLAIM = """
local k = redis.call('GET', KEYS[1])
if not k then return false end
redis.call('DEL', KEYS[1])
local h = ARGV[1] .. k
if redis.call('EXISTS', h) == 0 or redis.call('HEXISTS', h, 'claimedBy') == 1 then
  return false
end
redis.call('HSET', h, 'claimedBy', ARGV[2])
return {k, redis.call('HGET', h, 'node'), redis.call('HGET', h, 'startedAt')}
"""

# The node holding an EXIT, at the end of its grace period: 'free' (send it), 'claimed' (a
# rejoin took it: drop it) or 'absent' (expired, or Redis lost its data).
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'absent' end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
local stay = redis.call('HGET', KEYS[1], 'stay')
redis.call('DEL', KEYS[1])
if claimed then return 'claimed' end
if stay and redis.call('GET', stay) == ARGV[1] then redis.call('DEL', stay) end
return 'free'
"""


@dataclass(slots=True)
class Restored:
    """What writing a node's players back found."""

    added: list[tuple[str, PlayerState]] = field(default_factory=list)
    """Players the others did not know of (they never saw them join, or lost them)."""
    departed: list[Departed] = field(default_factory=list)
    """Players who left while Redis was unreachable; the others were not told."""
    exits: list[Any] = field(default_factory=list)
    """Held EXITs that are this node's to log."""
    lost_parties: list[tuple[str, str, str]] = field(default_factory=list)
    """``(space, player, party)``: memberships of this node's players that could not be
    written back (the party is full now, or the player is in another one of its kind)."""


class Companion(Protocol):
    """State another module keeps in Redis beside the players (a space's recording and
    spotlights), with a local copy of what this node's players hold, written back with them."""

    async def write_back(
        self, holds: Callable[[str, str], bool], left: Callable[[str, str], bool]
    ) -> None:
        """Write the copy back after Redis was away or lost its data: ``holds(space, player)``
        says whether the player is still connected to this node; ``left(space, player)``
        whether they left while Redis was away (what they held ends, and everyone is told:
        nobody was)."""

    async def refresh(self, holds: Callable[[str, str], bool]) -> None:
        """Bring the copy in line with Redis (a heartbeat with Redis as it was)."""


class SpaceWatcher(Protocol):
    """Told when this node starts and stops serving a space (to follow its channel)."""

    async def watch(self, space_id: str) -> None: ...

    async def unwatch(self, space_id: str) -> None: ...


def _position_json(player: PlayerState) -> bytes:
    return orjson.dumps([player.x, player.y, player.direction, player.is_moving])


def _apply_position(player: PlayerState, raw: Any) -> None:
    try:
        x, y, direction, moving = orjson.loads(raw)
    except (ValueError, TypeError):
        return
    player.x, player.y, player.direction, player.is_moving = x, y, direction, bool(moving)


_DECODED: dict[bytes, tuple[Identity, str, float, str | None]] = {}
_DECODED_LIMIT = 50_000


def decode_player(entry: Any, position: Any) -> tuple[PlayerState, str | None] | None:
    """A stored entry (and position) as ``(player, node)``; ``None`` if it is unreadable.

    Entries change only when a player joins or edits their profile, while every join reads the
    whole roster of its space: decoded entries are remembered by their bytes, so a join storm
    into a big space does not decode the same thousand entries a thousand times."""
    known = _DECODED.get(entry)
    if known is None:
        try:
            data = orjson.loads(entry)
            node = data.get("node")
            known = (
                Identity.from_dict(data["identity"]),
                str(data["sid"]),
                float(data["joinedAt"]),
                node if isinstance(node, str) else None,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if len(_DECODED) >= _DECODED_LIMIT:
            _DECODED.clear()
        _DECODED[entry] = known
    identity, sid, joined_at, node = known
    player = PlayerState(identity=identity, sid=sid, joined_at=joined_at)
    if position:
        _apply_position(player, position)
    return player, node


async def _direct(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis call as it is (errors propagate): for writing state back, which happens
    before the store is marked healthy again."""
    return await call()


def _roster(entries: list[Any], positions: list[Any]) -> list[PlayerState]:
    where = {positions[i]: positions[i + 1] for i in range(0, len(positions), 2)}
    players = []
    for i in range(0, len(entries), 2):
        decoded = decode_player(entries[i + 1], where.get(entries[i]))
        if decoded is not None:
            players.append(decoded[0])
    return players


class RedisStore:
    """The :class:`~spacesync.state.base.StateStore` of a cluster node."""

    def __init__(
        self,
        client: aioredis.Redis,
        node: str,
        *,
        link: RedisLink | None = None,
        watcher: SpaceWatcher | None = None,
    ) -> None:
        self.redis = client
        self.node = node
        self.link = link if link is not None else RedisLink()
        """Whether Redis may be used now, shared with the bus and the node monitor."""
        self.watcher = watcher
        """Told when this node starts and stops serving a space (the bus, in a cluster)."""
        self._local: dict[str, dict[str, PlayerState]] = {}
        self._left_offline: dict[tuple[str, str], PlayerState] = {}
        self._deferred_exits: dict[tuple[str, str, str], Any] = {}
        self._joined_offline: set[tuple[str, str]] = set()
        self._proximity: dict[str, bool] = {}
        self._proximity_at: dict[str, int] = {}
        self._party_copy: dict[str, SpaceParties] = {}
        self.companions: list[Companion] = []
        """Other state written back with this node's players (see :class:`Companion`)."""
        self._chat = ChatRateLimiter()
        self._chat_counted: dict[str, tuple[list[float], float]] = {}
        """Player -> (accepted message times in Redis time, the matching monotonic offset):
        a player already at the limit is refused without asking Redis."""
        self._limits = KeyedLimits()
        """This node's own count of per-player and per-target limits, used while Redis is
        away (raised to the cluster's count whenever Redis answers)."""
        self._limits_full: dict[tuple[str, str], float] = {}
        """(rule, key) -> monotonic time its window ends, for keys Redis found at the limit:
        refused without asking Redis until then."""
        self._dirty: dict[str, set[str]] = {}
        self._write_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._restore = client.register_script(_RESTORE)
        self._set_positions = client.register_script(_SET_POSITIONS)
        self._allow_chat = client.register_script(_ALLOW_CHAT)
        self._hit_limit = client.register_script(_HIT_LIMIT)
        self._give_back = client.register_script(_GIVE_BACK)
        self._set_entry = client.register_script(_SET_ENTRY)
        self._hold = client.register_script(_HOLD)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._set_proximity = client.register_script(_SET_PROXIMITY)
        self._restore_proximity = client.register_script(_RESTORE_PROXIMITY)

    # -- health --------------------------------------------------------------------------------

    async def _shared(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation; raises :class:`StoreUnavailable` while Redis is away, and
        while this node may have been declared dead (see :meth:`in_doubt`)."""
        if not self.healthy or self.in_doubt():
            raise StoreUnavailable("shared state is unavailable")
        try:
            return await call()
        except REDIS_ERRORS as exc:
            self.mark_down(exc)
            raise StoreUnavailable("shared state is unavailable") from exc

    @property
    def healthy(self) -> bool:
        return self.link.healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.link.healthy = value

    def in_doubt(self) -> bool:
        """See :meth:`RedisLink.in_doubt`."""
        return self.link.in_doubt()

    def pending_offline(self) -> bool:
        """Whether players came or went while shared state was not used (to write back)."""
        return bool(self._left_offline or self._joined_offline)

    def mark_down(self, exc: BaseException) -> None:
        self.link.mark_down(exc)

    # -- entries -------------------------------------------------------------------------------

    def _entry(self, player: PlayerState, *, marker: str | None = None) -> bytes:
        """The stored entry; with ``marker``, that stands in for the nickname and ``marker``
        + "k" for its name key (for the join script, which picks the name)."""
        identity = player.identity.to_dict()
        name_key = nickname_key(player.identity.nickname)
        if marker is not None:
            identity["nickname"], name_key = marker, marker + "k"
        return orjson.dumps(
            {
                "identity": identity,
                "sid": player.sid,
                "node": self.node,
                "joinedAt": player.joined_at,
                "nameKey": name_key,
            }
        )

    def _keys(self, space_id: str) -> list[str]:
        return [
            keys.space_players(space_id),
            keys.space_positions(space_id),
            keys.spaces(),
        ]

    def _names_key(self, space_id: str) -> str:
        """The space's name index: :func:`nickname_key` of each player's name -> player id."""
        return keys.space_names(space_id)

    # -- joining and leaving -------------------------------------------------------------------

    async def join(self, space_id: str, identity: Identity, sid: str, now: float) -> JoinResult:
        local = self._local.get(space_id)
        if local is None:
            local = self._local[space_id] = {}
            if self.watcher is not None:
                await self.watcher.watch(space_id)
        previous = local.get(identity.player_id)
        player = PlayerState(identity=identity, sid=sid, joined_at=now)
        if previous is not None:
            player.x, player.y = previous.x, previous.y
            player.direction, player.is_moving = previous.direction, previous.is_moving
            if previous.sid == sid:
                player.joined_at = previous.joined_at
        spawn = orjson.dumps([SPAWN_X, SPAWN_Y, SPAWN_DIRECTION, False])
        marker = "\x00" + secrets.token_hex(8)
        names = nickname_candidates(identity.nickname, NAME_CANDIDATES)
        candidates: list[Any] = []
        for name in names:
            candidates += [orjson.dumps(name), nickname_key(name)]
        try:
            old, entries, positions, picked = await self._shared(
                lambda: self._join(
                    keys=[
                        *self._keys(space_id),
                        keys.node_players(self.node),
                        self._names_key(space_id),
                    ],
                    args=[
                        identity.player_id,
                        self._entry(player, marker=marker),
                        space_id,
                        spawn,
                        keys.NODE_PLAYERS_AROUND[0],
                        sid,
                        self.node,
                        orjson.dumps(marker),
                        orjson.dumps(marker + "k"),
                        keys.NODE_PLAYERS_AROUND[1],
                        *candidates,
                    ],
                )
            )
        except StoreUnavailable:
            local[identity.player_id] = player
            self._joined_offline.add((space_id, identity.player_id))
            replaced = previous.sid if previous is not None and previous.sid != sid else None
            return JoinResult(player, list(local.values()), replaced)
        if int(picked):
            # The name was taken: the script gave the first free "name (n)".
            identity = replace(identity, nickname=names[int(picked)])
            player.identity = identity
        roster = _roster(entries, positions)
        for other in roster:
            if other.id == identity.player_id:
                player.x, player.y = other.x, other.y
                player.direction, player.is_moving = other.direction, other.is_moving
        local[identity.player_id] = player
        roster = [player if p.id == player.id else p for p in roster]
        replaced_sid = replaced_node = None
        if old:
            decoded = decode_player(old, None)
            if decoded is not None and decoded[0].sid != sid:
                replaced_sid = decoded[0].sid
                replaced_node = decoded[1] if decoded[1] != self.node else None
                if previous is None or previous.sid == sid:
                    player.joined_at = now
            elif decoded is not None:
                player.joined_at = decoded[0].joined_at
        return JoinResult(player, roster, replaced_sid, replaced_node)

    async def leave(self, space_id: str, player_id: str, sid: str) -> PlayerState | None:
        local = self._local.get(space_id)
        mine = local.get(player_id) if local else None
        if mine is not None and mine.sid == sid:
            assert local is not None
            del local[player_id]
            self._dirty.get(space_id, set()).discard(player_id)
            if not local:
                del self._local[space_id]
                if self.healthy:  # else kept to write the space's state back later
                    self._forget_space(space_id)
                if self.watcher is not None:
                    await self.watcher.unwatch(space_id)
        try:
            removed = await self._remove(space_id, player_id, sid)
        except StoreUnavailable:
            if mine is None or mine.sid != sid:
                return None
            self._joined_offline.discard((space_id, player_id))
            self._left_offline[(space_id, player_id)] = mine
            return mine
        if removed is None:
            return None
        if mine is not None and mine.sid == sid:
            return mine  # this node's copy has the newest position
        return removed.player

    async def _remove(self, space_id: str, player_id: str, sid: str) -> Departed | None:
        result = await self._shared(
            lambda: self._leave(
                keys=[
                    *self._keys(space_id),
                    keys.space_proximity(space_id),
                    self._names_key(space_id),
                ],
                args=[player_id, sid, space_id, *keys.NODE_PLAYERS_AROUND],
            )
        )
        if not result:
            return None
        decoded = decode_player(result[0], result[1])
        if decoded is None:
            return None
        return Departed(space_id, decoded[0], decoded[1])

    async def remove_for(self, space_id: str, player_id: str, sid: str) -> Departed | None:
        """Remove a player whose socket is gone (its node died); ``None`` if another node did."""
        return await self._remove(space_id, player_id, sid)

    def forget_local(self, space_id: str, player_id: str, sid: str) -> None:
        """Drop this node's copy of a player whose socket was replaced on another node."""
        local = self._local.get(space_id)
        if local is not None and (p := local.get(player_id)) is not None and p.sid == sid:
            del local[player_id]
            if not local:
                del self._local[space_id]
                self._forget_space(space_id)
                if self.watcher is not None:
                    self._spawn(self.watcher.unwatch(space_id))

    def _forget_space(self, space_id: str) -> None:
        """Drop the copies kept of a space this node no longer serves."""
        self._proximity.pop(space_id, None)
        self._proximity_at.pop(space_id, None)
        self._party_copy.pop(space_id, None)

    async def continue_stay(
        self, space_id: str, player_id: str, sid: str, started_at: float
    ) -> None:
        """The player's stay began earlier (a rejoin within the grace period): record that, so
        that whichever node ends the stay (this one, or one that reaps it) counts all of it."""
        local = self._local.get(space_id)
        player = local.get(player_id) if local else None
        if player is None or player.sid != sid:
            return
        player.joined_at = started_at
        with contextlib.suppress(StoreUnavailable):
            await self._shared(
                lambda: self._set_entry(
                    keys=[*self._keys(space_id)[:1], self._names_key(space_id)],
                    args=[player_id, self._entry(player), sid],
                )
            )

    # -- the EXIT grace period -----------------------------------------------------------------

    async def hold_exit(self, event: ExitEvent) -> None:
        """Publish an EXIT this node holds, so that a rejoin through any node can claim it.

        Design: the node that removed the player from Redis owns the EXIT (that is what makes
        it logged once); it keeps it in its durable outbox and writes ``held:<exitKey>`` (its
        node and the stay's start) and ``stay:<space>:<player>:<tokenDigest>`` pointing at it.
        A rejoin of the same session on any node claims it (:meth:`claim_stay`): one script
        marks it ``claimedBy`` and returns the stay's start, which the rejoin goes on from.
        When the grace period is over the owner settles it (:meth:`settle_exit`): one script
        deletes it and says whether it was claimed. Both are atomic in Redis, so exactly one
        of "rejoin continues the stay" and "EXIT sent" happens. The owner settles by the EXIT's
        key, not by node name, so a node restarted after a crash settles what its outbox held.
        Only a digest of the session token is stored.
        """
        held = keys.held_exit(event.key)
        stay = keys.stay(*event.stay)
        await self._shared(
            lambda: self._hold(
                keys=[held, stay],
                args=[self.node, repr(event.stay_start), HELD_MEMORY_MS, event.key],
            )
        )

    async def claim_stay(self, space_id: str, player_id: str, digest: str) -> ClaimedStay | None:
        """Take over the held EXIT of this stay, if nobody settled or claimed it yet."""
        found = await self._shared(
            lambda: self._claim(
                keys=[keys.stay(space_id, player_id, digest)], args=[keys.HELD_EXIT_HEAD, self.node]
            )
        )
        if not found:
            return None
        exit_key, node, started = (v.decode() if isinstance(v, bytes) else v for v in found)
        try:
            return ClaimedStay(str(exit_key), str(node or ""), float(started))
        except (TypeError, ValueError):
            return None

    async def settle_exit(self, event: ExitEvent) -> bool:
        """True if the EXIT is to be sent now, False if a rejoin claimed its stay.

        If the keys are gone (they outlived a day, or Redis restarted empty) the player's
        presence decides: a player back in the space with the same session has a stay that
        goes on, whose own EXIT will be sent, so this one is dropped.
        """
        outcome = await self._shared(
            lambda: self._settle(keys=[keys.held_exit(event.key)], args=[event.key])
        )
        if outcome in (b"free", "free"):
            return True
        if outcome in (b"claimed", "claimed"):
            return False
        player = await self.player(event.space_id, event.player_id or "")
        token = player.identity.session_token if player is not None else None
        return token is None or token_digest(token) != token_digest(event.session_token)

    # -- reading -------------------------------------------------------------------------------

    async def player(self, space_id: str, player_id: str) -> PlayerState | None:
        keys = self._keys(space_id)

        async def read() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(keys[0], player_id)
                pipe.hget(keys[1], player_id)
                return await pipe.execute()

        try:
            entry, position = await self._shared(read)
        except StoreUnavailable:
            local = self._local.get(space_id)
            return local.get(player_id) if local else None
        if entry is None:
            return None
        mine = self._local.get(space_id, {}).get(player_id)
        decoded = decode_player(entry, position)
        if decoded is None:
            return None
        if mine is not None and mine.sid == decoded[0].sid:
            return mine
        return decoded[0]

    async def players(self, space_id: str) -> list[PlayerState]:
        keys = self._keys(space_id)

        async def read() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys[0])
                pipe.hgetall(keys[1])
                return await pipe.execute()

        try:
            entries, positions = await self._shared(read)
        except StoreUnavailable:
            return list(self._local.get(space_id, {}).values())
        flat_entries = [v for item in entries.items() for v in item]
        flat_positions = [v for item in positions.items() for v in item]
        local = self._local.get(space_id, {})
        return [
            local[p.id] if p.id in local and local[p.id].sid == p.sid else p
            for p in _roster(flat_entries, flat_positions)
        ]

    async def players_named(self, space_id: str, nickname: str) -> list[PlayerState]:
        """Through the space's name index (one field, then one entry): never the whole
        roster, which whispers by name would otherwise read from Redis every time."""
        wanted = nickname_key(nickname)
        try:
            owner = await self._shared(lambda: self.redis.hget(self._names_key(space_id), wanted))
        except StoreUnavailable:
            local = self._local.get(space_id, {})
            return [p for p in local.values() if nickname_key(p.identity.nickname) == wanted]
        if owner is None:
            return []
        player = await self.player(space_id, owner.decode())
        if player is None or nickname_key(player.identity.nickname) != wanted:
            return []
        return [player]

    # -- positions (the hot path) --------------------------------------------------------------

    def move(
        self, space_id: str, player_id: str, x: float, y: float, direction: str, is_moving: bool
    ) -> PlayerState | None:
        local = self._local.get(space_id)
        player = local.get(player_id) if local else None
        if player is None:
            return None
        player.x = x
        player.y = y
        player.direction = direction
        player.is_moving = is_moving
        dirty = self._dirty.get(space_id)
        if dirty is None:
            dirty = self._dirty[space_id] = set()
        dirty.add(player_id)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_later(POSITION_WRITE_SECONDS, self._start_write)
        return player

    def _start_write(self) -> None:
        self._write_scheduled = False
        dirty, self._dirty = self._dirty, {}
        if self.healthy and dirty:
            self._spawn(self._write_positions(dirty))

    async def _write_positions(self, dirty: dict[str, set[str]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for space_id, ids in dirty.items():
                    local = self._local.get(space_id, {})
                    args: list[Any] = []
                    for pid in ids:
                        player = local.get(pid)
                        if player is not None:
                            args += [pid, _position_json(player)]
                    if args:
                        keys = self._keys(space_id)[:2]
                        await self._set_positions(keys=keys, args=args, client=pipe)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self.mark_down(exc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the rest of the state -----------------------------------------------------------------

    async def update_identity(self, space_id: str, identity: Identity) -> PlayerState | None:
        local = self._local.get(space_id)
        player = local.get(identity.player_id) if local else None
        if player is None:
            return None
        player.identity = identity
        with contextlib.suppress(StoreUnavailable):
            await self._shared(
                lambda: self._set_entry(
                    keys=[*self._keys(space_id)[:1], self._names_key(space_id)],
                    args=[identity.player_id, self._entry(player), player.sid],
                )
            )
        return player

    def _proximity_keys(self, space_id: str) -> list[str]:
        return [keys.space_proximity(space_id), keys.space_proximity_at(space_id)]

    async def proximity(self, space_id: str) -> bool:
        names = self._proximity_keys(space_id)
        try:
            value, at = await self._shared(lambda: self.redis.mget(names))
        except StoreUnavailable:
            return self._proximity.get(space_id, False)
        if value is None and space_id in self._proximity:
            # Redis lost it (restarted empty) before this node wrote its copy back.
            enabled = self._proximity[space_id]
            with contextlib.suppress(StoreUnavailable):
                await self._shared(lambda: self._write_back_proximity(space_id))
            return enabled
        enabled = value == b"1"
        if space_id in self._local:
            self._proximity[space_id] = enabled
            with contextlib.suppress(ValueError, TypeError):
                self._proximity_at[space_id] = int(at or 0)
        return enabled

    async def set_proximity(self, space_id: str, enabled: bool) -> None:
        at = await self._shared(
            lambda: self._set_proximity(
                keys=self._proximity_keys(space_id), args=["1" if enabled else "0"]
            )
        )
        self._proximity[space_id] = enabled
        self._proximity_at[space_id] = int(at)

    async def _write_back_proximity(self, space_id: str) -> None:
        enabled = self._proximity[space_id]
        at = self._proximity_at.get(space_id, 0)
        await self._restore_proximity(
            keys=self._proximity_keys(space_id), args=["1" if enabled else "0", at]
        )

    @asynccontextmanager
    async def parties(self, space_id: str) -> AsyncIterator[SpaceParties]:
        async with self._locked_parties(space_id, self._shared) as parties:
            yield parties

    @asynccontextmanager
    async def _locked_parties(
        self, space_id: str, run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
    ) -> AsyncIterator[SpaceParties]:
        """The space's parties under its lock, saved on exit; ``run`` runs each Redis call
        (:meth:`_shared`, or :func:`_direct` while writing this node's state back)."""
        name = keys.space_parties(space_id)
        lock = self.redis.lock(
            keys.space_parties_lock(space_id),
            timeout=PARTY_LOCK_SECONDS,
            sleep=PARTY_LOCK_POLL,
            blocking_timeout=PARTY_LOCK_SECONDS,
        )
        acquired = await run(lock.acquire)
        if not acquired:
            raise StoreUnavailable("parties are busy")
        try:
            raw = await run(lambda: self.redis.get(name))
            parties = SpaceParties.from_dict(orjson.loads(raw)) if raw else SpaceParties()
            self._rebuild_parties(space_id, parties)
            yield parties
            data = parties.to_dict()
            count = len(parties.parties)

            async def save() -> None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    if data["parties"] or data["invitations"]:
                        pipe.set(name, orjson.dumps(data))
                    else:
                        pipe.delete(name)
                    if count:
                        pipe.hset(keys.party_counts(), space_id, count)
                    else:
                        pipe.hdel(keys.party_counts(), space_id)
                    await pipe.execute()

            await run(save)
            if space_id in self._local or space_id in self._party_copy:
                self._party_copy[space_id] = parties
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await lock.release()

    async def in_parties(self, space_id: str, player_id: str) -> bool:
        """Whether the player may be in a party of the space or invited to one; a departure
        takes the party lock only then. Read without the lock: nobody but the player (through
        this node, or the node that removes it) makes it a member."""
        copy = self._party_copy.get(space_id)
        if copy is not None and copy.memberships(player_id):
            return True
        raw = await self._shared(lambda: self.redis.get(keys.space_parties(space_id)))
        if not raw or orjson.dumps(player_id) not in raw:
            return False
        parties = SpaceParties.from_dict(orjson.loads(raw))
        return bool(parties.memberships(player_id)) or any(
            target == player_id for _, target in parties.invitations
        )

    def _rebuild_parties(self, space_id: str, parties: SpaceParties) -> list[tuple[str, str]]:
        """Put back into ``parties`` (read from Redis) the memberships this node's players have
        in its copy but Redis lost (it restarted empty); returns ``(player, party)`` of those
        that cannot be put back.

        Only a player's own actions, which go through its node, or its departure make it a
        member or not, so a membership missing from Redis but in the copy was lost, not left.
        Players who left while Redis was unreachable are put back too: their departure, handled
        once Redis answers, then removes them and tells the other members.
        """
        copy = self._party_copy.get(space_id)
        if copy is None:
            return []
        keep = set(self._local.get(space_id, ()))
        keep.update(p for s, p in self._left_offline if s == space_id)
        lost: list[tuple[str, str]] = []
        for known in copy.parties.values():
            mine = [m for m in known.members.values() if m.id in keep]
            if not mine:
                continue
            party = parties.parties.get(known.id)
            if party is not None and party.kind != known.kind:
                lost += [(m.id, known.id) for m in mine]
                continue
            if party is None:
                party = Party(known.id, known.name, known.kind, known.leader_id)
            index = parties.zone_of if known.kind == "zone" else parties.invite_party_of
            order = list(known.members)
            for member in mine:
                if member.id in party.members:
                    continue
                elsewhere = index.get(member.id)
                if (elsewhere is not None and elsewhere != known.id) or party.full:
                    lost.append((member.id, known.id))
                    continue
                # Back in its place by seniority: before the first member it joined before.
                later = set(order[order.index(member.id) + 1 :])
                items = list(party.members.items())
                at = next((i for i, (pid, _) in enumerate(items) if pid in later), len(items))
                items.insert(at, (member.id, member))
                party.members = dict(items)
                index[member.id] = known.id
            if party.members:
                parties.parties[known.id] = party
        return lost

    async def _restore_parties(self, space_id: str, now: float) -> list[tuple[str, str]]:
        """Write this node's copy of the space's parties back (memberships of its players,
        the parties they are in, and invitations from or to them that are still open)."""
        copy = self._party_copy.get(space_id)
        if copy is None:
            return []
        name = keys.space_parties(space_id)
        raw = await self.redis.get(name)
        if raw and not self._parties_lost(copy, SpaceParties.from_dict(orjson.loads(raw))):
            return []
        lost: list[tuple[str, str]] = []
        async with self._locked_parties(space_id, _direct) as parties:
            lost = self._rebuild_parties(space_id, parties)
            mine = set(self._local.get(space_id, ()))
            for (party_id, target), invitation in copy.invitations.items():
                if (
                    invitation.expires_at > now
                    and (target in mine or invitation.inviter_id in mine)
                    and party_id in parties.parties
                    and target not in parties.parties[party_id].members
                ):
                    parties.invitations.setdefault((party_id, target), invitation)
        return lost

    def _parties_lost(self, copy: SpaceParties, parties: SpaceParties) -> bool:
        """Whether Redis misses a membership of one of this node's players (or the space)."""
        keep = {p for players in self._local.values() for p in players}
        keep.update(p for _, p in self._left_offline)
        for party in copy.parties.values():
            current = parties.parties.get(party.id)
            for member_id in party.members:
                if member_id in keep and (current is None or member_id not in current.members):
                    return True
        return False

    async def allow_chat(self, player_id: str, content: str, now: float) -> ChatDecision:
        """The chat limit per player across the cluster, checked and counted by one script
        (a read then a write would let sockets on several nodes pass it together). While
        Redis is away each node applies it alone to its own players."""
        limiter = self._chat
        window = limiter.window
        counted = self._chat_counted.get(player_id)
        if counted is not None:
            # Messages Redis accepted are accepted for good: at the limit, no need to ask.
            times, offset = counted
            redis_now = time.monotonic() + offset
            recent = [at for at in times if redis_now - at < window]
            if len(recent) >= limiter.limit:
                return too_fast(recent[0] + window - redis_now)
        normalized = normalized_content(content)
        try:
            verdict, at, accepted, last, repeats = await self._shared(
                lambda: self._allow_chat(
                    keys=[keys.chat_history(player_id)],
                    args=[
                        normalized,
                        limiter.limit,
                        repr(window),
                        limiter.max_identical,
                        CHAT_HISTORY_MS,
                    ],
                )
            )
        except StoreUnavailable:
            return limiter.check(player_id, content, now)
        redis_now = float(at)
        times = [float(t) for t in accepted]
        self._chat_counted[player_id] = (times, redis_now - time.monotonic())
        # The node's own copy, should Redis go away.
        last_content = last.decode() if isinstance(last, bytes) else str(last)
        limiter.restore(
            player_id, [[now - (redis_now - t) for t in times], last_content or None, repeats]
        )
        verdict = int(verdict)
        if verdict == 1:
            return ChatDecision(True)
        if verdict == 2:
            return REPEATED
        return too_fast(times[0] + window - redis_now if times else window)

    async def hit_limit(self, rule: Rule, subject: str, now: float) -> KeyedHit:
        """A limit per player or per target across the cluster, checked and counted by one
        script. A key this node already saw at the limit is refused without asking Redis until
        its window ends; while Redis is away each node counts alone, as before."""
        slot = (rule.name, subject)
        full_until = self._limits_full.get(slot)
        if full_until is not None:
            left = full_until - time.monotonic()
            if left > 0:
                return KeyedHit(rule, subject, False, rule.limit, max(1, math.ceil(left)), -1)
            del self._limits_full[slot]
        try:
            allowed, count, left_ms, window = await self._shared(
                lambda: self._hit_limit(
                    keys=[keys.limit(rule.name, subject)],
                    args=[
                        rule.limit,
                        round(rule.window * 1000),
                        LIMIT_TTL_MARGIN_MS,
                        keys.LIMIT_WINDOW_SEP,
                    ],
                )
            )
        except StoreUnavailable:
            return self._limits.count(rule, subject, now)
        count, left = int(count), int(left_ms) / 1000
        if count >= rule.limit:
            self._limits_full[slot] = time.monotonic() + left
        self._limits.note(rule, subject, count, now)
        retry = max(1, math.ceil(left))
        return KeyedHit(rule, subject, int(allowed) == 1, count, retry, int(window), shared=True)

    async def give_back(self, hit: KeyedHit) -> None:
        if not hit.allowed:
            return
        if not hit.shared:
            self._limits.give_back(hit)
            return
        self._limits_full.pop((hit.rule.name, hit.key), None)
        counter = keys.limit_window(hit.rule.name, hit.key, hit.window)
        with contextlib.suppress(StoreUnavailable):
            await self._shared(lambda: self._give_back(keys=[counter]))

    async def space_sizes(self) -> dict[str, int]:
        async def read() -> dict[str, int]:
            spaces = sorted(s.decode() for s in await self.redis.smembers(keys.spaces()))
            async with self.redis.pipeline(transaction=False) as pipe:
                for space_id in spaces:
                    pipe.hlen(keys.space_players(space_id))
                sizes = await pipe.execute()
            return {s: n for s, n in zip(spaces, sizes, strict=True) if n}

        try:
            return await self._shared(read)
        except StoreUnavailable:
            return self.local_sizes()

    async def player_restriction(self, space_id: str, player_id: str) -> dict[str, Any] | None:
        name = keys.restriction(space_id, player_id)
        raw = await self._shared(lambda: self.redis.get(name))
        return orjson.loads(raw) if raw else None

    async def set_player_restriction(
        self, space_id: str, player_id: str, record: dict[str, Any] | None
    ) -> None:
        """A timed mute is kept with the remaining time as its expiry: Redis forgets it when it
        lapses, and nothing has to sweep it."""
        name = keys.restriction(space_id, player_id)
        if record is None:
            await self._shared(lambda: self.redis.delete(name))
            return
        until = record.get("until")
        ttl_ms = None if until is None else int(until - time.time() * 1000)
        if ttl_ms is not None and ttl_ms <= 0:
            await self._shared(lambda: self.redis.delete(name))
            return
        await self._shared(lambda: self.redis.set(name, orjson.dumps(record), px=ttl_ms))

    def local_sizes(self) -> dict[str, int]:
        return {space: len(players) for space, players in self._local.items() if players}

    async def party_count(self) -> int:
        try:
            counts = await self._shared(lambda: self.redis.hvals(keys.party_counts()))
        except StoreUnavailable:
            return 0
        return sum(int(c) for c in counts)

    async def housekeeping(self, now: float) -> None:
        self._chat.forget_idle(now)
        horizon = time.monotonic() - self._chat.window
        for player_id, (times, offset) in list(self._chat_counted.items()):
            if not times or times[-1] - offset < horizon:
                del self._chat_counted[player_id]
        clock = time.monotonic()
        self._limits.sweep(clock)
        for slot in [slot for slot, until in self._limits_full.items() if until <= clock]:
            del self._limits_full[slot]
        if not self.healthy:
            return
        for space_id in list(self._local):
            with contextlib.suppress(StoreUnavailable):
                async with self.parties(space_id) as parties:
                    parties.prune_invitations(now)

    async def ready(self) -> bool:
        return self.healthy

    # -- writing this node's players back ------------------------------------------------------

    def local_players(self) -> list[tuple[str, PlayerState]]:
        return [(s, p) for s, players in self._local.items() for p in players.values()]

    def serves(self, space_id: str, player_id: str) -> bool:
        """Whether the player is connected to this node in that space."""
        return player_id in self._local.get(space_id, ())

    async def refresh_companions(self) -> None:
        """Let the companions check their copies against Redis (raises Redis errors)."""
        for companion in self.companions:
            await companion.refresh(self.serves)

    def defer_exit(self, space_id: str, player_id: str, sid: str, event: Any) -> bool:
        """Hold the EXIT of a player who left while Redis was unreachable.

        The EXIT of a stay is logged by whoever removes the player's entry from Redis, so that
        it is logged once in the cluster: if this node was cut off long enough for the others
        to declare it dead, they have logged it already. Held EXITs are settled by
        :meth:`restore` once Redis answers again.
        """
        held = self._left_offline.get((space_id, player_id))
        if held is None or held.sid != sid:
            return False
        self._deferred_exits[(space_id, player_id, sid)] = event
        return True

    async def reaped_here(self) -> set[tuple[str, str, str]]:
        """``(space, player, socket)`` of this node's players the others removed as dead."""
        members = await self.redis.smembers(keys.reaped(self.node))
        return {tuple(m.decode().split(SEP, 2)) for m in members}  # type: ignore[misc]

    async def restore(self, reaped: set[tuple[str, str, str]]) -> Restored:
        """Write this node's live players back into Redis (after an outage, a restart of Redis,
        or after the others took this node for dead) and settle those that left meanwhile.

        ``reaped`` are the players the others removed (and logged the EXIT of) while this node
        was out of reach: they are not written back, and their held EXITs are dropped.
        """
        restored = Restored()
        done: set[tuple[str, str]] = set()
        while True:
            pending = [
                (space_id, player)
                for space_id, player in self.local_players()
                if (space_id, player.id) not in done
                and (space_id, player.id, player.sid) not in reaped
            ]
            if not pending:
                break
            for space_id, player in pending:
                done.add((space_id, player.id))
                outcome = await self._restore(
                    keys=[
                        *self._keys(space_id),
                        keys.node_players(self.node),
                        self._names_key(space_id),
                    ],
                    args=[
                        player.id,
                        self._entry(player),
                        space_id,
                        _position_json(player),
                        player.sid,
                    ],
                )
                if outcome == 1:
                    restored.added.append((space_id, player))
        # Parties before the departures below: a player who left meanwhile is put back in its
        # parties first, so that its departure tells the other members.
        now = time.time()
        for space_id in list(self._party_copy):
            try:
                lost = await self._restore_parties(space_id, now)
            except StoreUnavailable as exc:  # the lock stayed busy
                raise ConnectionError("parties could not be written back") from exc
            restored.lost_parties += [(space_id, p, party) for p, party in lost]
        for space_id in list(self._proximity):
            await self._write_back_proximity(space_id)
        # Before the departures below: they are still listed, and the others were not told.
        leaving = {k for k, p in self._left_offline.items() if (*k, p.sid) not in reaped}

        def left(space_id: str, player_id: str) -> bool:
            return (space_id, player_id) in leaving

        for companion in self.companions:
            await companion.write_back(self.serves, left)
        while self._left_offline:
            (space_id, player_id), player = self._left_offline.popitem()
            event = self._deferred_exits.pop((space_id, player_id, player.sid), None)
            if (space_id, player_id, player.sid) in reaped:
                continue  # the others removed the player, told everyone and logged the EXIT
            await self._leave(
                keys=[
                    *self._keys(space_id),
                    keys.space_proximity(space_id),
                    self._names_key(space_id),
                ],
                args=[player_id, player.sid, space_id, *keys.NODE_PLAYERS_AROUND],
            )
            # Removed now, or gone with a restart of Redis: either way nobody else saw the
            # player leave, so the others are told now and the EXIT is this node's to log.
            restored.departed.append(Departed(space_id, player, self.node))
            if event is not None:
                restored.exits.append(event)
        self._deferred_exits.clear()
        self._joined_offline.clear()
        for space_id in [s for s in self._party_copy if s not in self._local]:
            self._forget_space(space_id)
        if reaped:
            await self.redis.delete(keys.reaped(self.node))
        return restored

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

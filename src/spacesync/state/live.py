"""What a space shows live besides its players: reactions, the recording indicator, spotlights.

The original server kept these in the memory of its one process. Here they follow the players:
on one node they are dictionaries, in a cluster they live in Redis, so a player on any node sees
the same reactions, the same recorder and the same spotlights, and a change that must happen
once (a second recording refused, a reaction toggled by two sockets at once, a recording ended
by the recorder's departure noticed by two nodes) is one Lua script.

Layout in Redis (``spacesync:`` prefix, next to the keys :mod:`.redis` lists):

- ``space:<id>:reactions`` — hash ``<messageId>\\x1f<type>`` -> JSON list of the player ids who
  reacted, oldest first; expires :data:`REACTION_TTL_MS` after the space's last toggle;
- ``space:<id>:recording`` — JSON ``{recorderId, recorderNickname, startedAt}`` while a
  recording runs;
- ``space:<id>:spotlights`` — hash player id -> JSON ``{participantId, nickname}``.

Recordings and spotlights end with their holder (leave, disconnect, a dead node's players
reaped by the others); the expiry on those two keys is only a backstop for a cluster that
stopped as a whole, and a join also ends a recording whose recorder is no longer in the space.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from .base import StateStore
from .redis import RedisStore, key

REACTION_TTL_MS = 6 * 3600 * 1000
"""Reactions are forgotten six hours after the space's last toggle: FlowSpace's chat panel shows
the messages of the current visit, and reactions to messages nobody sees any more would only
take memory."""
MAX_REACTORS = 50
"""Players kept per message and reaction type: more would make the count a leaderboard, and the
bound keeps one hash field small (50 ids of at most 100 characters)."""
MAX_REACTED_MESSAGES = 1000
"""Message and type pairs kept per space: a client cannot grow a space's reactions without
bound by reacting to made-up message ids."""
HOLDER_TTL_MS = 7 * 24 * 3600 * 1000
"""Backstop expiry of a recording or a space's spotlights (see the module docstring)."""

Toggle = Literal["add", "remove", "full"]


@dataclass(frozen=True, slots=True)
class Recording:
    """The recording of a space, as ``recording:*`` events carry it (``isRecording`` aside)."""

    recorder_id: str
    recorder_nickname: str
    started_at: int
    """Milliseconds since the epoch."""

    def to_wire(self, recording: bool) -> dict[str, Any]:
        return {
            "isRecording": recording,
            "recorderId": self.recorder_id,
            "recorderNickname": self.recorder_nickname,
            "startedAt": self.started_at,
        }

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_wire(True))

    @classmethod
    def loads(cls, raw: bytes | str) -> Recording | None:
        try:
            data = orjson.loads(raw)
            return cls(
                str(data["recorderId"]), str(data["recorderNickname"]), int(data["startedAt"])
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Spotlight:
    participant_id: str
    nickname: str

    def to_wire(self) -> dict[str, str]:
        return {"participantId": self.participant_id, "nickname": self.nickname}

    @classmethod
    def loads(cls, raw: bytes | str) -> Spotlight | None:
        try:
            data = orjson.loads(raw)
            return cls(str(data["participantId"]), str(data["nickname"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class LiveState(Protocol):
    async def toggle_reaction(
        self, space_id: str, message_id: str, kind: str, player_id: str
    ) -> Toggle:
        """Add the player's reaction of ``kind`` to the message, or remove it if it was there;
        ``full`` (nothing changed) past :data:`MAX_REACTORS` or :data:`MAX_REACTED_MESSAGES`."""

    async def recording(self, space_id: str) -> Recording | None: ...

    async def start_recording(self, space_id: str, recording: Recording) -> Recording:
        """Start ``recording`` unless one runs; returns the one that runs now (``recording``
        itself when it started)."""

    async def stop_recording(self, space_id: str, recorder_id: str | None) -> Recording | None:
        """End the space's recording (only if ``recorder_id`` runs it, when given); returns the
        recording ended, or ``None`` if none was (so exactly one caller announces it)."""

    async def spotlights(self, space_id: str) -> list[Spotlight]: ...

    async def activate_spotlight(self, space_id: str, spotlight: Spotlight) -> None: ...

    async def deactivate_spotlight(self, space_id: str, player_id: str) -> Spotlight | None:
        """Switch the player's spotlight off; the one switched off, ``None`` if it was not on."""


def _field(message_id: str, kind: str) -> str:
    return f"{message_id}\x1f{kind}"


class MemoryLiveState:
    """The live state of a single node."""

    def __init__(self) -> None:
        self._reactions: dict[str, dict[str, list[str]]] = {}
        self._touched: dict[str, float] = {}
        self._recordings: dict[str, Recording] = {}
        self._spotlights: dict[str, dict[str, Spotlight]] = {}

    def _expire(self, now: float) -> None:
        limit = REACTION_TTL_MS / 1000
        for space_id in [s for s, at in self._touched.items() if now - at > limit]:
            del self._touched[space_id]
            self._reactions.pop(space_id, None)

    async def toggle_reaction(
        self, space_id: str, message_id: str, kind: str, player_id: str
    ) -> Toggle:
        now = time.monotonic()
        self._expire(now)
        space = self._reactions.setdefault(space_id, {})
        self._touched[space_id] = now
        name = _field(message_id, kind)
        players = space.get(name)
        if players is not None and player_id in players:
            players.remove(player_id)
            if not players:
                del space[name]
            return "remove"
        if players is None and len(space) >= MAX_REACTED_MESSAGES:
            return "full"
        if players is not None and len(players) >= MAX_REACTORS:
            return "full"
        space.setdefault(name, []).append(player_id)
        return "add"

    async def recording(self, space_id: str) -> Recording | None:
        return self._recordings.get(space_id)

    async def start_recording(self, space_id: str, recording: Recording) -> Recording:
        return self._recordings.setdefault(space_id, recording)

    async def stop_recording(self, space_id: str, recorder_id: str | None) -> Recording | None:
        current = self._recordings.get(space_id)
        if current is None or (recorder_id is not None and current.recorder_id != recorder_id):
            return None
        del self._recordings[space_id]
        return current

    async def spotlights(self, space_id: str) -> list[Spotlight]:
        return list(self._spotlights.get(space_id, {}).values())

    async def activate_spotlight(self, space_id: str, spotlight: Spotlight) -> None:
        self._spotlights.setdefault(space_id, {})[spotlight.participant_id] = spotlight

    async def deactivate_spotlight(self, space_id: str, player_id: str) -> Spotlight | None:
        space = self._spotlights.get(space_id)
        if space is None:
            return None
        gone = space.pop(player_id, None)
        if not space:
            del self._spotlights[space_id]
        return gone


# -- Redis ----------------------------------------------------------------------------------

# KEYS: reactions hash. ARGV: field, player id, max reactors, max fields, TTL (ms).
_TOGGLE_REACTION = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local list = {}
if raw then
  local ok, dec = pcall(cjson.decode, raw)
  if ok and type(dec) == 'table' then list = dec end
end
for i, who in ipairs(list) do
  if who == ARGV[2] then
    table.remove(list, i)
    if #list == 0 then
      redis.call('HDEL', KEYS[1], ARGV[1])
    else
      redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(list))
    end
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return 'remove'
  end
end
if #list >= tonumber(ARGV[3]) then return 'full' end
if not raw and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 'full' end
list[#list + 1] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(list))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 'add'
"""

# KEYS: recording key. ARGV: the new recording (JSON), TTL (ms). Returns the one that runs.
_START_RECORDING = """
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS: recording key. ARGV: recorder id, or '' for whoever records. Returns the one ended.
_STOP_RECORDING = """
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if ARGV[1] ~= '' then
  local ok, dec = pcall(cjson.decode, cur)
  if ok and type(dec) == 'table' and dec['recorderId'] ~= ARGV[1] then return false end
end
redis.call('DEL', KEYS[1])
return cur
"""

# KEYS: spotlights hash. ARGV: player id. Returns the entry removed.
_DEACTIVATE_SPOTLIGHT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return cur
"""


class RedisLiveState:
    """The live state of a cluster, on the :class:`~.redis.RedisStore`'s connection; every call
    raises :class:`~.base.StoreUnavailable` while Redis is away, as the store's own do."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._key = key
        client = store.redis
        self._toggle = client.register_script(_TOGGLE_REACTION)
        self._start = client.register_script(_START_RECORDING)
        self._stop = client.register_script(_STOP_RECORDING)
        self._deactivate = client.register_script(_DEACTIVATE_SPOTLIGHT)

    async def _run(self, call: Any) -> Any:
        return await self._store._shared(call)

    async def toggle_reaction(
        self, space_id: str, message_id: str, kind: str, player_id: str
    ) -> Toggle:
        keys = [self._key("space", space_id, "reactions")]
        args = [_field(message_id, kind), player_id, MAX_REACTORS, MAX_REACTED_MESSAGES]
        result = await self._run(lambda: self._toggle(keys=keys, args=[*args, REACTION_TTL_MS]))
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        assert outcome in ("add", "remove", "full")
        return outcome  # type: ignore[return-value]

    async def recording(self, space_id: str) -> Recording | None:
        name = self._key("space", space_id, "recording")
        raw = await self._run(lambda: self._store.redis.get(name))
        return Recording.loads(raw) if raw else None

    async def start_recording(self, space_id: str, recording: Recording) -> Recording:
        keys = [self._key("space", space_id, "recording")]
        raw = await self._run(
            lambda: self._start(keys=keys, args=[recording.dumps(), HOLDER_TTL_MS])
        )
        return Recording.loads(raw) or recording

    async def stop_recording(self, space_id: str, recorder_id: str | None) -> Recording | None:
        keys = [self._key("space", space_id, "recording")]
        raw = await self._run(lambda: self._stop(keys=keys, args=[recorder_id or ""]))
        return Recording.loads(raw) if raw else None

    async def spotlights(self, space_id: str) -> list[Spotlight]:
        name = self._key("space", space_id, "spotlights")
        raw = await self._run(lambda: self._store.redis.hvals(name))
        return [s for s in map(Spotlight.loads, raw) if s is not None]

    async def activate_spotlight(self, space_id: str, spotlight: Spotlight) -> None:
        name = self._key("space", space_id, "spotlights")
        value = orjson.dumps(spotlight.to_wire())

        async def write() -> None:
            async with self._store.redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, spotlight.participant_id, value)
                pipe.pexpire(name, HOLDER_TTL_MS)
                await pipe.execute()

        await self._run(write)

    async def deactivate_spotlight(self, space_id: str, player_id: str) -> Spotlight | None:
        keys = [self._key("space", space_id, "spotlights")]
        raw = await self._run(lambda: self._deactivate(keys=keys, args=[player_id]))
        return Spotlight.loads(raw) if raw else None


def live_state_for(store: StateStore) -> LiveState:
    """The live state that goes with ``store``: shared through Redis when the store is."""
    if isinstance(store, RedisStore):
        return RedisLiveState(store)
    return MemoryLiveState()

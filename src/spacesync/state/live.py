"""What a space shows live besides its players: reactions, the recording indicator, spotlights.

The original server kept these in the memory of its one process. Here they follow the players:
on one node they are dictionaries, in a cluster they live in Redis, so a player on any node sees
the same reactions, the same recorder and the same spotlights, and a change that must happen
once (a second recording refused, a reaction toggled by two sockets at once, a recording ended
by the recorder's departure noticed by two nodes) is one Lua script.

In Redis, a space's reactions, its recording (with the Redis time of its last start or stop)
and its spotlights are three keys of the space (see :mod:`.keys`); reactions expire
:data:`REACTION_TTL_MS` after the space's last toggle.

Recordings and spotlights end with their holder (leave, disconnect, a dead node's players
reaped by the others); the expiry on those keys is only a backstop for a cluster that stopped
as a whole, and a join also ends a recording whose recorder is no longer in the space.

Redis is not persisted, and the recording indicator is a legal notice: it must not vanish
because Redis restarted empty under a recorder who is still there. So the node holding a
recorder or a spotlight holder keeps a copy and writes it back with its players (as parties and
proximity are), and only while that player is still its own. ``recording:at`` makes the write
back decide atomically that the newest change wins: a copy replaces nothing a later start or
stop wrote, so a recording stopped (or another one started) elsewhere is never brought back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from .base import StateStore, StoreUnavailable
from .keys import space_reactions, space_recording, space_recording_at, space_spotlights
from .redis import RedisStore

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

# KEYS: recording key, its time key. ARGV: the new recording (JSON), TTL (ms).
# Returns {the one that runs, Redis time (ms) of the start when it is the new one}.
_START_RECORDING = """
local cur = redis.call('GET', KEYS[1])
if cur then return {cur, false} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
return {ARGV[1], now}
"""

# KEYS: recording key, its time key. ARGV: recorder id, or '' for whoever records; TTL (ms).
# Returns the one ended.
_STOP_RECORDING = """
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if ARGV[1] ~= '' then
  local ok, dec = pcall(cjson.decode, cur)
  if ok and type(dec) == 'table' and dec['recorderId'] ~= ARGV[1] then return false end
end
local t = redis.call('TIME')
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
           'PX', ARGV[2])
return cur
"""

# A node's copy of a recording it holds, written back: the newest change wins. KEYS: recording
# key, its time key. ARGV: the copy (JSON), the Redis time of its start, TTL (ms).
# Returns {outcome, the recording in Redis before}: 'kept' (Redis has it), 'restored' (Redis
# lost it, or holds an older one), 'stopped' (stopped since: nothing runs), 'lost' (another
# one started since runs).
_WRITE_BACK_RECORDING = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return {'kept', false} end
local at = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if tonumber(ARGV[2]) > at then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return {'restored', cur or false}
end
if cur then return {'lost', cur} end
return {'stopped', false}
"""

# KEYS: spotlights hash. ARGV: player id, entry (JSON), TTL (ms). 1 if it was missing.
_WRITE_BACK_SPOTLIGHT = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1 - had
"""

# KEYS: spotlights hash. ARGV: player id. Returns the entry removed.
_DEACTIVATE_SPOTLIGHT = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return cur
"""


class LiveListener(Protocol):
    """Told what writing a copy back changed, to tell the space's players."""

    async def recording_restored(
        self, space_id: str, recording: Recording, displaced: Recording | None
    ) -> None:
        """Redis had lost (or held an older) ``recording``; it runs again."""

    async def recording_lost(self, space_id: str, recording: Recording, running: Recording) -> None:
        """``recording`` could not be written back: ``running`` was started since."""

    async def recording_ended(self, space_id: str, recording: Recording) -> None:
        """``recording`` ended: its recorder left while Redis was away."""

    async def spotlight_ended(self, space_id: str, spotlight: Spotlight) -> None:
        """``spotlight`` went off: its holder left while Redis was away."""


async def _direct(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


class RedisLiveState:
    """The live state of a cluster, on the :class:`~.redis.RedisStore`'s connection; calls
    raise :class:`~.base.StoreUnavailable` while Redis is away, as the store's own do, except
    reads of what this node's own players hold, answered from its copy.

    The copy holds the recording and the spotlights of this node's players, each as Redis
    last confirmed it; it is written back by :meth:`write_back` (the
    :class:`~.redis.Companion` of the store) after an outage, and on a read that finds Redis
    without it."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.listener: LiveListener | None = None
        self._recordings: dict[str, tuple[Recording, int]] = {}
        """Space -> the recording one of this node's players runs, with the Redis time of its
        start."""
        self._spotlights: dict[str, dict[str, Spotlight]] = {}
        """Space -> player -> the spotlight of one of this node's players."""
        client = store.redis
        self._toggle = client.register_script(_TOGGLE_REACTION)
        self._start = client.register_script(_START_RECORDING)
        self._stop = client.register_script(_STOP_RECORDING)
        self._deactivate = client.register_script(_DEACTIVATE_SPOTLIGHT)
        self._write_back_recording = client.register_script(_WRITE_BACK_RECORDING)
        self._write_back_spotlight = client.register_script(_WRITE_BACK_SPOTLIGHT)
        store.companions.append(self)

    async def _run(self, call: Any) -> Any:
        return await self._store._shared(call)

    def _recording_keys(self, space_id: str) -> list[str]:
        return [space_recording(space_id), space_recording_at(space_id)]

    async def toggle_reaction(
        self, space_id: str, message_id: str, kind: str, player_id: str
    ) -> Toggle:
        keys = [space_reactions(space_id)]
        args = [_field(message_id, kind), player_id, MAX_REACTORS, MAX_REACTED_MESSAGES]
        result = await self._run(lambda: self._toggle(keys=keys, args=[*args, REACTION_TTL_MS]))
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        assert outcome in ("add", "remove", "full")
        return outcome  # type: ignore[return-value]

    async def recording(self, space_id: str) -> Recording | None:
        name = space_recording(space_id)
        held = self._recordings.get(space_id)
        try:
            raw = await self._run(lambda: self._store.redis.get(name))
        except StoreUnavailable:
            if held is None:
                raise
            return held[0]  # this node's recorder is recording, whatever Redis would say
        if raw is None and held is not None and self._store.serves(space_id, held[0].recorder_id):
            # Redis lost it (restarted empty) before this node's heartbeat wrote it back, or
            # it was stopped elsewhere: the write back tells which.
            with contextlib.suppress(StoreUnavailable):
                return await self._sync_recording(space_id, self._run)
        return Recording.loads(raw) if raw else None

    async def start_recording(self, space_id: str, recording: Recording) -> Recording:
        keys = self._recording_keys(space_id)
        raw, at = await self._run(
            lambda: self._start(keys=keys, args=[recording.dumps(), HOLDER_TTL_MS])
        )
        running = Recording.loads(raw) or recording
        if at is not None and running == recording:
            self._recordings[space_id] = (recording, int(at))
        return running

    async def stop_recording(self, space_id: str, recorder_id: str | None) -> Recording | None:
        keys = self._recording_keys(space_id)
        raw = await self._run(
            lambda: self._stop(keys=keys, args=[recorder_id or "", HOLDER_TTL_MS])
        )
        stopped = Recording.loads(raw) if raw else None
        held = self._recordings.get(space_id)
        if held is not None and (held[0] == stopped or held[0].recorder_id == recorder_id):
            del self._recordings[space_id]
        return stopped

    async def _sync_recording(
        self, space_id: str, run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
    ) -> Recording | None:
        """Write this node's copy of the space's recording back (newest change wins), tell
        the listener what changed, and return the recording that runs now."""
        mine, at = self._recordings[space_id]
        outcome, raw = await run(
            lambda: self._write_back_recording(
                keys=self._recording_keys(space_id), args=[mine.dumps(), at, HOLDER_TTL_MS]
            )
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        other = Recording.loads(raw) if raw else None
        if outcome in ("kept", "restored"):
            if outcome == "restored" and self.listener is not None:
                await self.listener.recording_restored(space_id, mine, other)
            return mine
        if self._recordings.get(space_id) == (mine, at):
            del self._recordings[space_id]
        if outcome == "lost" and other is not None and self.listener is not None:
            await self.listener.recording_lost(space_id, mine, other)
        return other

    async def spotlights(self, space_id: str) -> list[Spotlight]:
        name = space_spotlights(space_id)
        held = self._spotlights.get(space_id, {})
        try:
            raw = await self._run(lambda: self._store.redis.hvals(name))
        except StoreUnavailable:
            if not held:
                raise
            return list(held.values())
        found = [s for s in map(Spotlight.loads, raw) if s is not None]
        known = {s.participant_id for s in found}
        for spotlight in list(held.values()):
            if spotlight.participant_id in known:
                continue
            if not self._store.serves(space_id, spotlight.participant_id):
                continue
            # Redis lost it (restarted empty) before this node's heartbeat wrote it back.
            with contextlib.suppress(StoreUnavailable):
                await self._run(lambda s=spotlight: self._put_spotlight(space_id, s))
                found.append(spotlight)
        return found

    async def _put_spotlight(self, space_id: str, spotlight: Spotlight) -> Any:
        return await self._write_back_spotlight(
            keys=[space_spotlights(space_id)],
            args=[spotlight.participant_id, orjson.dumps(spotlight.to_wire()), HOLDER_TTL_MS],
        )

    async def activate_spotlight(self, space_id: str, spotlight: Spotlight) -> None:
        name = space_spotlights(space_id)
        value = orjson.dumps(spotlight.to_wire())

        async def write() -> None:
            async with self._store.redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, spotlight.participant_id, value)
                pipe.pexpire(name, HOLDER_TTL_MS)
                await pipe.execute()

        await self._run(write)
        self._spotlights.setdefault(space_id, {})[spotlight.participant_id] = spotlight

    async def deactivate_spotlight(self, space_id: str, player_id: str) -> Spotlight | None:
        keys = [space_spotlights(space_id)]
        raw = await self._run(lambda: self._deactivate(keys=keys, args=[player_id]))
        self._forget_spotlight(space_id, player_id)
        return Spotlight.loads(raw) if raw else None

    def _forget_spotlight(self, space_id: str, player_id: str) -> None:
        held = self._spotlights.get(space_id)
        if held is not None:
            held.pop(player_id, None)
            if not held:
                del self._spotlights[space_id]

    # -- the copy, written back ----------------------------------------------------------------

    async def write_back(
        self, holds: Callable[[str, str], bool], left: Callable[[str, str], bool]
    ) -> None:
        """After Redis was away or restarted empty: the recordings and spotlights of players
        still connected here are written back (a recording only if nothing newer was started
        or stopped meanwhile). Those of players who left meanwhile end now, and the space is
        told (their departure could not reach Redis or the other nodes); those of players gone
        otherwise (reaped by the others, or joined again through another node) are only
        forgotten. Redis errors propagate (the heartbeat tries again)."""
        for space_id, (recording, _) in list(self._recordings.items()):
            if holds(space_id, recording.recorder_id):
                await self._sync_recording(space_id, _direct)
                continue
            del self._recordings[space_id]
            if left(space_id, recording.recorder_id):
                await self._end_recording(space_id, recording)
        for space_id, held in list(self._spotlights.items()):
            for spotlight in list(held.values()):
                if holds(space_id, spotlight.participant_id):
                    await self._put_spotlight(space_id, spotlight)
                    continue
                self._forget_spotlight(space_id, spotlight.participant_id)
                if left(space_id, spotlight.participant_id):
                    keys = [space_spotlights(space_id)]
                    await self._deactivate(keys=keys, args=[spotlight.participant_id])
                    if self.listener is not None:
                        await self.listener.spotlight_ended(space_id, spotlight)

    async def _end_recording(self, space_id: str, recording: Recording) -> None:
        """End the recording of a recorder who left while Redis was away, and have the space
        told unless another recording runs (Redis may have lost this one with a restart: the
        other nodes' players still show it)."""
        keys = self._recording_keys(space_id)
        raw = await self._stop(keys=keys, args=[recording.recorder_id, HOLDER_TTL_MS])
        if raw is None and await self._store.redis.exists(keys[0]):
            return
        if self.listener is not None:
            await self.listener.recording_ended(space_id, recording)

    async def refresh(self, holds: Callable[[str, str], bool]) -> None:
        """Drop copies others made stale (a staff member on another node stopped this node's
        recorder), so that a later restart of Redis does not bring them back. A spotlight is
        switched off only by its holder or their departure, both seen here: nothing to check."""
        await self._sync_recordings(holds)
        for space_id, held in list(self._spotlights.items()):
            for spotlight in list(held.values()):
                if not holds(space_id, spotlight.participant_id):
                    self._forget_spotlight(space_id, spotlight.participant_id)

    async def _sync_recordings(self, holds: Callable[[str, str], bool]) -> None:
        for space_id, (recording, _) in list(self._recordings.items()):
            if holds(space_id, recording.recorder_id):
                await self._sync_recording(space_id, _direct)
            else:
                del self._recordings[space_id]


def live_state_for(store: StateStore) -> LiveState:
    """The live state that goes with ``store``: shared through Redis when the store is."""
    if isinstance(store, RedisStore):
        return RedisLiveState(store)
    return MemoryLiveState()

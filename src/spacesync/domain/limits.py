"""Rate limits on everything a client makes the server send to other players.

Chat has its own rules (:mod:`spacesync.domain.chat`); this module covers the rest: jumps,
profile updates, party requests, proximity switches, joins and leaves, and the flow of
``player:move``. A client that sends more than a person at a keyboard ever could is refused, so
one socket cannot make the server shout at everyone else in the space.

All limits are fixed windows aligned on the clock (``int(now / window)``), because a fixed
window costs two integers per rule and makes "one error per window" and "over the limit in N
windows in a row" exact. A fixed window lets through at most twice the limit around a window
boundary, which is harmless with limits chosen far above what real clients send.

State is per socket (:class:`SocketLimits`, dropped with the socket) or per key such as a player
id or an inviter/target pair (:class:`KeyedLimits`, entries forgotten once their window is over).
Nothing here does I/O; times are ``time.monotonic()`` seconds passed in by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .parties import PARTY_SIZE_LIMIT


@dataclass(frozen=True, slots=True)
class Rule:
    """At most ``limit`` accepted events per ``window`` seconds.

    ``name`` is the fixed reason counted in ``/metrics`` ``abuse`` and written to logs; it never
    comes from client input. ``label`` names the events in the message the client receives.
    """

    name: str
    limit: int
    window: float
    label: str

    def index(self, now: float) -> int:
        return int(now / self.window)

    def retry_after(self, now: float) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        end = (self.index(now) + 1) * self.window
        return max(1, math.ceil(end - now))


@dataclass(frozen=True, slots=True)
class EventLimit:
    """The limits of one client event: per socket, and optionally per player across sockets."""

    socket: Rule
    player: Rule | None = None


# -- the table ------------------------------------------------------------------------------
#
# Limits sit well above what the official client sends: it moves at most 60 times a second,
# jumps a few times a second at most, and sends the other events on a click.

MOVE = Rule("rateLimited.move", 120, 1.0, "moves")
"""``player:move`` per socket: 120 a second, twice what the official client sends. Handled on
the fast path, not through :data:`EVENT_LIMITS`: excess moves are dropped and the newest one is
kept and applied when the window ends, so the newest state is still delivered."""

_JUMP = Rule("rateLimited.jump", 20, 2.0, "jumps")
_PROFILE = Rule("rateLimited.profile", 6, 10.0, "profile updates")
_PROFILE_PLAYER = Rule("rateLimited.profilePlayer", 6, 10.0, "profile updates")
_PARTY_CREATE = Rule("rateLimited.partyCreate", 5, 10.0, "new parties")
_PARTY_INVITE = Rule("rateLimited.partyInvite", PARTY_SIZE_LIMIT, 10.0, "invitations")
"""A leader may invite a whole party at once; no target gets more than :data:`INVITE_PAIR`
and :data:`INVITE_TARGET` allow, so a wide burst annoys nobody twice."""
_PARTY_ANSWER = Rule("rateLimited.partyAnswer", 10, 10.0, "invitation answers")
_PARTY_LEAVE = Rule("rateLimited.partyLeave", 20, 10.0, "party changes")
_PARTY_ZONE = Rule("rateLimited.partyZone", 20, 10.0, "party zone changes")
_PROXIMITY = Rule("rateLimited.proximity", 5, 10.0, "proximity changes")
_JOIN = Rule("rateLimited.join", 5, 10.0, "joins")
_LEAVE = Rule("rateLimited.leave", 5, 10.0, "leaves")
_LEAVE_PLAYER = Rule("rateLimited.leavePlayer", 20, 60.0, "leaves")
_REACTION = Rule("rateLimited.reaction", 30, 10.0, "reactions")
_RECORDING = Rule("rateLimited.recording", 5, 10.0, "recording changes")
"""Start and stop together: each one is announced to the whole space."""
_SPOTLIGHT = Rule("rateLimited.spotlight", 5, 10.0, "spotlight changes")
_OBJECT = Rule("rateLimited.object", 40, 10.0, "object changes")
"""Place, update and delete together: an editor places and moves objects by clicking,
and each change is written to the database and announced to the whole space."""
_ADMIN = Rule("rateLimited.admin", 10, 10.0, "moderation actions")
"""Mute, unmute, kick, unban and message deletion together: each one is a click on a member,
and each reaches the whole space."""
_ANNOUNCE = Rule("rateLimited.announce", 3, 30.0, "announcements")
"""An announcement interrupts every player in the space; it is also counted with chat."""

JOIN_PLAYER = Rule("rateLimited.joinPlayer", 20, 60.0, "joins")
"""``join:space`` per player id, across sockets: checked once the identity is known."""

INVITE_PAIR = Rule("rateLimited.invitePair", 3, 30.0, "invitations to this player")
"""``party:invite`` per inviter and target player: one player cannot flood another, whatever
number of sockets or parties they use."""

INVITE_TARGET = Rule("rateLimited.inviteTarget", 10, 30.0, "invitations to this player")
"""``party:invite`` per target player, from anyone."""

EVENT_LIMITS: dict[str, EventLimit] = {
    "player:jump": EventLimit(_JUMP),
    "player:updateProfile": EventLimit(_PROFILE, _PROFILE_PLAYER),
    "party:create": EventLimit(_PARTY_CREATE),
    "party:invite": EventLimit(_PARTY_INVITE),
    "party:accept": EventLimit(_PARTY_ANSWER),
    "party:decline": EventLimit(_PARTY_ANSWER),
    "party:leave": EventLimit(_PARTY_LEAVE),
    "leaveParty": EventLimit(_PARTY_LEAVE),
    "party:join": EventLimit(_PARTY_ZONE),
    "joinParty": EventLimit(_PARTY_ZONE),
    "proximity:set": EventLimit(_PROXIMITY),
    "join:space": EventLimit(_JOIN),
    "leave:space": EventLimit(_LEAVE, _LEAVE_PLAYER),
    "reaction:toggle": EventLimit(_REACTION),
    "recording:start": EventLimit(_RECORDING),
    "recording:stop": EventLimit(_RECORDING),
    "spotlight:activate": EventLimit(_SPOTLIGHT),
    "spotlight:deactivate": EventLimit(_SPOTLIGHT),
    "object:place": EventLimit(_OBJECT),
    "object:update": EventLimit(_OBJECT),
    "object:delete": EventLimit(_OBJECT),
    "admin:mute": EventLimit(_ADMIN),
    "admin:unmute": EventLimit(_ADMIN),
    "admin:kick": EventLimit(_ADMIN),
    "admin:unban": EventLimit(_ADMIN),
    "admin:deleteMessage": EventLimit(_ADMIN),
    "admin:announce": EventLimit(_ANNOUNCE),
}
"""Per-event limits checked before the handler runs. Events sharing a :class:`Rule` share its
allowance (``party:accept`` and ``party:decline`` together, for instance). Adding an event is
one line here."""

MAX_STRIKES = 10
"""Over the same limit in this many windows in a row: the client is not slowed down by the
refusals, so it is disconnected."""

MAX_REFUSED = 5000
"""Refused events per socket, over all rules, before it is disconnected."""

NOTICE_INTERVAL = 15.0
NOTICE_BURST = 3
"""At most this many "joined"/"left" lines about one player in one space per interval are sent
at once; further changes are coalesced (see :class:`NoticeThrottle`)."""


class Verdict(IntEnum):
    """What to do about one refused event."""

    QUIET = 0
    """Already answered in this window: drop it silently (and count it)."""
    NOTIFY = 1
    """The first refusal of this window: answer the client once and log once."""
    DISCONNECT = 2
    """Sustained excess: disconnect the client."""


class _Window:
    __slots__ = ("count", "index", "last_over", "refused", "strikes")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.refused = 0
        self.strikes = 0
        self.last_over = -2

    def roll(self, index: int) -> None:
        if index != self.index:
            self.index = index
            self.count = 0
            self.refused = 0


class SocketLimits:
    """The limit state of one socket; it lives and dies with the socket's session.

    Moves have dedicated fields because they are checked on every ``player:move``: the check is
    two integer comparisons and allocates nothing. The other rules get a window each, created
    the first time the socket uses them; but as long as the socket has counted events of one
    rule only and had none refused (most sockets: the join, once), that rule's count is kept in
    three fields instead (``_lone_*``), and moves into a window when another rule is counted or
    an event is refused.
    """

    __slots__ = (
        "_lone_count",
        "_lone_index",
        "_lone_name",
        "_windows",
        "held_move",
        "held_scheduled",
        "held_since_join",
        "move_count",
        "move_index",
        "refused_total",
    )

    def __init__(self) -> None:
        self._windows: dict[str, _Window] | None = None
        self._lone_name: str | None = None
        """The rule counted without a window (only while :attr:`_windows` is None)."""
        self._lone_index = -1
        self._lone_count = 0
        self.move_index = -1
        self.move_count = 0
        self.refused_total = 0
        self.held_move: Any = None
        """The newest refused move, applied when the move window allows (never older than an
        accepted one: accepting a move drops it)."""
        self.held_since_join = 0.0
        """The join time of the session when the move was held: a move held before a leave is
        not applied after a new join."""
        self.held_scheduled = False

    # -- moves ---------------------------------------------------------------------------------

    def hit_move(self, now: float) -> bool:
        """Count one ``player:move``; False once the socket is over :data:`MOVE`."""
        index = int(now / MOVE.window)
        if index != self.move_index:
            self.move_index = index
            self.move_count = 1
        elif self.move_count < MOVE.limit:
            self.move_count += 1
        else:
            return False
        self.held_move = None  # a newer move went through
        return True

    # -- other events --------------------------------------------------------------------------

    def _window(self, rule: Rule, now: float) -> _Window:
        windows = self._windows
        if windows is None:
            windows = self._windows = {}
            if self._lone_name is not None:  # the lone count becomes a window of its own
                lone = windows[self._lone_name] = _Window(self._lone_index)
                lone.count = self._lone_count
                self._lone_name = None
        index = rule.index(now)
        window = windows.get(rule.name)
        if window is None:
            window = windows[rule.name] = _Window(index)
        else:
            window.roll(index)
        return window

    def admit(self, rule: Rule, now: float) -> bool:
        """Whether one more event fits in the current window (nothing is counted: see
        :meth:`record`, so that refused input such as a malformed payload costs nothing)."""
        if self._windows is None:
            return (
                rule.name != self._lone_name
                or self._lone_index != rule.index(now)
                or self._lone_count < rule.limit
            )
        window = self._windows.get(rule.name)
        if window is None or window.index != rule.index(now):
            return True
        return window.count < rule.limit

    def record(self, rule: Rule, now: float) -> None:
        """Count one accepted event."""
        if self._windows is None and self._lone_name in (None, rule.name):
            index = rule.index(now)
            if self._lone_name is None or index != self._lone_index:
                self._lone_name = rule.name
                self._lone_index = index
                self._lone_count = 0
            self._lone_count += 1
            return
        self._window(rule, now).count += 1

    def refuse(self, rule: Rule, now: float) -> Verdict:
        """Count one refused event and decide how loudly to refuse it."""
        window = self._window(rule, now)
        window.refused += 1
        self.refused_total += 1
        if self.refused_total >= MAX_REFUSED:
            return Verdict.DISCONNECT if self.refused_total == MAX_REFUSED else Verdict.QUIET
        if window.refused > 1:
            return Verdict.QUIET
        window.strikes = window.strikes + 1 if window.last_over == window.index - 1 else 1
        window.last_over = window.index
        return Verdict.DISCONNECT if window.strikes >= MAX_STRIKES else Verdict.NOTIFY

    def refused_in_window(self, rule: Rule, now: float) -> int:
        """Events of ``rule`` refused in the current window so far."""
        return self._window(rule, now).refused


@dataclass(frozen=True, slots=True)
class KeyedHit:
    """What counting one event under a :class:`KeyedLimits` rule decided.

    Carries what is needed to give the event back (:meth:`KeyedLimits.give_back`) when its
    handler then refuses it, so that a malformed payload does not eat the allowance.
    """

    rule: Rule
    key: str
    allowed: bool
    count: int
    """Events counted in the window, this one included when it was allowed."""
    retry_after: int
    """Whole seconds until the window ends (at least 1)."""
    window: int
    """The window the event was counted in (-1 when it was not counted)."""
    shared: bool = False
    """Counted in the cluster's shared state rather than by this node alone."""


_COUNT_BITS = 32
_COUNT_MASK = (1 << _COUNT_BITS) - 1


class KeyedLimits:
    """Fixed-window counters keyed by (rule, key), shared by every socket of a node.

    Used for limits that follow a player rather than a socket (joins, leaves, renames, the
    invitations one player receives). An entry is forgotten once its window is over, so memory
    follows recent activity, which the per-socket limits already bound. In a cluster the store
    counts these in Redis and this is the node's own count while Redis is away.

    An entry's window index and count are packed in one integer (``index << 32 | count``; a
    count never exceeds its rule's limit), which costs a third of a tuple of them: there is an
    entry per player who joined in the last minute.
    """

    __slots__ = ("_counts", "_hits", "_windows", "sweep_every")

    def __init__(self, sweep_every: int = 1024) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        """(rule name, key) -> window index and count, packed."""
        self._windows: dict[str, float] = {}
        """Rule name -> window length: where the windows of its entries end (:meth:`sweep`)."""
        self._hits = 0
        self.sweep_every = sweep_every

    def hit(self, rule: Rule, key: str, now: float) -> bool:
        """Count one event for ``key`` if it fits in the window; False (not counted) if not."""
        return self.count(rule, key, now).allowed

    def count(self, rule: Rule, key: str, now: float) -> KeyedHit:
        """Count one event for ``key`` if it fits in the window, and say how full it is."""
        self._hits += 1
        if self._hits >= self.sweep_every:
            self._hits = 0
            self.sweep(now)
        index = rule.index(now)
        slot = (rule.name, key)
        entry = self._counts.get(slot)
        count = entry & _COUNT_MASK if entry is not None and entry >> _COUNT_BITS == index else 0
        retry = rule.retry_after(now)
        if count >= rule.limit:
            return KeyedHit(rule, key, False, count, retry, -1)
        self._store(rule, slot, index, count + 1)
        return KeyedHit(rule, key, True, count + 1, retry, index)

    def give_back(self, hit: KeyedHit) -> None:
        """Uncount an allowed event that was not carried out after all (if its window is
        still the current one: an older window no longer limits anything)."""
        slot = (hit.rule.name, hit.key)
        entry = self._counts.get(slot)
        if (
            hit.allowed
            and entry is not None
            and entry >> _COUNT_BITS == hit.window
            and entry & _COUNT_MASK > 0
        ):
            self._counts[slot] = entry - 1  # one less in the same window

    def note(self, rule: Rule, key: str, count: int, now: float) -> None:
        """Raise the count of ``key`` in the current window to ``count`` (what the cluster
        counted), so that this node goes on from there should it have to count alone."""
        index = rule.index(now)
        slot = (rule.name, key)
        entry = self._counts.get(slot)
        if entry is None or entry >> _COUNT_BITS != index or entry & _COUNT_MASK < count:
            self._store(rule, slot, index, min(count, rule.limit))

    def admit(self, rule: Rule, key: str, now: float) -> bool:
        """Whether one more event for ``key`` fits, without counting it."""
        entry = self._counts.get((rule.name, key))
        return (
            entry is None
            or entry >> _COUNT_BITS != rule.index(now)
            or entry & _COUNT_MASK < rule.limit
        )

    def _store(self, rule: Rule, slot: tuple[str, str], index: int, count: int) -> None:
        self._windows[rule.name] = rule.window
        self._counts[slot] = index << _COUNT_BITS | count

    def sweep(self, now: float) -> None:
        """Forget the entries whose window is over."""
        windows = self._windows
        stale = [
            slot
            for slot, entry in self._counts.items()
            if ((entry >> _COUNT_BITS) + 1) * windows[slot[0]] <= now
        ]
        for slot in stale:
            del self._counts[slot]

    def __len__(self) -> int:
        return len(self._counts)


class NoticeThrottle:
    """Decides when a player's arrival or departure is announced in the space's chat.

    ``player:joined`` and ``player:left`` always go out at once (the roster must be right); only
    the ``chat:system`` lines, whose text carries a client-chosen nickname, are coalesced. Per
    player and space, up to :data:`NOTICE_BURST` lines are announced at once within any
    :data:`NOTICE_INTERVAL` (an ordinary visit with a page reload says "joined", "left",
    "joined"). Past that a change is deferred until the interval allows another line, and then
    announced only if it still differs from what the space was last told: a join/leave loop
    ends in at most one more line, and the chat's last word about the player matches where they
    really are. The view is per node.

    A player is forgotten by :meth:`sweep` once nothing is deferred and no line was announced
    within the interval; the node sweeps with its housekeeping, and every 1,024 changes.
    """

    __slots__ = ("_calls", "_entries", "burst", "interval")

    def __init__(self, interval: float = NOTICE_INTERVAL, burst: int = NOTICE_BURST) -> None:
        self.interval = interval
        self.burst = burst
        self._entries: dict[tuple[str, str], _Notices] = {}
        self._calls = 0

    def change(self, space_id: str, player_id: str, present: bool, now: float) -> float | None:
        """Record that the player arrived (``present``) or left.

        Returns ``0.0`` to announce the change now, a delay in seconds after which :meth:`due`
        must be asked what to announce, or ``None`` when there is nothing to announce now (the
        space was last told this already, or a deferred announcement is already waiting).
        """
        self._tick(now)
        entry = self._entries.get((space_id, player_id))
        if entry is None:
            entry = self._entries[(space_id, player_id)] = _Notices()
        entry.present = present
        if entry.pending:
            return None
        if entry.announced is present:
            return None
        times = entry.times
        recent = 0
        while recent < len(times) and now - times[recent] >= self.interval:
            recent += 1
        if recent:
            times = entry.times = times[recent:]
        if len(times) < self.burst:
            entry.times = (*times, now)
            entry.announced = present
            return 0.0
        entry.pending = True
        return max(0.01, times[0] + self.interval - now)

    def due(self, space_id: str, player_id: str, now: float) -> bool | None:
        """A deferred announcement came due: whether to say "joined" (True), "left" (False),
        or nothing (None: the player is back where the space was last told they are)."""
        entry = self._entries.get((space_id, player_id))
        if entry is None or not entry.pending:
            return None
        entry.pending = False
        if entry.present is entry.announced:
            return None
        entry.times = (*entry.times, now)
        entry.announced = entry.present
        return entry.present

    def _tick(self, now: float) -> None:
        self._calls += 1
        if self._calls >= 1024:
            self._calls = 0
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget players with nothing deferred and no line within the interval: forgetting
        what was announced is safe, since the next change then differs from "unknown"."""
        stale = [
            key
            for key, entry in self._entries.items()
            if not entry.pending and (not entry.times or now - entry.times[-1] >= self.interval)
        ]
        for key in stale:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class _Notices:
    """What one node told one space about one player, and when."""

    __slots__ = ("announced", "pending", "present", "times")

    def __init__(self) -> None:
        self.present = False
        self.announced: bool | None = None
        """What the space was last told: arrived (True), left (False), or nothing yet (None)."""
        self.pending = False
        self.times: tuple[float, ...] = ()
        """When the lines of the last interval were announced, oldest first (a tuple: most
        entries hold one time or none, and an empty tuple costs nothing)."""

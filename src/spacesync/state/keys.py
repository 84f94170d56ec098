"""Every name spacesync uses in Redis: its keys and the pub/sub channels between the nodes.

Nothing else in the code spells a key: the state store (:mod:`.redis`), the live state
(:mod:`.live`) and the cluster plumbing (:mod:`..cluster`) ask the functions below for the
names they use, and Lua scripts receive them as ``KEYS`` (or, for the key of another node that a
script only learns from a stored entry, as the pieces around that node's name).

Every name starts with ``spacesync:``, left out below. ``<space>``, ``<player>``, ``<node>`` are
ids as the clients and the nodes give them (a node id is ``host:port:random``: it holds colons).

========================== ======= ======= ======================================================
Name                       Type    Expires Holds
========================== ======= ======= ======================================================
spaces                     set     never   ids of the spaces that have players
space:<space>:players      hash    never   player -> JSON entry: identity, socket, node, join
                                           time, name key
space:<space>:pos          hash    never   player -> [x, y, direction, isMoving], written once a
                                           position tick
space:<space>:names        hash    never   name key of a nickname -> the player holding that name
space:<space>:proximity    string  never   "1" or "0"
space:<space>:proximity:at string  never   Redis time (ms) of its last change
space:<space>:parties      string  never   JSON of the space's parties and open invitations
space:<space>:parties:lock string  always  the lock every change of the parties takes (5 s)
space:<space>:reactions    hash    always  <messageId>\\x1f<type> -> JSON list of the players who
                                           reacted (6 h after the last toggle)
space:<space>:recording    string  always  JSON of the running recording (7-day backstop)
space:<space>:recording:at string  always  Redis time (ms) of the recording's last start or stop
space:<space>:spotlights   hash    always  player -> JSON spotlight (7-day backstop)
party-counts               hash    never   space -> number of live parties
chat:<player>              string  always  the player's chat-limit history (60 s)
limit:<rule>:<key>:<win>   string  always  events counted in one window of a per-player or per-
                                           target limit (the window plus 1 s)
restriction:<space>:<p>    string  maybe   JSON mute or ban of a player without a user id; a
                                           timed mute expires when it lapses
nodes                      zset    never   node -> its last heartbeat (Redis time, ms)
node-index                 set     never   nodes that own players
node:<node>:players        hash    never   <space>\\x1f<player> -> socket id: the players this
                                           node owns
node:<node>                string  always  the node's figures: name, sockets, players (30 s)
reaped:<node>              set     always  <space>\\x1f<player>\\x1f<socket> the others removed
                                           when they declared the node dead (1 day)
held:<exitKey>             hash    always  a held EXIT: node, stay start, its stay: key,
                                           claimedBy once a rejoin took it (1 day)
stay:<space>:<p>:<digest>  string  always  the exitKey of the stay's latest held EXIT (1 day)
ch:space:<space>           channel -       events, position ticks and moderation orders for the
                                           nodes serving the space
ch:node:<node>             channel -       orders for one node (close a socket replaced
                                           elsewhere)
========================== ======= ======= ======================================================

"Never" keys are removed by whoever ends what they describe (the last player leaving a space,
a node leaving the cluster or the others reaping it); "always" keys carry an expiry from the
moment they are written. :data:`LAYOUT` is the same table as data, for checking what a running
cluster actually wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

_PREFIX: Final = "spacesync:"
SEP: Final = "\x1f"
"""Joins ids inside one hash field or set member (``<space>\\x1f<player>``)."""

# -- spaces ----------------------------------------------------------------------------------


def spaces() -> str:
    return f"{_PREFIX}spaces"


def space_players(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:players"


def space_positions(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:pos"


def space_names(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:names"


def space_proximity(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:proximity"


def space_proximity_at(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:proximity:at"


def space_parties(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:parties"


def space_parties_lock(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:parties:lock"


def space_reactions(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:reactions"


def space_recording(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:recording"


def space_recording_at(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:recording:at"


def space_spotlights(space_id: str) -> str:
    return f"{_PREFIX}space:{space_id}:spotlights"


def party_counts() -> str:
    return f"{_PREFIX}party-counts"


# -- limits and restrictions -----------------------------------------------------------------


def chat_history(player_id: str) -> str:
    return f"{_PREFIX}chat:{player_id}"


LIMIT_WINDOW_SEP: Final = ":"
"""Between a limit's name and its window number; the script that counts the window appends it
(it reads the window from Redis time)."""


def limit(rule: str, subject: str) -> str:
    """The stem of a limit's counters; each window's counter is ``stem:<window>``."""
    return f"{_PREFIX}limit:{rule}:{subject}"


def limit_window(rule: str, subject: str, window: int) -> str:
    return f"{limit(rule, subject)}{LIMIT_WINDOW_SEP}{window}"


def restriction(space_id: str, player_id: str) -> str:
    return f"{_PREFIX}restriction:{space_id}:{player_id}"


# -- nodes -----------------------------------------------------------------------------------


def nodes() -> str:
    return f"{_PREFIX}nodes"


def node_index() -> str:
    return f"{_PREFIX}node-index"


NODE_PLAYERS_AROUND: Final = (f"{_PREFIX}node:", ":players")
"""``node_players(n) == head + n + tail``: for scripts that read the node from an entry."""


def node_players(node: str) -> str:
    head, tail = NODE_PLAYERS_AROUND
    return f"{head}{node}{tail}"


def node_figures(node: str) -> str:
    return f"{_PREFIX}node:{node}"


def reaped(node: str) -> str:
    """Players of ``node`` removed by the others when it was declared dead."""
    return f"{_PREFIX}reaped:{node}"


# -- the EXIT grace period -------------------------------------------------------------------

HELD_EXIT_HEAD: Final = f"{_PREFIX}held:"
"""``held_exit(k) == HELD_EXIT_HEAD + k``: for the script that follows a ``stay:`` key."""


def held_exit(exit_key: str) -> str:
    return f"{HELD_EXIT_HEAD}{exit_key}"


def stay(space_id: str, player_id: str, digest: str) -> str:
    return f"{_PREFIX}stay:{space_id}:{player_id}:{digest}"


# -- channels --------------------------------------------------------------------------------


def space_channel(space_id: str) -> str:
    return f"{_PREFIX}ch:space:{space_id}"


def node_channel(node: str) -> str:
    return f"{_PREFIX}ch:node:{node}"


# -- the layout as data ----------------------------------------------------------------------

Expiry = Literal["never", "always", "maybe", "-"]


@dataclass(frozen=True, slots=True)
class Name:
    """One row of the layout: a pattern after the prefix (``<...>`` stands for an id), its
    Redis type (``channel`` for a pub/sub channel) and whether it carries an expiry."""

    pattern: str
    kind: str
    expires: Expiry

    def regex(self) -> re.Pattern[str]:
        parts = re.split(r"<[^>]+>", _PREFIX + self.pattern)
        return re.compile(".+".join(re.escape(p) for p in parts) + r"\Z", re.DOTALL)

    def matches(self, name: str) -> bool:
        return self.regex().match(name) is not None


LAYOUT: Final = (
    Name("spaces", "set", "never"),
    Name("space:<space>:players", "hash", "never"),
    Name("space:<space>:pos", "hash", "never"),
    Name("space:<space>:names", "hash", "never"),
    Name("space:<space>:proximity", "string", "never"),
    Name("space:<space>:proximity:at", "string", "never"),
    Name("space:<space>:parties", "string", "never"),
    Name("space:<space>:parties:lock", "string", "always"),
    Name("space:<space>:reactions", "hash", "always"),
    Name("space:<space>:recording", "string", "always"),
    Name("space:<space>:recording:at", "string", "always"),
    Name("space:<space>:spotlights", "hash", "always"),
    Name("party-counts", "hash", "never"),
    Name("chat:<player>", "string", "always"),
    Name("limit:<rule>:<key>:<win>", "string", "always"),
    Name("restriction:<space>:<p>", "string", "maybe"),
    Name("nodes", "zset", "never"),
    Name("node-index", "set", "never"),
    Name("node:<node>:players", "hash", "never"),
    Name("node:<node>", "string", "always"),
    Name("reaped:<node>", "set", "always"),
    Name("held:<exitKey>", "hash", "always"),
    Name("stay:<space>:<p>:<digest>", "string", "always"),
    Name("ch:space:<space>", "channel", "-"),
    Name("ch:node:<node>", "channel", "-"),
)


def everything() -> str:
    """A ``SCAN``/``PUBSUB CHANNELS`` pattern for every name spacesync uses."""
    return f"{_PREFIX}*"


def described(name: str, kind: str) -> list[Name]:
    """The rows of :data:`LAYOUT` that ``name`` of Redis type ``kind`` fits."""
    return [row for row in LAYOUT if row.kind == kind and row.matches(name)]

"""Redis names are spelled in one place: :mod:`spacesync.state.keys`.

The source tree is scanned for a key prefix literal or a Lua script that builds a key; the
layout table of ``keys.py`` is checked against its builders. (That a running cluster writes only
what the table describes is checked against real Redis in
``tests/cluster/test_cluster_key_layout.py``.)"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import spacesync
from spacesync.state import keys

SOURCE = Path(spacesync.__file__).parent
KEYS_MODULE = SOURCE / "state" / "keys.py"
_PREFIX_LITERAL = re.compile(r"spacesync:(?!\s)")
"""The key prefix as code would spell it (``spacesync: a server`` in prose is not a key)."""
_LUA_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def offences(source: str, where: str = "<source>") -> list[str]:
    """Redis names built outside ``keys.py``: string constants (f-string parts included) with
    the key prefix, and Lua scripts with a quoted string holding a colon (a key piece)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str | bytes):
            continue
        text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
        if _PREFIX_LITERAL.search(text):
            found.append(f"{where}:{node.lineno}: key prefix literal")
        if "redis.call(" in text:
            for quoted in _LUA_QUOTED.findall(text):
                if ":" in quoted:
                    found.append(f"{where}:{node.lineno}: Lua script spells {quoted}")
    return found


def test_the_scan_finds_keys_built_elsewhere() -> None:
    """The checker itself: each way of spelling a key outside ``keys.py`` is found."""
    assert offences('NAME = "spacesync:spaces"')
    assert offences('def name(s):\n    return f"spacesync:space:{s}:players"')
    assert offences("PREFIX = b'spacesync:'")
    assert offences('SCRIPT = """local h = ARGV[1] .. \'held:\' .. k\nredis.call(\'GET\', h)"""')
    assert offences('SCRIPT = """redis.call(\'HDEL\', KEYS[1] .. \':players\', ARGV[1])"""')
    assert not offences('"""spacesync: a real-time Socket.IO server."""')
    assert not offences('SCRIPT = """redis.call(\'HGET\', KEYS[1], ARGV[1])"""')


def test_no_redis_name_is_spelled_outside_keys_py() -> None:
    files = sorted(p for p in SOURCE.rglob("*.py") if p != KEYS_MODULE)
    assert len(files) > 20
    found = []
    for path in files:
        found += offences(path.read_text(), str(path.relative_to(SOURCE)))
    assert found == []


def test_keys_py_itself_spells_them() -> None:
    """The scan looks where the names are: keys.py is full of what it forbids elsewhere."""
    assert offences(KEYS_MODULE.read_text())


def test_the_docstring_table_lists_every_row_of_the_layout() -> None:
    doc = keys.__doc__ or ""
    for row in keys.LAYOUT:
        line = rf"^{re.escape(row.pattern)}\s+{row.kind}\s+{re.escape(row.expires)}\s"
        assert re.search(line, doc, re.MULTILINE), row
    assert len({row.pattern for row in keys.LAYOUT}) == len(keys.LAYOUT)


NODE = "node-a:3001:0f3c9a21"
"""A node id as nodes make them: with colons."""

BUILT = [
    (keys.spaces(), "set", "spaces"),
    (keys.space_players("s1"), "hash", "space:<space>:players"),
    (keys.space_positions("s1"), "hash", "space:<space>:pos"),
    (keys.space_names("s1"), "hash", "space:<space>:names"),
    (keys.space_proximity("s1"), "string", "space:<space>:proximity"),
    (keys.space_proximity_at("s1"), "string", "space:<space>:proximity:at"),
    (keys.space_parties("s1"), "string", "space:<space>:parties"),
    (keys.space_parties_lock("s1"), "string", "space:<space>:parties:lock"),
    (keys.space_reactions("s1"), "hash", "space:<space>:reactions"),
    (keys.space_recording("s1"), "string", "space:<space>:recording"),
    (keys.space_recording_at("s1"), "string", "space:<space>:recording:at"),
    (keys.space_spotlights("s1"), "hash", "space:<space>:spotlights"),
    (keys.party_counts(), "hash", "party-counts"),
    (keys.chat_history("p1"), "string", "chat:<player>"),
    (
        keys.limit_window("rateLimited.invitePair", "ann\nbob", 57),
        "string",
        "limit:<rule>:<key>:<win>",
    ),
    (keys.restriction("s1", "p1"), "string", "restriction:<space>:<p>"),
    (keys.nodes(), "zset", "nodes"),
    (keys.node_index(), "set", "node-index"),
    (keys.node_players(NODE), "hash", "node:<node>:players"),
    (keys.node_figures(NODE), "string", "node:<node>"),
    (keys.reaped(NODE), "set", "reaped:<node>"),
    (keys.held_exit("exit-1"), "hash", "held:<exitKey>"),
    (keys.stay("s1", "p1", "d1"), "string", "stay:<space>:<p>:<digest>"),
    (keys.space_channel("s1"), "channel", "ch:space:<space>"),
    (keys.node_channel(NODE), "channel", "ch:node:<node>"),
]


@pytest.mark.parametrize(("name", "kind", "pattern"), BUILT, ids=[b[2] for b in BUILT])
def test_each_builder_names_its_row(name: str, kind: str, pattern: str) -> None:
    assert [row.pattern for row in keys.described(name, kind)] == [pattern]


def test_every_row_has_a_builder_and_every_builder_a_row() -> None:
    assert {b[2] for b in BUILT} == {row.pattern for row in keys.LAYOUT}
    builders = {
        name
        for name, fn in inspect.getmembers(keys, inspect.isfunction)
        if fn.__module__ == keys.__name__ and name not in ("described", "everything")
    }
    # Every builder of the module is exercised above (``limit`` is the stem of limit_window).
    called = {
        "spaces", "space_players", "space_positions", "space_names", "space_proximity",
        "space_proximity_at", "space_parties", "space_parties_lock", "space_reactions",
        "space_recording", "space_recording_at", "space_spotlights", "party_counts",
        "chat_history", "limit", "limit_window", "restriction", "nodes", "node_index",
        "node_players", "node_figures", "reaped", "held_exit", "stay", "space_channel",
        "node_channel",
    }  # fmt: skip
    assert builders == called


def test_the_pieces_given_to_scripts_rebuild_the_same_names() -> None:
    head, tail = keys.NODE_PLAYERS_AROUND
    assert head + NODE + tail == keys.node_players(NODE)
    assert keys.HELD_EXIT_HEAD + "exit-1" == keys.held_exit("exit-1")
    rule, subject = "rateLimited.joinPlayer", "p1"
    assert keys.limit(rule, subject) + keys.LIMIT_WINDOW_SEP + "12" == keys.limit_window(
        rule, subject, 12
    )


def test_one_pattern_covers_every_name_spacesync_uses() -> None:
    pattern = keys.everything()
    assert pattern.endswith("*")
    for name, _, _ in BUILT:
        assert name.startswith(pattern[:-1])

"""Malformed input from a client, over both transports (SPEC §3 input limits, §6, §8).

Every case is sent by a joined player (the space's OWNER, so that a wrongly accepted
``proximity:set`` would show) while a second player of the same space watches. Each case checks
that the reply arrives on the event's own error channel and nowhere else, that no state changed
(a later joiner sees the sender as it was, the watcher saw nothing), that both players keep
working, and that the server logged one warning E3001 and nothing at error level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]

TRANSPORTS = ["websocket", "polling"]
ERROR_CHANNELS = ("error", "chat:error", "whisper:error", "party:error", "proximity:error")
# Everything a wrongly accepted payload could make the server send to the other players.
RELAYED = (
    "player:moved",
    "players:moved",
    "player:jumped",
    "player:joined",
    "player:left",
    "player:profileUpdated",
    "chat:message",
    "chat:system",
    "whisper:received",
    "whisper:receive",
    "party:invited",
    "party:member_joined",
    "party:message",
    "proximity:changed",
)
# What the sender itself would receive if a payload had been wrongly accepted.
ACCEPTED = (
    "room:joined",
    "whisper:sent",
    "party:joined",
    "party:left",
    "party:message",
    "proximity:changed",
    "player:profileUpdated",
)

SENDER_NICKNAME = "Sender"
SENDER_COLOR = "blue"
SPAWN = {"x": 480, "y": 320, "direction": "down", "isMoving": False}
VALID_MOVE = {"x": 10, "y": 20, "direction": "up", "isMoving": True}
WATCHER = "<watcher id>"  # replaced by the watcher's player id when the case is sent


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"inner": value}
    return value


@dataclass(frozen=True)
class Case:
    """One kind of bad input: an event with arguments, or a raw Socket.IO packet string."""

    id: str
    event: str | None
    args: tuple[Any, ...] = ()
    channel: str = "error"
    raw: str | None = None


CASES: list[Case] = [
    # non-object payloads
    Case("join-string", "join:space", ("some-space",)),
    Case("join-number", "join:space", (42,)),
    Case("join-array", "join:space", ([{"spaceId": "x", "nickname": "Array"}],)),
    Case("join-null", "join:space", (None,)),
    Case("move-string", "player:move", ("up",)),
    Case("move-number", "player:move", (7,)),
    Case("move-array", "player:move", ([10, 20, "up", True],)),
    Case("move-null", "player:move", (None,)),
    Case("chat-string", "chat:message", ("hello",), "chat:error"),
    Case("chat-number", "chat:message", (12345,), "chat:error"),
    Case("chat-array", "chat:message", (["hello"],), "chat:error"),
    Case("chat-null", "chat:message", (None,), "chat:error"),
    Case("party-create-string", "party:create", ("Crew",), "party:error"),
    Case("party-create-number", "party:create", (3,), "party:error"),
    Case("party-create-array", "party:create", ([{"name": "Crew"}],), "party:error"),
    Case("party-create-null", "party:create", (None,), "party:error"),
    Case("move-no-payload", "player:move", ()),
    # missing fields
    Case("move-missing-y", "player:move", ({"x": 10, "direction": "up", "isMoving": True},)),
    Case("move-missing-direction", "player:move", ({"x": 10, "y": 20, "isMoving": True},)),
    Case("join-missing-space-id", "join:space", ({"nickname": "NoSpace"},)),
    Case("chat-missing-content", "chat:message", ({},), "chat:error"),
    Case("whisper-missing-target", "whisper:send", ({"content": "to whom?"},), "whisper:error"),
    Case("jump-missing-x", "player:jump", ({"y": 5},)),
    Case("party-create-missing-name", "party:create", ({},), "party:error"),
    Case("profile-missing-nickname", "player:updateProfile", ({"avatarColor": "red"},)),
    # wrong types
    Case("move-x-string", "player:move", ({**VALID_MOVE, "x": "100"},)),
    Case("move-is-moving-yes", "player:move", ({**VALID_MOVE, "isMoving": "yes"},)),
    Case("move-is-moving-number", "player:move", ({**VALID_MOVE, "isMoving": 1},)),
    Case("jump-bool-as-number", "player:jump", ({"x": True, "y": 5},)),
    Case("proximity-enabled-1", "proximity:set", ({"enabled": 1},), "proximity:error"),
    Case("proximity-enabled-string", "proximity:set", ({"enabled": "true"},), "proximity:error"),
    Case("chat-content-number", "chat:message", ({"content": 42},), "chat:error"),
    Case("chat-content-object", "chat:message", ({"content": {"text": "hi"}},), "chat:error"),
    Case(
        "whisper-target-number",
        "whisper:send",
        ({"targetId": 7, "content": "hi"},),
        "whisper:error",
    ),
    Case(
        "party-invite-target-object",
        "party:invite",
        ({"partyId": "p-1", "targetId": {"id": WATCHER}},),
        "party:error",
    ),
    Case("profile-nickname-number", "player:updateProfile", ({"nickname": 12},)),
    # huge and non-finite numbers
    Case("move-huge-int", "player:move", ({**VALID_MOVE, "x": 10**30},)),
    Case("move-over-million", "player:move", ({**VALID_MOVE, "x": 1_000_000.5},)),
    Case("move-under-minus-million", "player:move", ({**VALID_MOVE, "y": -1_000_001},)),
    Case("jump-over-million", "player:jump", ({"x": 5, "y": 2_000_000},)),
    Case(
        "move-1e400-raw",
        None,
        raw='2["player:move",{"x":1e400,"y":20,"direction":"up","isMoving":true}]',
    ),
    Case(
        "move-nan-raw",
        None,
        raw='2["player:move",{"x":NaN,"y":20,"direction":"up","isMoving":true}]',
    ),
    Case(
        "move-infinity-raw",
        None,
        raw='2["player:move",{"x":10,"y":-Infinity,"direction":"up","isMoving":true}]',
    ),
    # enums
    Case("move-direction-diagonal", "player:move", ({**VALID_MOVE, "direction": "up-left"},)),
    Case("move-direction-uppercase", "player:move", ({**VALID_MOVE, "direction": "UP"},)),
    # identifiers
    Case("join-space-id-with-space", "join:space", ({"spaceId": "my space", "nickname": "X"},)),
    Case("join-space-id-with-slash", "join:space", ({"spaceId": "a/b", "nickname": "X"},)),
    Case("join-space-id-101", "join:space", ({"spaceId": "s" * 101, "nickname": "X"},)),
    # nicknames
    Case("profile-nickname-empty", "player:updateProfile", ({"nickname": ""},)),
    Case("profile-nickname-blank", "player:updateProfile", ({"nickname": "   "},)),
    Case("profile-nickname-33", "player:updateProfile", ({"nickname": "n" * 33},)),
    Case("profile-nickname-control", "player:updateProfile", ({"nickname": "Bad\x07Name"},)),
    Case("profile-nickname-newline", "player:updateProfile", ({"nickname": "Two\nLines"},)),
    Case("join-nickname-33", "join:space", ({"spaceId": "other-space", "nickname": "n" * 33},)),
    # message content
    Case("chat-content-empty", "chat:message", ({"content": ""},), "chat:error"),
    Case("chat-content-whitespace", "chat:message", ({"content": " \t\n  "},), "chat:error"),
    Case("chat-content-2001", "chat:message", ({"content": "c" * 2001},), "chat:error"),
    Case(
        "whisper-content-2001",
        "whisper:send",
        ({"targetId": WATCHER, "content": "w" * 2001},),
        "whisper:error",
    ),
    Case(
        "chat-as-whisper-empty",
        "chat:message",
        ({"type": "whisper", "targetId": WATCHER, "content": "  "},),
        "whisper:error",
    ),
    Case("party-message-empty", "party:message", ({"content": ""},), "party:error"),
    Case(
        "chat-as-party-2001",
        "chat:message",
        ({"type": "party", "content": "p" * 2001},),
        "party:error",
    ),
    # party names
    Case("party-create-name-51", "party:create", ({"name": "n" * 51},), "party:error"),
    Case("party-create-name-blank", "party:create", ({"name": "   "},), "party:error"),
    Case(
        "party-zone-name-51",
        "party:join",
        ({"partyId": "zone-1", "partyName": "z" * 51},),
        "party:error",
    ),
    # avatars
    Case(
        "profile-avatar-config-unknown-type",
        "player:updateProfile",
        ({"nickname": "Changed", "avatarConfig": {"type": "robot", "colorId": "red"}},),
    ),
    Case(
        "profile-avatar-config-string",
        "player:updateProfile",
        ({"nickname": "Changed", "avatarConfig": "classic:red"},),
    ),
    Case(
        "profile-character-id-51",
        "player:updateProfile",
        ({"nickname": "Changed", "avatarConfig": {"type": "custom", "characterId": "c" * 51}},),
    ),
    Case(
        "join-avatar-config-wrong-shape",
        "join:space",
        ({"spaceId": "other-space", "nickname": "X", "avatarConfig": ["classic", "red"]},),
    ),
    # envelope
    Case(
        "chat-extra-argument",
        "chat:message",
        ({"content": "hi"}, {"content": "again"}),
        "chat:error",
    ),
    Case("move-extra-argument", "player:move", (VALID_MOVE, "extra")),
    Case("chat-deeply-nested", "chat:message", ({"content": nested(200)},), "chat:error"),
    Case("move-deeply-nested", "player:move", ({**VALID_MOVE, "x": nested(200)},)),
    # a well-formed Socket.IO event whose name is a number: no event has such a name
    Case("raw-numeric-event-name", None, raw='2[42,{"content":"hi"}]'),
]

# Packets that are not Socket.IO at all: the protocol says the connection is closed.
MALFORMED_CASES: list[Case] = [
    Case("raw-truncated-json", None, raw='2["chat:message",{"content":"cut'),
    Case("raw-empty-event", None, raw="2[]"),
    Case("raw-null-event-name", None, raw='2[null,{"content":"hi"}]'),
    Case("raw-data-not-array", None, raw='2{"event":"chat:message"}'),
    Case("raw-reserved-event-name", None, raw='2["disconnect"]'),
    Case("raw-bad-ack-id", None, raw='2abc["chat:message",{"content":"hi"}]'),
    Case("raw-unknown-packet-type", None, raw="9hello"),
    Case("raw-number", None, raw="-1"),
]


def substitute(value: Any, watcher_id: str) -> Any:
    if value == WATCHER:
        return watcher_id
    if isinstance(value, dict):
        return {k: substitute(v, watcher_id) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, watcher_id) for v in value]
    return value


async def join_player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    transport: str,
    **fields: Any,
) -> JsClient:
    """A player that joined ``space``, with its own join notices already received."""
    client = await bridge.connected(server.url, transports=[transport])
    await client.join(
        space, nickname, session_token=dev_token(), playerId=unique("player"), **fields
    )
    await client.wait_for("proximity:status")
    await client.wait_for("chat:system", lambda m: m["content"] == f"{nickname} joined")
    return client


async def sender_and_watcher(
    bridge: Bridge, server: ServerProcess, transport: str
) -> tuple[JsClient, JsClient]:
    """The sender (OWNER, blue) and a watcher in a fresh space, everything so far consumed."""
    space = space_id()
    sender = await join_player(
        bridge,
        server,
        space,
        SENDER_NICKNAME,
        transport,
        role="OWNER",
        avatarColor=SENDER_COLOR,
        avatarConfig={"type": "classic", "colorId": SENDER_COLOR},
    )
    watcher = await join_player(bridge, server, space, "Watcher", transport)
    await sender.wait_for("chat:system", lambda m: m["content"] == "Watcher joined")
    sender.consume()
    watcher.consume()
    return sender, watcher


def assert_error_reply(reply: Any, channel: str) -> None:
    """SPEC §8: `error {message, code: "INVALID_PAYLOAD"}`, or `{message}` on an own channel."""
    assert isinstance(reply, dict), reply
    assert isinstance(reply.get("message"), str) and reply["message"].strip(), reply
    if channel == "error":
        assert reply.get("code") == "INVALID_PAYLOAD", reply


async def assert_still_working(sender: JsClient, watcher: JsClient, marker: str) -> None:
    """Both players are connected and a normal chat message goes through, both ways."""
    await sender.emit("chat:message", {"content": f"{marker} from sender"})
    got = await watcher.wait_for("chat:message", lambda m: m["content"] == f"{marker} from sender")
    assert got["senderId"] == sender.player_id
    await watcher.emit("chat:message", {"content": f"{marker} from watcher"})
    await sender.wait_for("chat:message", lambda m: m["content"] == f"{marker} from watcher")
    assert (await sender.state())["connected"] is True
    assert (await watcher.state())["connected"] is True


async def assert_unchanged_for_newcomer(
    bridge: Bridge, server: ServerProcess, sender: JsClient, watcher: JsClient
) -> None:
    """A player joining now sees the sender exactly as it joined: position, nickname, avatar,
    still in the space, and the proximity flag still off."""
    assert sender.space_id is not None
    newcomer = await bridge.connected(server.url)
    joined = await newcomer.join(
        sender.space_id, "Newcomer", session_token=dev_token(), playerId=unique("newcomer")
    )
    players = {p["id"]: p for p in joined["players"]}
    assert set(players) == {sender.player_id, watcher.player_id, newcomer.player_id}, players
    me = players[sender.player_id]
    assert {k: me[k] for k in SPAWN} == SPAWN, me
    assert me["nickname"] == SENDER_NICKNAME, me
    assert me.get("avatarColor") == SENDER_COLOR, me
    assert me.get("avatarConfig", {"type": "classic", "colorId": SENDER_COLOR}) == {
        "type": "classic",
        "colorId": SENDER_COLOR,
    }, me
    assert players[watcher.player_id]["nickname"] == "Watcher"
    assert joined["proximity"] is False
    assert await newcomer.wait_for("proximity:status") == {"enabled": False}


def assert_clean_logs(server: ServerProcess, mark: int, raw_mark: int) -> None:
    """SPEC §8, §11: bad input is never an error-level event and never prints a traceback."""
    errors = server.find_logs(level="error", since=mark)
    assert errors == [], errors
    with_exception = server.find_logs(
        predicate=lambda e: "exception" in (e.get("context") or {}), since=mark
    )
    assert with_exception == [], with_exception
    later = server.raw_lines[raw_mark:]
    assert not [line for _, line in later if "Traceback" in line], later


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input_is_refused_without_side_effects(
    bridge: Bridge, dev_server: ServerProcess, case: Case, transport: str
) -> None:
    """SPEC §8 (bad input: reply on the event's own error channel or `error {message, code:
    "INVALID_PAYLOAD"}`, no state change, nobody else disturbed), §3 (input limits), §6 (content
    rules), §11 (warn E3001, no error-level line, no traceback)."""
    sender, watcher = await sender_and_watcher(bridge, dev_server, transport)
    assert watcher.player_id is not None
    mark, raw_mark = dev_server.mark(), len(dev_server.raw_lines)

    if case.raw is not None:
        await sender.send_raw(case.raw)
    else:
        assert case.event is not None
        await sender.emit(case.event, *substitute(list(case.args), watcher.player_id))

    reply = await sender.wait_for(case.channel, timeout=2)
    assert_error_reply(reply, case.channel)
    await dev_server.wait_for_log(
        code="E3001",
        level="warn",
        predicate=lambda e: (e.get("context") or {}).get("socketId") == sender.sid,
        since=mark,
    )

    await assert_still_working(sender, watcher, case.id)
    await assert_unchanged_for_newcomer(bridge, dev_server, sender, watcher)

    # Exactly one reply, on the right channel only; nothing accepted, nothing relayed.
    await sender.expect_nothing(case.channel, within=0.1)
    for channel in ERROR_CHANNELS:
        if channel != case.channel:
            await sender.expect_nothing(channel, within=0)
    for name in ACCEPTED:
        await sender.expect_nothing(name, within=0)
    for name in RELAYED:
        await watcher.expect_nothing(
            name,
            within=0,
            predicate=lambda p: (
                not (isinstance(p, dict) and str(p.get("content", "")).startswith(case.id))
                and not (isinstance(p, dict) and p.get("content") == "Newcomer joined")
                and not (isinstance(p, dict) and p.get("nickname") == "Newcomer")
            ),
        )
    assert_clean_logs(dev_server, mark, raw_mark)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", MALFORMED_CASES, ids=[c.id for c in MALFORMED_CASES])
async def test_malformed_packet_closes_only_the_senders_connection(
    bridge: Bridge, dev_server: ServerProcess, case: Case, transport: str
) -> None:
    """A packet that is not valid Socket.IO (the protocol says: close the connection) closes
    its sender's connection and nothing else: no reply, nothing relayed or changed, the sender
    leaves the space like any dropped connection, the watcher keeps chatting; counted as
    ``malformedPacket`` in ``/metrics`` and logged E3001 at warn level, never as an error."""
    sender, watcher = await sender_and_watcher(bridge, dev_server, transport)
    mark, raw_mark = dev_server.mark(), len(dev_server.raw_lines)
    before = await abuse_count(dev_server, "malformedPacket")
    assert case.raw is not None

    await sender.send_raw(case.raw)
    reason = await sender.wait_disconnect(timeout=5)
    assert reason in {"transport close", "transport error"}, reason
    assert await watcher.wait_for("player:left") == {"id": sender.player_id}
    assert await abuse_count(dev_server, "malformedPacket") == before + 1
    entry = await dev_server.wait_for_log(  # logged once a minute per address
        code="E3001",
        predicate=lambda e: (e.get("context") or {}).get("reason") == "malformedPacket",
    )
    assert entry["level"] == "warn", entry
    for channel in ERROR_CHANNELS:
        await sender.expect_nothing(channel, within=0)
    for name in ACCEPTED:
        await sender.expect_nothing(name, within=0)
    other = await join_player(bridge, dev_server, watcher.space_id or "", "Other", transport)
    await assert_still_working(other, watcher, case.id)
    assert_clean_logs(dev_server, mark, raw_mark)


# Events carrying binary data: the official client sends each as a binary event with its
# attachments. No event takes binary data, so these close the connection instead of being
# answered.
BINARY_CASES: list[Case] = [
    Case("chat-binary", "chat:message", ({"content": "a file", "file": b"\x00\x01\x02"},)),
    Case("move-binary", "player:move", ({**VALID_MOVE, "blob": b"\xff" * 16},)),
    Case("party-create-binary", "party:create", ({"name": b"Crew"},)),
    Case("join-binary", "join:space", ({"spaceId": "s", "nickname": "Bin", "avatar": b"\x01"},)),
]


async def abuse_count(server: ServerProcess, reason: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200
    return int(response.json()["abuse"].get(reason, 0))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", BINARY_CASES, ids=[c.id for c in BINARY_CASES])
async def test_binary_event_closes_only_the_senders_connection(
    bridge: Bridge, dev_server: ServerProcess, case: Case, transport: str
) -> None:
    """An event with a binary attachment closes its sender's connection before anything of it
    is decoded: no reply, nothing relayed or changed, the sender leaves the space like any
    dropped connection, the watcher stays connected and keeps chatting; counted as
    ``binaryPacket`` in ``/metrics`` (logged E3001 at most once a minute per address), nothing
    logged at error level."""
    sender, watcher = await sender_and_watcher(bridge, dev_server, transport)
    mark, raw_mark = dev_server.mark(), len(dev_server.raw_lines)
    before = await abuse_count(dev_server, "binaryPacket")
    assert case.event is not None

    await sender.emit(case.event, *case.args)
    reason = await sender.wait_disconnect(timeout=5)
    assert reason in {"transport close", "transport error"}, reason
    assert await watcher.wait_for("player:left") == {"id": sender.player_id}
    assert await abuse_count(dev_server, "binaryPacket") == before + 1
    entry = await dev_server.wait_for_log(
        code="E3001", predicate=lambda e: (e.get("context") or {}).get("reason") == "binaryPacket"
    )
    assert entry["level"] == "warn", entry
    for channel in ERROR_CHANNELS:
        await sender.expect_nothing(channel, within=0)
    for name in ACCEPTED:
        await sender.expect_nothing(name, within=0)

    def not_the_departure(p: Any) -> bool:
        return not (
            isinstance(p, dict)
            and (
                p.get("id") == sender.player_id or p.get("content") == "Sender lost the connection"
            )
        )

    for name in RELAYED:
        await watcher.expect_nothing(name, within=0, predicate=not_the_departure)
    await asyncio.sleep(0.1)
    for name in RELAYED:
        await watcher.expect_nothing(name, within=0, predicate=not_the_departure)
    other = await join_player(bridge, dev_server, watcher.space_id or "", "Other", transport)
    await assert_still_working(other, watcher, case.id)
    assert_clean_logs(dev_server, mark, raw_mark)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_events_before_join_are_ignored_without_reply(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §4: events other than `join:space` sent before joining are ignored with no reply,
    however malformed they are, except `proximity:set`, which answers `proximity:error {message:
    "Join a space first"}`; the socket can still join afterwards."""
    space = space_id()
    member = await join_player(bridge, dev_server, space, "Member", "websocket")
    member.consume()
    stranger = await bridge.connected(dev_server.url, transports=[transport])
    mark = dev_server.mark()

    await stranger.emit_many(
        [
            ("player:move", ["not an object"]),
            ("player:move", [{**VALID_MOVE, "x": 10**30}]),
            ("player:jump", [None]),
            ("chat:message", [{"content": ""}]),
            ("chat:message", [{"content": "x" * 2001}]),
            ("whisper:send", [{"content": "psst"}]),
            ("party:create", [{"name": "n" * 51}]),
            ("party:message", [42]),
            ("player:updateProfile", [{"nickname": ""}]),
            ("leave:space", []),
            ("leaveParty", []),
        ]
    )
    await stranger.emit("proximity:set", {"enabled": "yes"})
    error = await stranger.wait_for("proximity:error")
    assert error["message"] == "Join a space first"
    await stranger.emit("proximity:set", {"enabled": True})
    assert (await stranger.wait_for("proximity:error"))["message"] == "Join a space first"

    await stranger.expect_nothing("proximity:error", within=0.2)
    assert set(stranger.event_names()) == {"proximity:error"}, stranger.event_names()
    for name in RELAYED:
        await member.expect_nothing(name, within=0)
    assert dev_server.find_logs(level="error", since=mark) == []

    joined = await stranger.join(
        space, "Stranger", session_token=dev_token(), playerId=unique("stranger")
    )
    assert {p["id"] for p in joined["players"]} == {member.player_id, stranger.player_id}
    assert next(p for p in joined["players"] if p["id"] == stranger.player_id)["x"] == 480


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_join_before_joining_leaves_socket_unjoined(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §8: a malformed `join:space` from a socket that has not joined yet is answered with
    `error {code: "INVALID_PAYLOAD"}` and joins nothing; a correct one afterwards works."""
    space = space_id()
    member = await join_player(bridge, dev_server, space, "Member", "websocket")
    member.consume()
    newcomer = await bridge.connected(dev_server.url, transports=[transport])
    mark = dev_server.mark()
    attempts: list[Any] = [
        {"spaceId": space, "nickname": "n" * 33, "sessionToken": dev_token()},
        {"spaceId": f"{space}/x", "nickname": "Slash", "sessionToken": dev_token()},
        {"spaceId": space, "nickname": "Ctl\x1b[31m", "sessionToken": dev_token()},
        [space, "Array"],
    ]
    for attempt in attempts:
        await newcomer.emit("join:space", attempt)
        assert_error_reply(await newcomer.wait_for("error", timeout=3), "error")

    await newcomer.expect_nothing("room:joined", within=0.2)
    for name in ("player:joined", "chat:system"):
        await member.expect_nothing(name, within=0)
    warned = dev_server.find_logs(
        code="E3001",
        level="warn",
        predicate=lambda e: (e.get("context") or {}).get("socketId") == newcomer.sid,
        since=mark,
    )
    assert len(warned) == len(attempts), warned
    assert dev_server.find_logs(level="error", since=mark) == []

    joined = await newcomer.join(
        space, "Newcomer", session_token=dev_token(), playerId=unique("newcomer")
    )
    assert {p["id"] for p in joined["players"]} == {member.player_id, newcomer.player_id}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_events_are_ignored(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §4: unknown event names are ignored (no reply, nothing relayed, no error log)."""
    sender, watcher = await sender_and_watcher(bridge, dev_server, transport)
    mark = dev_server.mark()
    await sender.emit_many(
        [
            ("no:such:event", [{"x": 1}]),
            ("player:teleport", [{"x": 1, "y": 2}]),
            ("__proto__", [{}]),
            ("constructor", ["x"]),
            ("room:joined", [{"spaceId": "fake", "players": []}]),
            ("chat:system", [{"content": "fake system notice"}]),
            ("x" * 500, [None]),
            # names of the server's own handlers are not events a client can call
            ("*", []),
            ("*", [{"x": 1}]),
            ("recover", []),
            ("recover", [1]),
            ("connected", []),
        ]
    )
    await assert_still_working(sender, watcher, "unknown-events")
    await sender.expect_nothing("player:moved", within=0)
    for channel in ERROR_CHANNELS:
        await sender.expect_nothing(channel, within=0)
    await watcher.expect_nothing(
        "chat:system", within=0.1, predicate=lambda m: m["content"] == "fake system notice"
    )
    await sender.expect_nothing("room:joined", within=0)
    assert dev_server.find_logs(level="error", since=mark) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_flood_of_bad_input_does_not_stall_the_server(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §8: no input, however malformed, may stall the event loop: a burst of 200 bad events
    is answered one by one, and the other player's chat still goes through promptly."""
    sender, watcher = await sender_and_watcher(bridge, dev_server, transport)
    mark = dev_server.mark()
    burst: list[tuple[str, list[Any]]] = []
    for i in range(50):
        burst.append(("player:move", [{**VALID_MOVE, "x": f"{i}"}]))
        burst.append(("chat:message", [{"content": nested(40)}]))
        burst.append(("party:create", [{"name": "n" * (51 + i)}]))
        burst.append(("join:space", [i]))
    await sender.emit_many(burst)
    await asyncio.sleep(0.2)
    assert (await sender.state())["connected"] is True, "the burst disconnected its sender"

    await watcher.emit("chat:message", {"content": "watcher still talks"})
    await sender.wait_for("chat:message", lambda m: m["content"] == "watcher still talks")
    expected = {"error": 100, "chat:error": 50, "party:error": 50}
    for _ in range(100):
        counts = {name: len(sender.received(name)) for name in expected}
        if counts == expected:
            break
        await asyncio.sleep(0.05)
    assert counts == expected, f"replies to the 200 bad events: {counts}"
    await assert_still_working(sender, watcher, "after-flood")
    await assert_unchanged_for_newcomer(bridge, dev_server, sender, watcher)
    warned = dev_server.find_logs(code="E3001", level="warn", since=mark)
    assert len(warned) >= 200, len(warned)
    assert dev_server.find_logs(level="error", since=mark) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_message_over_64_kib_is_refused_by_the_transport(
    bridge: Bridge, start_server: ServerFactory, transport: str
) -> None:
    """SPEC §8: an Engine.IO message over 64 KiB is refused by the transport: the sender is
    disconnected, nothing is relayed (even though the event inside would have been valid), the
    other player stays connected and keeps chatting, and the sender's departure is announced.
    A message just under the limit is delivered normally. No error-level log, no traceback."""
    server = start_server(NODE_ENV="development")
    sender, watcher = await sender_and_watcher(bridge, server, transport)
    mark, raw_mark = server.mark(), len(server.raw_lines)

    await sender.emit("chat:message", {"content": "just under", "padding": "p" * 60_000})
    await watcher.wait_for("chat:message", lambda m: m["content"] == "just under")

    await sender.emit("chat:message", {"content": "oversized", "padding": "p" * 70_000})
    reason = await sender.wait_disconnect(timeout=5)
    assert reason in {"transport close", "transport error"}, reason
    assert (await sender.state())["connected"] is False

    assert await watcher.wait_for("player:left") == {"id": sender.player_id}
    await watcher.expect_nothing(
        "chat:message", within=0.2, predicate=lambda m: m["content"] == "oversized"
    )
    other = await join_player(bridge, server, watcher.space_id or "", "Other", "websocket")
    await other.emit("chat:message", {"content": "still here"})
    await watcher.wait_for("chat:message", lambda m: m["content"] == "still here")
    assert (await watcher.state())["connected"] is True
    await asyncio.sleep(0.3)  # let any late complaint about the refused request be logged
    assert_clean_logs(server, mark, raw_mark)

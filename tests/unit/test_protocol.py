"""Payload validation for every client event (SPEC §3 input limits, §4 payloads, §8 bad input)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from spacesync import protocol
from spacesync.protocol import BadInput

Parser = Callable[[Any], Any]

LONG_ID = "a" * 101
MAX_ID = "a" * 100


def _join(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"spaceId": "space-1", "nickname": "Alice"}
    base.update(fields)
    return base


def _move(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"x": 10, "y": 20, "direction": "left", "isMoving": True}
    base.update(fields)
    return base


def _chat(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"content": "hello"}
    base.update(fields)
    return base


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _party_leave(payload: Any) -> Any:
    return protocol.parse_party_ref(payload, "party:leave", required=False)


def _party_accept(payload: Any) -> Any:
    return protocol.parse_party_ref(payload, "party:accept", required=True)


def _party_decline(payload: Any) -> Any:
    return protocol.parse_party_ref(payload, "party:decline", required=True)


MALFORMED: list[tuple[str, Parser, Any]] = [
    # -- non-object payloads, for every event that carries one --------------------------------
    ("join: null payload", protocol.parse_join, None),
    ("join: list payload", protocol.parse_join, [{"spaceId": "s"}]),
    ("join: string payload", protocol.parse_join, "space-1"),
    ("move: list payload", protocol.parse_move, [1, 2, "up", True]),
    ("move: number payload", protocol.parse_move, 42),
    ("jump: string payload", protocol.parse_jump, "10,20"),
    ("profile: null payload", protocol.parse_profile, None),
    ("chat: string payload", protocol.parse_chat, "hello"),
    ("whisper: list payload", protocol.parse_whisper, ["bob", "hi"]),
    ("party message: bool payload", protocol.parse_party_message, True),
    ("party create: string payload", protocol.parse_party_create, "Raid"),
    ("party invite: null payload", protocol.parse_party_invite, None),
    ("party accept: bare id string", _party_accept, "party-1"),
    ("party decline: null payload", _party_decline, None),
    ("party leave: number payload", _party_leave, 7),
    ("party zone join: list payload", protocol.parse_zone_join, ["zone-1"]),
    ("proximity: bare bool payload", protocol.parse_proximity, True),
    # -- join:space ---------------------------------------------------------------------------
    ("join: spaceId missing", protocol.parse_join, _without(_join(), "spaceId")),
    ("join: spaceId a number", protocol.parse_join, _join(spaceId=123)),
    ("join: spaceId empty", protocol.parse_join, _join(spaceId="")),
    ("join: spaceId 101 chars", protocol.parse_join, _join(spaceId=LONG_ID)),
    ("join: spaceId with a space", protocol.parse_join, _join(spaceId="my space")),
    ("join: spaceId with a slash", protocol.parse_join, _join(spaceId="a/b")),
    ("join: spaceId path traversal", protocol.parse_join, _join(spaceId="../etc")),
    ("join: spaceId non-ASCII", protocol.parse_join, _join(spaceId="café")),
    ("join: playerId 101 chars", protocol.parse_join, _join(playerId=LONG_ID)),
    ("join: spaceId with a trailing newline", protocol.parse_join, _join(spaceId="space-1\n")),
    (
        "join: playerId of 100 chars plus newline",
        protocol.parse_join,
        _join(playerId=MAX_ID + "\n"),
    ),
    ("join: playerId with a space", protocol.parse_join, _join(playerId="bob smith")),
    ("join: playerId with a slash", protocol.parse_join, _join(playerId="bob/1")),
    ("join: playerId an object", protocol.parse_join, _join(playerId={"id": "x"})),
    ("join: nickname a number", protocol.parse_join, _join(nickname=7)),
    ("join: nickname whitespace only", protocol.parse_join, _join(nickname="   ")),
    ("join: nickname 33 chars", protocol.parse_join, _join(nickname="n" * 33)),
    ("join: nickname with NUL", protocol.parse_join, _join(nickname="Ali\x00ce")),
    ("join: nickname with newline", protocol.parse_join, _join(nickname="Ali\nce")),
    ("join: nickname with tab", protocol.parse_join, _join(nickname="Ali\tce")),
    ("join: nickname with ESC", protocol.parse_join, _join(nickname="\x1b[31mAlice")),
    ("join: nickname with DEL", protocol.parse_join, _join(nickname="Ali\x7fce")),
    ("join: avatarColor a number", protocol.parse_join, _join(avatarColor=3)),
    ("join: avatarConfig a string", protocol.parse_join, _join(avatarConfig="classic:red")),
    ("join: avatarConfig a list", protocol.parse_join, _join(avatarConfig=["classic"])),
    ("join: avatarConfig unknown type", protocol.parse_join, _join(avatarConfig={"type": "3d"})),
    (
        "join: avatarConfig without type",
        protocol.parse_join,
        _join(avatarConfig={"colorId": "red"}),
    ),
    (
        "join: custom avatarConfig without characterId",
        protocol.parse_join,
        _join(avatarConfig={"type": "custom"}),
    ),
    (
        "join: custom avatarConfig numeric characterId",
        protocol.parse_join,
        _join(avatarConfig={"type": "custom", "characterId": 12}),
    ),
    (
        "join: custom avatarConfig characterId of 51 chars",
        protocol.parse_join,
        _join(avatarConfig={"type": "custom", "characterId": "c" * 51}),
    ),
    (
        "join: custom avatarConfig blank characterId",
        protocol.parse_join,
        _join(avatarConfig={"type": "custom", "characterId": "  "}),
    ),
    ("join: sessionToken a number", protocol.parse_join, _join(sessionToken=12345)),
    ("join: role a number", protocol.parse_join, _join(role=1)),
    ("join: positionBatching a string", protocol.parse_join, _join(positionBatching="yes")),
    # -- player:move --------------------------------------------------------------------------
    ("move: x missing", protocol.parse_move, _without(_move(), "x")),
    ("move: y missing", protocol.parse_move, _without(_move(), "y")),
    ("move: x a numeric string", protocol.parse_move, _move(x="10")),
    ("move: x is true", protocol.parse_move, _move(x=True)),
    ("move: y is false", protocol.parse_move, _move(y=False)),
    ("move: x is NaN", protocol.parse_move, _move(x=math.nan)),
    ("move: y is +inf", protocol.parse_move, _move(y=math.inf)),
    ("move: x is -inf", protocol.parse_move, _move(x=-math.inf)),
    ("move: x just over 1e6", protocol.parse_move, _move(x=1_000_000.5)),
    ("move: y under -1e6", protocol.parse_move, _move(y=-1_000_001)),
    ("move: x a huge integer", protocol.parse_move, _move(x=10**400)),
    ("move: x null", protocol.parse_move, _move(x=None)),
    ("move: direction unknown", protocol.parse_move, _move(direction="north")),
    ("move: direction upper case", protocol.parse_move, _move(direction="UP")),
    ("move: direction missing", protocol.parse_move, _without(_move(), "direction")),
    ("move: direction a number", protocol.parse_move, _move(direction=1)),
    ("move: isMoving a string", protocol.parse_move, _move(isMoving="true")),
    ("move: isMoving a number", protocol.parse_move, _move(isMoving=1)),
    ("move: isMoving missing", protocol.parse_move, _without(_move(), "isMoving")),
    # -- player:jump --------------------------------------------------------------------------
    ("jump: y missing", protocol.parse_jump, {"x": 1}),
    ("jump: x is NaN", protocol.parse_jump, {"x": math.nan, "y": 0}),
    ("jump: x is true", protocol.parse_jump, {"x": True, "y": 0}),
    ("jump: y over 1e6", protocol.parse_jump, {"x": 0, "y": 2e6}),
    ("jump: x a list", protocol.parse_jump, {"x": [1], "y": 0}),
    # -- player:updateProfile -----------------------------------------------------------------
    ("profile: nickname missing", protocol.parse_profile, {"avatarColor": "red"}),
    ("profile: nickname empty", protocol.parse_profile, {"nickname": ""}),
    ("profile: nickname 33 chars", protocol.parse_profile, {"nickname": "x" * 33}),
    ("profile: nickname with bell", protocol.parse_profile, {"nickname": "Bob\x07"}),
    ("profile: nickname with C1 control", protocol.parse_profile, {"nickname": "Bob\x85x"}),
    ("profile: avatarColor a list", protocol.parse_profile, {"nickname": "Bob", "avatarColor": []}),
    (
        "profile: avatarConfig a number",
        protocol.parse_profile,
        {"nickname": "Bob", "avatarConfig": 5},
    ),
    (
        "profile: custom characterId of 51 chars",
        protocol.parse_profile,
        {"nickname": "Bob", "avatarConfig": {"type": "custom", "characterId": "z" * 51}},
    ),
    # -- chat:message -------------------------------------------------------------------------
    ("chat: content missing", protocol.parse_chat, {}),
    ("chat: content a number", protocol.parse_chat, _chat(content=42)),
    ("chat: content a list", protocol.parse_chat, _chat(content=["hi"])),
    ("chat: content empty", protocol.parse_chat, _chat(content="")),
    ("chat: content whitespace only", protocol.parse_chat, _chat(content=" \t\n ")),
    ("chat: content 2001 chars", protocol.parse_chat, _chat(content="m" * 2001)),
    ("chat: content null", protocol.parse_chat, _chat(content=None)),
    ("chat: unknown type", protocol.parse_chat, _chat(type="shout")),
    ("chat: system type from a client", protocol.parse_chat, _chat(type="system")),
    ("chat: announcement type from a client", protocol.parse_chat, _chat(type="announcement")),
    ("chat: type a number", protocol.parse_chat, _chat(type=1)),
    ("chat: targetId with a space", protocol.parse_chat, _chat(type="whisper", targetId="a b")),
    ("chat: partyId 101 chars", protocol.parse_chat, _chat(type="party", partyId=LONG_ID)),
    ("chat: replyTo a string", protocol.parse_chat, _chat(replyTo="msg-1")),
    (
        "chat: replyTo without id",
        protocol.parse_chat,
        _chat(replyTo={"senderNickname": "a", "content": "b"}),
    ),
    (
        "chat: replyTo content a number",
        protocol.parse_chat,
        _chat(replyTo={"id": "msg-1", "senderNickname": "a", "content": 5}),
    ),
    # -- whisper:send -------------------------------------------------------------------------
    ("whisper: no target at all", protocol.parse_whisper, {"content": "psst"}),
    ("whisper: targetId a number", protocol.parse_whisper, {"targetId": 5, "content": "psst"}),
    (
        "whisper: targetId with a trailing newline",
        protocol.parse_whisper,
        {"targetId": "bob\n", "content": "x"},
    ),
    ("whisper: targetId with a slash", protocol.parse_whisper, {"targetId": "a/b", "content": "x"}),
    (
        "whisper: targetNickname blank",
        protocol.parse_whisper,
        {"targetNickname": " ", "content": "x"},
    ),
    (
        "whisper: targetNickname 33 chars",
        protocol.parse_whisper,
        {"targetNickname": "n" * 33, "content": "x"},
    ),
    ("whisper: content blank", protocol.parse_whisper, {"targetId": "bob", "content": "  "}),
    (
        "whisper: content 2001 chars",
        protocol.parse_whisper,
        {"targetId": "bob", "content": "w" * 2001},
    ),
    # -- party:message ------------------------------------------------------------------------
    ("party message: content missing", protocol.parse_party_message, {"partyId": "p1"}),
    ("party message: content empty", protocol.parse_party_message, {"content": ""}),
    ("party message: partyId with a space", protocol.parse_party_message, _chat(partyId="p 1")),
    # -- party:create -------------------------------------------------------------------------
    ("party create: name missing", protocol.parse_party_create, {}),
    ("party create: name a number", protocol.parse_party_create, {"name": 5}),
    ("party create: name blank", protocol.parse_party_create, {"name": "   "}),
    ("party create: name 51 chars", protocol.parse_party_create, {"name": "p" * 51}),
    ("party create: name with newline", protocol.parse_party_create, {"name": "Raid\nNight"}),
    # -- party:invite -------------------------------------------------------------------------
    ("party invite: targetId missing", protocol.parse_party_invite, {"partyId": "p1"}),
    ("party invite: partyId missing", protocol.parse_party_invite, {"targetId": "bob"}),
    (
        "party invite: targetId a number",
        protocol.parse_party_invite,
        {"partyId": "p", "targetId": 1},
    ),
    (
        "party invite: partyId with a slash",
        protocol.parse_party_invite,
        {"partyId": "p/1", "targetId": "b"},
    ),
    (
        "party invite: targetId 101 chars",
        protocol.parse_party_invite,
        {"partyId": "p", "targetId": LONG_ID},
    ),
    # -- party:accept / party:decline / party:leave -------------------------------------------
    ("party accept: partyId missing", _party_accept, {}),
    ("party accept: partyId a number", _party_accept, {"partyId": 3}),
    ("party decline: partyId empty", _party_decline, {"partyId": ""}),
    ("party leave: partyId with a space", _party_leave, {"partyId": "my party"}),
    # -- party:join (zone) --------------------------------------------------------------------
    ("party zone join: partyId missing", protocol.parse_zone_join, {"partyName": "Lounge"}),
    (
        "party zone join: partyId with a trailing newline",
        protocol.parse_zone_join,
        {"partyId": "z\n"},
    ),
    ("party zone join: partyId with a slash", protocol.parse_zone_join, {"partyId": "z/1"}),
    (
        "party zone join: partyName a number",
        protocol.parse_zone_join,
        {"partyId": "z", "partyName": 1},
    ),
    (
        "party zone join: partyName blank",
        protocol.parse_zone_join,
        {"partyId": "z", "partyName": " "},
    ),
    (
        "party zone join: partyName 51 chars",
        protocol.parse_zone_join,
        {"partyId": "z", "partyName": "n" * 51},
    ),
    # -- proximity:set ------------------------------------------------------------------------
    ("proximity: enabled missing", protocol.parse_proximity, {}),
    ("proximity: enabled a string", protocol.parse_proximity, {"enabled": "true"}),
    ("proximity: enabled a number", protocol.parse_proximity, {"enabled": 1}),
    ("proximity: enabled null", protocol.parse_proximity, {"enabled": None}),
]


@pytest.mark.parametrize(
    ("parser", "payload"),
    [pytest.param(parser, payload, id=name) for name, parser, payload in MALFORMED],
)
def test_malformed_payload_is_bad_input(parser: Parser, payload: Any) -> None:
    """SPEC §3/§8: a payload breaking the input limits is refused with BadInput (never another
    exception), so the sender gets an error reply and no state changes."""
    with pytest.raises(BadInput) as caught:
        parser(payload)
    assert str(caught.value), "the sender must be told what was wrong"


def test_the_malformed_table_has_distinct_cases() -> None:
    """SPEC §8: the bad-input table above covers many distinct payloads across the events."""
    names = [name for name, _, _ in MALFORMED]
    assert len(names) == len(set(names))
    assert len(names) >= 25


# -- accepted payloads and edge cases ------------------------------------------------------------


def test_join_accepts_a_full_payload() -> None:
    """SPEC §4 join:space: every documented field is read."""
    join = protocol.parse_join(
        _join(
            playerId="user_1.a:b@c-d",
            avatarColor="purple",
            avatarConfig={"type": "custom", "characterId": "knight"},
            sessionToken="  dev-abc  ",
            role="STAFF",
            positionBatching=True,
        )
    )
    assert join.space_id == "space-1"
    assert join.player_id == "user_1.a:b@c-d"
    assert join.nickname == "Alice"
    assert join.avatar_color == "purple"
    assert join.avatar_config == {"type": "custom", "characterId": "knight"}
    assert join.session_token == "dev-abc"
    assert join.role == "STAFF"
    assert join.position_batching is True


def test_join_minimal_payload_has_safe_defaults() -> None:
    """SPEC §3/§4: optional fields may be left out; plain protocol unless batching is asked for."""
    join = protocol.parse_join({"spaceId": "s", "nickname": "Bo"})
    assert join.player_id is None
    assert join.avatar_color == "default"
    assert join.avatar_config is None
    assert join.session_token is None
    assert join.position_batching is False


def test_join_ids_of_exactly_100_characters_are_accepted() -> None:
    """SPEC §3: spaceId and playerId may be up to 100 characters."""
    join = protocol.parse_join(_join(spaceId=MAX_ID, playerId="p" * 100))
    assert join.space_id == MAX_ID
    assert join.player_id == "p" * 100


def test_join_nickname_is_trimmed_and_32_characters_fit() -> None:
    """SPEC §3: nickname is 1–32 characters after trimming."""
    assert protocol.parse_join(_join(nickname="   Alice   ")).nickname == "Alice"
    padded = "  " + "n" * 32 + "  "
    assert protocol.parse_join(_join(nickname=padded)).nickname == "n" * 32


@pytest.mark.parametrize(
    "nickname",
    [
        pytest.param("👩‍💻 Dev", id="emoji with zero-width joiner"),
        pytest.param("👨‍👩‍👧", id="family emoji"),
        pytest.param("🏳️‍🌈 Sam", id="flag emoji sequence"),
    ],
)
def test_emoji_sequences_are_not_control_characters(nickname: str) -> None:
    """SPEC §3: nicknames may not contain *control* characters; the zero-width joiner that
    binds an emoji sequence (U+200D, a format character) is not one, so such names are kept."""
    assert protocol.parse_profile({"nickname": nickname}).nickname == nickname
    assert protocol.parse_join(_join(nickname=nickname)).nickname == nickname


def test_join_non_ascii_nickname_is_accepted() -> None:
    """SPEC §3: nicknames are only limited in length and control characters."""
    assert protocol.parse_join(_join(nickname="민수 🎮")).nickname == "민수 🎮"


def test_unknown_avatar_colour_falls_back_to_default() -> None:
    """SPEC §3: an unknown AvatarColor is `default`, not an error."""
    assert protocol.parse_join(_join(avatarColor="turquoise")).avatar_color == "default"
    config = protocol.parse_join(_join(avatarConfig={"type": "classic", "colorId": "gold"}))
    assert config.avatar_config == {"type": "classic", "colorId": "default"}


def test_custom_character_id_of_exactly_50_characters_is_accepted() -> None:
    """SPEC §3: AvatarConfig custom characterId is a string of at most 50 characters."""
    join = protocol.parse_join(_join(avatarConfig={"type": "custom", "characterId": "c" * 50}))
    assert join.avatar_config == {"type": "custom", "characterId": "c" * 50}


def test_a_role_outside_the_enum_is_not_granted() -> None:
    """SPEC §2/§3: role is OWNER, STAFF or PARTICIPANT; anything else grants nothing."""
    assert protocol.parse_join(_join(role="ADMIN")).role is None
    assert protocol.parse_join(_join(role="owner")).role is None


@pytest.mark.parametrize("value", [1_000_000, -1_000_000, 1e6, -1e6, 0, 0.5, -3.25])
def test_move_accepts_coordinates_up_to_one_million(value: float) -> None:
    """SPEC §3: x and y are finite numbers with |value| ≤ 1,000,000 (the bound included)."""
    move = protocol.parse_move(_move(x=value, y=value))
    assert move.x == value
    assert move.y == value


@pytest.mark.parametrize("direction", ["up", "down", "left", "right"])
def test_move_accepts_every_direction(direction: str) -> None:
    """SPEC §3: Direction is up, down, left or right."""
    assert protocol.parse_move(_move(direction=direction)).direction == direction


def test_move_ignores_a_client_sent_id() -> None:
    """SPEC §2/§4: an `id` in player:move is ignored; the move is the sender's own."""
    move = protocol.parse_move(_move(id="someone-else", playerId="another", isMoving=False))
    assert move == protocol.Move(x=10, y=20, direction="left", is_moving=False)
    assert not hasattr(move, "id")


def test_jump_accepts_the_bounds() -> None:
    """SPEC §3/§4 player:jump: {x, y} within ±1,000,000."""
    assert protocol.parse_jump({"x": -1_000_000, "y": 1e6}) == protocol.Jump(-1_000_000, 1e6)


def test_profile_update_keeps_unsent_avatar_fields_unset() -> None:
    """SPEC §4 player:updateProfile: avatarColor and avatarConfig are optional."""
    update = protocol.parse_profile({"nickname": "  Bob  "})
    assert update.nickname == "Bob"
    assert update.avatar_color is None
    assert update.avatar_config is None
    full = protocol.parse_profile(
        {
            "nickname": "Bob",
            "avatarColor": "green",
            "avatarConfig": {"type": "classic", "colorId": "green"},
        }
    )
    assert full.avatar_color == "green"
    assert full.avatar_config == {"type": "classic", "colorId": "green"}


def test_chat_content_of_exactly_2000_characters_is_accepted() -> None:
    """SPEC §3/§6: message content may be 2000 characters."""
    assert protocol.parse_chat(_chat(content="m" * 2000)).content == "m" * 2000


def test_chat_content_is_measured_after_trimming() -> None:
    """SPEC §3/§6: content is trimmed first, so surrounding spaces do not count to the limit."""
    message = protocol.parse_chat(_chat(content="   " + "m" * 2000 + "\n\n"))
    assert message.content == "m" * 2000


def test_chat_content_is_trimmed() -> None:
    """SPEC §6: content is trimmed."""
    assert protocol.parse_chat(_chat(content="  hi there \n")).content == "hi there"


def test_chat_type_defaults_to_message() -> None:
    """SPEC §4 chat:message: `type` defaults to `message`."""
    assert protocol.parse_chat(_chat()).type == "message"
    assert protocol.parse_chat(_chat(type=None)).type == "message"
    assert protocol.chat_type({"content": "x"}) == "message"


@pytest.mark.parametrize("kind", ["whisper", "party"])
def test_chat_type_whisper_and_party_are_routed(kind: str) -> None:
    """SPEC §4: chat:message with type whisper/party behaves as whisper:send/party:message."""
    assert protocol.chat_type({"type": kind, "content": "x"}) == kind
    assert protocol.parse_chat(_chat(type=kind, targetId="bob")).type == kind


def test_chat_type_of_a_malformed_payload_is_plain_message() -> None:
    """SPEC §8: the error channel of malformed chat:message payloads is chat:error."""
    assert protocol.chat_type("not an object") == "message"
    assert protocol.chat_type({"type": 5}) == "message"
    assert protocol.ERROR_CHANNEL["chat:message"] == "chat:error"


def test_chat_reply_to_is_kept_and_its_content_bounded() -> None:
    """SPEC §3: replyTo is {id, senderNickname, content ≤ 100}."""
    message = protocol.parse_chat(
        _chat(replyTo={"id": "msg-1", "senderNickname": "Ann", "content": "r" * 500})
    )
    assert message.reply_to is not None
    wire = message.reply_to.to_wire()
    assert wire["id"] == "msg-1"
    assert wire["senderNickname"] == "Ann"
    assert len(wire["content"]) <= 100


def test_whisper_by_id_or_by_nickname() -> None:
    """SPEC §4 whisper:send: the target is named by id (preferred) or by nickname."""
    by_id = protocol.parse_whisper({"targetId": "bob-1", "content": " psst "})
    assert (by_id.type, by_id.target_id, by_id.content) == ("whisper", "bob-1", "psst")
    by_name = protocol.parse_whisper({"targetNickname": "  Bob ", "content": "psst"})
    assert by_name.target_nickname == "Bob"
    assert by_name.target_id is None


def test_whisper_ignores_a_party_id() -> None:
    """SPEC §4: a whisper is private to its target and never goes to a party."""
    assert (
        protocol.parse_whisper({"targetId": "b", "content": "x", "partyId": "p"}).party_id is None
    )


def test_party_message_without_party_id_means_the_default_party() -> None:
    """SPEC §4 party:message: without partyId the zone party, else the invite party."""
    message = protocol.parse_party_message({"content": "go"})
    assert (message.type, message.party_id) == ("party", None)
    assert protocol.parse_party_message({"content": "go", "partyId": "p-1"}).party_id == "p-1"


def test_party_name_is_trimmed_and_50_characters_fit() -> None:
    """SPEC §3: a party name is 1–50 characters."""
    assert protocol.parse_party_create({"name": "  Raid  "}).name == "Raid"
    assert protocol.parse_party_create({"name": "p" * 50}).name == "p" * 50


def test_party_invite_reads_both_ids() -> None:
    """SPEC §4 party:invite: {partyId, targetId}."""
    invite = protocol.parse_party_invite({"partyId": "party-1", "targetId": "bob"})
    assert (invite.party_id, invite.target_id) == ("party-1", "bob")


def test_party_leave_payload_is_optional() -> None:
    """SPEC §4 party:leave: `{partyId?}`; `leaveParty` sends nothing at all."""
    assert _party_leave(None).party_id is None
    assert _party_leave({}).party_id is None
    assert _party_leave({"partyId": "p-1"}).party_id == "p-1"


def test_zone_join_name_defaults_to_the_id_and_is_trimmed() -> None:
    """SPEC §4 party:join: {partyId, partyName}."""
    assert protocol.parse_zone_join({"partyId": "zone-1"}).party_name == "zone-1"
    join = protocol.parse_zone_join({"partyId": "zone-1", "partyName": "  Lounge "})
    assert (join.party_id, join.party_name) == ("zone-1", "Lounge")


@pytest.mark.parametrize("enabled", [True, False])
def test_proximity_accepts_booleans(enabled: bool) -> None:
    """SPEC §3/§4 proximity:set: `enabled` is a boolean."""
    assert protocol.parse_proximity({"enabled": enabled}).enabled is enabled


@pytest.mark.parametrize(
    ("event", "channel"),
    [
        ("chat:message", "chat:error"),
        ("whisper:send", "whisper:error"),
        ("party:create", "party:error"),
        ("party:invite", "party:error"),
        ("party:accept", "party:error"),
        ("party:decline", "party:error"),
        ("party:leave", "party:error"),
        ("party:message", "party:error"),
        ("party:join", "party:error"),
        ("joinParty", "party:error"),
        ("leaveParty", "party:error"),
        ("proximity:set", "proximity:error"),
    ],
)
def test_bad_input_is_answered_on_the_event_s_own_channel(event: str, channel: str) -> None:
    """SPEC §8: bad input is answered on chat:error, whisper:error, party:error or
    proximity:error; other events fall back to `error`."""
    assert protocol.ERROR_CHANNEL[event] == channel


@pytest.mark.parametrize(
    "event", ["join:space", "player:move", "player:jump", "player:updateProfile"]
)
def test_events_without_an_own_channel_use_the_generic_error(event: str) -> None:
    """SPEC §8: otherwise `error {message, code: "INVALID_PAYLOAD"}`."""
    assert event not in protocol.ERROR_CHANNEL


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((b"raw",), id="bytes payload"),
        pytest.param((bytearray(b"x"),), id="bytearray payload"),
        pytest.param(({"content": memoryview(b"abc")},), id="memoryview inside an object"),
        pytest.param(({"a": [1, {"b": b"deep"}]},), id="bytes nested in a list"),
        pytest.param(({"x": 1}, {"y": 2}), id="two payloads"),
        pytest.param(({"x": 1}, b"extra"), id="payload plus a binary attachment"),
    ],
)
def test_binary_attachments_and_extra_arguments_are_bad_input(args: tuple[Any, ...]) -> None:
    """SPEC §8: events sent with binary attachments are bad input."""
    with pytest.raises(BadInput):
        protocol.check_envelope(args)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (({"x": 1, "y": [1.5, "a", None, True], "z": {"k": "v"}},), None),
        ((), None),
        ((None,), None),
        (("text",), None),
    ],
)
def test_plain_json_payloads_pass_the_envelope_check(args: tuple[Any, ...], expected: Any) -> None:
    """SPEC §8: ordinary JSON payloads (or none) reach the event's own validator unchanged."""
    payload = protocol.check_envelope(args)
    assert payload == (args[0] if args else expected)


def test_absurdly_deep_payloads_are_bad_input_not_a_crash() -> None:
    """SPEC §8: no input, however malformed, may raise an unhandled exception."""
    payload: Any = "leaf"
    for _ in range(10_000):
        payload = [payload]
    with pytest.raises(BadInput):
        protocol.check_envelope((payload,))

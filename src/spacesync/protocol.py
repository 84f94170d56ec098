"""Event names and payload schemas (SPEC §3, §4, §8).

Every client payload is validated here, once, and handed on as a typed object. A validator raises
:class:`BadInput` naming the text to show the sender (``error.input.*`` and a few of chat's and
parties'); handlers render it in the node's language and reply on the event's own error channel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import msgspec
import orjson

from .domain.chat import escape_markup, plain_text
from .domain.identity import (
    AVATAR_COLORS,
    AVATAR_FIELD_RE,
    ROLES,
    AvatarConfig,
    NicknameError,
    clean_nickname,
)
from .domain.moderation import MAX_MUTE_MINUTES, TargetRef, parse_target
from .texts import TextError

ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
# Control characters, line/paragraph separators, and invisible or direction-overriding marks
# (zero-width joiners stay allowed: emoji sequences need them).
CONTROL_RE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
Direction = Literal["up", "down", "left", "right"]
DIRECTIONS = frozenset(get_args(Direction))
MAX_COORD = 1_000_000.0
MAX_CONTENT = 2000
MAX_NICKNAME = 32
MAX_PARTY_NAME = 50
MAX_CHARACTER_ID = 50
MAX_REPLY_CONTENT = 100
MAX_TOKEN = 4096
CHAT_TYPES = frozenset({"message", "whisper", "party"})

# ``connect_error`` texts. Unlike every other text a player may read, these are not in the
# message catalog: a refused connect carries no code, so clients tell refusals apart by this
# text (README documents "Invalid session"), and the FlowSpace client shows its own sentence
# for any connect_error. They stay the same in every LOCALE.
CONNECT_INVALID_SESSION = "Invalid session"
CONNECT_SHUTTING_DOWN = "Server is shutting down"

# Which error event answers bad input for each client event (SPEC §8).
ERROR_CHANNEL: dict[str, str] = {
    "chat:message": "chat:error",
    "whisper:send": "whisper:error",
    "party:create": "party:error",
    "party:invite": "party:error",
    "party:accept": "party:error",
    "party:decline": "party:error",
    "party:leave": "party:error",
    "party:message": "party:error",
    "party:join": "party:error",
    "joinParty": "party:error",
    "leaveParty": "party:error",
    "proximity:set": "proximity:error",
    "reaction:toggle": "reaction:error",
    "recording:start": "recording:error",
    "recording:stop": "recording:error",
    "spotlight:activate": "spotlight:error",
    "spotlight:deactivate": "spotlight:error",
    "object:place": "object:error",
    "object:update": "object:error",
    "object:delete": "object:error",
    "admin:mute": "admin:error",
    "admin:unmute": "admin:error",
    "admin:kick": "admin:error",
    "admin:unban": "admin:error",
    "admin:deleteMessage": "admin:error",
    "admin:announce": "admin:error",
}


class BadInput(TextError, ValueError):
    """A payload that breaks the contract; its text is shown to the sender, its ``str()``
    (English) goes to the logs."""


MAX_DEPTH = 16


def check_envelope(args: tuple[Any, ...]) -> Any:
    """The single payload of an event; binary attachments, extra arguments and absurd nesting are
    refused before any handler sees them."""
    if len(args) > 1:
        raise BadInput("error.input.single_payload")
    payload = args[0] if args else None
    _check_value(payload, 0)
    return payload


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadInput("error.input.too_deep")
    if isinstance(value, bytes | bytearray | memoryview):
        raise BadInput("error.input.binary")
    if isinstance(value, dict):
        for item in value.values():
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


def _object(payload: Any, event: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadInput("error.input.object_payload", event=event)
    return payload


def _optional_object(payload: Any, event: str) -> dict[str, Any]:
    if payload is None:
        return {}
    return _object(payload, event)


def _string(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise BadInput("error.input.required", field=key)
        return None
    if not isinstance(value, str):
        raise BadInput("error.input.not_string", field=key)
    return value


def _identifier(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = _string(data, key, required=required)
    if value is None:
        return None
    if not ID_RE.fullmatch(value):
        raise BadInput("error.input.bad_id", field=key)
    return value


def _text(data: dict[str, Any], key: str, limit: int, *, empty: str, too_long: str) -> str:
    """A required free text, trimmed; ``empty`` and ``too_long`` are the keys of the texts
    that refuse it (they speak of "the message" or "the party name", not of a wire field)."""
    value = (_string(data, key) or "").strip()
    if not value:
        raise BadInput(empty)
    if len(value) > limit:
        raise BadInput(too_long, limit=limit)
    return value


def _nickname(data: dict[str, Any], *, required: bool) -> str | None:
    """A nickname in its neutralised form (see :func:`clean_nickname`): every event that
    carries it to others can then relay it as it is."""
    value = _string(data, "nickname", required=required)
    if value is None:
        return None
    try:
        return clean_nickname(value)
    except NicknameError as exc:
        raise BadInput.of(exc.text) from None


def _coordinate(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("error.input.not_number", field=key)
    if isinstance(value, int) and abs(value) > MAX_COORD:
        raise BadInput("error.input.out_of_range", field=key)
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_COORD:
        raise BadInput("error.input.out_of_range", field=key)
    return value if isinstance(value, int) else number


def _boolean(data: dict[str, Any], key: str, *, required: bool = True) -> bool | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, bool):
        raise BadInput("error.input.not_boolean", field=key)
    return value


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    """Membership that cannot raise: a list or dict is simply not one of the allowed strings."""
    return isinstance(value, str) and value in allowed


def parse_avatar_color(value: Any) -> str:
    """Unknown colours fall back to ``default``; a non-string is bad input."""
    if value is None:
        return "default"
    if not isinstance(value, str):
        raise BadInput("error.input.not_string", field="avatarColor")
    return value if value in AVATAR_COLORS else "default"


def parse_avatar_config(value: Any) -> AvatarConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput("error.input.not_object", field="avatarConfig")
    kind = value.get("type")
    if kind == "classic":
        color = value.get("colorId")
        if isinstance(color, str) and not AVATAR_FIELD_RE.fullmatch(color):
            raise BadInput("error.input.bad_avatar_field", field="avatarConfig.colorId")
        return {"type": "classic", "colorId": parse_avatar_color(color)}
    if kind == "custom":
        character = value.get("characterId")
        if not isinstance(character, str) or not character.strip():
            raise BadInput("error.input.required", field="avatarConfig.characterId")
        if not AVATAR_FIELD_RE.fullmatch(character):
            raise BadInput("error.input.bad_avatar_field", field="avatarConfig.characterId")
        return {"type": "custom", "characterId": character}
    raise BadInput("error.input.avatar_type")


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """A quoted message, as the client describes it (messages are not stored, so it cannot be
    looked up): every field is checked and neutralised like the originals were."""

    id: str
    sender_nickname: str
    content: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "senderNickname": self.sender_nickname, "content": self.content}


def _reply_to(data: dict[str, Any]) -> ReplyTo | None:
    value = data.get("replyTo")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput("error.input.not_object", field="replyTo")
    ident = value.get("id")
    nickname = value.get("senderNickname")
    content = value.get("content")
    if not isinstance(ident, str) or not ID_RE.fullmatch(ident):
        raise BadInput("error.input.bad_id", field="replyTo.id")
    if not isinstance(nickname, str):
        raise BadInput("error.input.not_string", field="replyTo.senderNickname")
    try:
        nickname = clean_nickname(nickname)
    except NicknameError as exc:
        raise BadInput(
            "error.input.field_detail", field="replyTo.senderNickname", detail=exc.text
        ) from None
    if not isinstance(content, str):
        raise BadInput("error.input.not_string", field="replyTo.content")
    if len(content) > MAX_CONTENT:
        raise BadInput("error.input.too_long", field="replyTo.content", limit=MAX_CONTENT)
    # A quote is one line: line breaks and tabs become spaces, then the original's rule applies.
    quoted = " ".join(plain_text(content).split())[:MAX_REPLY_CONTENT].rstrip()
    if not quoted:
        raise BadInput("error.input.no_text", field="replyTo.content")
    return ReplyTo(ident, nickname, escape_markup(quoted))


# --------------------------------------------------------------------------------------------
# Payload types


@dataclass(frozen=True, slots=True)
class JoinSpace:
    space_id: str
    player_id: str | None
    nickname: str | None
    avatar_color: str
    avatar_config: AvatarConfig | None
    session_token: str | None
    role: str | None
    position_batching: bool


# A coordinate as :func:`_coordinate` accepts it, for :class:`Move`'s decoder: an integer stays
# an integer (it is relayed as sent), booleans are not numbers, and JSON has no NaN or infinity.
Coordinate = (
    Annotated[int, msgspec.Meta(ge=-int(MAX_COORD), le=int(MAX_COORD))]
    | Annotated[float, msgspec.Meta(ge=-MAX_COORD, le=MAX_COORD)]
)


class Move(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    rename={"is_moving": "isMoving"},
    gc=False,
):
    """A ``player:move`` payload. Its fields' types are :func:`parse_move`'s rules, which
    :data:`MOVE_EVENT` applies while decoding (see :func:`decode_move_event`)."""

    x: Coordinate
    y: Coordinate
    direction: Direction
    is_moving: bool


@dataclass(frozen=True, slots=True)
class Jump:
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    nickname: str
    avatar_color: str | None
    avatar_config: AvatarConfig | None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    content: str
    type: str
    target_id: str | None
    target_nickname: str | None
    party_id: str | None
    reply_to: ReplyTo | None


@dataclass(frozen=True, slots=True)
class PartyRef:
    party_id: str | None


@dataclass(frozen=True, slots=True)
class PartyCreate:
    name: str


@dataclass(frozen=True, slots=True)
class PartyInvite:
    party_id: str
    target_id: str


@dataclass(frozen=True, slots=True)
class PartyZoneJoin:
    party_id: str
    party_name: str


@dataclass(frozen=True, slots=True)
class ProximitySet:
    enabled: bool


# --------------------------------------------------------------------------------------------
# Validators


def parse_session_token(value: Any) -> str | None:
    """A session token, by the same rule wherever it arrives (``join:space`` or the connect-time
    ``auth``), so that no way in forwards to the app what another refuses: a string, trimmed, at
    most :data:`MAX_TOKEN` characters; empty means none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput("error.input.not_string", field="sessionToken")
    token = value.strip()
    if len(token) > MAX_TOKEN:
        raise BadInput("error.input.token_too_long")
    return token or None


def parse_join(payload: Any) -> JoinSpace:
    data = _object(payload, "join:space")
    token = parse_session_token(data.get("sessionToken"))
    role = data.get("role")
    if role is not None and not isinstance(role, str):
        raise BadInput("error.input.not_string", field="role")
    if role not in ROLES:
        role = None
    batching = data.get("positionBatching", False)
    if not isinstance(batching, bool):
        raise BadInput("error.input.not_boolean", field="positionBatching")
    return JoinSpace(
        space_id=_identifier(data, "spaceId") or "",
        player_id=_identifier(data, "playerId", required=False),
        nickname=_nickname(data, required=False),
        avatar_color=parse_avatar_color(data.get("avatarColor")),
        avatar_config=parse_avatar_config(data.get("avatarConfig")),
        session_token=token,
        role=role,
        position_batching=batching,
    )


def parse_move(payload: Any) -> Move:
    data = _object(payload, "player:move")
    direction = data.get("direction")
    if not _one_of(direction, DIRECTIONS):
        raise BadInput("error.input.direction")
    return Move(
        x=_coordinate(data, "x"),
        y=_coordinate(data, "y"),
        direction=direction,
        is_moving=bool(_boolean(data, "isMoving")),
    )


class _SentMove(Move, frozen=True, gc=False):
    """A ``player:move`` payload as clients send it: :class:`Move`'s four fields, and the
    player's ``id`` that the product's web client adds (a scalar, ignored)."""

    id: str | int | float | bool | None = None


MOVE_EVENT = msgspec.json.Decoder(tuple[Literal["player:move"], _SentMove])
"""The JSON text of a whole ``player:move`` event (``["player:move", {...}]``) with the four
fields and perhaps an ``id``, decoded and checked in one step."""

_NESTED = (dict, list)


def decode_move_event(text: str) -> Move | None:
    """The move carried by the JSON text of a ``player:move`` event (the Socket.IO packet
    without its type digit), or None: the event then takes the ordinary way, which validates
    it again with :func:`parse_move` and answers.

    Accepts exactly the events whose payload is an object of scalars (nothing nested, so the
    envelope check has nothing to refuse) that :func:`parse_move` accepts, with an equal
    :class:`Move`. The usual payload, the four fields with or without an ``id``, is decoded
    by :data:`MOVE_EVENT`; one that carries other fields is decoded again and checked field by
    field."""
    try:
        sent = MOVE_EVENT.decode(text)[1]
        return Move(sent.x, sent.y, sent.direction, sent.is_moving)
    except msgspec.ValidationError:
        pass  # JSON of another shape: perhaps a payload with more fields
    except (msgspec.DecodeError, ValueError):
        return None  # not JSON, or not Unicode (lone surrogates)
    try:
        args = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(args) is not list or len(args) != 2 or args[0] != "player:move":
        return None
    data = args[1]
    if type(data) is not dict or any(type(value) in _NESTED for value in data.values()):
        return None
    try:
        return parse_move(data)
    except BadInput:
        return None


def parse_jump(payload: Any) -> Jump:
    data = _object(payload, "player:jump")
    return Jump(x=_coordinate(data, "x"), y=_coordinate(data, "y"))


def parse_profile(payload: Any) -> ProfileUpdate:
    data = _object(payload, "player:updateProfile")
    color = data.get("avatarColor")
    return ProfileUpdate(
        nickname=_nickname(data, required=True) or "",
        avatar_color=None if color is None else parse_avatar_color(color),
        avatar_config=parse_avatar_config(data.get("avatarConfig")),
    )


def chat_type(payload: Any) -> str:
    """The effective type of a ``chat:message`` (decides its error channel)."""
    if isinstance(payload, dict) and _one_of(payload.get("type"), CHAT_TYPES):
        return str(payload["type"])
    return "message"


def parse_chat(
    payload: Any, *, default_type: str = "message", event: str = "chat:message"
) -> ChatMessage:
    data = _object(payload, event)
    kind = data.get("type", default_type)
    if kind is None:
        kind = default_type
    if not _one_of(kind, CHAT_TYPES):
        raise BadInput("error.input.chat_type")
    target_nickname = _string(data, "targetNickname", required=False)
    if target_nickname is not None:
        try:
            target_nickname = clean_nickname(target_nickname)
        except NicknameError:
            raise BadInput("error.input.invalid", field="targetNickname") from None
    return ChatMessage(
        content=_text(
            data, "content", MAX_CONTENT, empty="error.chat.empty", too_long="error.chat.too_long"
        ),
        type=kind,
        target_id=_identifier(data, "targetId", required=False),
        target_nickname=target_nickname,
        party_id=_identifier(data, "partyId", required=False),
        reply_to=_reply_to(data),
    )


def parse_whisper(payload: Any) -> ChatMessage:
    message = parse_chat(payload, default_type="whisper", event="whisper:send")
    if message.target_id is None and message.target_nickname is None:
        raise BadInput("error.whisper.no_target")
    return ChatMessage(
        message.content,
        "whisper",
        message.target_id,
        message.target_nickname,
        None,
        message.reply_to,
    )


def parse_party_message(payload: Any) -> ChatMessage:
    message = parse_chat(payload, default_type="party", event="party:message")
    return ChatMessage(message.content, "party", None, None, message.party_id, message.reply_to)


def parse_party_create(payload: Any) -> PartyCreate:
    data = _object(payload, "party:create")
    name = _text(
        data,
        "name",
        MAX_PARTY_NAME,
        empty="error.party.name_empty",
        too_long="error.party.name_too_long",
    )
    if CONTROL_RE.search(name):
        raise BadInput("error.party.name_control")
    return PartyCreate(name)


def parse_party_invite(payload: Any) -> PartyInvite:
    data = _object(payload, "party:invite")
    return PartyInvite(
        party_id=_identifier(data, "partyId") or "", target_id=_identifier(data, "targetId") or ""
    )


def parse_party_ref(payload: Any, event: str, *, required: bool) -> PartyRef:
    data = _optional_object(payload, event) if not required else _object(payload, event)
    return PartyRef(_identifier(data, "partyId", required=required))


def parse_zone_join(payload: Any) -> PartyZoneJoin:
    data = _object(payload, "party:join")
    party_id = _identifier(data, "partyId") or ""
    name = data.get("partyName")
    if name is None:
        name = party_id
    if not isinstance(name, str):
        raise BadInput("error.input.not_string", field="partyName")
    name = name.strip()
    if not name or len(name) > MAX_PARTY_NAME or CONTROL_RE.search(name):
        raise BadInput("error.input.length", field="partyName", limit=MAX_PARTY_NAME)
    return PartyZoneJoin(party_id, name)


def parse_proximity(payload: Any) -> ProximitySet:
    data = _object(payload, "proximity:set")
    return ProximitySet(bool(_boolean(data, "enabled")))


# --------------------------------------------------------------------------------------------
# Moderation (admin:*)

MAX_TARGET = 200
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class AdminTarget:
    """``targetMemberId``: ``"nickname:<nick>"`` (neutralised here), ``"user:<id>"``,
    ``"guest:<id>"`` or a bare id (see :mod:`spacesync.domain.moderation`)."""

    target: TargetRef


@dataclass(frozen=True, slots=True)
class AdminMute:
    target: TargetRef
    minutes: float | None
    """``None``: permanent."""
    reason: str | None


@dataclass(frozen=True, slots=True)
class AdminKick:
    target: TargetRef
    ban: bool
    reason: str | None


def _target(data: dict[str, Any]) -> TargetRef:
    raw = (_string(data, "targetMemberId") or "").strip()
    if not raw or len(raw) > MAX_TARGET:
        raise BadInput("error.input.length", field="targetMemberId", limit=MAX_TARGET)
    ref = parse_target(raw)
    if ref.kind == "nickname":
        try:
            return TargetRef("nickname", clean_nickname(ref.value))
        except NicknameError:
            raise BadInput("error.input.invalid", field="targetMemberId") from None
    if not ID_RE.fullmatch(ref.value):
        raise BadInput("error.input.bad_id", field="targetMemberId")
    return ref


def _reason(data: dict[str, Any]) -> str | None:
    """An optional reason, trimmed and neutralised: it is relayed to the whole space."""
    value = _string(data, "reason", required=False)
    if value is None:
        return None
    if len(value) > MAX_REASON:
        raise BadInput("error.input.too_long", field="reason", limit=MAX_REASON)
    if CONTROL_RE.search(value):
        raise BadInput("error.input.invalid", field="reason")
    text = " ".join(escape_markup(plain_text(value)).split())
    return text or None


def parse_admin_target(payload: Any, event: str) -> AdminTarget:
    return AdminTarget(_target(_object(payload, event)))


def parse_admin_mute(payload: Any) -> AdminMute:
    """``duration`` in minutes; absent, null or 0 means permanent, as in the original."""
    data = _object(payload, "admin:mute")
    target = _target(data)
    duration = data.get("duration")
    minutes: float | None = None
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise BadInput("error.input.not_number", field="duration")
        if not math.isfinite(duration) or duration < 0 or duration > MAX_MUTE_MINUTES:
            raise BadInput("error.admin.duration", minutes=MAX_MUTE_MINUTES)
        minutes = float(duration) if duration else None
        if minutes is not None and minutes < 1:
            raise BadInput("error.admin.duration", minutes=MAX_MUTE_MINUTES)
    return AdminMute(target, minutes, _reason(data))


def parse_admin_kick(payload: Any) -> AdminKick:
    data = _object(payload, "admin:kick")
    target = _target(data)
    ban = _boolean(data, "ban", required=False)
    return AdminKick(target, bool(ban), _reason(data))


def parse_admin_delete(payload: Any) -> str:
    """The ``messageId`` (a database id, as ``chat:messageIdUpdate`` gave it)."""
    return _identifier(_object(payload, "admin:deleteMessage"), "messageId") or ""


def parse_admin_announce(payload: Any) -> str:
    """The announcement as typed (trimmed); neutralised by the handler like chat."""
    return _text(
        _object(payload, "admin:announce"),
        "content",
        MAX_CONTENT,
        empty="error.admin.announcement_empty",
        too_long="error.chat.too_long",
    )


# --------------------------------------------------------------------------------------------
# Reactions, recording, spotlight, map objects

REACTION_TYPES = frozenset({"thumbsup", "heart", "check"})
"""The reactions FlowSpace's client offers (``ReactionType``); it draws nothing for others."""
ROTATIONS = (0, 90, 180, 270)
MAX_GRID = 100_000
"""Grid cells from the origin an object may sit at: far beyond any map, and well inside the
32-bit ``Int`` columns of ``MapObject``."""
MAX_CUSTOM_DATA = 4096
"""Bytes of ``customData`` (as compact JSON): FlowSpace keeps a pair's type and role there."""
MAX_CUSTOM_DEPTH = 4
MAX_CUSTOM_KEY = 64


@dataclass(frozen=True, slots=True)
class ReactionToggle:
    message_id: str
    type: str


@dataclass(frozen=True, slots=True)
class ObjectPlace:
    asset_id: str
    x: int
    y: int
    rotation: int
    linked_object_id: str | None
    custom_data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ObjectUpdate:
    object_id: str
    position: tuple[int, int] | None
    rotation: int | None
    linked_object_id: str | None
    """Meaningful only when :attr:`link_given`: ``None`` then unlinks."""
    link_given: bool
    custom_data: dict[str, Any] | None
    """``None`` leaves the data as it is (as the original, which ignored a null)."""


def parse_reaction(payload: Any) -> ReactionToggle:
    data = _object(payload, "reaction:toggle")
    message_id = _identifier(data, "messageId") or ""
    kind = data.get("type")
    if not _one_of(kind, REACTION_TYPES):
        raise BadInput("error.input.invalid", field="type")
    return ReactionToggle(message_id, str(kind))


def parse_no_fields(payload: Any, event: str) -> None:
    """``recording:*`` and ``spotlight:*`` carry nothing (the client sends ``{}``); a payload
    that is not an object is still refused, so the contract stays one object or nothing."""
    _optional_object(payload, event)


def _grid(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("error.input.not_number", field=field)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise BadInput("error.input.invalid", field=field)
    number = int(value)
    if abs(number) > MAX_GRID:
        raise BadInput("error.input.out_of_range", field=field)
    return number


def _position(data: dict[str, Any]) -> tuple[int, int] | None:
    value = data.get("position")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput("error.input.not_object", field="position")
    return _grid(value.get("x"), "position.x"), _grid(value.get("y"), "position.y")


def _rotation(data: dict[str, Any]) -> int | None:
    value = data.get("rotation")
    if value is None:
        return None
    if isinstance(value, bool) or value not in ROTATIONS:
        raise BadInput("error.input.invalid", field="rotation")
    return int(value)


def _custom_value(value: Any, depth: int) -> None:
    if depth > MAX_CUSTOM_DEPTH:
        raise BadInput("error.input.too_deep")
    if isinstance(value, str):
        if CONTROL_RE.search(value):
            raise BadInput("error.input.invalid", field="customData")
    elif isinstance(value, dict):
        for name, item in value.items():
            if len(name) > MAX_CUSTOM_KEY or CONTROL_RE.search(name):
                raise BadInput("error.input.invalid", field="customData")
            _custom_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _custom_value(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise BadInput("error.input.invalid", field="customData")


def _custom_data(data: dict[str, Any]) -> dict[str, Any] | None:
    """Free JSON the client interprets (a portal's pair role...), relayed to every player and
    stored in a JSONB column: an object, bounded in size and depth, without control
    characters in its strings."""
    value = data.get("customData")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput("error.input.not_object", field="customData")
    _custom_value(value, 1)
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        raise BadInput("error.input.invalid", field="customData") from None
    if size > MAX_CUSTOM_DATA:
        raise BadInput("error.input.too_long", field="customData", limit=MAX_CUSTOM_DATA)
    return value


def parse_object_place(payload: Any) -> ObjectPlace:
    data = _object(payload, "object:place")
    position = _position(data)
    if position is None:
        raise BadInput("error.input.required", field="position")
    return ObjectPlace(
        asset_id=_identifier(data, "assetId") or "",
        x=position[0],
        y=position[1],
        rotation=_rotation(data) or 0,
        linked_object_id=_identifier(data, "linkedObjectId", required=False),
        custom_data=_custom_data(data),
    )


def parse_object_update(payload: Any) -> ObjectUpdate:
    data = _object(payload, "object:update")
    link_given = "linkedObjectId" in data
    link = data.get("linkedObjectId")
    if link == "":
        link = None  # the original unlinks on an empty id as on null
    elif link is not None:
        link = _identifier(data, "linkedObjectId")
    return ObjectUpdate(
        object_id=_identifier(data, "objectId") or "",
        position=_position(data),
        rotation=_rotation(data),
        linked_object_id=link,
        link_given=link_given,
        custom_data=_custom_data(data),
    )


def parse_object_delete(payload: Any) -> str:
    data = _object(payload, "object:delete")
    return _identifier(data, "objectId") or ""

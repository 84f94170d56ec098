"""Who a socket is: identities, roles and the avatar mapping (SPEC §2, §3)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict

from ..texts import TextError
from .auth import user_id_of
from .chat import escape_markup, plain_text

AVATAR_COLORS = frozenset({"default", "red", "green", "purple", "orange", "pink", "yellow", "blue"})
# Avatar fields name assets on the client (a sprite sheet, a colour); anything else would be
# relayed to every other client verbatim.
AVATAR_FIELD_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")
MAX_NICKNAME = 32
MAX_RAW_NICKNAME = 256
"""Longer input is refused before any normalising work is spent on it."""
# The names the server's own notices go out under (``senderNickname`` of ``chat:system``, in
# the languages clients show) and staff titles: a player under one of them could pass their
# chat for an announcement. Compared case-folded, after normalising, ignoring spaces.
RESERVED_NICKNAMES = frozenset(
    {"system", "시스템", "admin", "administrator", "관리자", "운영자", "moderator", "server"}
)
# Characters that draw nothing (or only blank space) but are letters or symbols, so the
# category test below does not catch them: Hangul fillers, the braille blank, the combining
# grapheme joiner, the Khmer inherent vowels and the Mongolian vowel separator.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e")
_ZWJ = "\u200d"
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_SUFFIX_RE = re.compile(r" \((\d{1,3})\)$")
ROLES = ("OWNER", "STAFF", "PARTICIPANT")
PRIVILEGED_ROLES = frozenset({"OWNER", "STAFF"})
Role = Literal["OWNER", "STAFF", "PARTICIPANT"]


class ClassicAvatar(TypedDict):
    type: Literal["classic"]
    colorId: str


class CustomAvatar(TypedDict):
    type: Literal["custom"]
    characterId: str


AvatarConfig = ClassicAvatar | CustomAvatar


def avatar_from_app(value: Any) -> tuple[str, AvatarConfig | None]:
    """Map the app's ``avatar`` answer to ``(avatarColor, avatarConfig)`` (SPEC §2.1).

    ``"red"`` and ``"classic:red"`` give a classic avatar of that colour; ``"custom:<id>"`` a custom
    character with the ``default`` colour (``<id>`` being 1–50 of ``A-Z a-z 0-9 _ -``); anything
    else, an invalid custom avatar included, gives ``default`` and no config.
    """
    if not isinstance(value, str):
        return "default", None
    text = value.strip()
    if text in AVATAR_COLORS:
        return text, {"type": "classic", "colorId": text}
    kind, sep, rest = text.partition(":")
    if sep and kind == "classic" and rest in AVATAR_COLORS:
        return rest, {"type": "classic", "colorId": rest}
    if sep and kind == "custom" and AVATAR_FIELD_RE.fullmatch(rest):
        return "default", {"type": "custom", "characterId": rest}
    return "default", None


class NicknameError(TextError, ValueError):
    """A nickname that cannot be used; its text is shown to the sender (in the node's
    language), its ``str()`` is English for the logs."""


def _joins_emoji(text: str, index: int) -> bool:
    """Whether the zero-width joiner at ``index`` binds two emoji (``👩‍💻``, ``🏳️‍🌈``): there
    it draws one picture; anywhere else it is invisible and only makes two names look alike."""
    if index == 0 or index + 1 >= len(text):
        return False
    before, after = text[index - 1], text[index + 1]
    before_ok = before == "\ufe0f" or unicodedata.category(before) in ("So", "Sk")
    return before_ok and unicodedata.category(after) == "So"


def _visible(text: str) -> str:
    """``text`` NFKC-normalised, with invisible characters dropped and whitespace collapsed.

    Dropped: every control, format, private-use and unassigned character (this covers the
    direction overrides and isolates, the zero-width space and joiners, the byte-order mark and
    the word joiner) and the blank letters above; any run of whitespace becomes one space.
    NFKC comes first so that full-width ``＜`` and ``＞`` become markup the next step removes.
    """
    text = unicodedata.normalize("NFKC", text)
    kept: list[str] = []
    for index, char in enumerate(text):
        if char.isspace():
            kept.append(" ")
        elif char in _BLANK_LETTERS:
            continue
        elif unicodedata.category(char)[0] in ("C", "Z") and char != " ":
            if char == _ZWJ and _joins_emoji(text, index):
                kept.append(char)
        else:
            kept.append(char)
    return " ".join("".join(kept).split())


def _plain_nickname(value: str) -> str:
    """The text a reader sees of a nickname, before escaping."""
    text = _visible(value)
    return " ".join(plain_text(text).split())


def nickname_key(nickname: str) -> str:
    """What two nicknames must share to be "the same name" (case-insensitive, ignoring
    variation selectors); equal for a raw name and its neutralised form."""
    plain = _VARIATION_SELECTORS.sub("", _plain_nickname(nickname)).replace(_ZWJ, "")
    return unicodedata.normalize("NFKC", plain.casefold())


def clean_nickname(value: str, *, lenient: bool = False) -> str:
    """The neutralised form of a nickname, the only form the server keeps and relays.

    NFKC-normalised, invisible characters dropped, whitespace collapsed, HTML tags removed and
    ``& < > " '`` escaped (the rule chat content follows); 1–32 characters of visible text, and
    not a reserved name. A control character (tab and newline included) is refused, as SPEC §3
    has it: a client sending one is broken or probing. ``lenient`` drops controls and shortens
    an over-long name instead (for names the app supplies, which the player cannot change
    here). Applying it to its own output gives the same string.
    """
    if len(value) > MAX_RAW_NICKNAME:
        raise NicknameError("error.nickname.too_long", limit=MAX_NICKNAME)
    if not lenient and any(unicodedata.category(char) == "Cc" for char in value):
        raise NicknameError("error.nickname.control")
    plain = _plain_nickname(value)
    if len(plain) > MAX_NICKNAME:
        if not lenient:
            raise NicknameError("error.nickname.too_long", limit=MAX_NICKNAME)
        plain = plain[:MAX_NICKNAME].rstrip()
    if not plain:
        raise NicknameError("error.nickname.no_text")
    if nickname_key(plain).replace(" ", "") in RESERVED_NICKNAMES:
        raise NicknameError("error.nickname.reserved")
    return escape_markup(plain)


def distinct_nickname(nickname: str, taken: Collection[str]) -> str:
    """``nickname``, or ``nickname (2)``, ``(3)``... the first whose :func:`nickname_key` is not
    in ``taken`` (the keys of the other players' names). The suffix replaces the end of a long
    name so the result stays within 32 characters."""
    if nickname_key(nickname) not in taken:
        return nickname
    plain = _SUFFIX_RE.sub("", _plain_nickname(nickname)) or _plain_nickname(nickname)
    for number in range(2, len(taken) + 3):
        suffix = f" ({number})"
        candidate = plain[: MAX_NICKNAME - len(suffix)].rstrip() + suffix
        if nickname_key(candidate) not in taken:
            return escape_markup(candidate)
    return nickname  # unreachable: len(taken) + 1 suffixes cannot all be taken


def nickname_candidates(nickname: str, count: int) -> list[str]:
    """``nickname`` then ``nickname (2)``, ``(3)``... (``count`` names in all), in the order
    :func:`distinct_nickname` tries them: for a store that picks the first free one itself."""
    plain = _SUFFIX_RE.sub("", _plain_nickname(nickname)) or _plain_nickname(nickname)
    names = [nickname]
    for number in range(2, count + 1):
        suffix = f" ({number})"
        names.append(escape_markup(plain[: MAX_NICKNAME - len(suffix)].rstrip() + suffix))
    return names


def same_name_with_suffix(current: str, requested: str) -> bool:
    """Whether ``current`` is what :func:`distinct_nickname` made of ``requested``."""
    match = _SUFFIX_RE.search(_plain_nickname(current))
    if match is None:
        return False
    suffix = match.group(0)
    plain = _SUFFIX_RE.sub("", _plain_nickname(requested)) or _plain_nickname(requested)
    candidate = plain[: MAX_NICKNAME - len(suffix)].rstrip() + suffix
    return nickname_key(candidate) == nickname_key(current)


def anonymous_player_id() -> str:
    return f"dev-anon-{secrets.token_hex(6)}"


def token_user_id(token: str | None) -> str | None:
    """The user id of an ``auth-<userId>`` token (signed or not), else ``None``."""
    return user_id_of(token)


@dataclass(frozen=True, slots=True)
class Identity:
    """The server-derived identity bound to a socket; client-sent ids never override it."""

    player_id: str
    nickname: str
    avatar_color: str = "default"
    avatar_config: AvatarConfig | None = None
    role: str = "PARTICIPANT"
    session_token: str | None = None
    user_id: str | None = None
    verified: bool = False
    guest_session_id: str | None = None
    """The ``GuestSession.id`` of a guest (never the token, which is a credential): what
    persisted rows name a guest by."""

    @property
    def privileged(self) -> bool:
        return self.role in PRIVILEGED_ROLES

    def to_dict(self) -> dict[str, Any]:
        return {
            "playerId": self.player_id,
            "nickname": self.nickname,
            "avatarColor": self.avatar_color,
            "avatarConfig": self.avatar_config,
            "role": self.role,
            "sessionToken": self.session_token,
            "userId": self.user_id,
            "verified": self.verified,
            "guestSessionId": self.guest_session_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        return cls(
            player_id=data["playerId"],
            nickname=data["nickname"],
            avatar_color=data.get("avatarColor", "default"),
            avatar_config=data.get("avatarConfig"),
            role=data.get("role", "PARTICIPANT"),
            session_token=data.get("sessionToken"),
            user_id=data.get("userId"),
            verified=bool(data.get("verified", False)),
            guest_session_id=data.get("guestSessionId"),
        )

    def with_profile(
        self, nickname: str, avatar_color: str | None, avatar_config: AvatarConfig | None
    ) -> Identity:
        return replace(
            self,
            nickname=nickname,
            avatar_color=self.avatar_color if avatar_color is None else avatar_color,
            avatar_config=self.avatar_config if avatar_config is None else avatar_config,
        )


@dataclass(frozen=True, slots=True)
class Verification:
    """What the app said about a session token."""

    participant_id: str
    nickname: str | None
    avatar_color: str
    avatar_config: AvatarConfig | None
    role: str
    user_id: str | None
    avatar_given: bool = False
    """Whether the app answered with an ``avatar`` at all (else the client's choice stands)."""
    role_given: bool = False
    """Whether the app named a role (then it outranks the database's, see ``rank_role``)."""

    @classmethod
    def from_answer(cls, body: Any) -> Verification | None:
        """Parse a ``/api/guest/verify`` body; ``None`` when it does not say the token is valid."""
        if not isinstance(body, dict) or body.get("valid") is False:
            return None
        participant = body.get("participantId")
        if isinstance(participant, int) and not isinstance(participant, bool):
            participant = str(participant)
        if not isinstance(participant, str) or not participant.strip():
            return None
        participant = participant.strip()
        if len(participant) > 100:
            return None
        nickname = body.get("nickname")
        if isinstance(nickname, str):
            # The app's names are relayed like any other: an unusable one is as good as none.
            try:
                nickname = clean_nickname(nickname, lenient=True)
            except NicknameError:
                nickname = None
        else:
            nickname = None
        color, config = avatar_from_app(body.get("avatar"))
        role = body.get("role")
        role_given = isinstance(role, str) and role in ROLES
        if not isinstance(role, str) or role not in ROLES:
            role = "PARTICIPANT"
        user_id = body.get("userId")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            user_id = None
        avatar_given = body.get("avatar") is not None
        return cls(participant, nickname, color, config, role, user_id, avatar_given, role_given)

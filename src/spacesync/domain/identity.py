"""Who a socket is: identities, roles and the avatar mapping (SPEC §2, §3)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict

AVATAR_COLORS = frozenset({"default", "red", "green", "purple", "orange", "pink", "yellow", "blue"})
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
    character with the ``default`` colour; anything else gives ``default`` and no config.
    """
    if not isinstance(value, str):
        return "default", None
    text = value.strip()
    if text in AVATAR_COLORS:
        return text, {"type": "classic", "colorId": text}
    kind, sep, rest = text.partition(":")
    if sep and kind == "classic" and rest in AVATAR_COLORS:
        return rest, {"type": "classic", "colorId": rest}
    if sep and kind == "custom" and 0 < len(rest) <= 50:
        return "default", {"type": "custom", "characterId": rest}
    return "default", None


def anonymous_player_id() -> str:
    return f"dev-anon-{secrets.token_hex(6)}"


def token_user_id(token: str | None) -> str | None:
    """The user id of an ``auth-<userId>`` token, else ``None``."""
    if token and token.startswith("auth-") and len(token) > len("auth-"):
        return token[len("auth-") :]
    return None


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
        if not isinstance(nickname, str) or not nickname.strip():
            nickname = None
        else:
            nickname = nickname.strip()[:32]
        color, config = avatar_from_app(body.get("avatar"))
        role = body.get("role")
        if not isinstance(role, str) or role not in ROLES:
            role = "PARTICIPANT"
        user_id = body.get("userId")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            user_id = None
        avatar_given = body.get("avatar") is not None
        return cls(participant, nickname, color, config, role, user_id, avatar_given)

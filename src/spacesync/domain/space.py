"""Players in a space and their positions (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .identity import Identity

SPAWN_X = 480
SPAWN_Y = 320
SPAWN_DIRECTION = "down"


@dataclass(slots=True)
class PlayerState:
    """One player present in one space, bound to exactly one live socket."""

    identity: Identity
    sid: str
    joined_at: float
    x: float = SPAWN_X
    y: float = SPAWN_Y
    direction: str = SPAWN_DIRECTION
    is_moving: bool = False

    @property
    def id(self) -> str:
        return self.identity.player_id

    def position(self) -> dict[str, Any]:
        """A ``PlayerPosition`` with the avatar fields (``room:joined``, ``player:joined``)."""
        identity = self.identity
        data: dict[str, Any] = {
            "id": identity.player_id,
            "nickname": identity.nickname,
            "x": self.x,
            "y": self.y,
            "direction": self.direction,
            "isMoving": self.is_moving,
            "avatarColor": identity.avatar_color,
        }
        if identity.avatar_config is not None:
            data["avatarConfig"] = identity.avatar_config
        return data

    def to_dict(self) -> dict[str, Any]:
        """Everything about the player, JSON-ready (for a shared store)."""
        return {
            "identity": self.identity.to_dict(),
            "sid": self.sid,
            "joinedAt": self.joined_at,
            "x": self.x,
            "y": self.y,
            "direction": self.direction,
            "isMoving": self.is_moving,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlayerState:
        return cls(
            identity=Identity.from_dict(data["identity"]),
            sid=data["sid"],
            joined_at=float(data["joinedAt"]),
            x=data["x"],
            y=data["y"],
            direction=data["direction"],
            is_moving=bool(data["isMoving"]),
        )

    def moved(self) -> dict[str, Any]:
        """The ``player:moved`` payload: position without avatar fields."""
        return {
            "id": self.identity.player_id,
            "nickname": self.identity.nickname,
            "x": self.x,
            "y": self.y,
            "direction": self.direction,
            "isMoving": self.is_moving,
        }

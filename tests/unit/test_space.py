"""Players in a space and the position payloads sent about them (SPEC §3, §4, §5)."""

from __future__ import annotations

from spacesync.domain.identity import Identity
from spacesync.domain.space import PlayerState

T0 = 1_700_000_000.0
POSITION_KEYS = {"id", "nickname", "x", "y", "direction", "isMoving"}


def test_a_new_player_state_is_at_the_spawn_point() -> None:
    """SPEC §3: new players spawn at x = 480, y = 320, facing down, not moving."""
    player = PlayerState(Identity("ann", "Ann"), "sid-1", T0)
    assert (player.x, player.y, player.direction, player.is_moving) == (480, 320, "down", False)
    assert player.id == "ann"


def test_position_carries_the_avatar_fields() -> None:
    """SPEC §3/§5: PlayerPosition in room:joined and player:joined includes the avatar."""
    identity = Identity(
        "ann", "Ann", avatar_color="red", avatar_config={"type": "classic", "colorId": "red"}
    )
    position = PlayerState(identity, "sid-1", T0).position()
    assert position == {
        "id": "ann",
        "nickname": "Ann",
        "x": 480,
        "y": 320,
        "direction": "down",
        "isMoving": False,
        "avatarColor": "red",
        "avatarConfig": {"type": "classic", "colorId": "red"},
    }


def test_position_without_avatar_config_leaves_it_out() -> None:
    """SPEC §3: avatarConfig is optional in PlayerPosition."""
    position = PlayerState(Identity("ann", "Ann"), "sid-1", T0).position()
    assert "avatarConfig" not in position
    assert position["avatarColor"] == "default"


def test_moved_payload_has_no_avatar_fields() -> None:
    """SPEC §4 player:move: the others receive {id, nickname, x, y, direction, isMoving}."""
    identity = Identity(
        "ann", "Ann", avatar_color="red", avatar_config={"type": "custom", "characterId": "cat"}
    )
    player = PlayerState(identity, "sid-1", T0, x=1.5, y=-2, direction="up", is_moving=True)
    assert player.moved() == {
        "id": "ann",
        "nickname": "Ann",
        "x": 1.5,
        "y": -2,
        "direction": "up",
        "isMoving": True,
    }
    assert set(player.moved()) == POSITION_KEYS


def test_payloads_never_leak_the_session_token() -> None:
    """SPEC §2: the session token is part of the identity, never of what others receive."""
    identity = Identity("ann", "Ann", session_token="guest-secret-token", user_id="u-1")
    player = PlayerState(identity, "sid-1", T0)
    for payload in (player.position(), player.moved()):
        assert "guest-secret-token" not in str(payload)
        assert "sid-1" not in str(payload)

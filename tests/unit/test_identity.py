"""Identities: the app's verification answer and the avatar mapping (SPEC §2.1, §3)."""

from __future__ import annotations

from typing import Any

import pytest

from spacesync.domain.identity import (
    AVATAR_COLORS,
    Identity,
    Verification,
    anonymous_player_id,
    avatar_from_app,
    token_user_id,
)
from spacesync.protocol import ID_RE

COLORS = ["default", "red", "green", "purple", "orange", "pink", "yellow", "blue"]


def test_the_colour_palette_is_the_documented_one() -> None:
    """SPEC §3: AvatarColor is default | red | green | purple | orange | pink | yellow | blue."""
    assert set(COLORS) == AVATAR_COLORS


# -- avatar mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("color", COLORS)
def test_a_bare_colour_is_a_classic_avatar(color: str) -> None:
    """SPEC §2.1: a bare valid colour ⇒ that colour, classic config."""
    assert avatar_from_app(color) == (color, {"type": "classic", "colorId": color})


@pytest.mark.parametrize("color", COLORS)
def test_classic_prefix_gives_a_classic_avatar(color: str) -> None:
    """SPEC §2.1: `classic:<colour>` ⇒ that colour, classic config."""
    assert avatar_from_app(f"classic:{color}") == (color, {"type": "classic", "colorId": color})


def test_custom_prefix_gives_a_custom_character() -> None:
    """SPEC §2.1: `custom:<id>` ⇒ custom config with that characterId, colour `default`."""
    assert avatar_from_app("custom:knight-07") == (
        "default",
        {"type": "custom", "characterId": "knight-07"},
    )


def test_custom_character_of_50_characters_is_kept() -> None:
    """SPEC §3: characterId is a string of at most 50 characters."""
    character = "c" * 50
    assert avatar_from_app(f"custom:{character}")[1] == {"type": "custom", "characterId": character}


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "turquoise",
        "RED",
        "classic:",
        "classic:turquoise",
        "custom:",
        "custom:" + "c" * 51,
        "sprite:red",
        42,
        True,
        ["red"],
        {"type": "classic", "colorId": "red"},
    ],
)
def test_anything_else_is_the_default_avatar(value: Any) -> None:
    """SPEC §2.1: anything else ⇒ `default` (and no config that breaks §3's shapes)."""
    color, config = avatar_from_app(value)
    assert color == "default"
    assert config is None or config == {"type": "classic", "colorId": "default"}


# -- verification answers -----------------------------------------------------------------------


def test_a_full_answer_becomes_the_identity() -> None:
    """SPEC §2.1: participantId becomes playerId; nickname, avatar, role and userId are used."""
    verification = Verification.from_answer(
        {
            "valid": True,
            "participantId": "guest-42",
            "nickname": "Ann",
            "avatar": "classic:pink",
            "role": "OWNER",
            "userId": "user-7",
        }
    )
    assert verification is not None
    assert verification.participant_id == "guest-42"
    assert verification.nickname == "Ann"
    assert verification.avatar_color == "pink"
    assert verification.avatar_config == {"type": "classic", "colorId": "pink"}
    assert verification.role == "OWNER"
    assert verification.user_id == "user-7"


def test_a_minimal_answer_is_a_participant_with_default_avatar() -> None:
    """SPEC §2.1: role defaults to PARTICIPANT; `valid` may be absent (only false rejects)."""
    verification = Verification.from_answer({"participantId": "p-1"})
    assert verification is not None
    assert verification.participant_id == "p-1"
    assert verification.role == "PARTICIPANT"
    assert verification.avatar_color == "default"
    assert verification.nickname is None
    assert verification.user_id is None


@pytest.mark.parametrize("role", ["OWNER", "STAFF", "PARTICIPANT"])
def test_documented_roles_are_granted(role: str) -> None:
    """SPEC §2: role is OWNER | STAFF | PARTICIPANT, as the app says."""
    verification = Verification.from_answer({"participantId": "p", "role": role})
    assert verification is not None
    assert verification.role == role


@pytest.mark.parametrize("role", ["ADMIN", "owner", "", None, 1, ["OWNER"]])
def test_unknown_roles_grant_nothing(role: Any) -> None:
    """SPEC §2.1: role defaults to PARTICIPANT; no unknown value elevates a player."""
    verification = Verification.from_answer({"participantId": "p", "role": role})
    assert verification is not None
    assert verification.role == "PARTICIPANT"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"valid": False, "participantId": "p-1"}, id="valid false"),
        pytest.param({"valid": True}, id="no participantId"),
        pytest.param({"valid": True, "participantId": ""}, id="empty participantId"),
        pytest.param({"valid": True, "participantId": "   "}, id="blank participantId"),
        pytest.param({"valid": True, "participantId": None}, id="null participantId"),
        pytest.param({"valid": True, "participantId": ["p"]}, id="list participantId"),
        pytest.param({"valid": True, "participantId": True}, id="bool participantId"),
        pytest.param([{"participantId": "p"}], id="list body"),
        pytest.param("ok", id="string body"),
        pytest.param(None, id="null body"),
        pytest.param(200, id="number body"),
    ],
)
def test_answers_that_do_not_vouch_for_the_token_are_invalid(body: Any) -> None:
    """SPEC §2.1: valid only with `valid` not false and a non-empty participantId; a malformed
    body counts as invalid."""
    assert Verification.from_answer(body) is None


def test_numeric_participant_id_is_accepted_as_text() -> None:
    """SPEC §2.1: a non-empty participantId becomes the playerId (ids on the wire are strings)."""
    verification = Verification.from_answer({"participantId": 1234, "userId": 99})
    assert verification is not None
    assert verification.participant_id == "1234"
    assert verification.user_id == "99"


def test_custom_avatar_from_the_app() -> None:
    """SPEC §2.1: `custom:<characterId>` ⇒ custom config, colour `default`."""
    verification = Verification.from_answer({"participantId": "p", "avatar": "custom:wizard"})
    assert verification is not None
    assert verification.avatar_color == "default"
    assert verification.avatar_config == {"type": "custom", "characterId": "wizard"}


def test_app_nickname_is_trimmed_and_bounded() -> None:
    """SPEC §3: nicknames are 1–32 characters after trimming."""
    verification = Verification.from_answer({"participantId": "p", "nickname": "  " + "n" * 40})
    assert verification is not None
    assert verification.nickname is not None
    assert 1 <= len(verification.nickname) <= 32
    assert verification.nickname == verification.nickname.strip()


def test_blank_app_nickname_is_treated_as_missing() -> None:
    """SPEC §3: a nickname is at least one character after trimming."""
    verification = Verification.from_answer({"participantId": "p", "nickname": "   "})
    assert verification is not None
    assert verification.nickname is None


# -- identities and tokens ----------------------------------------------------------------------


def test_anonymous_ids_are_dev_anon_and_unique() -> None:
    """SPEC §2.1: missing ids become `dev-anon-<random>`, valid as a playerId (§3)."""
    ids = {anonymous_player_id() for _ in range(100)}
    assert len(ids) == 100
    for player_id in ids:
        assert player_id.startswith("dev-anon-")
        assert ID_RE.match(player_id)


@pytest.mark.parametrize(
    ("token", "user_id"),
    [
        ("auth-user-7", "user-7"),
        ("auth-42", "42"),
        ("auth-", None),
        ("guest-abc", None),
        ("dev-auth-1", None),
        ("", None),
        (None, None),
    ],
)
def test_auth_tokens_name_their_user(token: str | None, user_id: str | None) -> None:
    """SPEC §2.1/§7: tokens of the form `auth-<userId>` belong to logged-in users."""
    assert token_user_id(token) == user_id


@pytest.mark.parametrize(
    ("role", "privileged"), [("OWNER", True), ("STAFF", True), ("PARTICIPANT", False)]
)
def test_only_owner_and_staff_are_privileged(role: str, privileged: bool) -> None:
    """SPEC §4 proximity:set: only OWNER or STAFF of the space."""
    assert Identity("p", "P", role=role).privileged is privileged


def test_a_new_identity_is_a_participant() -> None:
    """SPEC §2.1: role defaults to PARTICIPANT."""
    identity = Identity("p", "P")
    assert identity.role == "PARTICIPANT"
    assert identity.privileged is False


def test_profile_update_changes_display_fields_only() -> None:
    """SPEC §4 player:updateProfile: display fields change; id, role and token do not."""
    identity = Identity(
        "p-1",
        "Ann",
        avatar_color="red",
        avatar_config={"type": "classic", "colorId": "red"},
        role="STAFF",
        session_token="guest-token",
        verified=True,
    )
    updated = identity.with_profile("Annie", None, None)
    assert updated.nickname == "Annie"
    assert updated.avatar_color == "red"
    assert updated.avatar_config == {"type": "classic", "colorId": "red"}
    assert (updated.player_id, updated.role, updated.session_token, updated.verified) == (
        "p-1",
        "STAFF",
        "guest-token",
        True,
    )
    recoloured = identity.with_profile("Ann", "blue", {"type": "custom", "characterId": "cat"})
    assert recoloured.avatar_color == "blue"
    assert recoloured.avatar_config == {"type": "custom", "characterId": "cat"}
    assert identity.nickname == "Ann", "the original identity is left untouched"

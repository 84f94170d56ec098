"""What a cluster keeps in Redis survives the round trip through JSON (SPEC §9: parties and
invitations, players with positions, chat rate-limit counters are shared state)."""

from __future__ import annotations

import orjson
import pytest

from spacesync.domain.chat import ChatRateLimiter
from spacesync.domain.identity import Identity
from spacesync.domain.parties import Member, PartyError, SpaceParties
from spacesync.domain.space import PlayerState

T0 = 1_700_000_000.0


def through_json(parties: SpaceParties) -> SpaceParties:
    return SpaceParties.from_dict(orjson.loads(orjson.dumps(parties.to_dict())))


def test_parties_keep_members_in_order_leaders_kinds_and_invitations() -> None:
    parties = SpaceParties()
    raid = parties.create(Member("ann", "Ann", "red"), "Raid").party.id
    parties.invite("ann", raid, "bob", T0)
    parties.accept(Member("bob", "Bob"), raid, T0 + 1)
    parties.invite("bob", raid, "cy", T0 + 2)
    parties.join_zone(Member("dee", "Dee", "blue"), "zone-1", "Lounge")

    copy = through_json(parties)

    party = copy.get(raid)
    assert party is not None
    assert [m.id for m in party.members.values()] == ["ann", "bob"]
    assert party.leader_id == "ann" and party.kind == "invite" and party.name == "Raid"
    assert party.members["ann"].avatar_color == "red"
    zone = copy.get("zone-1")
    assert zone is not None and zone.kind == "zone" and zone.leader_id is None
    # Indexes are rebuilt: the restored copy answers membership questions like the original.
    assert copy.default_party("dee") is zone
    assert copy.default_party("bob") is party
    # The pending invitation still works, and still expires on time.
    arrival = copy.accept(Member("cy", "Cy"), raid, T0 + 3)
    assert [m.id for m in arrival.party.members.values()] == ["ann", "bob", "cy"]


def test_restored_invitation_expires_like_the_original() -> None:
    parties = SpaceParties()
    raid = parties.create(Member("ann", "Ann"), "Raid").party.id
    parties.invite("ann", raid, "bob", T0)
    copy = through_json(parties)
    with pytest.raises(PartyError, match="expired"):
        copy.accept(Member("bob", "Bob"), raid, T0 + 301)


def test_leaving_a_restored_party_hands_leadership_on() -> None:
    parties = SpaceParties()
    raid = parties.create(Member("ann", "Ann"), "Raid").party.id
    parties.invite("ann", raid, "bob", T0)
    parties.accept(Member("bob", "Bob"), raid, T0)
    copy = through_json(parties)
    departures = copy.leave_all("ann")
    assert len(departures) == 1 and departures[0].new_leader_id == "bob"


def test_empty_parties_snapshot_is_empty() -> None:
    assert through_json(SpaceParties()).to_dict() == {"parties": [], "invitations": []}


def test_player_keeps_identity_and_position() -> None:
    identity = Identity(
        player_id="p1",
        nickname="Ünï",
        avatar_color="green",
        avatar_config={"type": "custom", "characterId": "knight"},
        role="STAFF",
        session_token="auth-42",
        user_id="42",
        verified=True,
    )
    player = PlayerState(identity, "sid-1", T0, x=12.5, y=-3.0, direction="left", is_moving=True)
    copy = PlayerState.from_dict(orjson.loads(orjson.dumps(player.to_dict())))
    assert copy == player
    assert copy.identity.privileged


def test_chat_history_travels_between_limiters() -> None:
    """A player who moves to another node keeps the same allowance (five per five seconds)."""
    first = ChatRateLimiter()
    for i in range(5):
        assert first.check("p", f"message {i}", T0 + i * 0.1).allowed
    second = ChatRateLimiter()
    second.restore("p", orjson.loads(orjson.dumps(first.export("p"))))
    refused = second.check("p", "one more", T0 + 1)
    assert not refused.allowed and refused.retry_after >= 1
    assert second.check("p", "later", T0 + 5.1).allowed


def test_repeat_count_travels_too() -> None:
    first = ChatRateLimiter()
    assert first.check("p", "same", T0).allowed
    assert first.check("p", "same", T0 + 1).allowed
    second = ChatRateLimiter()
    second.restore("p", first.export("p"))
    assert not second.check("p", "SAME ", T0 + 2).allowed


def test_unknown_player_has_no_history_and_restoring_none_forgets() -> None:
    limiter = ChatRateLimiter()
    assert limiter.export("nobody") is None
    limiter.check("p", "x", T0)
    limiter.restore("p", None)
    assert limiter.export("p") is None

"""Invite parties and party zones as plain rules (SPEC §4 party events and membership rules)."""

from __future__ import annotations

import pytest

from spacesync.domain.parties import Member, Party, PartyError, SpaceParties

T0 = 1_700_000_000.0
FIVE_MINUTES = 300.0


def member(player_id: str) -> Member:
    return Member(player_id, player_id.capitalize())


@pytest.fixture
def parties() -> SpaceParties:
    return SpaceParties()


def existing(parties: SpaceParties, party_id: str) -> Party:
    party = parties.get(party_id)
    assert party is not None, f"party {party_id} should exist"
    return party


def invite_party(parties: SpaceParties, leader: str, *others: str, name: str = "Raid") -> str:
    """An invite party led by ``leader`` whose other members joined in the given order."""
    party_id = parties.create(member(leader), name).party.id
    for other in others:
        parties.invite(leader, party_id, other, T0)
        parties.accept(member(other), party_id, T0)
    return party_id


# -- creating ----------------------------------------------------------------------------------


def test_create_makes_the_creator_leader_and_first_member(parties: SpaceParties) -> None:
    """SPEC §4 party:create: the creator is leader and first member; party:joined lists them."""
    arrival = parties.create(member("ann"), "Raid")
    party = arrival.party
    assert party.name == "Raid"
    assert party.leader_id == "ann"
    assert list(party.members) == ["ann"]
    assert party.members_wire() == [{"id": "ann", "nickname": "Ann", "avatarColor": "default"}]
    assert arrival.departures == ()
    assert parties.get(party.id) is party


def test_party_ids_are_generated_by_the_server_and_unique(parties: SpaceParties) -> None:
    """SPEC §4 party:create: `partyId` is server-generated."""
    ids = {parties.create(member(f"p{i}"), "Same name").party.id for i in range(20)}
    assert len(ids) == 20
    assert all(ids)


def test_creating_a_second_invite_party_leaves_the_first(parties: SpaceParties) -> None:
    """SPEC §4: a player belongs to at most one invite party at a time."""
    first = invite_party(parties, "ann", "bob")
    arrival = parties.create(member("ann"), "Second")
    assert [d.party.id for d in arrival.departures] == [first]
    assert "ann" not in existing(parties, first).members
    assert parties.memberships("ann") == [arrival.party.id]


# -- inviting, accepting, declining --------------------------------------------------------------


def test_invite_then_accept_joins_the_party(parties: SpaceParties) -> None:
    """SPEC §4 party:invite / party:accept: the invited player joins and is told the members."""
    party_id = invite_party(parties, "ann")
    invitation = parties.invite("ann", party_id, "bob", T0)
    assert (invitation.party_id, invitation.target_id, invitation.inviter_id) == (
        party_id,
        "bob",
        "ann",
    )
    arrival = parties.accept(member("bob"), party_id, T0 + 10)
    assert arrival.member.id == "bob"
    assert [m["id"] for m in arrival.party.members_wire()] == ["ann", "bob"]
    assert parties.default_party("bob") is arrival.party


def test_any_member_may_invite(parties: SpaceParties) -> None:
    """SPEC §4 party:invite: members (not only the leader) may invite."""
    party_id = invite_party(parties, "ann", "bob")
    parties.invite("bob", party_id, "cat", T0)
    parties.accept(member("cat"), party_id, T0)
    assert list(existing(parties, party_id).members) == ["ann", "bob", "cat"]


def test_a_non_member_cannot_invite(parties: SpaceParties) -> None:
    """SPEC §4 party:invite: only members may invite."""
    party_id = invite_party(parties, "ann")
    with pytest.raises(PartyError):
        parties.invite("eve", party_id, "bob", T0)
    with pytest.raises(PartyError):
        parties.invite("ann", "party-unknown", "bob", T0)
    assert parties.invitations == {}


def test_inviting_yourself_or_a_member_is_refused(parties: SpaceParties) -> None:
    """SPEC §4 party:invite: an invitation is for someone not yet in the party."""
    party_id = invite_party(parties, "ann", "bob")
    with pytest.raises(PartyError):
        parties.invite("ann", party_id, "ann", T0)
    with pytest.raises(PartyError):
        parties.invite("ann", party_id, "bob", T0)


def test_accept_without_an_invitation_is_refused(parties: SpaceParties) -> None:
    """SPEC §4 party:accept: valid only with a pending invitation."""
    party_id = invite_party(parties, "ann")
    with pytest.raises(PartyError):
        parties.accept(member("bob"), party_id, T0)
    assert "bob" not in existing(parties, party_id).members


def test_an_invitation_is_used_up_by_accepting(parties: SpaceParties) -> None:
    """SPEC §4 party:accept: an invitation lets the player in once."""
    party_id = invite_party(parties, "ann", "bob")
    parties.leave("bob", party_id)
    with pytest.raises(PartyError):
        parties.accept(member("bob"), party_id, T0)


def test_an_invitation_for_another_player_cannot_be_accepted(parties: SpaceParties) -> None:
    """SPEC §2/§4: invitations belong to their target, whatever the party id guessed."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    with pytest.raises(PartyError):
        parties.accept(member("eve"), party_id, T0)


def test_invitation_is_valid_just_under_five_minutes(parties: SpaceParties) -> None:
    """SPEC §4 party:invite: invitations expire after 5 minutes (not before)."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    parties.accept(member("bob"), party_id, T0 + FIVE_MINUTES - 1)
    assert "bob" in existing(parties, party_id).members


def test_invitation_expires_after_five_minutes(parties: SpaceParties) -> None:
    """SPEC §4 party:invite: an invitation accepted after 5 minutes is refused."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    with pytest.raises(PartyError, match="expired"):
        parties.accept(member("bob"), party_id, T0 + FIVE_MINUTES + 1)
    assert "bob" not in existing(parties, party_id).members
    with pytest.raises(PartyError):
        parties.accept(member("bob"), party_id, T0 + FIVE_MINUTES + 2)


def test_expired_invitations_are_pruned(parties: SpaceParties) -> None:
    """SPEC §4: invitations expire after 5 minutes; expired ones are forgotten."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    parties.invite("ann", party_id, "cat", T0 + 200)
    assert parties.prune_invitations(T0 + FIVE_MINUTES + 1) == 1
    assert list(parties.invitations) == [(party_id, "cat")]
    with pytest.raises(PartyError):
        parties.decline("bob", party_id, T0 + FIVE_MINUTES + 1)
    parties.accept(member("cat"), party_id, T0 + FIVE_MINUTES + 1)


def test_decline_removes_the_invitation_and_names_the_inviter(parties: SpaceParties) -> None:
    """SPEC §4 party:decline: the invitation goes; the inviter is told who declined."""
    party_id = invite_party(parties, "ann", "bob")
    parties.invite("bob", party_id, "cat", T0)
    invitation = parties.decline("cat", party_id, T0 + 1)
    assert (invitation.inviter_id, invitation.target_id, invitation.party_id) == (
        "bob",
        "cat",
        party_id,
    )
    assert parties.invitations == {}
    with pytest.raises(PartyError):
        parties.accept(member("cat"), party_id, T0)
    with pytest.raises(PartyError):
        parties.decline("cat", party_id, T0 + 2)


def test_decline_without_an_invitation_is_refused(parties: SpaceParties) -> None:
    """SPEC §4 party:decline: there must be an invitation to decline."""
    party_id = invite_party(parties, "ann")
    with pytest.raises(PartyError):
        parties.decline("bob", party_id, T0)


def test_a_late_decline_is_refused_and_the_inviter_is_not_told(parties: SpaceParties) -> None:
    """SPEC §4: invitations expire after 5 minutes, so an expired one cannot be declined."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    with pytest.raises(PartyError, match="expired"):
        parties.decline("bob", party_id, T0 + FIVE_MINUTES + 1)
    assert parties.invitations == {}


def test_accepting_a_second_invite_party_leaves_the_first(parties: SpaceParties) -> None:
    """SPEC §4: at most one invite party; joining another leaves the previous one."""
    first = invite_party(parties, "ann", "bob")
    second = invite_party(parties, "cat")
    parties.invite("cat", second, "bob", T0)
    arrival = parties.accept(member("bob"), second, T0)
    assert [(d.party.id, d.member_id) for d in arrival.departures] == [(first, "bob")]
    assert list(existing(parties, first).members) == ["ann"]
    assert parties.memberships("bob") == [second]


# -- leaving and leadership ----------------------------------------------------------------------


def test_leaving_tells_the_remaining_members(parties: SpaceParties) -> None:
    """SPEC §4 party:leave: the leaver leaves; the others remain."""
    party_id = invite_party(parties, "ann", "bob", "cat")
    departure = parties.leave("cat", party_id)
    assert departure.member_id == "cat"
    assert departure.deleted is False
    assert departure.new_leader_id is None
    assert list(departure.party.members) == ["ann", "bob"]
    assert parties.memberships("cat") == []


def test_departing_leader_hands_over_to_the_oldest_member(parties: SpaceParties) -> None:
    """SPEC §4 party:leave: a departing leader passes leadership to the oldest member."""
    party_id = invite_party(parties, "ann", "bob", "cat")
    departure = parties.leave("ann", party_id)
    assert departure.new_leader_id == "bob"
    assert existing(parties, party_id).leader_id == "bob"


def test_oldest_member_means_longest_unbroken_membership(parties: SpaceParties) -> None:
    """SPEC §4 party:leave: someone who left and came back is the newest member again."""
    party_id = invite_party(parties, "ann", "bob", "cat")
    parties.leave("bob", party_id)
    parties.invite("ann", party_id, "bob", T0)
    parties.accept(member("bob"), party_id, T0)
    parties.leave("ann", party_id)
    assert existing(parties, party_id).leader_id == "cat"


def test_a_non_leader_leaving_keeps_the_leader(parties: SpaceParties) -> None:
    """SPEC §4 party:leave: only a departing leader hands over leadership."""
    party_id = invite_party(parties, "ann", "bob", "cat")
    parties.leave("bob", party_id)
    assert existing(parties, party_id).leader_id == "ann"


def test_empty_party_is_deleted(parties: SpaceParties) -> None:
    """SPEC §4 party:leave: an empty party is deleted."""
    party_id = invite_party(parties, "ann")
    departure = parties.leave("ann", None)
    assert departure.deleted is True
    assert parties.get(party_id) is None
    assert len(parties) == 0


def test_deleting_a_party_voids_its_invitations(parties: SpaceParties) -> None:
    """SPEC §4: an invitation to a party that no longer exists cannot be accepted."""
    party_id = invite_party(parties, "ann")
    parties.invite("ann", party_id, "bob", T0)
    parties.leave("ann", party_id)
    with pytest.raises(PartyError):
        parties.accept(member("bob"), party_id, T0)
    assert parties.get(party_id) is None
    assert parties.invitations == {}


def test_leaving_a_party_you_are_not_in_is_refused(parties: SpaceParties) -> None:
    """SPEC §4 party:leave/party:message: not a member ⇒ party:error."""
    party_id = invite_party(parties, "ann")
    with pytest.raises(PartyError):
        parties.leave("bob", party_id)
    with pytest.raises(PartyError):
        parties.leave("bob", None)
    with pytest.raises(PartyError):
        parties.leave("ann", "party-unknown")
    with pytest.raises(PartyError):
        parties.member_party("bob", party_id)


def test_leave_without_id_prefers_the_zone_party(parties: SpaceParties) -> None:
    """SPEC §4 party:leave without partyId: the current zone party, else the invite party."""
    invite_id = invite_party(parties, "ann")
    parties.join_zone(member("ann"), "zone-lounge", "Lounge")
    assert parties.member_party("ann", None).id == "zone-lounge"
    first = parties.leave("ann", None)
    assert first.party.id == "zone-lounge"
    second = parties.leave("ann", None)
    assert second.party.id == invite_id
    assert parties.memberships("ann") == []


def test_message_target_without_id_is_zone_then_invite_party(parties: SpaceParties) -> None:
    """SPEC §4 party:message without partyId: the zone party, else the invite party."""
    invite_id = invite_party(parties, "ann")
    assert parties.member_party("ann", None).id == invite_id
    parties.join_zone(member("ann"), "zone-1", "Zone")
    assert parties.member_party("ann", None).id == "zone-1"
    assert parties.member_party("ann", invite_id).id == invite_id
    with pytest.raises(PartyError):
        parties.member_party("bob", None)


def test_leave_party_alias_leaves_only_the_zone(parties: SpaceParties) -> None:
    """SPEC §4 leaveParty: alias of party:leave for the zone party."""
    invite_id = invite_party(parties, "ann", "bob")
    with pytest.raises(PartyError):
        parties.leave_zone("ann")
    parties.join_zone(member("ann"), "zone-1", "Zone")
    departure = parties.leave_zone("ann")
    assert departure.party.id == "zone-1"
    assert departure.deleted is True
    assert parties.memberships("ann") == [invite_id]


# -- party zones --------------------------------------------------------------------------------


def test_party_zone_is_open_and_created_on_first_entry(parties: SpaceParties) -> None:
    """SPEC §4 party:join: a zone is an open party named by the map, client-chosen id."""
    first = parties.join_zone(member("ann"), "zone-cafe", "Cafe")
    assert first.party.id == "zone-cafe"
    assert first.party.name == "Cafe"
    second = parties.join_zone(member("bob"), "zone-cafe", "Cafe")
    assert second.party is first.party
    assert [m["id"] for m in second.party.members_wire()] == ["ann", "bob"]


def test_entering_a_zone_twice_changes_nothing(parties: SpaceParties) -> None:
    """SPEC §4 party:join: re-entering the current zone does not duplicate the member."""
    parties.join_zone(member("ann"), "zone-1", "Zone")
    again = parties.join_zone(member("ann"), "zone-1", "Zone")
    assert again.departures == ()
    assert list(again.party.members) == ["ann"]


def test_entering_another_zone_leaves_the_previous_one(parties: SpaceParties) -> None:
    """SPEC §4 party:join: leaves the previous zone party (at most one zone at a time)."""
    parties.join_zone(member("bob"), "zone-a", "A")
    parties.join_zone(member("ann"), "zone-a", "A")
    arrival = parties.join_zone(member("ann"), "zone-b", "B")
    assert [(d.party.id, d.member_id, d.deleted) for d in arrival.departures] == [
        ("zone-a", "ann", False)
    ]
    assert list(existing(parties, "zone-a").members) == ["bob"]
    assert parties.memberships("ann") == ["zone-b"]


def test_leaving_the_last_zone_member_deletes_the_zone(parties: SpaceParties) -> None:
    """SPEC §4: an empty party is deleted, zones included."""
    parties.join_zone(member("ann"), "zone-a", "A")
    arrival = parties.join_zone(member("ann"), "zone-b", "B")
    assert arrival.departures[0].deleted is True
    assert parties.get("zone-a") is None


def test_a_zone_and_an_invite_party_can_be_held_together(parties: SpaceParties) -> None:
    """SPEC §4: at most one zone party AND at most one invite party, both at once."""
    invite_id = invite_party(parties, "ann")
    arrival = parties.join_zone(member("ann"), "zone-1", "Zone")
    assert arrival.departures == ()
    assert sorted(parties.memberships("ann")) == sorted([invite_id, "zone-1"])


def test_an_invite_party_cannot_be_entered_through_the_zone_path(parties: SpaceParties) -> None:
    """SPEC §4: party:join is for party zones; an invite party needs an invitation."""
    party_id = invite_party(parties, "ann")
    parties.join_zone(member("bob"), "zone-1", "Zone")
    with pytest.raises(PartyError):
        parties.join_zone(member("bob"), party_id, "Raid")
    assert list(existing(parties, party_id).members) == ["ann"]
    assert parties.memberships("bob") == ["zone-1"]


def test_zones_need_no_invitation(parties: SpaceParties) -> None:
    """SPEC §4: party zones are open; invitations are for invite parties."""
    parties.join_zone(member("ann"), "zone-1", "Zone")
    with pytest.raises(PartyError):
        parties.invite("ann", "zone-1", "bob", T0)


# -- size limit ---------------------------------------------------------------------------------


def test_invite_party_holds_at_most_50_members(parties: SpaceParties) -> None:
    """SPEC §4: party size limit is 50 members."""
    party_id = invite_party(parties, "p0", *[f"p{i}" for i in range(1, 50)])
    assert len(existing(parties, party_id).members) == 50
    with pytest.raises(PartyError, match="50"):
        parties.invite("p0", party_id, "p50", T0)


def test_an_invitation_cannot_overfill_a_party(parties: SpaceParties) -> None:
    """SPEC §4: accepting into a party that filled up meanwhile is refused."""
    party_id = invite_party(parties, "p0", *[f"p{i}" for i in range(1, 49)])
    parties.invite("p0", party_id, "late", T0)
    parties.invite("p0", party_id, "p49", T0)
    parties.accept(member("p49"), party_id, T0)
    with pytest.raises(PartyError):
        parties.accept(member("late"), party_id, T0)
    assert len(existing(parties, party_id).members) == 50
    assert parties.memberships("late") == []


def test_party_zone_holds_at_most_50_members(parties: SpaceParties) -> None:
    """SPEC §4: the 50-member limit applies to zones as well."""
    for i in range(50):
        parties.join_zone(member(f"p{i}"), "zone-1", "Zone")
    parties.join_zone(member("late"), "zone-2", "Other")
    with pytest.raises(PartyError):
        parties.join_zone(member("late"), "zone-1", "Zone")
    assert len(existing(parties, "zone-1").members) == 50
    assert parties.memberships("late") == ["zone-2"], "a refused entry must not leave the zone"


# -- leaving the space ---------------------------------------------------------------------------


def test_leave_all_leaves_both_parties(parties: SpaceParties) -> None:
    """SPEC §4: leaving the space (or disconnecting) leaves both parties."""
    invite_id = invite_party(parties, "ann", "bob")
    parties.join_zone(member("bob"), "zone-1", "Zone")
    parties.join_zone(member("cat"), "zone-1", "Zone")
    departures = parties.leave_all("bob")
    assert sorted(d.party.id for d in departures) == sorted([invite_id, "zone-1"])
    assert parties.memberships("bob") == []
    assert list(existing(parties, invite_id).members) == ["ann"]
    assert list(existing(parties, "zone-1").members) == ["cat"]


def test_leave_all_clears_invitations_to_the_player(parties: SpaceParties) -> None:
    """SPEC §4: a player who left the space keeps no pending invitations."""
    first = invite_party(parties, "ann")
    second = invite_party(parties, "cat")
    parties.invite("ann", first, "bob", T0)
    parties.invite("cat", second, "bob", T0)
    parties.invite("ann", first, "dan", T0)
    assert parties.leave_all("bob") == []
    assert list(parties.invitations) == [(first, "dan")]
    with pytest.raises(PartyError):
        parties.accept(member("bob"), first, T0)


def test_leave_all_by_a_leader_hands_over_and_deletes_empties(parties: SpaceParties) -> None:
    """SPEC §4: leaving the space is leaving every party, with the usual hand-over rules."""
    shared = invite_party(parties, "ann", "bob")
    parties.join_zone(member("ann"), "zone-solo", "Solo")
    departures = {d.party.id: d for d in parties.leave_all("ann")}
    assert departures[shared].new_leader_id == "bob"
    assert departures["zone-solo"].deleted is True
    assert parties.get("zone-solo") is None
    assert len(parties) == 1


def test_leave_all_for_a_stranger_does_nothing(parties: SpaceParties) -> None:
    """SPEC §4: leaving the space without parties changes no party."""
    party_id = invite_party(parties, "ann")
    assert parties.leave_all("nobody") == []
    assert list(existing(parties, party_id).members) == ["ann"]


def test_profile_changes_reach_every_party_of_the_player(parties: SpaceParties) -> None:
    """SPEC §4 player:updateProfile: member lists show the new nickname."""
    invite_id = invite_party(parties, "ann")
    parties.join_zone(member("ann"), "zone-1", "Zone")
    changed = parties.update_member(Member("ann", "Annie", "red"))
    assert sorted(p.id for p in changed) == sorted([invite_id, "zone-1"])
    for party_id in (invite_id, "zone-1"):
        wire = existing(parties, party_id).members_wire()
        assert wire == [{"id": "ann", "nickname": "Annie", "avatarColor": "red"}]

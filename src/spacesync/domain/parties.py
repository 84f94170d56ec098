"""Parties (SPEC §4): invite parties and party zones, as plain rules with no I/O.

Every operation returns an outcome object that says what changed, so the caller knows whom to
tell; a rule that is broken raises :class:`PartyError` naming the text for the player (the
handler renders it in the node's language).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from ..texts import TextError

PARTY_SIZE_LIMIT = 50
INVITATION_TTL = 300.0
PartyKind = Literal["invite", "zone"]


class PartyError(TextError):
    """A party rule was broken; its text is shown to the player, on ``party:error``."""


@dataclass(slots=True)
class Member:
    id: str
    nickname: str
    avatar_color: str = "default"

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "nickname": self.nickname, "avatarColor": self.avatar_color}


@dataclass(slots=True)
class Party:
    id: str
    name: str
    kind: PartyKind
    leader_id: str | None
    members: dict[str, Member] = field(default_factory=dict)  # insertion order = seniority

    def members_wire(self) -> list[dict[str, str]]:
        return [m.to_wire() for m in self.members.values()]

    @property
    def full(self) -> bool:
        return len(self.members) >= PARTY_SIZE_LIMIT


@dataclass(frozen=True, slots=True)
class Invitation:
    party_id: str
    target_id: str
    inviter_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Departure:
    """A member left ``party``; ``remaining`` are told, ``deleted`` if it is now empty."""

    party: Party
    member_id: str
    deleted: bool
    new_leader_id: str | None


@dataclass(frozen=True, slots=True)
class Arrival:
    """``member`` joined ``party``; ``departures`` are parties left on the way in."""

    party: Party
    member: Member
    departures: tuple[Departure, ...] = ()
    new_member: bool = True
    """False when the player was already a member (entering the same zone again)."""


def new_party_id() -> str:
    return f"party-{secrets.token_hex(8)}"


class SpaceParties:
    """All parties of one space, with each player's zone and invite membership."""

    def __init__(self) -> None:
        self.parties: dict[str, Party] = {}
        self.zone_of: dict[str, str] = {}
        self.invite_party_of: dict[str, str] = {}
        self.invitations: dict[tuple[str, str], Invitation] = {}  # (party_id, target_id)

    # -- queries -------------------------------------------------------------------------------

    def get(self, party_id: str) -> Party | None:
        return self.parties.get(party_id)

    def memberships(self, player_id: str) -> list[str]:
        ids = [self.zone_of.get(player_id), self.invite_party_of.get(player_id)]
        return [p for p in ids if p is not None]

    def default_party(self, player_id: str) -> Party | None:
        """The zone party if any, else the invite party (SPEC §4 ``party:leave``/``message``)."""
        party_id = self.zone_of.get(player_id) or self.invite_party_of.get(player_id)
        return self.parties.get(party_id) if party_id else None

    def member_party(self, player_id: str, party_id: str | None) -> Party:
        if party_id is None:
            party = self.default_party(player_id)
            if party is None:
                raise PartyError("error.party.not_in_party")
            return party
        party = self.parties.get(party_id)
        if party is None or player_id not in party.members:
            raise PartyError("error.party.not_member")
        return party

    # -- invite parties ------------------------------------------------------------------------

    def create(self, leader: Member, name: str, party_id: str | None = None) -> Arrival:
        departures = self._leave_kind(leader.id, "invite")
        party = Party(party_id or new_party_id(), name, "invite", leader.id)
        party.members[leader.id] = leader
        self.parties[party.id] = party
        self.invite_party_of[leader.id] = party.id
        return Arrival(party, leader, departures)

    def invite(self, inviter_id: str, party_id: str, target_id: str, now: float) -> Invitation:
        party = self.parties.get(party_id)
        if party is None or inviter_id not in party.members:
            raise PartyError("error.party.not_member")
        if party.kind != "invite":
            raise PartyError("error.party.zone_open")
        if target_id == inviter_id:
            raise PartyError("error.party.invite_self")
        if target_id in party.members:
            raise PartyError("error.party.already_member")
        if party.full:
            raise PartyError("error.party.full", limit=PARTY_SIZE_LIMIT)
        invitation = Invitation(party_id, target_id, inviter_id, now + INVITATION_TTL)
        self.invitations[(party_id, target_id)] = invitation
        return invitation

    def accept(self, member: Member, party_id: str, now: float) -> Arrival:
        invitation = self.invitations.get((party_id, member.id))
        if invitation is None:
            raise PartyError("error.party.no_invitation")
        if invitation.expires_at <= now:
            del self.invitations[(party_id, member.id)]
            raise PartyError("error.party.invitation_expired")
        party = self.parties.get(party_id)
        if party is None:
            del self.invitations[(party_id, member.id)]
            raise PartyError("error.party.gone")
        if party.full:
            raise PartyError("error.party.full", limit=PARTY_SIZE_LIMIT)
        del self.invitations[(party_id, member.id)]
        departures = self._leave_kind(member.id, "invite")
        party.members[member.id] = member
        self.invite_party_of[member.id] = party.id
        return Arrival(party, member, departures)

    def decline(self, player_id: str, party_id: str, now: float) -> Invitation:
        invitation = self.invitations.pop((party_id, player_id), None)
        if invitation is None:
            raise PartyError("error.party.no_invitation")
        if invitation.expires_at <= now:
            raise PartyError("error.party.invitation_expired")
        return invitation

    # -- party zones ---------------------------------------------------------------------------

    def join_zone(self, member: Member, party_id: str, name: str) -> Arrival:
        party = self.parties.get(party_id)
        if party is not None and party.kind != "zone":
            raise PartyError("error.party.invitation_needed")
        if party is not None and member.id in party.members:
            return Arrival(party, member, new_member=False)
        if party is not None and party.full:
            raise PartyError("error.party.full", limit=PARTY_SIZE_LIMIT)
        departures = self._leave_kind(member.id, "zone")
        if party is None:
            party = Party(party_id, name, "zone", None)
            self.parties[party_id] = party
        party.members[member.id] = member
        self.zone_of[member.id] = party.id
        return Arrival(party, member, departures)

    # -- leaving -------------------------------------------------------------------------------

    def leave(self, player_id: str, party_id: str | None) -> Departure:
        party = self.member_party(player_id, party_id)
        return self._remove(party, player_id)

    def leave_zone(self, player_id: str) -> Departure:
        party_id = self.zone_of.get(player_id)
        if party_id is None:
            raise PartyError("error.party.not_in_zone")
        return self._remove(self.parties[party_id], player_id)

    def leave_all(self, player_id: str) -> list[Departure]:
        """Everything a player leaves with the space; pending invitations to them go too."""
        departures = [self._remove(self.parties[p], player_id) for p in self.memberships(player_id)]
        for key in [k for k in self.invitations if k[1] == player_id]:
            del self.invitations[key]
        return departures

    def update_member(self, member: Member) -> list[Party]:
        parties = [self.parties[p] for p in self.memberships(member.id)]
        for party in parties:
            party.members[member.id] = member
        return parties

    def prune_invitations(self, now: float) -> int:
        expired = [k for k, inv in self.invitations.items() if inv.expires_at <= now]
        for key in expired:
            del self.invitations[key]
        return len(expired)

    def _leave_kind(self, player_id: str, kind: PartyKind) -> tuple[Departure, ...]:
        index = self.zone_of if kind == "zone" else self.invite_party_of
        party_id = index.get(player_id)
        if party_id is None:
            return ()
        return (self._remove(self.parties[party_id], player_id),)

    def _remove(self, party: Party, player_id: str) -> Departure:
        party.members.pop(player_id, None)
        index = self.zone_of if party.kind == "zone" else self.invite_party_of
        if index.get(player_id) == party.id:
            del index[player_id]
        new_leader = None
        if not party.members:
            del self.parties[party.id]
            for key in [k for k in self.invitations if k[0] == party.id]:
                del self.invitations[key]
            return Departure(party, player_id, True, None)
        if party.kind == "invite" and party.leader_id == player_id:
            new_leader = next(iter(party.members))
            party.leader_id = new_leader
        return Departure(party, player_id, False, new_leader)

    def __len__(self) -> int:
        return len(self.parties)

    # -- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (for a shared store); :meth:`from_dict` restores it."""
        return {
            "parties": [
                {
                    "id": p.id,
                    "name": p.name,
                    "kind": p.kind,
                    "leader": p.leader_id,
                    "members": [[m.id, m.nickname, m.avatar_color] for m in p.members.values()],
                }
                for p in self.parties.values()
            ],
            "invitations": [
                [i.party_id, i.target_id, i.inviter_id, i.expires_at]
                for i in self.invitations.values()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceParties:
        parties = cls()
        for item in data.get("parties", ()):
            party = Party(item["id"], item["name"], item["kind"], item["leader"])
            for member_id, nickname, color in item["members"]:
                party.members[member_id] = Member(member_id, nickname, color)
                index = parties.zone_of if party.kind == "zone" else parties.invite_party_of
                index[member_id] = party.id
            parties.parties[party.id] = party
        for party_id, target_id, inviter_id, expires_at in data.get("invitations", ()):
            invitation = Invitation(party_id, target_id, inviter_id, float(expires_at))
            parties.invitations[(party_id, target_id)] = invitation
        return parties

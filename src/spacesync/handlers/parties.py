"""Parties: invite parties (``party:create``/``invite``/``accept``/``decline``/``leave``),
party zones (``party:join`` / ``joinParty``, ``leaveParty``) and ``party:message`` (SPEC §4).

The rules are :mod:`spacesync.domain.parties`'; the state store holds each space's parties
under a lock (shared by the nodes of a cluster). Refusals are raised as ``PartyError`` and
answered on ``party:error`` by the guard (:mod:`.dispatch`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import protocol
from ..domain.chat import sanitize
from ..domain.identity import Identity
from ..domain.limits import INVITE_PAIR, INVITE_TARGET
from ..domain.parties import Arrival, Departure, Member, PartyError
from ..fanout import Broadcaster
from ..observability.logging import log
from ..protocol import BadInput, ChatMessage
from ..state.base import StateStore
from . import payloads
from .chat import ChatLines, require_text
from .dispatch import Dispatch, Handler
from .session import Session

RefuseMuted = Callable[[Session, str], Awaitable[bool]]


def member(identity: Identity) -> Member:
    return Member(identity.player_id, identity.nickname, identity.avatar_color)


class Parties:
    """The ``party:*`` events and the announcements of arrivals and departures."""

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        store: StateStore,
        out: Broadcaster,
        lines: ChatLines,
        refuse_muted: RefuseMuted,
    ) -> None:
        self.dispatch = dispatch
        self.store = store
        self.out = out
        self.lines = lines
        self._refuse_muted = refuse_muted

    def routes(self) -> dict[str, Handler]:
        return {
            "party:create": self.party_create,
            "party:invite": self.party_invite,
            "party:accept": self.party_accept,
            "party:decline": self.party_decline,
            "party:leave": self.party_leave,
            "party:message": self.party_message,
            "party:join": self.party_join_zone,
            "joinParty": self.party_join_zone,
            "leaveParty": self.party_leave_zone,
        }

    # -- messages ------------------------------------------------------------------------------

    async def party_message(self, session: Session, payload: Any) -> None:
        await self.party_chat(session, protocol.parse_party_message(payload))

    async def party_chat(self, session: Session, message: ChatMessage) -> None:
        """A message to the members of one of the sender's parties (also ``chat:message`` of
        type ``party``)."""
        assert session.space_id is not None and session.identity is not None
        require_text(message)
        if await self._refuse_muted(session, "party:error"):
            return
        if await self.lines.rate_limited(session, message.content, "party:error"):
            return  # before the party lock, which a flood would otherwise keep busy
        async with self.store.parties(session.space_id) as parties:
            party = parties.member_party(session.identity.player_id, message.party_id)
            party_id, party_name, members = party.id, party.name, list(party.members)
        data = self.lines.compose(session, message, partyId=party_id, partyName=party_name)
        await self.out.to_players(session.space_id, members, "party:message", data)
        self.lines.save(session, "party", data, tuple(members), party_id=party_id)

    # -- invite parties ------------------------------------------------------------------------

    async def party_create(self, session: Session, payload: Any) -> None:
        request = protocol.parse_party_create(payload)
        assert session.space_id is not None and session.identity is not None
        name = sanitize(request.name).strip()
        if not name:
            raise BadInput("error.party.name_no_text")  # it was only markup
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.create(member(session.identity), name)
        await self._announce_arrival(session, arrival)
        log.info("I5001", "Party created", partyId=arrival.party.id, **session.context())

    async def party_invite(self, session: Session, payload: Any) -> None:
        request = protocol.parse_party_invite(payload)
        assert session.space_id is not None and session.identity is not None
        target = await self.store.player(session.space_id, request.target_id)
        if target is None:
            raise PartyError("error.party.target_absent")
        pair = f"{session.identity.player_id}\n{target.id}"
        over = self.dispatch.over_keyed_limit
        if await over(session, "party:invite", INVITE_PAIR, pair) or await over(
            session, "party:invite", INVITE_TARGET, target.id
        ):
            return
        async with self.store.parties(session.space_id) as parties:
            invitation = parties.invite(
                session.identity.player_id, request.party_id, request.target_id, time.time()
            )
            party = parties.get(invitation.party_id)
            name = party.name if party else ""
        await self.out.to_players(
            session.space_id,
            [target.id],
            "party:invited",
            payloads.party_invited(invitation, name, session.identity),
        )

    async def party_accept(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:accept", required=True)
        assert session.space_id is not None and session.identity is not None
        assert ref.party_id is not None
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.accept(member(session.identity), ref.party_id, time.time())
        await self._announce_arrival(session, arrival)

    async def party_decline(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:decline", required=True)
        assert session.space_id is not None and session.identity is not None
        assert ref.party_id is not None
        async with self.store.parties(session.space_id) as parties:
            invitation = parties.decline(session.identity.player_id, ref.party_id, time.time())
        await self.out.to_players(
            session.space_id,
            [invitation.inviter_id],
            "party:declined",
            payloads.party_declined(invitation),
        )

    async def party_leave(self, session: Session, payload: Any) -> None:
        ref = protocol.parse_party_ref(payload, "party:leave", required=False)
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            departure = parties.leave(session.identity.player_id, ref.party_id)
        await self.announce_departure(session.space_id, departure, session)

    # -- party zones ---------------------------------------------------------------------------

    async def party_leave_zone(self, session: Session, payload: Any) -> None:
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            departure = parties.leave_zone(session.identity.player_id)
        await self.announce_departure(session.space_id, departure, session)

    async def party_join_zone(self, session: Session, payload: Any) -> None:
        request = protocol.parse_zone_join(payload)
        assert session.space_id is not None and session.identity is not None
        async with self.store.parties(session.space_id) as parties:
            arrival = parties.join_zone(
                member(session.identity),
                request.party_id,
                sanitize(request.party_name).strip() or request.party_id,
            )
        await self._announce_arrival(session, arrival)

    # -- announcements -------------------------------------------------------------------------

    async def _announce_arrival(self, session: Session, arrival: Arrival) -> None:
        assert session.space_id is not None
        for departure in arrival.departures:
            await self.announce_departure(session.space_id, departure, session)
        party = arrival.party
        await self.out.to_sid(session.sid, "party:joined", payloads.party_joined(party))
        if not arrival.new_member:
            return
        others = [pid for pid in party.members if pid != arrival.member.id]
        await self.out.to_players(
            session.space_id,
            others,
            "party:member_joined",
            payloads.party_member_joined(party, arrival.member),
        )

    async def announce_departure(
        self, space_id: str, departure: Departure, leaver: Session | None
    ) -> None:
        """``party:left`` to the leaver (when still connected), ``party:member_left`` to the
        members who remain."""
        if leaver is not None:
            await self.out.to_sid(leaver.sid, "party:left", payloads.party_left(departure.party.id))
        if departure.deleted:
            return
        await self.out.to_players(
            space_id,
            list(departure.party.members),
            "party:member_left",
            payloads.party_member_left(departure),
        )

    async def party_lost(self, space_id: str, player_id: str, party_id: str) -> None:
        """A party membership this node could not write back after Redis lost it."""
        await self.out.to_players(
            space_id, [player_id], "party:left", payloads.party_left(party_id)
        )

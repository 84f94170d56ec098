"""``player:updateProfile``: a player's nickname and avatar (SPEC §4)."""

from __future__ import annotations

from typing import Any

from .. import protocol
from ..domain.identity import nickname_key, same_name_with_suffix
from ..domain.parties import Member
from ..fanout import Broadcaster
from ..state.base import StateStore
from ..texts import Catalog
from . import payloads
from .dispatch import Handler
from .session import Session


class Profiles:
    """``player:updateProfile``."""

    def __init__(self, *, store: StateStore, out: Broadcaster, texts: Catalog) -> None:
        self.store = store
        self.out = out
        self.texts = texts

    def routes(self) -> dict[str, Handler]:
        return {"player:updateProfile": self.update_profile}

    async def update_profile(self, session: Session, payload: Any) -> None:
        update = protocol.parse_profile(payload)
        assert session.space_id is not None and session.identity is not None
        nickname = await self._own_nickname(session, update.nickname)
        if nickname is None:
            message = self.texts.text("error.profile.nickname_taken")
            await self.out.to_sid(session.sid, "error", payloads.error(message, "NICKNAME_TAKEN"))
            return
        identity = session.identity.with_profile(
            nickname, update.avatar_color, update.avatar_config
        )
        session.identity = identity
        await self.store.update_identity(session.space_id, identity)
        async with self.store.parties(session.space_id) as parties:
            parties.update_member(
                Member(identity.player_id, identity.nickname, identity.avatar_color)
            )
        await self.out.to_space(
            session.space_id,
            "player:profileUpdated",
            payloads.profile_updated(identity),
            skip_sid=session.sid,
        )

    async def _own_nickname(self, session: Session, requested: str) -> str | None:
        """The nickname a profile update gives the player, or ``None`` when another player of
        the space has it. Unlike a join, the player is choosing a name here, so a taken one is
        refused rather than suffixed; but a player whose join made them "Ann (2)" and who sends
        "Ann" again (with a new avatar, say) keeps "Ann (2)". Nicknames are looked up only
        when this player's own changes, since in a cluster that reads the space's roster."""
        assert session.space_id is not None and session.identity is not None
        me = session.identity
        if nickname_key(requested) == nickname_key(me.nickname):
            return requested
        holders = await self.store.players_named(session.space_id, requested)
        if all(p.id == me.player_id for p in holders):
            return requested
        return me.nickname if same_name_with_suffix(me.nickname, requested) else None

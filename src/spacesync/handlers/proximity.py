"""``proximity:set``: staff switch a space's proximity mode (SPEC §4)."""

from __future__ import annotations

from typing import Any

from .. import protocol
from ..domain.chat import sanitize
from ..fanout import Broadcaster
from ..observability.logging import log
from ..state.base import StateStore
from ..texts import Catalog
from . import payloads
from .dispatch import Handler
from .notices import Notices
from .session import Session


class Proximity:
    """``proximity:set`` (the one event besides ``join:space`` answered before joining)."""

    def __init__(
        self, *, store: StateStore, out: Broadcaster, texts: Catalog, notices: Notices
    ) -> None:
        self.store = store
        self.out = out
        self.texts = texts
        self.notices = notices

    def routes(self) -> dict[str, Handler]:
        return {"proximity:set": self.proximity_set}

    async def proximity_set(self, session: Session, payload: Any) -> None:
        if not session.joined:
            await self._refuse(session, self.texts.text("error.not_joined"))
            return
        request = protocol.parse_proximity(payload)
        assert session.space_id is not None and session.identity is not None
        if not session.identity.privileged:
            log.warn(
                "E1004",
                "Permission denied: proximity:set",
                role=session.identity.role,
                **session.context(),
            )
            await self._refuse(session, self.texts.text("error.permission_denied"))
            return
        await self.store.set_proximity(session.space_id, request.enabled)
        changed = payloads.proximity_changed(
            session.space_id, request.enabled, session.identity.nickname
        )
        await self.out.to_space(session.space_id, "proximity:changed", changed)
        key = "notice.proximity_on" if request.enabled else "notice.proximity_off"
        nickname = sanitize(session.identity.nickname)
        await self.notices.system(session.space_id, self.texts.text(key, nickname=nickname))

    async def _refuse(self, session: Session, message: str) -> None:
        await self.out.to_sid(session.sid, "proximity:error", payloads.refusal(message))

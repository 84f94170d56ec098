"""``chat:system`` notices: "X joined" / "X left" about players, and the other system lines
(proximity switched, moderation, the restart notice).

A player who comes and goes quickly is not announced line by line: the notices of one player
are coalesced (:class:`~spacesync.domain.limits.NoticeThrottle`) and the last state is told.
"""

from __future__ import annotations

import asyncio
import time

from ..domain.chat import sanitize
from ..domain.limits import NoticeThrottle
from ..fanout import Broadcaster
from ..observability.abuse import AbuseCounters
from ..texts import Catalog
from . import payloads
from .dispatch import SessionTable


class Notices:
    """System lines to a space, and the coalesced presence lines of its players."""

    def __init__(
        self,
        *,
        out: Broadcaster,
        texts: Catalog,
        abuse: AbuseCounters,
        sessions: SessionTable,
    ) -> None:
        self.out = out
        self.texts = texts
        self.abuse = abuse
        self.sessions = sessions
        self.throttle = NoticeThrottle()
        self._deferred: dict[tuple[str, str], tuple[str, bool, bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def notice(self, content: str) -> payloads.Payload:
        """A ``chat:system`` message under the system's name in the node's language."""
        return payloads.system_message(content, self.texts.system_sender())

    async def system(self, space_id: str, content: str) -> None:
        await self.out.to_space(space_id, "chat:system", self.notice(content))

    async def broadcast_system(self, content: str) -> None:
        """A system notice to every space this node serves (e.g. before a restart)."""
        spaces = {s.space_id for s in self.sessions.values() if s.space_id is not None}
        for space_id in spaces:
            await self.out.to_space(space_id, "chat:system", self.notice(content), local_only=True)

    async def presence_line(
        self,
        space_id: str,
        player_id: str,
        nickname: str,
        present: bool,
        *,
        tell_local: bool = True,
        lost: bool = False,
    ) -> None:
        """The "X joined" / "X left" chat line about a player, now or coalesced for later.
        ``lost``: the player did not leave but lost the connection, which players are told
        apart, as in FlowSpace (a drop may be worth waiting for; a leave is not)."""
        key = (space_id, player_id)
        when = self.throttle.change(space_id, player_id, present, time.monotonic())
        if when == 0.0:
            await self._send_presence_line(
                space_id, player_id, nickname, present, tell_local, lost=lost
            )
            return
        if when is None:
            if key in self._deferred:
                self._deferred[key] = (nickname, tell_local, lost)
            self.abuse.count("churnNoticeSuppressed")
            return
        self._deferred[key] = (nickname, tell_local, lost)
        self.abuse.count("churnNoticeDeferred")
        asyncio.get_running_loop().call_later(when, self._presence_line_due, space_id, player_id)

    def sweep(self) -> None:
        """Forget the players whose lines can no longer hold back another (nothing deferred,
        none within the interval); run with the node's housekeeping, so that a player who
        joined and stays costs nothing here once the interval is over."""
        self.throttle.sweep(time.monotonic())

    def _presence_line_due(self, space_id: str, player_id: str) -> None:
        nickname, tell_local, lost = self._deferred.pop((space_id, player_id), ("", True, False))
        present = self.throttle.due(space_id, player_id, time.monotonic())
        if present is None or not nickname or self.sessions.shutting_down:
            return
        task = asyncio.create_task(
            self._send_presence_line(space_id, player_id, nickname, present, tell_local, lost=lost)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_presence_line(
        self,
        space_id: str,
        player_id: str,
        nickname: str,
        present: bool,
        tell_local: bool,
        *,
        lost: bool = False,
    ) -> None:
        key = "notice.joined" if present else "notice.disconnected" if lost else "notice.left"
        notice = self.notice(self.texts.text(key, nickname=sanitize(nickname)))
        about = None if present else player_id  # a departure notice names its player
        if tell_local:
            await self.out.to_space(space_id, "chat:system", notice, about=about)
        else:
            self.out.publish_remote(space_id, "chat:system", notice, about=about)

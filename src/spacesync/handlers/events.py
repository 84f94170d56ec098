"""The node's event handlers, assembled: :class:`SpaceServer` builds one object per use case,
merges their routes and binds them to the Socket.IO server through :mod:`.dispatch`.

Use cases (each a small class taking its collaborators in its constructor, with ``routes()``):
:mod:`.membership` (connect, disconnect, join, leave, replaced sessions), :mod:`.movement`,
:mod:`.chat` (chat and whispers), :mod:`.parties`, :mod:`.proximity`, :mod:`.profile`,
:mod:`.moderation` and :mod:`.live`. Every payload goes through :mod:`spacesync.protocol` first;
every identity is the one bound to the socket, never one a client sends; every reply is built by
:mod:`.payloads` and sent through the :class:`~spacesync.fanout.Broadcaster`.

What the rest of the node asks of the handlers (the app, the cluster monitor and bus) is on
:class:`SpaceServer`.
"""

from __future__ import annotations

from typing import Any

from ..chatlog import ChatLog
from ..config import Settings
from ..fanout import Broadcaster
from ..integrations.app_api import AppClient, ExitOutbox
from ..integrations.verify_guard import VerifyGuard
from ..observability.abuse import AbuseCounters
from ..observability.event_counts import EventCounts
from ..state.base import Departed, StateStore
from ..storage import Storage
from ..texts import Catalog
from ..transport import SocketServer
from .auth import Authenticator
from .chat import Chat, ChatLines
from .dispatch import Dispatch, Handler, SessionTable, SocketLink
from .identity import Access
from .live import LiveEvents
from .membership import Membership
from .moderation import Moderation
from .movement import Movement
from .notices import Notices
from .parties import Parties
from .profile import Profiles
from .proximity import Proximity


class SpaceServer:
    """Binds the event handlers to a Socket.IO server."""

    def __init__(
        self,
        sio: SocketServer,
        settings: Settings,
        store: StateStore,
        broadcaster: Broadcaster,
        app: AppClient,
        exits: ExitOutbox,
        abuse: AbuseCounters,
        storage: Storage | None = None,
        *,
        texts: Catalog,
    ) -> None:
        self.texts = texts
        """Every text a player reads, in the node's ``LOCALE`` (logs stay English)."""
        self.settings = settings
        self.store = store
        self.out = broadcaster
        self.storage = storage
        """Opened by the node after the handlers are built; asked for at each use."""
        self.access = Access(settings, lambda: self.storage)
        """Logged-in users' tokens (``AUTH_SESSIONS``) and roles from the database."""
        self.chat_log = ChatLog(broadcaster, Catalog(settings.locale), storage)
        """Writes chat, whispers and party messages after delivery (see :mod:`..chatlog`)."""
        self.link = SocketLink(sio)
        self.sessions = SessionTable()
        self.dispatch = Dispatch(
            link=self.link,
            sessions=self.sessions,
            store=store,
            out=broadcaster,
            texts=texts,
            abuse=abuse,
            events=EventCounts(),
        )
        self.notices = Notices(out=broadcaster, texts=texts, abuse=abuse, sessions=self.sessions)
        self.moderation = Moderation(
            link=self.link,
            out=broadcaster,
            store=store,
            texts=texts,
            sessions=self.sessions,
            storage=lambda: self.storage,
            notice=self.notices.notice,
            refuse=self.dispatch.refuse,
        )
        """Mutes, kicks, bans, message deletion, announcements (see :mod:`.moderation`)."""
        refuse_muted = self.moderation.refuse_muted
        self.live = LiveEvents(
            store=store,
            out=broadcaster,
            texts=texts,
            storage=lambda: self.storage,
            refuse_muted=refuse_muted,
        )
        """Reactions, recording, spotlight and map objects (see :mod:`.live`)."""
        lines = ChatLines(store=store, out=broadcaster, texts=texts, chat_log=self.chat_log)
        self.parties = Parties(
            dispatch=self.dispatch,
            store=store,
            out=broadcaster,
            lines=lines,
            refuse_muted=refuse_muted,
        )
        self.chat = Chat(
            lines=lines,
            store=store,
            out=broadcaster,
            texts=texts,
            refuse_muted=refuse_muted,
            party_chat=self.parties.party_chat,
        )
        self.movement = Movement(
            link=self.link,
            dispatch=self.dispatch,
            sessions=self.sessions,
            store=store,
            out=broadcaster,
        )
        self.profiles = Profiles(store=store, out=broadcaster, texts=texts)
        self.proximity = Proximity(store=store, out=broadcaster, texts=texts, notices=self.notices)
        verifier = VerifyGuard(
            app,
            abuse,
            failure_ttl=settings.verify_failure_ttl,
            failures_per_minute=settings.verify_failures_per_ip,
        )
        self.membership = Membership(
            link=self.link,
            dispatch=self.dispatch,
            sessions=self.sessions,
            store=store,
            out=broadcaster,
            texts=texts,
            exits=exits,
            auth=Authenticator(
                settings=settings, access=self.access, verifier=verifier, abuse=abuse
            ),
            notices=self.notices,
            live=self.live,
            admit=self.moderation.admit,
            announce_departure=self.parties.announce_departure,
        )
        routes: dict[str, Handler] = {
            **self.membership.routes(),
            **self.movement.routes(),
            **self.profiles.routes(),
            **self.chat.routes(),
            **self.parties.routes(),
            **self.proximity.routes(),
            **self.moderation.routes(),
            **self.live.routes(),
        }
        self.dispatch.register(
            routes,
            connect=self.membership.on_connect,
            disconnect=self.membership.on_disconnect,
            recover=self.membership.on_recover,
        )
        self.link.on_raw_event(self.movement.fast_message)

    # -- what the node reads and sets ----------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self.sessions.shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self.sessions.shutting_down = value

    @property
    def events_handled(self) -> int:
        return self.dispatch.events_handled

    @property
    def bad_inputs(self) -> int:
        return self.dispatch.bad_inputs

    def event_counts(self) -> dict[str, int]:
        """Events received by name (``other`` for those without a handler)."""
        return self.dispatch.events.snapshot()

    def socket_count(self) -> int:
        return len(self.sessions)

    def local_spaces(self) -> dict[str, int]:
        return self.sessions.local_spaces()

    # -- the transport's entry points ------------------------------------------------------------

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        await self.membership.on_disconnect(sid, reason)

    # -- shutdown ------------------------------------------------------------------------------

    async def broadcast_system(self, content: str) -> None:
        await self.notices.broadcast_system(content)

    async def departures_settled(self, timeout: float) -> int:
        return await self.membership.departures_settled(timeout)

    # -- the cluster (bus and node monitor) ----------------------------------------------------

    async def evict_replaced_here(self, space_id: str, player_id: str, sid: str) -> None:
        await self.membership.evict_replaced_here(space_id, player_id, sid)

    async def depart_ghost(self, departed: Departed, reason: str, *, log_exit: bool) -> None:
        await self.membership.depart_ghost(departed, reason, log_exit=log_exit)

    async def drop_reaped(self, entries: set[tuple[str, str, str]]) -> None:
        await self.membership.drop_reaped(entries)

    def submit_exit(self, event: Any) -> None:
        self.membership.submit_exit(event)

    async def party_lost(self, space_id: str, player_id: str, party_id: str) -> None:
        await self.parties.party_lost(space_id, player_id, party_id)

    async def announce_restored(self, space_id: str, player: Any) -> None:
        await self.membership.announce_restored(space_id, player)

    def holds_socket(self, space_id: str, player_id: str, sid: str) -> bool:
        return self.membership.holds_socket(space_id, player_id, sid)


__all__ = ["SpaceServer"]

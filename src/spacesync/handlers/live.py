"""Reactions, the recording indicator, spotlights and map objects (FlowSpace's ``media.ts``,
``objects.ts`` and the reaction part of ``chat.ts``).

Payloads are the original's. What differs, and why:

- ``reaction:toggle`` really toggles: the server remembers who reacted with what (per space, in
  the state store), so ``reaction:updated`` says ``add`` or ``remove`` (the original always said
  ``add`` and left the toggling to each client). It goes to the other players only, as in the
  original: FlowSpace's client applies its own reaction at once and toggles again on every
  ``reaction:updated`` it hears.
- Permissions are the roles the join resolved (OWNER or STAFF for recording and map objects),
  not a call to the app per event; a spotlight needs a valid ``SpotlightGrant`` for the player's
  user or guest session, checked in the database each time it is switched on.
- One recording per space and the spotlights in force are shared by every node (Redis), and they
  end when their holder leaves, disconnects or loses their node (the others reap it).
- ``placedBy`` of a map object names the player as stored rows do elsewhere (the ``User.id``,
  the ``GuestSession.id``, or the player id of a development session), as the schema says.

Each handler is validate -> permission -> state or storage -> announce; refusals go to the
sender on the event's own ``*:error`` channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .. import protocol
from ..domain.identity import Identity
from ..fanout import Broadcaster
from ..observability.logging import log
from ..state.base import StateStore, StoreUnavailable
from ..state.live import LiveState, Recording, RedisLiveState, Spotlight, live_state_for
from ..storage import UNSET, InvalidLink, Storage, StorageError
from ..storage.base import SenderType
from ..texts import Catalog
from . import payloads
from .dispatch import Handler
from .session import Session


def _now_ms() -> int:
    return int(time.time() * 1000)


def _subject(identity: Identity) -> dict[str, str | None] | None:
    """How the database names the player (a user, else a guest session), or ``None`` for a
    development session, which no grant can name."""
    if identity.user_id is not None:
        return {"user_id": identity.user_id, "guest_session_id": None}
    if identity.guest_session_id is not None:
        return {"user_id": None, "guest_session_id": identity.guest_session_id}
    return None


def _placer(identity: Identity) -> tuple[str, SenderType]:
    if identity.user_id is not None:
        return identity.user_id, "USER"
    return identity.guest_session_id or identity.player_id, "GUEST"


class LiveEvents:
    """The handlers of this module. ``storage`` is asked for the storage at each use (the node
    opens it after the handlers are built); ``refuse_muted`` is moderation's check."""

    def __init__(
        self,
        *,
        store: StateStore,
        out: Broadcaster,
        texts: Catalog,
        storage: Callable[[], Storage | None],
        refuse_muted: Callable[[Session, str], Awaitable[bool]],
        state: LiveState | None = None,
    ) -> None:
        self.store = store
        self.out = out
        self.texts = texts
        self._storage = storage
        self._refuse_muted = refuse_muted
        self.state = state if state is not None else live_state_for(store)
        if isinstance(self.state, RedisLiveState):
            self.state.listener = self
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def storage(self) -> Storage | None:
        return self._storage()

    def routes(self) -> dict[str, Handler]:
        return {
            "reaction:toggle": self.reaction_toggle,
            "recording:start": self.recording_start,
            "recording:stop": self.recording_stop,
            "spotlight:activate": self.spotlight_activate,
            "spotlight:deactivate": self.spotlight_deactivate,
            "object:place": self.object_place,
            "object:update": self.object_update,
            "object:delete": self.object_delete,
        }

    # -- helpers -------------------------------------------------------------------------------

    async def _refuse(self, session: Session, channel: str, key: str, **params: Any) -> None:
        message = self.texts.text(key, **params)
        await self.out.to_sid(session.sid, channel, payloads.refusal(message))

    async def _denied(self, session: Session, event: str, channel: str, key: str) -> None:
        assert session.identity is not None
        log.warn(
            "E1004",
            f"Permission denied: {event}",
            role=session.identity.role,
            **session.context(),
        )
        await self._refuse(session, channel, key)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _joined(session: Session) -> tuple[str, Identity]:
        assert session.space_id is not None and session.identity is not None
        return session.space_id, session.identity

    # -- reactions -----------------------------------------------------------------------------

    async def reaction_toggle(self, session: Session, payload: Any) -> None:
        request = protocol.parse_reaction(payload)
        space_id, me = self._joined(session)
        if await self._refuse_muted(session, "reaction:error"):
            return  # a muted player says nothing to the space, reactions included
        outcome = await self.state.toggle_reaction(
            space_id, request.message_id, request.type, me.player_id
        )
        if outcome == "full":
            await self._refuse(session, "reaction:error", "error.reaction.full")
            return
        await self.out.to_space(
            space_id,
            "reaction:updated",
            payloads.reaction_updated(request.message_id, request.type, me, outcome),
            skip_sid=session.sid,
        )

    # -- recording -----------------------------------------------------------------------------

    async def recording_start(self, session: Session, payload: Any) -> None:
        protocol.parse_no_fields(payload, "recording:start")
        space_id, me = self._joined(session)
        if not me.privileged:
            await self._denied(
                session, "recording:start", "recording:error", "error.recording.staff_only"
            )
            return
        wanted = Recording(me.player_id, me.nickname, _now_ms())
        running = await self.state.start_recording(space_id, wanted)
        if running != wanted:
            await self._refuse(
                session,
                "recording:error",
                "error.recording.already",
                nickname=running.recorder_nickname,
            )
            return
        await self.out.to_space(space_id, "recording:started", wanted.to_wire(True))
        log.info("I5010", "Recording started", **session.context())

    async def recording_stop(self, session: Session, payload: Any) -> None:
        protocol.parse_no_fields(payload, "recording:stop")
        space_id, me = self._joined(session)
        current = await self.state.recording(space_id)
        if current is None:
            await self._refuse(session, "recording:error", "error.recording.not_recording")
            return
        if current.recorder_id != me.player_id and not me.privileged:
            await self._denied(
                session, "recording:stop", "recording:error", "error.recording.stop_denied"
            )
            return
        stopped = await self.state.stop_recording(space_id, current.recorder_id)
        if stopped is None:  # ended meanwhile, and announced by whoever ended it
            await self._refuse(session, "recording:error", "error.recording.not_recording")
            return
        await self.out.to_space(space_id, "recording:stopped", stopped.to_wire(False))
        log.info("I5011", "Recording stopped", recorderId=stopped.recorder_id, **session.context())

    # -- spotlight -----------------------------------------------------------------------------

    async def spotlight_activate(self, session: Session, payload: Any) -> None:
        protocol.parse_no_fields(payload, "spotlight:activate")
        space_id, me = self._joined(session)
        storage = self.storage
        subject = _subject(me)
        if storage is None or subject is None:
            await self._refuse(session, "spotlight:error", "error.spotlight.no_grant")
            return
        try:
            grant = await storage.spotlight_grant(space_id, **subject)
            if grant is not None:
                await storage.set_spotlight_active(space_id, True, **subject)
        except StorageError as exc:
            log.error("E4010", f"Spotlight grant check failed: {exc}", **session.context())
            await self._refuse(session, "spotlight:error", "error.spotlight.activate_failed")
            return
        if grant is None:
            await self._refuse(session, "spotlight:error", "error.spotlight.no_grant")
            return
        spotlight = Spotlight(me.player_id, me.nickname)
        await self.state.activate_spotlight(space_id, spotlight)
        await self.out.to_space(
            space_id, "spotlight:activated", payloads.spotlight_changed(spotlight, True)
        )
        log.info("I5012", "Spotlight on", **session.context())

    async def spotlight_deactivate(self, session: Session, payload: Any) -> None:
        protocol.parse_no_fields(payload, "spotlight:deactivate")
        space_id, me = self._joined(session)
        gone = await self.state.deactivate_spotlight(space_id, me.player_id)
        if gone is None:
            await self._refuse(session, "spotlight:error", "error.spotlight.not_active")
            return
        await self._spotlight_off(space_id, me, gone)
        log.info("I5013", "Spotlight off", **session.context())

    async def _spotlight_off(self, space_id: str, identity: Identity, gone: Spotlight) -> None:
        """Announce a spotlight switched off, then clear the grant's ``isActive`` in the
        background (the players are told at once; the flag is for the app's admin pages)."""
        await self.out.to_space(
            space_id, "spotlight:deactivated", payloads.spotlight_changed(gone, False)
        )
        storage, subject = self.storage, _subject(identity)
        if storage is not None and subject is not None:
            self._background(self._clear_active(space_id, subject))

    async def _clear_active(self, space_id: str, subject: dict[str, str | None]) -> None:
        storage = self.storage
        if storage is None:
            return
        try:
            await storage.set_spotlight_active(space_id, False, **subject)
        except StorageError as exc:
            log.warn("E4010", f"Spotlight flag not cleared: {exc}", spaceId=space_id)

    # -- map objects ---------------------------------------------------------------------------

    async def object_place(self, session: Session, payload: Any) -> None:
        request = protocol.parse_object_place(payload)
        space_id, me = self._joined(session)
        if not me.privileged:
            await self._denied(session, "object:place", "object:error", "error.object.place_denied")
            return
        placed_by, kind = _placer(me)
        try:
            if self.storage is None:
                raise StorageError("no storage")
            obj = await self.storage.place_object(
                space_id,
                asset_id=request.asset_id,
                x=request.x,
                y=request.y,
                placed_by=placed_by,
                placed_by_type=kind,
                rotation=request.rotation,
                linked_object_id=request.linked_object_id,
                custom_data=request.custom_data,
            )
        except InvalidLink:
            await self._refuse(session, "object:error", "error.object.invalid_link")
            return
        except StorageError as exc:
            log.error("E4010", f"Placing an object failed: {exc}", **session.context())
            await self._refuse(session, "object:error", "error.object.place_failed")
            return
        await self.out.to_space(
            space_id,
            "object:placed",
            payloads.object_placed(obj, me.nickname),
        )

    async def object_update(self, session: Session, payload: Any) -> None:
        request = protocol.parse_object_update(payload)
        space_id, me = self._joined(session)
        if not me.privileged:
            await self._denied(
                session, "object:update", "object:error", "error.object.update_denied"
            )
            return
        try:
            if self.storage is None:
                raise StorageError("no storage")
            obj = await self.storage.update_object(
                space_id,
                request.object_id,
                position=request.position,
                rotation=request.rotation,
                linked_object_id=request.linked_object_id if request.link_given else UNSET,
                custom_data=UNSET if request.custom_data is None else request.custom_data,
            )
        except InvalidLink:
            await self._refuse(session, "object:error", "error.object.invalid_link")
            return
        except StorageError as exc:
            log.error("E4010", f"Changing an object failed: {exc}", **session.context())
            await self._refuse(session, "object:error", "error.object.update_failed")
            return
        if obj is None:
            await self._refuse(session, "object:error", "error.object.absent")
            return
        await self.out.to_space(
            space_id,
            "object:updated",
            payloads.object_updated(obj, me.nickname),
        )

    async def object_delete(self, session: Session, payload: Any) -> None:
        object_id = protocol.parse_object_delete(payload)
        space_id, me = self._joined(session)
        if not me.privileged:
            await self._denied(
                session, "object:delete", "object:error", "error.object.delete_denied"
            )
            return
        try:
            if self.storage is None:
                raise StorageError("no storage")
            deleted = await self.storage.delete_object(space_id, object_id)
        except StorageError as exc:
            log.error("E4010", f"Removing an object failed: {exc}", **session.context())
            await self._refuse(session, "object:error", "error.object.delete_failed")
            return
        if not deleted:
            await self._refuse(session, "object:error", "error.object.absent")
            return
        await self.out.to_space(
            space_id,
            "object:deleted",
            payloads.object_deleted(object_id, me),
        )

    # -- joins and departures ------------------------------------------------------------------

    async def send_join_state(self, session: Session, space_id: str) -> None:
        """What a joiner is told after ``room:joined`` and before ``proximity:status``, in the
        original's order: ``objects:sync`` (when the space has objects), ``recording:status``
        (while recording), ``spotlight:status`` (always). A database or Redis that does not
        answer costs the joiner these, never the join."""
        try:
            await self._send_join_state(session, space_id)
        except Exception as exc:
            log.warn("E3003", f"Live state not sent at join: {exc}", **session.context())

    async def _send_join_state(self, session: Session, space_id: str) -> None:
        assert session.identity is not None
        out, storage = self.out, self.storage
        if storage is not None:
            try:
                objects = await storage.list_objects(space_id)
            except StorageError as exc:
                log.warn("E4010", f"Objects not synced at join: {exc}", **session.context())
                objects = []
            if objects:
                await out.to_sid(session.sid, "objects:sync", payloads.objects_sync(objects))
        try:
            recording = await self._live_recording(space_id)
            spotlights = await self._live_spotlights(space_id)
        except StoreUnavailable:
            recording, spotlights = None, []
        if recording is not None:
            await out.to_sid(session.sid, "recording:status", recording.to_wire(True))
        grant = None
        subject = _subject(session.identity)
        if storage is not None and subject is not None:
            try:
                grant = await storage.spotlight_grant(space_id, **subject)
            except StorageError as exc:
                log.warn("E4010", f"Spotlight grant not read: {exc}", **session.context())
                grant = None
        if grant is None:
            status = payloads.spotlight_status(spotlights)
        else:
            status = payloads.spotlight_status(spotlights, grant.id, grant.expires_at)
        await out.to_sid(session.sid, "spotlight:status", status)

    async def _live_recording(self, space_id: str) -> Recording | None:
        """The space's recording, ended first if its recorder is no longer in the space (a
        departure whose announcement was lost, a cluster that stopped as a whole)."""
        recording = await self.state.recording(space_id)
        if recording is None:
            return None
        if await self.store.player(space_id, recording.recorder_id) is not None:
            return recording
        stopped = await self.state.stop_recording(space_id, recording.recorder_id)
        if stopped is not None:
            await self.out.to_space(space_id, "recording:stopped", stopped.to_wire(False))
        return None

    async def _live_spotlights(self, space_id: str) -> list[Spotlight]:
        """The spotlights in force, without those of players no longer in the space."""
        spotlights = await self.state.spotlights(space_id)
        if not spotlights:
            return []
        present = {p.id for p in await self.store.players(space_id)}
        kept = []
        for spotlight in spotlights:
            if spotlight.participant_id in present:
                kept.append(spotlight)
                continue
            gone = await self.state.deactivate_spotlight(space_id, spotlight.participant_id)
            if gone is not None:
                await self.out.to_space(
                    space_id, "spotlight:deactivated", payloads.spotlight_changed(gone, False)
                )
        return kept

    async def recording_restored(
        self, space_id: str, recording: Recording, displaced: Recording | None
    ) -> None:
        """This node wrote its recorder's recording back after Redis lost it. Players who
        joined meanwhile got no ``recording:status``: everyone gets it now (the same state for
        those who knew). An older recording it replaced, written back by another node from a
        stale copy, is told stopped first."""
        out = self.out
        if displaced is not None:
            await out.to_space(space_id, "recording:stopped", displaced.to_wire(False))
        await out.to_space(space_id, "recording:status", recording.to_wire(True))
        log.info(
            "I5010",
            "Recording written back after Redis lost it",
            spaceId=space_id,
            recorderId=recording.recorder_id,
        )

    async def recording_lost(self, space_id: str, recording: Recording, running: Recording) -> None:
        """This node's recorder's recording could not be written back: another one was
        started meanwhile (the newest wins). Its players are told it stopped, then which one
        runs, so the indicator stays on."""
        out = self.out
        await out.to_space(space_id, "recording:stopped", recording.to_wire(False))
        await out.to_space(space_id, "recording:status", running.to_wire(True))
        log.warn(
            "E3003",
            "A recording could not be written back after Redis lost it: another one runs",
            spaceId=space_id,
            recorderId=recording.recorder_id,
            runningRecorderId=running.recorder_id,
        )

    async def recording_ended(self, space_id: str, recording: Recording) -> None:
        """The recorder left while Redis was away: told now, once it is back."""
        await self.out.to_space(space_id, "recording:stopped", recording.to_wire(False))
        log.info(
            "I5011",
            "Recording stopped: the recorder left",
            spaceId=space_id,
            playerId=recording.recorder_id,
        )

    async def spotlight_ended(self, space_id: str, spotlight: Spotlight) -> None:
        """The spotlight holder left while Redis was away: told now, once it is back."""
        await self.out.to_space(
            space_id, "spotlight:deactivated", payloads.spotlight_changed(spotlight, False)
        )

    async def player_departed(self, space_id: str, identity: Identity) -> None:
        """A player left the space (leave, disconnect, or their node died and this node reaped
        them): their recording ends and their spotlight goes off, announced before
        ``player:left`` as in the original. Each is one atomic step in the store, so when two
        nodes notice the same departure only one announces it."""
        try:
            stopped = await self.state.stop_recording(space_id, identity.player_id)
            if stopped is not None:
                await self.out.to_space(space_id, "recording:stopped", stopped.to_wire(False))
                log.info(
                    "I5011",
                    "Recording stopped: the recorder left",
                    spaceId=space_id,
                    playerId=identity.player_id,
                )
            gone = await self.state.deactivate_spotlight(space_id, identity.player_id)
            if gone is not None:
                await self._spotlight_off(space_id, identity, gone)
        except StoreUnavailable:
            pass  # a join later ends what is left (see _live_recording)
        except Exception as exc:
            log.error("E3003", "Ending a recording or spotlight failed", exc=exc, spaceId=space_id)

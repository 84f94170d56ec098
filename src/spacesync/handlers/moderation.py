"""Moderation: mute, unmute, kick (and ban), unban, message deletion and announcements.

Payloads, events and their order are FlowSpace's (``server/handlers/admin.ts``); the rows written
are the app's (its member mute and kick routes, ``SpaceEventLog``). Where spacesync differs:

- permissions come from the role the join resolved (database or app), and staff act only on
  players of a lower role;
- a mute blocks everything a player says to others (chat, whispers, party messages, reactions,
  announcements), not chat alone, and a timed mute ends by itself, told to the space;
- a ban is kept in the database and refused at the join with ``error {code: "BANNED"}``;
- a kick reaches the player's socket on whichever node holds it (the space's bus channel).

Players the database cannot name (development sessions) keep their mute or ban in the state
store under their player id, so a rejoin (through any node) finds it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import protocol
from ..domain.chat import sanitize
from ..domain.identity import Identity
from ..domain.moderation import Mute, TargetRef, may_act_on, mute_until
from ..fanout import Broadcaster
from ..observability.logging import log
from ..state.base import StateStore, StoreUnavailable
from ..storage import Storage, StorageError
from ..storage.base import ChatRestriction, Restriction, utc_now
from ..texts import Catalog
from . import payloads
from .dispatch import Handler, SessionTable, SocketLink
from .session import Session

DB_TIMEOUT = 3.0
"""Seconds a moderation action waits for the database before going on without it: the action
still takes effect on the live sockets, and the moderator is told it was not saved."""


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an action is about: the player in the space (``player_id`` set when present) and
    how the database names them (``user_id`` or ``guest_session_id``, or neither)."""

    player_id: str | None
    nickname: str
    role: str
    user_id: str | None
    guest_session_id: str | None
    session_token: str | None = None

    @property
    def member_id(self) -> str:
        """``memberId`` on the wire: the player id, as the original sends it."""
        return self.player_id or self.user_id or self.guest_session_id or ""


def _by(identity: Identity) -> str:
    """How rows name the moderator: the user id, as the app's routes write it."""
    return identity.user_id or identity.guest_session_id or identity.player_id


def _minutes(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == int(value) else value


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


class Moderation:
    """The ``admin:*`` handlers and the checks other handlers ask of them."""

    def __init__(
        self,
        *,
        link: SocketLink,
        out: Broadcaster,
        store: StateStore,
        texts: Catalog,
        sessions: SessionTable,
        storage: Callable[[], Storage | None],
        notice: Callable[[str], dict[str, Any]],
        refuse: Callable[[Session, str, str], Awaitable[None]],
    ) -> None:
        self.link = link
        self.out = out
        self.store = store
        self.texts = texts
        self.sessions = sessions
        self._storage = storage
        self._notice = notice
        self._refuse = refuse
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> dict[str, Handler]:
        return {
            "admin:mute": self.mute,
            "admin:unmute": self.unmute,
            "admin:kick": self.kick,
            "admin:unban": self.unban,
            "admin:deleteMessage": self.delete_message,
            "admin:announce": self.announce,
        }

    # -- checks for the other handlers ----------------------------------------------------------

    async def admit(self, session: Session, space_id: str, identity: Identity) -> bool:
        """At the join: refuse a banned player (``error BANNED`` and disconnect), and put a mute
        still in force back on the socket. A database that does not answer lets the player in
        unrestricted (logged): an outage must not lock a whole space out."""
        self._set_mute(session, None)
        target = Target(
            identity.player_id,
            identity.nickname,
            identity.role,
            identity.user_id,
            identity.guest_session_id,
            identity.session_token,
        )
        restriction = await self._restriction(space_id, target, session.context())
        if restriction is None:
            return True
        if restriction.restriction == "BANNED":
            log.info("I3010", "Banned player refused at join", **session.context())
            await self._refuse(session, self.texts.text("error.join.banned"), "BANNED")
            return False
        if restriction.restriction == "MUTED":
            self._set_mute(session, Mute(restriction.until, restriction.reason))
        return True

    async def refuse_muted(self, session: Session, channel: str, action: str | None = None) -> bool:
        """True, after telling the sender on ``channel``, when the sender is muted: the text
        names the time left of a timed mute."""
        mute = session.mute
        if mute is None:
            return False
        now = utc_now()
        if mute.lapsed(now):
            self._set_mute(session, None)
            return False
        seconds = mute.remaining_seconds(now)
        if seconds is None:
            payload = payloads.muted(self.texts.text("error.muted"), action=action)
        else:
            payload = payloads.muted(
                self.texts.text("error.muted_for", seconds=seconds),
                action=action,
                retry_after=seconds,
                muted_until=mute.iso_until(),
            )
        await self.out.to_sid(session.sid, channel, payload)
        return True

    # -- admin:mute / admin:unmute ---------------------------------------------------------------

    async def mute(self, session: Session, payload: Any) -> None:
        request = protocol.parse_admin_mute(payload)
        actor = await self._actor(session, "mute")
        if actor is None:
            return
        target = await self._target(session, "mute", request.target, present=True)
        if target is None or not await self._may(session, "mute", actor, target):
            return
        space_id = _space(session)
        mute = Mute(mute_until(utc_now(), request.minutes), request.reason)
        saved = await self._persist(space_id, target, "MUTED", mute, _by(actor), session)
        order = {
            "t": "mute",
            "p": target.player_id,
            "until": _ms(mute.until),
            "reason": mute.reason,
        }
        await self._signal(space_id, order)
        moderator, nickname = sanitize(actor.nickname), sanitize(target.nickname)
        if request.minutes is None:
            text = self.texts.text("notice.muted", moderator=moderator, nickname=nickname)
        else:
            text = self.texts.text(
                "notice.muted_for", moderator=moderator, nickname=nickname, minutes=request.minutes
            )
        await self._system(space_id, self.texts.with_reason(text, request.reason))
        data = payloads.member_action(
            target,
            actor,
            "muted",
            duration=_minutes(request.minutes),
            reason=request.reason,
            mutedUntil=mute.iso_until(),
        )
        await self.out.to_space(space_id, "member:muted", data)
        self._log_event(
            space_id,
            "MEMBER_MUTED",
            target,
            {
                "mutedBy": _by(actor),
                "duration": _minutes(request.minutes),
                "reason": request.reason,
                "mutedUntil": mute.iso_until(),
            },
        )
        if not saved:
            await self._error(session, "mute", "error.admin.not_saved", nickname=nickname)

    async def unmute(self, session: Session, payload: Any) -> None:
        request = protocol.parse_admin_target(payload, "admin:unmute")
        actor = await self._actor(session, "unmute")
        if actor is None:
            return
        target = await self._target(session, "unmute", request.target, present=False)
        if target is None or not await self._may(session, "unmute", actor, target):
            return
        space_id = _space(session)
        saved = await self._persist(space_id, target, "NONE", None, _by(actor), session)
        if target.player_id is not None:
            await self._signal(space_id, {"t": "unmute", "p": target.player_id})
        moderator, nickname = sanitize(actor.nickname), sanitize(target.nickname)
        await self._system(
            space_id, self.texts.text("notice.unmuted", moderator=moderator, nickname=nickname)
        )
        data = payloads.member_action(target, actor, "unmuted")
        await self.out.to_space(space_id, "member:unmuted", data)
        self._log_event(space_id, "MEMBER_UNMUTED", target, {"unmutedBy": _by(actor)})
        if not saved:
            await self._error(session, "unmute", "error.admin.not_saved", nickname=nickname)

    # -- admin:kick / admin:unban -------------------------------------------------------------

    async def kick(self, session: Session, payload: Any) -> None:
        request = protocol.parse_admin_kick(payload)
        actor = await self._actor(session, "kick")
        if actor is None:
            return
        target = await self._target(session, "kick", request.target, present=True)
        if target is None or not await self._may(session, "kick", actor, target):
            return
        space_id = _space(session)
        saved = True
        if request.ban:  # before anyone is told: a quick rejoin must already be refused
            ban = Mute(None, request.reason)
            saved = await self._persist(space_id, target, "BANNED", ban, _by(actor), session)
        moderator, nickname = sanitize(actor.nickname), sanitize(target.nickname)
        key = "notice.banned" if request.ban else "notice.kicked"
        text = self.texts.text(key, moderator=moderator, nickname=nickname)
        await self._system(space_id, self.texts.with_reason(text, request.reason))
        data = payloads.member_action(
            target, actor, "kicked", reason=request.reason, banned=request.ban
        )
        await self.out.to_space(space_id, "member:kicked", data)
        await self._signal(space_id, {"t": "kick", "p": target.player_id, "ban": request.ban})
        self._log_event(
            space_id,
            "MEMBER_KICKED",
            target,
            {"kickedBy": _by(actor), "reason": request.reason, "banned": request.ban},
        )
        if not saved:
            await self._error(session, "kick", "error.admin.not_saved", nickname=nickname)

    async def unban(self, session: Session, payload: Any) -> None:
        """The target is not in the space (a ban keeps them out), so it is named by
        ``"user:<id>"``, ``"guest:<GuestSession.id>"``, a member id, a user id or, for a
        development session, its player id."""
        request = protocol.parse_admin_target(payload, "admin:unban")
        actor = await self._actor(session, "unban")
        if actor is None:
            return
        target = await self._target(session, "unban", request.target, present=False)
        if target is None:
            return
        space_id = _space(session)
        current = await self._restriction(space_id, target, session.context())
        nickname = sanitize(target.nickname)
        if current is None or current.restriction != "BANNED":
            await self._error(session, "unban", "error.admin.not_banned", nickname=nickname)
            return
        saved = await self._persist(space_id, target, "NONE", None, _by(actor), session)
        if not saved:
            await self._error(session, "unban", "error.admin.failed")
            return
        moderator = sanitize(actor.nickname)
        await self._system(
            space_id, self.texts.text("notice.unbanned", moderator=moderator, nickname=nickname)
        )
        data = payloads.member_action(target, actor, "unbanned")
        await self.out.to_space(space_id, "member:unbanned", data)

    # -- admin:deleteMessage / admin:announce ------------------------------------------------------

    async def delete_message(self, session: Session, payload: Any) -> None:
        message_id = protocol.parse_admin_delete(payload)
        actor = await self._actor(session, "deleteMessage")
        if actor is None:
            return
        space_id = _space(session)
        storage = self._storage()
        if storage is None:
            await self._error(session, "deleteMessage", "error.admin.no_history")
            return
        try:
            async with asyncio.timeout(DB_TIMEOUT):
                # Only a message of this space is found: another space's id is "not found".
                message = await storage.get_message(space_id, message_id)
                deleted = message is not None and await storage.soft_delete_message(
                    space_id, message_id, _by(actor)
                )
        except (StorageError, TimeoutError) as exc:
            log.error("E4008", "Deleting a message failed", exc=exc, **session.context())
            await self._error(session, "deleteMessage", "error.admin.failed")
            return
        if message is None or not deleted:
            await self._error(session, "deleteMessage", "error.admin.message_absent")
            return
        self._log_event(
            space_id,
            "MESSAGE_DELETED",
            Target(None, "", "", actor.user_id, None if actor.user_id else actor.guest_session_id),
            {
                "messageId": message_id,
                "deletedBy": _by(actor),
                "originalSenderId": message.sender_id,
            },
        )
        data = payloads.message_deleted(message_id, actor)
        await self.out.to_space(space_id, "chat:messageDeleted", data)

    async def announce(self, session: Session, payload: Any) -> None:
        """Neutralised like chat and counted with the sender's chat (5 per 5 s, no third
        identical message); the event has its own per-socket limit besides. Not stored: the
        original sends announcements only to those present."""
        content = protocol.parse_admin_announce(payload)
        actor = await self._actor(session, "announce")
        if actor is None or await self.refuse_muted(session, "admin:error", "announce"):
            return
        text = sanitize(content).strip()
        if not text:
            await self._error(session, "announce", "error.admin.announcement_empty")
            return
        decision = await self.store.allow_chat(actor.player_id, content, time.time())
        if not decision.allowed:
            if decision.refusal is not None:
                message = self.texts.render(decision.refusal)
            else:
                message = self.texts.text("error.rate_limited.announce", seconds=1)
            reply = payloads.admin_rate_limited(message, decision.retry_after)
            await self.out.to_sid(session.sid, "admin:error", reply)
            return
        data = payloads.announcement(text, actor, int(time.time() * 1000))
        await self.out.to_space(_space(session), "space:announcement", data)

    # -- signals between nodes -----------------------------------------------------------------

    async def on_signal(self, space_id: str, body: dict[str, Any]) -> None:
        """An order from another node about players of a space: applied to this node's sockets
        of that player, if any."""
        await self._apply(space_id, body)

    async def _signal(self, space_id: str, body: dict[str, Any]) -> None:
        """Apply an order to this node's sockets of the player and send it to the others."""
        self.out.signal_elsewhere(space_id, body)
        await self._apply(space_id, body)

    async def _apply(self, space_id: str, body: dict[str, Any]) -> None:
        player_id = body.get("p")
        kind = body.get("t")
        here = [
            s
            for s in list(self.sessions.values())
            if s.space_id == space_id
            and s.identity is not None
            and s.identity.player_id == player_id
            and s.closing_reason is None
        ]
        for session in here:
            if kind == "mute":
                until = body.get("until")
                when = None if until is None else datetime.fromtimestamp(until / 1000, UTC)
                self._set_mute(session, Mute(when, body.get("reason")))
            elif kind == "unmute":
                self._set_mute(session, None)
            elif kind == "kick":
                await self._disconnect(session, bool(body.get("ban")))

    async def _disconnect(self, session: Session, banned: bool) -> None:
        """The kick text on ``error`` (code KICKED or BANNED), then the disconnect; the official
        client does not reconnect after a disconnect by the server."""
        session.closing_reason = "kicked"
        key, code = ("error.kicked.banned", "BANNED") if banned else ("error.kicked", "KICKED")
        await self.out.to_sid(session.sid, "error", payloads.error(self.texts.text(key), code))
        self.out.write_out()  # the error goes before the disconnect
        log.info("I3011", "Player kicked", banned=banned, **session.context())
        await self.link.disconnect(session.sid)

    # -- mutes on sockets ----------------------------------------------------------------------

    def _set_mute(self, session: Session, mute: Mute | None) -> None:
        if session.mute_timer is not None:
            session.mute_timer.cancel()
            session.mute_timer = None
        session.mute = mute
        if mute is None or mute.until is None:
            return
        delay = max(0.0, (mute.until - utc_now()).total_seconds())
        loop = asyncio.get_running_loop()
        session.mute_timer = loop.call_later(delay, self._mute_lapsed, session, mute)

    def _mute_lapsed(self, session: Session, mute: Mute) -> None:
        """A timed mute ran out on this player's socket: the space sees ``member:unmuted``
        (its member lists drop the muted mark) and the player is told they may speak again."""
        if session.mute is not mute:
            return
        session.mute, session.mute_timer = None, None
        if session.space_id is None or session.identity is None or session.closing_reason:
            return
        self._spawn(self._tell_lapsed(session.space_id, session.sid, session.identity))

    async def _tell_lapsed(self, space_id: str, sid: str, identity: Identity) -> None:
        data = payloads.mute_lapsed(identity, self.texts.system_sender())
        await self.out.to_space(space_id, "member:unmuted", data)
        text = self.texts.text("notice.mute_ended", nickname=sanitize(identity.nickname))
        await self.out.to_sid(sid, "chat:system", self._notice(text))

    # -- who acts, on whom ---------------------------------------------------------------------

    async def _actor(self, session: Session, action: str) -> Identity | None:
        identity = session.identity
        assert identity is not None
        if identity.privileged:
            return identity
        log.warn(
            "E1004", f"Permission denied: admin:{action}", role=identity.role, **session.context()
        )
        await self._error(session, action, "error.admin.staff_only", code="FORBIDDEN")
        return None

    async def _may(self, session: Session, action: str, actor: Identity, target: Target) -> bool:
        if target.player_id is not None and target.player_id == actor.player_id:
            await self._error(session, action, "error.admin.target_self", code="FORBIDDEN")
            return False
        if not may_act_on(actor.role, target.role):
            await self._error(session, action, "error.admin.outranked", code="FORBIDDEN")
            return False
        return True

    async def _target(
        self, session: Session, action: str, ref: TargetRef, *, present: bool
    ) -> Target | None:
        """The player the client named, in the space; with ``present=False`` also a member
        who is not (found by the database, or by a development session's kept restriction)."""
        space_id = _space(session)
        if ref.kind == "nickname":
            matches = await self.store.players_named(space_id, ref.value)
            if len(matches) == 1:
                return _of(matches[0].identity)
            await self._error(
                session,
                action,
                "error.admin.target_absent",
                code="NOT_FOUND",
                nickname=ref.value,
            )
            return None
        found = await self._present(space_id, ref)
        if found is None and not present:
            found = await self._absent(space_id, ref, session)
        if found is None:
            await self._error(
                session, action, "error.admin.target_unknown", code="NOT_FOUND", target=ref.value
            )
        return found

    async def _present(self, space_id: str, ref: TargetRef) -> Target | None:
        if ref.kind == "id":
            player = await self.store.player(space_id, ref.value)
            if player is not None:
                return _of(player.identity)
        for player in await self.store.players(space_id):
            identity = player.identity
            if ref.kind in ("user", "id") and identity.user_id == ref.value:
                return _of(identity)
            if ref.kind == "guest" and identity.guest_session_id == ref.value:
                return _of(identity)
        return None

    async def _absent(self, space_id: str, ref: TargetRef, session: Session) -> Target | None:
        if ref.kind == "user":
            return Target(None, ref.value, "PARTICIPANT", ref.value, None)
        if ref.kind == "guest":
            return Target(None, ref.value, "PARTICIPANT", None, ref.value)
        storage = self._storage()
        if storage is not None:
            try:
                async with asyncio.timeout(DB_TIMEOUT):
                    members = await storage.list_members(space_id)
            except (StorageError, TimeoutError) as exc:
                log.warn("E4008", f"Member lookup failed: {exc}", **session.context())
                members = []
            for member in members:
                if ref.value in (member.id, member.user_id):
                    return Target(
                        None,
                        member.display_name or ref.value,
                        member.role,
                        member.user_id,
                        member.guest_session_id,
                    )
        with contextlib.suppress(StoreUnavailable):
            if await self.store.player_restriction(space_id, ref.value) is not None:
                return Target(ref.value, ref.value, "PARTICIPANT", None, None)
        return None

    # -- restrictions where they are kept ------------------------------------------------------

    async def _subject(self, space_id: str, target: Target) -> tuple[str | None, str | None] | None:
        """``(user_id, guest_session_id)`` as the database names the target, or ``None`` for a
        development session (kept in the state store instead)."""
        if target.user_id is not None:
            return target.user_id, None
        if target.guest_session_id is not None:
            return None, target.guest_session_id
        token = target.session_token
        storage = self._storage()
        if not token or token.startswith("dev-") or storage is None:
            return None
        async with asyncio.timeout(DB_TIMEOUT):
            guest_id = await storage.guest_session_id(space_id, token)
        return None if guest_id is None else (None, guest_id)

    async def _restriction(
        self, space_id: str, target: Target, ctx: dict[str, Any]
    ) -> Restriction | None:
        storage = self._storage()
        try:
            subject = await self._subject(space_id, target)
            if subject is not None and storage is not None:
                async with asyncio.timeout(DB_TIMEOUT):
                    found = await storage.get_restriction(
                        space_id, user_id=subject[0], guest_session_id=subject[1]
                    )
                if found is not None:
                    return found
        except (StorageError, TimeoutError) as exc:
            log.warn("E4008", f"Restriction lookup failed; none applied: {exc}", **ctx)
        if target.player_id is None:
            return None
        try:
            record = await self.store.player_restriction(space_id, target.player_id)
        except StoreUnavailable:
            return None
        if record is None:
            return None
        until = record.get("until")
        return Restriction(
            record["restriction"],
            None if until is None else datetime.fromtimestamp(until / 1000, UTC),
            record.get("by"),
            record.get("reason"),
        )

    async def _persist(
        self,
        space_id: str,
        target: Target,
        restriction: ChatRestriction,
        mute: Mute | None,
        by: str,
        session: Session,
    ) -> bool:
        """Write the restriction where it is kept: the database for players it names, the state
        store for the others, and the state store too when the database fails (so the player's
        rejoins still find it). False when the database should have kept it and did not."""
        storage = self._storage()
        saved = False
        in_store = False
        try:
            subject = await self._subject(space_id, target)
            if subject is None:
                saved = in_store = True  # a development session: the state store is its place
            elif storage is not None:
                async with asyncio.timeout(DB_TIMEOUT):
                    await storage.set_restriction(
                        space_id,
                        restriction,
                        user_id=subject[0],
                        guest_session_id=subject[1],
                        until=mute.until if mute else None,
                        by=None if restriction == "NONE" else by,
                        reason=mute.reason if mute else None,
                    )
                saved = True
        except (StorageError, TimeoutError) as exc:
            log.error(
                "E4008", f"Saving a {restriction} restriction failed", exc=exc, **session.context()
            )
        if target.player_id is None or not (in_store or not saved or restriction == "NONE"):
            return saved
        record = None
        if restriction != "NONE":
            record = {
                "restriction": restriction,
                "until": _ms(mute.until) if mute else None,
                "by": by,
                "reason": mute.reason if mute else None,
            }
        try:
            await self.store.set_player_restriction(space_id, target.player_id, record)
        except StoreUnavailable:
            return False
        return saved

    # -- small things ---------------------------------------------------------------------------

    def _log_event(
        self, space_id: str, event_type: str, target: Target, payload: dict[str, Any]
    ) -> None:
        """A ``SpaceEventLog`` row as the app's routes write it, in the background: the players
        were told already, and a slow database must not hold the moderator's next action."""
        storage = self._storage()
        if storage is None:
            return

        async def write() -> None:
            try:
                async with asyncio.timeout(DB_TIMEOUT):
                    await storage.log_event(
                        space_id,
                        event_type,
                        user_id=target.user_id,
                        guest_session_id=None if target.user_id else target.guest_session_id,
                        payload=_present(payload),
                    )
            except (StorageError, TimeoutError) as exc:
                log.warn(
                    "E4008", f"Event log row {event_type} not written: {exc}", spaceId=space_id
                )

        self._spawn(write())

    async def _system(self, space_id: str, text: str) -> None:
        await self.out.to_space(space_id, "chat:system", self._notice(text))

    async def _error(
        self, session: Session, action: str, key: str, *, code: str | None = None, **params: Any
    ) -> None:
        """``admin:error {action, message}`` as the original sends it, with a ``code`` when one
        helps the client tell refusals apart."""
        message = self.texts.text(key, **params)
        await self.out.to_sid(
            session.sid, "admin:error", payloads.admin_error(action, message, code)
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _space(session: Session) -> str:
    assert session.space_id is not None
    return session.space_id


def _of(identity: Identity) -> Target:
    return Target(
        identity.player_id,
        identity.nickname,
        identity.role,
        identity.user_id,
        identity.guest_session_id,
        identity.session_token,
    )


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """Without the fields that are ``None``: the original leaves them ``undefined``."""
    return {k: v for k, v in data.items() if v is not None}

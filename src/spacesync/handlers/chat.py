"""Chat: ``chat:message`` and ``whisper:send`` (SPEC §4, §6), and what every message to other
players shares (:class:`ChatLines`): the chat rules, the ChatMessageData, and the hand-over to
the history writer, whose id update replaces the temporary ``msg-`` id (``chatlog.py``).

Party messages are the parties' (:mod:`.parties`); a ``chat:message`` of type ``party`` is
handed to them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from .. import protocol
from ..chatlog import Author, ChatLog, Pending
from ..domain.chat import sanitize
from ..fanout import Broadcaster
from ..observability.logging import log
from ..protocol import BadInput, ChatMessage
from ..state.base import StateStore
from ..texts import Catalog, Text
from . import payloads
from .dispatch import Handler
from .session import Session

RefuseMuted = Callable[[Session, str], Awaitable[bool]]
"""Moderation's check: True, after telling the sender on the channel, when they are muted."""
PartyChat = Callable[[Session, ChatMessage], Awaitable[None]]


def require_text(message: ChatMessage) -> None:
    """A message that was only markup would reach the others empty: refused instead."""
    if not sanitize(message.content).strip():
        raise BadInput("error.chat.no_text")


class ChatLines:
    """The chat rules, the lines and their history, for chat, whispers and party messages."""

    def __init__(
        self, *, store: StateStore, out: Broadcaster, texts: Catalog, chat_log: ChatLog
    ) -> None:
        self.store = store
        self.out = out
        self.texts = texts
        self.chat_log = chat_log

    def compose(self, session: Session, message: ChatMessage, **extra: Any) -> dict[str, Any]:
        """The ChatMessageData of ``message`` from the sender, neutralised (SPEC §6)."""
        assert session.identity is not None
        content = sanitize(message.content)
        return payloads.chat_line(
            session.identity, content, message.type, message.reply_to, **extra
        )

    def save(
        self,
        session: Session,
        kind: Literal["chat", "whisper", "party"],
        data: dict[str, Any],
        recipients: tuple[str, ...] = (),
        *,
        target: Author | None = None,
        party_id: str | None = None,
    ) -> None:
        """Hand a delivered message to the history writer: the rows keep what the players saw
        (the neutralised content, the nickname at the time), and ``data["id"]`` is the
        temporary id the writer's id update replaces."""
        assert session.space_id is not None and session.identity is not None
        self.chat_log.submit(
            Pending(
                kind=kind,
                space_id=session.space_id,
                temp_id=data["id"],
                author=Author.of(session.identity),
                sender_name=session.identity.nickname,
                content=data["content"],
                timestamp_ms=data["timestamp"],
                sender_sid=session.sid,
                recipients=recipients,
                target=target,
                party_id=party_id,
            )
        )

    async def rate_limited(self, session: Session, content: str, channel: str) -> bool:
        """True, after telling the sender on ``channel``, when the chat rules refuse it."""
        assert session.identity is not None
        decision = await self.store.allow_chat(session.identity.player_id, content, time.time())
        if decision.allowed:
            return False
        log.info(
            "E3002", "Message rejected by rate limit", rule=decision.reason, **session.context()
        )
        refusal = decision.refusal or Text("error.rate_limited.generic", {"seconds": 1})
        message = self.texts.render(refusal)
        await self.out.to_sid(
            session.sid, channel, payloads.chat_refused(message, decision.retry_after)
        )
        return True


class Chat:
    """``chat:message`` and ``whisper:send``."""

    def __init__(
        self,
        *,
        lines: ChatLines,
        store: StateStore,
        out: Broadcaster,
        texts: Catalog,
        refuse_muted: RefuseMuted,
        party_chat: PartyChat,
    ) -> None:
        self.lines = lines
        self.store = store
        self.out = out
        self.texts = texts
        self._refuse_muted = refuse_muted
        self._party_chat = party_chat

    def routes(self) -> dict[str, Handler]:
        return {"chat:message": self.chat_message, "whisper:send": self.whisper_send}

    async def chat_message(self, session: Session, payload: Any) -> None:
        message = protocol.parse_chat(payload)
        if message.type == "whisper":
            if message.target_id is None and message.target_nickname is None:
                raise BadInput("error.whisper.no_target")
            await self._whisper(session, message)
            return
        if message.type == "party":
            await self._party_chat(session, message)
            return
        require_text(message)
        if await self._refuse_muted(session, "chat:error"):
            return
        if await self.lines.rate_limited(session, message.content, "chat:error"):
            return
        assert session.space_id is not None
        data = self.lines.compose(session, message)
        await self.out.to_space(session.space_id, "chat:message", data)
        self.lines.save(session, "chat", data)

    async def whisper_send(self, session: Session, payload: Any) -> None:
        await self._whisper(session, protocol.parse_whisper(payload))

    async def _whisper(self, session: Session, message: ChatMessage) -> None:
        assert session.space_id is not None and session.identity is not None
        require_text(message)
        space_id, me = session.space_id, session.identity.player_id
        if message.target_id == me:
            await self._whisper_error(session, "error.whisper.self")
            return
        if await self._refuse_muted(session, "whisper:error"):
            return
        # The limit before the lookup: in a cluster a lookup reads Redis, so a flood of
        # whispers must be refused before it costs anything.
        if await self.lines.rate_limited(session, message.content, "whisper:error"):
            return
        if message.target_id is not None:
            target = await self.store.player(space_id, message.target_id)
            if target is None:
                await self._whisper_error(session, "error.whisper.target_absent")
                return
        else:
            assert message.target_nickname is not None
            matches = await self.store.players_named(space_id, message.target_nickname)
            if not matches:
                await self._whisper_error(
                    session, "error.whisper.nickname_absent", nickname=message.target_nickname
                )
                return
            if len(matches) > 1:
                await self._whisper_error(
                    session, "error.whisper.nickname_ambiguous", nickname=message.target_nickname
                )
                return
            target = matches[0]
        if target.id == me:
            await self._whisper_error(session, "error.whisper.self")
            return
        data = self.lines.compose(
            session, message, targetId=target.id, targetNickname=target.identity.nickname
        )
        received = payloads.whisper_received(data)
        await self.out.to_players(space_id, [target.id], "whisper:received", received)
        await self.out.to_players(space_id, [target.id], "whisper:receive", data)
        await self.out.to_sid(session.sid, "whisper:sent", data)
        self.lines.save(session, "whisper", data, (target.id,), target=Author.of(target.identity))

    async def _whisper_error(self, session: Session, key: str, **params: Any) -> None:
        """The text ``key`` on ``whisper:error``; a nickname among ``params`` is the
        neutralised one the client sent (the original names it too)."""
        message = self.texts.text(key, **params)
        await self.out.to_sid(session.sid, "whisper:error", payloads.refusal(message))

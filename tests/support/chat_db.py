"""FlowSpace's database as the chat history tests see it: a throwaway PostgreSQL database with
the app's tables, a space with its users and a guest session, and the app's own history query.

``history_for`` is the query of the app's ``GET /api/spaces/[id]/messages`` route, written as
SQL: what a member of the space is shown (public messages, whispers they sent or received by
``senderId``/``targetId``, party messages), so the tests check what a user would really see.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from support.storage_world import dsn_for


@dataclass
class ChatWorld:
    """One space of the app: ``owner``, ``alice`` and ``bob`` are users; ``guest_id`` is the
    ``GuestSession.id`` of ``guest_token``. Tokens are what the app would hand the browser."""

    database: str
    space: str
    owner: str
    alice: str
    bob: str
    guest_id: str
    guest_token: str

    @property
    def dsn(self) -> str:
        return dsn_for(self.database)


async def seed_chat_world(name: str) -> ChatWorld:
    """One seeded space in the database ``name``, which has FlowSpace's tables (the tests get
    one with ``database_fixture(seed_chat_world)`` from :mod:`support.storage_world`)."""
    suffix = secrets.token_hex(4)
    world = ChatWorld(
        database=name,
        space=f"cspace{suffix}",
        owner=f"cowner{suffix}",
        alice=f"calice{suffix}",
        bob=f"cbob{suffix}",
        guest_id=f"cguest{suffix}",
        guest_token=f"guest-token-{suffix}",
    )
    conn = await asyncpg.connect(world.dsn, timeout=5)
    try:
        for user in (world.owner, world.alice, world.bob):
            await conn.execute(
                'INSERT INTO "User" ("id", "email", "updatedAt") VALUES ($1, $2, now())',
                user,
                f"{user}@example.test",
            )
        await conn.execute(
            'INSERT INTO "Template" ("id", "key", "name", "assetsPath", "updatedAt")'
            " VALUES ('tpl-office', 'OFFICE', 'Office', '/maps/office', now())"
        )
        await conn.execute(
            'INSERT INTO "Space" ("id", "name", "ownerId", "templateId", "inviteCode",'
            " \"updatedAt\") VALUES ($1, $1, $2, 'tpl-office', $3, now())",
            world.space,
            world.owner,
            f"invite-{world.space}",
        )
        await conn.execute(
            'INSERT INTO "GuestSession" ("id", "spaceId", "nickname", "sessionToken",'
            " \"expiresAt\") VALUES ($1, $2, 'Visitor', $3, now() + interval '1 day')",
            world.guest_id,
            world.space,
            world.guest_token,
        )
    finally:
        await conn.close()
    return world


async def rows(world: ChatWorld, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
    """``ChatMessage`` rows of the world's space matching ``where``, oldest first."""
    conn = await asyncpg.connect(world.dsn, timeout=5)
    try:
        found = await conn.fetch(
            'SELECT * FROM "ChatMessage" WHERE "spaceId" = $1 AND (' + where + ")"
            ' ORDER BY "createdAt", "id"',
            world.space,
            *args,
        )
    finally:
        await conn.close()
    return [dict(r) for r in found]


async def history_for(world: ChatWorld, identifier: str, limit: int = 50) -> list[dict[str, Any]]:
    """What the app's history route shows the member ``identifier`` (their user id, or their
    guest session id), oldest first, as that route selects and maps it."""
    conn = await asyncpg.connect(world.dsn, timeout=5)
    try:
        found = await conn.fetch(
            'SELECT "id", "senderId", "senderName", "content", "createdAt", "type", "targetId"'
            ' FROM "ChatMessage" WHERE "spaceId" = $1 AND "isDeleted" = false AND ('
            "\"type\" IN ('MESSAGE', 'SYSTEM', 'ANNOUNCEMENT')"
            ' OR ("type" = \'WHISPER\' AND "senderId" = $2)'
            ' OR ("type" = \'WHISPER\' AND "targetId" = $2)'
            " OR \"type\" = 'PARTY')"
            ' ORDER BY "createdAt" DESC LIMIT $3',
            world.space,
            identifier,
            limit,
        )
    finally:
        await conn.close()
    return [
        {
            "id": r["id"],
            "senderId": r["senderId"] or "system",
            "senderNickname": r["senderName"],
            "content": r["content"],
            "type": str(r["type"]).lower(),
            **({"targetId": r["targetId"]} if r["type"] == "WHISPER" and r["targetId"] else {}),
            **({"partyId": r["targetId"]} if r["type"] == "PARTY" and r["targetId"] else {}),
        }
        for r in reversed(found)
    ]


async def set_connections(world: ChatWorld, allowed: bool) -> None:
    """Take the database away from its clients (existing connections cut, new ones refused),
    or give it back: to the server, as good as a database that went down."""
    admin = await asyncpg.connect(dsn_for("postgres"), timeout=5)
    try:
        await admin.execute(
            f'ALTER DATABASE "{world.database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                world.database,
            )
    finally:
        await admin.close()

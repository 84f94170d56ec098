"""Chat history: messages delivered at once under a temporary id, written to the database in the
background, then ``messageIdUpdate`` (or ``messageFailed``) to whoever saw them, as FlowSpace's
client expects; rows as the app's history route reads them. PostgreSQL (FlowSpace's tables) and
SQLite (``GET /spaces/{id}/messages``), driven by the official JavaScript client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from support.chat_db import (
    ChatWorld,
    history_for,
    rows,
    seed_chat_world,
    set_connections,
)
from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.players import dev_player
from support.server import ServerProcess
from support.standins import AppStandIn
from support.storage_world import database_fixture

ServerFactory = Callable[..., ServerProcess]
SAVE_FAILED = "Your message could not be saved. Please send it again."
WHISPER_SAVE_FAILED = "Your whisper could not be saved."


world = database_fixture(seed_chat_world)


def pg_server(start_server: ServerFactory, world: ChatWorld, **env: str | None) -> ServerProcess:
    return start_server(NODE_ENV=None, DATABASE_URL=world.dsn, **env)


async def user(
    bridge: Bridge, server: ServerProcess, app: AppStandIn, world: ChatWorld, uid: str, name: str
) -> JsClient:
    """A logged-in user of the app, verified by it (``auth-<userId>``)."""
    token = f"auth-{uid}"
    app.accept(token, f"user-{uid}", name, user_id=uid)
    client = await bridge.connected(server.url)
    await client.join(world.space, name, session_token=token)
    return client


async def guest(
    bridge: Bridge, server: ServerProcess, app: AppStandIn, world: ChatWorld
) -> JsClient:
    """The world's guest, verified by the app (participant ``guest-<GuestSession.id>``)."""
    app.accept(world.guest_token, f"guest-{world.guest_id}", "Visitor")
    client = await bridge.connected(server.url)
    await client.join(world.space, "Visitor", session_token=world.guest_token)
    return client


def before(client: JsClient, first: str, then: str) -> None:
    """``first`` arrived before ``then`` at ``client``."""
    names = client.event_names()
    assert first in names and then in names, names
    assert names.index(first) < names.index(then), names


async def settle(server: ServerProcess, count: int, timeout: float = 5.0) -> dict[str, Any]:
    """The ``chatLog`` metrics once ``count`` messages are written or failed."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=server.url, timeout=2.0) as http:
        while True:
            figures = (await http.get("/metrics")).json()["chatLog"]
            done = figures["written"] + figures["failed"]
            if (done >= count and figures["queued"] == 0) or time.monotonic() > deadline:
                return dict(figures)
            await asyncio.sleep(0.05)


# -- PostgreSQL: FlowSpace's tables ------------------------------------------------------------


async def test_public_message_broadcast_then_id_of_its_row(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """The space gets ``chat:message`` under a temporary id at once, then
    ``chat:messageIdUpdate {tempId, realId}``; ``realId`` is the row's id, written with the
    user's id (USER) or the guest session's id (GUEST, never the token)."""
    server = pg_server(start_server, world)
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    visitor = await guest(bridge, server, app_standin, world)

    started = time.monotonic()
    await alice.emit("chat:message", {"content": "hello <b>all</b> & co"})
    seen = await visitor.wait_for("chat:message", lambda m: m["senderNickname"] == "Alice")
    delivered = time.monotonic() - started
    temp_id = seen["id"]
    assert temp_id.startswith("msg-")
    update = await visitor.wait_for("chat:messageIdUpdate", lambda u: u["tempId"] == temp_id)
    own = await alice.wait_for("chat:messageIdUpdate", lambda u: u["tempId"] == temp_id)
    assert own == update
    before(visitor, "chat:message", "chat:messageIdUpdate")
    assert delivered < 1.0, delivered

    await visitor.emit("chat:message", {"content": "hi from a guest"})
    guest_seen = await alice.wait_for("chat:message", lambda m: m["senderNickname"] == "Visitor")
    guest_update = await alice.wait_for(
        "chat:messageIdUpdate", lambda u: u["tempId"] == guest_seen["id"]
    )

    stored = {r["id"]: r for r in await rows(world)}
    row = stored[update["realId"]]
    assert row["senderType"] == "USER" and row["senderId"] == world.alice
    assert row["senderName"] == "Alice"
    assert row["content"] == seen["content"] == "hello all &amp; co"
    assert row["type"] == "MESSAGE" and row["targetId"] is None
    assert abs(row["createdAt"].timestamp() * 1000 - seen["timestamp"]) < 2
    guest_row = stored[guest_update["realId"]]
    assert guest_row["senderType"] == "GUEST"
    assert guest_row["senderId"] == world.guest_id
    assert world.guest_token not in str(list(stored.values()))


async def test_whispers_stored_for_their_target_and_shown_to_both(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """A whisper's row names its target by user id (or guest session id), so the app's history
    route shows it to the sender and to the recipient and to nobody else; the id update goes to
    both, after the whisper."""
    server = pg_server(start_server, world)
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    bob = await user(bridge, server, app_standin, world, world.bob, "Bob")
    visitor = await guest(bridge, server, app_standin, world)

    await alice.emit("whisper:send", {"targetNickname": "Bob", "content": "psst bob"})
    received = await bob.wait_for("whisper:receive")
    sent = await alice.wait_for("whisper:sent")
    assert sent["id"] == received["id"]
    to_bob = await bob.wait_for("whisper:messageIdUpdate", lambda u: u["tempId"] == sent["id"])
    to_alice = await alice.wait_for("whisper:messageIdUpdate")
    assert to_alice == to_bob
    before(bob, "whisper:receive", "whisper:messageIdUpdate")
    before(alice, "whisper:sent", "whisper:messageIdUpdate")

    await visitor.emit(
        "chat:message", {"type": "whisper", "targetId": alice.player_id, "content": "psst alice"}
    )
    from_guest = await alice.wait_for("whisper:receive")
    guest_update = await visitor.wait_for("whisper:messageIdUpdate")
    assert guest_update["tempId"] == from_guest["id"]
    await alice.wait_for("whisper:messageIdUpdate", lambda u: u["tempId"] == from_guest["id"])
    await alice.emit("whisper:send", {"targetId": visitor.player_id, "content": "hello guest"})
    to_guest = await visitor.wait_for("whisper:receive")
    await visitor.wait_for("whisper:messageIdUpdate", lambda u: u["tempId"] == to_guest["id"])
    await visitor.expect_nothing(
        "whisper:messageIdUpdate", 0.3, lambda u: u["tempId"] == sent["id"]
    )

    stored = {r["id"]: r for r in await rows(world, "\"type\" = 'WHISPER'")}
    assert len(stored) == 3
    row = stored[to_bob["realId"]]
    assert (row["senderType"], row["senderId"], row["targetId"]) == ("USER", world.alice, world.bob)
    row = stored[guest_update["realId"]]
    assert (row["senderType"], row["senderId"], row["targetId"]) == (
        "GUEST",
        world.guest_id,
        world.alice,
    )

    def whispers(history: list[dict[str, Any]]) -> list[str]:
        return [m["content"] for m in history if m["type"] == "whisper"]

    assert whispers(await history_for(world, world.alice)) == [
        "psst bob",
        "psst alice",
        "hello guest",
    ]
    assert whispers(await history_for(world, world.bob)) == ["psst bob"]
    assert whispers(await history_for(world, world.guest_id)) == ["psst alice", "hello guest"]
    assert whispers(await history_for(world, world.owner)) == []


async def test_party_messages_stored_with_their_party(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """A party message's row keeps the party id in ``targetId``; its id update goes to the
    party's members only (``chat:messageIdUpdate``, as the original)."""
    server = pg_server(start_server, world)
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    bob = await user(bridge, server, app_standin, world, world.bob, "Bob")
    visitor = await guest(bridge, server, app_standin, world)

    await alice.emit("party:create", {"name": "Crew"})
    party_id = (await alice.wait_for("party:joined"))["partyId"]
    await alice.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    await bob.wait_for("party:invited")
    await bob.emit("party:accept", {"partyId": party_id})
    await bob.wait_for("party:joined")

    await bob.emit("party:message", {"content": "crew only"})
    message = await alice.wait_for("party:message")
    update = await alice.wait_for("chat:messageIdUpdate", lambda u: u["tempId"] == message["id"])
    assert await bob.wait_for("chat:messageIdUpdate") == update
    before(alice, "party:message", "chat:messageIdUpdate")
    await visitor.expect_nothing("chat:messageIdUpdate", 0.3)

    (row,) = await rows(world, "\"type\" = 'PARTY'")
    assert row["id"] == update["realId"]
    assert (row["senderType"], row["senderId"]) == ("USER", world.bob)
    assert row["targetId"] == party_id and row["content"] == "crew only"
    shown = [m for m in await history_for(world, world.alice) if m["type"] == "party"]
    assert shown == [
        {
            "id": row["id"],
            "senderId": world.bob,
            "senderNickname": "Bob",
            "content": "crew only",
            "type": "party",
            "partyId": party_id,
        }
    ]


async def test_database_down_chat_still_delivered_then_failed(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn, world: ChatWorld
) -> None:
    """With the database gone, messages, whispers and moves are still delivered at once; the
    rows that cannot be written are reported with ``chat:messageFailed`` to the space and
    ``whisper:messageFailed`` to both ends of a whisper. When it is back, ids flow again."""
    server = pg_server(start_server, world)
    alice = await user(bridge, server, app_standin, world, world.alice, "Alice")
    bob = await user(bridge, server, app_standin, world, world.bob, "Bob")
    await set_connections(world, False)
    try:
        started = time.monotonic()
        await alice.emit("chat:message", {"content": "is anyone keeping this?"})
        message = await bob.wait_for("chat:message", lambda m: m["senderNickname"] == "Alice")
        await alice.emit("whisper:send", {"targetId": bob.player_id, "content": "secret"})
        whisper = await bob.wait_for("whisper:receive")
        await alice.emit("player:move", {"x": 600, "y": 300, "direction": "left", "isMoving": True})
        await bob.wait_for("player:moved", lambda p: p["x"] == 600)
        assert time.monotonic() - started < 1.0

        failed = await bob.wait_for("chat:messageFailed", timeout=15)
        assert failed == {"tempId": message["id"], "reason": SAVE_FAILED}
        assert await alice.wait_for("chat:messageFailed") == failed
        whisper_failed = await bob.wait_for("whisper:messageFailed", timeout=15)
        assert whisper_failed == {"tempId": whisper["id"], "reason": WHISPER_SAVE_FAILED}
        assert await alice.wait_for("whisper:messageFailed") == whisper_failed
        assert not bob.received("chat:messageIdUpdate")
        figures = await settle(server, 2)
        assert figures["failed"] >= 2 and figures["written"] == 0
    finally:
        await set_connections(world, True)

    await asyncio.sleep(0.5)  # a new message waits at most one try behind the outage
    await alice.emit("chat:message", {"content": "back again"})
    back = await bob.wait_for("chat:message", lambda m: m["content"] == "back again")
    update = await bob.wait_for(
        "chat:messageIdUpdate", lambda u: u["tempId"] == back["id"], timeout=15
    )
    assert [r["id"] for r in await rows(world)] == [update["realId"]]
    assert server.find_logs(code="E4006")


# -- SQLite and GET /spaces/{id}/messages -----------------------------------------------------


async def get(server: ServerProcess, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        return await http.get(path, headers=headers)


async def test_sqlite_history_route_pages_back(bridge: Bridge, start_server: ServerFactory) -> None:
    """Without ``DATABASE_URL`` the SQLite file keeps the history and the node serves a space's
    public messages, newest page first, each page oldest first, ``before`` going back; whispers
    and party messages are kept but not listed; development players are GUEST by player id."""
    server = start_server(NODE_ENV="development", INTERNAL_API_TOKEN=None)
    space = space_id()
    alice_id = unique("alice")
    alice = await dev_player(bridge, server, space, "Alice", player_id=alice_id)
    bob = await dev_player(bridge, server, space, "Bob")
    ids = []
    for n in range(7):
        if n == 5:
            await asyncio.sleep(5.1)  # the chat limit: 5 messages in 5 s
        await alice.emit("chat:message", {"content": f"line {n}"})
        message = await bob.wait_for("chat:message", lambda m, n=n: m["content"] == f"line {n}")
        ids.append(
            (
                await bob.wait_for(
                    "chat:messageIdUpdate", lambda u, t=message["id"]: u["tempId"] == t
                )
            )["realId"]
        )
    await bob.emit("whisper:send", {"targetId": alice_id, "content": "not listed"})
    await bob.wait_for("whisper:messageIdUpdate")

    response = await get(server, f"/spaces/{space}/messages?limit=3")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    page = response.json()
    assert [m["content"] for m in page["messages"]] == ["line 4", "line 5", "line 6"]
    assert [m["id"] for m in page["messages"]] == ids[4:]
    assert page["hasMore"] is True
    first = page["messages"][0]
    assert first["senderId"] == alice_id and first["senderNickname"] == "Alice"
    assert first["type"] == "message" and first["timestamp"].endswith("Z")

    older = (
        await get(server, f"/spaces/{space}/messages?limit=3&before={page['nextBefore']}")
    ).json()
    assert [m["content"] for m in older["messages"]] == ["line 1", "line 2", "line 3"]
    oldest = (
        await get(server, f"/spaces/{space}/messages?limit=3&before={older['nextBefore']}")
    ).json()
    assert [m["content"] for m in oldest["messages"]] == ["line 0"]
    assert oldest["hasMore"] is False and oldest["nextBefore"] is None

    everything = (await get(server, f"/spaces/{space}/messages")).json()
    assert len(everything["messages"]) == 7 and everything["hasMore"] is False
    cutoff_ms = int(time.time() * 1000) + 60_000
    by_ms = (await get(server, f"/spaces/{space}/messages?before={cutoff_ms}&limit=1")).json()
    assert [m["content"] for m in by_ms["messages"]] == ["line 6"]
    assert (await get(server, f"/spaces/{unique('empty')}/messages")).json()["messages"] == []

    for bad in ("limit=0", "limit=101", "limit=ten", "limit=-1", "before=yesterday", "before=1e3"):
        response = await get(server, f"/spaces/{space}/messages?{bad}")
        assert response.status_code == 400, bad
        assert "error" in response.json()
    assert (await get(server, "/spaces/bad%20id/messages")).status_code == 400


async def test_history_route_needs_the_internal_token(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """With ``INTERNAL_API_TOKEN`` the history is guarded like ``/metrics``: 401 without the
    bearer token, and no ``Access-Control-Allow-Origin``."""
    server = start_server(NODE_ENV="development", INTERNAL_API_TOKEN="s3cret-token")
    space = space_id()
    alice = await dev_player(bridge, server, space, "Alice")
    await alice.emit("chat:message", {"content": "guarded"})
    await alice.wait_for("chat:messageIdUpdate")

    refused = await get(server, f"/spaces/{space}/messages")
    assert refused.status_code == 401
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert (await get(server, f"/spaces/{space}/messages", "wrong")).status_code == 401
    allowed = await get(server, f"/spaces/{space}/messages", "s3cret-token")
    assert allowed.status_code == 200
    assert "Access-Control-Allow-Origin" not in allowed.headers
    assert [m["content"] for m in allowed.json()["messages"]] == ["guarded"]


async def test_history_route_is_the_apps_with_postgres(
    start_server: ServerFactory, world: ChatWorld
) -> None:
    """With FlowSpace's database the app serves the history (it knows who may see what)."""
    server = pg_server(start_server, world)
    response = await get(server, f"/spaces/{world.space}/messages")
    assert response.status_code == 404


async def test_metrics_count_the_chat_log(bridge: Bridge, start_server: ServerFactory) -> None:
    server = start_server(NODE_ENV="development")
    space = space_id()
    alice = await dev_player(bridge, server, space, "Alice")
    await alice.emit("chat:message", {"content": "count me"})
    await alice.wait_for("chat:messageIdUpdate")
    figures = await settle(server, 1)
    assert figures["enabled"] is True and figures["storage"] == "sqlite"
    assert figures["written"] == 1 and figures["failed"] == 0 and figures["queued"] == 0
    assert figures["batches"] >= 1 and figures["batchMs"] >= 0
    assert dev_token()  # development sessions need no app

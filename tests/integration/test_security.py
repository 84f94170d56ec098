"""Identity and the security model: session tokens, connect-time authentication, server-derived
ids and one live socket per player, in production and in development (SPEC §1.1, §2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess, free_port
from support.standins import AppStandIn

ServerFactory = Callable[..., ServerProcess]

TRANSPORTS = ["websocket", "polling"]
QUIET = 0.5
INVALID_SESSION = {"message": "Invalid session", "code": "INVALID_SESSION"}
SESSION_REQUIRED = {"message": "Session token required", "code": "SESSION_REQUIRED"}
NOT_JSON = object()
DUPLICATE_SESSION = {
    "message": "Opened in another tab or device; this one was closed",
    "code": "DUPLICATE_SESSION",
}
# The FlowSpace client files a bare `error` whose message contains "connection" under its
# "cannot reach the server" banner, and one containing "session" or "expired" under "session
# expired": the player of a replaced tab must read why it was closed instead.
assert not any(w in DUPLICATE_SESSION["message"] for w in ("connection", "session", "expired"))


# -- helpers ---------------------------------------------------------------------------------


async def guest(
    bridge: Bridge,
    server: ServerProcess,
    app: AppStandIn,
    space: str,
    nickname: str,
    *,
    transport: str = "websocket",
    token: str | None = None,
    app_role: str | None = None,
    **join_fields: Any,
) -> JsClient:
    """A client that joined ``space`` with a guest token the app accepts as ``nickname``."""
    token = token or unique("guest")
    participant = unique("participant")
    app.accept(token, participant, nickname, role=app_role)
    client = await bridge.connected(server.url, transports=[transport])
    await client.join(space, nickname, session_token=token, **join_fields)
    assert client.player_id == participant
    return client


async def dev_player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    *,
    transport: str = "websocket",
    **join_fields: Any,
) -> JsClient:
    """A client that joined ``space`` in development with a `dev-` token."""
    client = await bridge.connected(server.url, transports=[transport])
    join_fields.setdefault("playerId", unique("player"))
    await client.join(space, nickname, session_token=dev_token(), **join_fields)
    return client


async def assert_refused(client: JsClient, expected: dict[str, str]) -> None:
    """SPEC §2.1: the refused socket gets `error {message, code}` and is disconnected by the
    server; it never joins."""
    assert await client.wait_for("error") == expected
    assert await client.wait_disconnect() == "io server disconnect"
    assert client.received("room:joined") == []


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


async def presence_ids(server: ServerProcess, space: str) -> set[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get(f"/presence/{space}")
    assert response.status_code == 200
    return {user["id"] for user in response.json()["onlineUsers"]}


async def assert_proximity_allowed(
    client: JsClient, allowed: bool, nickname: str | None = None
) -> None:
    """The role is observable through `proximity:set` (SPEC §4): only OWNER / STAFF may.
    ``changedBy`` is the changer's nickname as the server knows it (``nickname``, when the app
    gave another one than the client sent)."""
    await client.emit("proximity:set", {"enabled": True})
    if allowed:
        changed = await client.wait_for("proximity:changed")
        assert changed["enabled"] is True
        assert changed["changedBy"] == (nickname or client.nickname)
        await client.expect_nothing("proximity:error", within=0.2)
    else:
        assert await client.wait_for("proximity:error") == {"message": "Permission denied"}
        await client.expect_nothing("proximity:changed", within=0.2)


# -- production: the token table -------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"skipVerification": True, "verified": True, "development": True, "role": "OWNER"},
    ],
    ids=["plain", "with-bypass-flags"],
)
async def test_production_rejects_dev_token_unknown_to_the_app(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    extra: dict[str, Any],
) -> None:
    """SPEC §2.1 (production, `dev-` row), §1.1 security rule: a `dev-` token is verified like
    any other; unknown to the app ⇒ `error INVALID_SESSION` and disconnect, logged warn E1002.
    No payload field skips verification. Other players see nothing of the refused join."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    token = dev_token()
    mark = prod_server.mark()

    client = await bridge.connected(prod_server.url)
    await client.emit(
        "join:space",
        {"spaceId": space, "nickname": "Dev", "playerId": unique("dev"), "sessionToken": token}
        | extra,
    )
    await assert_refused(client, INVALID_SESSION)

    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}
    await prod_server.wait_for_log(code="E1002", level="warn", since=mark)
    assert prod_server.find_logs(code="E4002", since=mark) == []
    await observer.expect_nothing("player:joined", within=0.2)
    assert await presence_ids(prod_server, space) == {observer.player_id}


async def test_production_accepts_dev_token_the_app_accepts(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1 (production, `dev-` row): a `dev-` token the app accepts joins with the app's
    identity, not the client's playerId or nickname."""
    space = space_id()
    token = dev_token()
    participant = unique("participant")
    app_standin.accept(token, participant, "FromApp")

    client = await bridge.connected(prod_server.url)
    joined = await client.join(space, "FromClient", session_token=token, playerId=unique("dev"))
    assert joined["yourPlayerId"] == participant
    assert by_id(joined["players"])[participant]["nickname"] == "FromApp"
    assert len(app_standin.verify_calls(token)) == 1


@pytest.mark.parametrize(
    ("transport", "token"),
    [("websocket", None), ("polling", None), ("websocket", "")],
    ids=["missing-ws", "missing-polling", "empty"],
)
async def test_production_requires_a_session_token(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    transport: str,
    token: str | None,
) -> None:
    """SPEC §2.1 (production, missing/empty row): `error SESSION_REQUIRED` and disconnect; the
    app is not asked; nobody in the space sees the socket."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    verifies_before = len(app_standin.verify_calls())

    client = await bridge.connected(prod_server.url, transports=[transport])
    payload: dict[str, Any] = {"spaceId": space, "nickname": "Anon", "playerId": unique("anon")}
    if token is not None:
        payload["sessionToken"] = token
    await client.emit("join:space", payload)
    await assert_refused(client, SESSION_REQUIRED)

    assert len(app_standin.verify_calls()) == verifies_before
    await observer.expect_nothing("player:joined", within=0.2)
    assert await presence_ids(prod_server, space) == {observer.player_id}


@pytest.mark.parametrize(
    ("avatar", "color", "config"),
    [
        ("red", "red", {"type": "classic", "colorId": "red"}),
        ("classic:red", "red", {"type": "classic", "colorId": "red"}),
        ("custom:char-7", "default", {"type": "custom", "characterId": "char-7"}),
        ("sparkly", "default", None),
        ("classic:chartreuse", "default", None),
        (42, "default", None),
    ],
    ids=["colour", "classic", "custom", "garbage", "classic-unknown-colour", "not-a-string"],
)
async def test_production_identity_comes_from_the_app(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    avatar: Any,
    color: str,
    config: dict[str, str] | None,
) -> None:
    """SPEC §2, §2.1 (verification, `avatar` mapping): a valid guest token makes
    `playerId = participantId` (the client's playerId is ignored), the nickname and avatar come
    from the app (client values lose), the role defaults to PARTICIPANT; the verify request is
    `POST /api/guest/verify {sessionToken, spaceId}` (no Authorization without a secret).
    Anything but a colour, `classic:<colour>` or `custom:<id>` maps to `"default"`."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    token = unique("guest")
    participant = unique("participant")
    spoofed = unique("spoof")
    app_standin.accept(token, participant, "Guesty", avatar=avatar)

    client = await bridge.connected(prod_server.url)
    joined = await client.join(
        space,
        "Claimed",
        session_token=token,
        playerId=spoofed,
        avatarColor="green",
        avatarConfig={"type": "classic", "colorId": "green"},
    )
    assert joined["yourPlayerId"] == participant
    players = by_id(joined["players"])
    assert spoofed not in players
    me = players[participant]
    assert me["nickname"] == "Guesty"
    assert me.get("avatarColor") == color
    if config is None:
        assert me.get("avatarConfig") in (None, {"type": "classic", "colorId": "default"}), me
    else:
        assert me.get("avatarConfig") == config

    seen = await observer.wait_for("player:joined")
    assert seen["id"] == participant
    assert seen["nickname"] == "Guesty"
    assert seen.get("avatarColor") == color

    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}
    assert verify.headers["content-type"].startswith("application/json")
    assert "authorization" not in verify.headers
    await assert_proximity_allowed(client, allowed=False)


@pytest.mark.parametrize(
    ("app_role", "client_role", "allowed"),
    [
        (None, "OWNER", False),
        ("PARTICIPANT", "OWNER", False),
        ("ADMIN", "STAFF", False),
        ("OWNER", None, True),
        ("STAFF", "PARTICIPANT", True),
    ],
    ids=["default-claims-owner", "participant-claims-owner", "unknown-role", "owner", "staff"],
)
async def test_production_role_comes_from_the_app(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    app_role: str | None,
    client_role: str | None,
    allowed: bool,
) -> None:
    """SPEC §2.1, §1.1 security rule: the role is the app's (default PARTICIPANT); a production
    client cannot become OWNER by sending `role`, at join or later in `player:updateProfile`."""
    space = space_id()
    fields: dict[str, Any] = {} if client_role is None else {"role": client_role}
    client = await guest(
        bridge, prod_server, app_standin, space, "Roley", app_role=app_role, **fields
    )
    await assert_proximity_allowed(client, allowed)
    if not allowed:
        await client.emit("player:updateProfile", {"nickname": "Roley", "role": "OWNER"})
        await assert_proximity_allowed(client, allowed=False)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"valid": False, "participantId": "p-1", "nickname": "Nope"}),
        (200, {"valid": True, "nickname": "NoId"}),
        (200, {"valid": True, "participantId": ""}),
        (200, {"valid": True, "participantId": None}),
        (200, ["valid", "participantId"]),
        (201, "yes"),
        (401, {"valid": False}),
        (403, {"valid": True, "participantId": "p-1"}),
        (302, {"valid": True, "participantId": "p-1"}),
        (200, NOT_JSON),
    ],
    ids=[
        "valid-false",
        "no-participant",
        "empty-participant",
        "null-participant",
        "array-body",
        "string-body",
        "401",
        "403-claiming-valid",
        "redirect",
        "not-json",
    ],
)
async def test_production_invalid_answers_refuse_the_session(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    status: int,
    body: Any,
) -> None:
    """SPEC §2.1: only a 2xx answer with `valid` not false and a non-empty `participantId` is
    valid; anything else refuses the session (`INVALID_SESSION`, disconnect), logged as warn
    E1002 — not as an error (an invalid token is not an outage)."""
    space = space_id()
    token = unique("guest")
    if body is NOT_JSON:
        app_standin.garbage()
    else:
        app_standin.answer(token, status, body)
    mark = prod_server.mark()

    client = await bridge.connected(prod_server.url)
    await client.emit("join:space", {"spaceId": space, "nickname": "Guest", "sessionToken": token})
    await assert_refused(client, INVALID_SESSION)
    assert len(app_standin.verify_calls(token)) == 1
    await prod_server.wait_for_log(code="E1002", level="warn", since=mark)
    assert prod_server.find_logs(code="E4002", since=mark) == []
    assert prod_server.find_logs(code="E4003", since=mark) == []


# -- production: the app cannot answer -------------------------------------------------------


async def test_production_app_answering_500_refuses_and_logs_error(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1: a 5xx answer counts as invalid (`INVALID_SESSION`, disconnect) and is logged
    at **error** level as E4002, so that it alerts."""
    space = space_id()
    token = unique("guest")
    app_standin.accept(token, unique("participant"), "Guest")
    app_standin.fail_all()
    mark = prod_server.mark()

    client = await bridge.connected(prod_server.url, transports=["polling"])
    await client.emit("join:space", {"spaceId": space, "nickname": "Guest", "sessionToken": token})
    await assert_refused(client, INVALID_SESSION)
    await prod_server.wait_for_log(code="E4002", level="error", since=mark)


async def test_production_unreachable_app_refuses_and_logs_error(
    bridge: Bridge, start_server: ServerFactory
) -> None:
    """SPEC §2.1: an app that cannot be reached (nothing listens on APP_URL) makes every token
    invalid and is logged at error level as E4002."""
    server = start_server(NODE_ENV=None, APP_URL=f"http://127.0.0.1:{free_port()}")
    client = await bridge.connected(server.url)
    await client.emit(
        "join:space", {"spaceId": space_id(), "nickname": "Guest", "sessionToken": unique("g")}
    )
    await assert_refused(client, INVALID_SESSION)
    await server.wait_for_log(code="E4002", level="error")


async def test_production_verification_timeout_slow(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1, §11 — slow (about 5 s, the verification timeout): an app that does not answer
    within 5 s makes the token invalid; logged at error level as E4003."""
    space = space_id()
    token = unique("guest")
    app_standin.accept(token, unique("participant"), "Guest")
    app_standin.hang(7)
    mark = prod_server.mark()

    client = await bridge.connected(prod_server.url)
    started = time.monotonic()
    await client.emit("join:space", {"spaceId": space, "nickname": "Guest", "sessionToken": token})
    assert await client.wait_for("error", timeout=9) == INVALID_SESSION
    elapsed = time.monotonic() - started
    assert 4.0 <= elapsed <= 7.0, f"refused after {elapsed:.1f}s; the timeout is 5 s"
    assert await client.wait_disconnect() == "io server disconnect"
    await prod_server.wait_for_log(code="E4003", level="error", since=mark)


async def test_app_api_secret_is_sent_on_every_app_call(
    bridge: Bridge, start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """SPEC §1.1 (`APP_API_SECRET`), §2.1, §7: with a secret set, verification, the guest EXIT
    and the visit EXIT all carry `Authorization: Bearer <secret>`."""
    secret = "s3cret-" + unique("k")
    server = start_server(NODE_ENV=None, APP_API_SECRET=secret)
    space = space_id()
    user = unique("user")
    guest_token, auth_token = unique("guest"), f"auth-{user}"
    app_standin.accept(guest_token, unique("participant"), "Guest")
    app_standin.accept(auth_token, unique("participant"), "Member")

    first = await bridge.connected(server.url)
    await first.join(space, "Guest", session_token=guest_token)
    second = await bridge.connected(server.url, transports=["polling"])
    await second.join(space, "Member", session_token=auth_token)
    await first.emit("leave:space")
    await second.emit("leave:space")

    (event,) = await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body.get("spaceId") == space
    )
    (visit,) = await app_standin.wait_for_request("DELETE", f"/api/spaces/{space}/visit")
    calls = [*app_standin.verify_calls(guest_token), *app_standin.verify_calls(auth_token)]
    assert len(calls) == 2
    for call in [*calls, event, visit]:
        assert call.headers.get("authorization") == f"Bearer {secret}", (call.method, call.path)


# -- NODE_ENV is the only switch -------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"NODE_ENV": "production"},
        {"NODE_ENV": "test"},
        {"NODE_ENV": "Development"},
    ],
    ids=["production", "test", "Development"],
)
async def test_every_other_node_env_is_production(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    env: dict[str, str | None],
) -> None:
    """SPEC §1.1: only `NODE_ENV=development` relaxes security; any other value (case matters)
    leaves the server strict: a `dev-` token is verified and refused, a join without a token is
    refused."""
    server = start_server(**env)
    space = space_id()
    token = dev_token()

    dev = await bridge.connected(server.url)
    await dev.emit(
        "join:space",
        {"spaceId": space, "nickname": "Dev", "playerId": unique("dev"), "sessionToken": token},
    )
    await assert_refused(dev, INVALID_SESSION)
    assert len(app_standin.verify_calls(token)) == 1

    anon = await bridge.connected(server.url, transports=["polling"])
    await anon.emit("join:space", {"spaceId": space, "nickname": "Anon"})
    await assert_refused(anon, SESSION_REQUIRED)


# -- development -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_development_dev_token_uses_client_identity(
    bridge: Bridge, dev_server: ServerProcess, app_standin: AppStandIn, transport: str
) -> None:
    """SPEC §2.1 (development, `dev-` row): no verification call; the client's playerId,
    nickname, avatar and role are used."""
    space = space_id()
    player = unique("dev-player")
    token = dev_token()
    client = await bridge.connected(dev_server.url, transports=[transport])
    joined = await client.join(
        space,
        "Devy",
        session_token=token,
        playerId=player,
        avatarColor="purple",
        avatarConfig={"type": "custom", "characterId": "knight-2"},
        role="OWNER",
    )
    assert joined["yourPlayerId"] == player
    me = by_id(joined["players"])[player]
    assert me["nickname"] == "Devy"
    assert me.get("avatarColor") == "purple"
    assert me.get("avatarConfig") == {"type": "custom", "characterId": "knight-2"}
    await assert_proximity_allowed(client, allowed=True)
    assert app_standin.verify_calls(token) == []

    plain = await dev_player(bridge, dev_server, space, "Plain")
    await assert_proximity_allowed(plain, allowed=False)


async def test_development_rejected_token_joins_with_client_values(
    bridge: Bridge, dev_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1 (development, other tokens): the token is verified; when the app rejects it a
    warning is logged and the join proceeds with the client's values."""
    space = space_id()
    token = unique("guest")
    player = unique("player")
    mark = dev_server.mark()

    client = await bridge.connected(dev_server.url)
    joined = await client.join(space, "Clienty", session_token=token, playerId=player)
    assert joined["yourPlayerId"] == player
    assert by_id(joined["players"])[player]["nickname"] == "Clienty"
    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}
    await dev_server.wait_for_log(code="E1002", level="warn", since=mark)
    await client.expect_nothing("error", within=0.2)


async def test_development_accepted_token_uses_app_identity(
    bridge: Bridge, dev_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.1 (development, other tokens): a token the app accepts is the app's identity,
    as in production."""
    space = space_id()
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Appy", avatar="classic:orange", role="STAFF")

    client = await bridge.connected(dev_server.url)
    joined = await client.join(space, "Clienty", session_token=token, playerId=unique("mine"))
    assert joined["yourPlayerId"] == participant
    me = by_id(joined["players"])[participant]
    assert (me["nickname"], me.get("avatarColor")) == ("Appy", "orange")
    await assert_proximity_allowed(client, allowed=True, nickname="Appy")


@pytest.mark.parametrize("token", [None, ""], ids=["missing", "empty"])
async def test_development_without_token_is_anonymous(
    bridge: Bridge, dev_server: ServerProcess, app_standin: AppStandIn, token: str | None
) -> None:
    """SPEC §2.1 (development, missing/empty row): a warning E1001 is logged and the player
    gets `dev-anon-<random>` (distinct per socket), whatever playerId it claims."""
    space = space_id()
    mark = dev_server.mark()
    ids = []
    for nickname in ("Anon1", "Anon2"):
        client = await bridge.connected(dev_server.url)
        fields: dict[str, Any] = {"playerId": unique("claimed")}
        joined = await client.join(space, nickname, session_token=token, **fields)
        ids.append(joined["yourPlayerId"])
        assert by_id(joined["players"])[joined["yourPlayerId"]]["nickname"] == nickname
    assert all(i.startswith("dev-anon-") and len(i) > len("dev-anon-") for i in ids), ids
    assert ids[0] != ids[1]
    await dev_server.wait_for_log(code="E1001", level="warn", since=mark)
    assert len(app_standin.verify_calls()) == 0


# -- connect-time authentication -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connect_auth_identity_is_used_at_join_without_second_verify(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn, transport: str
) -> None:
    """SPEC §2.2: `io(url, {auth: {sessionToken, spaceId}})` is verified at connect; the later
    `join:space` without a token uses that identity and does not call the app again."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Authed", avatar="classic:blue")

    client = bridge.client(
        prod_server.url, transports=[transport], auth={"sessionToken": token, "spaceId": space}
    )
    await client.connect()
    (verify,) = app_standin.verify_calls(token)
    assert verify.body == {"sessionToken": token, "spaceId": space}

    joined = await client.join(space, "Claimed", playerId=unique("spoof"))
    assert joined["yourPlayerId"] == participant
    me = by_id(joined["players"])[participant]
    assert (me["nickname"], me.get("avatarColor")) == ("Authed", "blue")
    seen = await observer.wait_for("player:joined")
    assert (seen["id"], seen["nickname"]) == (participant, "Authed")
    await asyncio.sleep(0.2)
    assert len(app_standin.verify_calls(token)) == 1
    await assert_proximity_allowed(client, allowed=False)


@pytest.mark.parametrize(
    ("case", "transport"),
    [
        ("unknown", "websocket"),
        ("unknown", "polling"),
        ("dev-token", "websocket"),
        ("app-500", "websocket"),
        ("valid-false", "polling"),
    ],
)
async def test_connect_auth_invalid_refuses_connection_in_production(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    case: str,
    transport: str,
) -> None:
    """SPEC §2.2: in production an invalid `auth.sessionToken` refuses the connection with
    `connect_error` "Invalid session"."""
    space = space_id()
    token = dev_token() if case == "dev-token" else unique("guest")
    if case == "app-500":
        app_standin.accept(token, unique("participant"), "Guest")
        app_standin.fail_all()
    if case == "valid-false":
        app_standin.answer(token, 200, {"valid": False, "participantId": unique("p")})

    client = bridge.client(
        prod_server.url, transports=[transport], auth={"sessionToken": token, "spaceId": space}
    )
    refused = await client.connect_expect_error()
    assert refused["message"] == "Invalid session"
    assert len(app_standin.verify_calls(token)) == 1
    assert client.received("room:joined") == []


async def test_connect_without_auth_is_verified_at_join(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.2: a client that sends no `auth` (the existing client) connects, even in
    production, and is verified when it sends `join:space`."""
    space = space_id()
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Later")

    client = await bridge.connected(prod_server.url, transports=["polling"])
    await asyncio.sleep(0.1)
    assert app_standin.verify_calls(token) == []
    joined = await client.join(space, "Later", session_token=token)
    assert joined["yourPlayerId"] == participant
    assert len(app_standin.verify_calls(token)) == 1


# -- server-derived ids ----------------------------------------------------------------------


async def test_forged_ids_act_only_as_the_sender(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2: every event uses the identity bound to the socket. A client that puts another
    player's id in `player:move`, `player:jump`, `chat:message`, `whisper:send` or
    `player:updateProfile` still acts only as itself; the other player is untouched."""
    space = space_id()
    alice = await guest(bridge, prod_server, app_standin, space, "Alice")
    bob = await guest(bridge, prod_server, app_standin, space, "Bob", transport="polling")
    carol = await guest(bridge, prod_server, app_standin, space, "Carol")
    me, victim = alice.player_id, bob.player_id
    assert me is not None and victim is not None
    forged = {"id": victim, "playerId": victim, "senderId": victim, "senderNickname": "Bob"}

    await alice.emit(
        "player:move", {"x": 100, "y": 200, "direction": "left", "isMoving": False} | forged
    )
    moved = await carol.wait_for("player:moved")
    assert (moved["id"], moved["nickname"], moved["x"]) == (me, "Alice", 100)
    assert (await bob.wait_for("player:moved"))["id"] == me

    await alice.emit("player:jump", {"x": 100, "y": 180} | forged)
    assert (await carol.wait_for("player:jumped"))["id"] == me

    await alice.emit(
        "chat:message", {"content": "hello all"} | forged | {"id": "msg-forged", "senderName": "B"}
    )
    chat = await carol.wait_for("chat:message")
    assert (chat["senderId"], chat["senderNickname"], chat["senderName"]) == (
        me,
        "Alice",
        "Alice",
    )
    assert chat["id"] != "msg-forged" and chat["id"].startswith("msg-")

    await alice.emit(
        "whisper:send", {"targetId": carol.player_id, "content": "psst"} | forged | {"id": "w-1"}
    )
    received = await carol.wait_for("whisper:received")
    assert (received["senderId"], received["senderName"]) == (me, "Alice")
    assert (await carol.wait_for("whisper:receive"))["senderId"] == me
    await bob.expect_nothing("whisper:received", within=0.1)
    await bob.expect_nothing("whisper:sent", within=0.1)

    await alice.emit("player:updateProfile", {"nickname": "Renamed"} | forged)
    updated = await carol.wait_for("player:profileUpdated")
    assert (updated["id"], updated["nickname"]) == (me, "Renamed")

    dave = await guest(bridge, prod_server, app_standin, space, "Dave")
    players = by_id(dave.received("room:joined")[0]["players"])
    assert (players[victim]["nickname"], players[victim]["x"], players[victim]["y"]) == (
        "Bob",
        480,
        320,
    )
    assert (players[me]["nickname"], players[me]["x"], players[me]["y"]) == ("Renamed", 100, 200)
    await carol.expect_nothing("player:moved", predicate=lambda m: m["id"] == victim)


# -- one live socket per player per space ----------------------------------------------------


@pytest.mark.parametrize(
    ("old_transport", "new_transport"),
    [("websocket", "websocket"), ("polling", "websocket"), ("websocket", "polling")],
)
async def test_duplicate_session_closes_the_older_socket_quietly(
    bridge: Bridge,
    prod_server: ServerProcess,
    app_standin: AppStandIn,
    old_transport: str,
    new_transport: str,
) -> None:
    """SPEC §2.3, §7: when the same player joins again, the older socket gets
    `error DUPLICATE_SESSION` and is disconnected by the server (so it does not reconnect);
    the new socket inherits position and direction; the others see no `player:left` /
    `player:joined` churn; no EXIT is logged for the replaced socket; warn E2003."""
    space = space_id()
    observer = await guest(bridge, prod_server, app_standin, space, "Watcher")
    token = unique("guest")
    participant = unique("participant")
    app_standin.accept(token, participant, "Twin")

    old = bridge.client(
        prod_server.url,
        transports=[old_transport],
        reconnection=True,
        reconnectionDelay=50,
        reconnectionDelayMax=100,
    )
    await old.connect()
    await old.join(space, "Twin", session_token=token)
    assert (await observer.wait_for("player:joined"))["id"] == participant
    await old.emit("player:move", {"x": 321, "y": 654, "direction": "left", "isMoving": False})
    await observer.wait_for("player:moved", lambda m: m["x"] == 321)
    observer.consume()
    mark = prod_server.mark()

    new = await bridge.connected(prod_server.url, transports=[new_transport])
    joined = await new.join(space, "Twin", session_token=token)

    assert await old.wait_for("error") == DUPLICATE_SESSION
    assert await old.wait_disconnect() == "io server disconnect"
    assert joined["yourPlayerId"] == participant
    assert sorted(p["id"] for p in joined["players"]) == sorted([participant, observer.player_id])
    me = by_id(joined["players"])[participant]
    assert (me["x"], me["y"], me["direction"]) == (321, 654, "left")

    await observer.expect_nothing("player:left")
    await observer.expect_nothing("player:joined", within=0)
    await observer.expect_nothing(
        "chat:system", within=0, predicate=lambda m: "Twin" in m["content"]
    )
    assert [m for m in old.log() if m["type"] in ("reconnect_attempt", "connect")][1:] == []
    assert not (await old.state())["connected"]
    assert app_standin.event_calls(space) == []
    await prod_server.wait_for_log(code="E2003", level="warn", since=mark)
    assert await presence_ids(prod_server, space) == {participant, observer.player_id}

    await new.emit("player:move", {"x": 10, "y": 20, "direction": "up", "isMoving": True})
    moved = await observer.wait_for("player:moved")
    assert (moved["id"], moved["x"]) == (participant, 10)
    await new.emit("leave:space")
    assert await observer.wait_for("player:left") == {"id": participant}
    (exit_call,) = await app_standin.wait_for_request(
        "POST", "/api/guest/event", lambda r: r.body.get("spaceId") == space
    )
    assert exit_call.body["payload"]["reason"] == "leave"


async def test_duplicate_player_id_in_development(
    bridge: Bridge, dev_server: ServerProcess
) -> None:
    """SPEC §2.3: in development the same `playerId` (with different `dev-` tokens, e.g. two
    tabs) is one player: the older socket is closed with `DUPLICATE_SESSION`; others see no
    churn."""
    space = space_id()
    player = unique("twin")
    observer = await dev_player(bridge, dev_server, space, "Watcher")
    old = await dev_player(bridge, dev_server, space, "Twin", playerId=player)
    await observer.wait_for("player:joined")
    await old.emit("player:move", {"x": 50, "y": 60, "direction": "right", "isMoving": False})
    await observer.wait_for("player:moved")
    observer.consume()

    new = await dev_player(bridge, dev_server, space, "Twin", transport="polling", playerId=player)
    assert await old.wait_for("error") == DUPLICATE_SESSION
    assert await old.wait_disconnect() == "io server disconnect"
    me = by_id(new.received("room:joined")[0]["players"])[player]
    assert (me["x"], me["y"], me["direction"]) == (50, 60, "right")
    await observer.expect_nothing("player:left")
    await observer.expect_nothing("player:joined", within=0)

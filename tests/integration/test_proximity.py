"""End-to-end proximity mode (SPEC §2, §4 `proximity:set`), driven by the official JS client:
who may switch it, what the space sees, and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn

QUIET = 0.2
NO_PAYLOAD = object()


async def dev_player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    *,
    role: str | None = None,
    transport: str = "websocket",
) -> JsClient:
    """A client that joined ``space`` with a development token (and the role it claims)."""
    client = await bridge.connected(server.url, transports=[transport])
    fields: dict[str, Any] = {"playerId": unique("player")}
    if role is not None:
        fields["role"] = role
    await client.join(space, nickname, session_token=dev_token(), **fields)
    return client


async def guest(
    bridge: Bridge,
    server: ServerProcess,
    app: AppStandIn,
    space: str,
    nickname: str,
    *,
    app_role: str | None = None,
    claimed_role: str | None = None,
) -> JsClient:
    """A production client whose session the app accepts with ``app_role``; the client itself
    claims ``claimed_role`` in `join:space`."""
    token = unique("guest-token")
    app.accept(token, unique("participant"), nickname, role=app_role)
    client = await bridge.connected(server.url)
    fields: dict[str, Any] = {"playerId": unique("claimed")}
    if claimed_role is not None:
        fields["role"] = claimed_role
    await client.join(space, nickname, session_token=token, **fields)
    return client


async def settle(clients: list[JsClient], last_nickname: str) -> None:
    """Wait until every client saw the last join notice, so later notices are new ones."""
    for client in clients:
        await client.wait_for("chat:system", lambda m: m["content"] == f"{last_nickname} joined")


async def flag_seen_by_newcomer(
    bridge: Bridge, server: ServerProcess, space: str, **join: Any
) -> bool:
    """Join ``space`` afresh; check that `room:joined.proximity` and `proximity:status` agree
    and return the flag."""
    client = await bridge.connected(server.url)
    joined = await client.join(space, "Newcomer", **join)
    status = await client.wait_for("proximity:status")
    assert status == {"enabled": joined["proximity"]}, (joined, status)
    assert isinstance(joined["proximity"], bool)
    return bool(joined["proximity"])


async def dev_flag(bridge: Bridge, server: ServerProcess, space: str) -> bool:
    return await flag_seen_by_newcomer(
        bridge, server, space, session_token=dev_token(), playerId=unique("newcomer")
    )


async def expect_denied(server: ServerProcess, client: JsClient, since: int) -> None:
    """SPEC §4, §11: `proximity:error {message: "Permission denied"}` and a warn log E1004."""
    assert await client.wait_for("proximity:error") == {"message": "Permission denied"}
    entry = await server.wait_for_log(
        code="E1004",
        level="warn",
        predicate=lambda e: (e.get("context") or {}).get("playerId") == client.player_id,
        since=since,
    )
    assert entry["stream"] == "stderr"


async def emit_proximity(client: JsClient, payload: Any) -> None:
    if payload is NO_PAYLOAD:
        await client.emit("proximity:set")
    else:
        await client.emit("proximity:set", payload)


# -- development: roles from join:space ------------------------------------------------------


@pytest.mark.parametrize("role", ["OWNER", "STAFF"])
async def test_owner_or_staff_switches_proximity_for_the_whole_space(
    bridge: Bridge, dev_server: ServerProcess, role: str
) -> None:
    """SPEC §4 (`proximity:set`), §5: an OWNER or STAFF (in development, the role given in
    `join:space`) sets the flag; the whole space, sender included and on both transports,
    receives `proximity:changed {spaceId, enabled, changedBy}` and a `chat:system` notice;
    later joiners get `room:joined.proximity` and `proximity:status` with the new value.
    Switching off works the same way."""
    space = space_id()
    host = await dev_player(bridge, dev_server, space, "Host", role=role)
    bob = await dev_player(bridge, dev_server, space, "Bob")
    carol = await dev_player(bridge, dev_server, space, "Carol", transport="polling")
    everyone = [host, bob, carol]
    await settle(everyone, "Carol")

    await host.emit("proximity:set", {"enabled": True})
    for client in everyone:
        changed = await client.wait_for("proximity:changed")
        assert changed == {"spaceId": space, "enabled": True, "changedBy": "Host"}
        notice = await client.wait_for("chat:system")
        assert notice["type"] == "system"
        assert notice["senderId"] == "system"
        assert isinstance(notice["content"], str) and notice["content"].strip()
    await host.expect_nothing("proximity:error", within=0.0)
    assert await dev_flag(bridge, dev_server, space) is True

    await host.emit("proximity:set", {"enabled": False})
    for client in everyone:
        changed = await client.wait_for("proximity:changed")
        assert changed == {"spaceId": space, "enabled": False, "changedBy": "Host"}
        assert (await client.wait_for("chat:system", lambda m: "joined" not in m["content"]))[
            "type"
        ] == "system"
    assert await dev_flag(bridge, dev_server, space) is False


@pytest.mark.parametrize(
    "role",
    [None, "PARTICIPANT", "owner", "ADMIN"],
    ids=["no-role", "participant", "lower", "admin"],
)
async def test_participant_is_denied(
    bridge: Bridge, dev_server: ServerProcess, role: str | None
) -> None:
    """SPEC §4 (`proximity:set`), §11: any role other than OWNER or STAFF gets
    `proximity:error {message: "Permission denied"}` and a warn log E1004; nobody is told of a
    change, no notice is posted, and the flag keeps its value (in both directions)."""
    space = space_id()
    owner = await dev_player(bridge, dev_server, space, "Owner", role="OWNER")
    player = await dev_player(bridge, dev_server, space, "Player", role=role)
    await settle([owner, player], "Player")

    mark = dev_server.mark()
    await player.emit("proximity:set", {"enabled": True})
    await expect_denied(dev_server, player, mark)
    await owner.expect_nothing("proximity:changed", within=QUIET)
    await owner.expect_nothing("chat:system", within=0.0)
    await player.expect_nothing("proximity:changed", within=0.0)
    assert await dev_flag(bridge, dev_server, space) is False

    await owner.emit("proximity:set", {"enabled": True})
    await player.wait_for("proximity:changed")
    await owner.wait_for("proximity:changed")
    mark = dev_server.mark()
    await player.emit("proximity:set", {"enabled": False})
    await expect_denied(dev_server, player, mark)
    await owner.expect_nothing("proximity:changed", within=QUIET)
    assert await dev_flag(bridge, dev_server, space) is True


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_not_joined(bridge: Bridge, dev_server: ServerProcess, transport: str) -> None:
    """SPEC §4 (`proximity:set`): a socket that has not joined a space (or has left it) gets
    `proximity:error {message: "Join a space first"}`, whatever role it could claim later."""
    space = space_id()
    owner = await dev_player(bridge, dev_server, space, "Owner", role="OWNER")
    stranger = await bridge.connected(dev_server.url, transports=[transport])
    await stranger.emit("proximity:set", {"enabled": True})
    assert await stranger.wait_for("proximity:error") == {"message": "Join a space first"}

    leaver = await dev_player(bridge, dev_server, space, "Leaver", role="OWNER")
    await leaver.emit("leave:space")
    await owner.wait_for("player:left")
    await leaver.emit("proximity:set", {"enabled": True})
    assert await leaver.wait_for("proximity:error") == {"message": "Join a space first"}
    await owner.expect_nothing("proximity:changed", within=QUIET)
    assert await dev_flag(bridge, dev_server, space) is False


@pytest.mark.parametrize(
    "payload",
    [
        {"enabled": "true"},
        {"enabled": "false"},
        {"enabled": 1},
        {"enabled": 0},
        {"enabled": None},
        {"enabled": [True]},
        {},
        {"on": True},
        "on",
        True,
        [{"enabled": True}],
        None,
        NO_PAYLOAD,
    ],
    ids=[
        "string-true",
        "string-false",
        "one",
        "zero",
        "null",
        "list",
        "empty-object",
        "missing",
        "string-payload",
        "bool-payload",
        "list-payload",
        "null-payload",
        "no-payload",
    ],
)
async def test_bad_payload_changes_nothing(
    bridge: Bridge, dev_server: ServerProcess, payload: Any
) -> None:
    """SPEC §3 (`enabled` boolean), §8: a malformed `proximity:set`, even from the OWNER, gets
    `proximity:error` and leaves the flag as it was, whether it was off or on; nobody is told of
    a change."""
    space = space_id()
    owner = await dev_player(bridge, dev_server, space, "Owner", role="OWNER")
    bob = await dev_player(bridge, dev_server, space, "Bob")

    await emit_proximity(owner, payload)
    error = await owner.wait_for("proximity:error")
    assert isinstance(error.get("message"), str) and error["message"], error
    assert await dev_flag(bridge, dev_server, space) is False

    # events are handled in order: a change made by the bad request would reach Bob first
    await owner.emit("proximity:set", {"enabled": True})
    turned_on = await bob.wait_for("proximity:changed")
    assert bob.received("proximity:changed") == [turned_on]
    assert turned_on["enabled"] is True

    await emit_proximity(owner, payload)
    error = await owner.wait_for("proximity:error")
    assert isinstance(error.get("message"), str) and error["message"], error
    assert await dev_flag(bridge, dev_server, space) is True

    await owner.emit("proximity:set", {"enabled": False})
    turned_off = await bob.wait_for("proximity:changed")
    assert bob.received("proximity:changed") == [turned_on, turned_off]
    assert turned_off["enabled"] is False


async def test_flag_is_per_space(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §4 (`proximity:set`: "stores the space flag"): switching one space leaves every
    other space as it was, and its players hear nothing."""
    here, there = space_id(), space_id()
    owner = await dev_player(bridge, dev_server, here, "Owner", role="OWNER")
    neighbour = await dev_player(bridge, dev_server, there, "Neighbour")
    await neighbour.wait_for("chat:system", lambda m: m["content"] == "Neighbour joined")

    await owner.emit("proximity:set", {"enabled": True})
    await owner.wait_for("proximity:changed")
    await neighbour.expect_nothing("proximity:changed", within=QUIET)
    await neighbour.expect_nothing("chat:system", within=0.0)
    assert await dev_flag(bridge, dev_server, there) is False
    assert await dev_flag(bridge, dev_server, here) is True


# -- production: roles only from the app -----------------------------------------------------


@pytest.mark.parametrize(
    "app_role", [None, "PARTICIPANT", "ADMIN"], ids=["no-role", "participant", "unknown-role"]
)
async def test_production_ignores_a_claimed_role(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn, app_role: str | None
) -> None:
    """SPEC §2 (security rule), §2.1, §4: in production the role comes only from the app's
    verification answer: a valid participant session that claims `role: "OWNER"` in
    `join:space` is denied (E1004) and the flag stays off."""
    space = space_id()
    other = await guest(bridge, prod_server, app_standin, space, "Other")
    claimer = await guest(
        bridge, prod_server, app_standin, space, "Claimer", app_role=app_role, claimed_role="OWNER"
    )
    await other.wait_for("player:joined")

    mark = prod_server.mark()
    await claimer.emit("proximity:set", {"enabled": True})
    await expect_denied(prod_server, claimer, mark)
    await other.expect_nothing("proximity:changed", within=QUIET)
    await claimer.expect_nothing("proximity:changed", within=0.0)

    token = unique("guest-token")
    app_standin.accept(token, unique("participant"), "Newcomer")
    assert await flag_seen_by_newcomer(bridge, prod_server, space, session_token=token) is False


@pytest.mark.parametrize("app_role", ["STAFF", "OWNER"])
async def test_production_role_from_the_app_is_honoured(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn, app_role: str
) -> None:
    """SPEC §2.1, §4: a session the app verifies as STAFF or OWNER may set proximity even
    though the client claims nothing (or less); the space receives `proximity:changed` with
    the player's nickname as `changedBy`."""
    space = space_id()
    other = await guest(bridge, prod_server, app_standin, space, "Other")
    staff = await guest(
        bridge,
        prod_server,
        app_standin,
        space,
        "Staff",
        app_role=app_role,
        claimed_role="PARTICIPANT",
    )
    await other.wait_for("player:joined")

    await staff.emit("proximity:set", {"enabled": True})
    for client in (staff, other):
        changed = await client.wait_for("proximity:changed")
        assert changed == {"spaceId": space, "enabled": True, "changedBy": "Staff"}
    assert staff.player_id is not None and staff.player_id.startswith("participant-")
    await staff.expect_nothing("proximity:error", within=0.0)

    token = unique("guest-token")
    app_standin.accept(token, unique("participant"), "Newcomer")
    assert await flag_seen_by_newcomer(bridge, prod_server, space, session_token=token) is True


async def test_production_staff_verified_at_connect(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §2.2, §4: a STAFF session verified when the socket connects (`auth`) keeps its role
    at `join:space` and may set proximity."""
    space = space_id()
    other = await guest(bridge, prod_server, app_standin, space, "Other")
    token = unique("guest-token")
    staff_id = unique("participant")
    app_standin.accept(token, staff_id, "Staff", role="STAFF")
    staff = await bridge.connected(prod_server.url, auth={"sessionToken": token, "spaceId": space})
    joined = await staff.join(space, "Staff")
    assert joined["yourPlayerId"] == staff_id

    await staff.emit("proximity:set", {"enabled": True})
    changed = await other.wait_for("proximity:changed")
    assert changed == {"spaceId": space, "enabled": True, "changedBy": "Staff"}


async def test_production_dev_token_claiming_owner_gets_nowhere(
    bridge: Bridge, prod_server: ServerProcess, app_standin: AppStandIn
) -> None:
    """SPEC §1.1 (security rule), §2.1: in production a `dev-` token with `role: "OWNER"` is
    verified like any token; the app rejects it, so the socket is refused before it can touch
    the flag."""
    space = space_id()
    other = await guest(bridge, prod_server, app_standin, space, "Other")
    intruder = await bridge.connected(prod_server.url)
    await intruder.emit(
        "join:space",
        {
            "spaceId": space,
            "nickname": "Intruder",
            "playerId": unique("intruder"),
            "sessionToken": dev_token(),
            "role": "OWNER",
        },
    )
    assert await intruder.wait_for("error") == {
        "message": "Invalid session",
        "code": "INVALID_SESSION",
    }
    await intruder.wait_disconnect()
    assert intruder.received("room:joined") == []
    await other.expect_nothing("player:joined", within=QUIET)
    await other.expect_nothing("proximity:changed", within=0.0)

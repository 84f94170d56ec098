"""Logged-in users (``auth-`` tokens, AUTH_SESSIONS) and roles from the database, end to end in
production mode with the official JS client: FlowSpace's tables in a throwaway PostgreSQL
database, and the SQLite file the CLI manages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from spacesync.domain.auth import check_signed_token, sign_user_token
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn
from support.storage_world import (
    World,
    _admin,
    database_fixture,
    dsn_for,
    seeded_postgres,
    throwaway_database,
)

SECRET = "test-secret-" + "x" * 40
INVALID_SESSION = {"message": "Invalid session", "code": "INVALID_SESSION"}
PRODUCTION = {"NODE_ENV": None}

# What README shows an app: the few lines of Node.js that mint a signed token.
NODE_MINT = """
const crypto = require("crypto");
function spacesyncToken(userId, secret, ttlSeconds = 3600) {
  const expiresAt = Math.floor(Date.now() / 1000) + ttlSeconds;
  const payload = `${userId}.${expiresAt}`;
  const signature = crypto.createHmac("sha256", secret).update(payload).digest("base64url");
  return `auth-${payload}.${signature}`;
}
process.stdout.write(spacesyncToken(process.argv[1], process.argv[2]));
"""


def signed(user_id: str, ttl: int = 3600, secret: str = SECRET) -> str:
    return sign_user_token(secret, user_id, int(time.time()) + ttl)


def ready(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.url}/health/ready", timeout=5) as response:
        return int(response.status)


def metrics(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


async def _pg_world(name: str) -> tuple[str, World]:
    """``owner`` owns ``space``, ``admin`` is a super admin, ``staff`` gets a STAFF row here,
    ``player`` is a plain user."""
    world = await seeded_postgres(name)
    conn = await asyncpg.connect(dsn_for(name), timeout=5)
    try:
        await conn.execute(
            'INSERT INTO "SpaceMember" ("id", "spaceId", "userId", "role", "updatedAt")'
            " VALUES ('cmemberstaff0000000000001', $1, $2, 'STAFF', now())",
            world.space,
            world.staff,
        )
    finally:
        await conn.close()
    return dsn_for(name), world


# A FlowSpace database of its own for this module.
pg_world = database_fixture(_pg_world, scope="module")


async def joined(
    bridge: Bridge, server: ServerProcess, space: str, token: str, nickname: str = "Member"
) -> tuple[JsClient, dict[str, Any]]:
    client = await bridge.connected(server.url)
    room = await client.join(space, nickname, session_token=token, playerId="claimed", role="OWNER")
    return client, room


async def switch_proximity(client: JsClient) -> str:
    """``changed`` when the server let the client switch proximity, ``denied`` otherwise."""
    await client.emit("proximity:set", {"enabled": True})
    done, pending = await asyncio.wait(
        [
            asyncio.ensure_future(client.wait_for("proximity:changed", timeout=3)),
            asyncio.ensure_future(client.wait_for("proximity:error", timeout=3)),
        ],
        return_when=asyncio.FIRST_COMPLETED,
    )
    for task in pending:
        task.cancel()
    (first,) = done
    return "changed" if "changedBy" in first.result() else "denied"


async def refused(bridge: Bridge, server: ServerProcess, space: str, token: str) -> None:
    client = await bridge.connected(server.url)
    await client.emit("join:space", {"spaceId": space, "nickname": "X", "sessionToken": token})
    assert await client.wait_for("error") == INVALID_SESSION
    assert await client.wait_disconnect() == "io server disconnect"
    assert client.received("room:joined") == []


# -- signed tokens on FlowSpace's database -------------------------------------------------------


async def test_signed_users_join_with_their_role_from_postgres(
    bridge: Bridge, start_server: Any, app_standin: AppStandIn, pg_world: tuple[str, World]
) -> None:
    dsn, world = pg_world
    server = start_server(
        **PRODUCTION, DATABASE_URL=dsn, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    player, room = await joined(bridge, server, world.space, signed(world.player), "Player")
    assert room["yourPlayerId"] == f"user-{world.player}"
    assert await switch_proximity(player) == "denied"  # the claimed OWNER role is ignored

    owner, room = await joined(bridge, server, world.space, signed(world.owner), "Owner")
    assert room["yourPlayerId"] == f"user-{world.owner}"
    assert await switch_proximity(owner) == "changed"
    staff, _ = await joined(bridge, server, world.space, signed(world.staff), "Staff")
    assert await switch_proximity(staff) == "changed"
    admin, _ = await joined(bridge, server, world.space, signed(world.admin), "Boss")
    assert await switch_proximity(admin) == "changed"
    # the owner of space-a is a plain participant in another user's space
    elsewhere, _ = await joined(bridge, server, world.other_space, signed(world.owner), "Owner")
    assert await switch_proximity(elsewhere) == "denied"

    roles = {
        e["context"]["playerId"]: e["context"]["role"]
        for e in server.find_logs(code="I2001")
        if e["context"]["spaceId"] == world.space
    }
    assert roles == {
        f"user-{world.player}": "PARTICIPANT",
        f"user-{world.owner}": "OWNER",
        f"user-{world.staff}": "STAFF",
        f"user-{world.admin}": "OWNER",
    }
    assert app_standin.verify_calls() == []  # no call to the app for a signed token

    # leaving: the EXIT goes to the visit API with the bare user id
    await player.disconnect()
    for _ in range(100):
        if app_standin.visit_calls(world.space):
            break
        await asyncio.sleep(0.05)
    (visit,) = app_standin.visit_calls(world.space)
    assert visit.headers.get("x-user-id") == world.player

    figures = metrics(server)
    assert figures["auth"] == {"sessions": "signed"}
    database = figures["database"]
    assert (database["kind"], database["up"], database["failures"]) == ("postgres", True, 0)
    assert isinstance(database["latencyMs"], float)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda w: signed(w.owner, ttl=-5), id="expired"),
        pytest.param(lambda w: signed(w.owner, secret="another-secret-" + "y" * 40), id="forged"),
        pytest.param(lambda w: signed(w.player)[:-2] + "AA", id="bad-signature"),
        pytest.param(lambda w: f"auth-{w.owner}", id="unsigned"),
        pytest.param(lambda w: signed("cnosuchuser000000000000001"), id="unknown-user"),
    ],
)
async def test_refused_signed_tokens(
    bridge: Bridge,
    start_server: Any,
    app_standin: AppStandIn,
    pg_world: tuple[str, World],
    token: Any,
) -> None:
    dsn, world = pg_world
    server = start_server(
        **PRODUCTION, DATABASE_URL=dsn, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    mark = server.mark()
    await refused(bridge, server, world.space, token(world))
    await server.wait_for_log(code="E1002", level="warn", since=mark)
    assert app_standin.verify_calls() == []


async def test_a_forged_token_fails_at_connect(
    bridge: Bridge, start_server: Any, pg_world: tuple[str, World]
) -> None:
    dsn, world = pg_world
    server = start_server(
        **PRODUCTION, DATABASE_URL=dsn, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    forged = signed(world.owner, secret="another-secret-" + "y" * 40)
    client = bridge.client(server.url, auth={"sessionToken": forged, "spaceId": world.space})
    error = await client.connect_expect_error()
    assert error["message"] == "Invalid session"
    good = bridge.client(
        server.url, auth={"sessionToken": signed(world.owner), "spaceId": world.space}
    )
    await good.connect()
    room = await good.join(world.space, "Owner")
    assert room["yourPlayerId"] == f"user-{world.owner}"
    assert await switch_proximity(good) == "changed"


def test_the_node_snippet_mints_tokens_spacesync_accepts() -> None:
    token = subprocess.run(
        ["node", "-e", NODE_MINT, "cuser123", SECRET],
        capture_output=True,
        check=True,
        text=True,
        timeout=20,
    ).stdout
    assert check_signed_token(token, SECRET, time.time()).user_id == "cuser123"


# -- a database that goes away ------------------------------------------------------------------


async def _lost_database(name: str) -> tuple[str, str, World]:
    return name, dsn_for(name), await seeded_postgres(name)


# A seeded database of its own, for a test that cuts it off.
lost_database = database_fixture(_lost_database)


async def test_a_down_database_lets_players_join_as_participants(
    bridge: Bridge, start_server: Any, lost_database: tuple[str, str, World]
) -> None:
    name, dsn, world = lost_database
    server = start_server(
        **PRODUCTION, DATABASE_URL=dsn, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    mark = server.mark()
    started = time.monotonic()
    owner, room = await joined(bridge, server, world.space, signed(world.owner), "Owner")
    assert time.monotonic() - started < 3.0
    assert room["yourPlayerId"] == f"user-{world.owner}"
    assert await switch_proximity(owner) == "denied"
    await server.wait_for_log(code="E4007", level="warn", since=mark)
    database = metrics(server)["database"]
    assert database["up"] is False and database["failures"] >= 1
    # the node stays in service
    assert await asyncio.to_thread(ready, server) == 200


async def test_a_database_down_at_start_is_opened_once_it_answers(
    bridge: Bridge, start_server: Any, lost_database: tuple[str, str, World]
) -> None:
    """A node started while its database refuses connections serves players at once and picks
    the database up when it comes back: the owner then gets their role without a restart."""
    name, dsn, world = lost_database
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    server = start_server(
        **PRODUCTION, DATABASE_URL=dsn, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    await server.wait_for_log(code="E4006", level="error")
    first, room = await joined(bridge, server, world.space, signed(world.owner), "Owner")
    assert room["yourPlayerId"] == f"user-{world.owner}"
    assert await switch_proximity(first) == "denied"  # no database: no role yet
    await first.disconnect()
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    await server.wait_for_log(code="I4005", timeout=15)
    again, _ = await joined(bridge, server, world.space, signed(world.owner), "Owner")
    assert await switch_proximity(again) == "changed"


def test_a_database_without_flowspace_tables_stops_start_up() -> None:
    with throwaway_database(load_schema=False) as name:
        server = ServerProcess({"DATABASE_URL": dsn_for(name), "NODE_ENV": None})
        assert server.run_to_exit(timeout=20) == 2
        errors = server.find_logs(level="error")
        assert [e["code"] for e in errors] == ["E6003"], server.output()
        assert "Storage schema" in errors[0]["message"]
        server.assert_all_lines_json()


# -- SQLite: roles from the CLI -----------------------------------------------------------------


async def test_sqlite_roles_come_from_the_cli(
    bridge: Bridge, start_server: Any, tmp_path: Path
) -> None:
    storage_path = str(tmp_path / "spacesync.sqlite3")
    space, user = space_id(), unique("cuser")
    env = {**os.environ, "STORAGE_PATH": storage_path}
    env.pop("DATABASE_URL", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "spacesync", "members", "set-role", space, user, "STAFF"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    server = start_server(
        **PRODUCTION, STORAGE_PATH=storage_path, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=SECRET
    )
    staff, room = await joined(bridge, server, space, signed(user), "Staff")
    assert room["yourPlayerId"] == f"user-{user}"
    assert await switch_proximity(staff) == "changed"
    # on SQLite a user the file never heard of cannot be told from a new one: joins
    other, room = await joined(bridge, server, space, signed(unique("cuser")), "Other")
    assert await switch_proximity(other) == "denied"
    assert metrics(server)["database"]["kind"] == "sqlite"


# -- verify and trust modes ---------------------------------------------------------------------


async def test_verify_mode_asks_the_app_at_auth_verify_url(
    bridge: Bridge, start_server: Any, app_standin: AppStandIn
) -> None:
    server = start_server(**PRODUCTION, AUTH_VERIFY_URL=f"{app_standin.url}/api/auth/verify")
    space = space_id()
    app_standin.accept("auth-cuser1", "user-cuser1", "Ann", user_id="cuser1", role="STAFF")
    client, room = await joined(bridge, server, space, "auth-cuser1", "Ann")
    assert room["yourPlayerId"] == "user-cuser1"
    assert await switch_proximity(client) == "changed"  # the app's role
    (call,) = app_standin.find("POST", "/api/auth/verify")
    assert call.body == {"sessionToken": "auth-cuser1", "spaceId": space}
    assert app_standin.verify_calls() == []  # guest tokens keep the guest route
    await refused(bridge, server, space, "auth-cunknown")


async def test_verify_mode_uses_the_guest_route_by_default(
    bridge: Bridge, start_server: Any, app_standin: AppStandIn
) -> None:
    server = start_server(**PRODUCTION)
    space = space_id()
    app_standin.accept("auth-cuser2", "user-cuser2", "Bo", user_id="cuser2")
    _, room = await joined(bridge, server, space, "auth-cuser2", "Bo")
    assert room["yourPlayerId"] == "user-cuser2"
    assert len(app_standin.verify_calls("auth-cuser2")) == 1
    assert metrics(server)["auth"] == {"sessions": "verify"}


async def test_trust_mode_warns_at_start_and_in_metrics(
    bridge: Bridge, start_server: Any, app_standin: AppStandIn
) -> None:
    server = start_server(**PRODUCTION, AUTH_SESSIONS="trust")
    (warning,) = server.find_logs(code="E1005")
    assert warning["level"] == "error"
    assert metrics(server)["auth"] == {"sessions": "trust"}
    _, room = await joined(bridge, server, space_id(), "auth-cuser3", "Cy")
    assert room["yourPlayerId"] == "user-cuser3"
    assert app_standin.verify_calls() == []

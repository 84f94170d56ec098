"""Plain HTTP on the Socket.IO port: health, readiness, presence, metrics and CORS (SPEC §10)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn

ServerFactory = Callable[..., ServerProcess]

GIB = 1024**3
MIB = 1024**2
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
JSON_ROUTES = ["/", "/health", "/health/ready", "/metrics", "/presence/some-space"]


async def get_json(server: ServerProcess, path: str) -> tuple[httpx.Response, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get(path)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response, response.json()


async def joined_player(
    bridge: Bridge, server: ServerProcess, space: str, nickname: str, **fields: Any
) -> JsClient:
    client = await bridge.connected(server.url)
    await client.join(space, nickname, session_token=dev_token(), playerId=unique("p"), **fields)
    return client


def parse_iso(text: Any) -> datetime:
    assert isinstance(text, str), text
    assert ISO.fullmatch(text), text
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return parsed


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- health --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/"])
async def test_health(dev_server: ServerProcess, path: str) -> None:
    """SPEC §10: `GET /health` and `GET /` answer `{status: "ok", timestamp (ms), uptime (s)}`;
    uptime counts seconds since start and grows."""
    before_ms = time.time() * 1000
    response, first = await get_json(dev_server, path)
    after_ms = time.time() * 1000
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == "*"
    assert set(first) == {"status", "timestamp", "uptime"}, first
    assert first["status"] == "ok"
    assert is_int(first["timestamp"]), first
    assert before_ms - 1000 <= first["timestamp"] <= after_ms + 1000
    assert is_number(first["uptime"]) and 0 <= first["uptime"] < 3600, first

    await asyncio.sleep(0.3)
    _, second = await get_json(dev_server, path)
    assert second["timestamp"] > first["timestamp"]
    assert second["uptime"] > first["uptime"]
    # Seconds, not milliseconds: uptime advanced by about 0.3, as the timestamps did.
    elapsed = (second["timestamp"] - first["timestamp"]) / 1000
    assert abs((second["uptime"] - first["uptime"]) - elapsed) < 0.25, (first, second)


async def test_ready(dev_server: ServerProcess) -> None:
    """SPEC §10: `GET /health/ready` answers 200 on a single node that can serve."""
    response, body = await get_json(dev_server, "/health/ready")
    assert response.status_code == 200, body
    assert isinstance(body, dict)
    assert response.headers.get("access-control-allow-origin") == "*"


# -- presence ------------------------------------------------------------------------------------


async def test_presence_lists_joined_players(bridge: Bridge, dev_server: ServerProcess) -> None:
    """SPEC §10: `GET /presence/{spaceId}` answers `{spaceId, onlineUsers: [{id, nickname,
    avatarColor}], count, timestamp}` for the players in the space (not those elsewhere, nor
    those who left)."""
    space = space_id()
    alice = await joined_player(bridge, dev_server, space, "Alice", avatarColor="red")
    bob = await joined_player(bridge, dev_server, space, "Bob")
    await joined_player(bridge, dev_server, space_id(), "Elsewhere")

    before_ms = time.time() * 1000
    response, body = await get_json(dev_server, f"/presence/{space}")
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == "*"
    assert set(body) == {"spaceId", "onlineUsers", "count", "timestamp"}, body
    assert body["spaceId"] == space
    assert body["count"] == 2
    users = sorted(body["onlineUsers"], key=lambda u: u["nickname"])
    assert users == [
        {"id": alice.player_id, "nickname": "Alice", "avatarColor": "red"},
        {"id": bob.player_id, "nickname": "Bob", "avatarColor": "default"},
    ]
    assert is_int(body["timestamp"]) and abs(body["timestamp"] - before_ms) < 5000

    await bob.emit("leave:space")
    await alice.wait_for("player:left")
    _, after = await get_json(dev_server, f"/presence/{space}")
    assert after["count"] == 1
    assert [u["id"] for u in after["onlineUsers"]] == [alice.player_id]


async def test_presence_of_empty_space(dev_server: ServerProcess) -> None:
    """SPEC §10: a space nobody is in has `count: 0` and no users."""
    space = space_id()
    response, body = await get_json(dev_server, f"/presence/{space}")
    assert response.status_code == 200
    assert body["spaceId"] == space
    assert body["onlineUsers"] == []
    assert body["count"] == 0


@pytest.mark.parametrize(
    "bad_id",
    ["has%20space", "s" * 101, "semi%3Bcolon", "quote%22s", "%3Cscript%3E", "%C3%A9t%C3%A9"],
    ids=["space", "101-chars", "semicolon", "quote", "html", "non-ascii"],
)
async def test_presence_rejects_invalid_space_id(dev_server: ServerProcess, bad_id: str) -> None:
    """SPEC §3 (`spaceId` is 1–100 characters of `[A-Za-z0-9_.:@-]`), §10: an invalid space id
    gets 400 with a JSON body, still with `Access-Control-Allow-Origin: *`."""
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=5) as http:
        response = await http.get(f"/presence/{bad_id}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)
    assert response.headers.get("access-control-allow-origin") == "*"


# -- metrics -------------------------------------------------------------------------------------


def assert_metrics_shape(body: dict[str, Any]) -> None:
    """Every field listed in SPEC §10, with its type."""
    assert body["server"] == "socket.io"
    assert body["version"] == "2.0.0"
    assert is_int(body["timestamp"]) and abs(body["timestamp"] - time.time() * 1000) < 10_000

    uptime = body["uptime"]
    assert is_int(uptime["seconds"]) and uptime["seconds"] >= 0
    assert isinstance(uptime["formatted"], str)
    assert re.fullmatch(r"(\d+d)?( ?\d+h)?( ?\d+m)?( ?\d+s)?", uptime["formatted"]), uptime
    parse_iso(uptime["startTime"])

    connections = body["connections"]
    assert is_int(connections["total"]) and connections["total"] >= 0
    assert isinstance(connections["rooms"], list)
    for room in connections["rooms"]:
        assert isinstance(room["spaceId"], str) and is_int(room["connections"]), room
    assert is_int(connections["roomCount"])
    assert connections["roomCount"] == len(connections["rooms"])
    assert is_int(body["parties"]["count"])

    assert is_int(body["process"]["memory"]["rssMB"])
    assert is_int(body["process"]["memory"]["heapUsedMB"])
    memory = body["memory"]
    for key in ("rss", "heapUsed", "rssMB", "heapUsedMB"):
        assert is_int(memory[key]) and memory[key] >= 0, (key, memory)
    assert memory["rss"] > MIB  # bytes, not megabytes
    assert abs(memory["rssMB"] - memory["rss"] / MIB) <= 1, memory
    assert abs(memory["heapUsedMB"] - memory["heapUsed"] / MIB) <= 1, memory
    assert body["process"]["memory"]["rssMB"] == memory["rssMB"]
    assert 0 < memory["heapUsed"] <= memory["rss"] * 2, memory

    cpu = body["cpu"]
    for key in ("user", "system", "totalMicroseconds"):
        assert is_int(cpu[key]) and cpu[key] >= 0, (key, cpu)
    assert cpu["totalMicroseconds"] == cpu["user"] + cpu["system"]
    assert cpu["user"] > 1000  # microseconds: starting Python alone takes milliseconds of CPU


async def test_metrics_shape_and_pretty_printing(dev_server: ServerProcess) -> None:
    """SPEC §10: `GET /metrics` (version 2.0.0) has every listed field with the right types and
    is pretty-printed (one value per line, indented)."""
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=5) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("access-control-allow-origin") == "*"
    lines = response.text.strip().splitlines()
    assert len(lines) > 20, response.text[:200]
    assert any(re.match(r'\s+"server": "socket\.io",?$', line) for line in lines), lines[:5]
    assert_metrics_shape(response.json())


async def test_metrics_counts_sockets_rooms_and_parties(
    start_server: ServerFactory, bridge: Bridge
) -> None:
    """SPEC §10: `connections.total` counts this node's sockets (joined or not), `rooms` lists
    each space with its player count, `roomCount` their number, `parties.count` the live parties;
    on a fresh node uptime is formatted as "Ns" and `startTime` is when it started."""
    started = datetime.now(UTC)
    server = start_server(NODE_ENV="development")

    _, empty = await get_json(server, "/metrics")
    assert empty["connections"] == {"total": 0, "rooms": [], "roomCount": 0}
    assert empty["parties"]["count"] == 0

    first, second = space_id(), space_id()
    alice = await joined_player(bridge, server, first, "Alice")
    await joined_player(bridge, server, first, "Bob")
    await joined_player(bridge, server, second, "Carol")
    await bridge.connected(server.url)  # connected, never joined

    _, body = await get_json(server, "/metrics")
    assert_metrics_shape(body)
    assert body["connections"]["total"] == 4
    rooms = {r["spaceId"]: r["connections"] for r in body["connections"]["rooms"]}
    assert rooms == {first: 2, second: 1}
    assert body["connections"]["roomCount"] == 2
    assert body["parties"]["count"] == 0

    await alice.emit("party:create", {"name": "Crew"})
    await alice.wait_for("party:joined")
    _, body = await get_json(server, "/metrics")
    assert body["parties"]["count"] == 1

    await alice.emit("party:leave", {})
    await alice.wait_for("party:left")
    await alice.disconnect()
    for _ in range(50):
        _, body = await get_json(server, "/metrics")
        if body["connections"]["total"] == 3:
            break
        await asyncio.sleep(0.05)
    assert body["connections"]["total"] == 3
    assert {r["spaceId"]: r["connections"] for r in body["connections"]["rooms"]} == {
        first: 1,
        second: 1,
    }
    assert body["parties"]["count"] == 0

    uptime = body["uptime"]
    assert uptime["seconds"] < 60
    assert uptime["formatted"] == f"{uptime['seconds']}s"
    start_time = parse_iso(uptime["startTime"])
    assert abs((start_time - started).total_seconds()) < 5, (start_time, started)


async def test_metrics_storage_matches_root_file_system(dev_server: ServerProcess) -> None:
    """SPEC §10: storage figures are the root file system's, in GiB rounded to 2 decimals,
    with the used percentage and the mount point."""
    _, body = await get_json(dev_server, "/metrics")
    usage = shutil.disk_usage("/")
    storage = body["storage"]
    assert set(storage) >= {"totalGB", "usedGB", "availableGB", "usedPercent", "mountPoint"}
    assert storage["mountPoint"] == "/"
    assert storage["totalGB"] == round(usage.total / GIB, 2)
    for key in ("totalGB", "usedGB", "availableGB"):
        value = storage[key]
        assert is_number(value) and round(value, 2) == value, (key, value)
    # Used and available space may move a little between the two readings.
    assert abs(storage["usedGB"] - usage.used / GIB) < 0.1, storage
    assert abs(storage["availableGB"] - usage.free / GIB) < 0.1, storage
    assert is_number(storage["usedPercent"])
    by_total = usage.used / usage.total * 100
    by_capacity = usage.used / (usage.used + usage.free) * 100
    assert (
        min(by_total, by_capacity) - 1 <= storage["usedPercent"] <= max(by_total, by_capacity) + 1
    )


# -- CORS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
async def test_json_routes_allow_any_origin(dev_server: ServerProcess, path: str) -> None:
    """SPEC §10: JSON routes carry `Access-Control-Allow-Origin: *`, whatever the Origin, and
    answer a preflight `OPTIONS` with 204."""
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=5) as http:
        response = await http.get(path, headers={"Origin": "http://evil.example"})
        assert response.status_code == 200, (path, response.text)
        assert response.headers.get("access-control-allow-origin") == "*"

        preflight = await http.options(
            path,
            headers={
                "Origin": "https://dashboard.example",
                "Access-Control-Request-Method": "GET",
            },
        )
    assert preflight.status_code == 204, (path, preflight.status_code, preflight.text)
    assert preflight.headers.get("access-control-allow-origin") == "*"
    assert preflight.content == b""


def polling_handshake(server: ServerProcess, origin: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        return http.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": origin}
        )


async def test_socketio_cors_allows_listed_origins(
    start_server: ServerFactory, app_standin: AppStandIn
) -> None:
    """SPEC §1.1: the Socket.IO endpoint allows `http://localhost:3000`, `http://127.0.0.1:3000`,
    the app URL's origin and every `CORS_ORIGINS` entry, echoing the origin."""
    server = start_server(
        NODE_ENV=None,
        APP_URL=f"{app_standin.url}/base/path",
        CORS_ORIGINS="https://spaces.example.com, http://other.example:8080",
    )
    allowed = [
        "http://localhost:3000",
        "http://127.0.0.1:3000",
        app_standin.url,
        "https://spaces.example.com",
        "http://other.example:8080",
    ]
    for origin in allowed:
        response = await asyncio.to_thread(polling_handshake, server, origin)
        assert response.status_code == 200, (origin, response.status_code, response.text)
        assert response.headers.get("access-control-allow-origin") == origin, origin
        assert '"sid"' in response.text, response.text


async def test_socketio_cors_refuses_unlisted_origins(start_server: ServerFactory) -> None:
    """SPEC §1.1: an origin that is not allowed gets no `Access-Control-Allow-Origin` echo and
    no Engine.IO session. A refused origin is the client's mistake, not an error of the server
    (no error-level log, so no alert), and every log line stays JSON (§11)."""
    server = start_server(NODE_ENV=None, CORS_ORIGINS="https://spaces.example.com")
    mark = server.mark()
    for origin in (
        "http://evil.example",
        "http://localhost:3001",
        "https://spaces.example.com.evil.example",
        "null",
    ):
        response = await asyncio.to_thread(polling_handshake, server, origin)
        assert response.status_code == 403, (origin, response.status_code, response.text)
        assert response.headers.get("access-control-allow-origin") in (None, ""), origin
        assert '"sid"' not in response.text, origin
    await asyncio.sleep(0.2)
    assert server.find_logs(level="error", since=mark) == []


async def test_websocket_client_from_unlisted_origin_is_refused(
    start_server: ServerFactory, bridge: Bridge
) -> None:
    """SPEC §1.1: the origin check also applies to WebSocket connections (a browser sends its
    Origin on the upgrade); an allowed origin connects."""
    server = start_server(NODE_ENV=None)
    good = bridge.client(
        server.url, transports=["websocket"], extraHeaders={"Origin": "http://localhost:3000"}
    )
    await good.connect()
    bad = bridge.client(
        server.url, transports=["websocket"], extraHeaders={"Origin": "http://evil.example"}
    )
    refused = await bad.connect_expect_error()
    assert refused["message"], refused

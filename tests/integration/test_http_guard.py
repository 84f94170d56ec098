"""Plain HTTP on the Socket.IO port: slow request headers are cut off, and the internal routes
(`/metrics`, `/presence/{spaceId}`) need a bearer token when `INTERNAL_API_TOKEN` is set."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge
from support.server import ServerProcess

ServerFactory = Callable[..., ServerProcess]

TOKEN = "internal-" + "s3cret" * 4
PROTECTED = ["/metrics", "/presence/some-space"]
PUBLIC = ["/health", "/health/ready"]


# -- slow headers ---------------------------------------------------------------------------------


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(), timeout)  # returns at end of stream
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float | None:
    """Send one header byte every 0.2 s (for up to 8 s); seconds until the server closed the
    connection, or None."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(40):
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            pass
        if await _closed_by_server(reader, 0.2):
            return loop.time() - started
    return None


@pytest.mark.parametrize(
    "request_line",
    [b"GET /health HTTP/1.1\r\n", b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"],
    ids=["http", "websocket-upgrade"],
)
async def test_slow_request_headers_are_cut_off(
    bridge: Bridge, start_server: ServerFactory, request_line: bytes
) -> None:
    """`HEADER_READ_TIMEOUT=1`: a client that trickles its headers (one byte every 0.2 s) is
    disconnected about a second after it connected (E2005, counted), while a WebSocket player
    and a client that sends its request at once are served as usual. The same holds for the
    head of a WebSocket upgrade, which the listener reads itself."""
    server = start_server(NODE_ENV="development", HEADER_READ_TIMEOUT="1")
    player = await bridge.connected(server.url)
    await player.join(space_id(), "Player", session_token=dev_token(), playerId=unique("p"))

    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_line + b"Host: x\r\n")
    closed_after = await _trickle(reader, writer)
    writer.close()
    assert closed_after is not None, "the slow client was never disconnected"
    assert closed_after < 2.5, closed_after

    # A silent connection (not a byte sent) is cut off the same way.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    assert await _closed_by_server(reader, 3.0)
    writer.close()

    await server.wait_for_log(
        code="E2005", predicate=lambda e: e["context"].get("reason") == "headerTimeout"
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
        abuse = (await http.get("/metrics")).json()["abuse"]
    assert abuse["headerTimeout"] >= 1
    assert (await player.state())["connected"] is True


async def test_idle_keep_alive_connection_is_closed_quietly(start_server: ServerFactory) -> None:
    """After a response, a keep-alive connection that sends nothing more is closed after the
    header timeout without being counted as an attack."""
    server = start_server(NODE_ENV="development", HEADER_READ_TIMEOUT="1")
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert await _closed_by_server(reader, 3.0)
    writer.close()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        abuse = (await http.get("/metrics")).json()["abuse"]
    assert abuse.get("headerTimeout", 0) == 0


async def test_a_trickled_second_request_is_cut_off_too(start_server: ServerFactory) -> None:
    """A client that sends one proper request and then trickles the next one's headers on the
    same keep-alive connection is cut off after the header timeout as well."""
    server = start_server(NODE_ENV="development", HEADER_READ_TIMEOUT="1")
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    writer.write(b"GET /health HTTP/1.1\r\n")
    closed_after = await _trickle(reader, writer)
    writer.close()
    assert closed_after is not None, "the slow client was never disconnected"
    assert closed_after < 2.5, closed_after


# -- internal routes ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROTECTED)
async def test_internal_routes_need_the_token(start_server: ServerFactory, path: str) -> None:
    """With `INTERNAL_API_TOKEN` set, no token or a wrong one gets 401 (E1003, counted); the
    right bearer token gets the usual answer; none of these carry
    `Access-Control-Allow-Origin: *`, nor does their preflight."""
    server = start_server(NODE_ENV="development", INTERNAL_API_TOKEN=TOKEN)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        missing = await http.get(path)
        wrong = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
        basic = await http.get(path, headers={"Authorization": f"Basic {TOKEN}"})
        right = await http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        preflight = await http.options(path, headers={"Origin": "https://evil.example"})
        counted = (await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).json()[
            "abuse"
        ]["unauthorizedHttp"]
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401, refused.text
        assert "access-control-allow-origin" not in refused.headers
    assert right.status_code == 200, right.text
    assert "access-control-allow-origin" not in right.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert counted == 3
    assert server.find_logs(code="E1003", level="warn")


async def test_health_stays_public_with_a_token(start_server: ServerFactory) -> None:
    server = start_server(NODE_ENV="development", INTERNAL_API_TOKEN=TOKEN)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        for path in PUBLIC:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", PROTECTED)
async def test_without_a_token_internal_routes_stay_public(
    start_server: ServerFactory, path: str
) -> None:
    server = start_server(NODE_ENV="development")
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert server.find_logs(code="E6004") == []  # development: no warning


async def test_production_warns_when_internal_routes_are_public(
    start_server: ServerFactory,
) -> None:
    server = start_server(NODE_ENV=None)
    entry = await server.wait_for_log(code="E6004")
    assert entry["level"] == "warn"
    assert "INTERNAL_API_TOKEN" in entry["message"]
    protected = start_server(NODE_ENV=None, INTERNAL_API_TOKEN=TOKEN)
    await asyncio.sleep(0.3)
    assert protected.find_logs(code="E6004") == []

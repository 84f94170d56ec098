"""Start-up configuration and graceful shutdown (SPEC §1, §1.1, §12)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess, free_port
from support.standins import AppStandIn, DiscordStandIn

ServerFactory = Callable[..., ServerProcess]

CONSOLE_SCRIPT = Path(sys.executable).parent / "spacesync"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


class ScriptServer(ServerProcess):
    """The server started through the installed `spacesync` console script."""

    def command(self) -> list[str]:
        return [str(CONSOLE_SCRIPT)]


@contextlib.contextmanager
def own_server(server: ServerProcess, *, start: bool = True) -> Iterator[ServerProcess]:
    """Run a server this test builds itself; stop it and check its output at the end."""
    try:
        if start:
            server.start()
        yield server
    finally:
        if server.proc is not None:
            if server.running:
                server.kill()
            server.assert_all_lines_json()


def wired_env(app: AppStandIn, discord: DiscordStandIn, **env: str | None) -> dict[str, str | None]:
    return {"APP_URL": app.url, "DISCORD_WEBHOOK_URL": discord.url, **env}


def health_status(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
    except httpx.HTTPError:
        return None


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "-1"}, "PORT"),
        ({"PORT": "30o1"}, "PORT"),
        ({"PORT": None, "SOCKET_PORT": "x"}, "SOCKET_PORT"),
        ({"APP_URL": "not-a-url"}, "APP_URL"),
        ({"APP_URL": "http://"}, "APP_URL"),
        ({"APP_URL": None, "NEXT_PUBLIC_API_URL": "localhost 3000"}, "NEXT_PUBLIC_API_URL"),
        ({"DISCORD_WEBHOOK_URL": "ftp://x"}, "DISCORD_WEBHOOK_URL"),
        (
            {"DISCORD_WEBHOOK_URL": None, "DISCORD_ERROR_WEBHOOK_URL": "discord"},
            "DISCORD_ERROR_WEBHOOK_URL",
        ),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
    ids=[
        "port-abc",
        "port-70000",
        "port-negative",
        "port-letter-o",
        "socket-port-x",
        "app-url-not-a-url",
        "app-url-no-host",
        "next-public-api-url",
        "discord-ftp",
        "discord-error-webhook",
        "log-level-loud",
    ],
)
def test_bad_configuration_stops_startup(env: dict[str, str | None], variable: str) -> None:
    """SPEC §1.1: a bad value stops start-up with exit code 2 and exactly one clear line on
    stderr (a JSON object naming the variable), never a traceback."""
    server = ServerProcess({"NODE_ENV": None, **env})
    code = server.run_to_exit(timeout=10)
    assert code == 2, server.output()
    stderr = [line for stream, line in server.raw_lines if stream == "stderr" and line.strip()]
    assert len(stderr) == 1, server.output()
    entry = json.loads(stderr[0])
    assert isinstance(entry, dict), stderr
    assert variable in str(entry.get("message")), entry
    assert "Traceback" not in server.output()
    server.assert_all_lines_json()
    assert health_status(server.port) is None


# -- ports ---------------------------------------------------------------------------------------


async def test_socket_port_is_used_when_port_is_unset(bridge: Bridge) -> None:
    """SPEC §1: without `PORT` the server listens on `SOCKET_PORT`, Socket.IO included."""
    port = free_port()
    with own_server(
        ServerProcess(
            {"NODE_ENV": "development", "PORT": None, "SOCKET_PORT": str(port)}, port=port
        )
    ) as server:
        assert health_status(port) == 200
        client = await bridge.connected(server.url)
        joined = await client.join(space_id(), "Porter", session_token=dev_token())
        assert joined["yourPlayerId"]
        await client.disconnect()
        assert await server.astop() == 0


async def test_port_wins_over_socket_port() -> None:
    """SPEC §1: `PORT`, else `SOCKET_PORT`: with both set, `PORT` is the one listened on."""
    port, other = free_port(), free_port()
    with own_server(ServerProcess({"SOCKET_PORT": str(other)}, port=port)) as server:
        assert health_status(port) == 200
        assert health_status(other) is None
        assert await server.astop() == 0


# -- aliases -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "urls",
    [
        {"APP_URL": None, "NEXT_PUBLIC_API_URL": "<app>"},
        {"APP_URL": None, "NEXT_PUBLIC_APP_URL": "<app>"},
        {"APP_URL": "<app>", "NEXT_PUBLIC_API_URL": UNREACHABLE},
        {"APP_URL": None, "NEXT_PUBLIC_API_URL": "<app>", "NEXT_PUBLIC_APP_URL": UNREACHABLE},
    ],
    ids=["next-public-api-url", "next-public-app-url", "app-url-first", "api-url-before-app-url"],
)
async def test_app_url_aliases(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    urls: dict[str, str | None],
) -> None:
    """SPEC §1.1: the app URL comes from `APP_URL`, else `NEXT_PUBLIC_API_URL`, else
    `NEXT_PUBLIC_APP_URL`: session verification reaches the app named by the first one set."""
    env = {k: (app_standin.url if v == "<app>" else v) for k, v in urls.items()}
    server = start_server(NODE_ENV=None, **env)
    token, participant = unique("guest-token"), unique("participant")
    app_standin.accept(token, participant, "Verified")
    space = space_id()

    client = await bridge.connected(server.url)
    joined = await client.join(space, "Claimed", session_token=token)
    assert joined["yourPlayerId"] == participant
    (call,) = app_standin.verify_calls(token)
    assert call.body == {"sessionToken": token, "spaceId": space}


@pytest.mark.parametrize(
    "urls",
    [
        {"DISCORD_WEBHOOK_URL": None, "DISCORD_ERROR_WEBHOOK_URL": "<discord>"},
        {"DISCORD_WEBHOOK_URL": "<discord>", "DISCORD_ERROR_WEBHOOK_URL": f"{UNREACHABLE}/hook"},
    ],
    ids=["discord-error-webhook-url", "discord-webhook-url-first"],
)
async def test_discord_webhook_alias(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
    urls: dict[str, str | None],
) -> None:
    """SPEC §1.1, §11: alerts go to `DISCORD_WEBHOOK_URL`, else `DISCORD_ERROR_WEBHOOK_URL`."""
    env = {k: (discord_standin.url if v == "<discord>" else v) for k, v in urls.items()}
    server = start_server(NODE_ENV=None, **env)
    app_standin.fail_all()
    client = await bridge.connected(server.url)
    await client.emit(
        "join:space",
        {"spaceId": space_id(), "nickname": "Guest", "sessionToken": unique("guest-token")},
    )
    await server.wait_for_log(code="E4002", level="error")
    (alert,) = await discord_standin.wait_for_request("POST")
    assert alert.body["embeds"][0]["fields"][0] == {"name": "Error Code", "value": "E4002"}
    assert server.find_logs(code="E4004") == []


async def test_console_script_starts_the_server(
    bridge: Bridge, app_standin: AppStandIn, discord_standin: DiscordStandIn
) -> None:
    """SPEC §1: the installed `spacesync` command runs the same server (health, Socket.IO,
    graceful stop)."""
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} is not installed"
    env = wired_env(app_standin, discord_standin, NODE_ENV="development")
    with own_server(ScriptServer(env)) as server:
        assert health_status(server.port) == 200
        client = await bridge.connected(server.url, transports=["polling"])
        joined = await client.join(space_id(), "Scripted", session_token=dev_token())
        assert joined["yourPlayerId"]
        assert server.find_logs(code="E6001")
        await client.disconnect()
        assert await server.astop() == 0


# -- shutdown ------------------------------------------------------------------------------------


def reconnecting_client(bridge: Bridge, url: str, transport: str) -> JsClient:
    """A client that, like a browser, reconnects by itself when the connection drops."""
    return bridge.client(
        url,
        transports=[transport],
        reconnection=True,
        reconnectionDelay=100,
        reconnectionDelayMax=300,
        randomizationFactor=0,
    )


async def wait_reconnected(client: JsClient, old_sid: str, timeout: float = 8.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await client.state()
        if state["connected"] and state["sid"] and state["sid"] != old_sid:
            return str(state["sid"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{client.id} did not reconnect within {timeout}s")


async def wait_exit(server: ServerProcess, timeout: float) -> tuple[int | None, float]:
    """The exit code (``None`` if still running after ``timeout``) and the time it took."""
    assert server.proc is not None
    started = time.monotonic()
    try:
        code = await asyncio.to_thread(server.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return code, time.monotonic() - started


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_graceful_shutdown_and_reconnect(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
    sig: signal.Signals,
    transport: str,
) -> None:
    """SPEC §12: on SIGTERM or SIGINT the node tells its joined players (a `chat:system`
    notice), closes their connections so that the official client reconnects by itself (not an
    "io server disconnect", after which it would not), logs the EXITs still owed, and exits 0
    within 10 s logging E6002; the clients then reconnect to a new node on the same port."""
    server = start_server(NODE_ENV="development")
    space = space_id()
    guest_token = unique("guest-token")
    app_standin.accept(guest_token, unique("guest"), "Guest")
    clients: list[JsClient] = []
    for nickname, token in (("Dev", dev_token()), ("Guest", guest_token)):
        client = reconnecting_client(bridge, server.url, transport)
        await client.connect()
        await client.join(space, nickname, session_token=token)
        clients.append(client)
    for client in clients:
        await client.wait_for("chat:system", lambda m: m["content"] == "Guest joined")
        client.consume()
    old_sids = [str(c.sid) for c in clients]

    signalled = time.monotonic()
    server.send_signal(sig)
    for client in clients:
        notice = await client.wait_for("chat:system", timeout=5)
        assert notice["senderId"] == "system" and notice["content"], notice
        reason = await client.wait_disconnect(timeout=5)
        assert reason != "io server disconnect", reason
        assert reason in {"transport close", "transport error", "ping timeout"}, reason
    code, _ = await wait_exit(server, max(0.1, 10.0 - (time.monotonic() - signalled)))
    took = time.monotonic() - signalled
    assert code == 0, (code, took, server.output()[-3000:])
    assert took <= 10.0

    assert server.find_logs(code="E6002")
    assert server.find_logs(level="error") == []
    exits = app_standin.event_calls(space)
    assert len(exits) == 1, [e.body for e in exits]
    assert exits[0].body["sessionToken"] == guest_token
    assert exits[0].body["eventType"] == "EXIT"
    assert exits[0].body["payload"]["reason"].startswith("disconnect:")

    successor = ServerProcess(
        wired_env(app_standin, discord_standin, NODE_ENV="development"), port=server.port
    )
    with own_server(successor):
        for client, old_sid in zip(clients, old_sids, strict=True):
            await wait_reconnected(client, old_sid)
        rejoined = await clients[0].join(space, "Back", session_token=dev_token())
        assert [p["nickname"] for p in rejoined["players"]] == ["Back"]
        for client in clients:
            await client.disconnect()
        assert await successor.astop() == 0


async def test_shutdown_in_time_while_the_app_is_down(
    start_server: ServerFactory, bridge: Bridge, app_standin: AppStandIn
) -> None:
    """SPEC §12: the node exits 0 within 10 s even when the EXITs it owes cannot be delivered
    because the app is down."""
    server = start_server(NODE_ENV="development")
    token = unique("guest-token")
    app_standin.accept(token, unique("guest"), "Guest")
    client = await bridge.connected(server.url)
    await client.join(space_id(), "Guest", session_token=token)
    app_standin.fail_all()

    server.send_signal(signal.SIGTERM)
    code, took = await wait_exit(server, 10.0)
    assert code == 0, (code, took, server.output()[-3000:])
    assert server.find_logs(code="E6002")


async def test_shutdown_with_nobody_connected_is_quick(start_server: ServerFactory) -> None:
    """SPEC §12: an idle node exits 0 promptly on SIGTERM, logging E6002, and the port is
    free again."""
    server = start_server(NODE_ENV=None)
    server.send_signal(signal.SIGTERM)
    code, took = await wait_exit(server, 10.0)
    assert code == 0
    assert took <= 10.0, took
    assert server.find_logs(code="E6002")
    assert health_status(server.port) is None

"""Structured logs and Discord alerts (SPEC §11).

Alert rules are per process (the same code alerts at most once a minute), so every alert test
starts its own server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge
from support.server import LogEntry, ServerProcess
from support.standins import AppStandIn, DiscordStandIn

ServerFactory = Callable[..., ServerProcess]

LOG_KEYS = {"timestamp", "level", "code", "message", "context"}
LEVELS = {"error", "warn", "info", "debug"}
STREAM_OF = {"error": "stderr", "warn": "stderr", "info": "stdout", "debug": "stdout"}
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
TITLE = "🚨 Socket Server Error"
COLOR = 15158332


def parse_iso(text: Any) -> datetime:
    assert isinstance(text, str) and ISO.fullmatch(text), text
    return datetime.fromisoformat(text)


def assert_log_line(entry: LogEntry) -> None:
    """SPEC §11: one JSON object with exactly timestamp, level, code, message, context; info and
    debug on stdout, warn and error on stderr."""
    stream = entry.get("stream")
    body = {k: v for k, v in entry.items() if k != "stream"}
    assert set(body) == LOG_KEYS, entry
    parse_iso(body["timestamp"])
    assert body["level"] in LEVELS, entry
    assert isinstance(body["code"], str) and re.fullmatch(r"[EI]\d{4}", body["code"]), entry
    assert isinstance(body["message"], str) and body["message"], entry
    assert isinstance(body["context"], dict), entry
    assert stream == STREAM_OF[body["level"]], entry


async def dev_activity(bridge: Bridge, server: ServerProcess, app: AppStandIn) -> None:
    """Connect on both transports, join, chat, send bad input and unknown events, make the app
    fail one verification, then leave: info, debug, warn and error events."""
    space = space_id()
    ws = await bridge.connected(server.url, transports=["websocket"])
    polling = await bridge.connected(server.url, transports=["polling"])
    await ws.emit("player:move", {"x": 1, "y": 1, "direction": "up", "isMoving": True})
    await ws.emit("no:such:event", {"x": 1})
    await ws.join(space, "Alice", session_token=dev_token(), playerId=unique("alice"))
    await ws.emit("chat:message", {"content": ""})
    await ws.wait_for("chat:error")
    await ws.emit("chat:message", {"content": "hello"})
    await ws.wait_for("chat:message")
    app.fail_all()
    await polling.join(space, "Bob", session_token=unique("guest-token"), playerId=unique("bob"))
    app.reset()  # the app is back before Bob's EXIT is logged
    await ws.disconnect()
    await polling.disconnect()
    await server.wait_for_log(
        code="E2002", predicate=lambda e: e["context"].get("socketId") == ws.sid
    )


async def test_every_line_is_structured_and_routed_by_level(
    start_server: ServerFactory, bridge: Bridge, app_standin: AppStandIn
) -> None:
    """SPEC §11: every output line of a session with connections, joins, chat, bad input, an
    unreachable app and a shutdown is one JSON object `{timestamp, level, code, message,
    context}`, with a valid level and an E/I code; info and debug go to stdout, warn and error
    to stderr; nothing else is printed."""
    server = start_server(NODE_ENV="development", LOG_LEVEL="debug")
    await dev_activity(bridge, server, app_standin)
    await server.wait_for_log(code="E4002", level="error")
    assert await server.astop() == 0

    server.assert_all_lines_json()
    assert server.logs, "the server wrote nothing"
    for entry in server.logs:
        assert_log_line(entry)
        assert entry["context"]["node"] == "test-node", entry  # HOSTNAME names every line
    assert {e["level"] for e in server.logs} == LEVELS
    assert not [line for _, line in server.raw_lines if "Traceback" in line]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_and_disconnect_are_logged_with_socket_id(
    bridge: Bridge, dev_server: ServerProcess, transport: str
) -> None:
    """SPEC §11: a connection logs E2001 and a disconnection E2002, each with
    `context.socketId` the socket's id."""
    mark = dev_server.mark()
    client = await bridge.connected(dev_server.url, transports=[transport])
    connected = await dev_server.wait_for_log(
        code="E2001", predicate=lambda e: e["context"].get("socketId") == client.sid, since=mark
    )
    assert connected["level"] == "info"
    assert dev_server.find_logs(code="E2002", since=mark) == []

    await client.disconnect()
    disconnected = await dev_server.wait_for_log(
        code="E2002", predicate=lambda e: e["context"].get("socketId") == client.sid, since=mark
    )
    assert disconnected["level"] == "info"
    assert disconnected["stream"] == "stdout"


@pytest.mark.parametrize(
    ("node_env", "log_level", "debug_expected"),
    [
        ("development", "debug", True),
        (None, "debug", False),
        ("production", "debug", False),
        ("development", None, False),
    ],
    ids=["development-debug", "unset-debug", "production-debug", "development-default"],
)
async def test_debug_lines_only_in_development(
    start_server: ServerFactory,
    bridge: Bridge,
    node_env: str | None,
    log_level: str | None,
    debug_expected: bool,
) -> None:
    """SPEC §1.1, §11: `LOG_LEVEL=debug` shows debug lines in development only; in production
    it behaves as `info` (info lines still shown); the default level is `info`."""
    server = start_server(NODE_ENV=node_env, LOG_LEVEL=log_level)
    client = await bridge.connected(server.url)
    await client.emit_many(
        [
            ("player:move", [{"x": 1, "y": 2, "direction": "up", "isMoving": True}]),
            ("chat:message", [{"content": "before joining"}]),
            ("no:such:event", [{}]),
        ]
    )
    await client.disconnect()
    await server.wait_for_log(code="E2002")
    assert await server.astop() == 0

    debug = [e for e in server.logs if e.get("level") == "debug"]
    if debug_expected:
        assert debug, "no debug line with LOG_LEVEL=debug in development"
        assert all(e["stream"] == "stdout" for e in debug)
    else:
        assert debug == []
    assert server.find_logs(code="E2001", level="info")
    assert server.find_logs(code="E6001", level="info")


async def test_log_level_warn_hides_info(start_server: ServerFactory, bridge: Bridge) -> None:
    """SPEC §1.1: `LOG_LEVEL` is the minimum level: with `warn`, info lines are not written
    while warnings are."""
    server = start_server(NODE_ENV=None, LOG_LEVEL="warn")
    client = await bridge.connected(server.url)
    await client.emit("join:space", {"spaceId": space_id(), "nickname": "NoToken"})
    assert (await client.wait_for("error"))["code"] == "SESSION_REQUIRED"
    await server.wait_for_log(code="E1001", level="warn")
    assert await server.astop() == 0
    assert {e["level"] for e in server.logs} <= {"warn", "error"}, server.logs


# -- Discord -------------------------------------------------------------------------------------


async def provoke_unreachable_app(
    bridge: Bridge, server: ServerProcess, app: AppStandIn
) -> LogEntry:
    """Make the app answer 500 to a production verification: error E4002 (SPEC §2.1)."""
    app.fail_all()
    mark = server.mark()
    client = await bridge.connected(server.url)
    await client.emit(
        "join:space",
        {"spaceId": space_id(), "nickname": "Guest", "sessionToken": unique("guest-token")},
    )
    assert (await client.wait_for("error"))["code"] == "INVALID_SESSION"
    return await server.wait_for_log(code="E4002", level="error", since=mark)


def assert_alert_for(body: Any, entry: LogEntry, hostname: str) -> None:
    """SPEC §11: the webhook message describing one error-level log entry."""
    assert set(body) == {"embeds"}, body
    (embed,) = body["embeds"]
    assert embed["title"] == TITLE
    assert embed["color"] == COLOR
    assert embed["description"] == entry["message"]
    assert embed["footer"] == {"text": f"{hostname} | spacesync"}
    fields = embed["fields"]
    assert fields[0] == {"name": "Error Code", "value": entry["code"]}
    assert fields[1]["name"] == "Timestamp"
    sent_at = parse_iso(fields[1]["value"])
    assert abs((sent_at - parse_iso(entry["timestamp"])).total_seconds()) < 1, fields[1]
    context = entry["context"]
    extra = {f["name"]: f["value"] for f in fields[2:]}
    assert len(extra) == len(fields) - 2, fields  # one field per key
    assert set(extra) <= set(context), (extra, context)
    expected = {k for k, v in context.items() if v is not None and k != "node"}
    assert expected <= set(extra), (extra, context)
    for key, value in extra.items():
        assert isinstance(value, str) and value, (key, value)
        if isinstance(context[key], str):
            assert value == context[key], (key, value, context[key])


async def test_error_alert_message(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11, §2.1: an error-level event (the app answering 500 at verification, E4002)
    sends exactly one webhook message: the embed titled "🚨 Socket Server Error", colour
    15158332, the log message as description, fields Error Code, Timestamp and one per context
    key, and the footer "<HOSTNAME> | spacesync"."""
    hostname = unique("alert-node")
    server = start_server(NODE_ENV=None, HOSTNAME=hostname)
    entry = await provoke_unreachable_app(bridge, server, app_standin)

    (alert,) = await discord_standin.wait_for_request("POST")
    assert alert.path == DiscordStandIn.PATH
    assert alert.headers["content-type"].startswith("application/json")
    assert_alert_for(alert.body, entry, hostname)
    await asyncio.sleep(0.5)
    assert len(discord_standin.find("POST")) == 1


async def test_same_code_alerts_once_a_minute(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11: the same code alerts at most once a minute: three E4002 errors in a row give
    one webhook message."""
    server = start_server(NODE_ENV=None)
    await provoke_unreachable_app(bridge, server, app_standin)
    await discord_standin.wait_for_request("POST")
    for _ in range(2):
        await provoke_unreachable_app(bridge, server, app_standin)
    assert len(server.find_logs(code="E4002", level="error")) == 3
    await asyncio.sleep(0.5)
    assert len(discord_standin.find("POST")) == 1


async def test_authentication_failures_alert_only_as_a_burst(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11, §2.1: invalid tokens in production are warnings (E1002); nine within a minute
    send no alert, the tenth sends exactly one, and further failures of the same burst none."""
    server = start_server(NODE_ENV=None)

    async def invalid_join() -> None:
        client = await bridge.connected(server.url)
        await client.emit(
            "join:space",
            {"spaceId": space_id(), "nickname": "Intruder", "sessionToken": unique("bad-token")},
        )
        assert await client.wait_for("error") == {
            "message": "Invalid session",
            "code": "INVALID_SESSION",
        }

    await asyncio.gather(*(invalid_join() for _ in range(9)))
    for _ in range(100):
        if len(server.find_logs(code="E1002")) >= 9:
            break
        await asyncio.sleep(0.02)
    failures = server.find_logs(code="E1002")
    assert len(failures) == 9
    assert {e["level"] for e in failures} == {"warn"}
    await asyncio.sleep(0.5)
    assert discord_standin.find("POST") == []

    await invalid_join()
    (alert,) = await discord_standin.wait_for_request("POST")
    embed = alert.body["embeds"][0]
    assert embed["title"] == TITLE
    assert embed["fields"][0]["name"] == "Error Code"
    assert re.fullmatch(r"E1\d{3}", embed["fields"][0]["value"]), embed["fields"][0]

    await asyncio.gather(*(invalid_join() for _ in range(3)))
    await asyncio.sleep(0.5)
    assert len(server.find_logs(code="E1002")) == 13
    assert len(discord_standin.find("POST")) == 1
    assert server.find_logs(level="error") == []


async def test_discord_rate_limit_is_honoured(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11: when Discord answers 429 with `retry_after: 1`, the alert is sent again after
    waiting about a second, and delivered; no delivery failure is logged."""
    server = start_server(NODE_ENV=None)
    discord_standin.rate_limit(1.0)
    entry = await provoke_unreachable_app(bridge, server, app_standin)

    first, second = await discord_standin.wait_for_request("POST", count=2, timeout=6)
    waited = second.time - first.time
    assert 0.9 <= waited <= 3.0, waited
    assert second.body == first.body
    assert_alert_for(second.body, entry, "test-node")
    await asyncio.sleep(0.3)
    assert len(discord_standin.find("POST")) == 2
    assert server.find_logs(code="E4004") == []


async def test_failed_alert_is_logged_without_alert_loop(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11: when Discord fails (500), the failure is logged as E4004 and never alerts
    itself: no further webhook call follows."""
    server = start_server(NODE_ENV=None)
    discord_standin.fail(3)
    await provoke_unreachable_app(bridge, server, app_standin)

    await discord_standin.wait_for_request("POST")
    failure = await server.wait_for_log(code="E4004")
    assert failure["level"] in {"error", "warn"}
    assert failure["stream"] == "stderr"
    await asyncio.sleep(1.5)
    assert len(discord_standin.find("POST")) == 1
    assert len(server.find_logs(code="E4004")) == 1


async def test_warnings_never_alert(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §11: warn-level events do not alert, however many: fifteen bad payloads (E3001) and
    duplicate sessions (E2003) send nothing; an error on the same server still alerts."""
    server = start_server(NODE_ENV="development")
    space = space_id()
    player = unique("player")
    client = await bridge.connected(server.url)
    await client.join(space, "Warned", session_token=dev_token(), playerId=player)
    await client.emit_many([("player:move", [{"x": "bad"}]) for _ in range(15)])
    for _ in range(15):
        await client.wait_for("error")
    for _ in range(2):
        replacement = await bridge.connected(server.url)
        await replacement.join(space, "Warned", session_token=dev_token(), playerId=player)
    await server.wait_for_log(code="E2003", level="warn")
    assert len(server.find_logs(code="E3001", level="warn")) >= 15
    await asyncio.sleep(0.5)
    assert discord_standin.find("POST") == []

    app_standin.fail_all()
    guest = await bridge.connected(server.url)
    await guest.join(space, "Guest", session_token=unique("guest-token"), playerId=unique("g"))
    await server.wait_for_log(code="E4002", level="error")
    (alert,) = await discord_standin.wait_for_request("POST")
    assert alert.body["embeds"][0]["fields"][0] == {"name": "Error Code", "value": "E4002"}


async def test_no_webhook_without_discord_url(
    start_server: ServerFactory,
    bridge: Bridge,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> None:
    """SPEC §1.1, §11: without `DISCORD_WEBHOOK_URL` alerts are off: an error is logged, no
    webhook is called and no delivery failure is logged."""
    server = start_server(NODE_ENV=None, DISCORD_WEBHOOK_URL=None)
    started = time.monotonic()
    await provoke_unreachable_app(bridge, server, app_standin)
    await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    assert discord_standin.find() == []
    assert server.find_logs(code="E4004") == []

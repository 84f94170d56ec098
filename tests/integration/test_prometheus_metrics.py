"""`GET /metrics` for Prometheus: the exposition formats, what they count, and that they agree
with the JSON document (version 2.0.0), which stays the default answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from support.ids import dev_token, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT_ACCEPT = "text/plain;version=0.0.4"

ServerFactory = Callable[..., ServerProcess]
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def samples_of(families: Any) -> Samples:
    found: Samples = {}
    for family in families:
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


async def scrape(
    server: ServerProcess, accept: str | None, token: str | None = None
) -> httpx.Response:
    headers = {}
    if accept is not None:
        headers["Accept"] = accept
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.url}/metrics", headers=headers)


async def prometheus(server: ServerProcess, token: str | None = None) -> tuple[Samples, str]:
    """A scrape as Prometheus makes it (OpenMetrics), parsed by the OpenMetrics parser."""
    response = await scrape(server, PROMETHEUS_ACCEPT, token)
    assert response.status_code == 200, response.text[:200]
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    return samples_of(parse_openmetrics(response.text)), response.text


async def text_format(server: ServerProcess) -> tuple[Samples, str]:
    response = await scrape(server, TEXT_ACCEPT)
    assert response.status_code == 200, response.text[:200]
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples_of(parse_text(response.text)), response.text


async def player(
    bridge: Bridge, server: ServerProcess, space: str, nickname: str, player_id: str
) -> JsClient:
    client = await bridge.connected(server.url, transports=["websocket"])
    await client.join(space, nickname, session_token=dev_token(), playerId=player_id)
    await client.wait_for("proximity:status")
    return client


def move(x: int) -> dict[str, Any]:
    return {"x": x, "y": 200, "direction": "right", "isMoving": True}


async def test_prometheus_counts_players_events_and_ticks(
    start_server: ServerFactory, bridge: Bridge
) -> None:
    """A scrape with Prometheus's Accept header is OpenMetrics; it counts the joined players,
    the moves by event name and the position ticks, and grows as the players play."""
    server = start_server(NODE_ENV="development")
    before, _ = await prometheus(server)
    assert value(before, "spacesync_players") == 0
    assert value(before, "spacesync_connections") == 0
    moves_before = value(before, "spacesync_events_total", event="player:move")
    assert value(before, "spacesync_tick_duration_seconds_count") == 0

    space = unique("space")
    alice = await player(bridge, server, space, "Alice", unique("player"))
    bob = await player(bridge, server, space, "Bob", unique("player"))
    for x in range(100, 120):
        await alice.emit("player:move", move(x))
        await asyncio.sleep(0.02)
    await bob.wait_for("player:moved", lambda p: p["x"] == 119)
    await alice.emit("chat:message", {"content": "hello"})
    await bob.wait_for("chat:message")
    await alice.emit("no:such:event", {})

    after, _ = await prometheus(server)
    assert value(after, "spacesync_players") == 2
    assert value(after, "spacesync_connections") == 2
    assert value(after, "spacesync_spaces") == 1
    assert value(after, "spacesync_events_total", event="player:move") == moves_before + 20
    assert value(after, "spacesync_events_total", event="join:space") == 2
    assert value(after, "spacesync_events_total", event="chat:message") == 1
    assert value(after, "spacesync_events_total", event="other") >= 1
    ticks = value(after, "spacesync_tick_duration_seconds_count")
    assert ticks > 0
    # Each tick reports how long its oldest move waited: at most a tick (50 ms) and the time
    # to run it, with a wide margin for a busy machine.
    waits = value(after, "spacesync_move_send_delay_seconds_count")
    assert waits == ticks
    assert value(after, "spacesync_move_send_delay_seconds_sum") / waits < 0.5
    # Development players are not verified with the app; the chat line was saved (SQLite).
    assert value(after, "spacesync_app_api_verify_duration_seconds_count") == 0
    assert value(after, "spacesync_database_duration_seconds_count", database="sqlite") > 0
    assert value(after, "process_cpu_seconds_total") > 0
    assert value(after, "process_resident_memory_bytes") > 10 * 1024 * 1024

    await bob.disconnect()
    deadline = time.monotonic() + 10
    while True:
        later, _ = await prometheus(server)
        if value(later, "spacesync_players") == 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert value(later, "spacesync_players") == 1
    assert value(later, "spacesync_connections") == 1


async def test_json_document_and_exposition_agree(
    start_server: ServerFactory, bridge: Bridge
) -> None:
    """In one state, the JSON document's figures are the exposition's: both read one registry.
    Refused input (a move flood) and bad input show up in both."""
    server = start_server(NODE_ENV="development")
    space = unique("space")
    alice = await player(bridge, server, space, "Alice", unique("player"))
    await player(bridge, server, space, "Bob", unique("player"))
    await player(bridge, server, unique("space"), "Carol", unique("player"))
    await alice.emit_many([("player:move", [move(300 + i)]) for i in range(150)])
    await alice.emit("chat:message", {"content": ""})  # refused: empty
    await alice.emit("party:create", {"name": "Crew"})
    await alice.wait_for("chat:error")
    await asyncio.sleep(1.5)  # the newest refused move is delivered when its window ends

    body = (await scrape(server, None)).json()
    prom, _ = await text_format(server)
    again = (await scrape(server, "application/json")).json()
    assert body["events"] == again["events"], "the state moved on between the scrapes"

    assert body["connections"]["total"] == value(prom, "spacesync_connections") == 3
    assert body["connections"]["roomCount"] == value(prom, "spacesync_spaces") == 2
    assert sum(r["connections"] for r in body["connections"]["rooms"]) == value(
        prom, "spacesync_players"
    )
    assert body["parties"]["count"] == value(prom, "spacesync_parties") == 1
    assert body["events"]["handled"] == value(prom, "spacesync_events_handled_total")
    assert body["events"]["badInput"] == value(prom, "spacesync_bad_input_total") >= 1
    assert body["events"]["movesRelayed"] == value(prom, "spacesync_moves_relayed_total") > 0
    refused = {
        dict(labels)["reason"]: count
        for labels, count in prom.get("spacesync_input_refused_total", {}).items()
    }
    assert body["abuse"] == refused
    assert refused.get("rateLimited.move", 0) > 0, refused  # the flood went over the move limit
    slow = body["slowClients"]
    assert slow["catchingUp"] == value(prom, "spacesync_lagging_clients")
    assert slow["positionsFolded"] == value(prom, "spacesync_positions_folded_total")
    assert slow["disconnected"] == value(prom, "spacesync_slow_client_disconnects_total")
    exits = body["exits"]
    assert exits["owed"] == value(prom, "spacesync_exits_owed")
    assert exits["backlog"] == value(prom, "spacesync_exits_backlog")
    assert exits["delivered"] == value(prom, "spacesync_exits_delivered_total")
    assert body["appApi"]["circuitOpened"] == value(prom, "spacesync_app_api_circuit_opened_total")
    assert body["appApi"]["circuitOpen"] is (value(prom, "spacesync_app_api_circuit_open") == 1)
    assert body["chatLog"]["written"] == value(prom, "spacesync_chat_log_written_total")
    assert body["database"]["failures"] == value(prom, "spacesync_database_lookup_failures_total")
    assert body["database"]["up"] is (value(prom, "spacesync_database_up") == 1)
    assert body["alerts"]["sent"] == value(prom, "spacesync_alerts_sent_total")
    disk = body["storage"]
    assert disk["totalGB"] == round(value(prom, "spacesync_disk_bytes", state="total") / 1024**3, 2)
    started = value(prom, "spacesync_start_time_seconds")
    assert abs(body["uptime"]["seconds"] - (time.time() - started)) < 5
    # Figures of the process move between two requests, but not by much.
    rss = value(prom, "process_resident_memory_bytes")
    assert abs(body["memory"]["rss"] - rss) < 0.2 * rss
    assert abs(body["process"]["openFiles"] - value(prom, "process_open_fds")) <= 3


async def test_no_space_or_player_id_becomes_a_label(
    start_server: ServerFactory, bridge: Bridge
) -> None:
    """Labels come from fixed sets: spaces, players, nicknames and unknown event names that
    clients choose never appear in the exposition (the series count stays bounded)."""
    server = start_server(NODE_ENV="development")
    spaces = [unique("spacezqx"), unique("spacezqy")]
    ids = [unique("playerzqx"), unique("playerzqy")]
    clients = [
        await player(bridge, server, spaces[i], f"Zq{i}nick", ids[i]) for i in range(len(ids))
    ]
    for client in clients:
        await client.emit("player:move", move(150))
        await client.emit("chat:message", {"content": "hi"})
        await client.emit("custom:eventzqz", {"spaceId": spaces[0]})
    await asyncio.sleep(0.3)
    _, openmetrics = await prometheus(server)
    _, text = await text_format(server)
    json_text = (await scrape(server, None)).text
    assert spaces[0] in json_text  # the JSON document lists the spaces, as SPEC §10 says
    for body in (openmetrics, text):
        for chosen in [*spaces, *ids, "Zq0nick", "custom:eventzqz", "zq"]:
            assert chosen not in body, chosen
    samples = samples_of(parse_text(text))
    assert samples["spacesync_events_total"][(("event", "other"),)] == 2


async def test_json_stays_the_default_and_accept_chooses_the_format(
    dev_server: ServerProcess,
) -> None:
    for accept in (None, "application/json", "*/*", "text/html,*/*;q=0.8"):
        response = await scrape(dev_server, accept)
        assert response.headers["content-type"].startswith("application/json"), accept
        assert response.json()["version"] == "2.0.0"
    response = await scrape(dev_server, TEXT_ACCEPT)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE spacesync_connections gauge" in response.text
    assert "# EOF" not in response.text
    response = await scrape(dev_server, "application/openmetrics-text")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    response = await scrape(dev_server, "application/json, text/plain;version=0.0.4;q=0.5")
    assert response.headers["content-type"].startswith("application/json")


async def test_internal_token_guards_the_exposition_too(start_server: ServerFactory) -> None:
    """With INTERNAL_API_TOKEN set, Prometheus must send the bearer token like any client."""
    token = unique("metrics-token")
    server = start_server(NODE_ENV="development", INTERNAL_API_TOKEN=token)
    for accept in (PROMETHEUS_ACCEPT, TEXT_ACCEPT, None):
        response = await scrape(server, accept)
        assert response.status_code == 401, accept
        assert "spacesync_" not in response.text
        wrong = await scrape(server, accept, token="not-" + token)
        assert wrong.status_code == 401, accept
    samples, _ = await prometheus(server, token=token)
    assert value(samples, "spacesync_connections") == 0
    # The refusals above are counted as refused input, by reason.
    assert value(samples, "spacesync_input_refused_total", reason="unauthorizedHttp") == 6
    response = await scrape(server, TEXT_ACCEPT, token=token)
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") is None

"""Leak indicators in `GET /metrics` (SPEC §10, extended): asyncio tasks, open files, threads and
event-loop lag. Clients that come and go (both transports, clean and abrupt) leave no task and
no file descriptor behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from support.ids import space_id
from support.jsclient import Bridge
from support.players import dev_player
from support.server import ServerProcess


async def process_figures(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{server.url}/metrics")).json()
    return {**body["process"], "connections": body["connections"]["total"]}


async def test_runtime_figures_are_reported(dev_server: ServerProcess) -> None:
    figures = await process_figures(dev_server)
    assert isinstance(figures["tasks"], int) and figures["tasks"] > 0
    assert isinstance(figures["openFiles"], int) and figures["openFiles"] > 0
    assert isinstance(figures["threads"], int) and figures["threads"] >= 1
    lag = figures["eventLoopLag"]
    assert set(lag) == {"latestMs", "maxLastMinuteMs"}
    assert 0 <= lag["latestMs"] <= lag["maxLastMinuteMs"] or lag["maxLastMinuteMs"] == 0


async def test_clients_that_come_and_go_leave_no_tasks_or_files(
    bridge: Bridge, start_server: Any
) -> None:
    server = start_server(NODE_ENV="development")
    await asyncio.sleep(1.0)
    baseline = await process_figures(server)
    space = space_id()
    for round_ in range(3):
        clients = []
        for i in range(10):
            transport = "polling" if i % 3 == 0 else "websocket"
            clients.append(
                await dev_player(bridge, server, space, f"P{round_}-{i}", transport=transport)
            )
        await clients[0].emit("chat:message", {"content": "hello"})
        await clients[1].emit("party:create", {"name": "Crew"})
        for i, client in enumerate(clients):
            if i % 2:
                await client.emit("leave:space")
            await client.disconnect()
    deadline = time.monotonic() + 10
    while True:
        now = await process_figures(server)
        settled = (
            now["connections"] == 0
            and now["tasks"] <= baseline["tasks"] + 2
            and now["openFiles"] <= baseline["openFiles"] + 2
        )
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert now["connections"] == 0, now
    assert now["tasks"] <= baseline["tasks"] + 2, (baseline, now)
    assert now["openFiles"] <= baseline["openFiles"] + 2, (baseline, now)

"""`GET /metrics` for Prometheus on cluster nodes: Redis timings, the cluster's figures, and the
JSON document's cluster section read from the same registry."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.cluster import Cluster, dev_join
from support.ids import space_id
from support.jsclient import Bridge
from support.server import ServerProcess

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(node: ServerProcess) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(
            f"{node.url}/metrics", headers={"Accept": "text/plain;version=0.0.4"}
        )
    assert response.status_code == 200
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


async def document(node: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        body: dict[str, Any] = (await http.get(f"{node.url}/metrics")).json()
    return body


async def test_cluster_nodes_time_redis_and_agree_with_the_json(
    bridge: Bridge, cluster: Cluster
) -> None:
    a, b = await cluster(2)
    space = space_id()
    alice = await dev_join(bridge, a, space, "Alice")
    bob = await dev_join(bridge, b, space, "Bob")
    await alice.emit("player:move", {"x": 140, "y": 200, "direction": "left", "isMoving": True})
    await bob.wait_for("player:moved", lambda p: p["x"] == 140)
    await asyncio.sleep(0.3)

    prom = await scrape(a)
    redis = prom["spacesync_redis_duration_seconds_count"]
    assert redis[(("kind", "command"),)] > 0  # joins run scripts
    assert redis[(("kind", "pipeline"),)] > 0  # positions are written in pipelines
    assert prom["spacesync_redis_up"][()] == 1
    assert prom["spacesync_cluster_nodes"][()] == 2
    assert prom["spacesync_cluster_connections"][()] == 2
    assert prom["spacesync_cluster_spaces"][()] == 1
    assert prom["spacesync_players"][()] == 1  # this node's own
    published = prom["spacesync_bus_messages_total"][(("outcome", "published"),)]
    assert published > 0  # the tick went to the other node

    body = await document(a)
    figures = body["cluster"]
    assert figures["redis"] == "ok"
    assert figures["nodes"] == 2 and figures["connections"] == 2 and figures["roomCount"] == 1
    assert figures["bus"]["published"] >= published
    again = await scrape(a)
    assert (
        figures["bus"]["published"]
        <= again["spacesync_bus_messages_total"][(("outcome", "published"),)]
    )
    assert body["connections"]["total"] == 1

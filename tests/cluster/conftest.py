"""Fixtures for the cluster-mode tests (SPEC §9).

- ``cluster``: a ``support.cluster.Cluster`` for this test, wired to the app and Discord
  stand-ins and to Redis database 9 (flushed before the test). ``await cluster(2)`` starts
  node-a and node-b (development mode) and returns them once ``/health/ready`` answers 200.
  Every node is stopped at teardown and each output line must have been one JSON object.
- ``private_redis``: a ``redis-server`` this test owns (it may kill and restart it). Request it
  BEFORE ``cluster`` so that the nodes are stopped before it goes away.
- ``redis_link``: a cuttable TCP link to ``private_redis`` (``.url()``, ``.cut()``, ``.heal()``)
  for cutting one node off from Redis; request it before ``cluster`` too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.cluster import (
    CLUSTER_REDIS_URL,
    Cluster,
    CuttableProxy,
    PrivateRedis,
    flush_cluster_db,
)
from support.standins import AppStandIn, DiscordStandIn


@pytest.fixture
def cluster(app_standin: AppStandIn, discord_standin: DiscordStandIn) -> Iterator[Cluster]:
    flush_cluster_db(CLUSTER_REDIS_URL)
    nodes = Cluster(app_standin, discord_standin, CLUSTER_REDIS_URL)
    yield nodes
    nodes.stop_all()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        server.close()
        pytest.skip(f"cannot run a private redis-server: {exc}")
    yield server
    server.close()


@pytest.fixture
def redis_link(private_redis: PrivateRedis) -> Iterator[CuttableProxy]:
    link = CuttableProxy(private_redis.port)
    yield link
    link.close()

"""The bus between nodes: one handler, registered once; a node alone publishes to nobody; a node
is wired through its constructors (the bus's handler is the only thing registered later)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis.asyncio as aioredis

from spacesync.app import OtherNodes, SpacesyncNode
from spacesync.bus import AlreadyRegistered, Bus, BusHandler, LocalBus
from spacesync.cluster import DOUBT_AFTER_SECONDS, RedisBus
from spacesync.config import load_settings
from spacesync.state.link import RedisLink
from spacesync.state.memory import MemoryStore
from spacesync.state.redis import RedisStore


class Recorder:
    """A :class:`BusHandler` that writes down what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def deliver_event(self, space_id: str, packet: bytes, players: list[str] | None) -> None:
        self.calls.append(("event", (space_id, packet, players)))

    def deliver_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        self.calls.append(("moves", (space_id, bodies, ids)))

    def holds(self, space_id: str, player_id: str) -> bool:
        return False

    async def evict(self, space_id: str, player_id: str, sid: str) -> None:
        self.calls.append(("evict", (space_id, player_id, sid)))

    async def signal(self, space_id: str, body: dict[str, Any]) -> None:
        self.calls.append(("signal", (space_id, body)))


def test_a_local_bus_takes_one_handler() -> None:
    bus = LocalBus()
    first: BusHandler = Recorder()
    bus.register(first)
    assert bus.handler is first
    with pytest.raises(AlreadyRegistered):
        bus.register(Recorder())
    assert bus.handler is first


async def test_a_local_bus_publishes_to_nobody_and_is_always_connected() -> None:
    bus: Bus = LocalBus()
    handler = Recorder()
    bus.register(handler)
    bus.start()
    assert bus.connected
    await bus.watch("s1")
    bus.publish_event("s1", b'42["chat:message",{}]', None, about="p1")
    bus.publish_event("s1", b'42["whisper:receive",{}]', ["p2"])
    bus.publish_moves("s1", [b'{"id":"p1"}'], ["p1"])
    bus.publish_evict("node-b", "s1", "p1", "sid-1")
    bus.publish_signal("s1", {"t": "kick", "p": "p1"})
    await bus.drain(0.1)
    await bus.unwatch("s1")
    await bus.close()
    # Nothing comes back to this node's own handler (the broadcaster delivered it here).
    assert handler.calls == []
    assert (bus.published, bus.received, bus.dropped) == (0, 0, 0)


def test_a_redis_bus_takes_one_handler() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/15")
    bus = RedisBus(client, "node-a:1:x", RedisLink())
    bus.register(Recorder())
    with pytest.raises(AlreadyRegistered):
        bus.register(Recorder())


def _node(**env: str) -> SpacesyncNode:
    settings = load_settings({"NODE_ENV": "development", **env})
    return SpacesyncNode(dataclasses.replace(settings, exit_outbox_path=":memory:"))


def test_a_node_alone_has_a_local_bus_with_its_handler_registered() -> None:
    node = _node()
    assert isinstance(node.bus, LocalBus)
    assert isinstance(node.store, MemoryStore)
    assert node.broadcaster.bus is node.bus
    assert node.monitor is None
    assert node.exits.arbiter is None
    handler = node.bus.handler
    assert isinstance(handler, OtherNodes)
    assert handler.out is node.broadcaster and handler.server is node.server
    with pytest.raises(AlreadyRegistered):
        node.bus.register(Recorder())


def test_a_cluster_node_shares_one_link_and_one_bus_between_its_parts() -> None:
    node = _node(REDIS_URL="redis://127.0.0.1:6379/15")
    bus, store, monitor = node.bus, node.store, node.monitor
    assert isinstance(bus, RedisBus) and isinstance(store, RedisStore)
    assert monitor is not None
    assert node.broadcaster.bus is bus
    assert store.watcher is bus
    assert store.link is bus.link is monitor.link
    assert store.link.doubt_after == DOUBT_AFTER_SECONDS
    assert monitor.member is node.server and monitor.bus is bus and monitor.store is store
    assert node.exits.arbiter is store
    with pytest.raises(AlreadyRegistered):
        bus.register(Recorder())


def test_a_link_marked_down_counts_one_outage_until_it_recovers() -> None:
    link = RedisLink(doubt_after=5.0)
    assert link.in_doubt() and not link.healthy  # no heartbeat yet
    link.confirm()
    assert link.healthy and not link.in_doubt() and link.connected_since is not None
    link.mark_down(ConnectionError("gone"))
    link.mark_down(ConnectionError("still gone"))
    assert not link.healthy and link.connected_since is None and link.outages == 1
    link.confirm()
    assert link.recovered() and not link.recovered()
    link.mark_down(ConnectionError("again"))
    assert link.outages == 2

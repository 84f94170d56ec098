"""The Redis bus on real Redis: what one node publishes reaches the one handler registered on
each other node that serves the space, and never comes back to its sender."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from spacesync.cluster import RedisBus
from spacesync.state.keys import space_channel
from spacesync.state.link import RedisLink
from support.cluster import CLUSTER_REDIS_URL, flush_cluster_db

pytestmark = pytest.mark.cluster

TIMEOUT = 5.0


class Handler:
    def __init__(self, held: set[tuple[str, str]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.held = held or set()

    def deliver_event(self, space_id: str, packet: bytes, players: list[str] | None) -> None:
        self.calls.append(("event", (space_id, packet, players)))

    def deliver_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        self.calls.append(("moves", (space_id, bodies, ids)))

    def holds(self, space_id: str, player_id: str) -> bool:
        return (space_id, player_id) in self.held

    async def evict(self, space_id: str, player_id: str, sid: str) -> None:
        self.calls.append(("evict", (space_id, player_id, sid)))

    async def signal(self, space_id: str, body: dict[str, Any]) -> None:
        self.calls.append(("signal", (space_id, body)))


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT} s: {what}")
        await asyncio.sleep(0.02)


async def test_messages_reach_the_handler_of_the_other_node_only() -> None:
    flush_cluster_db()
    client = aioredis.Redis.from_url(CLUSTER_REDIS_URL)
    a = RedisBus(client, "node-a:1:aa", RedisLink())
    b = RedisBus(client, "node-b:2:bb", RedisLink())
    on_a, on_b = Handler(), Handler(held={("s1", "back-here")})
    a.register(on_a)
    b.register(on_b)
    try:
        for bus in (a, b):
            await bus.watch("s1")
            bus.start()
        await until(lambda: a.connected and b.connected, "both buses subscribed")
        subscribers = dict(await client.pubsub_numsub(space_channel("s1")))
        assert subscribers[space_channel("s1").encode()] == 2

        a.publish_event("s1", b'42["chat:message",{"content":"hi"}]', None)
        a.publish_event("s1", b'42["whisper:receive",{}]', ["p2"])
        a.publish_event("s1", b'42["player:left",{"id":"back-here"}]', None, about="back-here")
        a.publish_moves("s1", [b'{"id":"p1","x":1}', b'{"id":"p3","x":2}'], ["p1", "p3"])
        a.publish_evict("node-b:2:bb", "s1", "p1", "sid-old")
        a.publish_signal("s1", {"t": "mute", "p": "p1"})
        a.publish_event("elsewhere", b'42["chat:message",{}]', None)  # nobody watches it
        await a.drain(TIMEOUT)
        await until(lambda: len(on_b.calls) >= 5, "five messages on node B")
        await asyncio.sleep(0.3)  # anything more would be a mistake
        assert on_b.calls == [
            ("event", ("s1", b'42["chat:message",{"content":"hi"}]', None)),
            ("event", ("s1", b'42["whisper:receive",{}]', ["p2"])),
            ("moves", ("s1", [b'{"id":"p1","x":1}', b'{"id":"p3","x":2}'], ["p1", "p3"])),
            ("evict", ("s1", "p1", "sid-old")),
            ("signal", ("s1", {"t": "mute", "p": "p1"})),
        ]
        assert on_a.calls == []
        assert a.published == 7 and b.received == 6  # the departure about B's player dropped
    finally:
        await a.close()
        await b.close()
        await client.aclose()

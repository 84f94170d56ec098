"""The recording indicator and active spotlights survive a restart of Redis (SPEC §9).

Redis is not persisted: restarted, it is empty. The node holding the recorder (and the one
holding a spotlight holder) writes them back with its players, so the legal notice that someone
records is still given to new joiners on every node and a second recording is still refused.
A recording that cannot be written back because another one started meanwhile is told stopped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spacesync.domain.auth import sign_user_token
from spacesync.storage.sqlite import SqliteStorage
from support.cluster import Cluster, CuttableProxy, PrivateRedis, wait_ready, wait_status
from support.ids import space_id, unique
from support.jsclient import Bridge
from support.players import dev_player_ready

pytestmark = pytest.mark.cluster

SECRET = "restart-live-secret-" + "r" * 40
READY_AGAIN_WITHIN = 10.0
REBUILT_WITHIN = 3.0
"""A node writes its state back at its next heartbeat (every 2 s) after Redis is back."""


async def granted_user(path: str, space: str) -> str:
    """A user with a spotlight grant in ``space``, in the nodes' shared SQLite file."""
    uid = unique("suser")
    storage = await SqliteStorage.open(path)
    try:
        await storage.grant_spotlight(space, granted_by="admin", user_id=uid)
    finally:
        await storage.close()
    return uid


async def test_recording_and_spotlight_are_rebuilt_after_redis_restarts_empty(
    bridge: Bridge, private_redis: PrivateRedis, cluster: Cluster, tmp_path: Path
) -> None:
    """A staff member records on node A, a granted user has their spotlight on on node B;
    Redis is killed and started again empty. Joiners on either node then get
    ``recording:status`` and the spotlight, and a second ``recording:start`` names the
    recorder."""
    path = str(tmp_path / "shared.sqlite3")
    space = space_id()
    uid = await granted_user(path, space)
    env = {"STORAGE_PATH": path, "AUTH_SESSIONS": "signed", "AUTH_TOKEN_SECRET": SECRET}
    a, b = await cluster(2, REDIS_URL=private_redis.url(0), **env)
    recorder = await dev_player_ready(bridge, a, space, "Rec", role="STAFF")
    other_staff = await dev_player_ready(bridge, b, space, "Second", role="STAFF")
    host = await bridge.connected(b.url, transports=["websocket"])
    await host.join(space, "Host", session_token=sign_user_token(SECRET, uid, 2**31 - 1))
    assert (await host.wait_for("spotlight:status"))["hasGrant"] is True
    await recorder.emit("recording:start", {})
    started = await other_staff.wait_for("recording:started")
    await host.emit("spotlight:activate", {})
    await recorder.wait_for("spotlight:activated")

    await asyncio.to_thread(private_redis.kill)
    await asyncio.to_thread(private_redis.start)
    for node in (a, b):
        await wait_ready(node, READY_AGAIN_WITHIN)
    await asyncio.sleep(REBUILT_WITHIN)

    spotlight = {"participantId": host.player_id, "nickname": "Host"}
    for node, name in ((a, "LateA"), (b, "LateB")):
        late = await dev_player_ready(bridge, node, space, name)
        statuses = late.received("recording:status")
        assert statuses and statuses[0] == started, (name, statuses)
        assert statuses[0]["isRecording"] is True
        assert (await late.wait_for("spotlight:status"))["activeSpotlights"] == [spotlight]

    await other_staff.emit("recording:start", {})
    refused = await other_staff.wait_for("recording:error")
    assert refused == {"message": "Rec is already recording."}
    assert not other_staff.received("recording:started")[1:]
    assert not recorder.received("recording:stopped")


async def test_a_recording_started_meanwhile_wins_and_the_lost_one_is_told_stopped(
    bridge: Bridge,
    private_redis: PrivateRedis,
    redis_link: CuttableProxy,
    cluster: Cluster,
) -> None:
    """Node A (recording) is cut off from Redis while Redis restarts empty; a staff member on
    node B starts a recording meanwhile. When A is back, the newer recording stays: A's
    recorder and everyone else hear ``recording:stopped`` for A's, then ``recording:status``
    for the one that runs, which is what a new joiner gets."""
    a = await cluster.add("node-a", REDIS_URL=redis_link.url(0))
    b = await cluster.add("node-b", REDIS_URL=private_redis.url(0))
    space = space_id()
    first = await dev_player_ready(bridge, a, space, "First", role="STAFF")
    second = await dev_player_ready(bridge, b, space, "Second", role="STAFF")
    await first.emit("recording:start", {})
    mine = await second.wait_for("recording:started")

    redis_link.cut()
    await wait_status(a, "/health/ready", 503, timeout=6)
    await asyncio.to_thread(private_redis.kill)
    await asyncio.to_thread(private_redis.start)
    await wait_ready(b, READY_AGAIN_WITHIN)
    await asyncio.sleep(REBUILT_WITHIN)
    await second.emit("recording:start", {})
    newer = await second.wait_for("recording:started", timeout=5)
    assert newer["recorderId"] == second.player_id

    redis_link.heal()
    await wait_ready(a, READY_AGAIN_WITHIN)
    for client in (first, second):
        stopped = await client.wait_for(
            "recording:stopped", lambda p: p["recorderId"] == first.player_id, timeout=5
        )
        assert stopped == {**mine, "isRecording": False}
        status = await client.wait_for("recording:status", timeout=5)
        assert status == newer
    late = await dev_player_ready(bridge, a, space, "Late")
    assert late.received("recording:status") == [newer]

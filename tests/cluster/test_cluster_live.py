"""Reactions, recordings and spotlights across nodes: one reaction state per space, one
recording per space whichever node its starters are on, and a recording and a spotlight ended
by the others when their holder's node dies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from spacesync.domain.auth import sign_user_token
from spacesync.storage.sqlite import SqliteStorage
from support.cluster import DEAD_NODE_DEADLINE, Cluster, kill_node
from support.ids import space_id, unique
from support.jsclient import Bridge
from support.players import dev_player_ready

SECRET = "cluster-live-secret-" + "z" * 40


async def test_reaction_toggles_across_nodes(bridge: Bridge, cluster: Cluster) -> None:
    """A player on node A toggles a reaction twice: a player on node B hears add, then remove;
    B's own toggle of the same message is counted apart and reaches A."""
    a, b = await cluster(2)
    space = space_id()
    ann = await dev_player_ready(bridge, a, space, "Ann")
    bob = await dev_player_ready(bridge, b, space, "Bob")
    await ann.wait_for("player:joined")
    toggle = {"messageId": "msg-x1", "type": "thumbsup"}
    await ann.emit("reaction:toggle", toggle)
    assert (await bob.wait_for("reaction:updated"))["action"] == "add"
    await bob.emit("reaction:toggle", toggle)
    theirs = await ann.wait_for("reaction:updated")
    assert (theirs["userId"], theirs["action"]) == (bob.player_id, "add")
    await ann.emit("reaction:toggle", toggle)
    mine = await bob.wait_for("reaction:updated")
    assert (mine["userId"], mine["action"]) == (ann.player_id, "remove")


async def test_one_recording_per_space_across_nodes(bridge: Bridge, cluster: Cluster) -> None:
    """Two staff members on two nodes start recording at once: exactly one recording starts,
    the other is told who records; a joiner on either node gets ``recording:status``."""
    a, b = await cluster(2)
    space = space_id()
    one = await dev_player_ready(bridge, a, space, "One", role="STAFF")
    two = await dev_player_ready(bridge, b, space, "Two", role="STAFF")
    watcher = await dev_player_ready(bridge, a, space, "Watcher")
    await asyncio.gather(one.emit("recording:start", {}), two.emit("recording:start", {}))
    started = await watcher.wait_for("recording:started")
    await watcher.expect_nothing("recording:started", within=0.5)
    loser = two if started["recorderId"] == one.player_id else one
    refused = await loser.wait_for("recording:error")
    assert refused == {"message": f"{started['recorderNickname']} is already recording."}
    late = await dev_player_ready(bridge, b, space, "Late")
    assert await late.wait_for("recording:status") == started


async def test_recording_and_spotlight_end_when_the_holder_s_node_dies(
    bridge: Bridge, cluster: Cluster, tmp_path: Path
) -> None:
    """The recorder, whose spotlight is on, is on node B; B is killed (SIGKILL): node A's
    players hear ``recording:stopped`` and ``spotlight:deactivated`` before ``player:left``,
    within the dead-node time, and a newcomer sees neither."""
    path = str(tmp_path / "shared.sqlite3")
    space, uid = space_id(), unique("cuser")
    storage = await SqliteStorage.open(path)
    try:
        await storage.set_role(space, uid, "STAFF")
        await storage.grant_spotlight(space, granted_by="admin", user_id=uid)
    finally:
        await storage.close()
    env = {"STORAGE_PATH": path, "AUTH_SESSIONS": "signed", "AUTH_TOKEN_SECRET": SECRET}
    a, b = await cluster(2, **env)
    watcher = await dev_player_ready(bridge, a, space, "Watcher")
    host = await bridge.connected(b.url, transports=["websocket"])
    await host.join(space, "Host", session_token=sign_user_token(SECRET, uid, 2**31 - 1))
    assert (await host.wait_for("spotlight:status"))["hasGrant"] is True
    await host.emit("recording:start", {})
    await watcher.wait_for("recording:started")
    await host.emit("spotlight:activate", {})
    await watcher.wait_for("spotlight:activated")

    killed_at = await kill_node(b)
    stopped = await watcher.wait_for("recording:stopped", timeout=DEAD_NODE_DEADLINE + 5)
    took = time.monotonic() - killed_at
    assert stopped["recorderId"] == host.player_id and stopped["isRecording"] is False
    off = await watcher.wait_for("spotlight:deactivated", timeout=5)
    assert off == {"participantId": host.player_id, "nickname": "Host", "isActive": False}
    await watcher.wait_for("player:left", lambda p: p["id"] == host.player_id, timeout=5)
    names = watcher.event_names()
    assert names.index("recording:stopped") < names.index("player:left")
    assert names.index("spotlight:deactivated") < names.index("player:left")
    assert took < DEAD_NODE_DEADLINE, took

    newcomer = await dev_player_ready(bridge, a, space, "Newcomer")
    assert newcomer.received("recording:status") == []
    assert (await newcomer.wait_for("spotlight:status"))["activeSpotlights"] == []

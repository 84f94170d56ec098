"""A node frozen long enough to be declared dead (SPEC §9).

While node A is stopped with SIGSTOP its players keep sending; the bytes wait in A's socket
buffers. After 10 s node B declares A dead and removes A's players (`player:left`, one EXIT
each). When A resumes it finds out that its players were removed and closes their sockets,
and nothing those players sent while A was frozen may reach anyone: to node B's players they
have left, so a move or a chat line from them would come from a ghost."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from support.cluster import DEAD_NODE_DEADLINE, Cluster, dev_join, until_received
from support.ids import space_id
from support.jsclient import Bridge

pytestmark = pytest.mark.cluster

FROZEN_X = 777.0
FROZEN_CHAT = "sent while the node was frozen"
WATCH_AFTER_RESUME = 4.0


async def test_input_of_reaped_players_is_not_relayed_when_their_node_resumes(
    bridge: Bridge, cluster: Cluster
) -> None:
    a, b = await cluster(2)
    space = space_id()
    zed = await dev_join(bridge, a, space, "Zed")
    bob = await dev_join(bridge, b, space, "Bob")
    await zed.wait_for("player:joined", lambda p: p["id"] == bob.player_id)
    await zed.emit("player:move", {"x": 10, "y": 10, "direction": "left", "isMoving": False})
    await bob.wait_for("player:moved", lambda m: m["x"] == 10)

    a.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        await asyncio.sleep(0.5)
        await zed.emit(
            "player:move", {"x": FROZEN_X, "y": 5, "direction": "right", "isMoving": True}
        )
        await zed.emit("chat:message", {"content": FROZEN_CHAT})
        await zed.emit("player:jump", {"x": FROZEN_X, "y": 5})
        await until_received(
            bob, "player:left", lambda m: m["id"] == zed.player_id, timeout=DEAD_NODE_DEADLINE
        )
        reaped_after = time.monotonic() - frozen_at
    finally:
        a.send_signal(signal.SIGCONT)
    await zed.wait_disconnect(timeout=10)
    await asyncio.sleep(WATCH_AFTER_RESUME)

    ghost_moves = [m for m in bob.received("player:moved") if m.get("x") == FROZEN_X]
    ghost_jumps = [m for m in bob.received("player:jumped") if m.get("x") == FROZEN_X]
    ghost_chat = [m for m in bob.received("chat:message") if m.get("content") == FROZEN_CHAT]
    assert not ghost_moves and not ghost_jumps and not ghost_chat, (
        ghost_moves,
        ghost_jumps,
        ghost_chat,
    )
    assert a.running
    print(f"node A frozen; its player was removed after {reaped_after:.1f} s")

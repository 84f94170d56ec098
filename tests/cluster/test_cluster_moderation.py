"""Moderation across nodes: a kick, a ban and a mute issued on node A reach the player's socket
on node B through the space's bus channel, and a ban kept in Redis refuses a development
session's rejoin through either node."""

from __future__ import annotations

from support.cluster import Cluster, dev_join
from support.ids import dev_token, space_id
from support.jsclient import Bridge


async def test_kick_ban_and_mute_reach_the_other_node(bridge: Bridge, cluster: Cluster) -> None:
    a, b = await cluster(2)
    space = space_id()
    staff = await dev_join(bridge, a, space, "Mod", role="STAFF")
    ann = await dev_join(bridge, b, space, "Ann")
    pid = ann.player_id
    bob = await dev_join(bridge, b, space, "Bob")

    await staff.emit("admin:mute", {"targetMemberId": "nickname:Bob", "duration": 2})
    await bob.wait_for("member:muted")
    await bob.emit("chat:message", {"content": "hello"})
    refused = await bob.wait_for("chat:error")
    assert refused["code"] == "MUTED" and "another 2 minutes" in refused["message"]
    await staff.expect_nothing("chat:message", 0.3)

    await staff.emit("admin:kick", {"targetMemberId": "nickname:Ann"})
    assert (await ann.wait_for("error"))["code"] == "KICKED"
    await ann.wait_disconnect()
    await staff.wait_for("player:left", lambda p: p["id"] == pid)

    ann = await dev_join(bridge, b, space, "Ann", player_id=pid)
    await staff.emit("admin:kick", {"targetMemberId": "nickname:Ann", "ban": True})
    assert (await ann.wait_for("error"))["code"] == "BANNED"
    await ann.wait_disconnect()
    for node in (a, b):
        again = await bridge.connected(node.url, transports=["websocket"])
        await again.emit(
            "join:space",
            {"spaceId": space, "nickname": "Ann", "playerId": pid, "sessionToken": dev_token()},
        )
        assert (await again.wait_for("error"))["code"] == "BANNED"
        await again.wait_disconnect()
    await staff.emit("admin:unban", {"targetMemberId": pid})
    await staff.wait_for("member:unbanned")
    await dev_join(bridge, b, space, "Ann", player_id=pid)

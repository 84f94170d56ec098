"""Nicknames across nodes (SPEC §3, §9): one name per space cluster-wide, read from the shared
roster; every node relays the neutralised form."""

from __future__ import annotations

from typing import Any

import pytest

from support.cluster import Cluster, dev_join, get_json
from support.ids import space_id, unique
from support.jsclient import Bridge

pytestmark = pytest.mark.cluster

QUIET = 0.3


def by_id(players: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in players}


async def test_a_name_taken_on_another_node_is_suffixed_or_refused(
    bridge: Bridge, cluster: Cluster
) -> None:
    """A join on node B under a name a player on node A has is suffixed; a profile update on
    node B to that name is refused with `NICKNAME_TAKEN`; whispers by name cross nodes."""
    a, b = await cluster(2)
    space = space_id()
    ann = await dev_join(bridge, a, space, "Ann")
    other = await dev_join(bridge, b, space, "<b>ANN</b>", player_id=unique("ann"))
    joined = await ann.wait_for("player:joined")
    assert joined["nickname"] == "ANN (2)"
    mine = by_id(other.received("room:joined")[0]["players"])
    assert (mine[ann.player_id]["nickname"], mine[other.player_id]["nickname"]) == (
        "Ann",
        "ANN (2)",
    )

    bob = await dev_join(bridge, b, space, "Bob")
    await ann.wait_for("player:joined", lambda p: p["id"] == bob.player_id)
    await bob.emit("player:updateProfile", {"nickname": "ann"})
    assert (await bob.wait_for("error"))["code"] == "NICKNAME_TAKEN"
    await ann.expect_nothing("player:profileUpdated", within=QUIET)

    await bob.emit("player:updateProfile", {"nickname": "Tom & Jerry"})
    update = await ann.wait_for("player:profileUpdated")
    assert update["nickname"] == "Tom &amp; Jerry"
    await ann.emit("whisper:send", {"targetNickname": "Tom & Jerry", "content": "hi"})
    assert (await bob.wait_for("whisper:received"))["senderName"] == "Ann"

    status, presence = await get_json(a, f"/presence/{space}")
    assert status == 200
    names = sorted(u["nickname"] for u in presence["onlineUsers"])
    assert names == ["ANN (2)", "Ann", "Tom &amp; Jerry"]

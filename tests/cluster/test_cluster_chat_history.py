"""Chat history in a cluster: each node writes the messages its own players send (one row per
message, however many nodes serve the space), and the id update reaches the players on the
other nodes through the space bus, after the message it names."""

from __future__ import annotations

import pytest

from support.chat_db import ChatWorld, rows, seed_chat_world
from support.cluster import Cluster, dev_join, metrics
from support.jsclient import Bridge, JsClient
from support.storage_world import database_fixture

pytestmark = pytest.mark.cluster


world = database_fixture(seed_chat_world)


def before(client: JsClient, first: str, then: str) -> None:
    names = client.event_names()
    assert first in names and then in names, names
    assert names.index(first) < names.index(then), names


async def test_id_updates_cross_nodes_and_rows_are_written_once(
    bridge: Bridge, cluster: Cluster, world: ChatWorld
) -> None:
    node_a, node_b = await cluster(2, DATABASE_URL=world.dsn)
    alice = await dev_join(bridge, node_a, world.space, "Alice")
    bob = await dev_join(bridge, node_b, world.space, "Bob")
    carol = await dev_join(bridge, node_b, world.space, "Carol")

    await alice.emit("chat:message", {"content": "across the cluster"})
    seen = await bob.wait_for("chat:message", lambda m: m["senderNickname"] == "Alice")
    update = await bob.wait_for("chat:messageIdUpdate", lambda u: u["tempId"] == seen["id"])
    assert await carol.wait_for("chat:messageIdUpdate") == update
    assert await alice.wait_for("chat:messageIdUpdate") == update
    before(bob, "chat:message", "chat:messageIdUpdate")

    await alice.emit("whisper:send", {"targetId": bob.player_id, "content": "just you"})
    whisper = await bob.wait_for("whisper:receive")
    whisper_update = await bob.wait_for("whisper:messageIdUpdate")
    assert whisper_update["tempId"] == whisper["id"]
    assert await alice.wait_for("whisper:messageIdUpdate") == whisper_update
    before(bob, "whisper:receive", "whisper:messageIdUpdate")
    await carol.expect_nothing("whisper:messageIdUpdate", 0.3)

    await bob.emit("chat:message", {"content": "answer from node b"})
    answer = await alice.wait_for("chat:message", lambda m: m["senderNickname"] == "Bob")
    answer_update = await alice.wait_for(
        "chat:messageIdUpdate", lambda u: u["tempId"] == answer["id"]
    )

    stored = await rows(world)
    assert [r["id"] for r in stored] == [
        update["realId"],
        whisper_update["realId"],
        answer_update["realId"],
    ]
    assert [r["content"] for r in stored] == [
        "across the cluster",
        "just you",
        "answer from node b",
    ]
    whisper_row = stored[1]
    assert whisper_row["type"] == "WHISPER"
    assert (whisper_row["senderId"], whisper_row["targetId"]) == (alice.player_id, bob.player_id)
    figures_a = (await metrics(node_a))["chatLog"]
    figures_b = (await metrics(node_b))["chatLog"]
    assert (figures_a["written"], figures_b["written"]) == (2, 1)
    assert figures_a["failed"] == figures_b["failed"] == 0

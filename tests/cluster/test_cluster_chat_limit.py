"""The chat limit is one per player across the cluster (SPEC §6, §9): 5 messages in any 5
seconds, and no third identical message in a row, however many sockets on however many nodes
the player sends from at once."""

from __future__ import annotations

import asyncio

import pytest

from support.cluster import Cluster
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient

pytestmark = pytest.mark.cluster

SPACES = 10
MESSAGES = 50
SETTLE = 1.5


async def one_player_everywhere(bridge: Bridge, cluster: Cluster, player_id: str) -> list[JsClient]:
    """One player (one playerId, development tokens) in ``SPACES`` spaces, through sockets
    spread over two nodes."""
    a, b = await cluster(2)
    sockets = []
    for i in range(SPACES):
        node = (a, b)[i % 2]
        client = await bridge.connected(node.url, transports=["websocket"])
        await client.join(
            space_id(), "Chatty", session_token=unique("dev-token"), playerId=player_id
        )
        sockets.append(client)
    return sockets


async def test_fifty_messages_at_once_from_two_nodes_deliver_five(
    bridge: Bridge, cluster: Cluster
) -> None:
    """50 different messages sent at once through 10 sockets on two nodes: exactly 5 are
    delivered, every other one is refused on `chat:error`."""
    sockets = await one_player_everywhere(bridge, cluster, unique("chatty"))
    per_socket = MESSAGES // SPACES
    await asyncio.gather(
        *(
            client.emit_many(
                ("chat:message", [{"content": f"message {i}-{n}"}]) for n in range(per_socket)
            )
            for i, client in enumerate(sockets)
        )
    )
    await asyncio.sleep(SETTLE)
    delivered = sum(len(client.received("chat:message")) for client in sockets)
    refused = sum(len(client.received("chat:error")) for client in sockets)
    assert (delivered, refused) == (5, MESSAGES - 5)


async def test_no_third_identical_message_across_nodes(bridge: Bridge, cluster: Cluster) -> None:
    """The same text sent once through each of 10 sockets on two nodes, at once: two of them
    are delivered, the others refused as repeats."""
    sockets = await one_player_everywhere(bridge, cluster, unique("repeater"))
    await asyncio.gather(
        *(client.emit("chat:message", {"content": "Same again"}) for client in sockets[:4])
    )
    await asyncio.sleep(SETTLE)
    delivered = sum(len(client.received("chat:message")) for client in sockets)
    errors = [e["message"] for client in sockets for e in client.received("chat:error")]
    assert delivered == 2
    assert len(errors) == 2 and all("repeat" in e for e in errors), errors

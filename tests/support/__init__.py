"""Integration-test support: the real server as a subprocess, official JS clients, stand-ins.

A typical test (fixtures from ``tests/conftest.py``)::

    async def test_chat(bridge: Bridge, dev_server: ServerProcess) -> None:
        space = space_id()
        alice = await bridge.connected(dev_server.url, transports=["websocket"])
        await alice.join(space, "Alice", session_token=dev_token(), playerId=unique("alice"))
        bob = await bridge.connected(dev_server.url, transports=["polling"])
        await bob.join(space, "Bob", session_token=dev_token(), playerId=unique("bob"))

        await alice.emit("chat:message", {"content": "hi"})
        message = await bob.wait_for("chat:message", lambda m: m["content"] == "hi")
        assert message["senderId"] == alice.player_id
        await bob.expect_nothing("chat:error")

``wait_for`` also sees events that arrived before it was called, and consumes what it returns.
"""

from support.ids import dev_token, space_id, unique
from support.jsclient import Bridge, BridgeError, ConnectRefused, JsClient
from support.server import ServerProcess, ServerStartError, free_port
from support.standins import AppStandIn, DiscordStandIn, RecordedRequest

__all__ = [
    "AppStandIn",
    "Bridge",
    "BridgeError",
    "ConnectRefused",
    "DiscordStandIn",
    "JsClient",
    "RecordedRequest",
    "ServerProcess",
    "ServerStartError",
    "dev_token",
    "free_port",
    "space_id",
    "unique",
]

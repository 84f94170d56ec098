"""Small building blocks shared by the integration tests."""

from __future__ import annotations

from typing import Any

from support.ids import dev_token, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess

# The fields every ChatMessageData carries (SPEC §3).
CHAT_KEYS = {"id", "senderId", "senderNickname", "senderName", "content", "timestamp", "type"}


async def dev_player(
    bridge: Bridge,
    server: ServerProcess,
    space: str,
    nickname: str,
    *,
    transport: str = "websocket",
    player_id: str | None = None,
) -> JsClient:
    """A connected client that joined ``space`` in development mode."""
    client = await bridge.connected(server.url, transports=[transport])
    await client.join(
        space, nickname, session_token=dev_token(), playerId=player_id or unique("player")
    )
    return client


async def dev_player_ready(
    bridge: Bridge, server: ServerProcess, space: str, nickname: str, role: str | None = None
) -> JsClient:
    """A development player (claiming ``role`` if given) over WebSocket, returned once its join
    state, ending in ``proximity:status``, has arrived."""
    client = await bridge.connected(server.url, transports=["websocket"])
    fields: dict[str, Any] = {"playerId": unique("p")}
    if role is not None:
        fields["role"] = role
    await client.join(space, nickname, session_token=dev_token(), **fields)
    await client.wait_for("proximity:status")
    return client

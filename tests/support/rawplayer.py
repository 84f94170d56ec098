"""Socket.IO players on bare Engine.IO sessions, for races a real client library would smooth
over: frames (or long-polling payloads) go out exactly when and how a test says, so a join and
a close can reach the server in one read, and hundreds of players cost the test process little.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from support.rawio import RawPolling, RawWebSocket, _frame
from support.server import ServerProcess

Event = tuple[str, Any]


def event_frame(event: str, data: Any) -> str:
    """A Socket.IO EVENT packet for the main namespace."""
    return "42" + json.dumps([event, data], separators=(",", ":"))


def parse_event(text: str) -> Event | None:
    if not text.startswith("42"):
        return None
    try:
        args = json.loads(text[2:])
    except ValueError:
        return None
    if not isinstance(args, list) or not args:
        return None
    return str(args[0]), args[1] if len(args) > 1 else None


class WsPlayer:
    """A Socket.IO client on one raw WebSocket."""

    def __init__(self, node: ServerProcess) -> None:
        self.ws = RawWebSocket(node.host, node.port)

    async def open(self) -> WsPlayer:
        status = await self.ws.open()
        assert status == 101, status
        await self.ws.connect()
        return self

    def emit(self, event: str, data: Any) -> None:
        self.ws.send(event_frame(event, data))

    def send_all(self, frames: list[str]) -> None:
        """Several packets written at once (one TCP write, read by the server in one go)."""
        assert self.ws.writer is not None
        self.ws.writer.write(b"".join(_frame(f.encode(), binary=False) for f in frames))

    async def next_event(self, timeout: float = 5.0) -> Event | None:
        """The next Socket.IO event, or ``None`` when the connection ends."""
        while True:
            text = await self.ws.text(timeout)
            if text is None:
                return None
            event = parse_event(text)
            if event is not None:
                return event

    async def wait_for(
        self, name: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name!r} within {timeout}s")
            event = await self.next_event(left)
            if event is None:
                raise AssertionError(f"closed while waiting for {name!r}")
            if event[0] == name and (predicate is None or predicate(event[1])):
                return event[1]

    async def join(self, space: str, player_id: str, nickname: str) -> Any:
        self.emit("join:space", join_payload(space, player_id, nickname))
        return await self.wait_for("room:joined", lambda p: p.get("spaceId") == space)

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        writer = self.ws.writer
        if writer is not None:
            transport = writer.transport
            transport.abort()

    def close(self) -> None:
        self.ws.close()


class PollingPlayer:
    """A Socket.IO client on one raw long-polling session."""

    def __init__(self, node: ServerProcess) -> None:
        self.http = RawPolling(node.url)

    async def open(self) -> PollingPlayer:
        response = await self.http.open()
        assert response.status_code == 200, response.text
        await self.http.connect()
        return self

    async def post(self, *packets: str) -> int:
        """One POST carrying ``packets`` (the server handles them in one request)."""
        return (await self.http.post(*packets)).status_code

    async def aclose(self) -> None:
        await self.http.aclose()


def join_payload(space: str, player_id: str, nickname: str) -> dict[str, Any]:
    return {
        "spaceId": space,
        "playerId": player_id,
        "nickname": nickname,
        "sessionToken": f"dev-token-{player_id}",
    }


async def ws_players(
    node: ServerProcess, space: str, ids: list[str], *, names: list[str] | None = None
) -> list[WsPlayer]:
    """Players joined to ``space`` on ``node``, a few at a time (each waits for its
    ``room:joined``; afterwards nobody reads their sockets, the kernel buffers what comes)."""
    players: list[WsPlayer] = []
    names = names or ids
    for start in range(0, len(ids), 20):
        batch = [WsPlayer(node) for _ in ids[start : start + 20]]
        await asyncio.gather(*(p.open() for p in batch))
        await asyncio.gather(
            *(
                p.join(space, pid, name)
                for p, pid, name in zip(
                    batch, ids[start : start + 20], names[start : start + 20], strict=True
                )
            )
        )
        players += batch
    return players

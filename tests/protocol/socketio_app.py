"""The Socket.IO server configured as the official Socket.IO protocol test suite expects, on
127.0.0.1:3000 under ``/socket.io/``: the ``auth`` echo on connect, ``message`` echoed back as
``message-back``, ``message-with-ack`` acknowledged with its arguments, and the ``/custom``
namespace.

Run ``python tests/protocol/socketio_app.py``, then ``npm test`` in the suite's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

from aiohttp import web

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from spacesync.transport.engine import EngineOptions
from spacesync.transport.http import WEBSOCKET_ROUTES, serve_forever
from spacesync.transport.socketio import SocketServer

OPTIONS = EngineOptions(
    ping_interval=0.3, ping_timeout=0.2, max_payload=1_000_000, cors_origins="*"
)


def make_server(options: EngineOptions = OPTIONS, **kwargs: Any) -> SocketServer:
    sio = SocketServer(options, connect_timeout=1.0, allow_binary=True, **kwargs)
    auths: dict[str, Any] = {}

    async def connect(sid: str, address: str, auth: Any) -> None:
        auths[sid] = auth

    async def disconnect(sid: str, reason: str) -> None:
        auths.pop(sid, None)

    def on_connected(namespace: str) -> Any:
        async def connected(sid: str) -> None:
            await sio.emit("auth", auths.get(sid, {}), to=sid, namespace=namespace)

        return connected

    async def message(sid: str, *args: Any) -> None:
        await sio.emit("message-back", *args, to=sid)

    async def message_with_ack(sid: str, *args: Any) -> tuple[Any, ...]:
        return args

    for namespace in ("/", "/custom"):
        sio.on("connect", connect, namespace)
        sio.on("disconnect", disconnect, namespace)
        sio.on("connected", on_connected(namespace), namespace)
    sio.on("message", message)
    sio.on("message-with-ack", message_with_ack)
    return sio


def make_app(sio: SocketServer | None = None) -> web.Application:
    sio = sio or make_server()
    app = web.Application()
    app.router.add_route("*", "/socket.io/", sio.handle)
    app[WEBSOCKET_ROUTES] = {"/socket.io/": sio.accept_websocket}
    app["sio"] = sio
    return app


def main() -> None:
    port = int(os.environ.get("PORT", "3000"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(make_app(), "127.0.0.1", port))


if __name__ == "__main__":
    main()

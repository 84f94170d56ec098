"""The Engine.IO server configured as the official Engine.IO protocol test suite expects: echo
every message, on 127.0.0.1:3000 under ``/engine.io/``.

Run ``python tests/protocol/engineio_app.py``, then ``npm test`` in the suite's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from aiohttp import web

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from spacesync.transport.engine import Connection, EngineOptions, EngineServer
from spacesync.transport.http import WEBSOCKET_ROUTES, serve_forever

OPTIONS = EngineOptions(
    ping_interval=0.3, ping_timeout=0.2, max_payload=1_000_000, cors_origins="*"
)


class Echo:
    def opened(self, conn: Connection) -> None:
        pass

    async def message(self, conn: Connection, data: str | bytes) -> None:
        if isinstance(data, bytes):
            conn.send_binary(data)
        else:
            conn.send_text("4" + data)

    def closed(self, conn: Connection, reason: str) -> None:
        pass


def make_app(options: EngineOptions = OPTIONS) -> web.Application:
    engine = EngineServer(Echo(), options)
    app = web.Application()
    app.router.add_route("*", "/engine.io/", engine.handle)
    app[WEBSOCKET_ROUTES] = {"/engine.io/": engine.accept_websocket}
    app["engine"] = engine
    return app


def main() -> None:
    port = int(os.environ.get("PORT", "3000"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(make_app(), "127.0.0.1", port))


if __name__ == "__main__":
    main()

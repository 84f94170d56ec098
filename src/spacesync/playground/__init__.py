"""The playground: one HTML page, served in development mode only, whose own script speaks the
Socket.IO protocol over a WebSocket so a person can walk, chat, whisper and use party zones in a
browser without the app.

The page has no build step and loads nothing from elsewhere. Its inline script and style are
allowed by their SHA-256 hashes in a strict Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from aiohttp import web

from ..config import Settings

PATH = "/playground"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@cache
def page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy, read from the package once."""
    text = resources.files(__package__).joinpath("index.html").read_text("utf-8")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(text):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {' '.join(hashes['script'])}",
            f"style-src {' '.join(hashes['style'])}",
            "connect-src 'self' ws: wss:",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return text.encode("utf-8"), policy


async def serve(request: web.Request) -> web.Response:
    body, policy = page()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def install(router: web.UrlDispatcher, settings: Settings) -> None:
    """In development mode, serve ``GET /playground`` (the node lets the page's own origin open
    Socket.IO connections there); in production nothing changes (the path is an unknown one,
    404)."""
    if not settings.development:
        return
    router.add_get(PATH, serve)

"""One lagging threshold: the broadcaster folds positions for exactly the clients the transport
calls lagging, whatever `CLIENT_BUFFER_LIMIT` is set to."""

from __future__ import annotations

import dataclasses

import pytest

from spacesync.app import SpacesyncNode
from spacesync.config import load_settings


@pytest.mark.parametrize(
    ("limit", "lagging"),
    [(None, 64 * 1024), (str(1 << 20), 64 * 1024), ("65536", 16 * 1024), ("16384", 4 * 1024)],
)
def test_the_broadcaster_and_the_transport_share_one_lagging_threshold(
    limit: str | None, lagging: int
) -> None:
    env = {"NODE_ENV": "development"}
    if limit is not None:
        env["CLIENT_BUFFER_LIMIT"] = limit
    settings = dataclasses.replace(load_settings(env), exit_outbox_path=":memory:")
    node = SpacesyncNode(settings)
    assert node.sio.options.buffer_limit == settings.client_buffer_limit
    assert node.sio.options.lagging_bytes == lagging
    assert node.broadcaster.lagging_bytes == lagging

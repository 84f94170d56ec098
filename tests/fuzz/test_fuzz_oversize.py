"""Messages over the 64 KiB Engine.IO limit, fuzzed through a real server.

SPEC §8 (Engine.IO messages over 64 KiB are refused by the transport; no input may disconnect
other players or corrupt state), §4 (a player whose socket closes leaves the space: the others get
``player:left``), §7 (the departure is an ordinary disconnect), §10 and §11 (no error-level log,
no traceback, JSON lines only).

Each example joins a fresh player and sends one oversized message for a random event: a long
string, a string of characters that JSON-escaping multiplies, a long array of numbers, or a large
binary attachment (a binary packet, which closes the connection before its attachment is even
read). Then (see
``support.fuzzing.oversize_example``): that socket is closed by the transport, nothing of the
message is relayed, the player leaves cleanly (no ghost in the roster or ``/presence``, no leaked
socket or party), the bystander is still connected and still hears a probe player, and the logs
are clean. (The hand-written case of ``tests/integration/test_bad_input.py`` covers one chat
message just under and just over the limit.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given

from support.fuzzing import (
    Arena,
    Message,
    arena_on,
    fuzz_settings,
    oversize_example,
    oversized_messages,
    run,
)
from support.server import ServerProcess

EXAMPLES = 12


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(message=oversized_messages())
def test_oversized_messages_close_only_their_socket(arena: Arena, message: Message) -> None:
    """SPEC §8: the transport refuses the message; only the sender's socket is affected."""
    run(arena, oversize_example(arena, message.event, message.args))

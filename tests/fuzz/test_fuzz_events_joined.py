"""Every client event fuzzed through a real server, sent by a player who joined the space.

SPEC §4 (the client events and their payloads), §3 (input limits), §6 (chat rules), §8 (bad input:
validated, answered on the event's error channel or with ``error {code: "INVALID_PAYLOAD"}``, no
state change, no unhandled exception, no stall, nobody else disconnected), §5 (what the server
sends back), §2 (identity bound to the socket), §10 (``/health``, ``/presence``, ``/metrics``) and
§11 (no error-level log, no traceback, one JSON object per line).

Each example sends a batch of generated messages for one event — its payload with each field
valid, hostile (wrong types, huge and non-finite numbers, unicode edge cases, nesting 17 to 500
levels deep) or missing, plus non-object payloads, no payload, and extra positional arguments —
from a fresh fuzzing player, over one WebSocket, without waiting for replies. About one message in
48 carries a binary value anywhere in it: that one must close the connection unanswered (no event
takes binary data), and the player comes back on a new connection under a new id. Then (see
``support.fuzzing.joined_example``): the server is healthy; the fuzzing socket is still connected
and served; surely-bad messages got exactly one error reply while the rate limits could not have
been reached (README "Security": one ``RATE_LIMITED`` answer per limit and window, later excess
refused silently), none got more, and ``RATE_LIMITED`` came at most once per limit and window;
everything anybody received has the shapes of SPEC §3/§5; a bystander in the same space got no
error and still receives a probe player's jump and chat; a newcomer's ``room:joined`` and
``/presence`` list exactly the right players with valid fields; once the fuzzing sockets close no
ghost player, party or socket is left; the logs are clean.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    CLIENT_EVENTS,
    Arena,
    arena_on,
    batches,
    event_messages,
    fuzz_settings,
    joined_example,
    run,
    unknown_messages,
)
from support.server import ServerProcess

BATCH = 96  # message slots per example (about nine in ten used)
EXAMPLES = 16  # per event: about 1,300 payloads


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("event", CLIENT_EVENTS)
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzzed_event_from_a_joined_player(arena: Arena, event: str, data: st.DataObject) -> None:
    """SPEC §8: whatever a joined player sends as ``event``, the server stays healthy, answers
    bad input on the error channel, keeps everybody connected, and its state stays valid."""
    messages = data.draw(batches(event_messages(event), BATCH), label="batch")
    run(arena, joined_example(arena, messages))


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzzed_unknown_events_from_a_joined_player(arena: Arena, data: st.DataObject) -> None:
    """SPEC §4: unknown event names (other strings, server event names, odd characters) are
    ignored without a reply; a number as name is answered with one ``error``; the protocol's
    own names (``connect``, ``disconnect``, ``connect_error``) and names that are neither
    strings nor numbers are not valid Socket.IO and close the connection unanswered (the player
    then comes back on a new one); either way nothing else changes."""
    messages = data.draw(batches(unknown_messages(), BATCH), label="batch")
    run(arena, joined_example(arena, messages))

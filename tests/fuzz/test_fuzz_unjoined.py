"""Every client event fuzzed through a real server by a socket that has not joined a space.

SPEC §4 (events other than ``join:space`` sent before joining are ignored with no reply, except
``proximity:set``, which answers ``proximity:error``; unknown event names are ignored), §8 (a bad
``join:space`` is answered with ``error {code: "INVALID_PAYLOAD"}`` and joins nothing; no input may
raise, stall, or disconnect anyone), §3 (input limits), §10 (``/health``, ``/presence``,
``/metrics``) and §11 (no error-level log, no traceback, JSON lines only).

Each example sends one batch from a fresh socket: generated messages for every event except a
valid join (every ``join:space`` here breaks the SPEC for sure), unknown and non-string event
names, deep nesting, huge numbers, unicode edge cases, and now and then a binary value. A binary
value, an event name of the protocol's own (``connect``, ``disconnect``, ``connect_error``) and
one that is neither a string nor a number are not valid input for Socket.IO: they must close the
connection unanswered (the socket then connects again). Then (see
``support.fuzzing.unjoined_example``): the socket is still connected; it received nothing but
one ``error`` per bad join or number as event name and at most one ``proximity:error`` per
``proximity:set``; the players of the space heard nothing; the socket can still join, after which
the roster, ``/presence`` and a probe player's messages are as they should be and nothing leaks
once it leaves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    CLIENT_EVENTS,
    Arena,
    Gen,
    Message,
    arena_on,
    batches,
    binary_draws,
    fuzz_settings,
    invalid_joins,
    run,
    seeds,
    unjoined_example,
    unknown_messages,
)
from support.server import ServerProcess

BATCH = 96
EXAMPLES = 40  # about 3,500 messages over 18 kinds

NOT_JOIN = [event for event in CLIENT_EVENTS if event != "join:space"]


def before_join_messages() -> st.SearchStrategy[Message]:
    return st.one_of(
        st.builds(
            lambda event, shape, binary, seed: Gen(seed).message(event, shape, binary=binary),
            st.sampled_from(NOT_JOIN),
            st.integers(0, 9),
            binary_draws(),
            seeds,
        ),
        invalid_joins(),
        unknown_messages(),
    )


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzzed_events_before_joining(arena: Arena, data: st.DataObject) -> None:
    """SPEC §4, §8: before joining, hostile input is ignored or refused without side effects."""
    messages = data.draw(batches(before_join_messages(), BATCH), label="batch")
    run(arena, unjoined_example(arena, messages))

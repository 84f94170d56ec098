"""Interleaved hostile and valid events from two joined players, through a real server.

SPEC §4 (every client event; parties: create, invite, accept, decline, leave, messages, zones;
whispers; proximity; profile updates; leaving and re-joining), §2 (the identity bound to the
socket is the only one used), §6 (chat rules), §8 (bad input never raises, stalls, disconnects
anyone or corrupts state), §3/§5 (shapes), §10 and §11.

Per-event batches hardly ever build up state; here two fuzzing players in the same space (the
second also the target of the first's invitations, whispers and party operations, and the
reverse) send one shuffled batch of messages for all events and unknown ones, each message from
either player, aiming at party ids they have seen. The checks are those of
``support.fuzzing.joined_example`` for both senders: state stays valid, nothing leaks once they
leave (parties, sockets, ghost players), and a bystander is undisturbed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    Arena,
    any_event_messages,
    arena_on,
    batches,
    from_sender,
    fuzz_settings,
    joined_example,
    run,
)
from support.server import ServerProcess

BATCH = 96
EXAMPLES = 30  # about 2,600 messages over 18 kinds, from two players


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzzed_sequences_from_two_joined_players(arena: Arena, data: st.DataObject) -> None:
    """SPEC §4, §8: whatever two players send, in any order, state stays consistent."""
    messages = data.draw(batches(from_sender(any_event_messages(), 2), BATCH), label="batch")
    run(arena, joined_example(arena, messages, senders=2))

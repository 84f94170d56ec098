"""Raw Socket.IO packets and binary frames fuzzed through a real server by a joined player.

SPEC §8 (no input, however malformed, may raise an unhandled exception, stall the event loop, or
disconnect other players), the Socket.IO protocol (a packet that is not valid Socket.IO closes
the sender's connection unanswered, E3001 and ``abuse.malformedPacket``; one for a namespace the
socket is not connected to, or acknowledging nothing, is ignored; a DISCONNECT makes the socket
leave; a number as event name is answered with ``error {code: "INVALID_PAYLOAD"}``), §5 (one
client's events are handled in the order sent, so good events after garbage still work), §4,
§10 and §11 (no error-level log, no traceback, JSON lines only).

The python-socketio client cannot produce most of these, so they are written by hand: truncated
JSON, ``NaN``/``Infinity``/``1e400``/5000-digit integers, nesting up to 25,000 levels, payloads
that are not event arrays, other namespaces, acknowledgements of nothing, invalid packet types,
binary events whose placeholders do not match their attachments, binary frames nobody waits for,
invalid escapes, and arbitrary text. A quarter of the messages are ordinary generated events, so
that the packets around the garbage are exercised too. The checks are those of
``support.fuzzing.joined_example``, with what each packet must do from
``support.fuzzing.message_fate``: binary input (a binary frame, a packet of type 5 or 6) and
packets that are not valid Socket.IO (an unknown type, CONNECT_ERROR, JSON that does not decode,
data of the wrong shape for the type, an event name of the protocol's own or that is neither a
string nor a number, an acknowledgement id of more than 15 digits) must close the connection
unanswered; after that, and after a DISCONNECT, the player comes back on a new connection.
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
    fuzz_settings,
    joined_example,
    raw_messages,
    run,
)
from support.server import ServerProcess

BATCH = 96
EXAMPLES = 30  # about 2,000 raw packets


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


@pytest.mark.timeout(900)
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzzed_raw_packets_from_a_joined_player(arena: Arena, data: st.DataObject) -> None:
    """SPEC §8: packets that are not valid Socket.IO close their connection unanswered, others
    are ignored or handled; the server and everyone else stay fine."""
    mix = st.one_of(raw_messages(), raw_messages(), raw_messages(), any_event_messages())
    messages = data.draw(batches(mix, BATCH), label="batch")
    run(arena, joined_example(arena, messages))

"""The Socket.IO v5 protocol, checked on the wire against the Socket.IO reference app.

The app answers a CONNECT with an ``auth`` event carrying the CONNECT payload, echoes
``message`` as ``message-back``, acknowledges ``message-with-ack`` with its own arguments, has a
``/custom`` namespace and closes a connection that has not connected to a namespace within 1 s.
"""

from __future__ import annotations

import json
import time

import pytest
from wire import Client, WsClient

P0 = '{"_placeholder":true,"num":0}'
P1 = '{"_placeholder":true,"num":1}'


async def connected(client: Client) -> WsClient:
    """A WebSocket connected to the main namespace, past the ``auth`` event."""
    ws, _ = await client.open_websocket()
    await ws.send("40")
    assert (await ws.recv_text()).startswith("40")
    assert await ws.recv() == '42["auth",{}]'
    return ws


def connect_answer(packet: str, prefix: str) -> dict[str, object]:
    assert packet.startswith(prefix), packet
    answer = json.loads(packet[len(prefix) :])
    assert set(answer) == {"sid"}
    assert isinstance(answer["sid"], str) and answer["sid"]
    return answer


# -- connect --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "auth"),
    [("40", '42["auth",{}]'), ('40{"token":"123"}', '42["auth",{"token":"123"}]')],
    ids=["without payload", "with payload"],
)
async def test_connect_to_the_main_namespace(socketio: Client, packet: str, auth: str) -> None:
    ws, handshake = await socketio.open_websocket()
    await ws.send(packet)
    answer = connect_answer(await ws.recv_text(), "40")
    # the Socket.IO id is not the Engine.IO session id
    assert answer["sid"] != handshake["sid"]
    assert await ws.recv() == auth


@pytest.mark.parametrize(
    ("packet", "auth"),
    [
        ("40/custom,", '42/custom,["auth",{}]'),
        ('40/custom,{"token":"abc"}', '42/custom,["auth",{"token":"abc"}]'),
    ],
    ids=["without payload", "with payload"],
)
async def test_connect_to_a_custom_namespace(socketio: Client, packet: str, auth: str) -> None:
    ws, _ = await socketio.open_websocket()
    await ws.send(packet)
    connect_answer(await ws.recv_text(), "40/custom,")
    assert await ws.recv() == auth


async def test_connect_over_long_polling(socketio: Client) -> None:
    sid, _ = await socketio.open_polling()
    assert await socketio.post(sid, '40{"token":"p"}') == (200, "ok")
    packets = await socketio.get_messages(sid)
    if len(packets) < 2:
        packets += await socketio.get_messages(sid)
    connect_answer(packets[0], "40")
    assert packets[1] == '42["auth",{"token":"p"}]'


async def test_an_unknown_namespace_is_refused(socketio: Client) -> None:
    ws, _ = await socketio.open_websocket()
    await ws.send("40/random")
    assert await ws.recv() == '44/random,{"message":"Invalid namespace"}'
    # the connection stays usable for a namespace that exists
    await ws.send("40")
    connect_answer(await ws.recv_text(), "40")


async def test_an_invalid_handshake_closes_the_connection(socketio: Client) -> None:
    ws, _ = await socketio.open_websocket()
    await ws.send("4abc")
    assert await ws.wait_closed(3.0) == []


async def test_no_connect_within_the_timeout_closes_the_connection(socketio: Client) -> None:
    ws, _ = await socketio.open_websocket()  # answers the heartbeat, but never connects
    opened = time.monotonic()
    assert await ws.wait_closed(5.0) == []
    assert ws.closed_at is not None
    waited = ws.closed_at - opened
    assert 0.7 < waited < 4.0, waited


# -- disconnect -----------------------------------------------------------------------------------


async def test_disconnect_from_the_main_namespace(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send("41")
    # the session is still there (it answers the heartbeat), but events get no answer
    assert await ws.recv(pings=True) == "2"
    await ws.send('42["message","after"]')
    assert await ws.collect(0.3) == []


async def test_connect_and_disconnect_a_custom_namespace(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send("40/custom")
    connect_answer(await ws.recv_text(), "40/custom,")
    assert await ws.recv() == '42/custom,["auth",{}]'
    await ws.send("41/custom")
    await ws.send('42["message","message to main namespace"]')
    assert await ws.recv() == '42["message-back","message to main namespace"]'
    # /custom is gone: its events are dropped
    await ws.send('42/custom,["message","to custom"]')
    assert await ws.collect(0.3) == []


# -- messages -------------------------------------------------------------------------------------


async def test_plain_event_is_echoed(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send('42["message",1,"2",{"3":[true]}]')
    assert await ws.recv() == '42["message-back",1,"2",{"3":[true]}]'


async def test_event_with_binary_attachments_is_echoed(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send(f'452-["message",{P0},{P1}]')
    await ws.send(bytes([1, 2, 3]))
    await ws.send(bytes([4, 5, 6]))
    assert await ws.recv() == f'452-["message-back",{P0},{P1}]'
    assert await ws.recv() == bytes([1, 2, 3])
    assert await ws.recv() == bytes([4, 5, 6])


async def test_event_with_an_ack(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert await ws.recv() == '43456[1,"2",{"3":[false]}]'


async def test_event_with_binary_attachments_and_an_ack(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send(f'452-789["message-with-ack",{P0},{P1}]')
    await ws.send(bytes([1, 2, 3]))
    await ws.send(bytes([4, 5, 6]))
    assert await ws.recv() == f"462-789[{P0},{P1}]"
    assert await ws.recv() == bytes([1, 2, 3])
    assert await ws.recv() == bytes([4, 5, 6])


async def test_events_are_answered_in_order(socketio: Client) -> None:
    ws = await connected(socketio)
    for i in range(20):
        await ws.send(f'42{i}["message-with-ack",{i}]')
    assert [await ws.recv() for _ in range(20)] == [f"43{i}[{i}]" for i in range(20)]


@pytest.mark.parametrize(
    "packet",
    [
        "4abc",
        "42{}",
        '42abc["message-with-ack",1,"2",{"3":[false]}]',
        '42["connect"]',
        "4511-" + json.dumps(["message", *({"_placeholder": True, "num": i} for i in range(11))]),
    ],
    ids=[
        "unknown packet type",
        "payload not an array",
        "invalid ack id",
        "reserved event name",
        "too many attachments",
    ],
)
async def test_an_invalid_packet_closes_the_connection(socketio: Client, packet: str) -> None:
    ws = await connected(socketio)
    await ws.send(packet)
    assert await ws.wait_closed(3.0) == []


async def test_text_while_attachments_are_due_closes_the_connection(socketio: Client) -> None:
    ws = await connected(socketio)
    await ws.send(f'452-["message",{P0},{P1}]')
    await ws.send(bytes([1]))
    await ws.send('42["message","too early"]')
    assert await ws.wait_closed(3.0) == []


async def test_a_placeholder_without_its_attachment_closes_the_connection(
    socketio: Client,
) -> None:
    ws = await connected(socketio)
    await ws.send('451-["message",{"_placeholder":true,"num":3}]')
    await ws.send(bytes([1]))
    assert await ws.wait_closed(3.0) == []


async def test_binary_attachments_over_long_polling(socketio: Client) -> None:
    sid, _ = await socketio.open_polling()
    assert await socketio.post(sid, "40") == (200, "ok")
    packets = await socketio.get_messages(sid)
    while len(packets) < 2:
        packets += await socketio.get_messages(sid)
    assert packets[1] == '42["auth",{}]'
    body = f'452-["message",{P0},{P1}]\x1ebAQID\x1ebBAUG'
    assert await socketio.post(sid, body) == (200, "ok")
    packets = await socketio.get_messages(sid)
    while len(packets) < 3:
        packets += await socketio.get_messages(sid)
    assert packets == [f'452-["message-back",{P0},{P1}]', "bAQID", "bBAUG"]

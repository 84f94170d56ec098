"""Socket.IO packet decoding: what the protocol accepts, and every way a packet can fail to be
one (each of these closes the sender's connection)."""

from __future__ import annotations

import pytest

from spacesync.transport.codec import (
    BadPacket,
    Packet,
    decode_packet,
    decode_payload,
    deconstruct,
    encode_packet,
    encode_payload,
    reconstruct,
)


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0", Packet(0)),
        ('0{"token":"1"}', Packet(0, data={"token": "1"})),
        ("0/custom,", Packet(0, "/custom")),
        ("1", Packet(1)),
        ("1/custom,", Packet(1, "/custom")),
        ('2["hello",1]', Packet(2, data=["hello", 1])),
        ('2/custom,["hello"]', Packet(2, "/custom", ["hello"])),
        ('212["hello"]', Packet(2, data=["hello"], id=12)),
        ("2[42]", Packet(2, data=[42])),
        ("3456[1]", Packet(3, data=[1], id=456)),
        (
            '51-["a",{"_placeholder":true,"num":0}]',
            Packet(5, data=["a", {"_placeholder": True, "num": 0}], attachments=1),
        ),
    ],
)
def test_valid_packets_decode(text: str, packet: Packet) -> None:
    assert decode_packet(text) == packet


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "abc",
        "-1",
        "0null",  # CONNECT data must be an object
        '0"x"',
        "1null",  # DISCONNECT takes no data
        "1{}",
        '4{"message":"x"}',  # CONNECT_ERROR only goes to clients
        "2",
        "2{}",
        "2[]",
        "2[null]",
        "2[true]",
        '2[["x"]]',
        '2["disconnect"]',
        '2["connect_error",1]',
        '2abc["x"]',
        '2²["x"]',  # only ASCII digits make an ack id
        '2٣["x"]',
        '2/a,¹["x"]',
        '21234567890123456["x"]',
        '2["cut',
        "3[1]",  # an ACK needs its id
        "31{}",
        '5-["x"]',
        '5²-["x"]',
        '51234567-["x"]',
    ],
)
def test_invalid_packets_are_refused(text: str) -> None:
    with pytest.raises(BadPacket):
        decode_packet(text)


def test_encoding_round_trips() -> None:
    for packet in (
        Packet(2, data=["e", {"a": 1}]),
        Packet(2, "/custom", ["e"], 7),
        Packet(3, data=[1, "2"], id=9),
        Packet(0, data={"sid": "x"}),
    ):
        assert decode_packet(encode_packet(packet)) == packet


def test_long_polling_payloads() -> None:
    assert decode_payload("4hello\x1ebAQIDBA==\x1e3") == ["4hello", b"\x01\x02\x03\x04", "3"]
    assert encode_payload(["4a", b"\x01", "2"]) == "4a\x1ebAQ==\x1e2"
    for body in ("", "4a\x1e", "x", "b!!", "4a\x1e\x1e4b"):
        with pytest.raises(BadPacket):
            decode_payload(body)


def test_binary_placeholders() -> None:
    data, buffers = deconstruct(["e", {"file": b"\x01\x02"}, [b"\x03"]])
    assert buffers == [b"\x01\x02", b"\x03"]
    assert data == [
        "e",
        {"file": {"_placeholder": True, "num": 0}},
        [{"_placeholder": True, "num": 1}],
    ]
    assert reconstruct(data, buffers) == ["e", {"file": b"\x01\x02"}, [b"\x03"]]
    with pytest.raises(BadPacket):
        reconstruct(["e", {"_placeholder": True, "num": 5}], buffers)

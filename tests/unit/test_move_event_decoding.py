"""``player:move``'s one-step decoding (:func:`protocol.decode_move_event`, the hot input path)
against the ordinary way: the event's JSON decoded, its payload checked by ``parse_move``.

The one-step decoder may decline anything (the ordinary path then answers), but what it accepts
the ordinary way must accept too, with the same move: the same numbers of the same types (an
integer is relayed as an integer, ``-0.0`` as ``-0.0``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacesync import protocol
from spacesync.protocol import BadInput, Move, decode_move_event


def ordinary(text: str) -> Move | None:
    """The move the ordinary decoding of ``text`` takes the fast way: a two-element event
    array named ``player:move`` whose payload is an object of scalars that ``parse_move``
    accepts."""
    try:
        args = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(args) is not list or len(args) != 2 or args[0] != "player:move":
        return None
    data = args[1]
    if type(data) is not dict or any(isinstance(v, dict | list) for v in data.values()):
        return None
    try:
        return protocol.parse_move(data)
    except BadInput:
        return None


def exact(move: Move) -> tuple[Any, ...]:
    """A move's fields with their types and signs (``10 == 10.0`` and ``0.0 == -0.0``)."""
    return tuple(
        (type(value), repr(value)) for value in (move.x, move.y, move.direction, move.is_moving)
    )


def assert_agrees(text: str) -> Move | None:
    """The one-step decoder accepts exactly what the ordinary way accepts, with the same move;
    and :data:`protocol.MOVE_EVENT` alone (the usual payload's way) never accepts more."""
    slow = ordinary(text)
    fast = decode_move_event(text)
    assert (fast is None) == (slow is None), f"{text!r}: {fast} but ordinarily {slow}"
    try:
        _, one_step = protocol.MOVE_EVENT.decode(text)
    except (msgspec.DecodeError, ValueError):
        one_step = None
    for move in (fast, one_step):
        if move is not None:
            assert slow is not None, f"accepted what the ordinary path refuses: {text!r}"
            assert exact(move) == exact(slow), text
    return fast


def event(payload: str) -> str:
    return f'["player:move",{payload}]'


# -- examples ----------------------------------------------------------------------------------

ACCEPTED = [
    ('{"x":10,"y":20,"direction":"down","isMoving":true}', Move(10, 20, "down", True)),
    ('{"isMoving":false,"direction":"up","y":0.5,"x":-3.25}', Move(-3.25, 0.5, "up", False)),
    ('{"x":1000000,"y":-1000000,"direction":"left","isMoving":true}', None),
    ('{"x":1e6,"y":-1E+6,"direction":"right","isMoving":true}', None),
    ('{"x":1e2,"y":-0,"direction":"down","isMoving":true}', Move(100.0, 0, "down", True)),
    ('{"x":-0.0,"y":0.0,"direction":"down","isMoving":true}', None),
    ('{"x":999999.99999999999999,"y":1e-400,"direction":"down","isMoving":true}', None),
    ('{"x":1000000.0000000000582,"y":0,"direction":"down","isMoving":true}', None),
    ('{ "x" : 1 ,\n"y":2,\t"direction":"up","isMoving":true }', None),
    ('{"\\u0078":1,"y":2,"d\\u0069rection":"\\u0075p","isMoving":true}', Move(1, 2, "up", True)),
    # duplicated keys: the last one counts, as in the ordinary decoding
    ('{"x":1,"x":2,"y":2,"direction":"up","isMoving":true}', Move(2, 2, "up", True)),
    ('{"x":"1","x":2,"y":2,"direction":"up","isMoving":true}', Move(2, 2, "up", True)),
    ('{"x":[1],"x":2,"y":2,"direction":"up","isMoving":true}', Move(2, 2, "up", True)),
    ('{"x":1,"y":2,"direction":"up","isMoving":true,"isMoving":false}', None),
    # other fields, ignored, scalars of any kind
    ('{"x":1,"y":2,"direction":"up","isMoving":true,"id":"someone-else"}', Move(1, 2, "up", True)),
    ('{"id":1e300,"x":1,"y":2,"direction":"up","isMoving":true,"playerId":null}', None),
    ('{"x":1,"y":2,"direction":"up","isMoving":true,"n":100000000000000000000000}', None),
    ('{"x":1,"y":2,"direction":"up","isMoving":true,"X":true,"":"\\u0000"}', None),
]


@pytest.mark.parametrize(("payload", "move"), ACCEPTED)
def test_accepted_like_the_ordinary_path(payload: str, move: Move | None) -> None:
    text = event(payload)
    fast = assert_agrees(text)
    assert fast is not None, text
    if move is not None:
        assert exact(fast) == exact(move)


@pytest.mark.parametrize(
    "payload",
    [
        '{"x":512.5,"y":384,"direction":"down","isMoving":true}',
        # what the product's web client sends: the player's id too
        '{"id":"cm3x9k2a0001","x":512.5,"y":384,"direction":"down","isMoving":true}',
    ],
)
def test_the_usual_payloads_are_decoded_in_one_step(payload: str) -> None:
    """No second decoding for them (:data:`protocol.MOVE_EVENT`)."""
    name, sent = protocol.MOVE_EVENT.decode(event(payload))
    assert name == "player:move"
    assert (sent.x, sent.y, sent.direction, sent.is_moving) == (512.5, 384, "down", True)
    assert exact(decode_move_event(event(payload))) == exact(Move(512.5, 384, "down", True))


DECLINED = [
    # numbers: booleans, strings, null, out of range, not JSON
    '{"x":true,"y":2,"direction":"up","isMoving":true}',
    '{"x":1,"y":false,"direction":"up","isMoving":true}',
    '{"x":"10","y":2,"direction":"up","isMoving":true}',
    '{"x":null,"y":2,"direction":"up","isMoving":true}',
    '{"x":1000001,"y":2,"direction":"up","isMoving":true}',
    '{"x":1,"y":-1000000.5,"direction":"up","isMoving":true}',
    '{"x":1000000.0000000000583,"y":0,"direction":"up","isMoving":true}',
    '{"x":100000000000000000000000,"y":2,"direction":"up","isMoving":true}',
    '{"x":-9223372036854775809,"y":2,"direction":"up","isMoving":true}',
    '{"x":1e400,"y":2,"direction":"up","isMoving":true}',
    '{"x":' + "1" * 400 + ',"y":2,"direction":"up","isMoving":true}',
    '{"x":NaN,"y":2,"direction":"up","isMoving":true}',
    '{"x":Infinity,"y":2,"direction":"up","isMoving":true}',
    '{"x":01,"y":2,"direction":"up","isMoving":true}',
    '{"x":+1,"y":2,"direction":"up","isMoving":true}',
    '{"x":1.,"y":2,"direction":"up","isMoving":true}',
    '{"x":1,"x":"1","y":2,"direction":"up","isMoving":true}',
    # direction and isMoving
    '{"x":1,"y":2,"direction":"north","isMoving":true}',
    '{"x":1,"y":2,"direction":"UP","isMoving":true}',
    '{"x":1,"y":2,"direction":["up"],"isMoving":true}',
    '{"x":1,"y":2,"direction":1,"isMoving":true}',
    '{"x":1,"y":2,"isMoving":true}',
    '{"x":1,"y":2,"direction":"up","isMoving":1}',
    '{"x":1,"y":2,"direction":"up","isMoving":"true"}',
    '{"x":1,"y":2,"direction":"up","isMoving":null}',
    '{"x":1,"y":2,"direction":"up"}',
    '{"y":2,"direction":"up","isMoving":true}',
    # anything nested, even in a field that is ignored (the envelope check's business)
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":{}}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":[1]}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":' + "[" * 40 + "]" * 40 + "}",
    # other fields that are not JSON
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":"\\ud800"}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":"\\udc00x"}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":"a\x01"}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":1e400}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,"id":"\ud800"}',
    '{"x":1,"y":2,"direction":"up","isMoving":true,}',
    # not an object
    "null",
    '[10,20,"up",true]',
    '"x"',
    "42",
]


@pytest.mark.parametrize("payload", DECLINED)
def test_declined(payload: str) -> None:
    text = event(payload)
    assert decode_move_event(text) is None
    assert ordinary(text) is None  # the ordinary path's fast subset refuses it too


GOOD = '{"x":1,"y":2,"direction":"up","isMoving":true}'


@pytest.mark.parametrize(
    "text",
    [
        f'["player:move",{GOOD},1]',
        f'["player:move",{GOOD},{GOOD}]',
        '["player:move"]',
        "[]",
        f'["player:jump",{GOOD}]',
        f'["player:move ",{GOOD}]',
        f"[{GOOD}]",
        f'{{"player:move":{GOOD}}}',
        f'["player:move",{GOOD}]x',
        f'["player:move",{GOOD}',
        f'["player:move",{GOOD}]\x0b',
        f'\ufeff["player:move",{GOOD}]',
        f'1["player:move",{GOOD}]',
        "",
    ],
)
def test_other_events_are_declined(text: str) -> None:
    assert decode_move_event(text) is None
    assert ordinary(text) is None


# -- generated ---------------------------------------------------------------------------------

# JSON's whitespace, and rarely some that is not
SPACES = st.sampled_from([""] * 20 + [" ", "\n", "\t", "\r\n ", "  "] * 2 + ["\x0b", "\xa0"])

NUMBER_TOKENS = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.integers(min_value=-1_000_002, max_value=1_000_002).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1_000_001, max_value=1_000_001).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(
        "-0 -0.0 1e6 1000000.0000000000582 1000000.0000000000583 1e400 1e-400 01 1. .5 +1 NaN"
        " Infinity -Infinity 1e 0x10".split()
    ),
)


def _string_token(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


STRING_TOKENS = st.one_of(
    st.builds(
        _string_token,
        st.one_of(
            st.sampled_from(["up", "down", "left", "right", "UP", "north", "", "up "]),
            st.text(max_size=8),
        ),
        st.booleans(),
    ),
    st.sampled_from(['"\\u0075p"', '"d\\u006Fwn"', '"\\ud800"', '"\\udc00"', '"\\x"', '"a\x01"']),
)

SCALAR_TOKENS = st.one_of(
    NUMBER_TOKENS,
    STRING_TOKENS,
    st.sampled_from(["true", "false", "null", "tru", "True", "None"]),
)

KEYS = st.one_of(
    st.sampled_from(
        '"x" "y" "direction" "isMoving" "id" "playerId" "\\u0078" "X" "is_moving" ""'.split()
    ),
    st.text(max_size=6).map(json.dumps),
)


def _array(items: list[str], spaces: list[str]) -> str:
    return "[" + ",".join(f"{s}{item}{s}" for item, s in zip(items, spaces, strict=False)) + "]"


def _object(pairs: list[tuple[str, str]], space: str) -> str:
    return "{" + ",".join(f"{space}{key}{space}:{space}{value}" for key, value in pairs) + "}"


VALUE_TOKENS = st.recursive(
    SCALAR_TOKENS,
    lambda inner: st.one_of(
        st.builds(_array, st.lists(inner, max_size=3), st.lists(SPACES, max_size=3)),
        st.builds(_object, st.lists(st.tuples(KEYS, inner), max_size=3), SPACES),
    ),
    max_leaves=6,
)

COORDINATE_TOKENS = st.one_of(
    st.integers(min_value=-1_000_000, max_value=1_000_000).map(str),
    st.floats(min_value=-1e6, max_value=1e6).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,20})?([eE][+-]?[0-9])?", fullmatch=True),
)
DIRECTION_TOKENS = st.sampled_from(
    ['"up"', '"down"', '"left"', '"right"', '"\\u0075p"', '"righ\\u0074"']
)


@st.composite
def near_moves(draw: st.DrawFn) -> str:
    """A move's payload, valid or nearly: a field or two replaced, added (perhaps once more),
    or dropped, in any order."""
    fields = [
        ('"x"', draw(COORDINATE_TOKENS)),
        ('"y"', draw(COORDINATE_TOKENS)),
        ('"direction"', draw(DIRECTION_TOKENS)),
        ('"isMoving"', draw(st.sampled_from(["true", "false"]))),
    ]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        where = draw(st.integers(0, len(fields) - 1))
        change = draw(st.sampled_from(["value", "field", "drop"]))
        if change == "value":
            fields[where] = (fields[where][0], draw(VALUE_TOKENS))
        elif change == "field":
            fields.insert(where, (draw(KEYS), draw(st.one_of(SCALAR_TOKENS, VALUE_TOKENS))))
        elif len(fields) > 1:
            del fields[where]
    return _object(draw(st.permutations(fields)), draw(SPACES))


OTHER_PAYLOADS = st.one_of(
    st.builds(_object, st.lists(st.tuples(KEYS, VALUE_TOKENS), max_size=7), SPACES),
    VALUE_TOKENS,
)

NAMES = st.sampled_from(['"player:move"'] * 12 + ['"player\\u003amove"', '"player:jump"', "1"])


@st.composite
def events(draw: st.DrawFn) -> str:
    payload = draw(near_moves() if draw(st.integers(0, 3)) else OTHER_PAYLOADS)
    items = [draw(NAMES), payload]
    if draw(st.integers(0, 9)) == 0:
        items = [*items, draw(VALUE_TOKENS)][: draw(st.integers(0, 3))]
    return draw(SPACES) + _array(items, [draw(SPACES) for _ in items]) + draw(SPACES)


SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(events())
def test_generated_events_agree_with_the_ordinary_path(text: str) -> None:
    """Whatever the text, the one-step decoder never raises and either declines it or accepts it
    as the ordinary path does, with the same move."""
    assert_agrees(text)


COORDINATES = st.one_of(
    st.integers(min_value=-1_000_000, max_value=1_000_000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
EXTRAS = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in {"x", "y", "direction", "isMoving"}),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    max_size=3,
)


@SETTINGS
@given(
    COORDINATES,
    COORDINATES,
    st.sampled_from(sorted(protocol.DIRECTIONS)),
    st.booleans(),
    EXTRAS,
    st.randoms(use_true_random=False),
)
def test_every_valid_move_is_accepted(
    x: float, y: float, direction: str, moving: bool, extras: dict[str, Any], rnd: Any
) -> None:
    """Every move the ordinary path accepts from a payload of scalars, other fields or not and
    in any order, is accepted with the same values."""
    fields = [*{"x": x, "y": y, "direction": direction, "isMoving": moving}.items()]
    fields += extras.items()
    rnd.shuffle(fields)
    text = event(orjson.dumps(dict(fields)).decode())
    fast = assert_agrees(text)
    assert fast is not None, text
    assert exact(fast) == exact(Move(x, y, direction, moving))

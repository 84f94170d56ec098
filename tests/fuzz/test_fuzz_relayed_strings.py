"""Hostile nicknames, avatar fields and quoted replies, fuzzed through a real server.

README "Security" (text other players see): nicknames are neutralised once, where they enter
(NFKC, invisible characters and blank fillers dropped, whitespace collapsed, markup removed and
escaped), must keep 1-32 visible characters, are not a reserved name in any case or width, and
are unique per space (a join under a taken name is suffixed, a profile update to one refused
with ``NICKNAME_TAKEN``); avatar fields are 1-50 of ``A-Z a-z 0-9 _ -``; a ``replyTo`` is
checked and neutralised like the message it quotes, on one line of at most 100 characters.
SPEC §8: bad input gets one reply, changes nothing and disturbs nobody.

Each profile example sends a few players into the arena's space under generated nicknames:
random strings over an alphabet of markup, direction marks, zero-width characters, fillers,
combining marks, full-width and other NFKC-folded letters, controls and emoji; reserved names
and the names of players already there in many cases, widths and disguises. They then update
their profiles to more of the same, with hostile avatar fields, and chat. Then: everything the
bystander received (``player:joined``, ``player:profileUpdated``, chat and its notices) carries
safe nicknames and avatar fields; a newcomer's ``room:joined`` and ``/presence`` list safe,
distinct nicknames, none of them reserved, each what the bystander was last told; each refused
join or update got one ``error`` with a documented code, and the others nothing.

Each reply example sends chat messages and whispers to the bystander with generated ``replyTo``
objects: each is either refused once on its own channel or delivered with a safe quote.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.fuzzing import (
    BIDI_CHARS,
    BLANK_CHARS,
    Arena,
    BystanderDisturbed,
    FuzzClient,
    Gen,
    Outcome,
    Stalled,
    StateCorrupted,
    Verdict,
    WrongReplies,
    aget_json,
    arena_on,
    count_errors,
    fresh_tag,
    fuzz_settings,
    nickname_key,
    nickname_problem,
    received_problems,
    run,
    seeds,
    shape_problems,
)
from support.ids import dev_token, unique
from support.server import ServerProcess

PROFILE_EXAMPLES = 30
REPLY_EXAMPLES = 20

RESERVED = ("system", "시스템", "admin", "administrator", "관리자", "운영자", "moderator", "server")
TAKEN = ("Bystander", "Probe", "Ann", "ann", "Zoë", "日本", "😀", "Ann (2)")
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u034f"
SPACES = " \u00a0\u2002\u2009\u3000\u205f"
CONTROLS = "\x00\x07\t\n\r\x1b\x7f\x85\u2028\u2029"
ODD = "<>&\"'/=;`" + "\u0301\u0336\u20dd" + "\ue000\U000e0041\U0010ffff" + "\ufe0f👍🏽"
ALPHABET = (
    "AaBbEeIiNnSsYy019_-. "
    + ZERO_WIDTH
    + "".join(BIDI_CHARS)
    + "".join(BLANK_CHARS)
    + SPACES
    + CONTROLS
    + ODD
    + "ＡａＳｓ＜＞＆"  # full-width: NFKC makes them ASCII, markup included
    + "𝐀𝐝𝐦ⓐⓓᵃﬁ™Ⅻ㎏"  # mathematical, circled, superscript letters, ligatures
)


def _fullwidth(char: str) -> str:
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char


def disguise(name: str, seed: int) -> str:
    """``name`` as a client could dress it up: case and width changed letter by letter,
    invisible characters, direction marks and odd spaces between the letters, markup around it,
    padding, or a suffix like the server's own."""
    r = random.Random(seed)
    out = []
    for char in name:
        k = r.random()
        if k < 0.3:
            char = char.swapcase()
        elif k < 0.5:
            char = _fullwidth(char)
        out.append(char)
        if r.random() < 0.25:
            out.append(r.choice(ZERO_WIDTH + "".join(BIDI_CHARS) + "".join(BLANK_CHARS)))
    text = "".join(out)
    k = r.random()
    if k < 0.2:
        text = r.choice(["<b>", "<i>", "<span style=x>", "<!-- -->", "&lt;"]) + text
        text += r.choice(["</b>", "</i>", "</span>", "", "&gt;"])
    elif k < 0.35:
        text = r.choice(SPACES) * r.randrange(1, 4) + text + r.choice(SPACES) * r.randrange(4)
    elif k < 0.45:
        text += f" ({r.randrange(1, 4)})"
    elif k < 0.5:
        text = text * r.randrange(2, 12)
    return text


def hostile_nicknames() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(disguise, st.sampled_from(RESERVED), seeds),
        st.builds(disguise, st.sampled_from(TAKEN), seeds),
        st.text(ALPHABET, max_size=40),
        st.builds(lambda seed: Gen(seed).text()[:300], seeds),
        st.sampled_from(
            [
                "<img src=x onerror=alert(1)>",
                "<script>alert(1)</script>Ann",
                "A<b>n</b>n",
                "&lt;b&gt;Ann",
                "&amp;amp;",
                "Ann\u202e\u2066",
                "\u3164",
                "\u2800\u200b",
                "x" * 32,
                "x" * 33,
                "&" * 32,
                "😀" * 33,
                "👩\u200d💻",
                "a\u200db",
                "ＳＹＳＴＥＭ",
                "Ｓｙｓｔｅｍ",
                "s y s t e m",
                "Admin (2)",
            ]
        ),
    )


COLORS = ["default", "red", "green", "blue", "RED", "classic:red", "<b>", "red\u202e", "", "x" * 60]
CHARACTERS = ["c-_9", "a" * 50, "a" * 51, "../x", "a b", "c\u200b", "<svg>", "ｃ", "", "é", "ok"]


def hostile_avatars() -> st.SearchStrategy[dict[str, Any]]:
    """``avatarColor`` and ``avatarConfig`` fields (either may be missing): valid ones, wrong
    types, markup, invisible characters, full-width letters, lengths around the limit."""
    config = st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["classic", "custom", "Classic", "robot"]),
                "colorId": st.sampled_from(COLORS),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["custom", "classic", "CUSTOM"]),
                "characterId": st.sampled_from(CHARACTERS) | st.text(ALPHABET, max_size=60),
            }
        ),
        st.sampled_from(["classic:red", ["classic", "red"], 1, None, {}]),
    )
    return st.fixed_dictionaries(
        {}, optional={"avatarColor": st.sampled_from(COLORS), "avatarConfig": config}
    )


def reply_objects() -> st.SearchStrategy[Any]:
    """``replyTo`` values: each field valid, hostile or missing, or not an object at all."""
    text = st.one_of(
        st.text(ALPHABET, max_size=60),
        st.builds(lambda seed: Gen(seed).content(), seeds),
        st.builds(lambda n: "<b>quoted</b> & " + "q" * n, st.integers(0, 2100)),
        st.sampled_from(["line one\nline two", "tab\there", "\u202eevil", "&lt;i&gt;", "<br>"]),
    )
    reply = st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["m-1", "msg:2@x", "", "a b", "x" * 101]) | text,
            "senderNickname": hostile_nicknames(),
            "content": text,
            "extra": st.just("<b>"),
        },
    )
    return st.one_of(reply, reply, reply, st.sampled_from(["m-1", 1, [], None]))


@pytest.fixture(scope="module")
def arena(dev_server: ServerProcess) -> Iterator[Arena]:
    yield from arena_on(dev_server)


async def _try_join(arena: Arena, c: FuzzClient, nickname: str, **fields: Any) -> str | None:
    """Join the arena's space as ``nickname``; the player id, or None if it was refused."""
    start = len(c.events)
    player = unique("hostile")
    payload = {
        "spaceId": arena.space,
        "playerId": player,
        "nickname": nickname,
        "sessionToken": dev_token(),
        **fields,
    }
    await c.emit_args("join:space", [payload])
    await c.sync()
    joined = c.index_of("room:joined", lambda p: p["yourPlayerId"] == player, start)
    if joined < 0:
        return None
    c.player_id, c.space_id = player, arena.space
    return player


async def profile_example(
    arena: Arena, joins: list[tuple[str, dict[str, Any]]], updates: list[tuple[int, str, Any]]
) -> None:
    await arena.ensure_clean()
    assert arena.bystander is not None
    tag = fresh_tag()
    before = await arena.server_healthy()
    start = len(arena.bystander.events)
    verdict = Verdict(arena, [])
    outcome = Outcome()
    clients = [await arena.client("hostile") for _ in joins]
    starts = {c: len(c.events) for c in clients}
    told: dict[str, str] = {}  # player id -> the nickname the bystander was last told
    joined: list[FuzzClient] = []
    for c, (nickname, avatar) in zip(clients, joins, strict=True):
        player = await _try_join(arena, c, nickname, **avatar)
        outcome.sent += 1
        if player is not None:
            joined.append(c)
    for index, nickname, avatar in updates:
        if not joined:
            break
        c = joined[index % len(joined)]
        await c.emit_args("player:updateProfile", [{"nickname": nickname, **avatar}])
        outcome.sent += 1
    for i, c in enumerate(joined):
        await c.emit_args("chat:message", [{"content": f"hello {tag}-{i}"}])
    for c in clients:
        await verdict.step(Stalled, c.sync())

    # Everything the bystander was told has arrived once the last chat line has.
    for i in range(len(joined)):
        await verdict.step(
            StateCorrupted,
            arena.bystander.wait_for(
                "chat:message", lambda m, i=i: m["content"] == f"hello {tag}-{i}", start=start
            ),
        )
    verdict.add_all(StateCorrupted, received_problems(arena.bystander, start))
    for item in arena.bystander.since(start):
        p = item.payload
        if item.event in ("player:joined", "player:profileUpdated") and isinstance(p, dict):
            told[p["id"]] = p["nickname"]
        if item.event == "player:left" and isinstance(p, dict):
            told.pop(p["id"], None)
        if item.event == "chat:system" and isinstance(p, dict) and "<" in str(p.get("content")):
            verdict.add(StateCorrupted, f"chat:system with markup: {p}")
    if any(count_errors(arena.bystander, start).values()):
        verdict.add(BystanderDisturbed, "the bystander got an error reply")

    # Replies: refused joins and updates get one error with a documented code, nothing else.
    for c in clients:
        for item in c.since(starts[c]):
            if item.event in ("chat:error", "whisper:error", "party:error", "proximity:error"):
                verdict.add(WrongReplies, f"{c.name} got {item.event} {item.payload}")
            if item.event == "error" and item.payload.get("code") not in (
                "INVALID_PAYLOAD",
                "NICKNAME_TAKEN",
                "RATE_LIMITED",
            ):
                verdict.add(WrongReplies, f"{c.name} got {item.payload}")
        verdict.add_all(StateCorrupted, received_problems(c, starts[c]))

    # The roster: safe, distinct, not reserved, and what the bystander was told.
    newcomer = await arena.client("newcomer")
    try:
        room = await newcomer.join(arena.space, "Newcomer", unique("newcomer"))
        verdict.add_all(StateCorrupted, shape_problems("room:joined", room))
        status, presence = await aget_json(f"{arena.server.url}/presence/{arena.space}")
        assert status == 200, status
        for where, names in (
            ("room:joined", {p["id"]: p["nickname"] for p in room["players"]}),
            ("/presence", {u["id"]: u["nickname"] for u in presence["onlineUsers"]}),
        ):
            keys = [nickname_key(n) for n in names.values()]
            if len(keys) != len(set(keys)):
                verdict.add(
                    StateCorrupted, f"{where}: nicknames not unique: {sorted(names.values())}"
                )
            for player, name in names.items():
                if problem := nickname_problem(name):
                    verdict.add(StateCorrupted, f"{where}: nickname {name!r}: {problem}")
                if _reserved(name):
                    verdict.add(StateCorrupted, f"{where}: reserved nickname {name!r}")
                if player in told and told[player] != name:
                    verdict.add(
                        StateCorrupted,
                        f"{where}: {name!r}, the bystander was told {told[player]!r}",
                    )
        mine = {c.player_id for c in joined}
        listed = {p["id"] for p in room["players"]}
        if not mine <= listed:
            verdict.add(StateCorrupted, f"joined players missing from the roster: {mine - listed}")
    except AssertionError as exc:
        verdict.add(StateCorrupted, str(exc))
    finally:
        await arena.drop(newcomer)
    if not verdict.problems:
        await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))
    for c in clients:
        await arena.drop(c)
    for c in joined:
        await verdict.step(
            StateCorrupted,
            arena.bystander.wait_for("player:left", lambda p, c=c: p == {"id": c.player_id}),
        )
    if newcomer.player_id is not None:
        await verdict.step(
            StateCorrupted,
            arena.bystander.wait_for("player:left", lambda p: p == {"id": newcomer.player_id}),
        )
    after = await arena.server_healthy()
    if after["connections"]["total"] != before["connections"]["total"]:
        verdict.add(StateCorrupted, f"sockets: {before['connections']} then {after['connections']}")
    arena.payloads_sent["<hostile profile>"] = (
        arena.payloads_sent.get("<hostile profile>", 0) + outcome.sent
    )
    verdict.check_logs()
    verdict.raise_if_any()


def _reserved(name: str) -> bool:
    key = "".join(nickname_key(name).split())
    return any(key == unicodedata.normalize("NFKC", r).casefold() for r in RESERVED)


@pytest.mark.timeout(900)
@fuzz_settings(PROFILE_EXAMPLES)
@given(
    joins=st.lists(st.tuples(hostile_nicknames(), hostile_avatars()), min_size=2, max_size=4),
    updates=st.lists(
        st.tuples(st.integers(0, 3), hostile_nicknames(), hostile_avatars()), max_size=8
    ),
)
def test_hostile_nicknames_and_avatars(
    arena: Arena,
    joins: list[tuple[str, dict[str, Any]]],
    updates: list[tuple[int, str, dict[str, Any]]],
) -> None:
    """README "Security": whatever nicknames and avatar fields players choose, at the join or
    later, what the others see is safe, distinct within the space and not a reserved name."""
    run(arena, profile_example(arena, joins, updates))


async def reply_example(arena: Arena, replies: list[tuple[str, Any]]) -> None:
    await arena.ensure_clean()
    assert arena.bystander is not None
    tag = fresh_tag()
    start = len(arena.bystander.events)
    verdict = Verdict(arena, [])
    sender = await arena.client("quoter")
    await sender.join(arena.space, "Quoter", unique("quoter"))
    first = len(sender.events)
    for i, (kind, reply) in enumerate(replies):
        content = f"quote {tag}-{i}"
        if kind == "whisper":
            data = {"targetId": arena.bystander_id, "content": content, "replyTo": reply}
            await sender.emit_args("whisper:send", [data])
        else:
            await sender.emit_args("chat:message", [{"content": content, "replyTo": reply}])
    await verdict.step(Stalled, sender.sync())
    await verdict.step(Stalled, sender.sync())
    end = len(sender.events)
    # The bystander's socket is written in order: once this line is there, so is every
    # message before it (chat and whispers share 5 per 5 s: at most 4 quotes, then this).
    await sender.emit_args("chat:message", [{"content": f"end {tag}"}])
    await verdict.step(
        StateCorrupted,
        arena.bystander.wait_for(
            "chat:message", lambda m: m["content"] == f"end {tag}", start=start
        ),
    )

    # Each message: refused once on its own channel, or delivered; never both, never neither.
    refused = count_errors(sender, first, end)
    for i, (kind, _) in enumerate(replies):
        content = f"quote {tag}-{i}"
        event = "whisper:received" if kind == "whisper" else "chat:message"
        arena.payloads_sent["<hostile replyTo>"] = (
            arena.payloads_sent.get("<hostile replyTo>", 0) + 1
        )
        found = arena.bystander.index_of(event, lambda m, c=content: m["content"] == c, start)
        delivered = 1 if found >= 0 else 0
        channel = "whisper:error" if kind == "whisper" else "chat:error"
        refused[channel] -= 1 - delivered
    if any(refused.values()):
        verdict.add(WrongReplies, f"replies do not match the refused messages: {refused}")
    verdict.add_all(StateCorrupted, received_problems(arena.bystander, start))
    verdict.add_all(StateCorrupted, received_problems(sender, first))
    if not verdict.problems:
        await verdict.step(BystanderDisturbed, arena.probe_reaches_bystander(tag))
    await arena.drop(sender)
    await verdict.step(
        StateCorrupted,
        arena.bystander.wait_for("player:left", lambda p: p == {"id": sender.player_id}),
    )
    verdict.check_logs()
    verdict.raise_if_any()


@pytest.mark.timeout(900)
@fuzz_settings(REPLY_EXAMPLES)
@given(
    replies=st.lists(
        st.tuples(st.sampled_from(["chat", "whisper"]), reply_objects()), min_size=1, max_size=4
    )
)
def test_hostile_quoted_replies(arena: Arena, replies: list[tuple[str, Any]]) -> None:
    """README "Security": a ``replyTo`` is refused on the message's channel, or relayed with
    every field neutralised and the quote on one line of at most 100 characters."""
    run(arena, reply_example(arena, replies))

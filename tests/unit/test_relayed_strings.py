"""Every string relayed to other clients is neutralised by one rule (SPEC §3, §6, §8): nicknames,
avatar fields, quoted replies and message content."""

from __future__ import annotations

import html
from typing import Any

import pytest

from spacesync import protocol
from spacesync.domain.chat import sanitize
from spacesync.domain.identity import (
    NicknameError,
    Verification,
    avatar_from_app,
    clean_nickname,
    distinct_nickname,
    nickname_key,
    same_name_with_suffix,
)
from spacesync.protocol import BadInput

XSS = "<img src=x onerror=alert(1)>"


def _join(**fields: Any) -> dict[str, Any]:
    return {"spaceId": "space-1", "nickname": "Alice", **fields}


def _reply(**fields: Any) -> dict[str, Any]:
    reply = {"id": "msg-1", "senderNickname": "Ann", "content": "hello", **fields}
    return {"content": "hi", "replyTo": reply}


# -- the one rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "fish & chips",
        "&amp;",
        "&lt;script&gt;",
        "<b>x</b> &quot;y&quot;",
        XSS,
        "a\u202eb",
        "&amp;amp;",
    ],
)
def test_neutralising_twice_changes_nothing(raw: str) -> None:
    """A string neutralised when it entered the server can pass the rule again on an output path
    without being escaped twice."""
    once = sanitize(raw)
    assert sanitize(once) == once


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\u202eevil\u202c b", "aevil b"),
        ("x\u2066y\u2069z", "xyz"),
        ("\u200eleft\u200f \u061cmark", "left mark"),
        ("nul\x00 bell\x07 esc\x1b del\x7f c1\x85", "nul bell esc del c1"),
    ],
)
def test_content_loses_controls_and_direction_overrides(raw: str, shown: str) -> None:
    """A right-to-left override or a control character in a message would change how the text
    around it reads on other screens."""
    assert sanitize(raw) == shown


def test_content_keeps_line_breaks_and_tabs() -> None:
    """Messages may span lines today; line breaks survive (CR LF and U+2028 become LF)."""
    assert sanitize("one\r\ntwo\u2028three\tfour") == "one\ntwo\nthree\tfour"


def test_chat_content_with_only_an_override_is_refused_before_relay() -> None:
    """Nothing visible would reach the others."""
    assert sanitize("\u202e\u202e").strip() == ""


# -- nicknames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("<b>Bob</b>", "Bob"),
        ("Tom & Jerry", "Tom &amp; Jerry"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("  Ann   Lee  ", "Ann Lee"),
        ("A\u202en\u200bn", "Ann"),
        ("A\u2066n\u2069n\u200e\u200f\u061c", "Ann"),
        ("\ufeffA\u2060n\u200cn", "Ann"),
        ("Ann\u3164", "Ann"),
        ("\u2800Ann\u115f\u1160\uffa0\u180e", "Ann"),
        ("Ａｎｎ", "Ann"),
        ("＜b＞Ann", "Ann"),
        ("Ann\u3000Lee", "Ann Lee"),
        ("A\u200dnn", "Ann"),
        ("👩\u200d💻 Dev", "👩\u200d💻 Dev"),
        ("민수 🎮", "민수 🎮"),
    ],
)
def test_nickname_is_normalised_and_neutralised(raw: str, kept: str) -> None:
    """NFKC; invisible, direction and blank characters dropped; whitespace collapsed; markup
    removed and escaped like message content; the zero-width joiner kept only inside an emoji."""
    assert clean_nickname(raw) == kept
    assert clean_nickname(kept) == kept, "the neutralised form is stable"


@pytest.mark.parametrize(
    "raw",
    [
        XSS,
        "<script></script>",
        "\u3164",
        "\u2800\u2800",
        "\u200b\u200d\ufeff",
        "\u202e",
        "\u115f\u1160",
        "   ",
    ],
)
def test_nickname_with_nothing_visible_is_refused(raw: str) -> None:
    with pytest.raises(NicknameError):
        clean_nickname(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "System",
        "SYSTEM",
        "system",
        "시스템",
        "관리자",
        "Ｓｙｓｔｅｍ",
        "Sys\u200btem",
        " S y s t e m ",
    ],
)
def test_reserved_nicknames_are_refused(raw: str) -> None:
    """The names the server's own notices are sent under, whatever their case or disguise."""
    with pytest.raises(NicknameError):
        clean_nickname(raw)


def test_nickname_length_is_counted_on_visible_text() -> None:
    """1–32 characters after normalising; escaping may make the relayed string longer."""
    assert clean_nickname("&" * 32) == "&amp;" * 32
    assert clean_nickname("n" * 32 + "\u200b" * 10) == "n" * 32
    with pytest.raises(NicknameError):
        clean_nickname("n" * 33)


@pytest.mark.parametrize(
    ("join_nickname", "message"),
    [
        (XSS, "visible"),
        ("System", "reserved"),
        ("\u3164", "visible"),
        ("Ali\u0000ce", "control"),
    ],
)
def test_join_and_profile_refuse_unusable_nicknames(join_nickname: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        protocol.parse_join(_join(nickname=join_nickname))
    with pytest.raises(BadInput, match=message):
        protocol.parse_profile({"nickname": join_nickname})


def test_join_nickname_arrives_neutralised() -> None:
    assert protocol.parse_join(_join(nickname="A\u202en<i>n</i>")).nickname == "Ann"
    assert protocol.parse_profile({"nickname": "Tom & Jerry"}).nickname == "Tom &amp; Jerry"


def test_app_nickname_follows_the_same_rule() -> None:
    """The app's verify answer is relayed like a client's choice; an unusable name counts as
    none (the join's own nickname is then used)."""
    answer = {"participantId": "p", "nickname": "<b>Ann</b>\u202e & co"}
    verification = Verification.from_answer(answer)
    assert verification is not None and verification.nickname == "Ann &amp; co"
    for bad in (XSS, "System", "\u3164"):
        verification = Verification.from_answer({"participantId": "p", "nickname": bad})
        assert verification is not None and verification.nickname is None


# -- one name per space ------------------------------------------------------------------------


def test_same_name_ignores_case_width_and_escaping() -> None:
    assert nickname_key("Tom & Jerry") == nickname_key("TOM &amp; jerry")
    assert nickname_key("Ａｎｎ") == nickname_key("ann") == nickname_key("A\u200bnn")


def test_a_taken_name_gets_the_first_free_suffix() -> None:
    assert distinct_nickname("Ann", set()) == "Ann"
    assert distinct_nickname("Ann", {"ann"}) == "Ann (2)"
    assert distinct_nickname("Ann", {"ann", "ann (2)"}) == "Ann (3)"
    long = "n" * 32
    suffixed = distinct_nickname(long, {nickname_key(long)})
    assert suffixed == "n" * 28 + " (2)" and len(suffixed) == 32
    assert distinct_nickname("Tom & Jerry", {"tom & jerry"}) == "Tom &amp; Jerry (2)"


def test_a_suffixed_player_asking_for_the_base_name_is_recognised() -> None:
    assert same_name_with_suffix("Ann (2)", "ann")
    assert same_name_with_suffix("n" * 28 + " (2)", "n" * 32)
    assert not same_name_with_suffix("Ann (2)", "Annabel")
    assert not same_name_with_suffix("Ann", "Ann")


def test_whisper_target_nickname_matches_the_neutralised_name() -> None:
    """A client may name a target as shown (`Tom & Jerry`) or as relayed (`Tom &amp; Jerry`)."""
    message = protocol.parse_whisper({"targetNickname": "Tom & Jerry", "content": "x"})
    assert message.target_nickname == "Tom &amp; Jerry"


# -- avatars -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"type": "custom", "characterId": XSS},
        {"type": "custom", "characterId": "knight\u202e"},
        {"type": "custom", "characterId": "a b"},
        {"type": "custom", "characterId": "../../x"},
        {"type": "classic", "colorId": '"><script>'},
        {"type": "classic", "colorId": "red\u0000"},
    ],
)
def test_avatar_fields_outside_the_character_set_are_refused(config: dict[str, str]) -> None:
    with pytest.raises(BadInput):
        protocol.parse_join(_join(avatarConfig=config))
    with pytest.raises(BadInput):
        protocol.parse_profile({"nickname": "Bob", "avatarConfig": config})


def test_valid_avatar_fields_are_kept() -> None:
    config = protocol.parse_avatar_config({"type": "custom", "characterId": "Knight_02-b"})
    assert config == {"type": "custom", "characterId": "Knight_02-b"}
    classic = protocol.parse_avatar_config({"type": "classic", "colorId": "gold"})
    assert classic == {"type": "classic", "colorId": "default"}, "unknown colour: SPEC §3"


@pytest.mark.parametrize("avatar", [f"custom:{XSS}", "custom:a b", "custom:" + "c" * 51])
def test_invalid_custom_avatar_from_the_app_is_default(avatar: str) -> None:
    assert avatar_from_app(avatar) == ("default", None)
    assert avatar_from_app("custom:knight-1") == (
        "default",
        {"type": "custom", "characterId": "knight-1"},
    )


# -- quoted replies ----------------------------------------------------------------------------


def test_reply_fields_are_neutralised() -> None:
    message = protocol.parse_chat(
        _reply(senderNickname="<b>Ann</b>\u202e", content="<i>hi</i> \u202e&amp; \x00bye\nnow")
    )
    assert message.reply_to is not None
    wire = message.reply_to.to_wire()
    assert wire == {"id": "msg-1", "senderNickname": "Ann", "content": "hi &amp; bye now"}


def test_reply_content_is_bounded_on_visible_text() -> None:
    message = protocol.parse_chat(_reply(content="&" * 500))
    assert message.reply_to is not None
    assert html.unescape(message.reply_to.content) == "&" * 100


@pytest.mark.parametrize(
    "reply",
    [
        {"id": "msg 1"},
        {"id": "msg-1\u202e"},
        {"id": ""},
        {"id": "x" * 101},
        {"senderNickname": "System"},
        {"senderNickname": XSS},
        {"senderNickname": "Ann\x00"},
        {"senderNickname": "n" * 33},
        {"content": "\u202e\x00"},
        {"content": "<b></b>"},
        {"content": "c" * 2001},
    ],
)
def test_forged_replies_are_refused(reply: dict[str, str]) -> None:
    with pytest.raises(BadInput):
        protocol.parse_chat(_reply(**reply))
    with pytest.raises(BadInput):
        protocol.parse_whisper({"targetId": "bob", **_reply(**reply)})
    with pytest.raises(BadInput):
        protocol.parse_party_message(_reply(**reply))

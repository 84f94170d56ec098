"""Chat rules: neutralising content and the per-player rate limit (SPEC §6)."""

from __future__ import annotations

import html

import pytest

from spacesync.domain.chat import ChatRateLimiter, sanitize

T0 = 1_700_000_000.0


@pytest.fixture
def limiter() -> ChatRateLimiter:
    return ChatRateLimiter()


def send_distinct(limiter: ChatRateLimiter, player: str, times: list[float]) -> list[bool]:
    return [limiter.check(player, f"message {i}", t).allowed for i, t in enumerate(times)]


# -- rate limit ---------------------------------------------------------------------------------


def test_five_messages_within_five_seconds_are_accepted(limiter: ChatRateLimiter) -> None:
    """SPEC §6: at most 5 accepted messages in any 5 s window (5 are fine)."""
    assert send_distinct(limiter, "ann", [T0, T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 0.4]) == [True] * 5


def test_the_sixth_message_within_five_seconds_is_refused(limiter: ChatRateLimiter) -> None:
    """SPEC §6: the sixth message in a 5 s window is rejected with the wait in seconds."""
    send_distinct(limiter, "ann", [T0 + i * 0.1 for i in range(5)])
    decision = limiter.check("ann", "one more", T0 + 0.5)
    assert decision.allowed is False
    assert decision.retry_after == 5
    assert "5 seconds" in decision.reason


def test_the_wait_counts_down_to_when_the_oldest_message_leaves(limiter: ChatRateLimiter) -> None:
    """SPEC §6: the rejection says how many seconds to wait (rounded up, at least one)."""
    send_distinct(limiter, "ann", [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4])
    early = limiter.check("ann", "x", T0 + 4.2)
    assert (early.allowed, early.retry_after) == (False, 1)
    assert "1 second" in early.reason
    assert "seconds" not in early.reason


@pytest.mark.parametrize(("now", "wait"), [(0.5, 5), (1.0, 4), (2.5, 3), (3.9, 2), (4.99, 1)])
def test_wait_seconds_are_rounded_up(limiter: ChatRateLimiter, now: float, wait: int) -> None:
    """SPEC §6: how many seconds to wait; waiting that long is always enough."""
    send_distinct(limiter, "ann", [T0] * 5)
    decision = limiter.check("ann", "x", T0 + now)
    assert decision.allowed is False
    assert decision.retry_after == wait
    assert str(wait) in decision.reason
    assert limiter.check("ann", "after the wait", T0 + now + wait).allowed


def test_window_slides(limiter: ChatRateLimiter) -> None:
    """SPEC §6: *any* 5 s window; as old messages age out, new ones are accepted."""
    send_distinct(limiter, "ann", [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4])
    assert not limiter.check("ann", "too soon", T0 + 4.9).allowed
    assert limiter.check("ann", "first slot free", T0 + 5.1).allowed
    assert not limiter.check("ann", "window full again", T0 + 5.2).allowed
    assert limiter.check("ann", "second slot free", T0 + 6.1).allowed


def test_no_five_second_window_ever_holds_six_accepted(limiter: ChatRateLimiter) -> None:
    """SPEC §6: at most 5 accepted messages in *any* 5 s window, under a steady stream."""
    accepted: list[float] = []
    for step in range(400):
        now = T0 + step * 0.13
        if limiter.check("ann", f"m{step}", now).allowed:
            accepted.append(now)
    for start in accepted:
        in_window = [t for t in accepted if start <= t < start + 5.0]
        assert len(in_window) <= 5
    assert len(accepted) >= 5 * (400 * 0.13 // 5)


def test_rejected_messages_do_not_count(limiter: ChatRateLimiter) -> None:
    """SPEC §6: the limit counts *accepted* messages; hammering does not extend the wait."""
    send_distinct(limiter, "ann", [T0] * 5)
    for i in range(50):
        assert not limiter.check("ann", f"spam {i}", T0 + 1 + i * 0.08).allowed
    assert limiter.check("ann", "back", T0 + 5.01).allowed


def test_the_limit_is_per_player(limiter: ChatRateLimiter) -> None:
    """SPEC §6: per player — one player's burst does not silence another."""
    send_distinct(limiter, "ann", [T0] * 5)
    assert not limiter.check("ann", "x", T0 + 1).allowed
    assert send_distinct(limiter, "bob", [T0 + 1] * 5) == [True] * 5


def test_the_limit_is_shared_by_chat_whisper_and_party(limiter: ChatRateLimiter) -> None:
    """SPEC §6: one allowance per player (not per socket, not per channel)."""
    for content in ["public", "whisper", "party", "public 2", "whisper 2"]:
        assert limiter.check("ann", content, T0).allowed
    assert not limiter.check("ann", "party 2", T0 + 0.1).allowed


# -- repeated messages ----------------------------------------------------------------------------


def test_third_identical_message_in_a_row_is_refused(limiter: ChatRateLimiter) -> None:
    """SPEC §6: the third identical message in a row is rejected, with a reason."""
    assert limiter.check("ann", "hello", T0).allowed
    assert limiter.check("ann", "hello", T0 + 1).allowed
    third = limiter.check("ann", "hello", T0 + 2)
    assert third.allowed is False
    assert third.reason
    assert third.retry_after == 0


def test_repeat_detection_ignores_case_and_surrounding_space(limiter: ChatRateLimiter) -> None:
    """SPEC §6: identical means case-insensitive and trimmed."""
    assert limiter.check("ann", "Hello there", T0).allowed
    assert limiter.check("ann", "  hello THERE ", T0 + 1).allowed
    assert not limiter.check("ann", "HELLO THERE\n", T0 + 2).allowed


def test_a_different_message_breaks_the_run(limiter: ChatRateLimiter) -> None:
    """SPEC §6: only identical messages *in a row* are refused."""
    sequence = [("gg", True), ("gg", True), ("nice", True), ("gg", True), ("gg", True)]
    for step, (content, allowed) in enumerate(sequence):
        assert limiter.check("ann", content, T0 + 10 * step).allowed is allowed
    assert not limiter.check("ann", "gg", T0 + 100).allowed


def test_repeats_stay_refused_however_long_you_wait(limiter: ChatRateLimiter) -> None:
    """SPEC §6: the repeat rule is about messages in a row, not about time."""
    limiter.check("ann", "same", T0)
    limiter.check("ann", "same", T0 + 10)
    assert not limiter.check("ann", "same", T0 + 3600).allowed
    assert limiter.check("ann", "different", T0 + 3601).allowed


def test_a_refused_repeat_does_not_use_up_the_allowance(limiter: ChatRateLimiter) -> None:
    """SPEC §6: rejected messages don't count toward the 5-per-5-s limit."""
    assert limiter.check("ann", "a", T0).allowed
    assert limiter.check("ann", "a", T0).allowed
    for _ in range(10):
        assert not limiter.check("ann", "a", T0).allowed
    assert send_distinct(limiter, "ann", [T0, T0, T0]) == [True, True, True]
    assert not limiter.check("ann", "sixth", T0).allowed


def test_repeats_are_tracked_per_player(limiter: ChatRateLimiter) -> None:
    """SPEC §6: per player — two players may each say the same thing."""
    for player in ("ann", "bob", "cat"):
        assert limiter.check(player, "hi", T0).allowed
    assert limiter.check("ann", "hi", T0 + 1).allowed
    assert limiter.check("bob", "hi", T0 + 1).allowed


def test_forgetting_idle_players_keeps_their_limits_fair(limiter: ChatRateLimiter) -> None:
    """SPEC §6: memory housekeeping never lets a player exceed the limit."""
    send_distinct(limiter, "ann", [T0] * 5)
    limiter.forget_idle(T0 + 1)
    assert not limiter.check("ann", "still limited", T0 + 1).allowed
    limiter.forget_idle(T0 + 3600)
    assert len(limiter) == 0
    assert limiter.check("ann", "welcome back", T0 + 3600).allowed


# -- neutralising content -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<b>bold</b> move", "bold move"),
        ("<script>alert(1)</script>", "alert(1)"),
        ('<img src=x onerror="alert(1)">hi', "hi"),
        ('<a href="https://evil.example">click</a>', "click"),
        ("line<br/>break", "linebreak"),
    ],
)
def test_html_tags_are_removed(raw: str, shown: str) -> None:
    """SPEC §6: HTML tags are removed before relay."""
    assert sanitize(raw) == shown


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("fish & chips", "fish &amp; chips"),
        ('she said "hi"', "she said &quot;hi&quot;"),
        ("it's", "it&#x27;s"),
        ("&amp;", "&amp;"),
        ("&lt;b&gt;", "&lt;b&gt;"),
        ("a &#x2F; b", "a / b"),
    ],
)
def test_special_characters_are_escaped(raw: str, escaped: str) -> None:
    """SPEC §6: the entities `&lt; &gt; &amp; &quot; &#x27; &#x2F;` are decoded, then
    `& < > " '` are escaped, so a user who types `&amp;` sends `&amp;`, not `&amp;amp;`."""
    assert sanitize(raw) == escaped


@pytest.mark.parametrize(
    "raw",
    [
        "plain text",
        "fish & chips",
        "\"quoted\" and 'single'",
        "x < 3",
        "x > 3",
        "안녕하세요 🎉 — ça va?",
        "",
    ],
)
def test_text_without_tags_reads_the_same_once_unescaped(raw: str) -> None:
    """SPEC §6: escaping neutralises markup without changing what the reader sees."""
    shown = sanitize(raw)
    assert html.unescape(shown) == raw
    assert not any(ch in shown for ch in "<>\"'")


@pytest.mark.parametrize(
    "raw",
    [
        "x < 3 and y > 2",
        "I <3 you >.<",
        "1 < 2 > 0",
    ],
)
def test_comparisons_that_are_not_tags_are_kept(raw: str) -> None:
    """SPEC §6: only HTML *tags* are removed; `<` and `>` in ordinary text are escaped, so a
    message such as "x < 3 and y > 2" reaches readers intact."""
    shown = sanitize(raw)
    assert html.unescape(shown) == raw
    assert "<" not in shown
    assert ">" not in shown


def test_sanitized_output_never_contains_markup() -> None:
    """SPEC §6: no client renders markup from relayed content."""
    nasty = "<<script>script>alert(1)<</script>/script><svg/onload=alert(1)>\"'&"
    shown = sanitize(nasty)
    assert not any(ch in shown for ch in "<>\"'")

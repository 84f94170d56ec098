"""Rate limits on events that reach other players: fixed windows, one answer per window,
disconnect on sustained excess, bounded memory, and the churn notice throttle."""

from __future__ import annotations

import pytest

from spacesync.domain import limits
from spacesync.domain.limits import (
    EVENT_LIMITS,
    MAX_REFUSED,
    MAX_STRIKES,
    MOVE,
    KeyedLimits,
    NoticeThrottle,
    Rule,
    SocketLimits,
    Verdict,
)

RULE = Rule("test.rule", 3, 10.0, "tests")


def fill(state: SocketLimits, rule: Rule, now: float) -> None:
    for _ in range(rule.limit):
        assert state.admit(rule, now)
        state.record(rule, now)


def test_admit_does_not_count_and_record_does() -> None:
    state = SocketLimits()
    for _ in range(10):
        assert state.admit(RULE, 100.0)
    fill(state, RULE, 100.0)
    assert not state.admit(RULE, 100.0)


def test_window_resets_on_the_next_aligned_window() -> None:
    state = SocketLimits()
    fill(state, RULE, 101.0)
    assert not state.admit(RULE, 109.9)
    assert state.admit(RULE, 110.0)


def test_one_notify_per_window_then_quiet() -> None:
    state = SocketLimits()
    fill(state, RULE, 100.0)
    verdicts = [state.refuse(RULE, 100.0 + i / 10) for i in range(20)]
    assert verdicts[0] is Verdict.NOTIFY
    assert set(verdicts[1:]) == {Verdict.QUIET}
    assert state.refused_in_window(RULE, 101.0) == 20
    assert state.refuse(RULE, 110.0) is Verdict.NOTIFY  # a new window answers again


def test_sustained_excess_disconnects_after_max_strikes() -> None:
    state = SocketLimits()
    verdicts = [state.refuse(RULE, 10.0 * w) for w in range(MAX_STRIKES)]
    assert verdicts[:-1] == [Verdict.NOTIFY] * (MAX_STRIKES - 1)
    assert verdicts[-1] is Verdict.DISCONNECT


def test_strikes_need_consecutive_windows() -> None:
    state = SocketLimits()
    for w in range(3 * MAX_STRIKES):
        # every other window only: never disconnected by strikes
        assert state.refuse(RULE, 20.0 * w) is Verdict.NOTIFY


def test_too_many_refusals_disconnect_once() -> None:
    state = SocketLimits()
    verdicts = [state.refuse(RULE, 5.0) for _ in range(MAX_REFUSED + 10)]
    assert verdicts.count(Verdict.DISCONNECT) == 1
    assert verdicts[MAX_REFUSED - 1] is Verdict.DISCONNECT


def test_rules_have_separate_allowances_unless_shared() -> None:
    state = SocketLimits()
    jump = EVENT_LIMITS["player:jump"].socket
    fill(state, jump, 0.5)
    assert not state.admit(jump, 0.5)
    assert state.admit(EVENT_LIMITS["party:create"].socket, 0.5)
    assert EVENT_LIMITS["party:accept"].socket is EVENT_LIMITS["party:decline"].socket
    assert EVENT_LIMITS["party:join"].socket is EVENT_LIMITS["joinParty"].socket


def test_move_cap_and_reset() -> None:
    state = SocketLimits()
    assert all(state.hit_move(7.1) for _ in range(MOVE.limit))
    assert not state.hit_move(7.5)
    state.held_move = "newest"
    assert state.hit_move(8.0)  # next window
    assert state.held_move is None, "an accepted move supersedes the held one"


def test_retry_after_is_the_rest_of_the_window() -> None:
    assert RULE.retry_after(100.0) == 10
    assert RULE.retry_after(109.2) == 1
    assert RULE.retry_after(105.5) == 5


def test_table_names_are_fixed_and_limits_sane() -> None:
    rules = [r for lim in EVENT_LIMITS.values() for r in (lim.socket, lim.player) if r]
    rules += [MOVE, limits.JOIN_PLAYER, limits.INVITE_PAIR, limits.INVITE_TARGET]
    for rule in rules:
        assert rule.name.startswith("rateLimited."), rule
        assert rule.limit >= 3 and rule.window > 0
    # a burst of ten jumps (the official client's worst case) is never refused
    assert EVENT_LIMITS["player:jump"].socket.limit >= 10
    for event in ("player:move", "chat:message", "whisper:send", "party:message"):
        assert event not in EVENT_LIMITS  # moves are capped on the fast path; chat has its own


def test_keyed_limits_count_per_key_and_forget_old_windows() -> None:
    keyed = KeyedLimits(sweep_every=10**9)
    for _ in range(RULE.limit):
        assert keyed.hit(RULE, "victim", 1.0)
    assert not keyed.hit(RULE, "victim", 2.0)
    assert not keyed.admit(RULE, "victim", 2.0)
    assert keyed.hit(RULE, "other", 2.0)
    assert keyed.hit(RULE, "victim", 10.0)
    keyed.sweep(25.0)
    assert len(keyed) == 0


def test_keyed_count_says_how_full_the_window_is_and_when_it_ends() -> None:
    keyed = KeyedLimits(sweep_every=10**9)
    hits = [keyed.count(RULE, "ann", 12.5) for _ in range(RULE.limit + 1)]
    assert [h.allowed for h in hits] == [True] * RULE.limit + [False]
    assert [h.count for h in hits] == [1, 2, 3, 3]
    assert {h.retry_after for h in hits} == {8}  # the window [10, 20) ends in 7.5 s
    assert hits[0].window == 1 and hits[-1].window == -1  # a refusal is not counted
    assert not hits[0].shared


def test_keyed_give_back_returns_the_allowance_within_its_window_only() -> None:
    keyed = KeyedLimits(sweep_every=10**9)
    hits = [keyed.count(RULE, "ann", 1.0) for _ in range(RULE.limit)]
    refused = keyed.count(RULE, "ann", 1.0)
    keyed.give_back(refused)  # nothing was counted for it
    assert not keyed.admit(RULE, "ann", 1.0)
    keyed.give_back(hits[-1])  # its handler refused it after all
    assert keyed.count(RULE, "ann", 2.0).allowed
    assert not keyed.count(RULE, "ann", 2.0).allowed
    keyed.count(RULE, "ann", 11.0)
    keyed.give_back(hits[0])  # an older window: the new one is untouched
    assert keyed.count(RULE, "ann", 11.0).count == 2


def test_keyed_note_goes_on_from_the_cluster_count() -> None:
    """What Redis counted becomes the node's own count, should Redis then go away."""
    keyed = KeyedLimits(sweep_every=10**9)
    keyed.note(RULE, "ann", RULE.limit - 1, 1.0)
    assert keyed.count(RULE, "ann", 1.0).allowed
    assert not keyed.count(RULE, "ann", 1.0).allowed
    keyed.note(RULE, "bob", 1, 1.0)
    keyed.note(RULE, "bob", 0, 1.0)  # never lowered
    assert keyed.count(RULE, "bob", 1.0).count == 2
    keyed.note(RULE, "eve", 50, 1.0)
    assert keyed.count(RULE, "eve", 11.0).count == 1  # a new window starts afresh


def test_keyed_limits_sweep_by_themselves() -> None:
    keyed = KeyedLimits(sweep_every=100)
    for i in range(10_000):
        keyed.hit(RULE, f"k{i}", float(i))  # one key per second, windows of 10 s
    assert len(keyed) <= 200


def test_an_ordinary_visit_with_a_reload_is_announced_line_by_line() -> None:
    notices = NoticeThrottle(interval=15.0, burst=3)
    assert notices.change("s", "p", True, 0.0) == 0.0  # joined
    assert notices.change("s", "p", False, 3.0) == 0.0  # reloaded: left...
    assert notices.change("s", "p", True, 5.0) == 0.0  # ...and joined again
    assert notices.change("s", "p", False, 100.0) == 0.0  # a short stay still says "left"
    assert notices.change("other-space", "p", True, 100.0) == 0.0
    assert notices.change("s", "q", True, 100.0) == 0.0


@pytest.mark.parametrize("gap", [0.05, 1.0])
def test_churn_is_coalesced_and_the_last_word_is_where_the_player_is(gap: float) -> None:
    notices = NoticeThrottle(interval=15.0, burst=3)
    now, shown, waits = 0.0, [], []
    for cycle in range(30):
        for present in (True, False):
            when = notices.change("s", "p", present, now)
            if when == 0.0:
                shown.append(present)
            elif when is not None:
                waits.append(now + when)
            now += gap / 2
        if cycle == 29:
            notices.change("s", "p", True, now)  # ends in the space
    assert shown == [True, False, True]
    assert len(waits) == 1  # one deferred announcement, however long the churn
    assert notices.due("s", "p", waits[0]) is None  # back in: the space was told so already
    notices.change("s", "p", False, waits[0] + 1)
    later = notices.change("s", "p", False, waits[0] + 1)
    assert later is None  # leaving twice says nothing new


def test_a_deferred_departure_is_announced_when_due() -> None:
    notices = NoticeThrottle(interval=15.0, burst=3)
    for t, present in ((0.0, True), (1.0, False), (2.0, True)):
        assert notices.change("s", "p", present, t) == 0.0
    delay = notices.change("s", "p", False, 3.0)
    assert delay == pytest.approx(12.0)
    assert notices.change("s", "p", True, 4.0) is None  # waiting already
    assert notices.change("s", "p", False, 5.0) is None
    assert notices.due("s", "p", 15.0) is False  # gone: "left" is said once, when due
    assert notices.due("s", "p", 15.5) is None


def test_notice_throttle_forgets_old_entries() -> None:
    notices = NoticeThrottle(interval=15.0)
    for i in range(3000):
        notices.change("s", f"p{i}", True, float(i))
    assert len(notices) < 1100
    notices.sweep(10_000.0)
    assert len(notices) == 0

"""Which log events become Discord alerts, and what the alert looks like (SPEC §11)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import httpx
import pytest

from spacesync.integrations.discord import Alert, AlertPolicy, _retry_after, build_embed

T0 = 1_700_000_000.0
ERROR = logging.ERROR
WARN = logging.WARNING
INFO = logging.INFO


@pytest.fixture
def policy() -> AlertPolicy:
    return AlertPolicy()


def alerts(policy: AlertPolicy, events: list[tuple[str, int, float]]) -> list[float]:
    """The times at which the events alerted."""
    return [now for code, level, now in events if policy.consider(code, level, now) is not None]


# -- errors -------------------------------------------------------------------------------------


def test_an_error_alerts(policy: AlertPolicy) -> None:
    """SPEC §11: every `error`-level log sends a webhook message."""
    assert policy.consider("E4002", ERROR, T0) is not None


@pytest.mark.parametrize("code", ["E2005", "E3003", "E4001", "E4002", "E6003"])
def test_warn_and_info_outside_authentication_never_alert(policy: AlertPolicy, code: str) -> None:
    """SPEC §11: only error-level logs (and authentication bursts) alert."""
    for i in range(50):
        assert policy.consider(code, WARN, T0 + i) is None
        assert policy.consider(code, INFO, T0 + i) is None


def test_the_same_code_alerts_at_most_once_a_minute(policy: AlertPolicy) -> None:
    """SPEC §11: the same code alerts at most once a minute."""
    times = [T0, T0 + 1, T0 + 30, T0 + 59.9, T0 + 60.5, T0 + 61, T0 + 121]
    assert alerts(policy, [("E4002", ERROR, t) for t in times]) == [T0, T0 + 60.5, T0 + 121]


def test_different_codes_alert_independently(policy: AlertPolicy) -> None:
    """SPEC §11: the once-a-minute limit is per code."""
    events = [("E4002", ERROR, T0), ("E3003", ERROR, T0 + 1), ("E6003", ERROR, T0 + 2)]
    assert alerts(policy, events) == [T0, T0 + 1, T0 + 2]
    assert alerts(policy, [("E4002", ERROR, T0 + 3), ("E3003", ERROR, T0 + 4)]) == []


def test_suppressed_repeats_do_not_extend_the_quiet_minute(policy: AlertPolicy) -> None:
    """SPEC §11: a minute after an alert, the same code may alert again even if it kept firing."""
    events = [("E4001", ERROR, T0 + s) for s in range(0, 125, 5)]
    assert alerts(policy, events) == [T0, T0 + 60, T0 + 120]


def test_warnings_do_not_use_up_the_error_allowance(policy: AlertPolicy) -> None:
    """SPEC §11: a warn of a code does not stop its next error from alerting."""
    assert policy.consider("E4001", WARN, T0) is None
    assert policy.consider("E4001", ERROR, T0 + 1) is not None


# -- authentication failures ----------------------------------------------------------------------


def test_a_few_authentication_failures_do_not_alert(policy: AlertPolicy) -> None:
    """SPEC §11: authentication failures alert only when 10 or more happen within a minute."""
    assert alerts(policy, [("E1002", WARN, T0 + i) for i in range(9)]) == []


def test_ten_authentication_failures_within_a_minute_alert_once(policy: AlertPolicy) -> None:
    """SPEC §11: 10 or more within a minute ⇒ one alert per burst."""
    events = [("E1002", WARN, T0 + i * 2) for i in range(30)]
    fired = alerts(policy, events)
    assert fired == [T0 + 18], "the tenth failure alerts; the rest of the burst does not"


def test_failures_spread_beyond_a_minute_never_alert(policy: AlertPolicy) -> None:
    """SPEC §11: fewer than 10 in every minute ⇒ no alert, however many in total."""
    events = [("E1002", WARN, T0 + i * 7) for i in range(100)]
    assert alerts(policy, events) == []


def test_all_authentication_codes_count_towards_one_burst(policy: AlertPolicy) -> None:
    """SPEC §11: E1xxx codes are authentication failures; a mixed burst still alerts once."""
    codes = ["E1001", "E1002", "E1003", "E1004"] * 3
    events = [(code, WARN, T0 + i) for i, code in enumerate(codes)]
    assert alerts(policy, events) == [T0 + 9]


def test_authentication_errors_at_error_level_still_wait_for_a_burst(policy: AlertPolicy) -> None:
    """SPEC §11: authentication failures alert *only* as a burst, whatever their level."""
    assert alerts(policy, [("E1003", ERROR, T0 + i) for i in range(5)]) == []


def test_a_new_burst_after_a_quiet_spell_alerts_again(policy: AlertPolicy) -> None:
    """SPEC §11: one alert per burst — a later, separate burst alerts again."""
    first = [("E1002", WARN, T0 + i) for i in range(10)]
    second = [("E1002", WARN, T0 + 600 + i) for i in range(10)]
    assert alerts(policy, first + second) == [T0 + 9, T0 + 609]


def test_the_same_code_never_alerts_twice_within_a_minute_even_in_bursts(
    policy: AlertPolicy,
) -> None:
    """SPEC §11: the same code alerts at most once a minute — a second authentication burst
    starting as the first one ages out must not alert again within 60 s of the first alert."""
    first = [("E1002", WARN, T0 + i * 0.1) for i in range(10)]  # alerts at T0 + 0.9
    second = [("E1002", WARN, T0 + 60.5) for _ in range(10)]
    fired = alerts(policy, first + second)
    assert fired[0] == pytest.approx(T0 + 0.9)
    for earlier, later in itertools.pairwise(fired):
        assert later - earlier >= 60, f"two E1002 alerts {later - earlier:.1f} s apart"


def test_authentication_failures_do_not_mute_other_errors(policy: AlertPolicy) -> None:
    """SPEC §11: an auth burst and an unrelated error both alert."""
    assert alerts(policy, [("E1002", WARN, T0 + i * 0.1) for i in range(10)]) == [
        pytest.approx(T0 + 0.9)
    ]
    assert policy.consider("E4002", ERROR, T0 + 1) is not None


# -- the webhook message --------------------------------------------------------------------------


def _alert(**context: Any) -> Alert:
    return Alert("E4002", "Verification API unreachable", 1_700_000_000.123, context)


def test_embed_has_the_documented_shape() -> None:
    """SPEC §11: title, description, colour 15158332, code and timestamp fields, footer."""
    body = build_embed(_alert(), "node-a")
    assert list(body) == ["embeds"]
    assert len(body["embeds"]) == 1
    embed = body["embeds"][0]
    assert embed["title"] == "🚨 Socket Server Error"
    assert embed["description"] == "Verification API unreachable"
    assert embed["color"] == 15158332
    assert embed["fields"][0] == {"name": "Error Code", "value": "E4002"}
    assert embed["fields"][1] == {"name": "Timestamp", "value": "2023-11-14T22:13:20.123Z"}
    assert embed["footer"] == {"text": "node-a | spacesync"}


def test_embed_has_one_field_per_context_key() -> None:
    """SPEC §11: after code and timestamp, one field per context key, in order."""
    body = build_embed(_alert(socketId="sock-1", spaceId="space-1", playerId="p-1"), "node-a")
    fields = body["embeds"][0]["fields"]
    assert fields[2:] == [
        {"name": "socketId", "value": "sock-1"},
        {"name": "spaceId", "value": "space-1"},
        {"name": "playerId", "value": "p-1"},
    ]


def test_embed_field_values_are_text() -> None:
    """SPEC §11: context values of any type are shown as text."""
    body = build_embed(_alert(status=503, retried=True), "node-a")
    fields = {f["name"]: f["value"] for f in body["embeds"][0]["fields"]}
    assert fields["status"] == "503"
    assert fields["retried"] == "True"


def test_embed_stays_within_discord_limits() -> None:
    """SPEC §11: an alert must be deliverable, so it respects Discord's embed limits
    (description 4096, field value 1024, 25 fields)."""
    context = {f"key{i}": "v" * 5000 for i in range(40)}
    alert = Alert("E6003", "m" * 10_000, T0, context)
    embed = build_embed(alert, "node-a")["embeds"][0]
    assert len(embed["description"]) <= 4096
    assert len(embed["fields"]) <= 25
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert all(1 <= len(f["value"]) for f in embed["fields"])


# -- Discord's 429 --------------------------------------------------------------------------------


def _response(status: int = 429, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "https://discord.test"), **kwargs)


@pytest.mark.parametrize("seconds", [0.5, 1, 2.75, 30])
def test_retry_after_in_the_body_is_honoured(seconds: float) -> None:
    """SPEC §11: Discord's 429 `retry_after` (seconds) is honoured."""
    assert _retry_after(_response(json={"retry_after": seconds, "global": False})) == seconds


def test_retry_after_header_is_used_without_a_body() -> None:
    """SPEC §11: the Retry-After header says how long to wait when the body does not."""
    assert _retry_after(_response(headers={"Retry-After": "3"})) == 3.0
    assert (
        _retry_after(_response(json={"message": "slow down"}, headers={"Retry-After": "2"})) == 2.0
    )


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(_response(), id="no body no header"),
        pytest.param(_response(content=b"<html>"), id="html body"),
        pytest.param(_response(json={"retry_after": "soon"}), id="non-numeric"),
        pytest.param(_response(json=[1, 2]), id="list body"),
        pytest.param(
            _response(headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), id="date"
        ),
    ],
)
def test_unreadable_retry_after_still_waits_a_little(response: httpx.Response) -> None:
    """SPEC §11: a 429 is always honoured with some pause, even when its wait is unreadable."""
    wait = _retry_after(response)
    assert 0 < wait <= 60


def test_retry_after_is_never_negative_or_endless() -> None:
    """SPEC §11: honouring retry_after never blocks alerting forever, nor goes negative."""
    assert _retry_after(_response(json={"retry_after": -5})) >= 0
    assert _retry_after(_response(json={"retry_after": 10**9})) <= 60

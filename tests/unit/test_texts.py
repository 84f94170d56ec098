"""The message catalog: the same keys and parameters in every language, every text renders, the
Korean texts are Korean, and a text asked for wrongly never fails in front of a client."""

from __future__ import annotations

import logging
import re

import pytest

from spacesync import texts
from spacesync.domain import limits
from spacesync.domain.chat import ChatRateLimiter
from spacesync.domain.identity import NicknameError, clean_nickname
from spacesync.texts import (
    BARE_ERROR_KEYS,
    DURATION_SPECS,
    RATE_LIMIT_KEYS,
    TEXTS,
    Catalog,
    CatalogError,
    format_duration,
    parameters,
)

EN = TEXTS["en"]
KO = TEXTS["ko"]
ALL = [(locale, key) for locale in texts.LOCALES for key in TEXTS[locale]]

HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
LATIN_WORD = re.compile(r"[A-Za-z]+")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")

WIRE_WORDS = frozenset(
    {
        "direction",
        "up",
        "down",
        "left",
        "right",
        "type",
        "message",
        "whisper",
        "party",
        "avatarConfig",
        "classic",
        "custom",
        "true",
        "false",
    }
)
"""Protocol names and values the Korean texts about malformed payloads quote as they are."""

LANGUAGE_FREE = frozenset({"error.input.field_detail"})
"""Texts made of parameters and punctuation only."""


def sample(name: str, spec: str) -> object:
    """A value for a parameter: a number for durations and limits, a word otherwise."""
    if spec in DURATION_SPECS or name == "limit":
        return 90
    return f"<{name}>"


def samples(template: str) -> dict[str, object]:
    return {name: sample(name, spec) for name, spec in parameters(template).items()}


# -- both languages say the same things -----------------------------------------------------


def test_every_locale_has_exactly_the_english_keys() -> None:
    for locale in texts.LOCALES:
        assert set(TEXTS[locale]) == set(EN), locale


@pytest.mark.parametrize("key", sorted(EN))
def test_parameters_are_the_same_in_every_locale(key: str) -> None:
    """Same names and same duration specs: the code fills a text without knowing the
    language, so a parameter only one language uses would be missing in the other."""
    expected = parameters(EN[key])
    for locale in texts.LOCALES:
        assert parameters(TEXTS[locale][key]) == expected, (locale, key)


@pytest.mark.parametrize(("locale", "key"), ALL)
def test_every_text_renders_with_its_parameters(locale: str, key: str) -> None:
    catalog = Catalog(locale, strict=True)
    template = TEXTS[locale][key]
    for name, spec in parameters(template).items():
        assert name.isidentifier(), (key, name)  # no attribute or index lookups
        assert spec in ("", *DURATION_SPECS), (key, spec)
    rendered = catalog.text(key, **samples(template))
    assert rendered.strip() == rendered and rendered
    assert "{" not in rendered and "}" not in rendered


def test_keys_are_stable_dotted_names() -> None:
    for key in EN:
        assert re.fullmatch(r"(sender|notice|error)(\.[a-z_]+)+", key), key


# -- each language is itself -----------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(EN))
def test_english_texts_have_no_hangul(key: str) -> None:
    assert not HANGUL.search(EN[key])


@pytest.mark.parametrize("key", sorted(KO))
def test_korean_texts_are_korean(key: str) -> None:
    """No English left where a translation belongs. Only the texts about malformed payloads
    may quote protocol names (``direction``, ``avatarConfig.type``...)."""
    text = PLACEHOLDER.sub("", KO[key])
    words = set(LATIN_WORD.findall(text))
    if key.startswith("error.input."):
        assert words <= WIRE_WORDS, (key, words - WIRE_WORDS)
    else:
        assert not words, (key, words)
    if key not in LANGUAGE_FREE:
        assert HANGUL.search(text), key
        assert KO[key] != EN[key], key


def test_korean_names_are_followed_by_nim_not_by_a_particle() -> None:
    """이/가, 을/를 depend on the name's last syllable; 님 reads right after any name."""
    for key, text in KO.items():
        for name in ("nickname", "moderator"):
            for match in re.finditer(r"\{" + name + r"\}(.)", text):
                assert match.group(1) in "님'", (key, text)


def test_the_system_sender_is_a_name_no_player_can_take() -> None:
    """Players cannot pose as the system in either language: both names are reserved."""
    assert Catalog("en").system_sender() == "System"
    assert Catalog("ko").system_sender() == "시스템"
    for locale in texts.LOCALES:
        with pytest.raises(NicknameError):
            clean_nickname(Catalog(locale).system_sender())


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "en", "ko"),
    [
        (0, "0 seconds", "0초"),
        (1, "1 second", "1초"),
        (0.2, "1 second", "1초"),
        (5, "5 seconds", "5초"),
        (59.2, "1 minute", "1분"),
        (60, "1 minute", "1분"),
        (61, "1 minute 1 second", "1분 1초"),
        (150, "2 minutes 30 seconds", "2분 30초"),
        (3_599, "59 minutes 59 seconds", "59분 59초"),
        (3_600, "1 hour", "1시간"),
        (3_601, "1 hour 1 minute", "1시간 1분"),
        (5_400, "1 hour 30 minutes", "1시간 30분"),
        (7_199, "2 hours", "2시간"),
        (86_399, "1 day", "1일"),
        (90_000, "1 day 1 hour", "1일 1시간"),
        (7 * 86_400, "7 days", "7일"),
    ],
)
def test_durations_read_naturally(seconds: float, en: str, ko: str) -> None:
    """At most two units, the smaller rounded up: a wait is never announced shorter."""
    assert format_duration(seconds, "en") == en
    assert format_duration(seconds, "ko") == ko


def test_minutes_and_seconds_specs() -> None:
    en, ko = Catalog("en", strict=True), Catalog("ko", strict=True)
    muted = {"nickname": "Ann", "moderator": "Bo", "minutes": 90}
    assert en.text("notice.muted_for", **muted) == "Bo muted Ann for 1 hour 30 minutes."
    assert ko.text("notice.muted_for", **muted) == "Bo님이 Ann님을 1시간 30분 동안 음소거했습니다."
    assert en.text("error.rate_limited.join", seconds=1) == "Too many joins. Wait 1 second."
    assert ko.text("error.rate_limited.join", seconds=3) == (
        "입장 요청이 너무 많습니다. 3초 후에 다시 시도해 주세요."
    )
    assert ko.text("error.muted_for", seconds=125) == (
        "음소거 중이라 앞으로 2분 5초 동안 메시지를 보낼 수 없습니다."
    )


def test_a_reason_is_added_only_when_given() -> None:
    ko = Catalog("ko", strict=True)
    notice = ko.text("notice.kicked", nickname="Ann", moderator="Bo")
    assert ko.with_reason(notice, None) == notice
    assert ko.with_reason(notice, "") == notice
    assert ko.with_reason(notice, "도배") == f"{notice} (사유: 도배)"
    assert Catalog("en").with_reason("Bo banned Ann from the space.", "spam") == (
        "Bo banned Ann from the space. Reason: spam"
    )


# -- English keeps the wording spacesync sends today ------------------------------------------


def _rules() -> list[limits.Rule]:
    return [value for value in vars(limits).values() if isinstance(value, limits.Rule)]


def test_every_rate_limit_rule_has_its_text() -> None:
    names = {rule.name for rule in _rules()}
    assert names, "no rules found"
    assert names <= set(RATE_LIMIT_KEYS), names - set(RATE_LIMIT_KEYS)
    assert set(RATE_LIMIT_KEYS.values()) <= set(EN)


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule.name)
@pytest.mark.parametrize("wait", [1, 7])
def test_rate_limit_texts_match_the_current_english_wording(rule: limits.Rule, wait: int) -> None:
    unit = "second" if wait == 1 else "seconds"
    current = f"Too many {rule.label}. Wait {wait} {unit}."
    assert Catalog("en", strict=True).rate_limited(rule.name, wait) == current
    assert (
        Catalog("ko", strict=True)
        .rate_limited(rule.name, wait)
        .endswith(f"{wait}초 후에 다시 시도해 주세요.")
    )


def test_an_unknown_rule_gets_the_generic_text() -> None:
    assert Catalog("en").rate_limited("rateLimited.somethingNew", 2) == (
        "Too many requests. Wait 2 seconds."
    )


def test_chat_limit_texts_match_the_current_english_wording() -> None:
    limiter = ChatRateLimiter(limit=1, window=5.0)
    assert limiter.check("p", "hi", 100.0).allowed
    refused = limiter.check("p", "hello", 100.0)
    en = Catalog("en", strict=True)
    assert refused.reason == en.text("error.chat.too_fast", seconds=refused.retry_after)
    repeats = ChatRateLimiter()
    for now in (1.0, 2.0):
        assert repeats.check("p", "same", now).allowed
    assert repeats.check("p", "same", 3.0).reason == en.text("error.chat.repeated")


def test_the_error_banner_the_flowspace_client_picks() -> None:
    """The client sorts bare ``error`` messages by wording: "session"/"expired" show its
    session-expired banner, "connection" its cannot-reach-the-server banner, anything else
    is shown verbatim. Korean texts are always shown verbatim; in English only the invalid
    session is sorted. The duplicate-session text avoids "connection", or the player would
    read "cannot reach the server" instead of why this tab was closed."""

    def banner(message: str) -> str:
        if "session" in message or "expired" in message:
            return "session_invalid"
        if "connection" in message:
            return "connection_failed"
        return "verbatim"

    assert BARE_ERROR_KEYS <= set(EN)
    sorted_in_english = {"error.session.invalid": "session_invalid"}
    for key in BARE_ERROR_KEYS:
        assert banner(EN[key]) == sorted_in_english.get(key, "verbatim"), key
        assert banner(KO[key]) == "verbatim", key


# -- mistakes in the code ---------------------------------------------------------------------


def test_strict_mode_finds_every_kind_of_mistake() -> None:
    strict = Catalog("ko", strict=True)
    with pytest.raises(CatalogError, match="unknown text key"):
        strict.text("notice.nothing")
    with pytest.raises(CatalogError, match="missing parameter"):
        strict.text("notice.joined")
    with pytest.raises(CatalogError, match="unexpected parameters"):
        strict.text("notice.joined", nickname="Ann", nickame="Ann")
    with pytest.raises(CatalogError, match="duration must be a number"):
        strict.text("error.chat.too_fast", seconds="5")
    with pytest.raises(CatalogError, match="no texts for locale"):
        Catalog("fr")


def test_a_mistake_never_reaches_a_client_as_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside tests the client still gets a readable answer, in English, and the mistake is
    logged once however often it happens."""
    texts._reported.clear()
    ko = Catalog("ko")
    with caplog.at_level(logging.ERROR, logger="spacesync"):
        for _ in range(3):
            assert ko.text("notice.joined") == "… joined"
            assert ko.text("notice.joined", nickname="Ann", extra=1) == "Ann joined"
            assert ko.text("error.chat.too_fast", seconds="soon") == (
                "You are sending messages too fast. Wait soon."
            )
            assert ko.text("notice.nothing", nickname="Ann") == "notice.nothing"
    problems = [r for r in caplog.records if r.getMessage().startswith("Message catalog")]
    assert len(problems) == 4
    assert all(getattr(r, "code", None) == "E6003" for r in problems)


def test_the_shared_catalog_is_one_per_locale() -> None:
    assert texts.catalog("ko") is texts.catalog("ko")
    assert texts.catalog().locale == "en"
    assert not texts.catalog("en").strict

"""LOCALE: the language of the texts players read, checked when the server starts."""

from __future__ import annotations

import pytest

from spacesync import texts
from spacesync.config import LOCALES, ConfigError, Settings, load_settings


def test_english_by_default() -> None:
    """Unset or blank, the texts are English, as they were before the setting existed."""
    assert load_settings({}).locale == "en"
    assert load_settings({"LOCALE": "  "}).locale == "en"
    assert Settings().locale == "en"


@pytest.mark.parametrize(
    ("raw", "expected"), [("en", "en"), ("ko", "ko"), ("KO", "ko"), (" En ", "en"), ("kO", "ko")]
)
def test_known_locales_in_any_case(raw: str, expected: str) -> None:
    assert load_settings({"LOCALE": raw}).locale == expected


@pytest.mark.parametrize("raw", ["fr", "ko-KR", "ko_KR.UTF-8", "english", "e n", "한국어"])
def test_other_values_stop_start_up(raw: str) -> None:
    """A language the server has no texts for is a configuration mistake, not a silent
    fallback to English."""
    with pytest.raises(ConfigError, match="LOCALE must be one of en, ko"):
        load_settings({"LOCALE": raw})


def test_every_accepted_locale_has_a_catalog() -> None:
    """The setting accepts exactly the languages the catalog has."""
    assert set(LOCALES) == set(texts.LOCALES) == set(texts.TEXTS)
    for locale in LOCALES:
        assert texts.Catalog(locale).locale == locale

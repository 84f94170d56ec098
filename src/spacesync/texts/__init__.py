"""Every text a player can read that the server writes: system notices, the name system messages
are sent under, and error messages, in English and Korean (``LOCALE``).

The handlers ask for a text by a stable key with named parameters, never by its wording, so a
deployment picks its language with one setting and a wording can change in one place. A key
that does not exist or a parameter that is missing is a mistake in the code: the tests find it
(:class:`Catalog` with ``strict=True``), and in production the player still gets a readable
text (the English one, or the key) while the mistake is logged once, instead of the handler
failing in front of a client.

Parameters are inserted as given: nicknames and reasons must already be in their neutralised
form, as everywhere else the server relays them. ``{name:seconds}`` and ``{name:minutes}``
render a number as a duration in the catalog's language ("1 hour 30 minutes", "1시간 30분").
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from ..observability.logging import log
from . import en, ko

LOCALES: tuple[str, ...] = ("en", "ko")
DEFAULT_LOCALE = "en"

TEXTS: dict[str, Mapping[str, str]] = {"en": en.TEXTS, "ko": ko.TEXTS}
"""The catalog of each locale; English is the reference and the fallback."""

DURATION_SPECS = ("seconds", "minutes")
"""Format specs that turn a number into a spoken duration; any other spec is Python's own."""

RATE_LIMIT_KEYS: dict[str, str] = {
    "rateLimited.move": "error.rate_limited.move",
    "rateLimited.jump": "error.rate_limited.jump",
    "rateLimited.profile": "error.rate_limited.profile",
    "rateLimited.profilePlayer": "error.rate_limited.profile",
    "rateLimited.partyCreate": "error.rate_limited.party_create",
    "rateLimited.partyInvite": "error.rate_limited.party_invite",
    "rateLimited.invitePair": "error.rate_limited.party_invite_target",
    "rateLimited.inviteTarget": "error.rate_limited.party_invite_target",
    "rateLimited.partyAnswer": "error.rate_limited.party_answer",
    "rateLimited.partyLeave": "error.rate_limited.party_leave",
    "rateLimited.partyZone": "error.rate_limited.party_zone",
    "rateLimited.proximity": "error.rate_limited.proximity",
    "rateLimited.join": "error.rate_limited.join",
    "rateLimited.joinPlayer": "error.rate_limited.join",
    "rateLimited.leave": "error.rate_limited.leave",
    "rateLimited.leavePlayer": "error.rate_limited.leave",
    "rateLimited.reaction": "error.rate_limited.reaction",
    "rateLimited.recording": "error.rate_limited.recording",
    "rateLimited.spotlight": "error.rate_limited.spotlight",
    "rateLimited.object": "error.rate_limited.object",
    "rateLimited.admin": "error.rate_limited.admin",
    "rateLimited.announce": "error.rate_limited.announce",
}
"""The text answering each rate-limit rule (by ``Rule.name``); a rule without one gets
``error.rate_limited.generic``. Several rules over the same events share a text."""

BARE_ERROR_KEYS: frozenset[str] = frozenset(
    {
        "error.session.invalid",
        "error.session.required",
        "error.session.duplicate",
        "error.join.failed",
        "error.join.banned",
        "error.kicked",
        "error.kicked.banned",
        "error.unavailable",
        "error.internal",
        "error.event_name",
        "error.profile.nickname_taken",
        "error.rate_limited.disconnected",
    }
)
"""Texts sent on the bare ``error`` event. The FlowSpace client sorts those by their wording
(a message containing "session" or "expired" shows its "session expired" banner, one containing
"connection" its "cannot reach the server" banner, any other is shown as it is), so their
English wording decides which banner a player sees; see the tests."""

_UNITS: dict[str, tuple[tuple[str, str], ...]] = {
    # (singular, plural) per unit: day, hour, minute, second.
    "en": (("day", "days"), ("hour", "hours"), ("minute", "minutes"), ("second", "seconds")),
    "ko": (("일", "일"), ("시간", "시간"), ("분", "분"), ("초", "초")),
}
_UNIT_SEPARATOR = {"en": " ", "ko": ""}


class CatalogError(LookupError):
    """A text asked for with an unknown key or without its parameters (a mistake in the code)."""


@dataclass(frozen=True, slots=True)
class Text:
    """A text by key and parameters, not yet in any language.

    Rules that refuse something (payload validation, parties, the chat limit) know *what* to
    say but not to whom or in which language; they return or raise one of these, and the
    handler that answers the player renders it with the node's :class:`Catalog`. A parameter
    may itself be a :class:`Text` (a nickname rule's complaint inside a field's), rendered in
    the same language. ``str()`` is the English text, for logs, which stay in English.
    """

    key: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return catalog(DEFAULT_LOCALE).render(self)


class TextError(Exception):
    """An error whose message a player reads: it carries a :class:`Text` (``.text``) for the
    reply, rendered in the node's language, and its ``str()`` is the English text for logs."""

    def __init__(self, key: str, /, **params: Any) -> None:
        self.text = Text(key, params)
        super().__init__(str(self.text))

    @classmethod
    def of(cls, text: Text) -> Self:
        """The same complaint as another error's (a nickname rule's, say) under this class."""
        return cls(text.key, **text.params)


def duration_parts(seconds: float) -> list[tuple[int, int]]:
    """``seconds`` as at most two (amount, unit) pairs, unit 0 = days ... 3 = seconds.

    Two units read naturally and are precise enough for a wait or a mute. The smaller unit is
    rounded up, so a wait is never announced shorter than it is: 3,601 s is "1 hour 1 minute"
    and 86,399 s is "1 day".
    """
    total = max(0, math.ceil(seconds))
    if total < 60:
        return [(total, 3)]
    if total < 3_600:
        minutes, rest = divmod(total, 60)
        return [(minutes, 2)] + ([(rest, 3)] if rest else [])
    if total < 86_400:
        hours, rest = divmod(total, 3_600)
        minutes = math.ceil(rest / 60)
        if minutes == 60:
            hours, minutes = hours + 1, 0
        if hours == 24:
            return [(1, 0)]
        return [(hours, 1)] + ([(minutes, 2)] if minutes else [])
    days, rest = divmod(total, 86_400)
    hours = math.ceil(rest / 3_600)
    if hours == 24:
        days, hours = days + 1, 0
    return [(days, 0)] + ([(hours, 1)] if hours else [])


def format_duration(seconds: float, locale: str = DEFAULT_LOCALE) -> str:
    """``seconds`` in words: "1 hour 30 minutes", "5 seconds"; "1시간 30분", "5초"."""
    units = _UNITS.get(locale, _UNITS[DEFAULT_LOCALE])
    separator = _UNIT_SEPARATOR.get(locale, " ")
    words = []
    for amount, unit in duration_parts(seconds):
        singular, plural = units[unit]
        words.append(f"{amount}{separator}{singular if amount == 1 else plural}")
    return " ".join(words)


def parameters(template: str) -> dict[str, str]:
    """The named parameters of a template and their format specs (``{seconds:seconds}`` gives
    ``{"seconds": "seconds"}``)."""
    found: dict[str, str] = {}
    for _literal, name, spec, _conversion in string.Formatter().parse(template):
        if name is not None:
            found[name] = spec or ""
    return found


class _Formatter(string.Formatter):
    """``str.format`` with the duration specs. ``strict``: a missing or unused parameter, or a
    duration that is not a number, raises :class:`CatalogError`; otherwise a missing parameter
    reads "…" and the rest is rendered as well as it can be."""

    def __init__(self, locale: str, *, strict: bool) -> None:
        super().__init__()
        self.locale = locale
        self.strict = strict

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        if self.strict:
            raise CatalogError(f"missing parameter {key!r}")
        return "…"

    def check_unused_args(
        self, used_args: set[int | str], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        unused = set(kwargs) - used_args
        if unused and self.strict:
            raise CatalogError(f"unexpected parameters {sorted(unused)}")

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec in DURATION_SPECS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                if self.strict:
                    raise CatalogError(f"a duration must be a number, got {value!r}")
                return str(value)
            scale = 60 if format_spec == "minutes" else 1
            return format_duration(value * scale, self.locale)
        return super().format_field(value, format_spec)


_reported: set[tuple[str, str, str]] = set()


def _report_once(locale: str, key: str, problem: str) -> None:
    """Log a mistake in the code once per locale, key and kind, not once per message sent."""
    if (locale, key, problem) in _reported:
        return
    _reported.add((locale, key, problem))
    log.error("E6003", f"Message catalog: {problem}", locale=locale, key=key)


class Catalog:
    """The texts of one locale: ``Catalog("ko").text("notice.joined", nickname="Ann")``.

    Outside ``strict`` mode it never raises for a key or its parameters: a client must not
    lose an answer because a text was asked for wrongly, so it gets the English text (or, for a
    key that does not exist at all, the key) and the mistake is logged once. ``strict`` (tests)
    raises :class:`CatalogError` instead, also for parameters the text does not use.
    """

    __slots__ = ("_exact", "_texts", "locale", "strict")

    def __init__(self, locale: str = DEFAULT_LOCALE, *, strict: bool = False) -> None:
        locale = locale.strip().lower()
        if locale not in TEXTS:
            raise CatalogError(f"no texts for locale {locale!r}; choose one of {LOCALES}")
        self.locale = locale
        self.strict = strict
        self._texts = TEXTS[locale]
        self._exact = _Formatter(locale, strict=True)

    def __repr__(self) -> str:
        return f"Catalog({self.locale!r})"

    def has(self, key: str) -> bool:
        return key in self._texts

    def text(self, key: str, /, **params: Any) -> str:
        """The text under ``key`` with ``params`` filled in."""
        template = self._texts.get(key)
        if template is None:
            if self.strict:
                raise CatalogError(f"unknown text key {key!r} for locale {self.locale!r}")
            _report_once(self.locale, key, "unknown key")
            return self._fallback(key, params)
        try:
            return self._exact.format(template, **params)
        except (CatalogError, KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            if self.strict:
                if isinstance(exc, CatalogError):
                    raise
                raise CatalogError(f"text {key!r} cannot be formatted: {exc}") from exc
            _report_once(self.locale, key, f"parameters do not fit the text ({exc})")
        return self._fallback(key, params)

    @staticmethod
    def _fallback(key: str, params: Mapping[str, Any]) -> str:
        """The English text, lenient about parameters; the key if there is no such text."""
        template = TEXTS[DEFAULT_LOCALE].get(key)
        if template is None:
            return key
        try:
            return _Formatter(DEFAULT_LOCALE, strict=False).format(template, **params)
        except Exception:
            return template

    def render(self, text: Text) -> str:
        """``text`` in this catalog's language, nested texts among its parameters included."""
        params = {
            name: self.render(value) if isinstance(value, Text) else value
            for name, value in text.params.items()
        }
        return self.text(text.key, **params)

    def system_sender(self) -> str:
        """The name system messages are sent under (``senderNickname`` / ``senderName``)."""
        return self.text("sender.system")

    def rate_limited(self, rule_name: str, seconds: int) -> str:
        """The answer to an event refused by the rate-limit rule named ``rule_name``."""
        key = RATE_LIMIT_KEYS.get(rule_name, "error.rate_limited.generic")
        return self.text(key, seconds=seconds)

    def with_reason(self, notice: str, reason: str | None) -> str:
        """``notice`` followed by the moderator's reason, when one was given."""
        if not reason:
            return notice
        return self.text("notice.with_reason", notice=notice, reason=reason)

    def duration(self, seconds: float) -> str:
        """``seconds`` in words, in this catalog's language."""
        return format_duration(seconds, self.locale)


_catalogs: dict[str, Catalog] = {}


def catalog(locale: str = DEFAULT_LOCALE) -> Catalog:
    """The shared (non-strict) catalog of ``locale``."""
    found = _catalogs.get(locale)
    if found is None:
        found = _catalogs[locale] = Catalog(locale)
    return found


__all__ = [
    "BARE_ERROR_KEYS",
    "DEFAULT_LOCALE",
    "LOCALES",
    "RATE_LIMIT_KEYS",
    "TEXTS",
    "Catalog",
    "CatalogError",
    "Text",
    "TextError",
    "catalog",
    "duration_parts",
    "format_duration",
    "parameters",
]

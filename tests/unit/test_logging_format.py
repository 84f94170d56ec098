"""Structured JSON log lines and the alert hand-off (SPEC §11)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from spacesync.observability.logging import (
    AlertHandler,
    EventLog,
    JsonFormatter,
    configure_logging,
)

T0 = 1_700_000_000.25
KEYS = {"timestamp", "level", "code", "message", "context"}


def record(
    level: int = logging.INFO,
    message: str = "hello",
    *,
    name: str = "spacesync",
    code: str | None = "I2001",
    context: dict[str, Any] | None = None,
    exc_info: Any = None,
    args: tuple[Any, ...] = (),
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, message, args, exc_info)
    rec.created = T0
    if code is not None:
        rec.code = code
    if context is not None:
        rec.context = context
    return rec


def formatted(rec: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter("node-a").format(rec)
    assert "\n" not in line, "one log line is one line"
    data = json.loads(line)
    assert isinstance(data, dict)
    return data


# -- the line -----------------------------------------------------------------------------------


def test_a_line_is_one_json_object_with_the_documented_keys() -> None:
    """SPEC §11: {timestamp, level, code, message, context}."""
    data = formatted(record(code="E2001", message="Client connected"))
    assert set(data) == KEYS
    assert data["code"] == "E2001"
    assert data["message"] == "Client connected"
    assert isinstance(data["context"], dict)


def test_timestamp_is_iso_8601_utc_with_milliseconds() -> None:
    """SPEC §11: timestamp is ISO 8601."""
    data = formatted(record())
    assert data["timestamp"] == "2023-11-14T22:13:20.250Z"
    parsed = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    assert parsed.timestamp() == T0


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
    ],
)
def test_levels_use_the_documented_names(level: int, name: str) -> None:
    """SPEC §11: level is one of error | warn | info | debug."""
    assert formatted(record(level))["level"] == name


def test_context_carries_socket_space_and_player() -> None:
    """SPEC §11: context holds socketId, spaceId, playerId."""
    context = {"socketId": "sock-1", "spaceId": "space-1", "playerId": "p-1"}
    data = formatted(record(context=context))
    for key, value in context.items():
        assert data["context"][key] == value


def test_multi_line_messages_stay_on_one_line() -> None:
    """SPEC §11: no plain-text lines — a message with newlines is still one JSON line."""
    data = formatted(record(message="first\nsecond\r\nthird"))
    assert data["message"] == "first\nsecond\r\nthird"


def test_message_arguments_are_applied() -> None:
    """SPEC §11: `message` is the final text."""
    assert formatted(record(message="%s joined %s", args=("Ann", "space-1")))["message"] == (
        "Ann joined space-1"
    )


def test_broken_message_arguments_do_not_break_the_line() -> None:
    """SPEC §11: every line is JSON, even when a message cannot be formatted."""
    data = formatted(record(message="%d players", args=("many",)))
    assert "players" in data["message"]


def test_traceback_goes_into_context_exception() -> None:
    """SPEC §11: no tracebacks outside the JSON; a traceback goes into context.exception."""
    try:
        raise RuntimeError("handler exploded")
    except RuntimeError:
        info = sys.exc_info()
    data = formatted(record(logging.ERROR, "Handler failure", code="E3003", exc_info=info))
    exception = data["context"]["exception"]
    assert "RuntimeError" in exception
    assert "handler exploded" in exception
    assert "Traceback" in exception


def test_unserialisable_context_values_are_shown_as_text() -> None:
    """SPEC §11: every line is valid JSON, whatever the context holds."""
    data = formatted(record(context={"error": ValueError("bad"), "obj": object(), "n": 3}))
    assert "ValueError" in data["context"]["error"]
    assert isinstance(data["context"]["obj"], str)
    assert data["context"]["n"] == 3


@pytest.mark.parametrize(
    ("name", "level", "prefix"),
    [
        ("engineio.server", logging.INFO, "I"),
        ("socketio.server", logging.ERROR, "E"),
        ("aiohttp.access", logging.WARNING, "E"),
        ("asyncio", logging.ERROR, "E"),
        ("some.library", logging.INFO, "I"),
    ],
)
def test_library_records_get_a_code_too(name: str, level: int, prefix: str) -> None:
    """SPEC §11: every line has a code — library records included (info may use I-codes)."""
    data = formatted(record(level, "library says", name=name, code=None))
    assert re.fullmatch(r"[EI]\d{4}", data["code"])
    assert data["code"].startswith(prefix)


def test_error_codes_are_kept() -> None:
    """SPEC §11: spacesync's own codes appear as given."""
    for code in ["E1001", "E2003", "E3002", "E4004", "E6002"]:
        assert formatted(record(logging.WARNING, code=code))["code"] == code


# -- where lines go ------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    libraries = {
        name: logging.getLogger(name).level
        for name in ("engineio", "socketio", "aiohttp", "asyncio", "httpx", "httpcore")
    }
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)
    logging.captureWarnings(False)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


@pytest.mark.usefixtures("restore_logging")
def test_info_goes_to_stdout_and_problems_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """SPEC §11: info and debug on stdout, warn and error on stderr."""
    configure_logging("info", "node-a")
    log = EventLog("spacesync.test")
    log.info("I2001", "joined", spaceId="s-1")
    log.warn("E1002", "verification failed", spaceId="s-1")
    log.error("E4002", "app unreachable", spaceId="s-1")
    out, err = capsys.readouterr()
    assert [(line["level"], line["code"]) for line in _lines(out)] == [("info", "I2001")]
    assert [(line["level"], line["code"]) for line in _lines(err)] == [
        ("warn", "E1002"),
        ("error", "E4002"),
    ]
    assert _lines(out)[0]["context"]["spaceId"] == "s-1"


@pytest.mark.usefixtures("restore_logging")
def test_debug_lines_appear_only_at_debug_level(capsys: pytest.CaptureFixture[str]) -> None:
    """SPEC §1.1/§11: `debug` is written only when the level is debug."""
    log = EventLog("spacesync.test")
    configure_logging("info", "node-a")
    log.debug("I0001", "hidden")
    assert capsys.readouterr().out == ""
    configure_logging("debug", "node-a")
    log.debug("I0001", "shown")
    out, err = capsys.readouterr()
    assert [line["message"] for line in _lines(out)] == ["shown"]
    assert err == ""


@pytest.mark.usefixtures("restore_logging")
def test_warn_level_hides_info(capsys: pytest.CaptureFixture[str]) -> None:
    """SPEC §1.1: LOG_LEVEL is the minimum level."""
    configure_logging("warn", "node-a")
    log = EventLog("spacesync.test")
    log.info("I2001", "hidden")
    log.warn("E3001", "shown")
    out, err = capsys.readouterr()
    assert out == ""
    assert [line["code"] for line in _lines(err)] == ["E3001"]


@pytest.mark.usefixtures("restore_logging")
def test_library_output_is_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    """SPEC §11: no plain-text lines — records from libraries are formatted the same way."""
    configure_logging("info", "node-a")
    logging.getLogger("aiohttp.server").error("Error handling request")
    logging.getLogger("asyncio").warning("Task was destroyed but it is pending!")
    out, err = capsys.readouterr()
    assert out == ""
    lines = _lines(err)
    assert len(lines) == 2
    assert all(set(line) == KEYS for line in lines)


# -- alert hand-off -----------------------------------------------------------------------------


@pytest.fixture
def sink_logger() -> Iterator[tuple[EventLog, list[logging.LogRecord]]]:
    seen: list[logging.LogRecord] = []
    logger = logging.getLogger("spacesync.alert-test")
    handler = AlertHandler(seen.append)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield EventLog("spacesync.alert-test"), seen
    logger.removeHandler(handler)
    logger.propagate = True


def test_errors_and_warnings_reach_the_alert_sink(
    sink_logger: tuple[EventLog, list[logging.LogRecord]],
) -> None:
    """SPEC §11: error-level logs (and authentication warnings) are considered for alerts."""
    log, seen = sink_logger
    log.info("I2001", "joined")
    log.warn("E1002", "verification failed")
    log.error("E4002", "app unreachable", spaceId="s-1")
    assert [vars(r)["code"] for r in seen] == ["E1002", "E4002"]
    assert vars(seen[1])["context"] == {"spaceId": "s-1"}


def test_a_failed_alert_never_alerts_itself(
    sink_logger: tuple[EventLog, list[logging.LogRecord]],
) -> None:
    """SPEC §11: a failed alert never logs an alert of its own."""
    log, seen = sink_logger
    log.error("E4004", "Discord alert delivery failed", no_alert=True)
    assert seen == []


def test_an_exception_is_kept_for_the_alert(
    sink_logger: tuple[EventLog, list[logging.LogRecord]],
) -> None:
    """SPEC §11: a traceback goes with the error record, not onto the terminal."""
    log, seen = sink_logger
    try:
        raise KeyError("missing")
    except KeyError as exc:
        log.error("E3003", "Handler failure", exc=exc)
    assert seen[0].exc_info is not None
    assert seen[0].exc_info[0] is KeyError

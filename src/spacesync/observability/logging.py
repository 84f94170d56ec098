"""Structured JSON logging with error codes (SPEC §11).

Every line is one JSON object: ``{timestamp, level, code, message, context}``. Info and debug go to
stdout, warn and error to stderr. Records from libraries (engineio, socketio, aiohttp, asyncio)
pass through the same formatter, so nothing plain-text ever reaches the terminal.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Codes given to records that come from libraries rather than from spacesync itself.
_LIBRARY_CODES = {
    "engineio": ("I2000", "E2005"),
    "socketio": ("I2000", "E2005"),
    "aiohttp": ("I2000", "E2005"),
}
_MAX_FIELD = 8000


def iso_now() -> str:
    return iso_from_timestamp(datetime.now(UTC).timestamp())


def iso_from_timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def _code_for(record: logging.LogRecord) -> str:
    code = getattr(record, "code", None)
    if isinstance(code, str):
        return code
    root = record.name.split(".", 1)[0]
    info_code, problem_code = _LIBRARY_CODES.get(root, ("I6000", "E6003"))
    return problem_code if record.levelno >= logging.WARNING else info_code


class JsonFormatter(logging.Formatter):
    """Formats a record as the single-line JSON object of SPEC §11."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        context: dict[str, Any] = {"node": self.node}
        extra = getattr(record, "context", None)
        if isinstance(extra, dict):
            context.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            context["exception"] = text[-_MAX_FIELD:]
        elif record.name.split(".", 1)[0] != "spacesync":
            context.setdefault("logger", record.name)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        line = {
            "timestamp": iso_from_timestamp(record.created),
            "level": LEVEL_NAMES.get(record.levelno, "info"),
            "code": _code_for(record),
            "message": message[:_MAX_FIELD],
            "context": context,
        }
        return orjson.dumps(line, default=_jsonable).decode()


class _LibraryErrorsAreWarnings(logging.Filter):
    """engineio/socketio report a client's protocol mistakes (a poll on a closed session, a bad
    packet) at error level with no exception; those are the client's problem, not an alert."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and not record.exc_info:
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class AlertHandler(logging.Handler):
    """Hands every error-level record (and authentication failures) to an alert sink."""

    def __init__(self, sink: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "no_alert", False):
            return
        try:
            self.sink(record)
        except Exception:  # pragma: no cover - alerting must never break logging
            self.handleError(record)


def configure_logging(level: str, node: str) -> None:
    """Route every logger in the process through the JSON formatter."""
    formatter = JsonFormatter(node)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowWarning())
    out.setFormatter(formatter)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(formatter)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(out)
    root.addHandler(err)
    root.setLevel(LEVEL_NUMBERS[level])
    # Library chatter below warning is noise for operators.
    for name in ("engineio", "socketio", "aiohttp", "asyncio", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, LEVEL_NUMBERS[level]))
    for name in ("engineio.server", "socketio.server"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(max(logging.WARNING, LEVEL_NUMBERS[level]))
        if not any(isinstance(f, _LibraryErrorsAreWarnings) for f in library.filters):
            library.addFilter(_LibraryErrorsAreWarnings())
    logging.captureWarnings(True)


def install_alert_handler(sink: Callable[[logging.LogRecord], None]) -> AlertHandler:
    handler = AlertHandler(sink)
    logging.getLogger().addHandler(handler)
    return handler


class EventLog:
    """The logger handlers use: ``log.warn("E1002", "Session verification failed", spaceId=…)``."""

    def __init__(self, name: str = "spacesync") -> None:
        self._logger = logging.getLogger(name)

    def _log(
        self,
        level: int,
        code: str,
        message: str,
        exc: BaseException | None = None,
        no_alert: bool = False,
        **context: Any,
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        self._logger.log(
            level,
            message,
            exc_info=exc_info,
            extra={"code": code, "context": context, "no_alert": no_alert},
        )

    def debug(self, code: str, message: str, **context: Any) -> None:
        self._log(logging.DEBUG, code, message, **context)

    def info(self, code: str, message: str, **context: Any) -> None:
        self._log(logging.INFO, code, message, **context)

    def warn(self, code: str, message: str, **context: Any) -> None:
        self._log(logging.WARNING, code, message, **context)

    def error(
        self,
        code: str,
        message: str,
        exc: BaseException | None = None,
        no_alert: bool = False,
        **context: Any,
    ) -> None:
        self._log(logging.ERROR, code, message, exc=exc, no_alert=no_alert, **context)


log = EventLog()

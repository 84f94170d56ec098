"""``spacesync check``: does every dependency answer with the configured settings?

The settings are read from the environment exactly as the server reads them. Each dependency
is then tried the way the server uses it, without changing anything: the app API is asked with
a GET (nothing is verified or logged), Redis gets a PING, PostgreSQL a connection and the same
schema check the server runs at start, the Discord webhook a GET (which returns the webhook's
description; nothing is posted to the channel), and the EXIT outbox's directory a temporary file.

All checks run at once, each within a time limit. The result is one table on stdout; secrets
(``APP_API_SECRET``, passwords in URLs, the webhook's token) are masked in it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from .config import Settings

DEFAULT_TIMEOUT = 5.0
OK = "ok"
FAILED = "FAILED"
NOT_CONFIGURED = "not configured"
MASK = "***"
_SECRET_QUERY_KEYS = ("pass", "secret", "token", "key", "auth")
SECRET_VARIABLES = (
    "APP_API_SECRET",
    "AUTH_TOKEN_SECRET",
    "INTERNAL_API_TOKEN",
    "REDIS_URL",
    "DATABASE_URL",
    "DISCORD_WEBHOOK_URL",
    "DISCORD_ERROR_WEBHOOK_URL",
)
"""Variables whose value (or part of it) is a credential and is never printed as it is."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    dependency: str
    required: bool
    setting: str
    result: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.result == FAILED


class CheckFailed(Exception):
    """A dependency that does not answer as it should; the message says why."""


# -- masking ------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with its password, a Discord webhook's token and secret query values masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    path = parts.path
    segments = path.split("/")
    if "webhooks" in segments:
        # /api/webhooks/<id>/<token>: whoever has the token can post to the channel
        at = segments.index("webhooks")
        if len(segments) > at + 2 and segments[at + 2]:
            segments[at + 2] = MASK
        path = "/".join(segments)
    query = urlencode(
        [
            (k, MASK if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Every credential in ``env`` (whole secret variables, passwords and tokens inside URLs),
    longest first, for :func:`scrub`."""
    found: set[str] = set()
    for name in SECRET_VARIABLES:
        value = (env.get(name) or "").strip()
        if not value:
            continue
        if not name.endswith("_URL"):
            found.add(value)
            continue
        try:
            parts = urlsplit(value)
            if parts.password:
                found.add(parts.password)
        except ValueError:
            found.add(value)
            continue
        segments = parts.path.split("/")
        if "webhooks" in segments:
            at = segments.index("webhooks")
            if len(segments) > at + 2 and segments[at + 2]:
                found.add(segments[at + 2])
        for key, item in parse_qsl(parts.query):
            if item and any(s in key.lower() for s in _SECRET_QUERY_KEYS):
                found.add(item)
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by the mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


# -- the checks ---------------------------------------------------------------------------------


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_http(url: str, headers: Mapping[str, str], timeout: float) -> str:
    """GET ``url``: any answer below 500 shows the app is there (a verify route answers 405 to a
    GET); 5xx is what the server itself counts as an app that is down."""
    started = time.monotonic()
    async with httpx.AsyncClient(
        headers=dict(headers), timeout=httpx.Timeout(timeout), follow_redirects=False
    ) as client:
        try:
            response = await client.get(url)
        except httpx.TimeoutException as exc:
            raise CheckFailed(f"no answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise CheckFailed(_error(exc)) from exc
    if response.status_code >= 500:
        raise CheckFailed(f"HTTP {response.status_code} in {_ms(started)}")
    return f"HTTP {response.status_code} in {_ms(started)}"


async def check_discord(url: str, timeout: float) -> str:
    """GET the webhook: Discord describes it (200) without posting anything to the channel; an
    unknown webhook or a wrong token answers 401/404."""
    started = time.monotonic()
    async with httpx.AsyncClient(
        headers={"User-Agent": "spacesync"}, timeout=httpx.Timeout(timeout)
    ) as client:
        try:
            response = await client.get(url)
        except httpx.TimeoutException as exc:
            raise CheckFailed(f"no answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise CheckFailed(_error(exc)) from exc
    if response.status_code != 200:
        hint = " (unknown webhook or wrong token)" if response.status_code in (401, 404) else ""
        raise CheckFailed(f"HTTP {response.status_code}{hint} in {_ms(started)}")
    return f"HTTP 200 in {_ms(started)}"


async def check_redis(url: str, timeout: float) -> str:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeout

    started = time.monotonic()
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
    )
    try:
        await client.ping()
        latency = _ms(started)
        info = await client.info("server")
    except RedisTimeout as exc:
        raise CheckFailed(f"no answer within {timeout:g} s") from exc
    except (RedisError, OSError) as exc:
        raise CheckFailed(_error(exc)) from exc
    finally:
        await client.connection_pool.disconnect()
    version = info.get("redis_version") if isinstance(info, dict) else None
    return f"PING in {latency}" + (f", Redis {version}" if version else "")


async def check_postgres(url: str, timeout: float) -> str:
    from .storage import SchemaError, StorageError
    from .storage.postgres import PostgresStorage

    started = time.monotonic()
    try:
        storage = await PostgresStorage.open(
            url,
            max_connections=1,
            connect_timeout=timeout,
            command_timeout=timeout,
            op_timeout=timeout,
        )
    except SchemaError as exc:
        raise CheckFailed("missing " + ", ".join(exc.missing)) from exc
    except StorageError as exc:
        raise CheckFailed(str(exc)) from exc
    latency = _ms(started)
    await storage.close()
    return f"connected, schema complete in {latency}"


def _writable_dir(directory: Path) -> str:
    """Prove ``directory`` (or, when it does not exist yet, the nearest existing parent the
    server would create it in) takes a new file; what to say about it."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            raise CheckFailed(f"no existing parent directory of {directory}")
        existing = existing.parent
    if not existing.is_dir():
        raise CheckFailed(f"{existing} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".spacesync-check-"):
            pass
    except OSError as exc:
        raise CheckFailed(f"{existing} is not writable: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(existing).free
    note = "" if existing == directory else f" ({directory} will be created)"
    return f"writable, {_size(free)} free{note}"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def check_sqlite(path: str) -> str:
    from .storage.sqlite import SCHEMA_VERSION

    file = Path(path)
    where = _writable_dir(file.parent.absolute())
    if not file.exists():
        return f"file will be created; directory {where}"
    try:
        db = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            version = 0
            if "schema_version" in tables:
                version = db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise CheckFailed(f"cannot read {file}: {exc}") from exc
    if version > SCHEMA_VERSION:
        raise CheckFailed(f"schema version {version}; this spacesync knows up to {SCHEMA_VERSION}")
    return f"opens, schema version {version}; directory {where}"


def check_outbox(path: str) -> str:
    return _writable_dir(Path(path).parent.absolute())


# -- running them ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    dependency: str
    required: bool
    setting: str
    run: Callable[[], Awaitable[str]] | None
    """``None``: not configured."""
    absent: str = ""


def _in_thread(work: Callable[[], str]) -> Callable[[], Awaitable[str]]:
    return lambda: asyncio.to_thread(work)


def plan(settings: Settings, timeout: float) -> list[_Planned]:
    """The checks the settings call for, in the order the table shows them."""
    headers = {"User-Agent": "spacesync"}
    secret_note = ""
    if settings.app_api_secret:
        headers["Authorization"] = f"Bearer {settings.app_api_secret}"
        secret_note = f" (APP_API_SECRET {MASK})"
    verifying = settings.auth_sessions == "verify"
    guest_verify = f"{settings.app_url}/api/guest/verify"
    checks = [
        _Planned(
            "app API",
            verifying,
            mask_url(guest_verify) + secret_note,
            lambda: check_http(guest_verify, headers, timeout),
        )
    ]
    if settings.auth_verify_url:
        auth_url = settings.auth_verify_url
        checks.append(
            _Planned(
                "app auth verify",
                verifying,
                mask_url(auth_url) + secret_note,
                lambda: check_http(auth_url, headers, timeout),
            )
        )
    redis_url = settings.redis_url
    checks.append(
        _Planned(
            "Redis",
            redis_url is not None,
            mask_url(redis_url) if redis_url else "REDIS_URL unset (single node)",
            (lambda: check_redis(redis_url, timeout)) if redis_url else None,
        )
    )
    database_url = settings.database_url
    if database_url:
        checks.append(
            _Planned(
                "PostgreSQL",
                True,
                mask_url(database_url),
                lambda: check_postgres(database_url, timeout),
            )
        )
    elif settings.storage_path == ":memory:":
        checks.append(
            _Planned("SQLite", False, "STORAGE_PATH=:memory:", None, "in memory, nothing kept")
        )
    else:
        storage_path = settings.storage_path
        checks.append(
            _Planned(
                "SQLite",
                True,
                storage_path,
                _in_thread(lambda: check_sqlite(storage_path)),
            )
        )
    webhook = settings.discord_webhook_url
    checks.append(
        _Planned(
            "Discord webhook",
            False,
            mask_url(webhook) if webhook else "DISCORD_WEBHOOK_URL unset",
            (lambda: check_discord(webhook, timeout)) if webhook else None,
            "" if webhook else "errors are only logged",
        )
    )
    outbox = settings.exit_outbox_path
    if outbox == ":memory:":
        checks.append(
            _Planned(
                "EXIT outbox disk",
                False,
                "EXIT_OUTBOX_PATH=:memory:",
                None,
                "EXITs owed are lost on restart",
            )
        )
    else:
        checks.append(
            _Planned("EXIT outbox disk", True, outbox, _in_thread(lambda: check_outbox(outbox)))
        )
    return checks


async def _one(planned: _Planned, timeout: float, secrets: list[str]) -> CheckResult:
    if planned.run is None:
        return CheckResult(
            planned.dependency, planned.required, planned.setting, NOT_CONFIGURED, planned.absent
        )
    result, detail = OK, ""
    try:
        # the check's own timeouts come first; this one catches whatever they miss
        async with asyncio.timeout(timeout + 1.0):
            detail = await planned.run()
    except CheckFailed as exc:
        result, detail = FAILED, str(exc)
    except TimeoutError:
        result, detail = FAILED, f"no answer within {timeout:g} s"
    except Exception as exc:
        result, detail = FAILED, _error(exc)
    return CheckResult(
        planned.dependency, planned.required, planned.setting, result, scrub(detail, secrets)
    )


async def run_checks(
    settings: Settings, env: Mapping[str, str], timeout: float = DEFAULT_TIMEOUT
) -> list[CheckResult]:
    """Run every check at once; the results in table order."""
    secrets = secret_values(env)
    planned = plan(settings, timeout)
    return list(await asyncio.gather(*(_one(p, timeout, secrets) for p in planned)))


def render(results: list[CheckResult], secrets: Iterable[str] = ()) -> str:
    """The aligned text table (and a closing line saying whether every required one answered)."""
    hidden = list(secrets)
    header = ("dependency", "required", "setting", "result", "detail")
    rows = [header] + [
        (
            r.dependency,
            "yes" if r.required else "no",
            scrub(r.setting, hidden),
            r.result,
            scrub(r.detail, hidden),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in rows
    ]
    failed = [r.dependency for r in results if r.failed and r.required]
    optional = [r.dependency for r in results if r.failed and not r.required]
    if failed:
        lines.append(f"\nFAILED: required dependencies not answering: {', '.join(failed)}")
    else:
        lines.append("\nAll required dependencies answer.")
    if optional:
        lines.append(f"Optional dependencies not answering: {', '.join(optional)}")
    return "\n".join(lines) + "\n"


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.failed and r.required for r in results) else 0

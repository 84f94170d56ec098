"""One typed settings object, read once from the environment (SPEC §1.1)."""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_PORT = 3001
DEFAULT_APP_URL = "http://localhost:3000"
ALWAYS_ALLOWED_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")
LOG_LEVELS = ("debug", "info", "warn", "error")
DEFAULT_STORAGE_PATH = ".spacesync/spacesync.sqlite3"
DATABASE_SCHEMES = ("postgresql", "postgres")
LOCALES = ("en", "ko")
"""Languages of the texts players read (notices, error messages); see ``spacesync.texts``."""
AUTH_MODES = ("verify", "signed", "trust")
"""How ``auth-<userId>`` session tokens (logged-in users) are checked; see ``AUTH_SESSIONS``."""
MIN_AUTH_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A setting that cannot be used; start-up stops with this message and exit code 2."""


@dataclass(frozen=True, slots=True)
class Settings:
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    development: bool = False
    app_url: str = DEFAULT_APP_URL
    app_api_secret: str | None = None
    cors_origins: tuple[str, ...] = ALWAYS_ALLOWED_ORIGINS
    discord_webhook_url: str | None = None
    hostname: str = field(default_factory=socket.gethostname)
    redis_url: str | None = None
    log_level: str = "info"
    verify_timeout: float = 5.0
    exit_timeout: float = 5.0
    exit_outbox_path: str = ":memory:"
    client_buffer_limit: int = 4 * 1024 * 1024
    max_connections_per_ip: int = 0
    handshakes_per_ip: int = 0
    """New Engine.IO sessions one address may open per 10 seconds (0 = any)."""
    connect_timeout: float = 10.0
    """Seconds an Engine.IO session may wait before its Socket.IO CONNECT."""
    join_timeout: float = 60.0
    """Seconds a connected socket may stay without joining a space."""
    exit_grace: float = 10.0
    """Seconds an EXIT is held, so that a rejoin of the same session cancels it."""
    recovery_window: float = 120.0
    """Seconds a client that lost its connection may take to resume it (0 = no recovery)."""
    verify_failure_ttl: float = 30.0
    """Seconds a refused session token is remembered (refused again without asking the app)."""
    verify_failures_per_ip: int = 20
    """Failed verifications one address may cause per minute before it is refused outright."""
    internal_api_token: str | None = None
    header_timeout: float = 10.0
    """Seconds a client may take to send a request's headers."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses of proxies whose ``X-Forwarded-For`` names the real client."""
    database_url: str | None = None
    """FlowSpace's PostgreSQL database (``postgresql://``); unset: the SQLite file below."""
    storage_path: str = DEFAULT_STORAGE_PATH
    """SQLite file for chat history, moderation and map objects when there is no database."""
    locale: str = "en"
    """Language of system notices and error messages players read (``en`` or ``ko``)."""
    auth_sessions: str = "verify"
    """``verify``: the app verifies ``auth-`` tokens at :attr:`auth_verify_url`; ``signed``: the
    token carries an HMAC this server checks; ``trust``: the user id in the token is believed."""
    auth_verify_url: str | None = None
    """Where ``auth-`` tokens are verified in ``verify`` mode (unset: the guest verify route)."""
    auth_token_secret: str | None = None
    """The HMAC-SHA256 key of ``signed`` tokens, shared with the app (at least 32 bytes)."""

    @property
    def environment(self) -> str:
        return "development" if self.development else "production"


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


_CREDENTIALS = re.compile(r"//[^/?#@]*@")
_WEBHOOK_TOKEN = re.compile(r"(/webhooks/[^/?#]+/)[^/?#]+")


def _shown(url: str) -> str:
    """A URL as an error message may show it: no password or user, no webhook token, no query."""
    shown = _CREDENTIALS.sub("//***@", url.split("?", 1)[0].split("#", 1)[0])
    return repr(_WEBHOOK_TOKEN.sub(r"\1***", shown))


def _http_url(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL: {_shown(value)}") from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or ord(c) < 32 for c in value)
    ):
        raise ConfigError(f"{name} must be an http(s) URL, got {_shown(value)}")
    return value.rstrip("/")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from environment variables, raising :class:`ConfigError`."""
    port = DEFAULT_PORT
    found = _first(env, "PORT", "SOCKET_PORT")
    if found:
        name, raw = found
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
            raise ConfigError(f"{name} must be a port number between 1 and 65535, got {raw!r}")
        port = int(raw)

    host = env.get("HOST", "").strip() or "0.0.0.0"

    development = env.get("NODE_ENV", "").strip() == "development"

    app_url = DEFAULT_APP_URL
    found = _first(env, "APP_URL", "NEXT_PUBLIC_API_URL", "NEXT_PUBLIC_APP_URL")
    if found:
        app_url = _http_url(*found)

    origins: list[str] = [*ALWAYS_ALLOWED_ORIGINS, _origin(app_url)]
    for raw in env.get("CORS_ORIGINS", "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        if raw == "*":
            origins.append("*")
            continue
        origins.append(_origin(_http_url("CORS_ORIGINS", raw)))

    discord = None
    found = _first(env, "DISCORD_WEBHOOK_URL", "DISCORD_ERROR_WEBHOOK_URL")
    if found:
        discord = _http_url(*found)

    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url is not None:
        try:
            parts = urlsplit(redis_url)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL is not a valid URL: {_shown(redis_url)}") from exc
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ConfigError(f"REDIS_URL must be a redis:// URL, got {_shown(redis_url)}")

    log_level = env.get("LOG_LEVEL", "").strip().lower() or "info"
    if log_level == "warning":
        log_level = "warn"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    if log_level == "debug" and not development:
        log_level = "info"

    hostname = env.get("HOSTNAME", "").strip() or socket.gethostname()

    raw_locale = env.get("LOCALE", "").strip()
    locale = raw_locale.lower() or "en"
    if locale not in LOCALES:
        raise ConfigError(f"LOCALE must be one of {', '.join(LOCALES)}, got {raw_locale!r}")

    outbox = env.get("EXIT_OUTBOX_PATH", "").strip()
    if not outbox:
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", hostname)[:64] or "node"
        outbox = f".spacesync/exits-{safe_name}-{port}.sqlite3"
    elif any(ord(c) < 32 for c in outbox):
        raise ConfigError("EXIT_OUTBOX_PATH must be a file path")

    buffer_limit = _positive_int(env, "CLIENT_BUFFER_LIMIT", 4 * 1024 * 1024, minimum=16 * 1024)
    per_ip = _positive_int(env, "MAX_CONNECTIONS_PER_IP", 0, minimum=0)
    handshakes = _positive_int(env, "HANDSHAKES_PER_IP", 60, minimum=0)
    proxies = tuple(p.strip() for p in env.get("TRUSTED_PROXIES", "").split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError as exc:
            raise ConfigError(f"TRUSTED_PROXIES must list IP addresses, got {proxy!r}") from exc

    return Settings(
        port=port,
        host=host,
        development=development,
        app_url=app_url,
        app_api_secret=env.get("APP_API_SECRET") or None,
        cors_origins=tuple(dict.fromkeys(origins)),
        discord_webhook_url=discord,
        hostname=hostname,
        redis_url=redis_url,
        log_level=log_level,
        exit_outbox_path=outbox,
        client_buffer_limit=buffer_limit,
        max_connections_per_ip=per_ip,
        handshakes_per_ip=handshakes,
        connect_timeout=_seconds(env, "CONNECT_TIMEOUT", 10.0, minimum=0.1),
        join_timeout=_seconds(env, "JOIN_TIMEOUT", 60.0, minimum=0.1),
        exit_grace=_seconds(env, "EXIT_GRACE_SECONDS", 10.0, minimum=0.0),
        recovery_window=_seconds(env, "RECOVERY_WINDOW", 120.0, minimum=0.0),
        verify_failure_ttl=_seconds(env, "VERIFY_FAILURE_CACHE_SECONDS", 30.0, minimum=0.0),
        verify_failures_per_ip=_positive_int(env, "VERIFY_FAILURES_PER_IP", 20, minimum=0),
        internal_api_token=env.get("INTERNAL_API_TOKEN", "").strip() or None,
        header_timeout=_seconds(env, "HEADER_READ_TIMEOUT", 10.0, minimum=0.1),
        trusted_proxies=proxies,
        locale=locale,
        database_url=_database_url(env),
        storage_path=_storage_path(env),
        **_auth_settings(env),
    )


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or value > 86_400:
        raise ConfigError(f"{name} must be a number of seconds of at least {minimum}, got {raw!r}")
    return value


def _database_url(env: Mapping[str, str]) -> str | None:
    """``DATABASE_URL``, the app's own (Prisma) connection string: PostgreSQL only, so that a
    typo or a MySQL URL stops start-up instead of failing at the first chat message."""
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigError("DATABASE_URL is not a valid URL") from exc
    has_host = bool(parts.hostname) or "host=" in parts.query
    if parts.scheme not in DATABASE_SCHEMES or not has_host or any(ord(c) < 33 for c in raw):
        # The URL carries a password: name the problem, never the value.
        raise ConfigError(
            "DATABASE_URL must be a postgresql://user:password@host:port/database URL"
            f" (scheme {parts.scheme or 'missing'!r})"
        )
    return raw


def _auth_settings(env: Mapping[str, str]) -> dict[str, str | None]:
    """``AUTH_SESSIONS``, ``AUTH_VERIFY_URL`` and ``AUTH_TOKEN_SECRET``. A ``signed`` mode without
    a usable secret stops start-up: every logged-in user would otherwise be refused, or a short
    secret would let tokens be forged by guessing it."""
    raw_mode = env.get("AUTH_SESSIONS", "").strip()
    mode = raw_mode.lower() or "verify"
    if mode not in AUTH_MODES:
        raise ConfigError(f"AUTH_SESSIONS must be one of {', '.join(AUTH_MODES)}, got {raw_mode!r}")
    verify_url = None
    raw_url = env.get("AUTH_VERIFY_URL", "").strip()
    if raw_url:
        verify_url = _http_url("AUTH_VERIFY_URL", raw_url)
    secret = env.get("AUTH_TOKEN_SECRET") or None
    if mode == "signed":
        if secret is None:
            raise ConfigError("AUTH_SESSIONS=signed needs AUTH_TOKEN_SECRET")
        if len(secret.encode("utf-8", "surrogatepass")) < MIN_AUTH_SECRET_BYTES:
            # The value is a credential: its length may be named, never the value.
            raise ConfigError(
                f"AUTH_TOKEN_SECRET must be at least {MIN_AUTH_SECRET_BYTES} bytes long"
            )
    return {"auth_sessions": mode, "auth_verify_url": verify_url, "auth_token_secret": secret}


def _storage_path(env: Mapping[str, str]) -> str:
    raw = env.get("STORAGE_PATH", "").strip()
    if not raw:
        return DEFAULT_STORAGE_PATH
    if any(ord(c) < 32 for c in raw) or raw.endswith("/"):
        raise ConfigError(f"STORAGE_PATH must be a file path, got {raw!r}")
    return raw

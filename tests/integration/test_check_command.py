"""``spacesync check`` and ``spacesync --version`` as subprocesses, against real dependencies:
Redis, a throwaway PostgreSQL database with FlowSpace's tables, and loopback HTTP servers
standing in for the app and for a Discord webhook."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from support.server import CONTROLLED_VARIABLES, free_port
from support.standins import AppStandIn, DiscordStandIn
from support.storage_world import dsn_for, throwaway_database

REDIS_URL = os.environ.get("SPACESYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

APP_SECRET = "app-secret-Zq8vW2pLk4"
DB_PASSWORD = "pg-pass-Hy6tR1mN"  # PostgreSQL trusts loopback here: any password is accepted
REDIS_PASSWORD = "redis-pass-Kd3sX9"
ROWS = ("app API", "Redis", "PostgreSQL", "Discord webhook", "EXIT outbox disk")


class WebhookStandIn(DiscordStandIn):
    """A Discord webhook that also answers GET with the webhook's description, as Discord does
    (token included, which must not be printed), and 404 for a wrong token."""

    WEBHOOK_ID = "1234567890"
    TOKEN = "test-token"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/webhooks/{id}/{token}", self._describe)
        super().routes(app)

    async def _describe(self, request: web.Request) -> web.Response:
        if (request.match_info["id"], request.match_info["token"]) != (self.WEBHOOK_ID, self.TOKEN):
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        return web.json_response(
            {
                "type": 1,
                "id": self.WEBHOOK_ID,
                "name": "alerts",
                "channel_id": "42",
                "guild_id": "43",
                "application_id": None,
                "token": self.TOKEN,
            }
        )


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float

    def rows(self) -> dict[str, list[str]]:
        """Table rows by dependency: [required, setting, result, detail] (split on the header's
        column positions, so that cells with spaces stay whole)."""
        lines = self.out.splitlines()
        header = lines[0]
        starts = [header.index(n) for n in ("required", "setting", "result", "detail")]
        found: dict[str, list[str]] = {}
        for line in lines[1:]:
            if not line.strip():
                break
            bounds = [0, *starts, len(line) + 1]
            cells = [line[a:b].strip() for a, b in itertools.pairwise(bounds)]
            found[cells[0]] = cells[1:]
        return found

    def result(self, dependency: str) -> str:
        return self.rows()[dependency][2]

    def detail(self, dependency: str) -> str:
        return self.rows()[dependency][3]


@contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def run_cli(*args: str, cwd: Path, timeout: float = 60, **env: str) -> Outcome:
    full = {k: v for k, v in os.environ.items() if k not in CONTROLLED_VARIABLES}
    full.update(env)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "spacesync", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A throwaway FlowSpace database for this module: its name."""
    with throwaway_database() as name:
        yield name


@pytest.fixture
def webhook() -> Iterator[WebhookStandIn]:
    server = WebhookStandIn()
    server.start()
    yield server
    server.stop()


def database_url(name: str) -> str:
    return dsn_for(name).replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)


@pytest.fixture
def env(
    tmp_path: Path, app_standin: AppStandIn, webhook: WebhookStandIn, database: str
) -> dict[str, str]:
    """Every dependency configured and answering."""
    return {
        "APP_URL": app_standin.url,
        "APP_API_SECRET": APP_SECRET,
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": database_url(database),
        "DISCORD_WEBHOOK_URL": webhook.url,
        "EXIT_OUTBOX_PATH": str(tmp_path / "outbox" / "exits.sqlite3"),
        "HOSTNAME": "check-node",
    }


def assert_no_secrets(outcome: Outcome, *extra: str) -> None:
    for secret in (APP_SECRET, DB_PASSWORD, REDIS_PASSWORD, WebhookStandIn.TOKEN, *extra):
        assert secret not in outcome.out, f"{secret!r} printed:\n{outcome.out}"
        assert secret not in outcome.err, f"{secret!r} logged:\n{outcome.err}"


def test_every_dependency_answers(
    tmp_path: Path, env: dict[str, str], app_standin: AppStandIn, webhook: WebhookStandIn
) -> None:
    done = run_cli("check", cwd=tmp_path, **env)

    assert done.code == 0, done.out + done.err
    rows = done.rows()
    assert list(rows) == list(ROWS), done.out
    for name in ROWS:
        required, _setting, result, _detail = rows[name]
        assert result == "ok", done.out
        assert required == ("no" if name == "Discord webhook" else "yes"), done.out
    assert "HTTP 405" in done.detail("app API")  # the verify route takes POST only
    assert "PING" in done.detail("Redis")
    assert "schema complete" in done.detail("PostgreSQL")
    assert "free" in done.detail("EXIT outbox disk")
    assert "All required dependencies answer." in done.out

    # the app was asked without creating anything, with the configured secret
    calls = app_standin.snapshot()
    assert [(c.method, c.path) for c in calls] == [("GET", "/api/guest/verify")]
    assert calls[0].headers["authorization"] == f"Bearer {APP_SECRET}"
    # the webhook was looked at, never posted to
    assert [(c.method, c.path) for c in webhook.snapshot()] == [("GET", webhook.PATH)]
    assert webhook.messages == []
    # the check leaves no outbox behind
    assert not (tmp_path / "outbox").exists()

    # the settings column names what was used, with every secret masked
    assert rows["PostgreSQL"][1].startswith("postgresql://postgres:***@127.0.0.1:")
    assert rows["Discord webhook"][1].endswith("/api/webhooks/1234567890/***")
    assert "APP_API_SECRET ***" in rows["app API"][1]
    assert_no_secrets(done)


def test_redis_on_a_closed_port_fails_the_check(tmp_path: Path, env: dict[str, str]) -> None:
    env["REDIS_URL"] = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    done = run_cli("check", cwd=tmp_path, **env)

    assert done.code == 1, done.out + done.err
    assert done.result("Redis") == "FAILED"
    assert done.detail("Redis")  # the error is named
    assert [n for n in ROWS if done.result(n) != "ok"] == ["Redis"]
    assert "FAILED: required dependencies not answering: Redis" in done.out
    assert_no_secrets(done)


def test_a_database_without_a_table_the_server_needs_fails(
    tmp_path: Path, env: dict[str, str]
) -> None:
    async def drop(name: str) -> None:
        conn = await asyncpg.connect(dsn_for(name), timeout=5)
        try:
            await conn.execute('DROP TABLE "SpotlightGrant"')
        finally:
            await conn.close()

    with throwaway_database() as name:
        asyncio.run(drop(name))
        env["DATABASE_URL"] = database_url(name)
        done = run_cli("check", cwd=tmp_path, **env)

    assert done.code == 1, done.out + done.err
    assert done.result("PostgreSQL") == "FAILED"
    assert done.detail("PostgreSQL") == 'missing table "SpotlightGrant"'
    assert done.result("Redis") == "ok"
    assert_no_secrets(done)


def test_the_app_being_down_fails_only_when_sessions_are_verified_by_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env["APP_URL"] = f"http://127.0.0.1:{free_port()}"
    done = run_cli("check", cwd=tmp_path, **env)
    assert done.code == 1, done.out + done.err
    assert done.rows()["app API"][0] == "yes"
    assert done.result("app API") == "FAILED"
    assert "Connect" in done.detail("app API")

    # with signed tokens the app is only told about EXITs (kept in the outbox while it is down)
    secret = "s" * 40
    signed = run_cli("check", cwd=tmp_path, AUTH_SESSIONS="signed", AUTH_TOKEN_SECRET=secret, **env)
    assert signed.code == 0, signed.out + signed.err
    assert signed.rows()["app API"][0] == "no"
    assert signed.result("app API") == "FAILED"
    assert "Optional dependencies not answering: app API" in signed.out
    assert_no_secrets(signed, secret)


def test_slow_dependencies_time_out_together(tmp_path: Path, env: dict[str, str]) -> None:
    """Each check has its own time limit and they run at once: two dependencies that never
    answer cost one time limit, not two."""
    with silent_listener() as app_port, silent_listener() as redis_port:
        env["APP_URL"] = f"http://127.0.0.1:{app_port}"
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        done = run_cli("check", "--timeout", "2", cwd=tmp_path, **env)

    assert done.code == 1, done.out + done.err
    assert done.result("app API") == "FAILED"
    assert done.result("Redis") == "FAILED"
    assert "2 s" in done.detail("app API")
    assert done.result("PostgreSQL") == "ok"
    # interpreter start-up included; two checks one after the other would take over 4 s
    assert done.seconds < 4 + 2.5, done.seconds


def test_a_wrong_webhook_token_is_reported_but_optional(
    tmp_path: Path, env: dict[str, str], webhook: WebhookStandIn
) -> None:
    wrong = "wrong-token-Pq7"
    env["DISCORD_WEBHOOK_URL"] = env["DISCORD_WEBHOOK_URL"].replace(webhook.TOKEN, wrong)
    done = run_cli("check", cwd=tmp_path, **env)

    assert done.code == 0, done.out + done.err
    assert done.result("Discord webhook") == "FAILED"
    assert "404" in done.detail("Discord webhook")
    assert webhook.messages == []
    assert_no_secrets(done, wrong)


def test_sqlite_storage_is_checked_without_a_database_url(
    tmp_path: Path, env: dict[str, str]
) -> None:
    del env["DATABASE_URL"]
    env["STORAGE_PATH"] = str(tmp_path / "data" / "store.sqlite3")
    done = run_cli("check", cwd=tmp_path, **env)
    assert done.code == 0, done.out + done.err
    assert done.result("SQLite") == "ok"
    assert "will be created" in done.detail("SQLite")
    assert "PostgreSQL" not in done.rows()

    (tmp_path / "blocker").write_text("a file where a directory should be")
    env["STORAGE_PATH"] = str(tmp_path / "blocker" / "store.sqlite3")
    env["EXIT_OUTBOX_PATH"] = str(tmp_path / "blocker" / "exits.sqlite3")
    blocked = run_cli("check", cwd=tmp_path, **env)
    assert blocked.code == 1, blocked.out + blocked.err
    assert blocked.result("SQLite") == "FAILED"
    assert blocked.result("EXIT outbox disk") == "FAILED"
    assert "not a directory" in blocked.detail("EXIT outbox disk")


def test_only_required_settings_missing_are_not_configured(tmp_path: Path) -> None:
    """Without REDIS_URL and a webhook those rows say so; they do not fail the check."""
    done = run_cli(
        "check",
        "--timeout",
        "2",
        cwd=tmp_path,
        APP_URL=f"http://127.0.0.1:{free_port()}",
        AUTH_SESSIONS="trust",
    )
    assert done.code == 0, done.out + done.err
    assert done.result("Redis") == "not configured"
    assert done.result("Discord webhook") == "not configured"
    assert done.result("SQLite") == "ok"


def test_bad_settings_exit_2_without_printing_secrets(tmp_path: Path) -> None:
    bad = run_cli("check", cwd=tmp_path, LOG_LEVEL="loud")
    assert bad.code == 2, bad.out + bad.err
    assert "LOG_LEVEL" in bad.err
    assert bad.out == ""

    # the configuration error quotes the bad value: its password is masked
    url = f"http://:{REDIS_PASSWORD}@127.0.0.1:6379/0"
    bad_redis = run_cli("check", cwd=tmp_path, REDIS_URL=url)
    assert bad_redis.code == 2, bad_redis.out + bad_redis.err
    assert "REDIS_URL" in bad_redis.err
    assert_no_secrets(bad_redis)


def test_version_matches_the_project(tmp_path: Path) -> None:
    expected = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    done = run_cli("--version", cwd=tmp_path)
    assert done.code == 0, done.err
    assert done.out == f"spacesync {expected}\n"

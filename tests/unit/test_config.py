"""Settings from environment variables (SPEC §1, §1.1)."""

from __future__ import annotations

import socket

import pytest

from spacesync.config import ConfigError, Settings, load_settings

LOCAL_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


# -- defaults -----------------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    """SPEC §1/§1.1: port 3001 on 0.0.0.0, production, app at localhost:3000, no alerts,
    single node, level info, host name from the system."""
    settings = load_settings({})
    assert settings.port == 3001
    assert settings.host == "0.0.0.0"
    assert settings.development is False
    assert settings.environment == "production"
    assert settings.app_url == "http://localhost:3000"
    assert settings.app_api_secret is None
    assert settings.discord_webhook_url is None
    assert settings.redis_url is None
    assert settings.log_level == "info"
    assert settings.hostname == socket.gethostname()


def test_plain_values_are_read() -> None:
    """SPEC §1.1: HOST, APP_API_SECRET, HOSTNAME and REDIS_URL are used as given."""
    settings = load_settings(
        {
            "HOST": "127.0.0.1",
            "APP_API_SECRET": "s3cret",
            "HOSTNAME": "node-a",
            "REDIS_URL": "redis://cache:6379/0",
        }
    )
    assert settings.host == "127.0.0.1"
    assert settings.app_api_secret == "s3cret"
    assert settings.hostname == "node-a"
    assert settings.redis_url == "redis://cache:6379/0"


# -- port ---------------------------------------------------------------------------------------


def test_port_is_read_from_port() -> None:
    """SPEC §1.1: `PORT` sets the listen port."""
    assert load_settings({"PORT": "8080"}).port == 8080


def test_socket_port_is_the_fallback() -> None:
    """SPEC §1: `PORT`, else `SOCKET_PORT`."""
    assert load_settings({"SOCKET_PORT": "4000"}).port == 4000


def test_port_wins_over_socket_port() -> None:
    """SPEC §1: `PORT` comes before `SOCKET_PORT`."""
    assert load_settings({"PORT": "5000", "SOCKET_PORT": "4000"}).port == 5000


def test_an_empty_port_falls_back_to_socket_port() -> None:
    """SPEC §1.1: an empty variable is no value (the alias is used)."""
    assert load_settings({"PORT": "", "SOCKET_PORT": "4000"}).port == 4000


@pytest.mark.parametrize("port", ["1", "3001", "65535"])
def test_valid_ports_are_accepted(port: str) -> None:
    """SPEC §1.1: any TCP port number 1–65535."""
    assert load_settings({"PORT": port}).port == int(port)


@pytest.mark.parametrize(
    "value", ["abc", "30o1", "3001.5", "-1", "0", "70000", "65536", "1e3", "²", "3001²"]
)
@pytest.mark.parametrize("name", ["PORT", "SOCKET_PORT"])
def test_bad_ports_stop_start_up(name: str, value: str) -> None:
    """SPEC §1.1: a bad value (non-numeric or out-of-range port) stops start-up clearly."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert name in message
    assert "\n" not in message


def test_a_bad_port_is_not_masked_by_a_good_alias() -> None:
    """SPEC §1.1: PORT is used when set; a bad PORT is an error even if SOCKET_PORT is fine."""
    with pytest.raises(ConfigError):
        load_settings({"PORT": "nope", "SOCKET_PORT": "4000"})


# -- development vs production --------------------------------------------------------------------


def test_development_mode() -> None:
    """SPEC §1.1: `NODE_ENV=development` enables development mode."""
    settings = load_settings({"NODE_ENV": "development"})
    assert settings.development is True
    assert settings.environment == "development"


@pytest.mark.parametrize(
    "value", ["", "production", "test", "staging", "dev", "develop", "Development", "DEVELOPMENT"]
)
def test_any_other_node_env_is_production(value: str) -> None:
    """SPEC §1.1: any value of NODE_ENV other than `development`, or none, is production."""
    settings = load_settings({"NODE_ENV": value})
    assert settings.development is False
    assert settings.environment == "production"


def test_no_other_variable_relaxes_security() -> None:
    """SPEC §1.1 security rule: NODE_ENV is the only switch to development mode."""
    tempting = {
        "DEBUG": "1",
        "DEV": "true",
        "ENV": "development",
        "APP_ENV": "development",
        "PYTHON_ENV": "development",
        "SKIP_AUTH": "1",
        "LOG_LEVEL": "debug",
        "APP_URL": "http://localhost:3000",
    }
    assert load_settings(tempting).development is False


# -- app URL and its aliases ----------------------------------------------------------------------


def test_app_url_is_read() -> None:
    """SPEC §1.1: `APP_URL` is the base URL of the app API."""
    assert (
        load_settings({"APP_URL": "https://app.example.com"}).app_url == "https://app.example.com"
    )


def test_app_url_comes_first() -> None:
    """SPEC §1.1: APP_URL, then NEXT_PUBLIC_API_URL, then NEXT_PUBLIC_APP_URL."""
    env = {
        "APP_URL": "https://one.example",
        "NEXT_PUBLIC_API_URL": "https://two.example",
        "NEXT_PUBLIC_APP_URL": "https://three.example",
    }
    assert load_settings(env).app_url == "https://one.example"


def test_next_public_api_url_is_the_second_choice() -> None:
    """SPEC §1.1: NEXT_PUBLIC_API_URL is used when APP_URL is not set."""
    env = {
        "NEXT_PUBLIC_API_URL": "https://two.example",
        "NEXT_PUBLIC_APP_URL": "https://three.example",
    }
    assert load_settings(env).app_url == "https://two.example"


def test_next_public_app_url_is_the_last_choice() -> None:
    """SPEC §1.1: NEXT_PUBLIC_APP_URL is used when neither earlier name is set."""
    assert load_settings({"NEXT_PUBLIC_APP_URL": "https://three.example"}).app_url == (
        "https://three.example"
    )


def test_empty_app_url_uses_the_next_alias() -> None:
    """SPEC §1.1: an empty variable is no value (the next alias is used)."""
    env = {"APP_URL": " ", "NEXT_PUBLIC_API_URL": "https://two.example"}
    assert load_settings(env).app_url == "https://two.example"


def test_app_url_trailing_slash_does_not_double_paths() -> None:
    """SPEC §2.1/§7: calls go to `{APP_URL}/api/...`; a trailing slash must not make `//api`."""
    settings = load_settings({"APP_URL": "https://app.example.com/"})
    assert f"{settings.app_url}/api/guest/verify" == "https://app.example.com/api/guest/verify"


@pytest.mark.parametrize(
    "value",
    [
        "not a url",
        "localhost:3000",
        "ftp://app.example.com",
        "http://",
        "https:///path-only",
        "http://app.example.com:port",
        "http://app.example.com:99999",
        "http://[::1",
        "http://app example.com",
    ],
)
@pytest.mark.parametrize("name", ["APP_URL", "NEXT_PUBLIC_API_URL", "NEXT_PUBLIC_APP_URL"])
def test_malformed_app_urls_stop_start_up(name: str, value: str) -> None:
    """SPEC §1.1: a malformed URL stops start-up with one clear line."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert name in str(caught.value)
    assert "\n" not in str(caught.value)


# -- CORS ---------------------------------------------------------------------------------------


def test_local_origins_are_always_allowed() -> None:
    """SPEC §1.1: http://localhost:3000 and http://127.0.0.1:3000 are always allowed."""
    origins = load_settings({}).cors_origins
    for origin in LOCAL_ORIGINS:
        assert origin in origins


def test_the_app_origin_is_always_allowed() -> None:
    """SPEC §1.1: the app URL is always an allowed origin (its scheme://host:port part)."""
    settings = load_settings({"APP_URL": "https://app.example.com:8443/base/path"})
    assert "https://app.example.com:8443" in settings.cors_origins
    for origin in LOCAL_ORIGINS:
        assert origin in settings.cors_origins


def test_the_app_origin_from_an_alias_is_allowed() -> None:
    """SPEC §1.1: whichever alias names the app URL, its origin is allowed."""
    settings = load_settings({"NEXT_PUBLIC_APP_URL": "https://meta.example.org"})
    assert "https://meta.example.org" in settings.cors_origins


def test_extra_origins_are_added_not_substituted() -> None:
    """SPEC §1.1: CORS_ORIGINS lists *extra* origins, comma-separated."""
    settings = load_settings(
        {
            "APP_URL": "https://app.example.com",
            "CORS_ORIGINS": "https://a.example.com, https://b.example.com:8080 ,,",
        }
    )
    expected = {
        *LOCAL_ORIGINS,
        "https://app.example.com",
        "https://a.example.com",
        "https://b.example.com:8080",
    }
    assert set(settings.cors_origins) == expected
    assert len(settings.cors_origins) == len(expected), "no duplicates"


def test_duplicate_origins_are_listed_once() -> None:
    """SPEC §1.1: the allowed-origin list has no duplicates."""
    settings = load_settings({"CORS_ORIGINS": "http://localhost:3000,http://localhost:3000"})
    assert settings.cors_origins.count("http://localhost:3000") == 1


@pytest.mark.parametrize("bad", ["not-a-url", "ftp://files.example", "http://[::1"])
def test_malformed_cors_origin_stops_start_up(bad: str) -> None:
    """SPEC §1.1: a malformed URL stops start-up (a clear ConfigError, not a traceback)."""
    with pytest.raises(ConfigError):
        load_settings({"CORS_ORIGINS": f"https://ok.example, {bad}"})


# -- Discord ------------------------------------------------------------------------------------


def test_discord_webhook_is_read() -> None:
    """SPEC §1.1: `DISCORD_WEBHOOK_URL` turns alerts on."""
    url = "https://discord.com/api/webhooks/1/abc"
    assert load_settings({"DISCORD_WEBHOOK_URL": url}).discord_webhook_url == url


def test_discord_alias_is_used_alone() -> None:
    """SPEC §1.1: `DISCORD_ERROR_WEBHOOK_URL` is an alias."""
    url = "https://discord.com/api/webhooks/2/def"
    assert load_settings({"DISCORD_ERROR_WEBHOOK_URL": url}).discord_webhook_url == url


def test_discord_main_name_wins_over_its_alias() -> None:
    """SPEC §1.1: DISCORD_WEBHOOK_URL comes before DISCORD_ERROR_WEBHOOK_URL."""
    env = {
        "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/main",
        "DISCORD_ERROR_WEBHOOK_URL": "https://discord.com/api/webhooks/2/alias",
    }
    assert load_settings(env).discord_webhook_url == "https://discord.com/api/webhooks/1/main"


@pytest.mark.parametrize("name", ["DISCORD_WEBHOOK_URL", "DISCORD_ERROR_WEBHOOK_URL"])
def test_malformed_discord_url_stops_start_up(name: str) -> None:
    """SPEC §1.1: a malformed URL stops start-up."""
    with pytest.raises(ConfigError):
        load_settings({name: "discord webhook please"})


def test_malformed_redis_url_stops_start_up() -> None:
    """SPEC §1.1: a malformed URL stops start-up."""
    with pytest.raises(ConfigError):
        load_settings({"REDIS_URL": "http://cache:6379"})


# -- log level ----------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["info", "warn", "error"])
@pytest.mark.parametrize("node_env", ["development", "production"])
def test_log_levels_are_honoured(level: str, node_env: str) -> None:
    """SPEC §1.1: LOG_LEVEL sets the minimum level."""
    assert load_settings({"LOG_LEVEL": level, "NODE_ENV": node_env}).log_level == level


def test_log_level_is_case_insensitive() -> None:
    """SPEC §1.1: LOG_LEVEL names a level; `WARN` means warn."""
    assert load_settings({"LOG_LEVEL": "WARN"}).log_level == "warn"


def test_debug_is_honoured_in_development() -> None:
    """SPEC §1.1: `debug` is honoured in development."""
    assert load_settings({"LOG_LEVEL": "debug", "NODE_ENV": "development"}).log_level == "debug"


@pytest.mark.parametrize("node_env", [None, "production", "test"])
def test_debug_is_not_honoured_in_production(node_env: str | None) -> None:
    """SPEC §1.1/§11: `debug` only in development; production logs from info."""
    env = {"LOG_LEVEL": "debug"}
    if node_env is not None:
        env["NODE_ENV"] = node_env
    assert load_settings(env).log_level == "info"


def test_an_unknown_log_level_stops_start_up() -> None:
    """SPEC §1.1: a bad value stops start-up."""
    with pytest.raises(ConfigError):
        load_settings({"LOG_LEVEL": "chatty"})


def test_settings_are_immutable() -> None:
    """SPEC §1.1: settings are read once at start-up."""
    settings = load_settings({})
    assert isinstance(settings, Settings)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


# -- reliability settings -----------------------------------------------------------------------


def test_exit_outbox_defaults_to_one_file_per_node_name_and_port() -> None:
    """Two nodes on one machine (different names or ports) never share an outbox by default."""
    a = load_settings({"HOSTNAME": "node-a", "PORT": "3001"}).exit_outbox_path
    b = load_settings({"HOSTNAME": "node-b", "PORT": "3001"}).exit_outbox_path
    c = load_settings({"HOSTNAME": "node-a", "PORT": "3002"}).exit_outbox_path
    assert len({a, b, c}) == 3
    assert a == ".spacesync/exits-node-a-3001.sqlite3"


def test_exit_outbox_file_name_is_safe_whatever_the_host_name() -> None:
    path = load_settings({"HOSTNAME": "../../etc/x y"}).exit_outbox_path
    assert path.startswith(".spacesync/exits-") and "/" not in path[len(".spacesync/") :]


def test_exit_outbox_path_is_used_as_given() -> None:
    assert load_settings({"EXIT_OUTBOX_PATH": "/var/lib/ss/o.db"}).exit_outbox_path == (
        "/var/lib/ss/o.db"
    )
    assert load_settings({"EXIT_OUTBOX_PATH": ":memory:"}).exit_outbox_path == ":memory:"


def test_slow_client_and_address_limits() -> None:
    default = load_settings({})
    assert default.client_buffer_limit == 4 * 1024 * 1024
    assert default.max_connections_per_ip == 0  # off: behind a proxy every client shares one
    tuned = load_settings({"CLIENT_BUFFER_LIMIT": "65536", "MAX_CONNECTIONS_PER_IP": "20"})
    assert (tuned.client_buffer_limit, tuned.max_connections_per_ip) == (65536, 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLIENT_BUFFER_LIMIT", "1024"),
        ("CLIENT_BUFFER_LIMIT", "lots"),
        ("CLIENT_BUFFER_LIMIT", "-5"),
        ("MAX_CONNECTIONS_PER_IP", "ten"),
        ("MAX_CONNECTIONS_PER_IP", "1.5"),
        ("EXIT_OUTBOX_PATH", "bad\npath"),
    ],
)
def test_bad_reliability_settings_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("REDIS_URL", "http://:hunter2-pass@redis.example:6379/0", "hunter2-pass"),
        ("REDIS_URL", "mysql://user:hunter2-pass@db.example/0", "hunter2-pass"),
        (
            "DISCORD_WEBHOOK_URL",
            "ftp://discord.com/api/webhooks/123/tok-hunter2-en",
            "tok-hunter2-en",
        ),
        ("APP_URL", "ftp://app.example/?key=hunter2-key", "hunter2-key"),
        ("APP_URL", "http://admin:hunter2-pass@app.example:port/", "hunter2-pass"),
    ],
)
def test_a_bad_url_is_named_without_its_secrets(name: str, value: str, secret: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value})
    assert name in str(refused.value)
    assert secret not in str(refused.value)

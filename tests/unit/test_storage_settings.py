"""DATABASE_URL and STORAGE_PATH: which storage a node uses, and bad values refused at start."""

from __future__ import annotations

import pytest

from spacesync.config import DEFAULT_STORAGE_PATH, ConfigError, load_settings


def test_defaults_are_sqlite_in_the_working_directory() -> None:
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.storage_path == DEFAULT_STORAGE_PATH == ".spacesync/spacesync.sqlite3"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://flow:secret@db.example.com:5432/flowspace",
        "postgres://flow@localhost/flowspace",
        "postgresql://flow:pw@db:6543/postgres?schema=public&pgbouncer=true&connection_limit=1",
        "postgresql:///flowspace?host=/var/run/postgresql",
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    assert load_settings({"DATABASE_URL": f"  {url} "}).database_url == url


def test_blank_database_url_means_none() -> None:
    assert load_settings({"DATABASE_URL": "   "}).database_url is None


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:pw@host/db",
        "file:./dev.db",
        "postgresql://",
        "postgresql:///flowspace",
        "db.example.com:5432/flowspace",
        "postgresql://user:pw@host:notaport/db",
        "postgresql://user:pw@host/db name",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings({"DATABASE_URL": url})


def test_a_refused_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": "mysql://flow:hunter2@db/flowspace"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": "postgresql://flow:hunter2@db:x/flowspace"})
    assert "hunter2" not in str(caught.value)


def test_storage_path() -> None:
    assert load_settings({"STORAGE_PATH": "/var/lib/spacesync/store.db"}).storage_path == (
        "/var/lib/spacesync/store.db"
    )
    assert load_settings({"STORAGE_PATH": " "}).storage_path == DEFAULT_STORAGE_PATH
    assert load_settings({"STORAGE_PATH": ":memory:"}).storage_path == ":memory:"


@pytest.mark.parametrize("path", ["/var/lib/spacesync/", "store\x00.db", "a\nb"])
def test_bad_storage_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="STORAGE_PATH"):
        load_settings({"STORAGE_PATH": path})

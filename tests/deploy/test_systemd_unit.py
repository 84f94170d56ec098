"""deploy/systemd/spacesync.service: systemd's own verifier accepts it, its settings are real
ones, and the server started with its environment stops on its KillSignal well within
TimeoutStopSec."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from recipe import DOCKERFILE, REPO, SYSTEMD_UNIT, dockerfile_stages, free_port

from spacesync import config
from spacesync.config import load_settings
from support.server import ServerProcess

# README "Shutdown": a node exits within 10 seconds of SIGTERM.
SHUTDOWN_SECONDS = 10.0


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, (key, found)
    return found[0]


def unit_environment(service: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in values(service, "Environment"):
        for word in line.split():
            name, sep, value = word.strip('"').partition("=")
            assert sep, line
            env[name] = value
    return env


def timespan(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(ms|s|sec|min|m|h)?", value)
    assert match, value
    return int(match.group(1)) * {"ms": 0.001, "min": 60, "m": 60, "h": 3600}.get(
        match.group(2) or "s", 1
    )


@pytest.fixture(scope="module")
def service() -> list[tuple[str, str]]:
    return unit_sections(SYSTEMD_UNIT.read_text())["Service"]


def systemd_analyze() -> str:
    """``systemd-analyze``, installed with Debian's systemd package when it is missing."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "systemd"],
    ):
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stderr[-3000:]}"
    found = shutil.which("systemd-analyze")
    assert found, "the systemd package brought no systemd-analyze"
    return found


def test_systemd_verifies_the_unit(tmp_path: Path, service: list[tuple[str, str]]) -> None:
    analyze = systemd_analyze()
    # The verifier checks that ExecStart is an executable: point it at this checkout's console
    # script (the same entry point installed elsewhere); nothing else in the file changes.
    script = Path(sys.executable).with_name("spacesync")
    assert script.exists(), script
    text = SYSTEMD_UNIT.read_text()
    exec_start = one(service, "ExecStart")
    assert text.count(f"ExecStart={exec_start}\n") == 1
    unit = tmp_path / "spacesync.service"
    unit.write_text(text.replace(f"ExecStart={exec_start}\n", f"ExecStart={script}\n"))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and unparsable values are only warnings (exit 0): none is allowed.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    # Exposure as systemd rates it: "OK" or better (4.0 of 10 at most).
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=40", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_exec_start_is_the_console_script(service: list[tuple[str, str]]) -> None:
    exec_start = one(service, "ExecStart").split()
    assert len(exec_start) == 1, exec_start
    path = Path(exec_start[0])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert path.name in scripts
    # The same virtualenv location as the container image's.
    image_env = dockerfile_stages(DOCKERFILE)[-1].env()
    assert str(path.parent) == image_env["PATH"].split(":")[0]


def test_environment_names_real_settings(service: list[tuple[str, str]]) -> None:
    env = unit_environment(service)
    assert env["NODE_ENV"] == "production"
    source = Path(config.__file__).read_text()
    documented = re.findall(r"^#\s+([A-Z][A-Z0-9_]+)=", SYSTEMD_UNIT.read_text(), re.MULTILINE)
    assert documented, "the env file's example names settings"
    for name in [*env, *documented]:
        assert f'"{name}"' in source, f"{name} is not read by spacesync.config"
    settings = load_settings(env)
    assert not settings.development
    assert (settings.host, settings.port) == (env["HOST"], int(env["PORT"]))
    assert settings.storage_path == env["STORAGE_PATH"]
    assert settings.exit_outbox_path == env["EXIT_OUTBOX_PATH"]
    assert one(service, "EnvironmentFile") == "/etc/spacesync/env"


def test_writable_paths_hold_the_data_files(service: list[tuple[str, str]]) -> None:
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "NoNewPrivileges") == "yes"
    writable = [Path(p.lstrip("-")) for v in values(service, "ReadWritePaths") for p in v.split()]
    state = [Path("/var/lib") / d for d in one(service, "StateDirectory").split()]
    env = unit_environment(service)
    for name in ("STORAGE_PATH", "EXIT_OUTBOX_PATH"):
        parent = Path(env[name]).parent
        assert any(parent == w or w in parent.parents for w in writable), (name, writable)
        assert any(parent == s or s in parent.parents for s in state), (name, state)
    assert Path(one(service, "WorkingDirectory")) in writable


def test_process_settings(service: list[tuple[str, str]]) -> None:
    assert one(service, "Restart") == "on-failure"
    assert one(service, "KillSignal") == "SIGTERM"
    assert timespan(one(service, "TimeoutStopSec")) >= 2 * SHUTDOWN_SECONDS
    assert int(one(service, "LimitNOFILE")) >= 65536
    user = one(service, "User")
    assert user not in ("root", "0") and one(service, "Group") == user
    # A bad setting exits 2 and must not restart in a loop.
    assert "2" in one(service, "RestartPreventExitStatus").split()


def test_kill_signal_stops_the_server_within_the_stop_timeout(
    tmp_path: Path, service: list[tuple[str, str]]
) -> None:
    port = free_port()
    env: dict[str, str | None] = {
        **unit_environment(service),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "STORAGE_PATH": str(tmp_path / "spacesync.sqlite3"),
        "EXIT_OUTBOX_PATH": str(tmp_path / "exits.sqlite3"),
        "HANDSHAKES_PER_IP": None,
        "VERIFY_FAILURES_PER_IP": None,
        "EXIT_GRACE_SECONDS": None,
    }
    server = ServerProcess(env, port=port)
    server.start(timeout=20.0)
    sig = getattr(signal, one(service, "KillSignal"))
    started = time.monotonic()
    code = server.stop(sig, timeout=timespan(one(service, "TimeoutStopSec")))
    took = time.monotonic() - started
    # Exit 0 is a clean stop for systemd (no Restart=on-failure).
    assert code == 0, server.output()[-3000:]
    assert took < SHUTDOWN_SECONDS + 2, took
    server.assert_all_lines_json()

"""Fixtures of the protocol tests: the two reference apps, each a real process on a free port.

``engineio_app.py`` and ``socketio_app.py`` are started with ``PORT`` set and are ready once
their port accepts connections; each runs for the whole test module and is killed at its end.
``engineio`` / ``socketio`` give a :class:`wire.Client` on the app's path with an aiohttp session
of its own, closed with every WebSocket it opened when the test ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from wire import Client


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (this directory's tests also run on their own,
    without the suite's shared helpers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


HERE = Path(__file__).resolve().parent
START_TIMEOUT = 30.0


class AppProcess:
    """A reference app run as ``python tests/protocol/<name>.py`` with ``PORT`` set."""

    def __init__(self, script: str) -> None:
        self.script = HERE / script
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = tempfile.TemporaryFile()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.script.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"{self.script.name} did not listen on {self.port} within {START_TIMEOUT} s")

    def output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.stderr.close()


def _run(script: str) -> Iterator[AppProcess]:
    app = AppProcess(script)
    app.start()
    yield app
    alive = app.proc is not None and app.proc.poll() is None
    output = app.output()
    app.stop()
    assert alive, f"{script} died during the tests:\n{output}"


@pytest.fixture(scope="module")
def engineio_app() -> Iterator[AppProcess]:
    yield from _run("engineio_app.py")


@pytest.fixture(scope="module")
def socketio_app() -> Iterator[AppProcess]:
    yield from _run("socketio_app.py")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection reuse: a long-poll held open by the server must not delay another request.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.fixture
async def engineio(engineio_app: AppProcess, http: aiohttp.ClientSession) -> AsyncIterator[Client]:
    client = Client(http, engineio_app.url, "/engine.io/")
    yield client
    await client.close()


@pytest.fixture
async def socketio(socketio_app: AppProcess, http: aiohttp.ClientSession) -> AsyncIterator[Client]:
    client = Client(http, socketio_app.url, "/socket.io/")
    yield client
    await client.close()

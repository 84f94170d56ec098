"""The real spacesync server, run as a subprocess on a free loopback port."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

LogEntry = dict[str, Any]

# Variables that change the server's behaviour; they are removed from the inherited environment
# so that only what a test asks for reaches the server.
CONTROLLED_VARIABLES = (
    "PORT",
    "SOCKET_PORT",
    "HOST",
    "NODE_ENV",
    "APP_URL",
    "NEXT_PUBLIC_API_URL",
    "NEXT_PUBLIC_APP_URL",
    "APP_API_SECRET",
    "CORS_ORIGINS",
    "DISCORD_WEBHOOK_URL",
    "DISCORD_ERROR_WEBHOOK_URL",
    "HOSTNAME",
    "REDIS_URL",
    "LOG_LEVEL",
    "EXIT_OUTBOX_PATH",
    "MAX_CONNECTIONS_PER_IP",
    "HANDSHAKES_PER_IP",
    "CONNECT_TIMEOUT",
    "JOIN_TIMEOUT",
    "EXIT_GRACE_SECONDS",
    "RECOVERY_WINDOW",
    "VERIFY_FAILURE_CACHE_SECONDS",
    "VERIFY_FAILURES_PER_IP",
    "INTERNAL_API_TOKEN",
    "HEADER_READ_TIMEOUT",
    "TRUSTED_PROXIES",
    "LOCALE",
    "DATABASE_URL",
    "STORAGE_PATH",
    "AUTH_SESSIONS",
    "AUTH_VERIFY_URL",
    "AUTH_TOKEN_SECRET",
)

# Every test client comes from 127.0.0.1, so per-address handshake and verification-failure
# limits are off unless a test asks for them; EXITs are sent at once unless a test sets a grace
# period; a client that loses its connection is gone at once unless a test gives it time to
# resume (connection state recovery).
TEST_DEFAULTS = {
    "HANDSHAKES_PER_IP": "0",
    "VERIFY_FAILURES_PER_IP": "0",
    "EXIT_GRACE_SECONDS": "0",
    "RECOVERY_WINDOW": "0",
}

# Each server gets its own EXIT outbox file unless a test gives one (to restart "the same" node).
_OUTBOX_DIR = tempfile.mkdtemp(prefix="spacesync-test-outbox-")


_SERIAL = itertools.count()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server did not become healthy."""


class ServerProcess:
    """``python -m spacesync`` with a controlled environment.

    ``env`` values override the defaults (HOST=127.0.0.1, PORT=<free>, HOSTNAME=test-node);
    a value of ``None`` removes the variable. Every output line is parsed as JSON and kept in
    ``logs`` with a ``stream`` key ("stdout" or "stderr"); other lines go to ``bad_lines``.
    """

    def __init__(
        self,
        env: Mapping[str, str | None] | None = None,
        *,
        python: str | None = None,
        module: str = "spacesync",
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.module = module
        self.host = host
        self.port = port or free_port(host)
        merged: dict[str, str | None] = {
            "HOST": host,
            "PORT": str(self.port),
            "HOSTNAME": "test-node",
            **TEST_DEFAULTS,
            "EXIT_OUTBOX_PATH": os.path.join(
                _OUTBOX_DIR, f"exits-{self.port}-{next(_SERIAL)}.sqlite3"
            ),
            # Chat history in a file of its own too, never in the working directory.
            "STORAGE_PATH": os.path.join(
                _OUTBOX_DIR, f"storage-{self.port}-{next(_SERIAL)}.sqlite3"
            ),
        }
        merged.update(env or {})
        base = {k: v for k, v in os.environ.items() if k not in CONTROLLED_VARIABLES}
        base["PYTHONUNBUFFERED"] = "1"
        for key, value in merged.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        self.env = base
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[LogEntry] = []
        self.raw_lines: list[tuple[str, str]] = []
        self.bad_lines: list[tuple[str, str]] = []
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """How the server is started (subclasses may start it another way)."""
        return [self.python, "-m", self.module]

    def spawn(self) -> ServerProcess:
        """Start the process without waiting for it to become healthy."""
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._threads = [
            threading.Thread(target=self._reader, args=("stdout",), daemon=True),
            threading.Thread(target=self._reader, args=("stderr",), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def start(self, timeout: float = 10.0) -> ServerProcess:
        """Start the process and wait until ``GET /health`` answers 200."""
        self.spawn()
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                self._join_readers()
                raise ServerStartError(
                    f"server exited with code {code} before it was healthy\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                    # The start-up line proves the answer came from this process, not from
                    # another server that happens to hold the same port.
                    quiet = (self.env.get("LOG_LEVEL") or "").lower() in ("warn", "error")
                    if response.status == 200 and (quiet or self.find_logs(code="E6001")):
                        return self
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        self.kill()
        raise ServerStartError(
            f"server not healthy within {timeout}s ({last_error})\n{self.output()}"
        )

    def run_to_exit(self, timeout: float = 10.0) -> int:
        """Start the process and wait for it to exit by itself (for start-up failures)."""
        self.spawn()
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"server still running after {timeout}s\n{self.output()}"
            ) from None
        self._join_readers()
        self.returncode = code
        return code

    def poll(self) -> int | None:
        if self.proc is None:
            return self.returncode
        code = self.proc.poll()
        if code is not None:
            self.returncode = code
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code.

        Kills the process (and raises) when it does not exit within ``timeout``.
        """
        if self.proc is None:
            raise RuntimeError("server was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"server did not exit within {timeout}s of signal {sig}\n{self.output()}"
                ) from None
        self._join_readers()
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> int:
        """SIGKILL the process; returns the exit code."""
        if self.proc is None:
            raise RuntimeError("server was never started")
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._join_readers()
        self.returncode = self.proc.returncode
        return self.returncode

    async def astop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """``stop`` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, sig, timeout)

    # -- output ------------------------------------------------------------------------------

    def _reader(self, stream: str) -> None:
        assert self.proc is not None
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert pipe is not None
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self.raw_lines.append((stream, line))
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            with self._lock:
                if isinstance(parsed, dict):
                    parsed["stream"] = stream
                    self.logs.append(parsed)
                else:
                    self.bad_lines.append((stream, line))
        pipe.close()

    def _join_readers(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def output(self) -> str:
        """Everything the process wrote, for failure messages."""
        with self._lock:
            lines = list(self.raw_lines)
        return "\n".join(f"[{stream}] {line}" for stream, line in lines) or "(no output)"

    def assert_all_lines_json(self) -> None:
        """Fail if any output line (on either stream) is not one JSON object."""
        with self._lock:
            bad = list(self.bad_lines)
        if bad:
            shown = "\n".join(f"[{stream}] {line}" for stream, line in bad[:40])
            raise AssertionError(f"{len(bad)} server output line(s) are not JSON objects:\n{shown}")

    def mark(self) -> int:
        """The current number of log entries; pass it as ``since`` to look only at later ones."""
        with self._lock:
            return len(self.logs)

    def find_logs(
        self,
        code: str | None = None,
        level: str | None = None,
        predicate: Callable[[LogEntry], bool] | None = None,
        since: int = 0,
    ) -> list[LogEntry]:
        """Log entries matching every given criterion."""
        with self._lock:
            entries = self.logs[since:]
        return [
            entry
            for entry in entries
            if (code is None or entry.get("code") == code)
            and (level is None or entry.get("level") == level)
            and (predicate is None or predicate(entry))
        ]

    async def wait_for_log(
        self,
        code: str | None = None,
        level: str | None = None,
        predicate: Callable[[LogEntry], bool] | None = None,
        timeout: float = 5.0,
        since: int = 0,
    ) -> LogEntry:
        """The first log entry (from index ``since``) matching every given criterion."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_logs(code, level, predicate, since)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no log with code={code!r} level={level!r} within {timeout}s\n"
                    f"{self.output()[-6000:]}"
                )
            await asyncio.sleep(0.02)

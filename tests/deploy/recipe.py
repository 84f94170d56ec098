"""Reading the deployment recipe in deploy/ (Dockerfile, nginx, systemd) and running its tools.

- ``dockerfile_stages``: the Dockerfile as stages of ``(instruction, arguments)`` lines.
- ``ensure_nginx``: the ``nginx`` binary, installed with apt-get when it is missing (a failure to
  install fails the test: it is never skipped).
- ``Nginx``: a foreground nginx with its own prefix directory, serving the shipped
  ``deploy/nginx/spacesync.conf`` in front of nodes on loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
NGINX_CONF = DEPLOY / "nginx" / "spacesync.conf"
NGINX_NODES = DEPLOY / "nginx" / "spacesync" / "nodes.conf"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
PROMETHEUS_FILE = DEPLOY / "prometheus.yml"
SYSTEMD_UNIT = DEPLOY / "systemd" / "spacesync.service"


# -- Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    """Upper-case instruction name (FROM, RUN, COPY, ...)."""
    args: str
    """The rest of the logical line, continuations joined."""
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (CMD ["a", "b"]), else ``None``."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV values in order (``${VAR}`` / ``$VAR`` expanded from earlier ones)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {instruction.line}: ENV in the legacy 'KEY value' form"
                values[key] = re.sub(
                    r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                    lambda m: values.get(m.group(1), f"${m.group(1)}"),
                    value,
                )
        return values


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Logical lines of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        logical = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = logical.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
            continue
        if instruction.keyword in ("ARG", "#") and not stages:
            continue
        assert stages, f"line {instruction.line}: {instruction.keyword} before the first FROM"
        stages[-1].instructions.append(instruction)
    return stages


# -- processes -----------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, alive: subprocess.Popen[bytes]) -> None:
    """Wait until ``host:port`` accepts a connection (fail early if ``alive`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive.poll() is not None:
            raise AssertionError(f"process exited with code {alive.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


# -- nginx ---------------------------------------------------------------------------------------


def ensure_nginx() -> str:
    """The path of ``nginx``; installs Debian's package when it is missing."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "nginx"],
    )
    for step in steps:
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=480)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssertionError(f"nginx is missing and {' '.join(step)} failed: {exc}") from exc
        if done.returncode != 0:
            raise AssertionError(
                f"nginx is missing and {' '.join(step)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise AssertionError("apt-get installed nginx, but there is no nginx binary")
    return found


LISTEN_RE = re.compile(r"^(\s*listen\s+)80(\s*;)", re.MULTILINE)


class Nginx:
    """``nginx -p <prefix> -c <prefix>/nginx.conf`` in the foreground.

    The main file includes the shipped ``deploy/nginx/spacesync.conf`` verbatim except for its
    ``listen 80;`` (a free loopback port instead); ``spacesync/nodes.conf`` next to the main file
    lists ``upstreams`` (``host:port``) in the shipped nodes file's format.
    """

    def __init__(self, upstreams: list[str], binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        # nginx's workers (user "nobody" when the master runs as root) create temporary files
        # here, so the directory must be reachable for them.
        self.prefix = Path(tempfile.mkdtemp(prefix="spacesync-nginx-"))
        self.prefix.chmod(0o755)
        (self.prefix / "logs").mkdir()
        (self.prefix / "spacesync").mkdir()
        shipped = NGINX_CONF.read_text()
        server, count = LISTEN_RE.subn(rf"\g<1>127.0.0.1:{self.port}\g<2>", shipped)
        assert count == 1, "the shipped server block should listen on port 80 exactly once"
        (self.prefix / "spacesync.conf").write_text(server)
        (self.prefix / "spacesync" / "nodes.conf").write_text(render_nodes(upstreams))
        (self.prefix / "nginx.conf").write_text(
            "daemon off;\n"
            "worker_processes 1;\n"
            "pid nginx.pid;\n"
            "error_log stderr notice;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "    access_log logs/access.log;\n"
            "    include spacesync.conf;\n"
            "}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.prefix}/",
            "-c",
            str(self.prefix / "nginx.conf"),
            "-e",
            "stderr",
            *extra,
        ]

    def test_config(self) -> None:
        """``nginx -t``: the configuration parses and every include resolves."""
        done = subprocess.run(self.argv("-t"), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"nginx -t failed:\n{done.stderr}"

    def start(self) -> Nginx:
        self.test_config()
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_port("127.0.0.1", self.port, 10.0, self.proc)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.output()}") from None
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def output(self) -> str:
        return "\n".join(self._stderr[-80:]) or "(nginx wrote nothing)"

    def access_log(self) -> str:
        path = self.prefix / "logs" / "access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        shutil.rmtree(self.prefix, ignore_errors=True)


def render_nodes(upstreams: list[str]) -> str:
    """The shipped nodes file with its ``server`` lines pointed at ``upstreams``."""
    lines = NGINX_NODES.read_text().splitlines()
    servers = [i for i, line in enumerate(lines) if line.strip().startswith("server ")]
    assert len(servers) == len(upstreams), (servers, upstreams)
    for index, address in zip(servers, upstreams, strict=True):
        _, _, rest = lines[index].strip().partition(" ")
        _, _, options = rest.partition(" ")
        lines[index] = f"server {address} {options}".rstrip()
    return "\n".join(lines) + "\n"


# -- nginx configuration text ----------------------------------------------------------------------


def nginx_blocks(text: str) -> dict[str, list[list[str]]]:
    """Directives of an nginx file grouped by the block they are in: ``"server"``,
    ``"location /socket.io/"``, ``"upstream spacesync"``, ``""`` for the top level. Each directive
    is its list of words (quotes removed)."""
    clean = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};]+', clean)
    blocks: dict[str, list[list[str]]] = {"": []}
    stack: list[str] = [""]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            name = " ".join(words)
            stack.append(name)
            blocks.setdefault(name, [])
            words = []
        elif token == "}":
            stack.pop()
            words = []
        elif token == ";":
            blocks[stack[-1]].append(words)
            words = []
        else:
            words.append(token.strip("\"'"))
    return blocks


def directive(block: list[list[str]], name: str) -> list[list[str]]:
    """Arguments of every ``name`` directive in ``block``."""
    return [words[1:] for words in block if words and words[0] == name]


def seconds(value: str) -> float:
    """An nginx time value (``3600s``, ``1h``, ``90``) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * scale

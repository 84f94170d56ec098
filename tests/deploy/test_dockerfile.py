"""deploy/Dockerfile, checked without a Docker engine.

The file is parsed and held to what the image must be (slim Python base, no build tools in the
final stage, a non-root user, a readiness health check, the console script as its command), and
its build is reproduced with the machine's own tools: the build context as .dockerignore leaves
it, the build stage's RUN step (the wheel, a fresh virtualenv with the ``fast`` extra), then the
server started from that virtualenv with the final stage's environment, and the image's
HEALTHCHECK command run against it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from recipe import REPO, Instruction, Stage, dockerfile_stages, free_port

from support.server import ServerProcess

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cc", "python3-dev")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = dockerfile_stages()
    assert len(found) >= 2, "a multi-stage build: one stage builds, the last one runs"
    return found


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build(stages: list[Stage]) -> Stage:
    steps = [s for s in stages[:-1] if any("pip wheel" in i.args for i in s.all("RUN"))]
    assert len(steps) == 1, "exactly one earlier stage builds the wheel"
    return steps[0]


def healthcheck_argv(final: Stage) -> list[str]:
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1, checks
    options, sep, command = checks[0].args.partition("CMD ")
    assert sep, checks[0].args
    assert all(word.startswith("--") for word in options.split()), options
    argv = Instruction("CMD", command, checks[0].line).exec_form()
    assert argv is not None, "HEALTHCHECK CMD in exec form (no shell in the way)"
    return argv


# -- the file ------------------------------------------------------------------------------------


def test_final_stage_is_a_slim_python_without_build_tools(final: Stage, build: Stage) -> None:
    assert re.fullmatch(r"python:3\.(1[1-9])[\w.-]*-slim(-\w+)?", final.base), final.base
    assert final.base == build.base, "the virtualenv is copied between identical Pythons"
    for instruction in final.all("RUN"):
        words = re.findall(r"[\w.+-]+", instruction.args)
        assert not set(BUILD_TOOLS) & set(words), instruction.args
        assert "apt-get install" not in instruction.args, instruction.args
    copies = [i.args for i in final.all("COPY")]
    assert f"--from={build.name} /opt/spacesync /opt/spacesync" in copies, copies


def test_runs_as_a_non_root_user_before_its_command(final: Stage) -> None:
    keywords = [i.keyword for i in final.instructions]
    users = [i for i in final.instructions if i.keyword == "USER"]
    assert users, "the final stage sets a USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert keywords.index("USER") < keywords.index("CMD")
    created = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd .*\b{re.escape(user)}\b", created), "the user is created"


def test_command_is_the_console_script(final: Stage) -> None:
    cmd = final.all("CMD")
    assert len(cmd) == 1
    argv = cmd[0].exec_form()
    assert argv == ["spacesync"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["spacesync"] == "spacesync.cli:main"


def test_environment_and_port(final: Stage) -> None:
    env = final.env()
    assert env["HOST"] == "0.0.0.0"
    assert env["NODE_ENV"] == "production"
    assert [i.args for i in final.all("EXPOSE")] == [env["PORT"]]
    # The data the node must keep lives in the volume, owned by the user it runs as.
    workdir = final.all("WORKDIR")[-1].args
    assert [i.args for i in final.all("VOLUME")] == [f'["{workdir}"]']
    for name in ("STORAGE_PATH", "EXIT_OUTBOX_PATH"):
        assert env[name].startswith(workdir + "/"), (name, env[name])


def test_healthcheck_asks_for_readiness_with_the_standard_library(final: Stage) -> None:
    argv = healthcheck_argv(final)
    assert argv[:2] == ["python", "-c"], argv
    assert "/health/ready" in argv[2]
    assert "urllib.request" in argv[2]
    assert not re.search(r"\b(curl|wget)\b", " ".join(argv))


def test_every_copied_file_is_in_the_build_context(stages: list[Stage]) -> None:
    ignored = dockerignore()
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            words = [w for w in copy.args.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in copy.args.split()):
                continue
            for source in words[:-1]:
                path = REPO / source
                assert path.exists(), f"line {copy.line}: {source} is not in the repository"
                assert not ignored(source), f"line {copy.line}: .dockerignore excludes {source}"


# -- the build, reproduced -----------------------------------------------------------------------


def dockerignore() -> object:
    """A predicate: is this context-relative path excluded by .dockerignore?"""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not understood here"
        regex = ""
        for part in re.split(r"(\*\*/|\*|\?)", line.strip("/")):
            regex += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append(re.compile(regex))

    def ignored(relative: str) -> bool:
        parts = Path(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(p.fullmatch(prefix) for p in patterns for prefix in prefixes)

    return ignored


def build_context(destination: Path) -> Path:
    """The files ``docker build .`` would send: the repository less .dockerignore."""
    ignored = dockerignore()
    for root, dirs, files in os.walk(REPO):
        relative_root = Path(root).relative_to(REPO)
        dirs[:] = [d for d in dirs if not ignored(str(relative_root / d))]
        for name in files:
            relative = relative_root / name
            if ignored(str(relative)):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
    return destination


class ImageServer(ServerProcess):
    """The server started the way the image starts it: its CMD, found on the image's PATH."""

    def __init__(self, argv: list[str], env: dict[str, str | None], port: int) -> None:
        super().__init__(env, host="127.0.0.1", port=port)
        self.argv = argv

    def command(self) -> list[str]:
        found = shutil.which(self.argv[0], path=self.env["PATH"])
        assert found, f"{self.argv[0]} is not on the image's PATH"
        return [found, *self.argv[1:]]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, build: Stage, final: Stage) -> Iterator[Path]:
    """The build stage's RUN step run on the build context; returns the image's root."""
    root = tmp_path_factory.mktemp("image")
    workdir = build.all("WORKDIR")[-1].args
    context = build_context(root / workdir.lstrip("/"))
    step = next(i for i in build.all("RUN") if "pip wheel" in i.args)
    # The image's absolute paths become paths under ``root``.
    script = re.sub(r"(?<![\w.])/(wheels|opt)\b", lambda m: f"{root}/{m.group(1)}", step.args)
    tools = root / "usr-local-bin"
    tools.mkdir()
    (tools / "python").symlink_to(sys.executable)
    (tools / "pip").symlink_to(Path(sys.executable).with_name("pip"))
    env = {**clean_environ(), **build.env(), "PATH": f"{tools}:{os.environ['PATH']}"}
    # Downloads may come from pip's cache here; the image build starts without one.
    env.pop("PIP_NO_CACHE_DIR")
    done = subprocess.run(
        ["sh", "-c", script], cwd=context, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"build step failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    wheels = list((root / "wheels").glob("spacesync-*.whl"))
    assert len(wheels) == 1, wheels
    yield root


def clean_environ() -> dict[str, str]:
    """This process's environment without what would let Python find the checkout's code."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def image_env(final: Stage, root: Path) -> dict[str, str]:
    """The final stage's ENV with its absolute paths under ``root``."""
    env = {}
    for key, value in final.env().items():
        value = value.replace("$PATH", os.environ["PATH"])
        value = re.sub(r"(?<![\w.])/(opt|var)/", lambda m: f"{root}/{m.group(1)}/", value)
        env[key] = value
    return env


@pytest.mark.timeout(600)
def test_image_build_starts_the_server_and_its_healthcheck_passes(
    image: Path, final: Stage
) -> None:
    venv = image / "opt" / "spacesync"
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_environ(),
    ).stdout
    assert re.search(r"^spacesync==", installed, re.MULTILINE), installed
    assert re.search(r"^uvloop==", installed, re.MULTILINE), "the fast extra is installed"
    # Installed from the wheel, not linked to the checkout.
    where = subprocess.run(
        [python, "-c", "import spacesync; print(spacesync.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_environ(),
        cwd=image,
    ).stdout.strip()
    assert where.startswith(str(venv / "lib")), where

    env = image_env(final, image)
    port = free_port()
    server_env: dict[str, str | None] = {
        **env,
        "PORT": str(port),
        # Only what the image sets: none of the test suite's relaxed defaults.
        "HANDSHAKES_PER_IP": None,
        "VERIFY_FAILURES_PER_IP": None,
        "EXIT_GRACE_SECONDS": None,
        "HOSTNAME": "image-test",
        "PYTHONPATH": None,
        "VIRTUAL_ENV": None,
    }
    cmd = final.all("CMD")[0].exec_form()
    assert cmd is not None
    server = ImageServer(cmd, server_env, port)
    assert server.command()[0] == str(venv / "bin" / "spacesync")
    assert server.env["HOST"] == "0.0.0.0"
    check = healthcheck_argv(final)
    check_env = {**clean_environ(), **env, "PORT": str(port)}
    try:
        server.start(timeout=20.0)
        done = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"HEALTHCHECK failed:\n{done.stdout}\n{done.stderr}"
        # Production mode, listening on every interface, the outbox where the image keeps it.
        started = server.find_logs(code="E6001")
        assert started and started[0]["context"].get("environment") == "production", started
        assert started[0]["message"] == f"spacesync listening on 0.0.0.0:{port}"
        assert Path(env["EXIT_OUTBOX_PATH"]).exists()
    finally:
        if server.proc is not None:
            assert server.stop() == 0
    server.assert_all_lines_json()
    # A stopped server fails the same check: it is not a formality.
    done = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


@pytest.mark.timeout(600)
def test_healthcheck_fails_while_the_node_cannot_reach_redis(image: Path, final: Stage) -> None:
    """The check asks for readiness, not liveness: a node that runs but cannot reach its Redis
    is unhealthy (the orchestrator sends it no clients and can restart it)."""
    env = image_env(final, image)
    port = free_port()
    dead_redis = free_port()  # nothing listens there
    server_env: dict[str, str | None] = {
        **env,
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{dead_redis}/0",
        "HOSTNAME": "image-test-no-redis",
        "PYTHONPATH": None,
        "VIRTUAL_ENV": None,
    }
    cmd = final.all("CMD")[0].exec_form()
    assert cmd is not None
    server = ImageServer(cmd, server_env, port)
    check = healthcheck_argv(final)
    check_env = {**clean_environ(), **env, "PORT": str(port)}
    try:
        server.start(timeout=20.0)
        done = subprocess.run(check, env=check_env, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0, done.stdout
        assert "503" in done.stderr, done.stderr[-2000:]
    finally:
        if server.proc is not None:
            server.stop()

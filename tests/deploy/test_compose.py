"""deploy/docker-compose.yml and deploy/prometheus.yml, read as Docker Compose and Prometheus
would read them (no Docker engine here): the services, the files they mount, how the two nodes
are told apart and joined, and what Prometheus scrapes."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from recipe import (
    COMPOSE_FILE,
    DEPLOY,
    NGINX_CONF,
    NGINX_NODES,
    PROMETHEUS_FILE,
    REPO,
    dockerfile_stages,
    free_port,
)

from spacesync.config import load_settings
from support.cluster import CLUSTER_REDIS_URL, redis_reachable
from support.server import ServerProcess

NODES = ("node1", "node2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    document = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert isinstance(document, dict)
    return document


def mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """Container path -> host file (resolved against deploy/) or volume name."""
    found: dict[str, Path | str] = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[target] = (DEPLOY / source).resolve() if source.startswith(".") else source
    return found


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` with ``env``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} must be set: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def node_environment(compose: dict[str, Any], name: str, token: str = "a-token") -> dict[str, str]:
    """A node's environment as compose gives it, with a .env holding APP_URL and the token."""
    env = {"APP_URL": "https://app.example", "INTERNAL_API_TOKEN": token}
    raw = compose["services"][name]["environment"]
    return {k: interpolated(str(v), env) for k, v in raw.items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", *NODES, "nginx", "prometheus"}
    # Only nginx (and Prometheus, on loopback) is published: the nodes and Redis are internal.
    published = {name for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"nginx", "prometheus"}
    assert compose["services"]["prometheus"]["ports"][0].startswith("127.0.0.1:")


def test_nodes_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    for name in NODES:
        build = compose["services"][name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        # Each node keeps its data (outbox, SQLite) in a volume of its own at the image's path.
        workdir = stages[-1].all("WORKDIR")[-1].args
        assert mounts(compose["services"][name])[workdir] == f"{name}-data"
        assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_nodes_share_redis_and_differ_in_name(compose: dict[str, Any]) -> None:
    envs = {name: node_environment(compose, name) for name in NODES}
    urls = {env["REDIS_URL"] for env in envs.values()}
    assert urls == {"redis://redis:6379/0"}, urls
    assert len({env["HOSTNAME"] for env in envs.values()}) == len(NODES)
    for name, env in envs.items():
        # Every value is one the server accepts (load_settings raises on a bad one).
        settings = load_settings(env)
        assert settings.hostname == name
        assert settings.redis_url == "redis://redis:6379/0"
        assert not settings.development
        assert settings.internal_api_token == "a-token"
    # The proxy whose X-Forwarded-For the nodes trust is nginx's fixed address.
    nginx_address = compose["services"]["nginx"]["networks"]["spacesync"]["ipv4_address"]
    assert load_settings(envs["node1"]).trusted_proxies == (nginx_address,)


def test_app_url_and_token_must_be_given(compose: dict[str, Any]) -> None:
    raw = compose["services"]["node1"]["environment"]
    with pytest.raises(AssertionError, match="INTERNAL_API_TOKEN must be set"):
        interpolated(raw["INTERNAL_API_TOKEN"], {})
    with pytest.raises(AssertionError, match="APP_URL must be set"):
        interpolated(raw["APP_URL"], {})


def test_nginx_mounts_the_shipped_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    found = mounts(nginx)
    assert found["/etc/nginx/conf.d/default.conf"] == NGINX_CONF
    # spacesync.conf includes "spacesync/nodes.conf" relative to /etc/nginx/nginx.conf.
    assert "include spacesync/nodes.conf;" in NGINX_CONF.read_text()
    assert found["/etc/nginx/spacesync/nodes.conf"] == NGINX_NODES
    servers = re.findall(r"^server (\S+)", NGINX_NODES.read_text(), re.MULTILINE)
    port = node_environment(compose, "node1")["PORT"]
    assert servers == [f"{name}:{port}" for name in NODES]
    for name in NODES:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"


def test_prometheus_scrapes_both_nodes_with_the_token(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    service = compose["services"]["prometheus"]
    assert mounts(service)["/etc/prometheus/prometheus.yml"] == PROMETHEUS_FILE
    (job,) = prometheus["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    port = node_environment(compose, "node1")["PORT"]
    assert sorted(targets) == [f"{name}:{port}" for name in NODES]
    # The credentials file is the INTERNAL_API_TOKEN the nodes get, as a compose secret.
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    secret = auth["credentials_file"].removeprefix("/run/secrets/")
    assert secret in service["secrets"]
    assert compose["secrets"][secret] == {"environment": "INTERNAL_API_TOKEN"}
    assert compose["services"]["node1"]["environment"]["INTERNAL_API_TOKEN"].startswith(
        "${INTERNAL_API_TOKEN"
    )


# What Prometheus 2.x sends when the scrape config sets no scrape_protocols (as ours does).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def compose_nodes(
    compose: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[dict[str, ServerProcess], Path]]:
    """node1 and node2 started with the compose file's environment on one Redis (the test
    database instead of the redis service, loopback ports instead of 3001), and the token file
    the compose secret gives Prometheus."""
    if not redis_reachable(CLUSTER_REDIS_URL):
        pytest.fail(f"this test needs Redis at {CLUSTER_REDIS_URL}", pytrace=False)
    flush = redis.Redis.from_url(CLUSTER_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        flush.flushdb()
    finally:
        flush.close()
    token = "scrape-" + uuid.uuid4().hex
    token_file = tmp_path / "internal_api_token"
    token_file.write_text(token)  # a compose secret holds the bare value
    nodes: dict[str, ServerProcess] = {}
    try:
        for name in NODES:
            env: dict[str, str | None] = {
                **node_environment(compose, name, token),
                "REDIS_URL": CLUSTER_REDIS_URL,
                "TRUSTED_PROXIES": None,
                "HOST": "127.0.0.1",
                "STORAGE_PATH": str(tmp_path / f"{name}.sqlite3"),
                "EXIT_OUTBOX_PATH": str(tmp_path / f"{name}-exits.sqlite3"),
            }
            port = free_port()
            env["PORT"] = str(port)
            nodes[name] = ServerProcess(env, port=port).start(timeout=20.0)
        yield nodes, token_file
    finally:
        for node in nodes.values():
            node.stop()
        for node in nodes.values():
            node.assert_all_lines_json()


def scrape(node: ServerProcess, headers: dict[str, str]) -> tuple[int, str, str]:
    request = urllib.request.Request(f"{node.url}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_a_scrape_as_configured_reads_each_node(
    compose_nodes: tuple[dict[str, ServerProcess], Path], prometheus: dict[str, Any]
) -> None:
    nodes, token_file = compose_nodes
    (job,) = prometheus["scrape_configs"]
    assert Path(job["authorization"]["credentials_file"]).name == token_file.name
    # Prometheus sends the file's content, trimmed, as a bearer token.
    authorization = f"{job['authorization'].get('type', 'Bearer')} {token_file.read_text().strip()}"
    for node in nodes.values():
        # Both nodes, on the one Redis of the compose file, count each other as alive.
        deadline = time.monotonic() + 10
        while True:
            status, content_type, body = scrape(
                node, {"Accept": PROMETHEUS_ACCEPT, "Authorization": authorization}
            )
            assert status == 200, body[:500]
            alive = re.search(r"^spacesync_cluster_nodes (\S+)$", body, re.MULTILINE)
            if (alive and float(alive.group(1)) == 2) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert content_type.startswith("application/openmetrics-text"), content_type
        assert "# TYPE " in body and body.rstrip().endswith("# EOF"), body[-500:]
        assert alive and float(alive.group(1)) == 2, body
        # Without the token (a Prometheus missing its secret) the target is down.
        status, _, _ = scrape(node, {"Accept": PROMETHEUS_ACCEPT})
        assert status == 401

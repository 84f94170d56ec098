"""Shared fixtures: the real server, the JS client bridge and the HTTP stand-ins.

- ``bridge``: the Node process driving official socket.io-client sockets (one per session);
  clients created during a test are disposed of when it ends.
- ``app_standin`` / ``discord_standin``: loopback HTTP servers recording every request; their
  programmed answers are reset before each test.
- ``start_server(**env)``: start a server wired to the stand-ins (stopped when the test ends).
- ``dev_server`` / ``prod_server``: one server per test module, development / production mode.

Every server started here is checked at teardown: each output line must be one JSON object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support.jsclient import Bridge
from support.server import ServerProcess
from support.standins import AppStandIn, DiscordStandIn

ServerFactory = Callable[..., ServerProcess]


class _Servers:
    """Starts servers wired to the stand-ins and stops them all at once."""

    def __init__(self, app: AppStandIn, discord: DiscordStandIn) -> None:
        self.app = app
        self.discord = discord
        self.started: list[ServerProcess] = []

    def start(self, **env: str | None) -> ServerProcess:
        full: dict[str, str | None] = {
            "APP_URL": self.app.url,
            "DISCORD_WEBHOOK_URL": self.discord.url,
        }
        full.update(env)
        server = ServerProcess(full)
        self.started.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        problems: list[str] = []
        for server in self.started:
            if server.proc is None:
                continue
            try:
                server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
            try:
                server.assert_all_lines_json()
            except AssertionError as exc:
                problems.append(str(exc))
        self.started.clear()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def bridge_process() -> Iterator[Bridge]:
    bridge = Bridge().start()
    yield bridge
    bridge.close()


@pytest.fixture
def bridge(bridge_process: Bridge) -> Iterator[Bridge]:
    if not bridge_process.alive:
        bridge_process.start()
    yield bridge_process
    bridge_process.release_clients()
    fatal, bridge_process.fatal = bridge_process.fatal, []
    if fatal:
        pytest.fail("the JS client bridge reported errors:\n" + "\n".join(fatal), pytrace=False)


@pytest.fixture(scope="module")
def standins() -> Iterator[tuple[AppStandIn, DiscordStandIn]]:
    app = AppStandIn()
    discord = DiscordStandIn()
    app.start()
    discord.start()
    yield app, discord
    app.stop()
    discord.stop()


@pytest.fixture
def app_standin(standins: tuple[AppStandIn, DiscordStandIn]) -> AppStandIn:
    app = standins[0]
    app.reset()
    return app


@pytest.fixture
def discord_standin(standins: tuple[AppStandIn, DiscordStandIn]) -> DiscordStandIn:
    discord = standins[1]
    discord.reset()
    return discord


@pytest.fixture
def start_server(
    app_standin: AppStandIn, discord_standin: DiscordStandIn
) -> Iterator[ServerFactory]:
    """``start_server(NODE_ENV="development", LOG_LEVEL="debug", ...)``: a fresh server for this
    test. A keyword set to ``None`` removes that variable."""
    servers = _Servers(app_standin, discord_standin)
    yield servers.start
    servers.stop_all()


@pytest.fixture(scope="module")
def module_servers(
    standins: tuple[AppStandIn, DiscordStandIn],
) -> Iterator[_Servers]:
    servers = _Servers(*standins)
    yield servers
    servers.stop_all()


@pytest.fixture(scope="module")
def dev_server(module_servers: _Servers) -> ServerProcess:
    """A development-mode server shared by the tests of one module."""
    return module_servers.start(NODE_ENV="development")


@pytest.fixture(scope="module")
def prod_server(module_servers: _Servers) -> ServerProcess:
    """A production-mode server (no NODE_ENV) shared by the tests of one module."""
    return module_servers.start(NODE_ENV=None)

"""The shipped nginx configuration in front of a real two-node cluster.

nginx (installed with apt-get when missing) runs deploy/nginx/spacesync.conf as shipped, with
its upstream pointed at two spacesync nodes on loopback ports that share one Redis. The official
JavaScript socket.io-client connects through it: the default transports upgrade to WebSocket,
a long-polling-only session survives many round trips (every poll reaches the node that holds
it), and players routed to different nodes see each other's moves and chat.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from recipe import NGINX_CONF, Nginx, directive, ensure_nginx, nginx_blocks, seconds

from support.cluster import CLUSTER_REDIS_URL, Cluster, redis_reachable
from support.ids import dev_token, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn, DiscordStandIn

# Installing nginx on a fresh machine counts toward the first test's time.
pytestmark = pytest.mark.timeout(300)

# The main file the test writes around the shipped one logs which node served each request.
ACCESS_LOG_FORMAT = "log_format nodes '$remote_addr $status $upstream_addr \"$request\"';"
ACCESS_LINE = re.compile(r'^(\S+) (\d{3}) (\S+) "(\S+) (\S+) [^"]*"$')


@dataclass(frozen=True)
class Access:
    client: str
    status: int
    upstream: str
    method: str
    uri: str


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    return ensure_nginx()


@pytest.fixture
def redis_db() -> Iterator[str]:
    import redis

    if not redis_reachable(CLUSTER_REDIS_URL):
        pytest.fail(f"these tests need Redis at {CLUSTER_REDIS_URL}", pytrace=False)
    client = redis.Redis.from_url(CLUSTER_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.flushdb()
        yield CLUSTER_REDIS_URL
    finally:
        client.close()


class Proxied:
    """Two nodes on one Redis and the shipped nginx in front of them."""

    def __init__(self, nodes: list[ServerProcess], nginx: Nginx) -> None:
        self.nodes = nodes
        self.nginx = nginx

    @property
    def url(self) -> str:
        return self.nginx.url

    def upstream_of(self, node: ServerProcess) -> str:
        return f"127.0.0.1:{node.port}"

    def node_at(self, upstream: str) -> ServerProcess:
        for node in self.nodes:
            if self.upstream_of(node) == upstream:
                return node
        raise AssertionError(f"no node at {upstream}")

    def accesses(self) -> list[Access]:
        found = []
        for line in self.nginx.access_log().splitlines():
            match = ACCESS_LINE.match(line)
            assert match, f"unexpected access log line: {line!r}"
            client, status, upstream, method, uri = match.groups()
            found.append(Access(client, int(status), upstream, method, uri))
        return found

    def node_for_address(self, address: str) -> ServerProcess:
        """The node nginx sends a client at ``address`` to (asks for /health from there)."""
        before = len(self.accesses())
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.nginx.port, timeout=5, source_address=(address, 0)
        )
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        finally:
            conn.close()
        # nginx writes the access line after the answer has gone out.
        for _ in range(100):
            mine = [a for a in self.accesses()[before:] if a.client == address]
            mine = [a for a in mine if a.uri == "/health"]
            if mine:
                break
            time.sleep(0.02)
        assert len(mine) == 1, mine
        return self.node_at(mine[0].upstream)

    async def node_of(self, client: JsClient, timeout: float = 5.0) -> tuple[ServerProcess, str]:
        """The node holding ``client``'s socket and the client address it logged."""
        for _ in range(int(timeout / 0.05)):
            for node in self.nodes:
                found = node.find_logs(
                    code="E2001", predicate=lambda e: e["context"].get("socketId") == client.sid
                )
                if found:
                    return node, str(found[0]["context"].get("address"))
            await asyncio.sleep(0.05)
        raise AssertionError(f"no node logged the connection of {client.sid}")


@pytest.fixture
async def proxied(
    nginx_binary: str,
    redis_db: str,
    app_standin: AppStandIn,
    discord_standin: DiscordStandIn,
) -> AsyncIterator[Proxied]:
    cluster = Cluster(app_standin, discord_standin, redis_db)
    nginx: Nginx | None = None
    try:
        # From nginx (127.0.0.1) the nodes take the client address from X-Forwarded-For.
        nodes = await cluster.start(2, TRUSTED_PROXIES="127.0.0.1")
        nginx = Nginx([f"127.0.0.1:{n.port}" for n in nodes], nginx_binary)
        main = (nginx.prefix / "nginx.conf").read_text()
        main = main.replace(
            "    access_log logs/access.log;",
            f"    {ACCESS_LOG_FORMAT}\n    access_log logs/access.log nodes;",
        )
        (nginx.prefix / "nginx.conf").write_text(main)
        await asyncio.to_thread(nginx.start)
        yield Proxied(nodes, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        cluster.stop_all()


async def join(client: JsClient, space: str, nickname: str) -> dict[str, Any]:
    return await client.join(space, nickname, session_token=dev_token(), playerId=unique("p"))


async def test_default_transports_upgrade_to_websocket_through_nginx(
    proxied: Proxied, bridge: Bridge
) -> None:
    client = bridge.client(proxied.url, transports=["polling", "websocket"])
    await client.connect()
    # The handshake was long-polling; the upgrade needs nginx to pass Upgrade/Connection on and
    # to send the WebSocket request to the node that holds the polling session.
    for _ in range(200):
        state = await client.state()
        if state["transport"] == "websocket":
            break
        await asyncio.sleep(0.05)
    assert state == {"connected": True, "sid": client.sid, "transport": "websocket"}
    assert [m["transport"] for m in client.log() if m["type"] == "upgrade"] == ["websocket"]

    # And it carries the game both ways after the upgrade.
    space = unique("space")
    joined = await join(client, space, "Upgraded")
    assert joined["yourPlayerId"] == client.player_id
    await client.emit("chat:message", {"content": "over websocket via nginx"})
    echoed = await client.wait_for("chat:message", lambda m: m["senderId"] == client.player_id)
    assert echoed["content"] == "over websocket via nginx"

    node, address = await proxied.node_of(client)
    assert address == "127.0.0.1"
    # Every request of the session (handshake, polls, the upgrade) went to that one node.
    polls = [a for a in proxied.accesses() if a.uri.startswith("/socket.io/")]
    assert polls, proxied.accesses()
    assert {a.upstream for a in polls} == {proxied.upstream_of(node)}, polls


async def test_long_polling_session_stays_on_its_node(proxied: Proxied, bridge: Bridge) -> None:
    space = unique("space")
    alice = bridge.client(proxied.url, transports=["polling"])
    bob = bridge.client(proxied.url, transports=["polling"])
    await alice.connect()
    await bob.connect()
    assert alice.transport == bob.transport == "polling"
    await join(alice, space, "Alice")
    await join(bob, space, "Bob")
    await alice.wait_for("player:joined", lambda p: p["id"] == bob.player_id)

    # Several round trips each way: every one is a POST and a GET that must reach the node
    # holding the session.
    for turn in range(5):
        ping, pong = f"ping {turn}", f"pong {turn}"
        await alice.emit("chat:message", {"content": ping})
        got = await bob.wait_for("chat:message", lambda m, text=ping: m["content"] == text)
        assert got["senderId"] == alice.player_id
        await bob.emit("chat:message", {"content": pong})
        got = await alice.wait_for("chat:message", lambda m, text=pong: m["content"] == text)
        assert got["senderId"] == bob.player_id
    await alice.emit("player:move", {"x": 120, "y": 80, "direction": "left", "isMoving": True})
    moved = await bob.wait_for("player:moved", lambda p: p["id"] == alice.player_id)
    assert (moved["x"], moved["y"]) == (120, 80)
    assert (await alice.state())["transport"] == "polling"

    polls = [a for a in proxied.accesses() if a.uri.startswith("/socket.io/")]
    assert len(polls) >= 20, polls
    assert all(a.status == 200 for a in polls), [a for a in polls if a.status != 200]
    assert len({a.upstream for a in polls}) == 1, polls


async def test_players_on_different_nodes_meet_through_nginx(
    proxied: Proxied, bridge: Bridge
) -> None:
    space = unique("space")
    # Alice long-polls from 127.0.0.1; nginx hashes that address to one node.
    alice = bridge.client(proxied.url, transports=["polling"])
    await alice.connect()
    await join(alice, space, "Alice")
    alice_node, alice_address = await proxied.node_of(alice)
    assert alice_address == "127.0.0.1"
    assert proxied.node_for_address("127.0.0.1") is alice_node

    # Bob comes from another loopback address that nginx hashes to the other node.
    other = next(n for n in proxied.nodes if n is not alice_node)
    candidates = [f"127.0.0.{i}" for i in range(2, 60)]
    source = next((a for a in candidates if proxied.node_for_address(a) is other), None)
    assert source is not None, "no loopback address in 127.0.0.2-59 hashes to the other node"
    bob = bridge.client(proxied.url, transports=["websocket"], localAddress=source)
    await bob.connect()
    room = await join(bob, space, "Bob")
    bob_node, bob_address = await proxied.node_of(bob)
    assert bob_node is other
    # nginx's X-Forwarded-For names Bob's address, and the node (trusting 127.0.0.1) uses it.
    assert bob_address == source
    assert alice.player_id in [p["id"] for p in room["players"]]

    # Across the nodes, both ways, through nginx.
    await alice.wait_for("player:joined", lambda p: p["id"] == bob.player_id)
    await alice.emit("player:move", {"x": 300, "y": 200, "direction": "up", "isMoving": True})
    moved = await bob.wait_for("player:moved", lambda p: p["id"] == alice.player_id)
    assert (moved["x"], moved["y"], moved["direction"]) == (300, 200, "up")
    await bob.emit("chat:message", {"content": "hello from the other node"})
    heard = await alice.wait_for("chat:message", lambda m: m["senderId"] == bob.player_id)
    assert heard["content"] == "hello from the other node"
    await alice.emit("chat:message", {"content": "and back"})
    heard = await bob.wait_for("chat:message", lambda m: m["senderId"] == alice.player_id)
    assert heard["content"] == "and back"

    # Both were proxied: each node saw only its own client's requests, all from nginx.
    by_node = {a.upstream for a in proxied.accesses() if a.client == source}
    assert by_node == {proxied.upstream_of(other)}


def test_websocket_timeouts_and_headers_of_the_shipped_config() -> None:
    blocks = nginx_blocks(NGINX_CONF.read_text())
    server = blocks["server"]
    socket_path = blocks["location /socket.io/"]
    # A WebSocket is never cut by nginx's 60 s default while its pings (25 s) flow.
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        values = directive(socket_path, name)
        assert len(values) == 1, (name, values)
        assert seconds(values[0][0]) >= 300, (name, values)
    assert directive(socket_path, "proxy_buffering") == [["off"]]
    assert directive(server, "proxy_http_version") == [["1.1"]]
    headers = {words[0]: words[1] for words in directive(server, "proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # No location drops the server's headers by setting its own.
    for name, block in blocks.items():
        if name.startswith("location"):
            assert not directive(block, "proxy_set_header"), name
    assert ["default", "upgrade"] in blocks["map $http_upgrade $connection_upgrade"]
    upstream = blocks["upstream spacesync"]
    assert directive(upstream, "hash") == [["$remote_addr", "consistent"]]
    assert directive(upstream, "include") == [["spacesync/nodes.conf"]]
    # nginx closes its idle connections to a node before the node's 10 s header timeout does.
    assert seconds(directive(upstream, "keepalive_timeout")[0][0]) < 10

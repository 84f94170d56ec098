"""Node failure and node shutdown in a cluster (SPEC §9 "A node that dies ... is detected within
15 s by the others: its players are removed from their spaces with `player:left`, and their EXITs
are logged exactly once"; §7 EXIT logging; §12 graceful shutdown).

EXITs are only logged for sessions the app verified (guest tokens, `auth-<userId>` tokens; §7),
so these clusters run in production mode with tokens the app stand-in accepts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import pytest

from support.cluster import (
    DEAD_NODE_DEADLINE,
    Cluster,
    CuttableProxy,
    PrivateRedis,
    exit_calls,
    guest_join,
    http_status,
    kill_node,
    left_ids,
    metrics,
    presence_ids,
    remaining,
    sees_join,
    until_received,
    wait_exits,
    wait_ready,
    wait_status,
)
from support.ids import space_id, unique
from support.jsclient import Bridge, JsClient
from support.server import ServerProcess
from support.standins import AppStandIn

pytestmark = pytest.mark.cluster

# After the EXITs arrived, keep watching this long for a second (duplicate) one.
SETTLE = 2.0
TRANSPORT_LOSS = {"transport close", "transport error", "ping timeout"}


def assert_exit(call: Any, token: str, space: str) -> None:
    """SPEC §7: the guest EXIT body."""
    body = call.body
    assert body["sessionToken"] == token
    assert body["spaceId"] == space
    assert body["eventType"] == "EXIT"
    payload = body["payload"]
    assert isinstance(payload["reason"], str) and payload["reason"], payload
    duration = payload["durationSeconds"]
    assert isinstance(duration, int | float) and not isinstance(duration, bool), payload
    assert 0 <= duration < 120, payload


async def wait_left(
    watcher: JsClient, player_ids: list[str], deadline: float, killed_at: float
) -> float:
    """Wait (until ``deadline``) for `player:left` of each id; returns the seconds it took."""
    for player_id in player_ids:
        await until_received(
            watcher, "player:left", lambda m, p=player_id: m["id"] == p, remaining(deadline)
        )
    return time.monotonic() - killed_at


# Like a browser: reconnect by itself, quickly, when the connection drops.
RECONNECT: dict[str, Any] = {
    "reconnection": True,
    "reconnectionDelay": 200,
    "reconnectionDelayMax": 500,
    "randomizationFactor": 0,
}


async def wait_reconnected(client: JsClient, old_sid: str | None, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await client.state()
        if state["connected"] and state["sid"] and state["sid"] != old_sid:
            return str(state["sid"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"{client.id} did not reconnect within {timeout}s")


async def wait_exit_code(node: ServerProcess, timeout: float) -> int | None:
    assert node.proc is not None
    try:
        return await asyncio.to_thread(node.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        return None


# -- SIGKILL ---------------------------------------------------------------------------------


async def test_killed_node_players_are_removed_within_15s_with_one_exit_each(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    """SPEC §9, §7: node A is SIGKILLed while its players share spaces with players on nodes B
    and C. Within 15 s the players on B and C receive `player:left` for each of A's players
    (once, although two nodes survive), and `party:member_left` for A's party member; exactly
    one EXIT per A player is logged (guest event or visit API); `room:joined`, `/presence`,
    whispers and `/metrics` no longer know A or its players."""
    a, b, c = await cluster(3, NODE_ENV=None)
    space, other = space_id(), space_id()
    tokens = {name: unique("guest") for name in ("ws", "poll")}
    user = unique("user")
    bob = await guest_join(bridge, b, app_standin, space, "Bob")
    carol = await guest_join(bridge, c, app_standin, space, "Carol", transport="polling")
    dave = await guest_join(bridge, b, app_standin, other, "Dave")
    a_ws = await guest_join(bridge, a, app_standin, space, "OnA-ws", token=tokens["ws"])
    a_poll = await guest_join(
        bridge, a, app_standin, space, "OnA-poll", token=tokens["poll"], transport="polling"
    )
    a_member = await guest_join(bridge, a, app_standin, other, "OnA-member", token=f"auth-{user}")
    doomed = [a_ws.player_id, a_poll.player_id]
    await sees_join([bob, carol], a_ws, a_poll)
    await dave.wait_for("player:joined", lambda p: p["id"] == a_member.player_id)

    await a_ws.emit("party:create", {"name": "Crew"})
    party_id = (await a_ws.wait_for("party:joined"))["partyId"]
    await a_ws.emit("party:invite", {"partyId": party_id, "targetId": bob.player_id})
    await bob.wait_for("party:invited")
    await bob.emit("party:accept", {"partyId": party_id})
    await a_ws.wait_for("party:member_joined")
    assert app_standin.event_calls(space) == [] and app_standin.visit_calls(other) == []

    killed_at = await kill_node(a)
    deadline = killed_at + DEAD_NODE_DEADLINE
    took_b = await wait_left(bob, doomed, deadline, killed_at)
    took_c = await wait_left(carol, doomed, deadline, killed_at)
    await dave.wait_for(
        "player:left", lambda m: m["id"] == a_member.player_id, timeout=remaining(deadline)
    )
    left = await bob.wait_for("party:member_left", timeout=remaining(deadline))
    assert (left["partyId"], left["memberId"]) == (party_id, a_ws.player_id)

    found = await wait_exits(app_standin, space, list(tokens.values()), remaining(deadline + 3))
    await app_standin.wait_for_request(
        "DELETE", f"/api/spaces/{other}/visit", timeout=remaining(deadline + 3)
    )
    await asyncio.sleep(SETTLE)
    for token in tokens.values():
        calls = exit_calls(app_standin, space, token)
        assert len(calls) == 1, ("EXIT not exactly once", [c.body for c in calls])
        assert_exit(found[token][0], token, space)
    visits = app_standin.visit_calls(other)
    assert len(visits) == 1, [(v.path, v.headers.get("x-user-id")) for v in visits]
    assert visits[0].headers.get("x-user-id") == user

    for watcher in (bob, carol):
        assert sorted(left_ids(watcher)) == sorted(doomed), (watcher.id, left_ids(watcher))
    assert left_ids(dave) == [a_member.player_id]
    assert len(bob.received("party:member_left")) == 1
    print(f"dead node detected after {took_b:.1f}s (node-b), {took_c:.1f}s (node-c)")

    newcomer = await guest_join(bridge, c, app_standin, space, "Newcomer")
    listed = {p["id"] for p in newcomer.received("room:joined")[-1]["players"]}
    assert listed == {bob.player_id, carol.player_id, newcomer.player_id}
    for node in (b, c):
        assert sorted(await presence_ids(node, space)) == sorted(listed)
        assert await presence_ids(node, other) == [dave.player_id]
    await bob.emit("whisper:send", {"targetId": a_ws.player_id, "content": "are you there?"})
    await bob.wait_for("whisper:error")
    body = await metrics(b)
    assert body["cluster"]["nodes"] == 2, body["cluster"]
    assert body["cluster"]["connections"] == 4, body["cluster"]


async def test_restarted_node_brings_back_no_ghosts(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    """SPEC §9, §7: node A is SIGKILLed and started again at once under the same HOSTNAME and
    port (the same instance name). Its old players are removed: node B's player receives
    `player:left` for them, each old session's EXIT is logged exactly once (not by both the
    restarted node and the survivor), and they are listed nowhere; new joins on the restarted
    node work across the cluster."""
    a, b = await cluster(2, NODE_ENV=None)
    space = space_id()
    ghost_token = unique("guest")
    bob = await guest_join(bridge, b, app_standin, space, "Bob")
    ghost = await guest_join(bridge, a, app_standin, space, "Ghost", token=ghost_token)
    await bob.wait_for("player:joined", lambda p: p["id"] == ghost.player_id)

    killed_at = await kill_node(a)
    restarted = await cluster.restart(a)
    deadline = killed_at + DEAD_NODE_DEADLINE
    await bob.wait_for(
        "player:left", lambda m: m["id"] == ghost.player_id, timeout=remaining(deadline)
    )
    await wait_exits(app_standin, space, [ghost_token], remaining(deadline + 3))

    newcomer = await guest_join(bridge, restarted, app_standin, space, "Newcomer")
    listed = {p["id"] for p in newcomer.received("room:joined")[-1]["players"]}
    assert listed == {bob.player_id, newcomer.player_id}
    await bob.wait_for("player:joined", lambda p: p["id"] == newcomer.player_id)
    for node in (restarted, b):
        assert sorted(await presence_ids(node, space)) == sorted(listed)
    await newcomer.emit("player:move", {"x": 7, "y": 8, "direction": "up", "isMoving": False})
    assert (await bob.wait_for("player:moved"))["id"] == newcomer.player_id
    await bob.emit("chat:message", {"content": "welcome back"})
    assert (await newcomer.wait_for("chat:message"))["content"] == "welcome back"

    # Watch past the survivor's own dead-node deadline: still exactly one EXIT, one left.
    await asyncio.sleep(max(SETTLE, deadline + 1 - time.monotonic()))
    calls = exit_calls(app_standin, space, ghost_token)
    assert len(calls) == 1, [c.body for c in calls]
    assert_exit(calls[0], ghost_token, space)
    assert left_ids(bob) == [ghost.player_id]
    assert sorted(await presence_ids(b, space)) == sorted(listed)
    body = await metrics(b)
    assert body["cluster"]["nodes"] == 2, body["cluster"]


# -- SIGTERM ---------------------------------------------------------------------------------


async def test_graceful_shutdown_of_one_node(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn
) -> None:
    """SPEC §12, §9, §7: SIGTERM to node A in a two-node cluster: A's clients are disconnected
    at the transport level (not "io server disconnect", so the official client reconnects by
    itself), node B's player sees `player:left` for each of them, A exits 0 within 10 s, each
    A session's EXIT is logged exactly once (even after B's dead-node deadline), B counts one
    node; when a node comes back on that address the clients reconnect and can join again."""
    a, b = await cluster(2, NODE_ENV=None)
    space = space_id()
    tokens = [unique("guest"), unique("guest")]
    bob = await guest_join(bridge, b, app_standin, space, "Bob")
    leavers: list[JsClient] = []
    for token, transport in zip(tokens, ("websocket", "polling"), strict=True):
        client = await guest_join(
            bridge,
            a,
            app_standin,
            space,
            f"Leaver-{transport}",
            token=token,
            transport=transport,
            **RECONNECT,
        )
        leavers.append(client)
    await sees_join([bob], *leavers)
    old_sids = [c.sid for c in leavers]

    stopped_at = time.monotonic()
    a.send_signal(signal.SIGTERM)
    for client in leavers:
        reason = await client.wait_disconnect(timeout=10)
        assert reason in TRANSPORT_LOSS, reason
    await wait_left(bob, [c.player_id for c in leavers], stopped_at + 10, stopped_at)

    code = await wait_exit_code(a, remaining(stopped_at + 10))
    assert code == 0, (code, a.output()[-3000:])
    assert time.monotonic() - stopped_at <= 10.5
    assert a.find_logs(code="E6002")

    await wait_exits(app_standin, space, tokens, timeout=remaining(stopped_at + 10))
    # Past B's dead-node deadline: no second EXIT, no second player:left.
    await asyncio.sleep(max(SETTLE, stopped_at + DEAD_NODE_DEADLINE + 1 - time.monotonic()))
    for token in tokens:
        calls = exit_calls(app_standin, space, token)
        assert len(calls) == 1, [c.body for c in calls]
        assert calls[0].body["payload"]["reason"].startswith("disconnect:"), calls[0].body
    assert sorted(left_ids(bob)) == sorted(c.player_id for c in leavers)
    assert await presence_ids(b, space) == [bob.player_id]
    assert (await metrics(b))["cluster"]["nodes"] == 1

    successor = await cluster.restart(a)
    for client, old_sid, token in zip(leavers, old_sids, tokens, strict=True):
        await wait_reconnected(client, old_sid)
        await client.join(space, str(client.nickname), session_token=token)
        await bob.wait_for("player:joined", lambda p, c=client: p["id"] == c.player_id)
    assert sorted(await presence_ids(successor, space)) == sorted(
        [bob.player_id, *(c.player_id for c in leavers)]
    )


@pytest.mark.parametrize("then", ["detected", "restarted"])
async def test_player_who_moved_to_another_node_survives_the_old_nodes_death(
    bridge: Bridge, cluster: Cluster, app_standin: AppStandIn, then: str
) -> None:
    """SPEC §2.3, §9, §7: node A dies and its player, like a browser, at once reconnects to node
    B and joins the space again with the same session (before A is declared dead). The new
    socket replaces the old one (position kept); when A is later declared dead (or comes back
    under the same name), the player is NOT removed: nobody sees `player:left` for it, it stays
    listed, its new socket keeps working, and the replaced session logs no EXIT. A second
    player of node A who did not come back is removed as usual."""
    a, b = await cluster(2, NODE_ENV=None)
    space = space_id()
    token, lost_token = unique("guest"), unique("guest")
    watcher = await guest_join(bridge, b, app_standin, space, "Watcher")
    mover = await guest_join(bridge, a, app_standin, space, "Mover", token=token)
    lost = await guest_join(bridge, a, app_standin, space, "Lost", token=lost_token)
    await sees_join([watcher], mover, lost)
    await mover.emit("player:move", {"x": 640, "y": 64, "direction": "up", "isMoving": False})
    await until_received(watcher, "player:moved", lambda m: m["x"] == 640)
    await asyncio.sleep(0.3)

    killed_at = await kill_node(a)
    back = await guest_join(bridge, b, app_standin, space, "Mover", token=token)
    assert back.player_id == mover.player_id
    players = {p["id"]: p for p in back.received("room:joined")[-1]["players"]}
    assert (players[mover.player_id]["x"], players[mover.player_id]["y"]) == (640, 64)
    if then == "restarted":
        await cluster.restart(a)

    deadline = killed_at + DEAD_NODE_DEADLINE
    await until_received(
        watcher, "player:left", lambda m: m["id"] == lost.player_id, remaining(deadline)
    )
    await wait_exits(app_standin, space, [lost_token], remaining(deadline + 3))
    await asyncio.sleep(max(SETTLE, deadline + 1 - time.monotonic()))

    assert left_ids(watcher) == [lost.player_id], "the player who came back was removed"
    assert back.player_id not in left_ids(back)
    assert sorted(await presence_ids(b, space)) == sorted([watcher.player_id, mover.player_id])
    await back.emit("player:move", {"x": 1, "y": 2, "direction": "down", "isMoving": False})
    assert (await watcher.wait_for("player:moved", lambda m: m["x"] == 1))["id"] == back.player_id
    assert exit_calls(app_standin, space, token) == [], "EXIT logged for a replaced session"
    assert len(exit_calls(app_standin, space, lost_token)) == 1

    await back.emit("leave:space")
    await watcher.wait_for("player:left", lambda m: m["id"] == back.player_id)
    await wait_exits(app_standin, space, [token], timeout=5)
    await asyncio.sleep(0.5)
    assert len(exit_calls(app_standin, space, token)) == 1


# -- network cut -----------------------------------------------------------------------------


async def test_node_cut_off_from_redis_is_removed_then_rejoins_consistently(
    bridge: Bridge,
    private_redis: PrivateRedis,
    redis_link: CuttableProxy,
    cluster: Cluster,
    app_standin: AppStandIn,
) -> None:
    """SPEC §9 ("A node that dies (killed, network cut) is detected within 15 s ... EXITs are
    logged exactly once"; "A Redis outage must not crash a node"), §7: node A's link to Redis
    is cut (a black hole) while node B keeps it. A keeps serving its own players and reports
    503 on `/health/ready`; within 15 s B's player sees `player:left` for A's players and one
    EXIT per session is logged. When the link heals, A is ready again and the cluster is
    consistent: A's still-connected players are never told that they themselves left, B's
    player sees them again if they are still in the space, and no session logs a second EXIT
    (here: when such a player later leaves)."""
    a = await cluster.add("node-a", NODE_ENV=None, REDIS_URL=redis_link.url(0))
    b = await cluster.add("node-b", NODE_ENV=None, REDIS_URL=private_redis.url(0))
    space = space_id()
    bob = await guest_join(bridge, b, app_standin, space, "Bob")
    tokens = {"Alice": unique("guest"), "Carol": unique("guest")}
    alice = await guest_join(bridge, a, app_standin, space, "Alice", token=tokens["Alice"])
    carol = await guest_join(bridge, a, app_standin, space, "Carol", token=tokens["Carol"])
    await sees_join([bob], alice, carol)
    sids = {c.player_id: c.sid for c in (alice, carol)}

    redis_link.cut()
    cut_at = time.monotonic()
    await wait_status(a, "/health/ready", 503, timeout=6)
    await alice.emit("player:move", {"x": 33, "y": 44, "direction": "up", "isMoving": False})
    await carol.wait_for("player:moved", lambda m: m["x"] == 33)
    deadline = cut_at + DEAD_NODE_DEADLINE
    await wait_left(bob, [alice.player_id, carol.player_id], deadline, cut_at)
    await wait_exits(app_standin, space, list(tokens.values()), remaining(deadline + 3))
    assert a.running and await http_status(a, "/health") == 200

    redis_link.heal()
    await wait_ready(a, 10)
    await asyncio.sleep(3.0)

    problems: list[str] = []
    on_a = {alice.player_id: "Alice", carol.player_id: "Carol"}
    for client in (alice, carol):
        told_gone = [on_a[i] for i in left_ids(client) if i in on_a]
        if told_gone:
            notices = [m["content"] for m in client.received("chat:system")]
            problems.append(
                f"{client.nickname} (connected to node A all along) received player:left for "
                f"{told_gone} (players of its own node, still connected) after the link "
                f"healed; its chat:system notices: {notices}"
            )
    still_here: list[JsClient] = []
    for client in (alice, carol):
        state = await client.state()
        if state["connected"] and state["sid"] == sids[client.player_id]:
            still_here.append(client)
    listed = await presence_ids(b, space)
    for client in still_here:
        back_again = [m for m in bob.received("player:joined") if m["id"] == client.player_id]
        if client.player_id in listed and len(back_again) < 2:
            problems.append(
                f"/presence on node B lists {client.nickname} again, but Bob never received a "
                f"second player:joined for it (Bob's screen lacks a listed player)"
            )
    if still_here:
        await still_here[0].emit("leave:space")
        await asyncio.sleep(2.0)
    for name, token in tokens.items():
        calls = exit_calls(app_standin, space, token)
        if len(calls) != 1:
            problems.append(
                f"{name}: {len(calls)} EXITs for one session: "
                f"{[(c.body['payload'], c.headers.get('idempotency-key')) for c in calls]}"
            )
    assert not problems, "\n".join(problems)

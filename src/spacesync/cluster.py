"""Cluster mode (SPEC §9): fan-out between nodes and node liveness, over Redis.

:class:`RedisBus` (the cluster's :class:`~spacesync.bus.Bus`) carries what one node sends to
the players and the handlers of the others. Unlike
python-socketio's ``AsyncRedisManager`` (every emit pickled and published on one channel that
every node reads), each space has a channel of its own, followed only by the nodes that serve
players of that space, and what travels is the Socket.IO packet already encoded for the
clients, so a receiving node writes it out without decoding it. Positions travel once per
space tick: one message with every position of that tick.

:class:`NodeMonitor` writes this node's heartbeat, declares nodes that stopped beating dead and
removes their players, and notices Redis going away and coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from .bus import AlreadyRegistered, BusHandler
from .observability.logging import log
from .state import keys
from .state.base import Departed, StoreUnavailable
from .state.keys import SEP, node_channel, space_channel
from .state.link import RedisLink
from .state.redis import REDIS_ERRORS, RedisStore

HEARTBEAT_SECONDS = 2.0
DEAD_AFTER_SECONDS = 10.0
"""A node whose heartbeat is older than this is dead: with the heartbeat period and the check
period, a killed node is noticed within 12 s (SPEC §9 asks for 15 s)."""
DOUBT_AFTER_SECONDS = DEAD_AFTER_SECONDS / 2
"""A node whose last confirmed heartbeat is older than this (it was frozen, or its event loop
stalled) shares nothing until its next heartbeat says whether the others removed its players."""
RETRY_SECONDS = 0.5
REAPED_MEMORY_SECONDS = 24 * 3600
RECONCILE_SECONDS = 10.0
"""How often a node compares its roster entries with its live sockets (an entry without a
socket is removed at its second sighting, so within two periods)."""
MAX_PENDING_PUBLISHES = 50_000

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local added = redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return {now, added}
"""


class RedisBus:
    """Redis pub/sub between the nodes: one channel per space, one per node.

    A failed Redis call marks ``link`` down (the store then serves this node's players alone);
    while the link is in doubt, what is published is held for the next heartbeat."""

    def __init__(self, client: aioredis.Redis, node: str, link: RedisLink) -> None:
        self.redis = client
        self.node = node
        self.link = link
        self._handler: BusHandler | None = None
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.connected = False
        self._origin = node.encode()
        self._doubtful: deque[tuple[str, bytes]] = deque()
        self._spaces: set[str] = set()
        self._pubsub: Any = None
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._publishing = False
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, handler: BusHandler) -> None:
        """The one handler of what the other nodes send (see :class:`~spacesync.bus.Bus`)."""
        if self._handler is not None:
            raise AlreadyRegistered("the bus already has a handler")
        self._handler = handler

    # -- following spaces ----------------------------------------------------------------------

    async def watch(self, space_id: str) -> None:
        self._spaces.add(space_id)
        if self._pubsub is not None and self.connected:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.subscribe(space_channel(space_id))

    async def unwatch(self, space_id: str) -> None:
        self._spaces.discard(space_id)
        if self._pubsub is not None and self.connected:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._pubsub.unsubscribe(space_channel(space_id))

    # -- sending -------------------------------------------------------------------------------

    def publish_event(
        self,
        space_id: str,
        packet: bytes,
        players: list[str] | None,
        about: str | None = None,
    ) -> None:
        """A Socket.IO packet for the space's players (or only ``players``) on other nodes.

        ``about``: the player a departure notice is about. A node that holds that player live
        drops the notice: it comes from a node that took this one for dead, and the player is
        told in another way (its socket is closed, and it joins again)."""
        header: dict[str, Any] = {"k": "e", "o": self.node, "s": space_id}
        if players is not None:
            header["p"] = players
        if about is not None:
            header["a"] = about
        self._publish(space_channel(space_id), orjson.dumps(header) + b"\n" + packet)

    def publish_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        """One tick of ``player:moved`` payloads, already encoded, one per line."""
        header = orjson.dumps({"k": "m", "o": self.node, "s": space_id, "i": ids})
        self._publish(space_channel(space_id), header + b"\n" + b"\n".join(bodies))

    def publish_evict(self, node: str, space_id: str, player_id: str, sid: str) -> None:
        """Ask ``node`` to close ``sid``: its player joined again through this node."""
        header = {"k": "x", "o": self.node, "s": space_id, "p": player_id, "sid": sid}
        self._publish(node_channel(node), orjson.dumps(header) + b"\n")

    def publish_signal(self, space_id: str, body: dict[str, Any]) -> None:
        """An order about players of a space for every node serving it (a kick, a mute): on
        the space's channel, so it reaches whichever node holds the player without anyone
        having to know which one."""
        header = {"k": "c", "o": self.node, "s": space_id}
        self._publish(space_channel(space_id), orjson.dumps(header) + b"\n" + orjson.dumps(body))

    def _publish(self, channel: str, message: bytes) -> None:
        if not self.connected or len(self._outbox) >= MAX_PENDING_PUBLISHES:
            self.dropped += 1
            return
        if self.link.in_doubt():
            # Perhaps from players the others removed as dead: held for the next heartbeat.
            if len(self._doubtful) >= MAX_PENDING_PUBLISHES:
                self.dropped += 1
            else:
                self._doubtful.append((channel, message))
            return
        self._outbox.append((channel, message))
        self._wake.set()

    def settle_doubt(self, drop: bool) -> None:
        """A heartbeat confirmed this node: send what was held meanwhile, or drop it if the
        others had declared the node dead (its players were removed and told to everyone)."""
        if not self._doubtful:
            return
        if drop:
            self.dropped += len(self._doubtful)
            self._doubtful.clear()
            return
        self._outbox.extend(self._doubtful)
        self._doubtful.clear()
        self._wake.set()

    async def _publisher(self) -> None:
        """Publishes in the order things were sent, many messages per round trip."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 512))]
                self._publishing = True
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, message in batch:
                            pipe.publish(channel, message)
                        await pipe.execute()
                    self.published += len(batch)
                except REDIS_ERRORS:
                    self.dropped += len(batch)
                finally:
                    self._publishing = False

    async def drain(self, timeout: float) -> None:
        """Wait until everything sent so far has been published, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while (self._outbox or self._publishing) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- receiving -----------------------------------------------------------------------------

    async def _subscribe_all(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        channels = [node_channel(self.node), *(space_channel(s) for s in self._spaces)]
        await self._pubsub.subscribe(*channels)
        self.connected = True

    async def _reader(self) -> None:
        while True:
            try:
                if not self.connected:
                    await self._subscribe_all()
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.connected = False
                self._outbox.clear()
                self.link.mark_down(exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                await self._dispatch(message["data"])
            except Exception as exc:
                log.error("E3003", "A message from another node could not be handled", exc=exc)

    async def _dispatch(self, data: bytes) -> None:
        head, _, body = data.partition(b"\n")
        header = orjson.loads(head)
        if header.get("o") == self.node:
            return
        self.received += 1
        kind = header.get("k")
        handler = self._handler
        if handler is None:
            return
        if kind == "m":
            handler.deliver_moves(header["s"], body.split(b"\n"), header["i"])
        elif kind == "e":
            about = header.get("a")
            if about is not None and handler.holds(header["s"], about):
                return
            handler.deliver_event(header["s"], body, header.get("p"))
        elif kind == "x":
            await handler.evict(header["s"], header["p"], header["sid"])
        elif kind == "c":
            await handler.signal(header["s"], orjson.loads(body))

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reader()), loop.create_task(self._publisher())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


class ClusterMember(Protocol):
    """What the node monitor asks of the node's handlers."""

    async def depart_ghost(self, departed: Departed, reason: str, *, log_exit: bool) -> None: ...

    async def announce_restored(self, space_id: str, player: Any) -> None: ...

    async def drop_reaped(self, entries: set[tuple[str, str, str]]) -> None: ...

    async def party_lost(self, space_id: str, player_id: str, party_id: str) -> None: ...

    def submit_exit(self, event: Any) -> None: ...

    def socket_count(self) -> int: ...

    def holds_socket(self, space_id: str, player_id: str, sid: str) -> bool: ...


class NodeMonitor:
    """This node's heartbeat, the detection of dead nodes, and Redis outages."""

    def __init__(
        self,
        client: aioredis.Redis,
        store: RedisStore,
        bus: RedisBus,
        member: ClusterMember,
        node: str,
        name: str,
    ) -> None:
        self.redis = client
        self.store = store
        self.link = store.link
        self.bus = bus
        self.member = member
        self.node = node
        self.name = name
        self.nodes_lost = 0
        self._beat = client.register_script(_HEARTBEAT)
        self._task: asyncio.Task[None] | None = None
        self._orphans: set[tuple[str, str, str]] = set()
        self._reconciled_at = time.monotonic()

    @property
    def outages(self) -> int:
        """Times Redis became unreachable (see :class:`~spacesync.state.link.RedisLink`)."""
        return self.link.outages

    async def start(self) -> None:
        await self.beat()
        if self.link.healthy:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._reap_predecessors()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS if self.link.healthy else RETRY_SECONDS)
            try:
                await self.beat()
                if self.link.healthy:
                    await self._reap_dead()
                if self.link.healthy and time.monotonic() - self._reconciled_at >= (
                    RECONCILE_SECONDS
                ):
                    self._reconciled_at = time.monotonic()
                    await self._reconcile()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.link.mark_down(exc)
            except Exception as exc:
                log.error("E6003", "Cluster housekeeping failed", exc=exc)

    async def beat(self) -> None:
        """Write the heartbeat; after an outage (or if the others took this node for dead),
        write this node's players back before serving from Redis again."""
        figures = orjson.dumps(
            {
                "name": self.name,
                "sockets": self.member.socket_count(),
                "players": len(self.store.local_players()),
            }
        )
        try:
            _, added = await self._beat(
                keys=[keys.nodes(), keys.node_index(), keys.node_figures(self.node)],
                args=[self.node, figures, int(DEAD_AFTER_SECONDS * 3000)],
            )
            reaped = False
            if added or not self.link.healthy or self.store.pending_offline():
                reaped = await self._restore()
            else:
                # Redis kept its data since the last beat: copies other nodes made stale (a
                # recording stopped by a staff member there) are dropped before a restart of
                # Redis could make this node write them back.
                await self.store.refresh_companions()
        except REDIS_ERRORS as exc:
            self.link.mark_down(exc)
            return
        self.link.confirm()
        self.bus.settle_doubt(drop=reaped)

    async def _restore(self) -> bool:
        """Write this node's state back; True if the others had removed its players."""
        reaped = await self.store.reaped_here()
        if reaped:
            # The others declared this node dead (it was cut off): they removed these players,
            # told everyone and logged their EXITs. Their sockets are closed, and the official
            # client reconnects and joins again.
            await self.member.drop_reaped(reaped)
            log.error(
                "E2002",
                "This node was declared dead by the others while it was cut off from Redis; "
                "its players are reconnected",
                playersDropped=len(reaped),
            )
        restored = await self.store.restore(reaped)
        for space_id, player in restored.added:
            await self.member.announce_restored(space_id, player)
        for gone in restored.departed:
            await self.member.depart_ghost(gone, "disconnect:unknown", log_exit=False)
        for event in restored.exits:
            self.member.submit_exit(event)
        for space_id, player_id, party_id in restored.lost_parties:
            await self.member.party_lost(space_id, player_id, party_id)
        if self.link.recovered():
            log.info(
                "I6004",
                "Redis is reachable again; this node's players were written back",
                restored=len(restored.added),
                departed=len(restored.departed),
            )
        return bool(reaped)

    async def _reconcile(self) -> None:
        """Remove what this node wrote for players whose socket it no longer has.

        Every roster entry has an owner that removes it: the node holding its socket, or the
        others once that node is dead (:meth:`_reap`). On a live node an entry could still
        outlive its socket if its departure went astray (a failure half-way through it), and
        nothing would ever remove it: no TTL, and the node keeps beating. So the node compares
        its entries (in Redis and in its own copy) with its live sockets; one without a socket
        at two passes in a row (not a join or leave under way) is removed like a dead node's
        player: ``player:left`` for everyone, its EXIT logged once.
        """
        member = self.member
        index = await self.redis.hgetall(keys.node_players(self.node))
        entries = set()
        for field, sid in index.items():
            space_id, _, player_id = field.decode().partition(SEP)
            entries.add((space_id, player_id, sid.decode()))
        entries.update((s, p.id, p.sid) for s, p in self.store.local_players())
        orphans = {entry for entry in entries if not member.holds_socket(*entry)}
        confirmed, self._orphans = orphans & self._orphans, orphans - self._orphans
        removed = 0
        for space_id, player_id, sid in confirmed:
            self.store.forget_local(space_id, player_id, sid)
            try:
                departed = await self.store.remove_for(space_id, player_id, sid)
            except StoreUnavailable:
                return
            if departed is not None:
                removed += 1
                await member.depart_ghost(departed, "disconnect:unknown", log_exit=True)
        if confirmed:
            log.warn(
                "E2006",
                "Roster entries without a live socket on this node were removed",
                entries=len(confirmed),
                playersRemoved=removed,
            )

    async def _reap_predecessors(self) -> None:
        """Earlier lives of this node (same name and port) are dead: remove their players now."""
        stem = self.node.rsplit(":", 1)[0] + ":"
        for raw in await self.redis.smembers(keys.node_index()):
            other = raw.decode()
            if other != self.node and other.startswith(stem):
                await self._reap(other, "restarted")

    async def _reap_dead(self) -> None:
        since = self.link.connected_since
        if since is None:
            return
        if time.monotonic() - since < DEAD_AFTER_SECONDS:
            return  # just back from an outage: the others have not had a chance to beat yet
        now_ms = int((await self.redis.time())[0]) * 1000
        beats = dict(await self.redis.zrange(keys.nodes(), 0, -1, withscores=True))
        owners = await self.redis.smembers(keys.node_index())
        limit = DEAD_AFTER_SECONDS * 1000
        for raw in set(beats) | set(owners):
            other = raw.decode()
            if other == self.node:
                continue
            seen = beats.get(raw)
            if seen is None or now_ms - seen > limit:
                await self._reap(other, "stopped beating")

    async def _reap(self, other: str, why: str) -> None:
        index = await self.redis.hgetall(keys.node_players(other))
        removed: list[str] = []
        for field, sid in index.items():
            space_id, _, player_id = field.decode().partition(SEP)
            departed = await self.store.remove_for(space_id, player_id, sid.decode())
            if departed is None:
                continue  # another node removed it first, or it joined again elsewhere
            removed.append(SEP.join((space_id, player_id, sid.decode())))
            await self.member.depart_ghost(departed, "disconnect:server lost", log_exit=True)
        async with self.redis.pipeline(transaction=True) as pipe:
            if removed:
                # If the node was only cut off, it finds out from this when it is back.
                pipe.sadd(keys.reaped(other), *removed)
                pipe.expire(keys.reaped(other), REAPED_MEMORY_SECONDS)
            pipe.srem(keys.node_index(), other)
            pipe.zrem(keys.nodes(), other)
            pipe.delete(keys.node_players(other), keys.node_figures(other))
            await pipe.execute()
        self.nodes_lost += 1
        level = log.error if removed else log.warn
        level(
            "E2002",
            f"Cluster node {other} {why}; its players were removed",
            lostNode=other,
            playersRemoved=len(removed),
        )

    async def cluster_figures(self) -> dict[str, Any]:
        """Live nodes with their socket counts (for ``/metrics``)."""
        now_ms = int((await self.redis.time())[0]) * 1000
        beats = await self.redis.zrange(keys.nodes(), 0, -1, withscores=True)
        alive = [n.decode() for n, seen in beats if now_ms - seen <= DEAD_AFTER_SECONDS * 1000]
        figures = await self.redis.mget([keys.node_figures(n) for n in alive]) if alive else []
        nodes = []
        for node, raw in zip(alive, figures, strict=True):
            data = orjson.loads(raw) if raw else {}
            nodes.append(
                {
                    "node": node,
                    "name": data.get("name"),
                    "sockets": data.get("sockets", 0),
                    "players": data.get("players", 0),
                }
            )
        return {"nodes": nodes}

    async def leave_cluster(self) -> None:
        """A node stopping cleanly takes itself out, so the others do not wait to reap it."""
        with contextlib.suppress(*REDIS_ERRORS):
            left_behind = await self.redis.hlen(keys.node_players(self.node))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.nodes(), self.node)
                pipe.delete(keys.node_figures(self.node))
                if not left_behind:  # else the others remove them as from a dead node
                    pipe.srem(keys.node_index(), self.node)
                await pipe.execute()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

"""Assembles a spacesync node: Socket.IO, HTTP routes, state, integrations, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import __version__, protocol
from .admission import ADDRESS_KEY, Admission
from .bus import Bus, LocalBus
from .cluster import DOUBT_AFTER_SECONDS, NodeMonitor, RedisBus
from .config import Settings
from .fanout import LAGGING_BYTES, Broadcaster
from .handlers.events import SpaceServer
from .integrations.app_api import AppClient, ExitOutbox
from .integrations.discord import DiscordAlerter
from .integrations.exit_journal import ExitJournal
from .observability.abuse import AbuseCounters
from .observability.document import metrics_document
from .observability.logging import install_alert_handler, log
from .observability.metrics import LoopLag, ProcessFigures
from .observability.prom import JSON, NodeMetrics, wanted_format
from .playground import install as install_playground
from .state.base import StateStore
from .state.link import RedisLink
from .state.memory import MemoryStore
from .state.redis import RedisStore
from .storage import SchemaError, Storage, StorageError, open_storage
from .texts import Catalog
from .transport import Connection, EngineOptions, SocketServer
from .transport.engine import SERVER_SHUTDOWN
from .transport.http import WEBSOCKET_ROUTES, Listener, Reply, RequestHead

PING_INTERVAL = 25
PING_TIMEOUT = 10
MAX_MESSAGE_BYTES = 64 * 1024
HOUSEKEEPING_SECONDS = 30.0
SHUTDOWN_BUDGET = 7.5
CLOSE_GRACE = 0.3
REDIS_TIMEOUT = 1.0
STORAGE_RETRY = 5.0
"""Seconds between attempts to open a database that was down at start."""
REDIS_CONNECTIONS = 64
SOCKETIO_PATH = "/socket.io/"
_GET_PATHS = frozenset({"/", "/health", "/health/ready", "/metrics"})
_JSON_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Cache-Control": "no-store",
}
_PRIVATE_HEADERS = {"Cache-Control": "no-store"}
"""Headers of the internal routes when ``INTERNAL_API_TOKEN`` protects them: no
``Access-Control-Allow-Origin: *``, so no web page can read them from a visitor's browser."""


def _json(
    data: Any, status: int = 200, pretty: bool = False, headers: dict[str, str] = _JSON_HEADERS
) -> web.Response:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return web.Response(
        body=orjson.dumps(data, option=option),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _is_internal(path: str) -> bool:
    return path == "/metrics" or path.startswith(("/presence/", "/spaces/"))


HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100


def _history_query(query: Any) -> tuple[int, datetime | None]:
    """``limit`` (1–100, default 50) and ``before`` (ISO 8601 time, or milliseconds since the
    epoch) of a history request; ``ValueError`` with a message for the client otherwise."""
    raw_limit = query.get("limit", "")
    limit = HISTORY_DEFAULT_LIMIT
    if raw_limit != "":
        if not raw_limit.isascii() or not raw_limit.isdigit() or len(raw_limit) > 4:
            raise ValueError("limit must be an integer from 1 to 100")
        limit = int(raw_limit)
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise ValueError("limit must be an integer from 1 to 100")
    raw_before = query.get("before", "")
    if raw_before == "":
        return limit, None
    try:
        if raw_before.isascii() and raw_before.isdigit() and len(raw_before) <= 15:
            before = datetime.fromtimestamp(int(raw_before) / 1000, UTC)
        elif len(raw_before) <= 40:
            before = datetime.fromisoformat(raw_before)
            if before.tzinfo is None:
                before = before.replace(tzinfo=UTC)
        else:
            raise ValueError(raw_before)
    except (ValueError, OverflowError, OSError):
        raise ValueError("before must be an ISO 8601 time or milliseconds since 1970") from None
    return limit, before


def _iso(value: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``, as JavaScript's ``toISOString`` writes it (the app's route
    answers in this form)."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


class OtherNodes:
    """What this node does with what the other nodes publish (the bus's one handler): events
    and positions go to this node's sockets, orders to the handlers."""

    def __init__(self, out: Broadcaster, server: SpaceServer) -> None:
        self.out = out
        self.server = server

    def deliver_event(self, space_id: str, packet: bytes, players: list[str] | None) -> None:
        self.out.deliver_event(space_id, packet, players)

    def deliver_moves(self, space_id: str, bodies: list[bytes], ids: list[str]) -> None:
        self.out.deliver_moves(space_id, bodies, ids)

    def holds(self, space_id: str, player_id: str) -> bool:
        return self.out.holds(space_id, player_id)

    async def evict(self, space_id: str, player_id: str, sid: str) -> None:
        await self.server.evict_replaced_here(space_id, player_id, sid)

    async def signal(self, space_id: str, body: dict[str, Any]) -> None:
        await self.server.moderation.on_signal(space_id, body)


class SpacesyncNode:
    """One running node. ``start()`` binds the port; ``shutdown()`` follows SPEC §12."""

    def __init__(self, settings: Settings, store: StateStore | None = None) -> None:
        self.settings = settings
        self.figures = ProcessFigures()
        self.loop_lag = LoopLag()
        self.node_id = f"{settings.hostname}:{settings.port}:{secrets.token_hex(4)}"
        self.redis: aioredis.Redis | None = None
        redis_store: RedisStore | None = None
        redis_bus: RedisBus | None = None
        self.bus: Bus = LocalBus()
        """To the other nodes: Redis pub/sub in a cluster; on a node alone, nobody."""
        if store is None and settings.redis_url is not None:
            # A bounded pool that makes callers wait for a free connection: a burst of joins
            # must queue for Redis, not fail (the default pool raises past its size).
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=None,  # waiting for a connection is not an outage; operations time out
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection may predate a restart
            )
            self.redis = aioredis.Redis(connection_pool=pool)
            link = RedisLink(doubt_after=DOUBT_AFTER_SECONDS)
            redis_bus = RedisBus(self.redis, self.node_id, link)
            redis_store = RedisStore(self.redis, self.node_id, link=link, watcher=redis_bus)
            self.bus = redis_bus
            store = redis_store
        self.store: StateStore = store or MemoryStore()
        self.storage: Storage | None = None
        """Opened by :meth:`start` (chat history); ``None`` until then or if it failed."""
        self._storage_retry: asyncio.Task[None] | None = None
        self.abuse = AbuseCounters()
        self.admission = Admission(
            self.abuse,
            max_sessions=settings.max_connections_per_ip,
            handshakes=settings.handshakes_per_ip,
            trusted_proxies=settings.trusted_proxies,
        )
        buffer_limit = settings.client_buffer_limit
        self.sio = SocketServer(
            EngineOptions(
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                max_payload=MAX_MESSAGE_BYTES,
                cors_origins=list(settings.cors_origins),
                allow_own_origin=settings.development,  # the playground page
                buffer_limit=buffer_limit,
                lagging_bytes=min(LAGGING_BYTES, buffer_limit // 4),
            ),
            connect_timeout=settings.connect_timeout,
            recovery_window=settings.recovery_window,
            gate=self.admission,
            address_of=self._address,
            on_refused=self._refused_input,
            on_too_slow=self._too_slow,
        )
        """Socket.IO: a client's events are handled one at a time, in the order sent (SPEC
        §5); nothing binary is accepted."""
        self.app_client = AppClient(
            settings.app_url, settings.app_api_secret, settings.verify_timeout
        )
        self.exits = ExitOutbox(
            self.app_client,
            ExitJournal(settings.exit_outbox_path),
            grace=settings.exit_grace,
            arbiter=redis_store,  # in a cluster, a rejoin on any node continues the stay
        )
        self.alerter = DiscordAlerter(settings.discord_webhook_url, settings.hostname)
        self.broadcaster = Broadcaster(self.sio, self.bus)
        self.texts = Catalog(settings.locale)
        """What players read (notices, errors), in ``LOCALE``; handed to whatever answers them."""
        self.server = SpaceServer(
            self.sio,
            settings,
            self.store,
            self.broadcaster,
            self.app_client,
            self.exits,
            self.abuse,
            texts=self.texts,
        )
        self.bus.register(OtherNodes(self.broadcaster, self.server))
        self.monitor: NodeMonitor | None = None
        """Heartbeat, dead nodes and Redis outages (cluster mode only)."""
        if self.redis is not None and redis_store is not None and redis_bus is not None:
            self.monitor = NodeMonitor(
                self.redis, redis_store, redis_bus, self.server, self.node_id, settings.hostname
            )
        self.prom = NodeMetrics(self)
        """Every figure of ``GET /metrics``, in both of its forms."""
        self.prom.install()
        self.web = web.Application()
        self._add_routes()
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._deadlines: asyncio.Task[None] | None = None
        self._alert_handler: Any = None
        self.stopping = False
        token = settings.internal_api_token
        self._internal_token: bytes | None = token.encode() if token else None

    # -- HTTP ----------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        # No middleware: a middleware's frames would stay on the stack of every WebSocket for
        # the whole life of the connection (about 0.7 KB each); the checks live in the entry
        # points instead.
        r = self.web.router
        self.web[WEBSOCKET_ROUTES] = {SOCKETIO_PATH: self._websocket_entry}
        r.add_get(SOCKETIO_PATH, self._socketio_entry, allow_head=False)
        r.add_post(SOCKETIO_PATH, self._socketio_entry)
        r.add_get("/", self.health)
        r.add_get("/health", self.health)
        r.add_get("/health/ready", self.ready)
        r.add_get("/presence/{spaceId}", self.presence)
        r.add_get("/metrics", self.metrics)
        r.add_get("/spaces/{spaceId}/messages", self.history)
        install_playground(r, self.settings)
        r.add_route("*", "/{tail:.*}", self._fallback)

    async def _socketio_entry(self, request: web.Request) -> web.StreamResponse:
        """Long-polling requests (WebSockets arrive at :meth:`_websocket_entry`)."""
        refused = self._admit(request)
        if refused is not None:
            return _json(refused.body, status=refused.status)
        return await self.sio.handle(request)

    def _websocket_entry(self, request: RequestHead) -> Reply | None:
        """A WebSocket upgrade on the Socket.IO path, straight from the listener."""
        refused = self._admit(request)
        if refused is not None:
            return refused
        return self.sio.accept_websocket(request)

    def _admit(self, request: web.Request | RequestHead) -> Reply | None:
        """The checks before the engine sees a request: no JSONP; for a new session, none during
        shutdown and the per-address limits."""
        query = request.query
        if "j" in query:
            # JSONP polling answers with a script that any page may include; no client of this
            # server uses it, so it is refused rather than left as a way around CORS.
            self.admission.refused(
                "E2005", "jsonp", "JSONP polling refused", self._address(request)
            )
            return Reply(400, {"error": "JSONP polling is not supported"})
        if "sid" not in query:
            if self.stopping:
                # A new handshake during shutdown fails at the transport, so the official
                # client retries with backoff (a refused Socket.IO connect would not retry).
                return Reply(503, {"error": "Server is shutting down"})
            return self._refuse_handshake(request)
        return None

    def _address(self, request: web.Request | RequestHead) -> str:
        """The client address of ``request`` (``X-Forwarded-For`` from a trusted proxy)."""
        address = request.get(ADDRESS_KEY)
        if address is None:
            address = self.admission.address_of(request.remote, request.headers)
            request[ADDRESS_KEY] = address
        return str(address)

    def _refuse_handshake(self, request: web.Request | RequestHead) -> Reply | None:
        """``MAX_CONNECTIONS_PER_IP`` (open Engine.IO sessions) and ``HANDSHAKES_PER_IP`` (new
        ones per 10 s): a handshake past either is refused with 429, which the official client
        retries later with backoff."""
        address = self._address(request)
        reason = self.admission.check_handshake(address)
        if reason is None:
            return None
        if reason == "connectionsPerAddress":
            message = "Connection refused: too many connections from one address"
            limit = self.settings.max_connections_per_ip
        else:
            message = "Connection refused: too many new connections from one address"
            limit = self.settings.handshakes_per_ip
        self.admission.refused("E2005", reason, message, address, limit=limit)
        return Reply(429, {"error": "Too many connections from this address"})

    def _refused_input(self, conn: Connection, sid: str | None, kind: str, detail: str) -> None:
        """Input the transport closed a connection for (it is logged and counted here)."""
        if kind == "connectTimeout":
            self.admission.refused(
                "E2005",
                kind,
                "Connection closed: no Socket.IO connect within the time allowed",
                conn.address,
                seconds=self.settings.connect_timeout,
            )
        elif kind == "binaryPacket":
            self.admission.refused(
                "E3001",
                kind,
                f"Binary input refused: {detail}; connection closed",
                conn.address,
                socketId=sid or conn.sid,
            )
        else:
            self.admission.refused(
                "E3001",
                kind,
                f"Malformed Socket.IO packet ({detail}); connection closed",
                conn.address,
                socketId=sid or conn.sid,
            )

    def _too_slow(self, conn: Connection) -> None:
        log.warn(
            "E2005",
            "Client too slow: what it was sent passed the limit; disconnected",
            address=conn.address,
            limitBytes=self.settings.client_buffer_limit,
        )

    async def _join_deadlines(self) -> None:
        """A connected socket that has not joined a space ``JOIN_TIMEOUT`` after connecting (or
        after it left its space) is disconnected from Socket.IO, which the official client takes
        as final (no automatic reconnect); its connection is then held to ``CONNECT_TIMEOUT``
        again by the transport."""
        timeout = self.settings.join_timeout
        period = min(1.0, timeout / 4)
        waiting: dict[str, float] = {}
        while True:
            await asyncio.sleep(period)
            now = time.time()
            sessions = self.server.sessions
            for sid in [sid for sid in waiting if sessions.get(sid) is None]:
                del waiting[sid]
            for session in sessions.values():
                if session.joined or session.closing_reason is not None:
                    waiting.pop(session.sid, None)
                    continue
                since = waiting.setdefault(
                    session.sid, session.connected_at if session.joined_at == 0 else now
                )
                if now - since < timeout:
                    continue
                del waiting[session.sid]
                conn = self.sio.connection(session.sid)
                self.admission.refused(
                    "E2005",
                    "joinTimeout",
                    "Connection closed: no space joined within the time allowed",
                    conn.address if conn is not None else session.address,
                    socketId=session.sid,
                    seconds=timeout,
                )
                try:
                    await self.sio.disconnect(session.sid)
                except Exception as exc:
                    log.error("E6003", "Disconnecting an idle client failed", exc=exc)

    def _authorized(self, request: web.Request) -> bool:
        """With ``INTERNAL_API_TOKEN`` set, the internal routes need ``Authorization: Bearer
        <token>`` (compared in constant time); without it they are public."""
        token = self._internal_token
        if token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token):
            return True
        self.admission.refused(
            "E1003",
            "unauthorizedHttp",
            f"{request.method} {request.path} refused: missing or wrong bearer token",
            self._address(request),
        )
        return False

    def _unauthorized(self) -> web.Response:
        response = _json({"error": "Unauthorized"}, status=401, headers=_PRIVATE_HEADERS)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def _header_timeout(self, peer: str) -> None:
        """Slow request headers (logged with the peer address: without complete headers there
        is no ``X-Forwarded-For`` to read)."""
        self.admission.refused(
            "E2005",
            "headerTimeout",
            "Connection closed: request headers not received in time",
            peer,
            seconds=self.settings.header_timeout,
        )

    async def _fallback(self, request: web.Request) -> web.Response:
        """CORS preflights, and JSON answers for unknown paths and methods."""
        if request.method == "OPTIONS":
            if self._internal_token is not None and _is_internal(request.path):
                return web.Response(status=204, headers=_PRIVATE_HEADERS)
            return web.Response(status=204, headers=_JSON_HEADERS)
        path = request.path
        known = (
            path in _GET_PATHS
            or path.startswith(("/presence/", "/spaces/"))
            or path == SOCKETIO_PATH
        )
        if known:
            return _json({"error": "Method not allowed"}, status=405)
        return _json({"error": "Not found"}, status=404)

    async def health(self, request: web.Request) -> web.Response:
        return _json(
            {
                "status": "ok",
                "timestamp": int(time.time() * 1000),
                "uptime": round(self.figures.uptime, 3),
            }
        )

    async def ready(self, request: web.Request) -> web.Response:
        if self.stopping:
            return _json({"status": "shutting down"}, status=503)
        try:
            ok = await asyncio.wait_for(self.store.ready(), timeout=2.0)
        except Exception:
            ok = False
        if not self.bus.connected:
            ok = False
        if not ok:
            return _json({"status": "not ready"}, status=503)
        return _json({"status": "ready", "timestamp": int(time.time() * 1000)})

    async def presence(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        headers = _JSON_HEADERS if self._internal_token is None else _PRIVATE_HEADERS
        space_id = request.match_info["spaceId"]
        if not protocol.ID_RE.fullmatch(space_id):
            return _json({"error": "Invalid spaceId"}, status=400, headers=headers)
        players = await self.store.players(space_id)
        return _json(
            {
                "spaceId": space_id,
                "onlineUsers": [
                    {
                        "id": p.id,
                        "nickname": p.identity.nickname,
                        "avatarColor": p.identity.avatar_color,
                    }
                    for p in players
                ],
                "count": len(players),
                "timestamp": int(time.time() * 1000),
            },
            headers=headers,
        )

    async def history(self, request: web.Request) -> web.Response:
        """A space's recent public messages, for a deployment without the app's database.

        With ``DATABASE_URL`` the app's own history route reads the same rows (and knows who
        may see which whispers), so this route answers only from the SQLite file. Pages go
        back in time: ``before`` is the previous page's ``nextBefore``."""
        if not self._authorized(request):
            return self._unauthorized()
        headers = _JSON_HEADERS if self._internal_token is None else _PRIVATE_HEADERS
        space_id = request.match_info["spaceId"]
        if not protocol.ID_RE.fullmatch(space_id):
            return _json({"error": "Invalid spaceId"}, status=400, headers=headers)
        try:
            limit, before = _history_query(request.query)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400, headers=headers)
        storage = self.storage
        if storage is None:
            return _json({"error": "Chat history is unavailable"}, status=503, headers=headers)
        if storage.kind != "sqlite":
            return _json(
                {"error": "Chat history is served by the app"}, status=404, headers=headers
            )
        try:
            rows = await storage.recent_messages(space_id, limit + 1, before)
        except StorageError as exc:
            log.warn("E4006", f"Chat history could not be read: {exc}", spaceId=space_id)
            return _json({"error": "Chat history is unavailable"}, status=503, headers=headers)
        has_more = len(rows) > limit
        page = rows[1:] if has_more else rows
        if has_more and page and rows[0].created_at == page[0].created_at:
            # Messages of the same millisecond must not be split across two pages: ``before``
            # is exclusive, so the next page would skip the rest of them.
            cut = next((i for i, m in enumerate(page) if m.created_at != page[0].created_at), 0)
            page = page[cut:] if cut else page
        return _json(
            {
                "spaceId": space_id,
                "messages": [
                    {
                        "id": m.id,
                        "senderId": m.sender_id or "system",
                        "senderNickname": m.sender_name,
                        "content": m.content,
                        "timestamp": _iso(m.created_at),
                        "type": m.type.lower(),
                    }
                    for m in page
                ],
                "hasMore": has_more,
                "nextBefore": _iso(page[0].created_at) if has_more and page else None,
            },
            headers=headers,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """SPEC §10's JSON document, or, for an ``Accept`` naming Prometheus text or
        OpenMetrics (as Prometheus sends), the registry in that exposition format."""
        if not self._authorized(request):
            return self._unauthorized()
        headers = _JSON_HEADERS if self._internal_token is None else _PRIVATE_HEADERS
        refreshed = await self.prom.refresh()
        fmt = wanted_format(request.headers.get("Accept", ""))
        if fmt != JSON:
            body, content_type = self.prom.exposition(fmt)
            return web.Response(body=body, headers={**headers, "Content-Type": content_type})
        document = metrics_document(self, self.prom.samples(), refreshed)
        return _json(document, pretty=True, headers=headers)

    # -- life cycle ----------------------------------------------------------------------------

    async def _open_storage(self) -> None:
        """Open the chat history's database. A node without it still serves players (chat is
        delivered, only not kept), so a database that is down at start is logged, not fatal.
        A PostgreSQL database without FlowSpace's tables is a configuration mistake that no
        retry fixes: :class:`SchemaError` stops start-up (exit code 2)."""
        try:
            self.storage = await open_storage(self.settings)
        except SchemaError:
            raise
        except (StorageError, ValueError) as exc:
            log.error(
                "E4006",
                f"The storage could not be opened; trying again every {STORAGE_RETRY:.0f} s: {exc}",
            )
            self._storage_retry = asyncio.get_running_loop().create_task(self._reopen_storage())
            return
        self._use_storage(self.storage)

    def _use_storage(self, storage: Storage) -> None:
        self.prom.watch_storage(storage)
        self.server.storage = storage
        self.server.chat_log.storage = storage

    async def _reopen_storage(self) -> None:
        """A database that was down at start is opened as soon as it answers: until then chat
        is delivered but not kept and roles fall back to the app's or PARTICIPANT."""
        while not self.stopping:
            await asyncio.sleep(STORAGE_RETRY)
            try:
                storage = await open_storage(self.settings)
            except SchemaError as exc:
                log.error("E6003", f"The database does not have the tables spacesync needs: {exc}")
                return
            except (StorageError, ValueError):
                continue
            if self.stopping:
                await storage.close()
                return
            self.storage = storage
            self._use_storage(storage)
            log.info("I4005", "The storage is open", kind=storage.kind)
            return

    async def start(self) -> None:
        await self._open_storage()
        self.alerter.start()
        if self.alerter.enabled:
            self._alert_handler = install_alert_handler(self.alerter.observe)
        self.exits.start()
        self.loop_lag.start()
        # The listener holds each connection's first request to the header deadline; later
        # requests of a keep-alive connection must arrive within the same time after a response.
        self._runner = web.AppRunner(
            self.web,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=self.settings.header_timeout,
        )
        await self._runner.setup()
        self._listener = Listener(
            self._runner,
            self.settings.host,
            self.settings.port,
            header_timeout=self.settings.header_timeout,
            on_header_timeout=self._header_timeout,
        )
        await self._listener.start()
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        self._deadlines = asyncio.get_running_loop().create_task(self._join_deadlines())
        gc.collect()
        gc.freeze()  # start-up objects live as long as the process: keep them out of collections
        self.bus.start()
        if self.monitor is not None:
            await self.monitor.start()
        log.info(
            "E6001",
            f"spacesync listening on {self.settings.host}:{self.settings.port}",
            environment=self.settings.environment,
            port=self.settings.port,
            appUrl=self.settings.app_url,
            cluster=self.settings.redis_url is not None,
            clusterNode=self.node_id if self.monitor is not None else None,
            alerts=self.alerter.enabled,
            authSessions=self.settings.auth_sessions,
            version=__version__,
        )
        if self.settings.auth_sessions == "trust":
            # Error level, so it alerts at every start: anyone who types auth-<id> of another
            # user is that user until the setting is changed.
            log.error(
                "E1005",
                "AUTH_SESSIONS=trust: logged-in users' tokens are not verified; anyone can join "
                "as any user (and act with their role) by sending auth-<userId>. Use signed or "
                "verify",
            )
        if self._internal_token is None and not self.settings.development:
            log.warn(
                "E6004",
                "GET /metrics and GET /presence/{spaceId} are public; set INTERNAL_API_TOKEN "
                "to require a bearer token for them",
            )

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await self.store.housekeeping(time.time())
            except Exception as exc:
                log.error("E6003", "Housekeeping failed", exc=exc)
            self.admission.prune()
            self.server.notices.sweep()
            self._collect_garbage()

    def _collect_garbage(self) -> None:
        """A closed WebSocket leaves reference cycles behind (aiohttp keeps the exception of the
        failed close frame, with its traceback and frames); Python frees them only in a full
        collection, which comes rarely, so memory would creep up with every client that leaves.
        One full collection per housekeeping round keeps it flat; the objects of start-up are
        frozen out of it (``gc.freeze``), so it walks only what the clients created."""
        started = time.perf_counter()
        freed = gc.collect()
        log.debug(
            "I6005",
            "Garbage collected",
            objects=freed,
            milliseconds=round((time.perf_counter() - started) * 1000, 1),
        )

    async def shutdown(self, signal_name: str = "SIGTERM") -> None:
        """Stop accepting, tell clients, settle what is owed, and close (SPEC §12)."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET
        self.stopping = True
        self.server.shutting_down = True
        log.info("E6002", f"Shutting down on {signal_name}", sockets=self.server.socket_count())
        # New Socket.IO connections are refused from here on (and /health/ready says 503); the
        # listener stays open a moment so that long-polling clients can collect their CLOSE.
        with contextlib.suppress(Exception):
            await self.server.broadcast_system(self.texts.text("notice.restarting"))
        # Closing the transport (not a Socket.IO disconnect) makes clients reconnect by themselves.
        # A WebSocket is closed at once. A long-polling client collects the notice, then a CLOSE
        # packet in a poll of its own (the official client drops messages that arrive in the
        # same poll as a CLOSE, and closing the session first would answer its poll with a 400),
        # and is closed for good once it has collected that or the grace period is over.
        self.broadcaster.write_out()
        polling: list[Connection] = []
        for session in list(self.server.sessions.values()):
            session.closing_reason = "disconnect:server shutting down"
            conn = self.sio.connection(session.sid)
            try:
                if conn is None:
                    await self.server.on_disconnect(session.sid, "server shutting down")
                elif conn.direct:
                    conn.close(SERVER_SHUTDOWN)
                else:
                    polling.append(conn)
            except Exception as exc:
                log.error(
                    "E6002",
                    "Closing a client during shutdown failed",
                    exc=exc,
                    socketId=session.sid,
                )
        if polling:
            await self._wait_for_polls(polling, min(deadline - 5, time.monotonic() + 1.0))
            for conn in polling:
                conn.close(SERVER_SHUTDOWN)  # its CLOSE packet goes in a poll of its own
            await self._wait_for_polls(polling, min(deadline - 4, time.monotonic() + 1.0))
            # A long-poll that took its last packets still has to write its HTTP response.
            await asyncio.sleep(CLOSE_GRACE)
        await self.sio.shutdown()  # clients held for recovery are not coming back now
        if self._listener is not None:
            await self._listener.stop()
        # Departures already under way (a disconnect a moment before the signal) end with
        # their EXIT in the outbox; in a cluster each awaits Redis a few times before that.
        until = deadline - 3.0
        while self.server.sessions and time.monotonic() < until:
            await asyncio.sleep(0.02)
        await self.server.departures_settled(until - time.monotonic())
        if self.monitor is not None:
            # Each departure is removed from Redis and told to the other nodes before this
            # node leaves the cluster; whatever is left then is removed by the others.
            await self.bus_settle()
            await self.monitor.leave_cluster()
        left = await self.exits.drain(max(0.5, deadline - time.monotonic() - 1.5))
        if left and self.exits.durable:
            log.warn(
                "E4001",
                f"{left} EXIT events are not delivered yet; they stay in the outbox and are sent "
                "when this node starts again",
                undelivered=left,
                outbox=self.settings.exit_outbox_path,
            )
        elif left:
            log.error(
                "E4001",
                f"{left} EXIT events could not be delivered before shutdown",
                no_alert=False,
                undelivered=left,
            )
        await self.alerter.flush(max(0.2, deadline - time.monotonic()))
        await self.close()
        log.info("E6002", "Shutdown complete")

    async def _wait_for_polls(self, polling: list[Connection], until: float) -> None:
        """Wait until every long-polling client has collected what it was sent, or ``until``."""
        while time.monotonic() < until and any(c.buffered_bytes for c in polling):
            await asyncio.sleep(0.02)
        # A poll that has just taken a packet goes on collecting for a moment; let it finish so
        # that what is queued next travels in a response of its own.
        await asyncio.sleep(0.05)

    async def bus_settle(self) -> None:
        """Give what was published for the other nodes (players leaving) a moment to go out."""
        await self.bus.drain(1.0)

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._deadlines is not None:
            self._deadlines.cancel()
        self.loop_lag.stop()
        if self.monitor is not None:
            await self.monitor.close()
        await self.bus.close()
        await self.broadcaster.close()
        await self.alerter.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        # The outbox closes last: a departure still finishing (a connection the cleanup above
        # closed) writes its EXIT there, and the next start sends it.
        await self.server.departures_settled(1.0)
        await self.exits.close()
        await self.app_client.close()
        await self.server.chat_log.close(1.0)
        if self._storage_retry is not None:
            self._storage_retry.cancel()
        if self.storage is not None:
            with contextlib.suppress(Exception):
                await self.storage.close()
        await self.store.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

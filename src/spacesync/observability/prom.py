"""The node's metrics: one Prometheus registry that both forms of ``GET /metrics`` read.

Every figure of the node lives in :class:`NodeMetrics`' registry (a ``CollectorRegistry`` of its
own, not the process-wide default, so that several nodes in one process keep theirs apart):

- histograms, observed where the time is spent, at most once per tick, call or query (never
  once per move): position ticks, the wait of each tick's oldest move, app verifications,
  database calls, Redis commands and pipelines;
- figures the node already keeps as plain integers (events, refused input, EXITs, the chat
  log, the cluster bus...), read by a collector when the registry is collected, so the move path
  pays one integer increment per event and nothing else;
- figures that take a query (parties, the cluster's sizes, the database's ping), set as gauges
  by :meth:`NodeMetrics.refresh` just before each rendering;
- the process's own (``process_*``) from ``prometheus_client``'s ``ProcessCollector``.

The JSON document (version 2.0.0) is built from the values collected from this registry (see
:mod:`.document`); the Prometheus text and OpenMetrics expositions are the registry as
``prometheus_client`` writes it. Label values come only from fixed sets chosen by the code
(event names the server handles, reasons of refused input, call outcomes), never from spaces,
players or anything a client sends, so the number of series stays bounded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from .metrics import disk_usage, heap_used_bytes

PREFIX = "spacesync_"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus's classic text format. Newer ``prometheus_client`` releases label their text
output 1.0.0 (names outside the classic character set escaped); every name and label here is
of the classic set, so the output is the same and is served as what Prometheus asked for."""

TICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
MOVE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
VERIFY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DATABASE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


# -- content negotiation ----------------------------------------------------------------------

JSON = "json"
TEXT = "text"
OPENMETRICS = "openmetrics"


def wanted_format(accept: str) -> str:
    """Which form of ``/metrics`` an ``Accept`` header asks for: :data:`OPENMETRICS`,
    :data:`TEXT` (Prometheus text 0.0.4) or :data:`JSON` (no header, ``application/json``,
    ``*/*`` and anything else). The highest ``q`` wins; at equal ``q`` the exposition formats
    win over wildcards, as Prometheus lists them first."""
    best, best_q, best_rank = JSON, 0.0, 0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text":
            kind, rank = OPENMETRICS, 3
        elif media == "text/plain":
            kind, rank = TEXT, 2
        elif media in ("application/json", "*/*", "application/*"):
            kind, rank = JSON, 1
        else:
            continue
        if q > 0 and (q > best_q or (q == best_q and rank > best_rank)):
            best, best_q, best_rank = kind, q, rank
    return best


# -- Redis -------------------------------------------------------------------------------------


def time_redis(client: Any, observe: Callable[[str, float], None]) -> None:
    """Time every command (scripts included) and every pipeline sent through ``client``.

    Done on the client object, so every user of it (the store, the cluster bus, the node
    monitor) is measured without knowing. Publish/subscribe connections are not: their reads
    wait for messages by design."""
    execute_command = client.execute_command

    async def timed_command(*args: Any, **options: Any) -> Any:
        started = time.monotonic()
        try:
            return await execute_command(*args, **options)
        finally:
            observe("command", time.monotonic() - started)

    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def timed_execute(*eargs: Any, **ekwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await execute(*eargs, **ekwargs)
            finally:
                observe("pipeline", time.monotonic() - started)

        pipe.execute = timed_execute
        return pipe

    client.execute_command = timed_command
    client.pipeline = pipeline


# -- the collector of plain figures -------------------------------------------------------------


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc)
    family.add_metric([], float(value))
    return family


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    values: Iterable[tuple[tuple[str, ...], float]],
) -> Metric:
    family = kind(PREFIX + name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(list(label_values), float(value))
    return family


def _tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running event loop (a node built but not started)
        return 0


class _NodeCollector:
    """Reads the node's own counters and live figures each time the registry is collected."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.process = psutil.Process()

    def describe(self) -> list[Metric]:
        return []  # not checked against the other collectors at registration: names are fixed

    def collect(self) -> Iterator[Metric]:
        node = self.node
        server = node.server
        out = node.broadcaster
        rooms: dict[str, int] = server.local_spaces()
        yield _gauge(
            "connections", "Socket.IO connections open on this node.", server.socket_count()
        )
        yield _gauge("players", "Players joined to a space on this node.", sum(rooms.values()))
        yield _gauge("spaces", "Spaces with at least one player on this node.", len(rooms))
        yield _gauge(
            "lagging_clients",
            "Clients so far behind that their positions are folded (newest per player).",
            out.lagging_clients,
        )
        yield _counter(
            "positions_folded",
            "Positions replaced by a newer one before a lagging client could be sent them.",
            out.positions_folded,
        )
        yield _counter(
            "slow_client_disconnects",
            "Clients disconnected for having too much unsent data waiting.",
            out.slow_disconnects,
        )
        yield _counter(
            "moves_relayed",
            "Positions relayed in ticks (this node's and others')",
            out.moves_relayed,
        )
        yield _counter(
            "events_handled",
            "Events from joined or joining sockets taken by a handler.",
            server.events_handled,
        )
        yield _counter(
            "bad_input",
            "Events refused as malformed or invalid (answered with an error).",
            server.bad_inputs,
        )
        yield _labelled(
            CounterMetricFamily,
            "events",
            "Socket.IO events received, by name (other: events the server does not handle).",
            ["event"],
            (((event,), n) for event, n in server.event_counts().items()),
        )
        yield _labelled(
            CounterMetricFamily,
            "input_refused",
            "Input refused by reason: rate limits, refused packets and handshakes, timeouts.",
            ["reason"],
            (((reason,), n) for reason, n in node.abuse.snapshot().items()),
        )
        yield from self._app(node)
        yield from self._process(node)
        yield from self._chat_log(server.chat_log.figures())
        access = server.access
        yield _counter(
            "database_lookup_failures",
            "Role and session lookups at join that failed because the database did not answer.",
            access.failures,
        )
        alerter = node.alerter
        yield _counter("alerts_sent", "Alerts posted to the Discord webhook.", alerter.sent)
        yield _counter("alerts_failed", "Alerts the Discord webhook did not take.", alerter.failed)
        if node.monitor is not None:
            yield _counter(
                "cluster_nodes_lost",
                "Other nodes this node declared dead.",
                node.monitor.nodes_lost,
            )
            yield _counter("redis_outages", "Times this node lost Redis.", node.monitor.outages)
            yield _labelled(
                CounterMetricFamily,
                "bus_messages",
                "Messages of the cluster bus, by outcome (published, received, dropped).",
                ["outcome"],
                (
                    (("published",), node.bus.published),
                    (("received",), node.bus.received),
                    (("dropped",), node.bus.dropped),
                ),
            )

    def _app(self, node: Any) -> Iterator[Metric]:
        client = node.app_client
        yield _labelled(
            CounterMetricFamily,
            "app_api_calls",
            "Calls to the app API by call (verify, exit) and outcome "
            "(ok, refused, error, timeout, circuit_open).",
            ["call", "outcome"],
            sorted(client.calls.items()),
        )
        yield _gauge(
            "app_api_circuit_open",
            "1 while calls to the app are held back after repeated failures.",
            1 if client.breaker.open else 0,
        )
        yield _counter(
            "app_api_circuit_opened",
            "Times the app API's circuit opened.",
            client.breaker.times_opened,
        )
        exits = node.exits
        yield _gauge("exits_owed", "EXIT events not yet acknowledged by the app.", exits.owed())
        yield _gauge(
            "exits_backlog", "EXIT events queued, being sent or waiting for a retry.", exits.backlog
        )
        yield _gauge("exits_held", "EXIT events held for their grace period.", exits.held)
        yield _counter("exits_delivered", "EXIT events the app acknowledged.", exits.delivered)
        yield _counter(
            "exit_attempts_failed",
            "Attempts to send an EXIT event that failed.",
            exits.failed_attempts,
        )
        yield _counter("exits_dropped", "EXIT events given up on.", exits.dropped)

    def _process(self, node: Any) -> Iterator[Metric]:
        figures = node.figures
        yield _gauge(
            "start_time_seconds", "When this node started (seconds since 1970).", figures.started
        )
        yield _gauge(
            "heap_used_bytes",
            "Bytes the memory allocator has handed out (glibc mallinfo2).",
            heap_used_bytes(self.process),
        )
        cpu = self.process.cpu_times()
        yield _labelled(
            CounterMetricFamily,
            "cpu_seconds",
            "CPU time of the process by mode (user, system).",
            ["mode"],
            ((("user",), cpu.user), (("system",), cpu.system)),
        )
        yield _gauge("asyncio_tasks", "asyncio tasks alive.", _tasks())
        yield _gauge("threads", "Threads of the process.", self.process.num_threads())
        lag = node.loop_lag.figures()
        yield _gauge(
            "event_loop_lag_seconds",
            "How late the event loop ran its latest timer.",
            lag["latestMs"] / 1000,
        )
        yield _gauge(
            "event_loop_lag_max_seconds",
            "The worst event-loop lag of the last minute.",
            lag["maxLastMinuteMs"] / 1000,
        )
        disk = disk_usage("/")
        family = GaugeMetricFamily(
            PREFIX + "disk_bytes",
            "The root file system, by state (total, used, free).",
            labels=["state"],
        )
        if disk is not None:
            for state, value in zip(("total", "used", "free"), disk, strict=True):
                family.add_metric([state], float(value))
        yield family

    def _chat_log(self, figures: dict[str, Any]) -> Iterator[Metric]:
        yield _counter("chat_log_written", "Chat messages saved.", figures["written"])
        yield _counter(
            "chat_log_failed", "Chat messages that could not be saved.", figures["failed"]
        )
        yield _counter(
            "chat_log_dropped",
            "Chat messages dropped unsaved (queue full, shutdown).",
            figures["dropped"],
        )
        yield _counter(
            "chat_log_retries", "Batches of chat messages written again.", figures["retries"]
        )
        yield _counter("chat_log_batches", "Batches of chat messages written.", figures["batches"])
        yield _gauge("chat_log_queued", "Chat messages waiting to be saved.", figures["queued"])
        yield _gauge(
            "chat_log_batch_seconds",
            "How long the latest batch took to write.",
            figures["batchMs"] / 1000,
        )
        yield _gauge(
            "chat_log_batch_max_seconds",
            "The longest batch write since start.",
            figures["maxBatchMs"] / 1000,
        )
        yield _gauge(
            "chat_log_database_down",
            "1 while the chat history's database does not answer.",
            1 if figures["databaseDown"] else 0,
        )


# -- the registry ------------------------------------------------------------------------------


@dataclass(slots=True)
class Refreshed:
    """What :meth:`NodeMetrics.refresh` learnt that is not a number (JSON document only)."""

    database: dict[str, Any] = field(default_factory=dict)
    cluster_rooms: list[dict[str, Any]] = field(default_factory=list)
    members: list[Any] = field(default_factory=list)


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
"""Sample name -> sorted label pairs -> value."""


class NodeMetrics:
    """The registry of one node, and the hooks that feed it."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick_seconds = Histogram(
            PREFIX + "tick_duration_seconds",
            "Time to build and write one tick of positions of one space.",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.move_wait_seconds = Histogram(
            PREFIX + "move_send_delay_seconds",
            "Per tick: time from its oldest move being queued to the tick being written.",
            buckets=MOVE_BUCKETS,
            registry=r,
        )
        self.verify_seconds = Histogram(
            PREFIX + "app_api_verify_duration_seconds",
            "Time to verify a session with the app (a wait for a free slot included).",
            buckets=VERIFY_BUCKETS,
            registry=r,
        )
        self.database_seconds = Histogram(
            PREFIX + "database_duration_seconds",
            "Time of each database call, by database (sqlite, postgres).",
            ["database"],
            buckets=DATABASE_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            PREFIX + "redis_duration_seconds",
            "Time of each Redis command (scripts included) or pipeline, by kind.",
            ["kind"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.parties = Gauge(PREFIX + "parties", "Live parties.", registry=r)
        self.database_up = Gauge(
            PREFIX + "database_up", "1 if the database answered the latest ping.", registry=r
        )
        self.database_ping_seconds = Gauge(
            PREFIX + "database_ping_seconds",
            "How long the latest ping of the database took (NaN when it did not answer).",
            registry=r,
        )
        # Cluster figures only in cluster mode (unregistered gauges otherwise): a node without
        # Redis must not report Redis as down.
        clustered = r if node.monitor is not None else None
        self.redis_up = Gauge(
            PREFIX + "redis_up",
            "1 if Redis answered at the latest scrape (cluster mode).",
            registry=clustered,
        )
        self.cluster_nodes = Gauge(
            PREFIX + "cluster_nodes",
            "Nodes alive in the cluster (NaN if unknown).",
            registry=clustered,
        )
        self.cluster_connections = Gauge(
            PREFIX + "cluster_connections", "Players joined across the cluster.", registry=clustered
        )
        self.cluster_spaces = Gauge(
            PREFIX + "cluster_spaces", "Spaces with players across the cluster.", registry=clustered
        )
        ProcessCollector(registry=r)
        r.register(_NodeCollector(node))

    def install(self) -> None:
        """Hook the node's parts up to the registry."""
        node = self.node
        node.broadcaster.tick_seconds = self.tick_seconds
        node.broadcaster.move_wait_seconds = self.move_wait_seconds
        node.app_client.verify_seconds = self.verify_seconds
        if node.redis is not None:
            redis_seconds = self.redis_seconds
            time_redis(node.redis, lambda kind, s: redis_seconds.labels(kind).observe(s))

    def watch_storage(self, storage: Any) -> None:
        """Time the calls of a newly opened storage adapter."""
        storage.latency = self.database_seconds.labels(storage.kind)

    async def refresh(self) -> Refreshed:
        """Set the figures that take a query, just before a rendering."""
        node = self.node
        self.parties.set(await node.store.party_count())
        database = await node.server.access.database_figures()
        self.database_up.set(1 if database["up"] else 0)
        latency = database["latencyMs"]
        self.database_ping_seconds.set(math.nan if latency is None else latency / 1000)
        refreshed = Refreshed(database=database)
        if node.monitor is not None:
            sizes = await node.store.space_sizes()
            self.cluster_connections.set(sum(sizes.values()))
            self.cluster_spaces.set(len(sizes))
            refreshed.cluster_rooms = [
                {"spaceId": s, "connections": n} for s, n in sorted(sizes.items())
            ]
            self.redis_up.set(1 if await node.store.ready() else 0)
            try:
                refreshed.members = (await node.monitor.cluster_figures())["nodes"]
                self.cluster_nodes.set(len(refreshed.members))
            except Exception:
                self.cluster_nodes.set(math.nan)
        return refreshed

    def samples(self) -> Samples:
        """Every sample of the registry, collected once."""
        values: Samples = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                values.setdefault(sample.name, {})[labels] = sample.value
        return values

    def exposition(self, fmt: str) -> tuple[bytes, str]:
        """The registry in Prometheus text (:data:`TEXT`) or OpenMetrics form, with its
        content type."""
        if fmt == OPENMETRICS:
            return generate_openmetrics(self.registry), OPENMETRICS_CONTENT_TYPE
        return generate_text(self.registry), TEXT_CONTENT_TYPE

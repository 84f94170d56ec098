"""The JSON form of ``GET /metrics`` (version 2.0.0, SPEC §10), built from the node's registry.

Every number below is read from the samples of :class:`~.prom.NodeMetrics`' registry, so the
JSON document and the Prometheus exposition cannot disagree. What the registry does not hold
is a name or a list whose size follows the spaces (each space's player count, the cluster's
members): label values that grow with spaces are kept out of Prometheus on purpose.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from .metrics import METRICS_VERSION, format_uptime, storage_figures
from .prom import PREFIX, Refreshed, Samples

_MIB = 1024**2


class _Reader:
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` (``spacesync_`` added unless it is a ``process_`` one) with
        exactly these labels, or ``None``; NaN is ``None`` too."""
        full = name if name.startswith("process_") else PREFIX + name
        value = self.samples.get(full, {}).get(tuple(sorted(labels.items())))
        if value is None or math.isnan(value):
            return None
        return value

    def number(self, name: str, **labels: str) -> float:
        value = self.value(name, **labels)
        return 0.0 if value is None else value

    def count(self, name: str, **labels: str) -> int:
        return int(self.number(name, **labels))

    def by_label(self, name: str, label: str) -> dict[str, int]:
        found = {
            dict(labels)[label]: int(value)
            for labels, value in self.samples.get(PREFIX + name, {}).items()
        }
        return dict(sorted(found.items()))


def metrics_document(node: Any, samples: Samples, refreshed: Refreshed) -> dict[str, Any]:
    v = _Reader(samples)
    started = v.number("start_time_seconds")
    uptime = time.time() - started
    rss = v.value("process_resident_memory_bytes")
    if rss is None:  # no /proc to read (not Linux)
        rss = float(node.figures.process.memory_info().rss)
    rss_bytes = int(rss)
    heap = v.count("heap_used_bytes")
    user_us = int(v.number("cpu_seconds_total", mode="user") * 1_000_000)
    system_us = int(v.number("cpu_seconds_total", mode="system") * 1_000_000)
    total, used, free = (v.value("disk_bytes", state=s) for s in ("total", "used", "free"))
    disk = (
        None
        if total is None or used is None or free is None
        else storage_figures(int(total), int(used), int(free), "/")
    )
    fds = v.value("process_open_fds")
    rooms = node.server.local_spaces()
    chat_log = node.server.chat_log
    body: dict[str, Any] = {
        "server": "socket.io",
        "version": METRICS_VERSION,
        "timestamp": int(time.time() * 1000),
        "uptime": {
            "seconds": int(uptime),
            "formatted": format_uptime(uptime),
            "startTime": datetime.fromtimestamp(started, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        },
        "connections": {
            "total": v.count("connections"),
            "rooms": [{"spaceId": s, "connections": n} for s, n in sorted(rooms.items())],
            "roomCount": v.count("spaces"),
        },
        "parties": {"count": v.count("parties")},
        "process": {
            "memory": {"rssMB": round(rss_bytes / _MIB), "heapUsedMB": round(heap / _MIB)},
            "tasks": v.count("asyncio_tasks"),
            "openFiles": None if fds is None else int(fds),
            "threads": v.count("threads"),
            "eventLoopLag": {
                "latestMs": round(v.number("event_loop_lag_seconds") * 1000, 1),
                "maxLastMinuteMs": round(v.number("event_loop_lag_max_seconds") * 1000, 1),
            },
        },
        "memory": {
            "rss": rss_bytes,
            "heapUsed": heap,
            "rssMB": round(rss_bytes / _MIB),
            "heapUsedMB": round(heap / _MIB),
        },
        "cpu": {"user": user_us, "system": system_us, "totalMicroseconds": user_us + system_us},
        "storage": disk,
        "node": {
            "hostname": node.settings.hostname,
            "environment": node.settings.environment,
            "spacesyncVersion": __version__,
        },
        "events": {
            "handled": v.count("events_handled_total"),
            "badInput": v.count("bad_input_total"),
            "movesRelayed": v.count("moves_relayed_total"),
        },
        "abuse": v.by_label("input_refused_total", "reason"),
        "slowClients": {
            "catchingUp": v.count("lagging_clients"),
            "positionsFolded": v.count("positions_folded_total"),
            "disconnected": v.count("slow_client_disconnects_total"),
        },
        **_cluster(node, v, refreshed),
        "appApi": {
            "circuitOpen": v.count("app_api_circuit_open") == 1,
            "circuitOpened": v.count("app_api_circuit_opened_total"),
        },
        "exits": {
            "backlog": v.count("exits_backlog"),
            "owed": v.count("exits_owed"),
            "durable": node.exits.durable,
            "delivered": v.count("exits_delivered_total"),
            "failedAttempts": v.count("exit_attempts_failed_total"),
            "dropped": v.count("exits_dropped_total"),
            "held": v.count("exits_held"),
        },
        "chatLog": {
            "enabled": chat_log.enabled,
            "storage": chat_log.storage.kind if chat_log.storage is not None else None,
            "written": v.count("chat_log_written_total"),
            "failed": v.count("chat_log_failed_total"),
            "dropped": v.count("chat_log_dropped_total"),
            "retries": v.count("chat_log_retries_total"),
            "queued": v.count("chat_log_queued"),
            "batches": v.count("chat_log_batches_total"),
            "batchMs": round(v.number("chat_log_batch_seconds") * 1000, 1),
            "maxBatchMs": round(v.number("chat_log_batch_max_seconds") * 1000, 1),
            "databaseDown": v.count("chat_log_database_down") == 1,
        },
        "database": _database(v, refreshed),
        "auth": {"sessions": node.settings.auth_sessions},
        "alerts": {
            "enabled": node.alerter.enabled,
            "sent": v.count("alerts_sent_total"),
            "failed": v.count("alerts_failed_total"),
        },
    }
    return body


def _database(v: _Reader, refreshed: Refreshed) -> dict[str, Any]:
    up = v.count("database_up") == 1
    ping = v.value("database_ping_seconds")
    return {
        "kind": refreshed.database.get("kind"),
        "up": up,
        "latencyMs": round(ping * 1000, 1) if up and ping is not None else None,
        "failures": v.count("database_lookup_failures_total"),
    }


def _cluster(node: Any, v: _Reader, refreshed: Refreshed) -> dict[str, Any]:
    """Cluster-wide figures beside the node's own (cluster mode only)."""
    if node.monitor is None:
        return {}
    nodes = v.value("cluster_nodes")
    cluster: dict[str, Any] = {
        "nodeId": node.node_id,
        "redis": "ok" if v.count("redis_up") == 1 else "unavailable",
        "nodes": None if nodes is None else int(nodes),
        "connections": v.count("cluster_connections"),
        "rooms": refreshed.cluster_rooms,
        "roomCount": v.count("cluster_spaces"),
        "nodesLost": v.count("cluster_nodes_lost_total"),
        "redisOutages": v.count("redis_outages_total"),
        "bus": {
            "published": v.count("bus_messages_total", outcome="published"),
            "received": v.count("bus_messages_total", outcome="received"),
            "dropped": v.count("bus_messages_total", outcome="dropped"),
        },
        "members": refreshed.members if nodes is not None else [],
    }
    return {"cluster": cluster}

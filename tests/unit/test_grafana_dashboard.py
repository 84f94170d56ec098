"""The Grafana dashboard (deploy/grafana/spacesync.json) only charts metrics a node exposes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from spacesync.app import SpacesyncNode
from spacesync.config import load_settings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "spacesync.json"

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: label matchers, ranges, strings, grouping
    labels and function names taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function
        if name.lower() in _KEYWORDS or name.startswith("$"):
            continue
        if match.start() > 0 and text[match.start() - 1] == "$":
            continue  # a Grafana variable
        names.add(name)
    return names


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a scrape of ``registry`` can show, families without samples included."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        names.update(sample.name for sample in family.samples)
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in found if p.get("type") != "row"]


def node(port: int) -> SpacesyncNode:
    settings = load_settings({"NODE_ENV": "development"})
    return SpacesyncNode(dataclasses.replace(settings, port=port, exit_outbox_path=":memory:"))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, kind) (rate(spacesync_redis_duration_seconds_bucket"
        '{job=~"$job", instance=~"$instance"}[$__rate_interval]))) / on (instance) '
        "process_open_fds"
    )
    assert metric_names(expr) == {"spacesync_redis_duration_seconds_bucket", "process_open_fds"}
    assert metric_names('sum(spacesync_events_total{event="player:move"})') == {
        "spacesync_events_total"
    }


def test_every_panel_charts_metrics_a_fresh_node_exposes(dashboard: dict[str, Any]) -> None:
    exposed = exposed_names(node(3901).prom.registry)
    used: set[str] = set()
    for panel in panels(dashboard):
        exprs = [t["expr"] for t in panel["targets"] if t.get("expr")]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"no metric found in {expr!r}"
            missing = names - exposed
            assert not missing, f"panel {panel['title']!r} uses {missing}, not in the registry"
            used |= names
    # What the dashboard is for: each of these is charted.
    for wanted in (
        "spacesync_connections",
        "spacesync_players",
        "spacesync_spaces",
        "spacesync_events_total",
        "spacesync_input_refused_total",
        "spacesync_app_api_calls_total",
        "spacesync_tick_duration_seconds_bucket",
        "spacesync_move_send_delay_seconds_bucket",
        "spacesync_app_api_verify_duration_seconds_bucket",
        "spacesync_database_duration_seconds_bucket",
        "spacesync_redis_duration_seconds_bucket",
        "spacesync_lagging_clients",
        "spacesync_exits_owed",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert wanted in used, wanted


def test_dashboard_is_importable_with_a_prometheus_datasource_input(
    dashboard: dict[str, Any],
) -> None:
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]


def test_each_node_has_its_own_registry() -> None:
    """Two nodes in one process do not share (or collide in) a registry."""
    first, second = node(3902), node(3903)
    assert first.prom.registry is not second.prom.registry
    first.prom.tick_seconds.observe(0.01)
    assert first.prom.registry.get_sample_value("spacesync_tick_duration_seconds_count") == 1
    assert second.prom.registry.get_sample_value("spacesync_tick_duration_seconds_count") == 0
    assert "process_cpu_seconds_total" in exposed_names(first.prom.registry)

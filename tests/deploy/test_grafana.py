"""deploy/grafana: the dashboard's queries, and the alert rules', name only metrics the service exports.

The exported names come from a real scrape of the receiver app (real Redis) after a delivery,
a worker's run of it and a registered worker, so every metric family is there.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker

from tests.helpers.receiver import admin_client, receiver_client
from tests.helpers.tools import RULES, promtool, summed_redis_gauges
from tests.helpers.vectors import REPO
from tests.helpers.workers import configure_in_process, set_worker_env
from workers.process import work_burst

pytestmark = pytest.mark.anyio
DASHBOARD = REPO / "deploy" / "grafana" / "kayle-webhooks.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}
# PromQL words that are neither metrics nor functions.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"inf", "nan", "atan2"}
# Grafana's variables, replaced by what Grafana would put there, for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, durations and strings left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(kayle_request_duration_seconds_bucket{job=~"$job", a="b(c)"}'
        "[$__rate_interval]))) > 1e3 and max without (pod) (kayle_workers offset 5m) == bool 0 or absent(up)"
    )
    assert metric_names(expr) == {"kayle_request_duration_seconds_bucket", "kayle_workers", "up"}
    assert metric_names("deriv((max(a) + max(b))[10m:1m]) > 0") == {"a", "b"}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", [])]


def variable_metrics() -> set[str]:
    """Metrics named by the dashboard's query variables (Grafana's label_values(metric, label))."""
    found = set()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", query)
            assert match, f"unexpected variable query {query!r}"
            found.add(match.group(1))
    return found


def alert_queries() -> list[str]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in loaded["groups"] for rule in group["rules"]]


@pytest.fixture
async def exported(env, tmp_path, monkeypatch, redis_client, fixtures) -> set[str]:
    """Every metric name a receiver's /metrics exports, families expanded with their suffixes."""
    set_worker_env(env, tmp_path, monkeypatch)
    async with receiver_client() as http, admin_client() as admin:
        delivered = await http.post("/webhooks/kayle", content=fixtures[0].body, headers=fixtures[0].headers)
        assert delivered.status_code == 200
        settings = configure_in_process()
        work_burst(settings, redis_client)
        worker = Worker([Queue(settings.queue, connection=redis_client)], connection=redis_client)
        worker.register_birth()
        try:
            text = (await admin.get("/metrics")).text
        finally:
            worker.register_death()
    names = set()
    for family in text_string_to_metric_families(text):
        # A counter's or a histogram's family name is no series of its own: only its suffixed names are.
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    assert {"kayle_handler_runs_total", "kayle_workers", "kayle_oldest_queued_event_age_seconds"} <= names
    return names


async def test_the_dashboard_and_the_alerts_use_only_exported_metrics(exported: set[str]) -> None:
    used_by_dashboard = set().union(*map(metric_names, dashboard_queries())) | variable_metrics()
    used_by_alerts = set().union(*map(metric_names, alert_queries()))
    assert not used_by_dashboard - exported, f"the dashboard queries unknown metrics: {used_by_dashboard - exported}"
    assert not used_by_alerts - exported, f"alerts.yml queries unknown metrics: {used_by_alerts - exported}"
    assert used_by_alerts and used_by_dashboard


def test_the_dashboard_shows_deliveries_latency_queue_workers_and_handlers() -> None:
    used = set().union(*map(metric_names, dashboard_queries()))
    assert {
        "kayle_deliveries_total",
        "kayle_request_duration_seconds_bucket",
        "kayle_queue_depth",
        "kayle_scheduled_retries",
        "kayle_failed_events",
        "kayle_oldest_queued_event_age_seconds",
        "kayle_workers",
        "kayle_handler_runs_total",
        "kayle_handler_duration_seconds_bucket",
    } <= used
    joined = "\n".join(dashboard_queries())
    assert "histogram_quantile(0.5," in joined and "histogram_quantile(0.99," in joined
    for query in dashboard_queries():
        assert not summed_redis_gauges(query), f"a Redis-derived series summed over receivers: {query}"


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = []
    for number, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{number}", "expr": query})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", "dashboard.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

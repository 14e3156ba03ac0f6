"""deploy/prometheus: the alerting rules are valid, unit-tested with promtool, and documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.tools import OPERATIONS, PROMETHEUS, RULE_TESTS, RULES, promtool, summed_redis_gauges


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.mark.slow
def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


@pytest.mark.slow
def test_the_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test case where it stays quiet"


def test_every_alert_has_a_summary_a_description_and_a_runbook_in_docs_operations() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    names = [alert["alert"] for alert in alerts()]
    assert len(names) == len(set(names))
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), alert["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor == alert["alert"].lower() and anchor in anchors, f"{alert['alert']}: no runbook section"
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_the_alerts_cover_what_the_service_can_go_wrong_with() -> None:
    exprs = {alert["alert"]: alert["expr"] for alert in alerts()}
    joined = "\n".join(exprs.values())
    for needle in (
        "kayle_failed_events",
        "kayle_queue_depth",
        "kayle_scheduled_retries",
        "kayle_oldest_queued_event_age_seconds",
        "kayle_workers",
        "unavailable|queue_full",
        "signature_mismatch|signature_malformed|signature_missing|timestamp_out_of_tolerance",
        'outcome="unknown_kid"',
        "kayle_redis_up",
        "absent(kayle_redis_up)",
    ):
        assert needle in joined, needle


def test_redis_derived_gauges_are_aggregated_with_max_not_sum() -> None:
    for alert in alerts():
        assert not summed_redis_gauges(alert["expr"]), alert["alert"]
    assert summed_redis_gauges("sum by (job) (kayle_queue_depth) > 1") == {"kayle_queue_depth"}
    assert summed_redis_gauges("sum(rate(kayle_handler_runs_total[5m]))") == {"kayle_handler_runs_total"}
    assert not summed_redis_gauges("sum(rate(kayle_deliveries_total[5m])) + max(kayle_workers)")


@pytest.mark.slow
def test_the_unit_tests_catch_a_rule_that_sums_a_gauge_every_receiver_reports(tmp_path: Path) -> None:
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    rules = RULES.read_text()
    aggregated = "by (job, namespace) (kayle_failed_events)"
    summed = rules.replace(f"max {aggregated}", f"sum {aggregated}")
    assert summed != rules
    (tmp_path / RULES.name).write_text(summed)
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "KayleFailedEvents" in result.stdout + result.stderr

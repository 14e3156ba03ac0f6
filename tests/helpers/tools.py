"""External command-line tools the tests run for real (promtool, redis-server), and the deploy files they check."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.helpers.vectors import REPO


def required_tool(name: str, install_hint: str) -> str:
    """The path of ``name``; a missing tool fails the test, unless KAYLE_ALLOW_MISSING_TOOLS=1 (then it skips)."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed: {install_hint}"
    if os.environ.get("KAYLE_ALLOW_MISSING_TOOLS") == "1":
        pytest.skip(f"{message} (skipped: KAYLE_ALLOW_MISSING_TOOLS=1)")
    pytest.fail(message)


def promtool() -> str:
    return required_tool(
        "promtool",
        "scripts/test installs it (ensure_promtool: apt-get install --no-install-recommends prometheus)",
    )


PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
# Read from Redis at scrape time: every receiver reports the same value.
REDIS_DERIVED = {
    "kayle_queue_depth",
    "kayle_scheduled_retries",
    "kayle_failed_events",
    "kayle_workers",
    "kayle_oldest_queued_event_age_seconds",
    "kayle_redis_up",
    "kayle_handler_runs_total",
    "kayle_handler_duration_seconds_bucket",
    "kayle_handler_duration_seconds_sum",
    "kayle_handler_duration_seconds_count",
    "kayle_unhandled_events_total",
}
# sum [by (...)] ( [rate|increase|irate (] metric
SUMMED = re.compile(
    r"\bsum\b\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*(?:(?:rate|increase|irate)\s*\(\s*)?([A-Za-z_:][\w:]*)"
)


def summed_redis_gauges(expr: str) -> set[str]:
    """Redis-derived series that an expression aggregates with sum() (they must use max())."""
    return {match.group(1) for match in SUMMED.finditer(expr)} & REDIS_DERIVED

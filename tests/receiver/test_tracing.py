"""Tracing: one delivery is one trace, receiver → event → each handler → a handler's own span, across real
processes; no claim, body or exception message in any span; with tracing off nothing is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from receiver.jobs import JobArgs
from receiver.tracing import exporters_requested
from tests.helpers.privacy import claims_of, leaked_claims, sample_claim_values
from tests.helpers.processes import command, free_port, running, serving, wait_until
from tests.helpers.sending import PATH
from tests.helpers.telemetry import http_sink, import_watch, imported, spans_in, succeeded_delivery
from tests.helpers.vectors import REPO
from tests.helpers.workers import RECORDER, failed_ids, read_records, recorder_handlers, worker_env

TRACED = "tests.plugins.traced"
REDIS_OBSERVABILITY = Path(redis.__file__).parent / "observability" / "providers.py"
OWN_SPAN = "tests.plugins.traced: own work"  # the span name tests.plugins.traced makes (not imported here)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": " console , OTLP "}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "TRUE"}, []),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask_for_it(environ: dict[str, str], expected: list[str]):
    assert exporters_requested(environ) == expected


def test_a_job_carries_the_receivers_traceparent_for_its_worker():
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = JobArgs("jwe", "evt_1", "t", "kid", None, 1.0, traceparent=parent)
    assert traced.kwargs()["traceparent"] == parent
    assert JobArgs(**traced.kwargs()) == traced  # what workers.jobclass checks a job's arguments with
    assert JobArgs("jwe", "evt_1", "t", "kid", None, 1.0).kwargs()["traceparent"] is None  # tracing off


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


def span_id(span: dict[str, Any]) -> str:
    return str(span["context"]["span_id"])


def trace_env(env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """Receiver and worker: recorder + traced handlers, ``broken`` failing (its message quotes claims), no retry."""
    flag = tmp_path / "broken"
    flag.touch()
    values = worker_env(
        env, tmp_path, KAYLE_HANDLERS=f"{RECORDER},{TRACED}", KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="",
        **extra,
    )
    return {k: v for k, v in values.items() if not k.startswith("OTEL_") or k in extra}


@pytest.mark.slow
@pytest.mark.parametrize("simple", [False, True], ids=["forking, 2 receiver processes", "simple"])
def test_one_delivery_is_one_trace_from_the_receiver_through_the_event_to_each_handler(
    env: dict[str, str], tmp_path: Path, redis_client: redis.Redis, simple: bool
):
    values = trace_env(env, tmp_path, OTEL_TRACES_EXPORTER="console")
    payload, request = succeeded_delivery(env["KAYLE_SIGNING_SECRETS"])
    event_id = payload["metadata"]["event_id"]
    receiver_out, worker_out = tmp_path / "receiver.spans.log", tmp_path / "worker.spans.log"
    worker = command("worker", *(["--simple"] if simple else []))
    processes = "1" if simple else "2"  # uvicorn spawns them, each sets up its own tracing
    with (
        serving(values, tmp_path / "receiver.log", receiver_out, KAYLE_RECEIVER_PROCESSES=processes) as receiver,
        running(worker, values, tmp_path / "worker.log", stdout_path=worker_out),
    ):
        answer = httpx.post(f"{receiver.url}{PATH}", content=request.body, headers=request.headers)
        assert answer.status_code == 200, answer.text
        wait_until(lambda: any(s["name"] == "kayle.event" for s in spans_in(worker_out)), "the event's span")
        wait_until(lambda: any(s["name"] == "kayle.delivery" for s in spans_in(receiver_out)), "the delivery's span")
        # The span ends inside the job; RQ records the failure just after (broken failed, no retry was due).
        wait_until(lambda: failed_ids(redis_client, "kayle") == [f"kayle-{event_id}"], "the event failing")
    assert {r["handler"] for r in read_records(tmp_path / "records.jsonl")} >= {"succeeded", "broken"}

    delivery = one(spans_in(receiver_out), "kayle.delivery")
    spans = spans_in(worker_out)
    event = one(spans, "kayle.event")
    handlers = {s["attributes"]["kayle.handler"]: s for s in spans if s["name"] == "kayle.handler"}
    own = one(spans, OWN_SPAN)

    # One tree: receiver → event → each handler → the handler's own span, all in one trace.
    assert delivery["parent_id"] is None
    assert event["parent_id"] == span_id(delivery)
    expected = {f"{RECORDER}.{name}" for name in recorder_handlers(payload["type"])} | {f"{TRACED}.traced"}
    assert set(handlers) == expected and len(spans) == len(expected) + 2
    assert all(h["parent_id"] == span_id(event) for h in handlers.values())
    assert own["parent_id"] == span_id(handlers[f"{TRACED}.traced"])
    assert {s["context"]["trace_id"] for s in [delivery, *spans]} == {delivery["context"]["trace_id"]}

    # What each span says: ids, types, kid, outcomes, attempt; failures by type.
    assert delivery["kind"] == "SpanKind.SERVER" and event["kind"] == "SpanKind.CONSUMER"
    assert delivery["resource"]["attributes"]["service.name"] == "kayle-webhooks-receiver"
    assert event["resource"]["attributes"]["service.name"] == "kayle-webhooks-worker"
    facts = {"kayle.event_id": event_id, "kayle.type": payload["type"], "kayle.kid": "fixture-key-1"}
    delivery_facts = {**facts, "kayle.delivery_id": request.headers["X-Kayle-Delivery-Id"]}
    assert delivery["attributes"] == {**delivery_facts, "kayle.outcome": "accepted", "kayle.status": 200}
    assert event["attributes"] == {**delivery_facts, "kayle.attempt": 1, "kayle.outcome": "failed",
                                   "error.type": "workers.dispatch.HandlerFailed"}
    assert event["status"] == {"status_code": "ERROR", "description": "workers.dispatch.HandlerFailed"}
    broken = handlers[f"{RECORDER}.broken"]
    assert broken["status"] == {"status_code": "ERROR", "description": "ValueError <- KeyError"}
    assert broken["attributes"] == {"kayle.handler": f"{RECORDER}.broken", "kayle.attempt": 1,
                                    "kayle.outcome": "error", "error.type": "ValueError <- KeyError"}
    assert broken["events"] == []  # no exception event: its message quotes claims
    succeeded = handlers[f"{RECORDER}.succeeded"]
    assert succeeded["attributes"]["kayle.outcome"] == "ok" and succeeded["status"]["status_code"] == "UNSET"

    # Nothing of the event itself: no claim, no body, no exception message.
    printed = receiver_out.read_text(encoding="utf-8") + worker_out.read_text(encoding="utf-8")
    assert leaked_claims(printed, sample_claim_values() | claims_of(payload)) == []
    body = request.body.decode()
    assert body not in printed
    assert not [part for part in body.split(".") if len(part) > 16 and part in printed]
    assert "cannot provision" not in printed


@pytest.mark.slow
def test_a_work_horse_exports_its_batched_spans_before_it_exits(env: dict[str, str], tmp_path: Path):
    """OTLP over HTTP with batches that would wait a minute: the forking worker's spans still arrive, because
    each work horse flushes before ``os._exit``; the receiver's arrive on its own schedule."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with http_sink() as (collector, received):
        common = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector}  # OTLP over HTTP: the default protocol
        receiver_env = trace_env(env, tmp_path, OTEL_BSP_SCHEDULE_DELAY="100", **common)
        worker_env_ = {**receiver_env, "OTEL_BSP_SCHEDULE_DELAY": "60000"}
        payload, request = succeeded_delivery(env["KAYLE_SIGNING_SECRETS"])

        def names() -> dict[str, list[Any]]:
            spans: dict[str, list[Any]] = {}
            for body in received.bodies("/v1/traces"):
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            spans.setdefault(span.name, []).append(span)
            return spans

        with (
            serving(receiver_env, tmp_path / "receiver.log") as receiver,
            running(command("worker"), worker_env_, tmp_path / "worker.log"),
        ):
            answer = httpx.post(f"{receiver.url}{PATH}", content=request.body, headers=request.headers)
            assert answer.status_code == 200, answer.text
            wait_until(lambda: {"kayle.delivery", "kayle.event", OWN_SPAN} <= set(names()), "every span exported",
                       timeout=60)
        spans = names()
        event, delivery = spans["kayle.event"][0], spans["kayle.delivery"][0]
        assert event.parent_span_id == delivery.span_id and event.trace_id == delivery.trace_id
        assert len(spans["kayle.handler"]) == len(recorder_handlers(payload["type"])) + 1
        raw = b"".join(received.bodies("/v1/traces"))
        assert leaked_claims(raw, sample_claim_values()) == []


def no_otel(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if not k.startswith("OTEL_")}


@pytest.mark.slow
def test_without_the_variables_neither_receiver_nor_worker_imports_anything_of_either_extra(
    env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
):
    watch = tmp_path / "watch"
    values = no_otel({**worker_env(env, tmp_path), **import_watch(watch, refuse=False)})
    payload, request = succeeded_delivery(env["KAYLE_SIGNING_SECRETS"])
    with serving(values, tmp_path / "receiver.log") as receiver:
        answer = httpx.post(f"{receiver.url}{PATH}", content=request.body, headers=request.headers)
        assert answer.status_code == 200, answer.text
        worker = subprocess.run(command("worker", "--burst"), env=values, cwd=REPO, capture_output=True, timeout=120)
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    assert ("succeeded", payload["metadata"]["event_id"]) in {
        (r["handler"], r["event_id"]) for r in read_records(tmp_path / "records.jsonl")
    }
    seen = imported(watch)
    assert seen, "the import watch saw nothing: is it installed?"  # redis-py's own import, below, at least
    assert not [(module, by) for module, by in seen if module.startswith("sentry_sdk")]
    # None by our code: redis-py (8.x) alone imports the SDK's metrics wherever the SDK is installed, for
    # metrics of its own that stay off unless an application turns them on.
    assert {by for _, by in seen} <= {str(REDIS_OBSERVABILITY)}, seen


@pytest.mark.slow
def test_with_the_variables_but_without_the_sdk_each_process_says_so_once_and_works(
    env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
):
    watch = tmp_path / "watch"
    values = {**worker_env(env, tmp_path), **import_watch(watch, refuse=True), "OTEL_TRACES_EXPORTER": "console"}
    payload, request = succeeded_delivery(env["KAYLE_SIGNING_SECRETS"])
    log = tmp_path / "receiver.log"
    with serving(values, log, KAYLE_RECEIVER_PROCESSES="1") as receiver:
        answer = httpx.post(f"{receiver.url}{PATH}", content=request.body, headers=request.headers)
        assert answer.status_code == 200, answer.text
        worker = subprocess.run(command("worker", "--burst"), env=values, cwd=REPO, capture_output=True, timeout=120)
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    assert ("succeeded", payload["metadata"]["event_id"]) in {
        (r["handler"], r["event_id"]) for r in read_records(tmp_path / "records.jsonl")
    }
    assert imported(watch)  # they were asked for, and refused
    for output in (log.read_text(), worker.stderr.decode()):
        lines = [line for line in output.splitlines() if "tracing" in line]
        assert len(lines) == 1, output
        assert "OpenTelemetry SDK is not installed" in lines[0] and "kayle-webhooks[otel]" in lines[0]


QUIET_PROBE = """
import os, sys, time
from receiver import tracing
assert tracing.setup("probe")
for _ in range(2):
    pid = os.fork()
    if pid == 0:  # as a work horse: one span, then the flush before os._exit
        with tracing.span("probe"):
            pass
        started = time.monotonic()
        tracing.flush(1.0)
        print(f"{time.monotonic() - started:.3f}", flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.mark.slow
def test_while_the_collector_does_not_answer_a_work_horse_waits_once_then_not_at_all(tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    finished = subprocess.run(
        [sys.executable, "-c", QUIET_PROBE], env={**environ, "OTEL_EXPORTER_OTLP_ENDPOINT": dead}, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    first, second = (float(line) for line in finished.stdout.split())
    assert first >= 0.9  # the bound: the export was still retrying
    assert second < 0.5  # the next horse did not wait


PARENT_PROBE = """
from receiver import tracing
assert tracing.setup("probe")
for parent in ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-zz-not-a-traceparent", 123, "0" * 10**6]:
    with tracing.span("probe", parent=parent):
        pass
"""


@pytest.mark.slow
def test_a_jobs_traceparent_continues_its_trace_and_anything_else_starts_a_new_one():
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    finished = subprocess.run(
        [sys.executable, "-c", PARENT_PROBE], env={**environ, "OTEL_TRACES_EXPORTER": "console"}, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    spans = [json.loads(line) for line in finished.stdout.splitlines()]
    assert [(s["context"]["trace_id"], s["parent_id"]) for s in spans[:1]] == [
        ("0x0af7651916cd43dd8448eb211c80319c", "0xb7ad6b7169203331")
    ]
    assert len(spans) == 4 and all(s["parent_id"] is None for s in spans[1:])

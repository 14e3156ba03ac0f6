"""The receiver's HTTP behaviour, in process, against the real Redis."""

from __future__ import annotations

import json
import logging

import pytest
import redis
from rq import Queue
from rq.job import Job

from kayle_webhooks.testing import encrypt_payload, sample_payload, sign_request
from receiver import jwe, signature
from receiver.jobs import DISPATCH_FUNCTION, SERIALIZER, job_id
from tests.helpers.redis import marked
from tests.helpers.vectors import FIXTURE_KID, FIXTURE_TIME, OTHER_KID

pytestmark = pytest.mark.anyio
PATH = "/webhooks/kayle"


def stored_job(client: redis.Redis, event_id: str) -> Job:
    return Job.fetch(job_id(event_id), connection=client, serializer=SERIALIZER)


async def test_every_fixture_is_accepted_and_its_job_carries_the_exact_jwe(client, fixtures, redis_client, config):
    for fixture in fixtures:
        answer = await client.post(PATH, content=fixture.body, headers=fixture.headers)
        assert answer.status_code == 200, (fixture.name, answer.text)
        assert answer.json() == {"status": "accepted", "event_id": fixture.event_id}

        job = stored_job(redis_client, fixture.event_id)
        assert job.func_name == DISPATCH_FUNCTION
        assert job.kwargs["jwe"] == fixture.body.decode()
        assert job.kwargs["event_type"] == fixture.type
        assert job.kwargs["kid"] == FIXTURE_KID
        assert job.kwargs["delivery_id"] == fixture.headers["X-Kayle-Delivery-Id"]
        assert job.kwargs["received_at"] == FIXTURE_TIME
        assert job.description == f"{fixture.type} {fixture.event_id}"
        assert job.result_ttl == 0
        assert job.failure_ttl == config.settings.failure_ttl_seconds
        assert job.retries_left == 2 and job.retry_intervals == [1, 1]
        assert jwe.decrypt(jwe.parse(job.kwargs["jwe"].encode()), config.keyring) == fixture.expected_plaintext

        assert marked(redis_client, fixture.event_id)
    window = config.settings.dedup_ttl_seconds
    for key in redis_client.scan_iter("kayle:seen:*:*:*"):  # every marker outlives the window by < a period
        assert window - 5 < redis_client.ttl(key) <= window + window // 10, key
    assert Queue("kayle", connection=redis_client).count == len(fixtures)


async def test_a_retried_delivery_is_a_duplicate_and_makes_no_second_job(client, fixtures, redis_client):
    fixture = fixtures[0]
    first = await client.post(PATH, content=fixture.body, headers=fixture.headers)
    again = await client.post(PATH, content=fixture.body, headers=fixture.headers)
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": fixture.event_id}
    assert Queue("kayle", connection=redis_client).count == 1


async def test_the_event_type_is_read_from_the_payload_not_the_header(client, fixtures, redis_client):
    fixture = fixtures[1]
    headers = {**fixture.headers, "X-Kayle-Event": "verification.session.succeeded"}
    assert (await client.post(PATH, content=fixture.body, headers=headers)).status_code == 200
    assert stored_job(redis_client, fixture.event_id).kwargs["event_type"] == fixture.type


async def test_unknown_types_and_fields_are_accepted(client, config, redis_client):
    payload = sample_payload("verification.session.review_required")
    payload["metadata"]["shard"] = {"nested": [1, 2]}
    payload["brand_new_top_level"] = True
    public = config.keyring[FIXTURE_KID].public_key()
    delivery = sign_request(
        encrypt_payload(payload, public, FIXTURE_KID), payload["type"], config.secrets[0], FIXTURE_TIME
    )
    answer = await client.post(PATH, content=delivery.body, headers=delivery.headers)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    job = stored_job(redis_client, payload["metadata"]["event_id"])
    assert json.loads(jwe.decrypt(jwe.parse(job.kwargs["jwe"].encode()), config.keyring)) == payload


async def test_a_delivery_to_the_older_key_still_decrypts_after_rotation(client, config, redis_client):
    for kid in (FIXTURE_KID, OTHER_KID):
        payload = sample_payload("verification.session.expired")
        body = encrypt_payload(payload, config.keyring[kid].public_key(), kid)
        delivery = sign_request(body, payload["type"], config.secrets[0], FIXTURE_TIME)
        answer = await client.post(PATH, content=delivery.body, headers=delivery.headers)
        assert answer.json()["status"] == "accepted", kid
        assert stored_job(redis_client, payload["metadata"]["event_id"]).kwargs["kid"] == kid


async def test_either_of_two_secrets_is_accepted(monkeypatch, env, redis_client, fixtures):
    from receiver.app import create_app
    from receiver.settings import load_config

    monkeypatch.setenv("KAYLE_SIGNING_SECRETS", f"whsec_newsecretafterrotation, {fixtures[0].secret}")
    config = load_config()
    app = create_app(config, clock=lambda: float(FIXTURE_TIME))
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        old = await http.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
        payload = sample_payload("verification.session.failed")
        body = encrypt_payload(payload, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID)
        new = sign_request(body, payload["type"], "whsec_newsecretafterrotation", FIXTURE_TIME)
        answer = await http.post(PATH, content=new.body, headers=new.headers)
    assert old.json()["status"] == "accepted"
    assert answer.json()["status"] == "accepted"


def resigned(body: bytes, secret: str, timestamp: int = FIXTURE_TIME) -> dict[str, str]:
    return {"Content-Type": "application/jose", "X-Kayle-Signature": signature.sign(secret, timestamp, body)}


def forged_jwe(header: dict[str, object], body: bytes) -> bytes:
    from receiver import b64url

    parts = body.decode().split(".")
    parts[0] = b64url.encode(json.dumps(header).encode())
    return ".".join(parts).encode()


async def assert_rejected(client, body: bytes, headers: dict[str, str], status: int, code: str) -> None:
    answer = await client.post(PATH, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


async def test_signature_errors_answer_400_with_their_codes(client, fixtures, redis_client):
    fixture = fixtures[0]
    secret = fixture.secret
    await assert_rejected(client, fixture.body, {}, 400, "signature_missing")
    await assert_rejected(client, fixture.body, {"X-Kayle-Signature": "t=nope"}, 400, "signature_malformed")
    await assert_rejected(client, fixture.body + b"x", fixture.headers, 400, "signature_mismatch")
    await assert_rejected(client, fixture.body, resigned(fixture.body, "whsec_wrong"), 400, "signature_mismatch")
    for skew in (-301, 301):
        headers = resigned(fixture.body, secret, FIXTURE_TIME + skew)
        await assert_rejected(client, fixture.body, headers, 400, "timestamp_out_of_tolerance")
    for skew in (-299, 299):
        answer = await client.post(
            PATH, content=fixture.body, headers=resigned(fixture.body, secret, FIXTURE_TIME + skew)
        )
        assert answer.status_code == 200
    assert marked(redis_client, fixture.event_id)


async def test_jwe_and_payload_errors_answer_with_their_codes(client, fixtures, config, redis_client):
    fixture = fixtures[0]
    secret = fixture.secret
    cases = [
        (b"not.a.jwe", 400, "jwe_malformed"),
        (
            forged_jwe({"alg": "RSA1_5", "enc": "A256GCM", "kid": FIXTURE_KID}, fixture.body),
            400,
            "jwe_unsupported_algorithm",
        ),
        (
            forged_jwe({"alg": "dir", "enc": "A256GCM", "kid": FIXTURE_KID}, fixture.body),
            400,
            "jwe_unsupported_algorithm",
        ),
        (
            forged_jwe({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, "zip": "DEF"}, fixture.body),
            400,
            "jwe_unsupported_header",
        ),
        (forged_jwe({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "gone"}, fixture.body), 400, "unknown_kid"),
        (
            forged_jwe({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": OTHER_KID}, fixture.body),
            400,
            "decryption_failed",
        ),
    ]
    public = config.keyring[FIXTURE_KID].public_key()
    for plaintext in (
        b"not json",
        b"[1,2]",
        b'{"type":"x"}',
        b'{"type":1,"metadata":{"event_id":"evt_1"}}',
        b'{"type":"x","metadata":{"event_id":"evt 1/../"}}',
        b'{"type":"x","metadata":{}}',
    ):
        cases.append((jwe.encrypt(plaintext, public, FIXTURE_KID), 422, "payload_invalid"))
    for body, status, code in cases:
        await assert_rejected(client, body, resigned(body, secret), status, code)
    assert redis_client.dbsize() == 0


async def test_unknown_kid_is_logged_at_error_with_the_kid(client, fixtures, caplog):
    fixture = fixtures[0]
    body = forged_jwe({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "kid-2025-retired"}, fixture.body)
    await client.post(PATH, content=body, headers=resigned(body, fixture.secret))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "kayle.receiver"]
    assert len(errors) == 1
    assert errors[0].kayle_fields["kid"] == "kid-2025-retired"  # type: ignore[attr-defined]
    assert errors[0].kayle_fields["outcome"] == "unknown_kid"  # type: ignore[attr-defined]


async def test_a_body_over_the_cap_answers_413(client, fixtures, redis_client):
    body = b"a" * (262144 + 1)
    await assert_rejected(client, body, resigned(body, fixtures[0].secret), 413, "payload_too_large")


async def test_one_log_line_per_request_with_ids_and_no_body_or_signature(client, fixtures, caplog):
    from receiver.logs import JsonFormatter

    fixture = fixtures[0]
    await client.post(PATH, content=fixture.body, headers=fixture.headers)
    lines = [
        JsonFormatter().format(r) for r in caplog.records if r.name == "kayle.receiver" and r.getMessage() == "delivery"
    ]
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["outcome"] == "accepted" and line["status"] == 200
    assert line["event_id"] == fixture.event_id and line["type"] == fixture.type and line["kid"] == FIXTURE_KID
    assert line["delivery_id"] == fixture.headers["X-Kayle-Delivery-Id"]
    assert isinstance(line["duration_ms"], float)
    text = caplog.text + lines[0]
    assert fixture.body.decode()[:40] not in text
    assert fixture.headers["X-Kayle-Signature"].split("v1=")[1] not in text
    assert fixture.secret not in text


async def test_health_readiness_and_metrics(client, admin, fixtures, redis_client):
    assert (await client.get("/healthz")).status_code == 200
    assert (await admin.get("/healthz")).status_code == 200
    ready = await admin.get("/readyz")
    assert ready.status_code == 200 and ready.json()["keys"] == 2
    await client.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
    await client.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
    await client.post(PATH, content=b"x", headers={})
    text = (await admin.get("/metrics")).text
    assert 'kayle_deliveries_total{outcome="accepted"}' in text
    assert 'kayle_deliveries_total{outcome="signature_missing"}' in text
    assert "kayle_duplicates_total" in text
    assert "kayle_request_duration_seconds_bucket" in text
    assert "kayle_queue_depth 1.0" in text
    assert "kayle_failed_events 0.0" in text


async def test_readiness_fails_when_redis_is_unreachable(env, monkeypatch):
    import httpx

    from receiver.admin import create_admin_app
    from receiver.settings import load_config
    from tests.helpers.processes import free_port

    monkeypatch.setenv("KAYLE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app = create_admin_app(load_config())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503


async def test_decrypting_on_the_event_loop_accepts_and_rejects_alike(monkeypatch, env, redis_client, fixtures):
    """KAYLE_DECRYPT_THREADS=0 (a one-CPU container): no decryption thread, the same answers as with them."""
    import httpx

    from receiver.app import create_app
    from receiver.settings import load_config

    monkeypatch.setenv("KAYLE_DECRYPT_THREADS", "0")
    inline = load_config()
    assert inline.settings.decrypt_threads == 0
    app = create_app(inline, clock=lambda: float(FIXTURE_TIME))
    undecryptable = forged_jwe({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": OTHER_KID}, fixtures[0].body)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client,
    ):
        for fixture in fixtures:
            answer = await client.post(PATH, content=fixture.body, headers=fixture.headers)
            assert answer.json() == {"status": "accepted", "event_id": fixture.event_id}, fixture.name
        await assert_rejected(client, undecryptable, resigned(undecryptable, fixtures[0].secret), 400,
                              "decryption_failed")
    assert Queue("kayle", connection=redis_client).count == len(fixtures)


async def test_only_the_webhook_path_is_served_anything_else_is_404_never_a_redirect(client, admin, fixtures):
    hostile_host = {"Host": "evil.example"}  # a redirect would build its Location from it
    for method, path in [
        ("POST", PATH + "/"), ("GET", PATH + "/"), ("POST", PATH + "//"), ("POST", "/webhooks"),
        ("POST", "/WEBHOOKS/KAYLE"), ("POST", "/other"), ("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/healthz/"),
    ]:
        answer = await client.request(method, path, headers=hostile_host, content=fixtures[0].body)
        assert (answer.status_code, answer.headers.get("location")) == (404, None), (method, path)
    for path in ("/metrics/", "/readyz/", "/healthz/", PATH):
        answer = await admin.get(path, headers=hostile_host)
        assert (answer.status_code, answer.headers.get("location")) == (404, None), path

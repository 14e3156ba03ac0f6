"""The baseline: a Kayle receiver written plainly, the way a developer following Kayle's docs would.

Starlette, the HMAC check from the docs, ``jwcrypto`` for the JWE, ``SET NX`` on the event id,
then an RQ enqueue of the JWE (never the decrypted claims) for ``bench.reference_job``, which
decrypts it again. It is correct (signature before decryption, tolerance, allow-listed
algorithms, dedup) but makes no effort to be fast: the Redis calls are the usual synchronous
redis-py ones. Run: ``uvicorn bench.reference_receiver:app``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from jwcrypto import jwe, jwk  # type: ignore[import-untyped]
from redis import Redis
from rq import Queue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = os.environ["KAYLE_SIGNING_SECRETS"].split(",")[0]
KEY = jwk.JWK.from_pem(Path(os.environ["REFERENCE_KEY_FILE"]).read_bytes())
redis = Redis.from_url(os.environ["KAYLE_REDIS_URL"])
queue = Queue("reference", connection=redis)
TOLERANCE = int(os.environ.get("KAYLE_TOLERANCE_SECONDS", "300"))  # the benchmarks sign once, up front


def signature_ok(header: str, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = parts.get("t", "0")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


async def webhook(request: Request) -> JSONResponse:
    body = await request.body()
    if not signature_ok(request.headers.get("x-kayle-signature", ""), body):
        return JSONResponse({"error": "bad signature"}, status_code=400)
    token = jwe.JWE(algs=["RSA-OAEP-256", "A128GCM", "A192GCM", "A256GCM"])
    try:
        token.deserialize(body.decode(), key=KEY)
    except Exception:
        return JSONResponse({"error": "cannot decrypt"}, status_code=400)
    event = json.loads(token.payload)
    event_id = event["metadata"]["event_id"]
    if not redis.set(f"seen:{event_id}", 1, nx=True, ex=10 * 24 * 3600):
        return JSONResponse({"status": "duplicate"})
    queue.enqueue("bench.reference_job.process_event", body.decode(), job_id=f"evt-{event_id}", result_ttl=0)
    return JSONResponse({"status": "accepted"})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/webhooks/kayle", webhook, methods=["POST"]), Route("/healthz", healthz)])

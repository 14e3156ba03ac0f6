"""A local stand-in for Kayle ID's API, following its OpenAPI document (``kayle-openapi.json`` here).

It implements the webhook management routes the service uses (endpoints, keys,
deliveries, events) with Kayle's envelope, status codes, error codes and cursor
pagination, and it acts as Kayle's sender: deliveries are encrypted to the
endpoint's active key when the event is created (as Kayle does) and every send,
first or retried, is signed afresh with the endpoint's secret and POSTed to the
endpoint URL. Routes under ``/_mock`` let the tests create events, inject
faults and forged answers, and read what happened; they are not part of Kayle's API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from receiver import b64url, jwe, signature

EVENT_TYPES = (
    "verification.session.succeeded",
    "verification.session.failed",
    "verification.session.expired",
    "verification.session.cancelled",
)
RETENTION_HOURS = (0, 24, 72, 168)
AUTOMATIC_ATTEMPTS = 8  # Kayle's schedule: the first send and 7 retries over about 32.6 hours
DOCS = "https://kayle.id/docs/api/errors"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message, "The request payload is invalid.")


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found.", f"The {what.lower()} with the given ID was not found.")


def new_id(prefix: str, length: int = 64) -> str:
    return prefix + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Fault:
    method: str
    path: str
    status: int
    count: int


@dataclass
class Tamper:
    """A forged answer: the route runs, then ``patch`` is merged into its ``data`` (a hostile or broken API)."""

    method: str
    path: str
    patch: dict[str, Any]
    count: int


@dataclass
class State:
    api_key: str
    readonly_key: str
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)  # delivery id -> JWE, made once
    sends: list[dict[str, Any]] = field(default_factory=list)  # every POST to a partner endpoint
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tampers: list[Tamper] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def create_app(api_key: str, readonly_key: str) -> Starlette:
    state = State(api_key, readonly_key)

    def route(path: str, handler: Any, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _serve(state, request, handler)

        return Route(path, endpoint, methods=methods)

    def control_route(path: str, handler: Any, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _control(state, request, handler)

        return Route(path, endpoint, methods=methods)

    control = [
        Route("/_mock/health", lambda r: PlainTextResponse("ok")),
        control_route("/_mock/events", create_event, ["POST"]),
        control_route("/_mock/faults", add_fault, ["POST"]),
        control_route("/_mock/tampers", add_tamper, ["POST"]),
        control_route("/_mock/state", dump_state, ["GET"]),
        control_route("/_mock/idle", wait_idle, ["POST"]),
        control_route("/_mock/reset", reset, ["POST"]),
    ]
    api = [
        route("/v1/webhooks/endpoints", list_endpoints, ["GET"]),
        route("/v1/webhooks/endpoints", create_endpoint, ["POST"]),
        route("/v1/webhooks/endpoints/{endpoint_id}", get_endpoint, ["GET"]),
        route("/v1/webhooks/endpoints/{endpoint_id}", update_endpoint, ["PATCH"]),
        route("/v1/webhooks/endpoints/{endpoint_id}/signing-secret/reveal", reveal_secret, ["POST"]),
        route("/v1/webhooks/endpoints/{endpoint_id}/keys", list_keys, ["GET"]),
        route("/v1/webhooks/endpoints/{endpoint_id}/keys", create_key, ["POST"]),
        route("/v1/webhooks/keys/{key_id}/deactivate", deactivate_key, ["POST"]),
        route("/v1/webhooks/keys/{key_id}/reactivate", reactivate_key, ["POST"]),
        route("/v1/webhooks/deliveries", list_deliveries, ["GET"]),
        route("/v1/webhooks/deliveries/{delivery_id}/retry", retry_delivery, ["POST"]),
        route("/v1/webhooks/events/{event_id}", get_event, ["GET"]),
    ]
    return Starlette(routes=control + api)


# -- Kayle's conventions ------------------------------------------------------------------------


async def _serve(state: State, request: Request, handler: Any) -> Response:
    auth = request.headers.get("authorization", "")
    state.requests.append(
        {"method": request.method, "path": request.url.path, "query": dict(request.query_params), "auth": auth}
    )
    fault = next(
        (f for f in state.faults if f.count > 0 and f.method == request.method and request.url.path == f.path), None
    )
    if fault is not None:
        fault.count -= 1
        if fault.status == 500:
            error = ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error.", "The server encountered an error.")
            return _error(error)
        return PlainTextResponse("upstream unavailable", status_code=fault.status)  # as a proxy in front would
    try:
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if key not in (state.api_key, state.readonly_key):
            raise ApiError(401, "UNAUTHORIZED", "Invalid or missing API key.", "Send Authorization: Bearer kk_...")
        if key == state.readonly_key and request.method != "GET":
            raise ApiError(
                403, "FORBIDDEN", "The API key lacks the webhooks:write scope.", "Use a key with webhooks:write."
            )
        body = await _json_body(request)
        status, payload = await handler(state, request, body)
    except ApiError as error:
        return _error(error)
    tamper = next(
        (t for t in state.tampers if t.count > 0 and t.method == request.method and request.url.path == t.path), None
    )
    if tamper is not None:
        tamper.count -= 1
        payload["data"] = _merged(payload["data"], tamper.patch)
    return JSONResponse(payload, status_code=status)


def _merged(data: Any, patch: dict[str, Any]) -> Any:
    if isinstance(data, list):  # a page: every item
        return [_merged(item, patch) for item in data]
    merged = dict(data)
    for name, value in patch.items():
        both_objects = isinstance(value, dict) and isinstance(merged.get(name), dict)
        merged[name] = _merged(merged[name], value) if both_objects else value
    return merged


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("The request body is not valid JSON.") from None


def _error(error: ApiError) -> Response:
    body = {"data": None, "error": {"code": error.code, "message": error.message, "hint": error.hint, "docs": DOCS}}
    return JSONResponse(body, status_code=error.status)


def _ok(data: Any, status: int = 200) -> tuple[int, dict[str, Any]]:
    return status, {"data": data, "error": None}


def _page(request: Request, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    raw_limit = request.query_params.get("limit", "10")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise bad_request("limit must be an integer between 1 and 100.")
    limit = int(raw_limit)
    cursor = request.query_params.get("starting_after")
    start = 0
    if cursor is not None:
        ids = [item["id"] for item in items]
        if cursor not in ids:
            raise bad_request("starting_after does not name an item of this list.")
        start = ids.index(cursor) + 1
    page = items[start : start + limit]
    has_more = start + limit < len(items)
    pagination = {"limit": limit, "has_more": has_more, "next_cursor": page[-1]["id"] if has_more else None}
    return 200, {"data": page, "error": None, "pagination": pagination}


def _bool_query(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false.")
    return value == "true"


# -- endpoints ----------------------------------------------------------------------------------


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise bad_request("url is required (at most 2048 characters).")
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise bad_request("url must use https:// (http:// is only accepted for localhost in development).")
    return url


def _check_types(types: Any) -> list[str]:
    if not isinstance(types, list) or any(t not in EVENT_TYPES for t in types):
        raise bad_request(f"subscribed_event_types must be a list of: {', '.join(EVENT_TYPES)}.")
    return list(dict.fromkeys(types))


async def list_endpoints(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    enabled = _bool_query(request, "enabled")
    items = [e for e in state.endpoints.values() if enabled is None or e["enabled"] == enabled]
    return _page(request, items)


async def create_endpoint(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    if not isinstance(body, dict):
        raise bad_request("A JSON object body is required.")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 120):
        raise bad_request("name must be 1 to 120 characters.")
    retention = body.get("undelivered_payload_retention_hours", 72)
    if retention not in RETENTION_HOURS:
        raise bad_request("undelivered_payload_retention_hours must be 0, 24, 72 or 168.")
    now = iso(time.time())
    endpoint = {
        "id": new_id("whe_", 32),
        "organization_id": "org_mock",
        "name": name,
        "labels": body.get("labels", []),
        "url": _check_url(body.get("url")),
        "enabled": bool(body.get("enabled", True)),
        "subscribed_event_types": _check_types(body.get("subscribed_event_types", [])),
        "undelivered_payload_retention_hours": retention,
        "created_at": now,
        "updated_at": now,
        "disabled_at": None,
    }
    state.endpoints[endpoint["id"]] = endpoint
    state.secrets[endpoint["id"]] = new_id("whsec_", 32)
    return _ok({"endpoint": endpoint, "signing_secret": state.secrets[endpoint["id"]]})


def _endpoint(state: State, request: Request) -> dict[str, Any]:
    endpoint = state.endpoints.get(request.path_params["endpoint_id"])
    if endpoint is None:
        raise not_found("Webhook endpoint")
    return endpoint


async def get_endpoint(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    return _ok(_endpoint(state, request))


async def update_endpoint(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    endpoint = _endpoint(state, request)
    if not isinstance(body, dict):
        raise bad_request("A JSON object body is required.")
    if "url" in body:
        endpoint["url"] = _check_url(body["url"])
    if "subscribed_event_types" in body:
        endpoint["subscribed_event_types"] = _check_types(body["subscribed_event_types"])
    if "enabled" in body:
        endpoint["enabled"] = bool(body["enabled"])
        endpoint["disabled_at"] = None if endpoint["enabled"] else iso(time.time())
    if "name" in body:
        endpoint["name"] = body["name"]
    endpoint["updated_at"] = iso(time.time())
    return _ok(endpoint)


async def reveal_secret(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    endpoint = _endpoint(state, request)
    return _ok({"endpoint_id": endpoint["id"], "signing_secret": state.secrets[endpoint["id"]]})


# -- keys ---------------------------------------------------------------------------------------


async def list_keys(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    endpoint_id = request.path_params["endpoint_id"]
    active = _bool_query(request, "is_active")
    items = [
        k
        for k in state.keys.values()
        if k["webhook_endpoint_id"] == endpoint_id and (active is None or k["is_active"] == active)
    ]
    return _page(request, items)


async def create_key(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    endpoint = _endpoint(state, request)
    if not isinstance(body, dict):
        raise bad_request("A JSON object body is required.")
    kid, jwk = body.get("key_id"), body.get("jwk")
    if not isinstance(kid, str) or not 1 <= len(kid) <= 128:
        raise bad_request("key_id is required (1 to 128 characters).")
    if body.get("algorithm") != "RSA-OAEP-256" or body.get("key_type") != "RSA":
        raise bad_request("algorithm must be RSA-OAEP-256 and key_type RSA.")
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or "d" in jwk:
        raise bad_request("jwk must be a public RSA JWK.")
    try:
        _public_key(jwk)
    except (ValueError, KeyError, TypeError):
        raise bad_request("jwk is not a usable RSA public key.") from None
    if any(k["key_id"] == kid and k["webhook_endpoint_id"] == endpoint["id"] for k in state.keys.values()):
        raise bad_request(f"key_id {kid} is already registered for this endpoint.")
    now = iso(time.time())
    for other in state.keys.values():  # the new key becomes the active one
        if other["webhook_endpoint_id"] == endpoint["id"] and other["is_active"]:
            other.update(is_active=False, disabled_at=now, updated_at=now)
    key = {
        "id": new_id("whk_", 32),
        "webhook_endpoint_id": endpoint["id"],
        "key_id": kid,
        "algorithm": "RSA-OAEP-256",
        "key_type": "RSA",
        "jwk": jwk,
        "is_active": True,
        "created_at": now,
        "updated_at": now,
        "disabled_at": None,
    }
    state.keys[key["id"]] = key
    return _ok(key)


def _key(state: State, request: Request) -> dict[str, Any]:
    key = state.keys.get(request.path_params["key_id"])
    if key is None:
        raise not_found("Webhook encryption key")
    return key


async def deactivate_key(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    key = _key(state, request)
    now = iso(time.time())
    key.update(is_active=False, disabled_at=now, updated_at=now)
    return _ok(key)


async def reactivate_key(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    key = _key(state, request)
    now = iso(time.time())
    for other in state.keys.values():
        if other["webhook_endpoint_id"] == key["webhook_endpoint_id"] and other["is_active"]:
            other.update(is_active=False, disabled_at=now, updated_at=now)
    key.update(is_active=True, disabled_at=None, updated_at=now)
    return _ok(key)


def _public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64url.decode(jwk["n"]), "big")
    e = int.from_bytes(b64url.decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


# -- deliveries and events ----------------------------------------------------------------------


def _public_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in delivery.items() if not k.startswith("_")}


async def list_deliveries(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    fields = {"status": "status", "endpoint_id": "webhook_endpoint_id", "event_id": "event_id"}
    wanted = {field: request.query_params.get(name) for name, field in fields.items()}
    if wanted["status"] not in (None, "pending", "delivering", "succeeded", "failed"):
        raise bad_request("status must be pending, delivering, succeeded or failed.")
    items = [
        _public_delivery(d)
        for d in state.deliveries.values()
        if all(value is None or d[name] == value for name, value in wanted.items())
    ]
    return _page(request, items)


async def retry_delivery(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    delivery = state.deliveries.get(request.path_params["delivery_id"])
    if delivery is None:
        raise not_found("Webhook delivery")
    if delivery["status"] in ("pending", "delivering"):
        hint = "The webhook delivery is already in progress."
        raise ApiError(409, "CONFLICT", "Webhook delivery cannot be retried.", hint)
    expires = delivery["payload_expires_at"]
    if delivery["id"] not in state.bodies or (expires is not None and expires < iso(time.time())):
        raise ApiError(
            409,
            "WEBHOOK_PAYLOAD_EXPIRED",
            "The encrypted payload of this webhook delivery is no longer retained.",
            "Look the session up through the sessions API.",
        )
    delivery.update(status="pending", next_attempt_at=None, updated_at=iso(time.time()))
    task = asyncio.create_task(_send(state, delivery))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    return _ok(_public_delivery(delivery))


async def get_event(state: State, request: Request, body: Any) -> tuple[int, dict[str, Any]]:
    event = state.events.get(request.path_params["event_id"])
    if event is None:
        raise not_found("Webhook event")
    deliveries = [
        {k: d[k] for k in ("id", "webhook_endpoint_id", "status", "last_status_code", "attempt_count",
                           "last_attempt_at", "payload_expires_at", "payload_scrubbed_at", "payload_retention_reason")}
        for d in state.deliveries.values()
        if d["event_id"] == event["id"]
    ]
    return _ok({**event, "deliveries": deliveries})


async def _send(state: State, delivery: dict[str, Any]) -> None:
    """One send of a delivery, as Kayle makes it: same JWE bytes, fresh timestamp and signature."""
    endpoint = state.endpoints[delivery["webhook_endpoint_id"]]
    body = state.bodies[delivery["id"]]
    event = state.events[delivery["event_id"]]
    headers = {
        "Content-Type": "application/jose",
        "X-Kayle-Delivery-Id": delivery["id"],
        "X-Kayle-Event": event["type"],
        "X-Kayle-Signature": signature.sign(state.secrets[endpoint["id"]], int(time.time()), body),
    }
    delivery.update(status="delivering")
    code: int | None
    try:
        async with httpx.AsyncClient(timeout=15, follow_redirects=False) as client:
            code = (await client.post(endpoint["url"], content=body, headers=headers)).status_code
    except httpx.HTTPError:
        code = None
    now = time.time()
    state.sends.append({"delivery_id": delivery["id"], "event_id": event["id"], "status": code})
    delivery.update(attempt_count=delivery["attempt_count"] + 1, last_status_code=code, last_attempt_at=iso(now))
    if code is not None and 200 <= code < 300:
        _settle(state, delivery, "succeeded", now, reason="delivered")
    else:
        _settle(state, delivery, "failed", now, reason="terminal_failure_retention")


def _settle(state: State, delivery: dict[str, Any], status: str, now: float, reason: str) -> None:
    delivery.update(status=status, updated_at=iso(now), payload_retention_reason=reason)
    if status == "succeeded":
        state.bodies.pop(delivery["id"], None)
        delivery.update(payload_scrubbed_at=iso(now), payload_expires_at=None)
    else:
        hours = state.endpoints[delivery["webhook_endpoint_id"]]["undelivered_payload_retention_hours"]
        delivery.update(payload_expires_at=iso(now + hours * 3600))


# -- control routes (tests only) ------------------------------------------------------------------


async def _control(state: State, request: Request, handler: Any) -> Response:
    raw = await request.body()
    body = json.loads(raw) if raw else {}
    return JSONResponse(await handler(state, body))


async def create_event(state: State, body: dict[str, Any]) -> Any:
    """Make an event and one delivery per subscribed endpoint, as Kayle does.

    ``payload`` is the plaintext JSON object (its ``metadata.event_id`` is the event id);
    ``send``: try the delivery now (a failure is made terminal, as after Kayle's whole retry
    schedule); ``received_but_failed``: send it, then record a failure anyway (the answer was
    lost); ``expired``: the retained payload's time is over (``scrubbed``: and it is deleted);
    ``age_hours``: how long ago the event happened.
    """
    payload = body["payload"]
    plaintext = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    created = time.time() - float(body.get("age_hours", 0)) * 3600
    event = {
        "id": payload["metadata"]["event_id"],
        "type": payload["type"],
        "trigger_type": "verification_session",
        "trigger_id": payload["metadata"].get("verification_session_id") or new_id("vs_", 32),
        "created_at": iso(created),
    }
    state.events[event["id"]] = event
    made = []
    for endpoint in list(state.endpoints.values()):
        if event["type"] in endpoint["subscribed_event_types"] and endpoint["enabled"]:
            made.append(await _deliver_new(state, endpoint, event, plaintext, created, body))
    return {"event": event, "deliveries": made}


async def _deliver_new(
    state: State, endpoint: dict[str, Any], event: dict[str, Any], plaintext: bytes, created: float, options: Any
) -> dict[str, Any]:
    active = next(
        (k for k in state.keys.values() if k["webhook_endpoint_id"] == endpoint["id"] and k["is_active"]), None
    )
    delivery: dict[str, Any] = {
        "id": new_id("whd_"),
        "event_id": event["id"],
        "webhook_endpoint_id": endpoint["id"],
        "webhook_encryption_key_id": active["id"] if active else None,
        "status": "pending",
        "attempt_count": 0,
        "next_attempt_at": None,
        "payload_expires_at": None,
        "payload_scrubbed_at": None,
        "payload_retention_reason": "pending_delivery",
        "last_status_code": None,
        "last_attempt_at": None,
        "created_at": iso(created),
        "updated_at": iso(created),
    }
    state.deliveries[delivery["id"]] = delivery
    if active is None:
        delivery.update(status="failed", payload_scrubbed_at=iso(created), payload_retention_reason="no_active_key")
        return _public_delivery(delivery)
    state.bodies[delivery["id"]] = jwe.encrypt(plaintext, _public_key(active["jwk"]), active["key_id"])
    if options.get("send") or options.get("received_but_failed"):
        body = state.bodies[delivery["id"]]
        await _send(state, delivery)
        delivery["attempt_count"] = AUTOMATIC_ATTEMPTS if delivery["status"] == "failed" else 1
        if options.get("received_but_failed"):  # the receiver took it, but Kayle never saw the answer
            state.bodies[delivery["id"]] = body
            delivery["payload_scrubbed_at"] = None
            _settle(state, delivery, "failed", time.time(), reason="terminal_failure_retention")
    if options.get("expired") or options.get("scrubbed"):
        delivery.update(status="failed", payload_expires_at=iso(time.time() - 60), payload_retention_reason="expired")
    if options.get("scrubbed"):
        state.bodies.pop(delivery["id"], None)
        delivery["payload_scrubbed_at"] = iso(time.time())
    return _public_delivery(delivery)


async def add_fault(state: State, body: dict[str, Any]) -> Any:
    state.faults.append(Fault(body["method"], body["path"], int(body["status"]), int(body.get("count", 1))))
    return {"faults": len(state.faults)}


async def add_tamper(state: State, body: dict[str, Any]) -> Any:
    state.tampers.append(Tamper(body["method"], body["path"], dict(body["patch"]), int(body.get("count", 1))))
    return {"tampers": len(state.tampers)}


async def dump_state(state: State, body: dict[str, Any]) -> Any:
    return {
        "endpoints": list(state.endpoints.values()),
        "keys": list(state.keys.values()),
        "deliveries": [_public_delivery(d) for d in state.deliveries.values()],
        "sends": state.sends,
        "requests": state.requests,
        "secrets": state.secrets,
    }


async def wait_idle(state: State, body: dict[str, Any]) -> Any:
    while state.tasks:
        await asyncio.gather(*list(state.tasks), return_exceptions=True)
    return {"idle": True}


async def reset(state: State, body: dict[str, Any]) -> Any:
    await wait_idle(state, body)
    for name in ("endpoints", "secrets", "keys", "events", "deliveries", "bodies"):
        getattr(state, name).clear()
    state.sends.clear()
    state.requests.clear()
    state.faults.clear()
    state.tampers.clear()
    return {"reset": True}

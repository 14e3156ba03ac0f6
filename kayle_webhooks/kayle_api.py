"""A small typed client for Kayle ID's management API (``/v1/webhooks/...``), with Kayle's conventions:
the ``{data, error}`` envelope, cursor pagination, retries of 5xx and of requests that never left.

The API key lives only in the ``Authorization`` header: never logged, never in an error message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from kayle_webhooks.errors import KayleApiError
from receiver.settings import ConfigError, Settings

DEFAULT_URL = "https://api.kayle.id"
PAGE_LIMIT = 100
RETRY_ATTEMPTS = 4  # the first try and three retries
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
Params = Mapping[str, str | int | bool]
M = TypeVar("M", bound="_Model")


class _Model(BaseModel):
    # Kayle adds fields in place under /v1: unknown ones are ignored, never an error.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Endpoint(_Model):
    id: str
    url: str
    name: str | None = None
    enabled: bool
    subscribed_event_types: list[str] = []
    undelivered_payload_retention_hours: int = 72
    created_at: str = ""


class CreatedEndpoint(_Model):
    endpoint: Endpoint
    signing_secret: SecretStr  # shown once by Kayle; never in a repr, a log or an error


class RevealedSecret(_Model):
    endpoint_id: str
    signing_secret: SecretStr


class EncryptionKey(_Model):
    id: str
    webhook_endpoint_id: str
    key_id: str
    jwk: dict[str, Any]
    is_active: bool
    created_at: str = ""


class DeliveryRecord(_Model):
    """A delivery as Kayle's API lists it (not the HTTP request itself)."""

    id: str
    event_id: str
    webhook_endpoint_id: str
    status: str
    attempt_count: int = 0
    payload_expires_at: str | None = None
    payload_scrubbed_at: str | None = None
    payload_retention_reason: str | None = None
    last_status_code: int | None = None
    created_at: str = ""


class Event(_Model):
    id: str
    type: str
    trigger_type: str
    trigger_id: str
    created_at: str = ""


class KayleApi:
    """One API key against one Kayle base URL; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 15.0,
        backoff_seconds: float = 0.5,
        attempts: int = RETRY_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._base = _checked_url(base_url).rstrip("/").removesuffix("/v1")
        self._backoff = backoff_seconds
        self._attempts = max(1, attempts)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self._base,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"KayleApi({self._base!r})"

    def __enter__(self) -> KayleApi:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the routes used -------------------------------------------------------------------------

    def endpoints(self) -> Iterator[Endpoint]:
        return (_parse(Endpoint, item) for item in self.paginate("/v1/webhooks/endpoints"))

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return _parse(Endpoint, self.request("GET", f"/v1/webhooks/endpoints/{_segment(endpoint_id)}"))

    def create_endpoint(self, url: str, name: str | None, event_types: list[str]) -> CreatedEndpoint:
        body: dict[str, Any] = {"url": url, "subscribed_event_types": event_types}
        if name:
            body["name"] = name
        return _parse(CreatedEndpoint, self.request("POST", "/v1/webhooks/endpoints", json=body))

    def update_endpoint(self, endpoint_id: str, **changes: Any) -> Endpoint:
        path = f"/v1/webhooks/endpoints/{_segment(endpoint_id)}"
        return _parse(Endpoint, self.request("PATCH", path, json=changes))

    def reveal_signing_secret(self, endpoint_id: str) -> SecretStr:
        path = f"/v1/webhooks/endpoints/{_segment(endpoint_id)}/signing-secret/reveal"
        return _parse(RevealedSecret, self.request("POST", path)).signing_secret

    def keys(self, endpoint_id: str) -> Iterator[EncryptionKey]:
        path = f"/v1/webhooks/endpoints/{_segment(endpoint_id)}/keys"
        return (_parse(EncryptionKey, item) for item in self.paginate(path))

    def create_key(self, endpoint_id: str, registration: Mapping[str, Any]) -> EncryptionKey:
        """Register a public key; ``registration`` is :func:`kayle_webhooks.keys.registration_body`."""
        path = f"/v1/webhooks/endpoints/{_segment(endpoint_id)}/keys"
        return _parse(EncryptionKey, self.request("POST", path, json=dict(registration)))

    def reactivate_key(self, key_id: str) -> EncryptionKey:
        path = f"/v1/webhooks/keys/{_segment(key_id)}/reactivate"
        return _parse(EncryptionKey, self.request("POST", path))

    def deliveries(self, endpoint_id: str, status: str | None = None) -> Iterator[DeliveryRecord]:
        params: dict[str, str | int | bool] = {"endpoint_id": endpoint_id}
        if status:
            params["status"] = status
        return (_parse(DeliveryRecord, item) for item in self.paginate("/v1/webhooks/deliveries", params))

    def retry_delivery(self, delivery_id: str) -> DeliveryRecord:
        path = f"/v1/webhooks/deliveries/{_segment(delivery_id)}/retry"
        return _parse(DeliveryRecord, self.request("POST", path))

    def event(self, event_id: str) -> Event:
        return _parse(Event, self.request("GET", f"/v1/webhooks/events/{_segment(event_id)}"))

    # -- Kayle's conventions ---------------------------------------------------------------------

    def paginate(self, path: str, params: Params | None = None, limit: int = PAGE_LIMIT) -> Iterator[Any]:
        """Every item of a list route, page after page (``starting_after`` = the previous ``next_cursor``)."""
        query: dict[str, str | int | bool] = {**(params or {}), "limit": limit}
        while True:
            body = self._send("GET", path, query, None)
            items = body.get("data")
            if not isinstance(items, list):
                raise KayleApiError(200, "INVALID_RESPONSE", f"GET {path} did not answer with a list")
            yield from items
            pagination = body.get("pagination") or {}
            cursor = pagination.get("next_cursor")
            if not pagination.get("has_more") or not cursor:
                return
            query["starting_after"] = cursor

    def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None) -> Any:
        """One call; return its ``data`` or raise :class:`KayleApiError`."""
        return self._send(method, path, params, json).get("data")

    def _send(self, method: str, path: str, params: Params | None, json: Any) -> dict[str, Any]:
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (unsent or method == "GET"):
                    raise _transport_error(method, path, self._base, exc) from None
            else:
                if response.status_code < 500 or last:
                    return _envelope(method, path, response)
            self._sleep(self._backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _envelope(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or ("data" not in body and "error" not in body):
        raise KayleApiError(
            response.status_code,
            "INVALID_RESPONSE",
            f"{method} {path} answered HTTP {response.status_code} without Kayle's {{data, error}} envelope",
            "check KAYLE_API_URL: it must be Kayle's API base URL, e.g. https://api.kayle.id",
        )
    error = body.get("error")
    if response.is_success and not error:
        return body
    error = error if isinstance(error, dict) else {}
    return _raise(response.status_code, error, method, path)


def _raise(status: int, error: Mapping[str, Any], method: str, path: str) -> dict[str, Any]:
    raise KayleApiError(
        status,
        str(error.get("code") or f"HTTP_{status}"),
        str(error.get("message") or f"{method} {path} failed"),
        str(error.get("hint") or ""),
    )


def _transport_error(method: str, path: str, base: str, exc: httpx.TransportError) -> KayleApiError:
    return KayleApiError(
        None,
        "CONNECTION_ERROR",
        f"{method} {path}: no answer from {base} ({type(exc).__name__})",
        "check KAYLE_API_URL and this host's network access to it",
    )


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise KayleApiError(
            200, "INVALID_RESPONSE", f"unexpected {model.__name__} from Kayle ({exc.error_count()} problems)"
        ) from None


def _segment(value: str) -> str:
    """An id as one path segment; Kayle's ids are ``[A-Za-z0-9_-]+``."""
    if not value or not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise KayleApiError(None, "INVALID_ID", f"not a Kayle id: {value[:40]!r}", "ids are [A-Za-z0-9_-]+")
    return value


def connect(settings: Settings) -> KayleApi:
    """A client for ``KAYLE_API_URL`` with ``KAYLE_API_KEY`` (or the key in ``KAYLE_API_KEY_FILE``)."""
    return KayleApi(_api_key(settings), settings.api_url)


def _checked_url(url: str) -> str:
    """The key travels in a header: refuse plain HTTP except to this machine (a local test double)."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        parts = httpx.URL()
    if parts.scheme == "https" and parts.host:
        return url
    if parts.scheme == "http" and parts.host in _LOOPBACK:
        return url
    raise ConfigError(
        f"KAYLE_API_URL: {url[:80]!r} is not an https:// URL; the API key would travel in clear "
        "(plain http is accepted only for localhost)"
    )


def _api_key(settings: Settings) -> str:
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip()
    if settings.api_key_file is not None:
        try:
            key = settings.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"KAYLE_API_KEY_FILE: cannot read {settings.api_key_file} ({exc.strerror})") from None
        if key:
            return key
        raise ConfigError(f"KAYLE_API_KEY_FILE: {settings.api_key_file} is empty")
    raise ConfigError(
        "KAYLE_API_KEY: not set; create an API key (kk_...) with the webhooks:read and webhooks:write scopes "
        "in Kayle's dashboard and set it (or KAYLE_API_KEY_FILE)"
    )

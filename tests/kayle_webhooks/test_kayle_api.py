"""The Kayle API client against the mock Kayle API, a real process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kayle_webhooks.errors import KayleApiError
from kayle_webhooks.kayle_api import KayleApi
from kayle_webhooks.keys import generate, registration_body
from receiver.settings import ConfigError
from tests.helpers.processes import free_port
from tests.helpers.vectors import Fixture
from tests.kayle_mock.control import MockKayle, payload_like

ENDPOINTS = "/v1/webhooks/endpoints"



class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def api(kayle: MockKayle, sleeps: Sleeps) -> Iterator[KayleApi]:
    with KayleApi(kayle.api_key, kayle.url, backoff_seconds=0.5, sleep=sleeps) as client:
        yield client


def api_requests(kayle: MockKayle) -> list[dict[str, object]]:
    return [r for r in kayle.requests() if str(r["path"]).startswith("/v1/")]


def test_calls_carry_the_bearer_key_and_return_typed_data(api: KayleApi, kayle: MockKayle) -> None:
    created = api.create_endpoint("https://partner.example/webhooks/kayle", "prod", ["verification.session.failed"])

    assert created.endpoint.id.startswith("whe_")
    assert created.endpoint.subscribed_event_types == ["verification.session.failed"]
    assert created.signing_secret.get_secret_value() == kayle.state()["secrets"][created.endpoint.id]
    assert "whsec_" not in repr(created) and "whsec_" not in str(created)
    assert api.endpoint(created.endpoint.id).url == "https://partner.example/webhooks/kayle"
    assert {r["auth"] for r in api_requests(kayle)} == {f"Bearer {kayle.api_key}"}


def test_pagination_follows_the_cursor_across_pages(api: KayleApi, kayle: MockKayle) -> None:
    urls = [f"https://partner{i}.example/hook" for i in range(7)]
    for url in urls:
        api.create_endpoint(url, None, [])

    items = list(api.paginate(ENDPOINTS, limit=3))

    assert [item["url"] for item in items] == urls
    pages = [r for r in api_requests(kayle) if r["method"] == "GET"]
    assert [r["query"].get("starting_after") for r in pages] == [None, items[2]["id"], items[5]["id"]]  # type: ignore[attr-defined]
    assert {r["query"]["limit"] for r in pages} == {"3"}  # type: ignore[index]


def test_typed_lists_use_pages_of_100(api: KayleApi, kayle: MockKayle) -> None:
    endpoint = api.create_endpoint("https://partner.example/hook", None, []).endpoint

    assert [e.id for e in api.endpoints()] == [endpoint.id]
    assert list(api.deliveries(endpoint.id, status="failed")) == []
    assert api_requests(kayle)[-1]["query"] == {"endpoint_id": endpoint.id, "status": "failed", "limit": "100"}


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda api: api.endpoint("whe_missing"), 404, "NOT_FOUND"),
        (lambda api: api.create_endpoint("ftp://partner.example/hook", None, []), 400, "BAD_REQUEST"),
        (lambda api: api.create_endpoint("https://partner.example/hook", None, ["no.such.type"]), 400, "BAD_REQUEST"),
        (lambda api: api.retry_delivery("whd_missing"), 404, "NOT_FOUND"),
        (lambda api: api.event("evt_missing"), 404, "NOT_FOUND"),
    ],
)
def test_kayle_errors_become_typed_errors_without_retrying(
    api: KayleApi, kayle: MockKayle, sleeps: Sleeps, call: object, status: int, code: str
) -> None:
    with pytest.raises(KayleApiError) as caught:
        call(api)  # type: ignore[operator]

    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message and caught.value.hint
    assert code in str(caught.value) and caught.value.hint in str(caught.value)
    assert len(api_requests(kayle)) == 1 and sleeps == []


def test_a_wrong_key_is_401_and_a_read_only_key_cannot_write(kayle: MockKayle, sleeps: Sleeps) -> None:
    with KayleApi("kk_wrong", kayle.url, sleep=sleeps) as wrong, pytest.raises(KayleApiError) as unauthorized:
        list(wrong.endpoints())
    with KayleApi(kayle.readonly_key, kayle.url, sleep=sleeps) as reader:
        assert list(reader.endpoints()) == []
        with pytest.raises(KayleApiError) as forbidden:
            reader.create_endpoint("https://partner.example/hook", None, [])

    assert (unauthorized.value.status, unauthorized.value.code) == (401, "UNAUTHORIZED")
    assert (forbidden.value.status, forbidden.value.code) == (403, "FORBIDDEN")
    assert sleeps == []


def test_retry_conflicts_name_the_reason(api: KayleApi, kayle: MockKayle, fixtures: list[Fixture]) -> None:
    endpoint = api.create_endpoint("http://127.0.0.1:9/hook", None, [fixtures[0].type]).endpoint
    public = generate(2048).public_key()
    api.create_key(endpoint.id, registration_body("k1", public))
    pending = kayle.event(payload_like(fixtures[0].expected_payload, "evt_pending", "vs_a"))["deliveries"][0]
    expired = kayle.event(payload_like(fixtures[0].expected_payload, "evt_gone", "vs_b"), scrubbed=True)
    expired_id = expired["deliveries"][0]["id"]

    with pytest.raises(KayleApiError) as in_progress:
        api.retry_delivery(pending["id"])
    with pytest.raises(KayleApiError) as gone:
        api.retry_delivery(expired_id)

    assert (in_progress.value.status, in_progress.value.code) == (409, "CONFLICT")
    assert (gone.value.status, gone.value.code) == (409, "WEBHOOK_PAYLOAD_EXPIRED")
    assert api.event("evt_gone").trigger_id == "vs_b"


def test_5xx_answers_are_retried_with_growing_backoff(api: KayleApi, kayle: MockKayle, sleeps: Sleeps) -> None:
    api.create_endpoint("https://partner.example/hook", None, [])
    kayle.fault("GET", ENDPOINTS, 503, count=1)
    kayle.fault("GET", ENDPOINTS, 500, count=1)

    assert len(list(api.endpoints())) == 1
    assert len([r for r in api_requests(kayle) if r["method"] == "GET"]) == 3
    assert sleeps == [0.5, 1.0]


def test_a_post_is_retried_after_a_5xx(api: KayleApi, kayle: MockKayle, sleeps: Sleeps) -> None:
    kayle.fault("POST", ENDPOINTS, 502, count=1)

    api.create_endpoint("https://partner.example/hook", None, [])

    assert len(kayle.state()["endpoints"]) == 1 and sleeps == [0.5]


def test_persistent_5xx_gives_up_with_the_last_answer(api: KayleApi, kayle: MockKayle, sleeps: Sleeps) -> None:
    kayle.fault("GET", ENDPOINTS, 500, count=10)
    with pytest.raises(KayleApiError) as internal:
        list(api.endpoints())
    kayle.reset()
    kayle.fault("GET", ENDPOINTS, 502, count=10)
    with pytest.raises(KayleApiError) as proxy:
        list(api.endpoints())

    assert (internal.value.status, internal.value.code) == (500, "INTERNAL_SERVER_ERROR")
    assert (proxy.value.status, proxy.value.code) == (502, "INVALID_RESPONSE")
    assert "KAYLE_API_URL" in str(proxy.value)
    assert len(api_requests(kayle)) == 4 and sleeps == [0.5, 1.0, 2.0] * 2


def test_connection_errors_are_retried_then_reported(sleeps: Sleeps) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with KayleApi("kk_secret_key_value", url, sleep=sleeps) as api, pytest.raises(KayleApiError) as caught:
        api.create_endpoint("https://partner.example/hook", None, [])

    assert caught.value.status is None and caught.value.code == "CONNECTION_ERROR"
    assert url in str(caught.value) and sleeps == [0.5, 1.0, 2.0]


def test_the_api_key_appears_in_no_log_error_or_repr(
    kayle: MockKayle, sleeps: Sleeps, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    key = "kk_live_this_must_never_be_logged_0123456789"
    errors: list[str] = []
    with KayleApi(key, kayle.url, sleep=sleeps) as api:
        for call in (lambda: api.endpoint("whe_x"), lambda: list(api.endpoints())):
            try:
                call()
            except KayleApiError as error:
                errors.append(f"{error!s} {error!r} {error.args}")
        kayle.fault("GET", ENDPOINTS, 500, count=10)
        try:
            list(api.endpoints())
        except KayleApiError as error:
            errors.append(str(error))
        errors.append(repr(api))
    with KayleApi(key, f"http://127.0.0.1:{free_port()}", sleep=sleeps) as dead:
        try:
            dead.endpoint("whe_x")
        except KayleApiError as error:
            errors.append(f"{error!s} {error!r}")

    assert len(errors) == 5 and caplog.records
    assert key not in caplog.text and all(key not in text for text in errors)
    assert key[3:] not in caplog.text and all(key[3:] not in text for text in errors)


def test_the_base_url_may_name_the_version(kayle: MockKayle, sleeps: Sleeps) -> None:
    with KayleApi(kayle.api_key, kayle.url + "/v1/", sleep=sleeps) as api:
        assert list(api.endpoints()) == []


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://api.kayle.id", True),
        ("https://api.kayle.id/v1", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://api.kayle.id", False),
        ("HTTP://API.KAYLE.ID", False),
        ("http://10.0.0.5:8080", False),
        ("http://localhost.evil.example", False),
        ("ftp://api.kayle.id", False),
        ("https://", False),
        ("api.kayle.id", False),
        ("http://[::1", False),
    ],
)
def test_the_key_goes_only_over_https_or_to_this_machine(url: str, accepted: bool) -> None:
    if accepted:
        KayleApi("kk_x", url).close()
        return
    with pytest.raises(ConfigError, match=r"^KAYLE_API_URL: .* is not an https:// URL"):
        KayleApi("kk_x", url)

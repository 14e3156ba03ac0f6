"""Event models, handler registration and plugin loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from receiver import jwe
from receiver.keyring import load_keyring
from receiver.settings import ConfigError, read_settings
from tests.helpers.plugins import entry_point_dir
from tests.helpers.vectors import FIXTURE_KID, Fixture
from workers import GenericEvent, SessionCancelled, SessionExpired, SessionFailed, SessionSucceeded, on, on_any
from workers.dispatch import EventUnreadable, read_event
from workers.models import model_for
from workers.plugins import handler_lines, load_handlers
from workers.registry import REGISTRY, Registry

MODELS = {
    "verification.session.succeeded": SessionSucceeded,
    "verification.session.failed": SessionFailed,
    "verification.session.expired": SessionExpired,
    "verification.session.cancelled": SessionCancelled,
}


def test_every_fixture_validates_into_its_model_and_keeps_every_field(fixtures: list[Fixture]) -> None:
    for fixture in fixtures:
        event = model_for(fixture.type).model_validate_json(fixture.expected_plaintext)
        assert type(event) is MODELS.get(fixture.type, GenericEvent), fixture.name
        assert event.model_dump(mode="json", exclude_unset=True) == fixture.expected_payload, fixture.name
        assert event.event_id == fixture.event_id
        assert event.session_id == fixture.expected_payload["metadata"]["verification_session_id"]


def test_declined_claims_read_the_same_whether_null_or_absent(fixtures: list[Fixture]) -> None:
    fixture = next(f for f in fixtures if f.name.endswith("declined_as_null"))
    event = SessionSucceeded.model_validate_json(fixture.expected_plaintext)
    assert "given_names" in event.data.claims and event.data.claims.get("given_names") is None
    assert "family_name" not in event.data.claims and event.data.claims.get("family_name") is None
    assert event.data.claims["age_over_59"] is False
    assert isinstance(event.data.claims["document_number"], str)


def test_unknown_fields_stay_available(fixtures: list[Fixture]) -> None:
    fixture = next(f for f in fixtures if f.name.endswith("extra_fields"))
    event = SessionCancelled.model_validate_json(fixture.expected_plaintext)
    assert event.data.reason == "privacy_cancelled_after_terminal_failure"
    assert event.data.model_extra == {"x_future_flag": True, "risk_signals": [{"code": "velocity_ok", "score": 0.12}]}
    assert event.metadata.model_extra is not None and event.metadata.model_extra["trace"]["region"] == "apac"


def test_read_event_decrypts_with_the_keyring(fixtures: list[Fixture], key_dir: Path) -> None:
    fixture = next(f for f in fixtures if f.name == "verification.session.review_required")
    event = read_event(fixture.body.decode(), fixture.event_id, load_keyring(key_dir))
    assert isinstance(event, GenericEvent)
    assert event.data["review_deadline"] == "2026-03-28T00:00:00.000Z"


def test_an_invalid_payload_is_reported_by_location_never_by_value(key_dir: Path) -> None:
    keyring = load_keyring(key_dir)
    payload = {
        "type": "verification.session.failed",
        "metadata": {"event_id": "evt_bad", "verification_session_id": "vs_1"},
        "data": {"failure_code": "liveness_failed", "nfc_tries_used": "Zebedee-Quux", "liveness_tries_used": 1},
    }
    token = jwe.encrypt(json.dumps(payload).encode(), keyring[FIXTURE_KID].public_key(), FIXTURE_KID).decode()
    with pytest.raises(EventUnreadable) as caught:
        read_event(token, "evt_bad", keyring)
    assert "data.nfc_tries_used (int_parsing)" in str(caught.value)
    assert "Zebedee" not in str(caught.value)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_a_payload_for_another_event_is_refused(fixtures: list[Fixture], key_dir: Path) -> None:
    with pytest.raises(EventUnreadable, match="event id"):
        read_event(fixtures[0].body.decode(), "evt_other", load_keyring(key_dir))


def test_handlers_run_for_their_types_then_for_every_event_each_once() -> None:
    registry = Registry()

    def provision(event: object, ctx: object) -> None: ...
    def audit(event: object, ctx: object) -> None: ...

    registry.add(audit, None)
    registry.add(provision, ("verification.session.succeeded", "verification.session.failed"))
    registry.add(provision, None)  # also on_any: still runs once per event

    names = [h.name for h in registry.for_type("verification.session.succeeded")]
    assert names == [provision.__module__ + "." + provision.__qualname__, audit.__module__ + "." + audit.__qualname__]
    assert len(registry.for_type("verification.session.review_required")) == 2
    assert registry.names_by_type()["*"][0].endswith("audit")
    assert len(registry) == 2


def test_decorators_refuse_misuse() -> None:
    with pytest.raises(TypeError, match="on_any"):
        on()
    with pytest.raises(TypeError, match="event type strings"):
        on(lambda event, ctx: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="without parentheses"):
        on_any("verification.session.succeeded")  # type: ignore[arg-type]


def test_plugins_come_from_entry_points_and_kayle_handlers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(REGISTRY, "_every", list(REGISTRY._every))  # the probe stays out of other tests' workers
    monkeypatch.setattr(REGISTRY, "_by_type", {k: list(v) for k, v in REGISTRY._by_type.items()})
    monkeypatch.syspath_prepend(str(entry_point_dir(tmp_path, "probe", "tests.plugins.entry_point_probe")))
    monkeypatch.setenv("KAYLE_HANDLERS", "tests.plugins.recorder")
    registry = load_handlers(read_settings())
    described = registry.names_by_type()
    assert "tests.plugins.entry_point_probe.probe" in described["*"]  # advertised by an entry point
    assert "tests.plugins.recorder.succeeded" in described["verification.session.succeeded"]
    lines = handler_lines(registry)
    assert any(line.startswith("every event (on_any): ") for line in lines)
    assert any(line.startswith("verification.session.expired: tests.plugins.recorder.terminal") for line in lines)


@pytest.mark.parametrize(
    ("modules", "named"),
    [
        ("tests.plugins.broken_import", "'tests.plugins.broken_import'"),
        ("tests.plugins.recorder, tests.plugins.not_there", "'tests.plugins.not_there'"),
    ],
)
def test_a_plugin_that_fails_to_import_is_named(monkeypatch: pytest.MonkeyPatch, modules: str, named: str) -> None:
    monkeypatch.setenv("KAYLE_HANDLERS", modules)
    with pytest.raises(ConfigError) as caught:
        load_handlers(read_settings())
    message = str(caught.value)
    assert named in message and "failed to import" in message
    assert "\n" not in message

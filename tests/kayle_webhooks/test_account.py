"""register, rotate-key, reconcile and status against the mock Kayle API (a real process)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from kayle_webhooks.keys import public_jwk, write_key
from receiver.keyring import load_private_key
from receiver.settings import load_config
from tests.helpers.cli import run_cli as run
from tests.helpers.processes import command, free_port, running, wait_for_http
from tests.helpers.redis import mark
from tests.helpers.vectors import REPO, Fixture
from tests.helpers.workers import ok_counts, read_records
from tests.kayle_mock.control import MockKayle, payload_like
from workers.models import KNOWN_EVENT_TYPES

URL = "http://127.0.0.1:9/webhooks/kayle"  # nothing listens there: sends to it fail



@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kayle: MockKayle, redis_url: str) -> Path:
    """A new user's working directory: an API key, an empty key directory, no secret, no .env."""
    for name in ("KAYLE_SIGNING_SECRETS", "KAYLE_SIGNING_SECRETS_FILE", "KAYLE_ENDPOINT_ID", "KAYLE_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAYLE_API_KEY", kayle.api_key)
    monkeypatch.setenv("KAYLE_API_URL", kayle.url)
    monkeypatch.setenv("KAYLE_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("KAYLE_REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def register(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run(capsys, "register", "--url", URL, "--bits", "2048", *extra)


def dotenv(home: Path) -> dict[str, str]:
    lines = (home / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def only_endpoint(kayle: MockKayle) -> dict[str, Any]:
    endpoints = kayle.state()["endpoints"]
    assert len(endpoints) == 1
    return dict(endpoints[0])


# -- register -------------------------------------------------------------------------------------


def test_register_leaves_a_new_user_configured(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = register(capsys, "--name", "prod")

    endpoint = only_endpoint(kayle)
    secret = kayle.state()["secrets"][endpoint["id"]]
    assert status == 0
    assert endpoint["url"] == URL and endpoint["name"] == "prod" and len(endpoint["subscribed_event_types"]) == 4
    assert dotenv(home) == {"KAYLE_SIGNING_SECRETS": secret, "KAYLE_ENDPOINT_ID": endpoint["id"]}
    assert mode(home / ".env") == 0o600
    assert secret not in out
    [key_file] = (home / "keys").iterdir()
    assert mode(key_file) == 0o600
    [registered] = kayle.state()["keys"]
    assert registered["is_active"] and registered["key_id"] == key_file.stem
    local = load_private_key(key_file)
    assert registered["jwk"]["n"] == public_jwk(local.public_key(), key_file.stem)["n"]
    config = load_config()  # what `serve` and `worker` will read from the same directory
    assert config.secrets == (secret,) and set(config.keyring) == {key_file.stem}
    assert config.settings.endpoint_id == endpoint["id"]


def test_register_is_idempotent(home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]) -> None:
    register(capsys)
    before = (home / ".env").read_text()
    calls = len(kayle.requests())

    status, out, _ = register(capsys)

    assert status == 0
    assert len(kayle.state()["keys"]) == 1 and len(list((home / "keys").iterdir())) == 1
    assert (home / ".env").read_text() == before
    changes = [r["path"] for r in kayle.requests()[calls:] if r["method"] != "GET"]
    assert [str(path).rsplit("/", 2)[-2:] for path in changes] == [["signing-secret", "reveal"]]  # a read only
    assert "already registered" in out and "already configured" in out
    only_endpoint(kayle)


def test_register_completes_an_endpoint_made_in_the_dashboard(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".env").write_text("# mine\nKAYLE_REDIS_URL=redis://elsewhere:6379/0\nOTHER=1\n")
    write_key(home / "keys", "my-key", 2048)
    register(capsys)  # creates the endpoint; then the user's .env is replaced by one with a stale secret
    (home / ".env").write_text("# mine\nKAYLE_REDIS_URL=redis://elsewhere:6379/0\nOTHER=1\nKAYLE_SIGNING_SECRETS=whsec_stale\n")

    status, out, _ = register(capsys, "--events", "verification.session.failed")

    endpoint = only_endpoint(kayle)
    assert status == 0
    assert endpoint["subscribed_event_types"] == ["verification.session.failed"]
    assert [k["key_id"] for k in kayle.state()["keys"]] == ["my-key"]
    lines = (home / ".env").read_text().splitlines()
    assert lines[:3] == ["# mine", "KAYLE_REDIS_URL=redis://elsewhere:6379/0", "OTHER=1"]
    assert dotenv(home)["KAYLE_SIGNING_SECRETS"] == "whsec_stale," + kayle.state()["secrets"][endpoint["id"]]
    assert "using the newest key" in out


def test_register_appends_the_secret_to_the_secrets_file(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_file = home / "secrets.txt"
    secrets_file.write_text("whsec_older")
    monkeypatch.setenv("KAYLE_SIGNING_SECRETS_FILE", str(secrets_file))

    status, out, _ = register(capsys, "--show-secret")

    secret = kayle.state()["secrets"][only_endpoint(kayle)["id"]]
    assert status == 0
    assert secrets_file.read_text().splitlines() == ["whsec_older", secret]
    assert mode(secrets_file) == 0o600
    assert "KAYLE_SIGNING_SECRETS" not in dotenv(home)
    assert f"signing secret: {secret}" in out


def test_register_refuses_a_kid_kayle_holds_with_another_key(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, "--kid", "shared")
    (home / "keys" / "shared.pem").unlink()
    write_key(home / "keys", "shared", 2048)

    status, _, err = register(capsys, "--kid", "shared")

    assert status == 1 and "different public key" in err


def test_register_reports_kayle_errors_in_one_line_without_the_key(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAYLE_API_KEY", "kk_wrong_and_secret")
    status, out, err = register(capsys)
    assert status == 1 and "UNAUTHORIZED" in err and "kk_wrong_and_secret" not in out + err

    monkeypatch.setenv("KAYLE_API_KEY", kayle.readonly_key)
    status, out, err = register(capsys)
    assert status == 1 and "FORBIDDEN" in err and kayle.readonly_key not in out + err

    monkeypatch.setenv("KAYLE_API_KEY", kayle.api_key)
    status, _, err = run(capsys, "register", "--url", "ftp://partner.example/hook", "--bits", "2048")
    assert status == 1 and "BAD_REQUEST" in err
    assert not (home / ".env").exists()


def test_commands_name_missing_configuration(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAYLE_API_KEY")
    status, _, err = register(capsys)
    assert status == 2 and "KAYLE_API_KEY: not set" in err
    assert not (home / "keys").exists()

    api_key_file = home / "api-key"
    api_key_file.write_text("kk_from_a_file\n")
    monkeypatch.setenv("KAYLE_API_KEY_FILE", str(api_key_file))
    status, _, err = run(capsys, "status")
    assert status == 2 and "KAYLE_ENDPOINT_ID: not set" in err
    monkeypatch.setenv("KAYLE_ENDPOINT_ID", "whe_x")
    status, _, err = run(capsys, "reconcile", "--since", "soon")
    assert status == 2 and "--since" in err


# -- rotate-key -----------------------------------------------------------------------------------


def test_rotate_key_registers_a_new_key_and_keeps_the_old_one(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, "--kid", "first")

    status, out, _ = run(capsys, "rotate-key", "--kid", "second", "--bits", "2048")

    keys = {k["key_id"]: k["is_active"] for k in kayle.state()["keys"]}
    assert status == 0 and keys == {"first": False, "second": True}
    assert sorted(p.name for p in (home / "keys").iterdir()) == ["first.pem", "second.pem"]
    assert "old key first" in out and "Keep" in out and "restart" in out
    assert set(load_config().keyring) == {"first", "second"}


def test_rotate_key_uses_a_key_deployed_beforehand(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, "--kid", "first")
    path = write_key(home / "keys", "deployed", 2048)
    before = path.read_bytes()

    status, out, _ = run(capsys, "rotate-key", "--kid", "deployed")

    [active] = [k for k in kayle.state()["keys"] if k["is_active"]]
    assert status == 0 and active["key_id"] == "deployed" and path.read_bytes() == before
    assert active["jwk"]["n"] == public_jwk(load_private_key(path).public_key(), "deployed")["n"]
    assert "restart the receivers" not in out


def test_rotate_key_refuses_a_kid_already_registered(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, "--kid", "first")
    status, _, err = run(capsys, "rotate-key", "--kid", "first")
    assert status == 1 and "already registered" in err
    assert len(kayle.state()["keys"]) == 1


# -- reconcile ------------------------------------------------------------------------------------


def make_outage(kayle: MockKayle, fixtures: list[Fixture]) -> dict[str, str]:
    """Failed deliveries of every kind reconcile must tell apart; returns a name -> event id map."""
    template = fixtures[0].expected_payload
    events = {
        "accepted": "evt_accepted_here",
        "missed": "evt_missed",
        "missed_twice": "evt_missed_twice",
        "scrubbed": "evt_scrubbed",
        "expired": "evt_expired_unscrubbed",
        "too_old": "evt_too_old",
        "pending": "evt_still_pending",
    }
    for name, event_id in events.items():
        payload = payload_like(template, event_id, f"vs_{name}")
        options: dict[str, Any] = {"send": name != "pending"}
        if name == "scrubbed":
            options["scrubbed"] = True
        if name == "expired":
            options["expired"] = True
        if name == "too_old":
            options["age_hours"] = 24 * 12
        kayle.event(payload, **options)
        if name == "missed_twice":
            kayle.event(payload, send=True)  # a replay that failed too: a second delivery of one event
    return events


def retried(kayle: MockKayle) -> list[str]:
    deliveries = {d["id"]: d["event_id"] for d in kayle.state()["deliveries"]}
    return sorted(
        deliveries[str(r["path"]).split("/")[4]]
        for r in kayle.requests()
        if str(r["path"]).endswith("/retry")
    )


def test_reconcile_retries_only_what_is_missing_and_lists_what_is_lost(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], fixtures: list[Fixture],
    redis_client: redis.Redis,
) -> None:
    register(capsys)
    events = make_outage(kayle, fixtures)
    mark(redis_client, events["accepted"])

    status, out, _ = run(capsys, "reconcile", "--since", "9d")

    assert status == 3
    assert retried(kayle) == sorted([events["missed"], events["missed_twice"], events["expired"]])
    assert f"already accepted here, skipped: {events['accepted']}" in out
    assert f"LOST at Kayle (payload no longer retained): {events['scrubbed']}, session vs_scrubbed" in out
    assert f"LOST at Kayle (payload no longer retained): {events['expired']}, session vs_expired" in out
    assert events["too_old"] not in out and events["pending"] not in out
    assert "summary: 1 already accepted, 2 retried, 0 in progress, 2 lost" in out


def test_reconcile_dry_run_changes_nothing(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], fixtures: list[Fixture],
    redis_client: redis.Redis,
) -> None:
    register(capsys)
    events = make_outage(kayle, fixtures)

    status, out, _ = run(capsys, "reconcile", "--dry-run")

    assert status == 3 and retried(kayle) == []
    assert f"would retry: {events['missed']}" in out and f"would retry: {events['accepted']}" in out
    assert {d["status"] for d in kayle.state()["deliveries"] if d["event_id"] == events["missed"]} == {"failed"}


def test_reconcile_with_nothing_failed_succeeds(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], redis_client: redis.Redis
) -> None:
    register(capsys)
    status, out, _ = run(capsys, "reconcile")
    assert status == 0 and "summary: 0 already accepted, 0 retried, 0 in progress, 0 lost" in out


def test_reconcile_retries_nothing_when_redis_cannot_be_asked(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], fixtures: list[Fixture],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(capsys)
    make_outage(kayle, fixtures)
    monkeypatch.setenv("KAYLE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    status, _, err = run(capsys, "reconcile")

    assert status == 1 and "cannot read dedup markers" in err and retried(kayle) == []


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_the_endpoint_keys_and_backlog(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], fixtures: list[Fixture]
) -> None:
    register(capsys, "--kid", "first")
    make_outage(kayle, fixtures)
    write_key(home / "keys", "spare", 2048)

    status, out, _ = run(capsys, "status")

    failed = len([d for d in kayle.state()["deliveries"] if d["status"] == "failed"])
    assert status == 0
    assert "enabled: yes" in out and "key first: active at Kayle, held here" in out
    assert "key spare: held here, not registered at Kayle" in out
    assert f"deliveries: 1 pending, {failed} failed" in out and failed >= 6


def test_status_flags_an_active_key_not_held_here(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, "--kid", "first")
    run(capsys, "rotate-key", "--kid", "second", "--bits", "2048")
    (home / "keys" / "second.pem").unlink()

    status, out, _ = run(capsys, "status")

    assert status == 1
    assert "key second: active at Kayle, NOT held here" in out and "key first: inactive at Kayle, held here" in out
    assert "PROBLEM: the active key second is not held here" in out


# -- done when: a new user registers, an outage outlasts Kayle's retries, reconcile recovers it ----


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_register_then_reconcile_recovers_an_outage_end_to_end(
    tmp_path: Path, kayle: MockKayle, fixtures: list[Fixture], redis_url: str, redis_client: redis.Redis
) -> None:
    home = tmp_path / "service"
    home.mkdir()
    records = tmp_path / "records.jsonl"
    env = {name: value for name, value in os.environ.items() if not name.startswith("KAYLE_")}
    env.update(
        PYTHONPATH=str(REPO),  # for the test handler plugin, tests.plugins.recorder
        KAYLE_API_KEY=kayle.api_key,
        KAYLE_API_URL=kayle.url,
        KAYLE_KEY_DIR=str(home / "keys"),
        KAYLE_REDIS_URL=redis_url,
        KAYLE_HANDLERS="tests.plugins.recorder",
        KAYLE_TEST_RECORD=str(records),
    )
    port, admin_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/webhooks/kayle"
    ready = f"http://127.0.0.1:{admin_port}/readyz"
    serve = command("serve", "--port", str(port), "--admin-port", str(admin_port), "--workers", "1")
    templates = [f.expected_payload for f in fixtures if f.type in KNOWN_EVENT_TYPES]  # what Kayle lets us subscribe to
    payloads = [payload_like(templates[i % len(templates)], f"evt_e2e_{i}", f"vs_e2e_{i}") for i in range(7)]
    first, answer_lost, *missed, gone = payloads

    registered = cli(env, home, "register", "--url", url, "--bits", "2048")
    assert registered.returncode == 0, registered.stderr
    with running(serve, env, tmp_path / "serve-1.log", cwd=home) as process:
        wait_for_http(ready, process=process)
        delivered = kayle.event(first, send=True)["deliveries"]
        kayle.event(answer_lost, received_but_failed=True)  # accepted here, but Kayle recorded a failure
    assert [d["status"] for d in delivered] == ["succeeded"]  # registered and receiving

    for payload in missed:  # the service is down for longer than Kayle's ~32.6 h of retries
        assert kayle.event(payload, send=True)["deliveries"][0]["status"] == "failed"
    kayle.event(gone, send=True, scrubbed=True)  # ...and this one's retained payload has already expired

    with running(serve, env, tmp_path / "serve-2.log", cwd=home) as process:
        wait_for_http(ready, process=process)
        reconciled = cli(env, home, "reconcile")
        kayle.idle()
        again = cli(env, home, "reconcile")
        kayle.idle()

    assert reconciled.returncode == 3, reconciled.stderr
    assert "summary: 1 already accepted, 4 retried, 0 in progress, 1 lost" in reconciled.stdout
    assert f"{gone['metadata']['event_id']}, session vs_e2e_6" in reconciled.stdout
    assert "summary: 1 already accepted, 0 retried, 0 in progress, 1 lost" in again.stdout
    final = {d["event_id"]: d["status"] for d in kayle.state()["deliveries"]}
    assert all(final[p["metadata"]["event_id"]] == "succeeded" for p in missed)

    worked = cli(env, home, "worker", "--burst")
    assert worked.returncode == 0, worked.stderr
    handled = ok_counts(read_records(records))
    expected = [p["metadata"]["event_id"] for p in [first, answer_lost, *missed]]
    assert {event_id: handled.get(("audit", event_id)) for event_id in expected} == dict.fromkeys(expected, 1)
    assert sorted(event_id for handler, event_id in handled if handler == "audit") == sorted(expected)


# -- the operator's files: what Kayle answers is checked, and nothing is written through a link ----

FORGED_SECRETS = {
    "a line that redirects Redis": "whsec_evilevil\nKAYLE_REDIS_URL=redis://evil.example:6379/0",
    "spaces and quotes": "whsec_abcdefgh \"ij' kl",
    "too long": "whsec_" + "a" * 257,
    "too short": "whsec_abc",
    "not a whsec_ secret": "sk_live_abcdefghijklmnop",
}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("forged", FORGED_SECRETS.values(), ids=FORGED_SECRETS)
def test_register_writes_nothing_when_kayle_answers_a_forged_signing_secret(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], forged: str
) -> None:
    kayle.tamper("POST", "/v1/webhooks/endpoints", {"signing_secret": forged})

    status, out, err = register(capsys)

    assert status == 1
    assert "signing secret that is not whsec_" in one_line(err) and "nothing was written" in err
    assert forged not in out + err and "evil" not in out + err
    assert not (home / ".env").exists() and not (home / "keys").exists()
    assert kayle.state()["keys"] == []  # no key registered either: a later register starts clean


def test_register_writes_nothing_when_a_revealed_secret_is_forged(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys)
    endpoint_id = only_endpoint(kayle)["id"]
    (home / ".env").write_text("# mine\nKAYLE_SIGNING_SECRETS=whsec_rotated_elsewhere\n")
    for key in (home / "keys").iterdir():
        key.unlink()
    before = (home / ".env").read_bytes()
    forged = FORGED_SECRETS["a line that redirects Redis"]
    kayle.tamper("POST", f"/v1/webhooks/endpoints/{endpoint_id}/signing-secret/reveal", {"signing_secret": forged})

    status, out, err = register(capsys)

    assert status == 1 and "nothing was written" in one_line(err) and "evil" not in out + err
    assert (home / ".env").read_bytes() == before
    assert list((home / "keys").iterdir()) == [] and len(kayle.state()["keys"]) == 1


def test_register_writes_nothing_when_kayle_answers_a_forged_endpoint_id(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    kayle.tamper("POST", "/v1/webhooks/endpoints", {"endpoint": {"id": "whe_x\nKAYLE_REDIS_URL=redis://evil"}})

    status, out, err = register(capsys)

    assert status == 1 and "endpoint id" in one_line(err) and "nothing was written" in err
    assert "evil" not in out
    assert not (home / ".env").exists() and not (home / "keys").exists()


def test_register_reports_a_malformed_listed_endpoint_in_one_line(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys)
    (home / ".env").unlink()
    kayle.tamper("GET", "/v1/webhooks/endpoints", {"enabled": "sometimes"})

    status, _, err = register(capsys)

    assert status == 1 and "unexpected Endpoint from Kayle" in one_line(err)
    assert not (home / ".env").exists()


@pytest.mark.parametrize("setting", ["dotenv", "secrets file"])
def test_register_refuses_a_planted_symlink_before_asking_kayle_anything(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    victim = home / "victim"
    victim.write_text("someone else's file\n")
    link = home / (".env" if setting == "dotenv" else "secrets.txt")
    link.symlink_to(victim)
    if setting == "secrets file":
        monkeypatch.setenv("KAYLE_SIGNING_SECRETS_FILE", str(link))

    status, _, err = register(capsys)

    assert status == 2 and str(link) in one_line(err) and "symlink" in err
    assert victim.read_text() == "someone else's file\n" and link.is_symlink()
    assert kayle.requests() == [] and not (home / "keys").exists()


def test_register_cannot_be_redirected_by_planted_temporary_names(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = home / "victim"
    victim.write_text("someone else's file\n")
    planted = [home / f".env.{os.getpid()}.tmp", home / ".env.tmp", home / ".env.new"]  # the names a writer guesses
    for name in planted:
        name.symlink_to(victim)

    status, _, _ = register(capsys)

    assert status == 0
    assert victim.read_text() == "someone else's file\n"
    assert all(name.is_symlink() for name in planted)
    assert not (home / ".env").is_symlink() and "KAYLE_SIGNING_SECRETS" in dotenv(home)
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".env")) == sorted(
        [".env", *(p.name for p in planted)]
    )  # no temporary file left behind


def test_register_makes_the_files_holding_the_secret_0600_and_says_so(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / ".env").write_text("OTHER=1\n")
    (home / ".env").chmod(0o644)

    status, out, _ = register(capsys)

    assert status == 0 and mode(home / ".env") == 0o600
    assert "mode 0644 -> 0600" in out and dotenv(home)["OTHER"] == "1"

    secrets_file = home / "secrets.txt"
    secrets_file.write_text("whsec_older\n")
    secrets_file.chmod(0o644)
    monkeypatch.setenv("KAYLE_SIGNING_SECRETS_FILE", str(secrets_file))
    (home / ".env").write_text("")
    kayle.reset()

    status, out, _ = register(capsys)

    assert status == 0 and mode(secrets_file) == 0o600 and "mode 0644 -> 0600" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_register_run_as_root_leaves_the_services_dotenv_to_the_service(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".env").write_text("OTHER=1\n")
    os.chown(home / ".env", 10001, 10001)

    status, _, _ = register(capsys)

    written = (home / ".env").stat()
    assert status == 0 and (written.st_uid, written.st_gid) == (10001, 10001) and mode(home / ".env") == 0o600


def test_a_plain_http_api_url_is_refused_before_the_key_is_sent(
    home: Path, kayle: MockKayle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy on the way (here the mock itself) would see the API key of a plain-http request in clear.
    monkeypatch.setenv("HTTP_PROXY", kayle.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAYLE_API_URL", "http://api.example.com")

    status, out, err = register(capsys)

    assert status == 2
    assert one_line(err).startswith("kayle-webhooks: KAYLE_API_URL: 'http://api.example.com' is not an https:// URL")
    assert kayle.requests() == [] and kayle.api_key not in out + err
    assert not (home / ".env").exists() and not (home / "keys").exists()

    monkeypatch.setenv("KAYLE_API_URL", kayle.url)  # plain http to this machine: a local test double
    status, _, err = register(capsys)
    assert status == 0, err

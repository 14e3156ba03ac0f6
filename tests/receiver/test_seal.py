"""The content key sealed at intake: the worker decrypts without the RSA operation, and a Redis dump with
everything an attacker without the key directory has opens nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from rq.job import Job

from kayle_webhooks.keys import public_jwk
from receiver import b64url, jwe
from receiver.jobs import SERIALIZER, job_id
from receiver.seal import Sealer
from receiver.settings import Config
from tests.helpers.privacy import redis_blobs
from tests.helpers.receiver import post_all
from tests.helpers.vectors import FIXTURE_KID, Fixture, by_name
from tests.helpers.workers import configure_in_process, drain, failed_ids, ok_counts, read_records, set_worker_env

pytestmark = pytest.mark.anyio


def job_kwargs(client: redis.Redis, event_id: str) -> dict[str, object]:
    data = json.loads(client.hget(Job.key_for(job_id(event_id)), "data") or b"[]")
    return dict(data[3])


def rewrite_kwargs(client: redis.Redis, event_id: str, **changes: object) -> None:
    key = Job.key_for(job_id(event_id))
    function, instance, args, kwargs = json.loads(client.hget(key, "data") or b"[]")
    client.hset(key, "data", SERIALIZER.dumps((function, instance, args, {**kwargs, **changes})))


def broken_encrypted_key(compact: str) -> str:
    """The JWE with its RSA-encrypted content key damaged: only the seal can still open it."""
    parts = compact.split(".")
    raw = bytearray(b64url.decode(parts[1]))
    raw[10] ^= 0xFF
    parts[1] = b64url.encode(bytes(raw))
    return ".".join(parts)


async def test_the_worker_opens_the_sealed_key_and_falls_back_to_rsa_without_it(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    """With a seal the worker needs no RSA operation: it handles an event whose RSA-encrypted key was damaged
    in Redis. Without the seal (a job queued by an older version), or with a forged one, it decrypts with RSA."""
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    sealed, unsealed, forged, damaged_unsealed = (
        by_name(fixtures, name) for name in (
            "verification.session.succeeded", "verification.session.failed", "verification.session.expired",
            "verification.session.cancelled",
        )
    )
    assert await post_all([sealed, unsealed, forged, damaged_unsealed]) == ["accepted"] * 4
    for fixture in (sealed, unsealed, forged, damaged_unsealed):
        assert str(job_kwargs(redis_client, fixture.event_id)["seal"]).startswith("v1.")
    rewrite_kwargs(redis_client, sealed.event_id, jwe=broken_encrypted_key(sealed.body.decode()))
    rewrite_kwargs(redis_client, unsealed.event_id, seal=None)
    rewrite_kwargs(redis_client, forged.event_id, seal="v1." + b64url.encode(bytes(60)))
    rewrite_kwargs(redis_client, damaged_unsealed.event_id, jwe=broken_encrypted_key(damaged_unsealed.body.decode()),
                   seal=None)

    drain(settings, redis_client)

    handled = {event_id for _, event_id in ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))}
    assert handled == {sealed.event_id, unsealed.event_id, forged.event_id}
    assert failed_ids(redis_client, settings.queue) == [job_id(damaged_unsealed.event_id)]


def test_a_seal_opens_only_for_its_event_and_header(config: Config, fixtures: list[Fixture]) -> None:
    sealer = Sealer(config.keyring)
    parsed = jwe.parse(fixtures[0].body)
    cek = jwe.unwrap_key(parsed, config.keyring)
    seal = sealer.seal(cek, parsed.kid, "evt_a", parsed.protected)
    assert sealer.open(seal, parsed.kid, "evt_a", parsed.protected) == cek
    assert sealer.open(seal, parsed.kid, "evt_b", parsed.protected) is None
    assert sealer.open(seal, parsed.kid, "evt_a", parsed.protected + "x") is None
    assert sealer.open(seal, "second-key", "evt_a", parsed.protected) is None
    assert sealer.open(seal.replace("v1.", "v2."), parsed.kid, "evt_a", parsed.protected) is None


async def test_a_redis_dump_and_everything_but_the_key_directory_open_nothing(
    env: dict[str, str], config: Config, redis_client: redis.Redis, fixtures: list[Fixture], key_dir: Path
) -> None:
    """The attacker has every byte in Redis, this code, the configuration (the signing secret, the kid, the
    public keys Kayle holds) but not KAYLE_KEY_DIR. Neither the content key nor a key that opens the seals is
    in the dump or can be derived from what they have."""
    assert await post_all(fixtures) == ["accepted"] * len(fixtures)
    dump = [blob for _, blob in redis_blobs(redis_client)]
    public = config.keyring[FIXTURE_KID].public_key()
    jwk = public_jwk(public, FIXTURE_KID)
    known = {
        "the signing secret": config.secrets[0].encode(),
        "the public modulus": b64url.decode(jwk["n"]),
        "the public JWK": json.dumps(jwk, sort_keys=True).encode(),
        "the kid": FIXTURE_KID.encode(),
        "the key file's name": (key_dir / f"{FIXTURE_KID}.pem").name.encode(),
    }
    guesses = {
        name: HKDF(hashes.SHA256(), 32, salt, f"v1 {FIXTURE_KID}".encode()).derive(material)
        for name, material in known.items()
        for salt in (b"kayle-webhooks content-key seal", None)
    } | {f"sha256 of {name}": hashlib.sha256(material).digest() for name, material in known.items()}
    for fixture in fixtures:
        parsed = jwe.parse(fixture.body)
        cek = jwe.unwrap_key(parsed, config.keyring)
        assert not any(cek in blob or b64url.encode(cek).encode() in blob for blob in dump), fixture.name
        seal = str(job_kwargs(redis_client, fixture.event_id)["seal"])
        raw = b64url.decode(seal.split(".", 1)[1])
        aad = f"{fixture.event_id}.{parsed.protected}".encode()
        for name, guess in guesses.items():
            with pytest.raises(Exception):
                AESGCM(guess).decrypt(raw[:12], raw[12:], aad)
            assert name


async def test_queued_and_failed_events_still_open_after_a_key_rotation(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture], key_dir: Path,
) -> None:
    """Events sealed under the old key's derived key stay readable once a new key joins the keyring (the old
    one is kept, as the README says); the failed one is requeued and handled."""
    flag = tmp_path / "broken"
    flag.touch()
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    failing = by_name(fixtures, "verification.session.succeeded")
    queued = by_name(fixtures, "verification.session.failed")
    assert await post_all([failing]) == ["accepted"]
    drain(settings, redis_client)
    assert failed_ids(redis_client, settings.queue) == [job_id(failing.event_id)]
    assert await post_all([queued]) == ["accepted"]

    from kayle_webhooks.keys import write_key

    write_key(key_dir, "rotated-key", 2048)
    try:
        settings = configure_in_process()  # a worker restarted with the new key beside the old one
        flag.unlink()
        from kayle_webhooks.failed import requeue

        assert requeue(redis_client, settings.queue, [failing.event_id]) == ([failing.event_id], [])
        drain(settings, redis_client)
    finally:
        (key_dir / "rotated-key.pem").unlink()
    counts = ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))
    assert counts[("broken", failing.event_id)] == 1 and counts[("terminal", queued.event_id)] == 1
    assert failed_ids(redis_client, settings.queue) == []

"""The key directory cannot be turned against the service: exposed, linked, oversized or misnamed keys."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kayle_webhooks.keys import generate, pem
from receiver import b64url
from receiver.app import create_app
from receiver.keyring import MAX_BITS, KeyFileError, load_keyring
from receiver.logs import FIELDS
from receiver.settings import load_config

#: A TEST-ONLY 16384-bit RSA key: validating it takes about 46 s, which is what the ceiling prevents.
OVERSIZED = Path(__file__).parent / "data" / "rsa-16384.pem"


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return pem(generate(2048))


def put(directory: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def private_jwk(key: rsa.RSAPrivateKey) -> bytes:
    numbers = key.private_numbers()
    members = {"n": numbers.public_numbers.n, "e": numbers.public_numbers.e, "d": numbers.d, "p": numbers.p,
               "q": numbers.q, "dp": numbers.dmp1, "dq": numbers.dmq1, "qi": numbers.iqmp}
    return json.dumps({"kty": "RSA", **{name: b64url.encode_int(value) for name, value in members.items()}}).encode()


# -- who can read the key ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_a_key_others_can_read_or_change_loads_with_a_warning_naming_the_file_and_the_fix(
    tmp_path: Path, key_pem: bytes, mode: int
) -> None:
    path = put(tmp_path, "exposed.pem", key_pem, mode)

    ring = load_keyring(tmp_path)

    assert list(ring) == ["exposed"]
    [(warning, fix)] = ring.warnings
    assert str(path) in warning and f"mode {mode:04o}" in warning
    assert fix.startswith(f"chmod 600 {path}")


@pytest.mark.anyio
async def test_the_receiver_warns_at_start_up_naming_the_file_and_the_fix(
    env: dict[str, str], tmp_path: Path, key_pem: bytes, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = put(tmp_path / "keys", "exposed.pem", key_pem, 0o644)
    monkeypatch.setenv("KAYLE_KEY_DIR", str(path.parent))

    app = create_app(load_config())
    async with app.router.lifespan_context(app):
        pass

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]
    assert getattr(warning, FIELDS)["fix"].startswith(f"chmod 600 {path}")


def test_a_private_key_file_gets_no_warning(tmp_path: Path, key_pem: bytes) -> None:
    put(tmp_path, "private.pem", key_pem, 0o600)
    put(tmp_path, "readonly.pem", key_pem, 0o400)
    assert load_keyring(tmp_path).warnings == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_group_read_through_the_services_own_group_is_how_kubernetes_mounts_keys(
    tmp_path: Path, key_pem: bytes
) -> None:
    """Kubernetes mounts a Secret root-owned, mode 0440, in the pod's fsGroup: the service reads it through it."""
    path = put(tmp_path, "mounted.pem", key_pem, 0o440)
    os.chown(path, 10001, os.getegid())
    assert load_keyring(tmp_path).warnings == ()

    path.chmod(0o444)
    [(warning, _)] = load_keyring(tmp_path).warnings
    assert "mode 0444" in warning

    path.chmod(0o440)
    os.chown(path, 10001, os.getegid() + 4242)  # a group the service is not in: its members can read the key
    [(warning, _)] = load_keyring(tmp_path).warnings
    assert "mode 0440" in warning


# -- symlinks ---------------------------------------------------------------------------------------


def test_a_symlink_out_of_the_key_directory_loads_with_a_warning(tmp_path: Path, key_pem: bytes) -> None:
    elsewhere = put(tmp_path / "elsewhere", "real.pem", key_pem)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "linked.pem").symlink_to(elsewhere)

    ring = load_keyring(keys)

    assert list(ring) == ["linked"]
    [(warning, fix)] = ring.warnings
    assert "linked.pem" in warning and "symlink" in warning and str(elsewhere) in warning
    assert str(keys) in fix


def test_the_kubernetes_secret_layout_of_links_inside_the_directory_loads_without_a_warning(
    tmp_path: Path, key_pem: bytes
) -> None:
    keys = tmp_path / "keys"
    put(keys / "..2026_01_01_00_00_00.123456789", "kayle-2026-01.pem", key_pem, 0o400)
    (keys / "..data").symlink_to("..2026_01_01_00_00_00.123456789")
    (keys / "kayle-2026-01.pem").symlink_to("..data/kayle-2026-01.pem")

    ring = load_keyring(keys)

    assert list(ring) == ["kayle-2026-01"] and ring.warnings == ()


def test_a_link_to_an_exposed_file_is_judged_by_the_file(tmp_path: Path, key_pem: bytes) -> None:
    keys = tmp_path / "keys"
    put(keys / "..data", "k.pem", key_pem, 0o644)
    (keys / "k.pem").symlink_to("..data/k.pem")
    [(warning, _)] = load_keyring(keys).warnings
    assert "mode 0644" in warning


# -- what a key may be ------------------------------------------------------------------------------


def test_an_oversized_key_is_refused_at_once_instead_of_costing_a_minute_per_process(tmp_path: Path) -> None:
    data = OVERSIZED.read_bytes()
    oversized = serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(oversized, rsa.RSAPrivateKey)
    for name, content in (("huge.pem", data), ("huge.json", private_jwk(oversized))):
        put(tmp_path, name, content)
        started = time.perf_counter()
        with pytest.raises(KeyFileError, match=f"^{name}: RSA key of 16384 bits; at most {MAX_BITS}"):
            load_keyring(tmp_path)
        assert time.perf_counter() - started < 10  # validating it would take about 46 s
        (tmp_path / name).unlink()


def test_a_public_exponent_below_65537_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=3, key_size=2048)
    for name, content in (("weak.pem", pem(weak)), ("weak.json", private_jwk(weak))):
        put(tmp_path, name, content)
        with pytest.raises(KeyFileError, match=f"^{name}: RSA public exponent 3; at least 65537"):
            load_keyring(tmp_path)
        (tmp_path / name).unlink()


@pytest.mark.parametrize("name", ["my key.pem", "tls.key.pem", "clé.pem", f"{'k' * 129}.pem", "a'b.json"])
def test_a_file_name_that_cannot_be_a_kid_is_refused_by_name(tmp_path: Path, key_pem: bytes, name: str) -> None:
    put(tmp_path, name, key_pem)
    with pytest.raises(KeyFileError, match="not a kid") as info:
        load_keyring(tmp_path)
    assert str(info.value).startswith(f"{name[:60]!r}")


def test_a_file_larger_than_any_key_is_refused_without_being_read(tmp_path: Path) -> None:
    put(tmp_path, "big.pem", b"-" * (8 * 1024 * 1024))
    with pytest.raises(KeyFileError, match=r"^big\.pem: larger than 64 KiB"):
        load_keyring(tmp_path)


def test_entries_that_are_not_regular_files_are_skipped(tmp_path: Path, key_pem: bytes) -> None:
    put(tmp_path, "real.pem", key_pem)
    os.mkfifo(tmp_path / "fifo.pem")  # opening it would block start-up
    (tmp_path / "dangling.pem").symlink_to(tmp_path / "nowhere.pem")
    (tmp_path / "device.pem").symlink_to("/dev/zero")  # reading it would never end
    assert list(load_keyring(tmp_path)) == ["real"]

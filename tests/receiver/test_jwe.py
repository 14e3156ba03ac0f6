from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kayle_webhooks.keys import generate, pem
from receiver import b64url, jwe, keyring
from receiver.errors import JweRejected
from tests.helpers.vectors import FIXTURE_KID, FIXTURES


@pytest.fixture(scope="module")
def keys() -> keyring.Keyring:
    return keyring.Keyring({FIXTURE_KID: keyring.load_private_key(FIXTURES / "private.pem")})


def code_of(body: bytes, keys: keyring.Keyring) -> str:
    with pytest.raises(JweRejected) as info:
        jwe.decrypt(jwe.parse(body), keys)
    return info.value.code


def test_every_fixture_decrypts_to_its_expected_plaintext(fixtures, keys) -> None:
    for fixture in fixtures:
        parsed = jwe.parse(fixture.body)
        assert (parsed.kid, parsed.enc) == (fixture.kid, fixture.enc)
        assert jwe.decrypt(parsed, keys) == fixture.expected_plaintext


def test_the_private_jwk_is_the_same_key(tmp_path, fixtures) -> None:
    (tmp_path / f"{FIXTURE_KID}.json").write_bytes((FIXTURES / "private.jwk.json").read_bytes())
    ring = keyring.load_keyring(tmp_path)
    assert jwe.decrypt(jwe.parse(fixtures[0].body), ring) == fixtures[0].expected_plaintext


@pytest.mark.parametrize("enc", ["A128GCM", "A192GCM", "A256GCM"])
def test_encrypt_and_decrypt_round_trip(keys, enc: str) -> None:
    body = jwe.encrypt(b'{"type":"x"}', keys[FIXTURE_KID].public_key(), FIXTURE_KID, enc)
    assert jwe.decrypt(jwe.parse(body), keys) == b'{"type":"x"}'


def with_header(body: bytes, header: dict[str, object]) -> bytes:
    segments = body.decode().split(".")
    segments[0] = b64url.encode(json.dumps(header).encode())
    return ".".join(segments).encode()


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"alg": "RSA1_5", "enc": "A256GCM", "kid": FIXTURE_KID}, "jwe_unsupported_algorithm"),
        ({"alg": "dir", "enc": "A256GCM", "kid": FIXTURE_KID}, "jwe_unsupported_algorithm"),
        ({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": FIXTURE_KID}, "jwe_unsupported_algorithm"),
        ({"alg": "none", "enc": "A256GCM", "kid": FIXTURE_KID}, "jwe_unsupported_algorithm"),
        ({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": FIXTURE_KID}, "jwe_unsupported_algorithm"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, "zip": "DEF"}, "jwe_unsupported_header"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, "crit": ["exp"]}, "jwe_unsupported_header"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, "jku": "http://x"}, "jwe_unsupported_header"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM"}, "jwe_malformed"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": 7}, "jwe_malformed"),
        ({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "retired-key"}, "unknown_kid"),
    ],
)
def test_headers_outside_the_allow_list_are_rejected(fixtures, keys, header, code: str) -> None:
    assert code_of(with_header(fixtures[0].body, header), keys) == code


@pytest.mark.parametrize(
    "body",
    [b"", b"not a jwe", b"a.b.c.d", b"a.b.c.d.e.f", "é.b.c.d.e".encode(), b"e30.!!.AA.AA.AA", b"W10.AA.AA.AA.AA"],
)
def test_malformed_compact_serialisations(keys, body: bytes) -> None:
    assert code_of(body, keys) == "jwe_malformed"


@pytest.mark.parametrize("segment", [1, 2, 3, 4])
def test_any_tampered_segment_fails_to_decrypt(fixtures, keys, segment: int) -> None:
    parts = fixtures[0].body.decode().split(".")
    raw = bytearray(b64url.decode(parts[segment]))
    raw[len(raw) // 2] ^= 0x01
    parts[segment] = b64url.encode(bytes(raw))
    assert code_of(".".join(parts).encode(), keys) in {"decryption_failed"}


def test_a_changed_protected_header_breaks_the_authentication_tag(fixtures, keys) -> None:
    tolerated = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, "typ": "JWE"}
    assert code_of(with_header(fixtures[0].body, tolerated), keys) == "decryption_failed"


def test_a_cek_of_the_wrong_length_for_enc_is_rejected(keys) -> None:
    body = jwe.encrypt(b"{}", keys[FIXTURE_KID].public_key(), FIXTURE_KID, "A128GCM")
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID}
    assert code_of(with_header(body, header), keys) == "decryption_failed"


def test_keyring_rejects_small_non_rsa_and_public_keys(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    (tmp_path / "small.pem").write_bytes(pem(small))
    with pytest.raises(keyring.KeyFileError, match="1024 bits"):
        keyring.load_keyring(tmp_path)
    (tmp_path / "small.pem").unlink()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(keyring.KeyFileError, match="not an RSA private key"):
        keyring.load_keyring(tmp_path)
    (tmp_path / "ec.pem").unlink()
    (tmp_path / "pub.json").write_bytes((FIXTURES / "public.jwk.json").read_bytes())
    with pytest.raises(keyring.KeyFileError, match="public JWK"):
        keyring.load_keyring(tmp_path)
    (tmp_path / "pub.json").unlink()
    with pytest.raises(keyring.KeyFileError, match=r"no <kid>\.pem"):
        keyring.load_keyring(tmp_path)


def test_pkcs1_pem_loads(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = generate(2048)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (tmp_path / "legacy.pem").write_bytes(pkcs1)
    ring = keyring.load_keyring(tmp_path)
    assert list(ring) == ["legacy"]
    assert ring.infos()[0].bits == 2048

from __future__ import annotations

import pytest

from receiver import signature
from receiver.errors import SignatureRejected

SECRET = "whsec_first"
OTHER = "whsec_second"
BODY = b"a.b.c.d.e"
NOW = 1_800_000_000


def verify(header: str | None, body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), now: float = NOW) -> int:
    return signature.verify(header, body, secrets, now, 300)


def code_of(header: str | None, **kwargs: object) -> str:
    with pytest.raises(SignatureRejected) as info:
        verify(header, **kwargs)  # type: ignore[arg-type]
    return info.value.code


def test_fixture_signatures_verify_on_the_raw_bytes(fixtures) -> None:
    for fixture in fixtures:
        header = fixture.headers["X-Kayle-Signature"]
        assert signature.verify(header, fixture.body, [fixture.secret], fixture.timestamp, 300) == fixture.timestamp


def test_the_key_is_the_whole_secret_string_not_base64_decoded() -> None:
    import base64
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature.sign(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"
    decoded_key = base64.b64decode("Zmlyc3Q=")  # what a Standard Webhooks library would use
    wrong = hmac.new(decoded_key, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert code_of(f"t={NOW},v1={wrong}") == "signature_mismatch"


def test_any_of_several_v1_entries_may_match() -> None:
    good = signature.compute(SECRET, NOW, BODY)
    assert verify(f"t={NOW},v1={'0' * 64},v1={good},v0=zzz") == NOW
    assert verify(f"t={NOW}, v1={good.upper()}") == NOW


def test_any_configured_secret_may_match() -> None:
    header = signature.sign(OTHER, NOW, BODY)
    assert verify(header, secrets=(SECRET, OTHER)) == NOW
    assert code_of(header) == "signature_mismatch"


@pytest.mark.parametrize("skew", [-299, 299, 0, -300, 300])
def test_timestamps_within_tolerance_are_accepted(skew: int) -> None:
    assert verify(signature.sign(SECRET, NOW + skew, BODY)) == NOW + skew


@pytest.mark.parametrize("skew", [-301, 301, -86_400])
def test_timestamps_outside_tolerance_are_rejected_both_ways(skew: int) -> None:
    assert code_of(signature.sign(SECRET, NOW + skew, BODY)) == "timestamp_out_of_tolerance"


def test_tampered_body_is_rejected() -> None:
    header = signature.sign(SECRET, NOW, BODY)
    assert code_of(header, body=BODY + b"x") == "signature_mismatch"
    assert code_of(header, body=b" " + BODY) == "signature_mismatch"


def test_a_signature_for_another_timestamp_does_not_match() -> None:
    v1 = signature.compute(SECRET, NOW, BODY)
    assert code_of(f"t={NOW + 1},v1={v1}") == "signature_mismatch"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header(header: str | None) -> None:
    assert code_of(header) == "signature_missing"


@pytest.mark.parametrize(
    "header",
    [
        "v1=" + "a" * 64,
        f"t=abc,v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW}",
        f"t={NOW},v1=xyz",
        f"t={NOW},v1={'a' * 63}",
        f"t=-{NOW},v1={'a' * 64}",
        "garbage",
    ],
)
def test_malformed_headers(header: str) -> None:
    assert code_of(header) == "signature_malformed"

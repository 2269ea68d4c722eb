"""monitor.ingest.codec: HMAC-SHA256 upload signatures (base64url, no padding)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ingest.codec import b64url, sign, verify_signature

PROPERTY = settings(database=None, deadline=None, max_examples=200)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PAYLOAD = b'{"fixes":[{"seq":1,"t":1763816700000,"lat":43.2,"lon":76.8,"acc":5,"src":"gnss"}]}'

MISSING = "signature missing: a signed device must send the MQTT 5 user property 'sig'"
NOT_BASE64 = "signature is not base64url text"
MISMATCH = "signature does not match the payload"


def test_sign_is_base64url_of_hmac_sha256_without_padding() -> None:
    digest = hmac.new(KEY, PAYLOAD, hashlib.sha256).digest()
    sig = sign(KEY, PAYLOAD)
    assert sig == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(sig) == 43
    assert "=" not in sig


def test_b64url_has_no_padding_and_the_url_alphabet() -> None:
    assert b64url(b"\xfb\xff") == "-_8"
    assert b64url(b"") == ""


def test_a_correct_signature_verifies() -> None:
    assert verify_signature(KEY, PAYLOAD, sign(KEY, PAYLOAD)) is None


def test_surrounding_whitespace_is_tolerated() -> None:
    assert verify_signature(KEY, PAYLOAD, f" {sign(KEY, PAYLOAD)}\n") is None


def test_missing_wrong_key_and_non_base64_give_distinct_reasons() -> None:
    reasons = [
        verify_signature(KEY, PAYLOAD, None),
        verify_signature(KEY, PAYLOAD, sign(OTHER_KEY, PAYLOAD)),
        verify_signature(KEY, PAYLOAD, "not base64!"),
    ]
    assert reasons == [MISSING, MISMATCH, NOT_BASE64]
    assert len(set(reasons)) == 3


@pytest.mark.parametrize("sig", ["a", "abcde", "not base64!"])
def test_undecodable_text_is_not_base64url(sig: str) -> None:
    assert verify_signature(KEY, PAYLOAD, sig) == NOT_BASE64


def test_a_signature_of_another_payload_does_not_match() -> None:
    assert verify_signature(KEY, PAYLOAD + b" ", sign(KEY, PAYLOAD)) == MISMATCH


def test_a_truncated_signature_does_not_match() -> None:
    assert verify_signature(KEY, PAYLOAD, sign(KEY, PAYLOAD)[:-1]) == MISMATCH


@PROPERTY
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=2048))
def test_sign_and_verify_round_trip(key: bytes, payload: bytes) -> None:
    assert verify_signature(key, payload, sign(key, payload)) is None


@PROPERTY
@given(
    key=st.binary(min_size=32, max_size=32),
    payload=st.binary(min_size=1, max_size=2048),
    data=st.data(),
)
def test_flipping_any_byte_of_the_payload_fails_verification(
    key: bytes, payload: bytes, data: st.DataObject
) -> None:
    sig = sign(key, payload)
    i = data.draw(st.integers(0, len(payload) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    tampered = bytearray(payload)
    tampered[i] ^= mask
    assert verify_signature(key, bytes(tampered), sig) == MISMATCH


@pytest.mark.parametrize("junk", ["@@@@@@@@", "%%%%%", "<valid>$$", "<valid>.!"])
def test_text_outside_the_base64url_alphabet_is_not_base64url(junk: str) -> None:
    sig = junk.replace("<valid>", sign(KEY, PAYLOAD))
    assert verify_signature(KEY, PAYLOAD, sig) == NOT_BASE64

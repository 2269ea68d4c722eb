"""Upload signatures: base64url (no padding) of HMAC-SHA256 over the exact bytes."""

from __future__ import annotations

import pytest

from device_sim.signature import b64url, decode_key, sign

# RFC 4231, test case 2.
RFC4231_KEY = b"Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_MAC = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

# A 32-byte key as enrolment hands it out (bytes 0..31), and an upload signed with it;
# the expected value was computed with `openssl dgst -sha256 -mac HMAC | basenc --base64url`.
KEY_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
UPLOAD = (
    b'{"fixes":[{"seq":1,"t":1763816700000,"lat":43.238949,"lon":76.889709,'
    b'"acc":8.5,"src":"gnss"}],"events":[]}'
)
UPLOAD_SIG = "L_Ix8hcI7YfKE8TlSKHUGxwpLCwAsye11EQfvTqx3Vw"


def test_rfc4231_vector() -> None:
    assert sign(RFC4231_KEY, RFC4231_DATA) == b64url(bytes.fromhex(RFC4231_MAC))
    assert sign(RFC4231_KEY, RFC4231_DATA) == "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM"


def test_an_enrolment_key_signs_an_upload() -> None:
    key = decode_key(KEY_TEXT)
    assert key == bytes(range(32))
    assert sign(key, UPLOAD) == UPLOAD_SIG
    assert "=" not in UPLOAD_SIG
    assert len(UPLOAD_SIG) == 43


def test_the_signature_covers_every_byte() -> None:
    key = decode_key(KEY_TEXT)
    reformatted = UPLOAD.replace(b'"acc":8.5', b'"acc": 8.5')
    assert sign(key, reformatted) != UPLOAD_SIG


def test_b64url_has_no_padding_and_uses_the_url_alphabet() -> None:
    assert b64url(b"\xfb\xff") == "-_8"
    assert decode_key(b64url(b"\xfb\xff" * 16)) == b"\xfb\xff" * 16


@pytest.mark.parametrize(
    "text",
    [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg",  # 31 bytes
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",  # 33 bytes
        "not base64 at all!",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+",  # standard alphabet, not url
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd Hh8",  # a space the decoder would skip
    ],
)
def test_keys_of_the_wrong_size_or_alphabet_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="signing key"):
        decode_key(text)


def test_a_padded_key_is_accepted_too() -> None:
    assert decode_key(KEY_TEXT + "=") == bytes(range(32))

"""protocol: the wire vocabulary, defined once and shared by the backend and the simulator."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

import device_sim.device
import device_sim.journal
import device_sim.signature
import monitor.domain
import monitor.ingest.codec
import monitor.ingest.wire
from protocol import records, signature, topics

# RFC 4231, test case 2 (HMAC-SHA256).
RFC4231_KEY = b"Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_MAC = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

# An enrolment key (bytes 0..31) and an upload signed with it, as the simulator's own
# test has them (computed with openssl and basenc, not with this code).
KEY_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
UPLOAD = (
    b'{"fixes":[{"seq":1,"t":1763816700000,"lat":43.238949,"lon":76.889709,'
    b'"acc":8.5,"src":"gnss"}],"events":[]}'
)
UPLOAD_SIG = "L_Ix8hcI7YfKE8TlSKHUGxwpLCwAsye11EQfvTqx3Vw"


# -- signature ---------------------------------------------------------------------


def test_sign_matches_the_rfc4231_vector_in_base64url_without_padding() -> None:
    expected = base64.urlsafe_b64encode(bytes.fromhex(RFC4231_MAC)).decode().rstrip("=")
    assert signature.sign(RFC4231_KEY, RFC4231_DATA) == expected
    assert expected == "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM"


def test_an_enrolment_key_signs_an_upload_as_openssl_does() -> None:
    key = signature.decode_key(KEY_TEXT)
    assert key == bytes(range(signature.KEY_BYTES))
    assert signature.sign(key, UPLOAD) == UPLOAD_SIG
    assert signature.verify_signature(key, UPLOAD, UPLOAD_SIG) is None


@pytest.mark.parametrize("payload", [b"", b"{}", UPLOAD, bytes(range(256)) * 3])
def test_sign_and_verify_round_trip(payload: bytes) -> None:
    key = bytes(range(32))
    sig = signature.sign(key, payload)
    assert sig == signature.b64url(hmac.new(key, payload, hashlib.sha256).digest())
    assert "=" not in sig
    assert len(sig) == 43
    assert signature.verify_signature(key, payload, sig) is None
    assert signature.b64url_decode(sig) == hmac.new(key, payload, hashlib.sha256).digest()


def test_verification_reasons() -> None:
    key = bytes(range(32))
    assert signature.verify_signature(key, UPLOAD, None) == (
        "signature missing: a signed device must send the MQTT 5 user property 'sig'"
    )
    assert signature.verify_signature(key, UPLOAD, "not base64!") == (
        "signature is not base64url text"
    )
    assert signature.verify_signature(key, UPLOAD + b" ", UPLOAD_SIG) == (
        "signature does not match the payload"
    )


def test_a_signature_is_unpadded_but_a_key_may_be_padded() -> None:
    assert signature.verify_signature(bytes(range(32)), UPLOAD, UPLOAD_SIG + "=") == (
        "signature is not base64url text"
    )
    assert signature.decode_key(KEY_TEXT + "=") == bytes(range(32))
    with pytest.raises(ValueError, match="signing key must be 32 bytes"):
        signature.decode_key(KEY_TEXT[:-1])


def test_the_signature_property_is_sig() -> None:
    assert signature.SIG_PROPERTY == "sig"


# -- topics ------------------------------------------------------------------------


@pytest.mark.parametrize("leaf", topics.LEAVES)
def test_device_topics_are_formatted_under_em_v1_dev(leaf: str) -> None:
    assert topics.device_topic("BR-0001", leaf) == f"em/v1/dev/BR-0001/{leaf}"


def test_ack_and_cmd_topics() -> None:
    assert topics.ack_topic("BR-0001") == "em/v1/dev/BR-0001/ack"
    assert topics.cmd_topic("BR-0001") == "em/v1/dev/BR-0001/cmd"


def test_formatted_up_and_state_topics_parse_back() -> None:
    up, state = topics.device_topic("BR-0001", "up"), topics.device_topic("BR-0001", "state")
    assert topics.parse_topic(up) == topics.DeviceTopic("up", "BR-0001", up)
    assert topics.parse_topic(state) == topics.DeviceTopic("state", "BR-0001", state)


def test_owntracks_topics_parse_without_a_device_id() -> None:
    parsed = topics.parse_topic("owntracks/alice/phone")
    assert parsed == topics.DeviceTopic("owntracks", None, "owntracks/alice/phone")


@pytest.mark.parametrize(
    "name", ["em/v1/dev/ab/up", "em/v1/dev/BR-0001/ack", "em/v2/dev/BR-0001/up", "owntracks/u"]
)
def test_topics_outside_the_contract_are_refused(name: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.parse_topic(name)


def test_the_subscriptions_cover_up_state_and_owntracks() -> None:
    assert topics.SUBSCRIPTIONS == ("em/v1/dev/+/up", "em/v1/dev/+/state", "owntracks/#")


# -- records -----------------------------------------------------------------------


def test_fix_sources_and_event_kinds_are_those_of_v1() -> None:
    # As protocol-v1.md lists them; the backend accepts exactly these.
    sources, kinds = records.FIX_SOURCES, records.EVENT_KINDS
    assert sources == {"gnss", "wifi", "cell", "beacon"}
    assert kinds == {
        "strap_open",
        "strap_closed",
        "case_open",
        "battery_low",
        "battery_critical",
        "charger_on",
        "charger_off",
        "no_fix",
        "jamming",
        "sos",
        "cmd_result",
        "boot",
    }
    assert records.MAX_RECORDS == 500


def test_the_phone_additions_are_kept_apart_from_v1() -> None:
    phone = records.PHONE_EVENT_KINDS
    assert phone == {"checkin", "tag_lost", "tag_found", "mock_location"}
    assert not phone & records.EVENT_KINDS


# -- one definition for both ends ------------------------------------------------------


@pytest.mark.parametrize(
    ("shared", "where"),
    [
        (records.FIX_SOURCES, monitor.domain.FIX_SOURCES),
        (records.FIX_SOURCES, device_sim.journal.FIX_SOURCES),
        (records.EVENT_KINDS, monitor.domain.EVENT_KINDS),
        (records.EVENT_KINDS, device_sim.journal.EVENT_KINDS),
        (records.MAX_RECORDS, monitor.ingest.codec.MAX_RECORDS),
        (records.MAX_RECORDS, device_sim.device.MAX_BATCH),
        (signature.sign, monitor.ingest.codec.sign),
        (signature.sign, device_sim.signature.sign),
        (signature.b64url, monitor.ingest.codec.b64url),
        (signature.b64url, device_sim.signature.b64url),
        (signature.verify_signature, monitor.ingest.codec.verify_signature),
        (signature.decode_key, device_sim.signature.decode_key),
        (signature.KEY_BYTES, device_sim.signature.KEY_BYTES),
        (topics.DEVICE_ID, monitor.ingest.wire.DEVICE_ID),
        (topics.SUBSCRIPTIONS, monitor.ingest.wire.SUBSCRIPTIONS),
        (topics.parse_topic, monitor.ingest.wire.parse_topic),
        (topics.ack_topic, monitor.ingest.wire.ack_topic),
        (topics.cmd_topic, monitor.ingest.wire.cmd_topic),
        (topics.DeviceTopic, monitor.ingest.wire.DeviceTopic),
        (topics.TopicError, monitor.ingest.wire.TopicError),
        (topics.device_topic, device_sim.device.topic),
    ],
)
def test_monitor_and_device_sim_use_the_very_same_objects(shared: object, where: object) -> None:
    assert where is shared

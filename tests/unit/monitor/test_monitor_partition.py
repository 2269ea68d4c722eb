"""monitor.ingest.partition and the stream envelope: a device is one partition for
ever, every process splits the partitions the same way, and an envelope carries a
message whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ingest.partition import fair_share, partition_key, partition_of, partition_of_topic
from monitor.ingest.stream import decode, encode, message_id
from monitor.ingest.subscriber import Message
from monitor.rules.liveness import reporting_allowance


def test_a_device_is_keyed_by_its_id_and_a_phone_by_its_enrolled_topic() -> None:
    assert partition_key("em/v1/dev/BR-0001/up") == "BR-0001"
    assert partition_key("em/v1/dev/BR-0001/state") == "BR-0001"
    assert partition_key("owntracks/anna/phone") == "owntracks/anna/phone"
    assert partition_key("owntracks/anna/phone/event") == "owntracks/anna/phone"
    assert partition_key("something/else") == "something/else"
    assert partition_of_topic("em/v1/dev/BR-0001/up", 16) == partition_of_topic(
        "em/v1/dev/BR-0001/state", 16
    )


def test_the_hash_is_fixed_across_interpreters() -> None:
    # CRC-32, not Python's randomised str hash: these values never change.
    assert partition_of("BR-0001", 16) == 15
    assert partition_of("BP-000042", 16) == 8


@settings(database=None, deadline=None)
@given(st.integers(1, 64), st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=9))
def test_the_fair_shares_cover_every_partition_and_differ_by_one_at_most(
    partitions: int, members: set[str]
) -> None:
    shares = [fair_share(partitions, sorted(members), m) for m in members]
    assert sum(shares) == partitions
    assert max(shares) - min(shares) <= 1


def _msg(sig: str | None = "c2lnbmF0dXJl") -> Message:
    return Message(
        topic="em/v1/dev/BR-0001/up",
        payload=b'{"fixes": []}',
        qos=1,
        mid=7,
        retain=False,
        user_properties={"sig": sig} if sig else {},
        received_at=datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC),
        generation=3,
        repeated_properties=frozenset({"sig"}),
        upload=None,
    )


def test_an_envelope_carries_the_message_whole() -> None:
    back = decode(encode(_msg()), partition=5, handle="h")
    original = _msg()
    assert back.topic == original.topic
    assert back.payload == original.payload
    assert back.user_properties == original.user_properties
    assert back.repeated_properties == original.repeated_properties
    assert back.received_at == original.received_at
    assert (back.partition, back.handle) == (5, "h")


def test_copies_of_one_publish_share_a_message_id_and_another_signature_does_not() -> None:
    assert message_id(_msg()) == message_id(_msg())
    assert message_id(_msg()) != message_id(_msg(sig="b3RoZXI"))


def test_something_that_is_not_an_envelope_is_refused() -> None:
    with pytest.raises(ValueError, match="envelope"):
        decode(b"not marshal data at all", 0)


def test_owntracks_phones_are_allowed_four_hours_of_silence() -> None:
    assert reporting_allowance("owntracks", 60, 30) == (14_400.0, 3_600.0)
    assert reporting_allowance("bracelet", 60, 30) == (60, 30)

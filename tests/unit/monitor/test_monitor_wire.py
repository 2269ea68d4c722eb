"""monitor.ingest.wire: the topics of protocol v1."""

from __future__ import annotations

import pytest

from monitor.ingest.wire import (
    SUBSCRIPTIONS,
    DeviceTopic,
    TopicError,
    ack_topic,
    cmd_topic,
    parse_topic,
)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("em/v1/dev/BR-0001/up", DeviceTopic("up", "BR-0001", "em/v1/dev/BR-0001/up")),
        ("em/v1/dev/BR-0001/state", DeviceTopic("state", "BR-0001", "em/v1/dev/BR-0001/state")),
        ("em/v1/dev/abc/up", DeviceTopic("up", "abc", "em/v1/dev/abc/up")),
        ("em/v1/dev/a_B-9/up", DeviceTopic("up", "a_B-9", "em/v1/dev/a_B-9/up")),
        ("owntracks/u/d", DeviceTopic("owntracks", None, "owntracks/u/d")),
        ("owntracks/alice/phone", DeviceTopic("owntracks", None, "owntracks/alice/phone")),
    ],
)
def test_topics_the_service_consumes(topic: str, expected: DeviceTopic) -> None:
    assert parse_topic(topic) == expected


def test_a_device_id_of_64_characters_is_accepted() -> None:
    device_id = "D" * 64
    assert parse_topic(f"em/v1/dev/{device_id}/up").device_id == device_id


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        pytest.param("em/v1/dev/ab/up", "device_id does not match", id="too-short"),
        pytest.param(f"em/v1/dev/{'D' * 65}/up", "device_id does not match", id="too-long"),
        pytest.param("em/v1/dev/BR/0001/up", "is not em/v1/dev", id="slash"),
        pytest.param("em/v1/dev/+/up", "device_id does not match", id="plus"),
        pytest.param("em/v1/dev/#/up", "device_id does not match", id="hash"),
        pytest.param("em/v1/dev/BR 0001/up", "device_id does not match", id="space"),
        pytest.param("em/v1/dev/BR.0001/up", "device_id does not match", id="dot"),
        pytest.param("em/v1/dev//up", "device_id does not match", id="empty"),
        pytest.param("em/v1/dev/BR-0001/ack", "does not consume 'ack'", id="ack"),
        pytest.param("em/v1/dev/BR-0001/cmd", "does not consume 'cmd'", id="cmd"),
        pytest.param("em/v1/dev/BR-0001/", "does not consume ''", id="no-channel"),
        pytest.param("em/v1/dev/BR-0001", "is not em/v1/dev", id="no-channel-level"),
        pytest.param("em/v1/dev/BR-0001/up/x", "is not em/v1/dev", id="extra-level"),
        pytest.param("em/v2/dev/BR-0001/up", "is not em/v1/dev", id="v2"),
        pytest.param("xx/v1/dev/BR-0001/up", "is not em/v1/dev", id="other-prefix"),
        pytest.param("/em/v1/dev/BR-0001/up", "is not em/v1/dev", id="leading-slash"),
        pytest.param("", "is not em/v1/dev", id="empty-topic"),
        pytest.param("owntracks/u", "expected owntracks/", id="owntracks-no-device"),
        pytest.param("owntracks//d", "expected owntracks/", id="owntracks-no-user"),
        pytest.param("owntracks", "expected owntracks/", id="owntracks-bare"),
    ],
)
def test_topics_the_service_refuses(topic: str, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        parse_topic(topic)


def test_a_topic_error_is_a_value_error() -> None:
    assert issubclass(TopicError, ValueError)


def test_ack_and_cmd_topics() -> None:
    assert ack_topic("BR-0001") == "em/v1/dev/BR-0001/ack"
    assert cmd_topic("BR-0001") == "em/v1/dev/BR-0001/cmd"


def test_the_service_subscribes_to_up_state_and_owntracks() -> None:
    assert set(SUBSCRIPTIONS) == {"em/v1/dev/+/up", "em/v1/dev/+/state", "owntracks/#"}


def test_a_device_id_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(TopicError):
        parse_topic("em/v1/dev/abc\n/up")

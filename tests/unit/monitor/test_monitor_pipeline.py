"""monitor.pipeline: the stages in their order, and the ones that need no store, each
alone: identify, verify, decode, dedupe (for devices whose watermark is known)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from monitor import pipeline
from monitor.ingest.codec import sign
from monitor.ingest.subscriber import Message
from monitor.pipeline import decode, dedupe, identify, verify
from monitor.pipeline.batch import Batch, Config, Conn
from monitor.pipeline.state import DeviceInfo, PartitionState
from monitor.rules.engine import Debounce
from monitor.rules.watermark import Watermark

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
KEY = bytes(range(32))
NO_STORE = cast(Conn, None)  # these stages never reach the store for known devices


def _state() -> PartitionState:
    state = PartitionState()
    for device_id, key in (("BR-0001", None), ("BR-0002", KEY)):
        state.remember(DeviceInfo(device_id, "bracelet", "s-1", NOW - timedelta(days=1), key, None))
    state.keep_watermarks({"BR-0001": Watermark(2), "BR-0002": Watermark(0)})
    return state


def _msg(topic: str, payload: bytes, sig: str | None = None) -> Message:
    return Message(
        topic=topic,
        payload=payload,
        qos=1,
        mid=1,
        retain=False,
        user_properties={"sig": sig} if sig else {},
        received_at=NOW,
        generation=1,
    )


def _upload(*seqs: int) -> bytes:
    t = int(NOW.timestamp() * 1000)
    return json.dumps(
        {
            "fixes": [
                {
                    "seq": s,
                    "t": t - 1000 * (10 - s),
                    "lat": 51.1,
                    "lon": 71.4,
                    "acc": 5.0,
                    "src": "gnss",
                }
                for s in seqs
            ]
        }
    ).encode()


def _batch(messages: list[Message]) -> Batch:
    return Batch(messages, NO_STORE, _state(), Config(Debounce(), timedelta(minutes=10)), NOW)


def _through(b: Batch, *stages: Any) -> Batch:
    async def go() -> None:
        for stage in stages:
            await stage.run(b)

    asyncio.run(go())
    return b


def test_the_stages_run_in_the_pipelines_order() -> None:
    assert [name for name, _ in pipeline.STAGES] == [
        "fence",
        "identify",
        "verify",
        "decode",
        "dedupe",
        "store",
        "watermark",
        "judge",
        "proximity",
        "plausibility",
        "episodes",
        "events",
        "integrity",
    ]


def test_identify_refuses_a_topic_outside_the_protocol_and_names_it() -> None:
    b = _through(_batch([_msg("em/v1/dev/BR-0001/cmd", b"{}")]), identify)
    assert b.items == []
    assert "does not consume 'cmd'" in b.rejections[0].reason


def test_verify_refuses_an_unsigned_upload_of_a_signed_device_and_raises_integrity() -> None:
    good = _upload(1)
    b = _batch(
        [
            _msg("em/v1/dev/BR-0002/up", good),
            _msg("em/v1/dev/BR-0002/up", good, sig=sign(KEY, good)),
        ]
    )
    _through(b, identify, verify)
    assert len(b.items) == 1
    assert b.items[0].msg.user_properties
    assert [d for d, _fault, _r in b.integrity] == ["BR-0002"]
    assert "signature missing" in b.rejections[0].reason


def test_decode_refuses_what_is_not_an_upload_and_keeps_the_rest() -> None:
    b = _batch(
        [_msg("em/v1/dev/BR-0001/up", b"[1, 2]"), _msg("em/v1/dev/BR-0001/up", _upload(3, 4))]
    )
    _through(b, identify, verify, decode)
    assert len(b.items) == 1
    assert (
        b.rejections[0].reason.startswith("not a JSON object") or "object" in b.rejections[0].reason
    )


def test_a_state_message_becomes_an_event_only_when_it_changes() -> None:
    on = b'{"online": true}'
    b = _batch([_msg("em/v1/dev/BR-0001/state", on), _msg("em/v1/dev/BR-0001/state", on)])
    _through(b, identify, verify, decode)
    assert [e.kind for e, _ in b.events] == ["online"]


def test_dedupe_takes_new_seqs_once_and_accounts_every_seq() -> None:
    b = _batch(
        [
            _msg("em/v1/dev/BR-0001/up", _upload(3, 4)),
            _msg("em/v1/dev/BR-0001/up", _upload(4, 5)),  # 4 again, in the same batch
        ]
    )
    _through(b, identify, verify, decode, dedupe)
    assert [f.seq for f, _ in b.fixes] == [3, 4, 5]
    assert b.accounted["BR-0001"] == {3, 4, 5}
    assert b.uploaded == {"BR-0001"}
    assert b.fresh

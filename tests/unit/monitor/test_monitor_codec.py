"""monitor.ingest.codec: decoding protocol-v1 uploads (whole-upload and record faults)."""

from __future__ import annotations

import json
import marshal
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.domain import EVENT_KINDS, FIX_SOURCES, from_epoch_ms
from monitor.ingest.codec import (
    MAX_RECORDS,
    Upload,
    UploadFault,
    decode_upload,
    fault_to_wire,
    upload_from_wire,
    upload_to_wire,
)

PROPERTY = settings(database=None, deadline=None, max_examples=150)

DEVICE = "BR-0001"
TOPIC = "em/v1/dev/BR-0001/up"
RECEIVED = datetime(2025, 11, 22, 13, 5, 1, tzinfo=UTC)
T = 1_763_816_700_000  # 2025-11-22T13:05:00Z in epoch milliseconds
T_MIN = 946_684_800_000  # 2000-01-01
T_MAX = 4_102_444_800_000  # 2100-01-01


def fix(seq: int = 1, /, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "seq": seq,
        "t": T + 1000 * seq,
        "lat": 43.238949,
        "lon": 76.889709,
        "acc": 8.5,
        "src": "gnss",
        "spd": 1.2,
        "batt": 81,
    }
    rec.update(fields)
    return rec


def event(seq: int = 1, kind: str = "strap_open", /, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"seq": seq, "t": T + 1000 * seq, "kind": kind}
    rec.update(fields)
    return rec


def without(rec: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != name}


def decode(doc: object) -> Upload:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_upload(DEVICE, TOPIC, payload, RECEIVED)


# --- a valid upload -------------------------------------------------------------------


def test_the_protocol_example_decodes() -> None:
    payload = b"""{
      "fixes": [
        {"seq": 1041, "t": 1763816700000, "lat": 43.238949, "lon": 76.889709,
         "acc": 8.5, "src": "gnss", "spd": 1.2, "batt": 81}
      ],
      "events": [
        {"seq": 1042, "t": 1763816705000, "kind": "strap_open"}
      ]
    }"""
    upload = decode(payload)

    assert upload.rejections == []
    assert len(upload.fixes) == 1
    f = upload.fixes[0]
    assert (f.device_id, f.seq, f.t) == (DEVICE, 1041, datetime(2025, 11, 22, 13, 5, tzinfo=UTC))
    assert (f.lat, f.lon, f.acc, f.src, f.spd, f.batt) == (
        43.238949,
        76.889709,
        8.5,
        "gnss",
        1.2,
        81,
    )
    assert f.received_at == RECEIVED
    assert len(upload.events) == 1
    e = upload.events[0]
    assert (e.device_id, e.seq, e.kind, e.detail) == (DEVICE, 1042, "strap_open", None)
    assert e.t == datetime(2025, 11, 22, 13, 5, 5, tzinfo=UTC)
    assert sorted(upload.seqs) == [1041, 1042]


def test_optional_fields_may_be_left_out() -> None:
    upload = decode({"fixes": [without(without(fix(1), "spd"), "batt")]})
    assert upload.rejections == []
    assert (upload.fixes[0].spd, upload.fixes[0].batt) == (None, None)


def test_an_empty_object_is_an_empty_upload() -> None:
    upload = decode({})
    assert (upload.fixes, upload.events, upload.rejections, upload.seqs) == ([], [], [], [])


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"lat": 90, "lon": 180}, id="north-pole-antimeridian"),
        pytest.param({"lat": -90.0, "lon": -180.0}, id="south-pole-west"),
        pytest.param({"acc": 0}, id="acc-0"),
        pytest.param({"batt": 0}, id="batt-0"),
        pytest.param({"batt": 100}, id="batt-100"),
        pytest.param({"spd": 0}, id="spd-0"),
        pytest.param({"t": T_MIN}, id="t-2000"),
        pytest.param({"t": T_MAX}, id="t-2100"),
        *(pytest.param({"src": src}, id=f"src-{src}") for src in sorted(FIX_SOURCES)),
    ],
)
def test_values_on_the_edge_of_their_range_are_accepted(fields: dict[str, Any]) -> None:
    upload = decode({"fixes": [fix(7, **fields)]})
    assert upload.rejections == []
    assert [f.seq for f in upload.fixes] == [7]


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
def test_every_event_kind_of_v1_is_accepted(kind: str) -> None:
    detail = {"id": "c-81f2", "ok": True} if kind == "cmd_result" else None
    rec = event(3, kind, detail=detail) if detail else event(3, kind)
    upload = decode({"events": [rec]})
    assert upload.rejections == []
    assert [(e.seq, e.kind, e.detail) for e in upload.events] == [(3, kind, detail)]


def test_fix_time_is_epoch_milliseconds_utc() -> None:
    upload = decode({"fixes": [fix(1, t=T + 250)]})
    assert upload.fixes[0].t == from_epoch_ms(T + 250)
    assert upload.fixes[0].t.utcoffset() is not None


# --- whole-upload faults --------------------------------------------------------------


def _records(fixes: int, events: int = 0) -> bytes:
    doc = {
        "fixes": [fix(i + 1) for i in range(fixes)],
        "events": [event(fixes + i + 1) for i in range(events)],
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b'{"fixes": [', "not JSON", id="truncated-json"),
        pytest.param(b"hello", "not JSON", id="plain-text"),
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b'{"fixes": [\xc3\x28]}', "not UTF-8", id="not-utf8"),
        pytest.param(b"[]", "not a JSON object but list", id="array"),
        pytest.param(b'"fixes"', "not a JSON object but str", id="string"),
        pytest.param(b"null", "not a JSON object", id="null"),
        pytest.param(b"42", "not a JSON object", id="number"),
        pytest.param(_records(MAX_RECORDS + 1), "501 records", id="501-fixes"),
        pytest.param(_records(250, 251), "501 records", id="501-fixes-and-events"),
        pytest.param(b'{"fixes": {"seq": 1}}', "'fixes' must be an array", id="fixes-object"),
        pytest.param(b'{"fixes": null}', "'fixes' must be an array", id="fixes-null"),
        pytest.param(b'{"events": "boot"}', "'events' must be an array", id="events-string"),
        pytest.param(b'{"fixes": [], "meta": 1}', "unknown top-level field", id="unknown-field"),
    ],
)
def test_whole_upload_faults_refuse_the_upload(payload: bytes, message: str) -> None:
    with pytest.raises(UploadFault, match=message):
        decode(payload)


def test_the_unknown_top_level_field_is_named() -> None:
    with pytest.raises(UploadFault, match=r"\['meta'\]"):
        decode({"fixes": [fix(1)], "meta": {"fw": "1.2"}})


def test_a_whole_upload_fault_is_a_value_error() -> None:
    assert issubclass(UploadFault, ValueError)


def test_exactly_500_records_are_accepted() -> None:
    upload = decode(_records(300, 200))
    assert upload.rejections == []
    assert len(upload.fixes) + len(upload.events) == MAX_RECORDS
    assert sorted(upload.seqs) == list(range(1, MAX_RECORDS + 1))


# --- record faults ---------------------------------------------------------------------

RECORD_FAULTS = [
    pytest.param("fixes", fix(2, lat=123), "'lat'", 2, id="lat-123"),
    pytest.param("fixes", fix(2, lat="43.2"), "'lat'", 2, id="lat-string"),
    pytest.param("fixes", fix(2, lon=-181), "'lon'", 2, id="lon-minus-181"),
    pytest.param("fixes", without(fix(2), "lat"), "field 'lat' is missing", 2, id="no-lat"),
    pytest.param("fixes", without(fix(2), "seq"), "field 'seq' is missing", None, id="no-seq"),
    pytest.param("fixes", fix(0), "'seq'", None, id="seq-0"),
    pytest.param("fixes", fix(2, seq=-4), "'seq'", None, id="seq-negative"),
    pytest.param("fixes", fix(2, seq=True), "'seq'", None, id="seq-true"),
    pytest.param("fixes", fix(2, seq=2.0), "'seq'", None, id="seq-float"),
    pytest.param("fixes", fix(2, t=float(T)), "'t' must be an integer", 2, id="t-float"),
    pytest.param("fixes", without(fix(2), "t"), "field 't' is missing", 2, id="no-t"),
    pytest.param("fixes", fix(2, t=T_MIN - 1), "outside", 2, id="t-before-2000"),
    pytest.param("fixes", fix(2, t=T_MAX + 1), "outside", 2, id="t-after-2100"),
    pytest.param("fixes", fix(2, t=T // 1000), "outside", 2, id="t-in-seconds"),
    pytest.param("fixes", fix(2, acc=-0.5), "'acc'", 2, id="acc-negative"),
    pytest.param("fixes", fix(2, src="gps"), "'src'", 2, id="src-gps"),
    pytest.param("fixes", fix(2, batt=101), "'batt'", 2, id="batt-101"),
    pytest.param("fixes", fix(2, batt=50.5), "'batt'", 2, id="batt-float"),
    pytest.param("fixes", fix(2, spd=-1), "'spd'", 2, id="spd-minus-1"),
    pytest.param("fixes", fix(2, alt=812.0), "unknown field", 2, id="unknown-field"),
    pytest.param("fixes", 17, "must be an object", None, id="not-an-object"),
    pytest.param("events", event(2, "door_open"), "'kind'", 2, id="event-kind-unknown"),
    pytest.param("events", without(event(2), "kind"), "'kind' is missing", 2, id="no-kind"),
    pytest.param("events", event(2, detail="x"), "'detail' must be an object", 2, id="detail"),
    pytest.param(
        "events",
        event(2, "cmd_result", detail={"ok": True}),
        "cmd_result",
        2,
        id="cmd-result-without-id",
    ),
    pytest.param("events", event(2, "cmd_result"), "cmd_result", 2, id="cmd-result-without-detail"),
    pytest.param(
        "events",
        event(2, "cmd_result", detail={"id": "c-1"}),
        "detail.ok",
        2,
        id="cmd-result-without-ok",
    ),
    pytest.param("events", event(2, urgent=True), "unknown field", 2, id="event-unknown-field"),
]


@pytest.mark.parametrize(("section", "bad", "reason", "kept_seq"), RECORD_FAULTS)
def test_a_record_fault_refuses_that_record_only(
    section: str, bad: object, reason: str, kept_seq: int | None
) -> None:
    doc: dict[str, list[object]] = {"fixes": [fix(1), fix(3)], "events": [event(4, "boot")]}
    doc[section].insert(1, bad)

    upload = decode(doc)

    assert [f.seq for f in upload.fixes] == [1, 3]
    assert [e.seq for e in upload.events] == [4]
    assert len(upload.rejections) == 1
    r = upload.rejections[0]
    assert r.reason.startswith(f"{section}[1]: ")
    assert reason in r.reason
    assert (r.device_id, r.topic, r.received_at, r.seq) == (DEVICE, TOPIC, RECEIVED, kept_seq)
    assert json.loads(r.raw) == bad
    assert r.record == (bad if isinstance(bad, dict) else {"value": bad})
    # A refused record with a valid seq is accounted for, so the device stops resending it.
    expected = [1, 2, 3, 4] if kept_seq is not None else [1, 3, 4]
    assert sorted(upload.seqs) == expected


def test_several_record_faults_are_each_refused_with_their_own_reason() -> None:
    upload = decode({"fixes": [fix(1, lat=123), fix(2), fix(3, src="gps"), fix(4, batt=101)]})
    assert [f.seq for f in upload.fixes] == [2]
    assert [(r.seq, r.reason.split(":")[0]) for r in upload.rejections] == [
        (1, "fixes[0]"),
        (3, "fixes[2]"),
        (4, "fixes[3]"),
    ]
    assert sorted(upload.seqs) == [1, 2, 3, 4]


# --- one seq, one record ------------------------------------------------------------------


def test_the_same_record_twice_in_one_upload_is_stored_once() -> None:
    upload = decode({"fixes": [fix(5), fix(6), fix(5)]})
    assert [f.seq for f in upload.fixes] == [5, 6]
    assert upload.rejections == []
    assert sorted(upload.seqs) == [5, 6]


def test_the_same_refused_record_twice_is_refused_once() -> None:
    upload = decode({"fixes": [fix(5, lat=123), fix(5, lat=123)]})
    assert upload.fixes == []
    assert [r.seq for r in upload.rejections] == [5]
    assert upload.seqs == [5]


def test_two_different_records_with_one_seq_the_second_is_refused() -> None:
    first, second = fix(5), fix(5, lat=51.1282, lon=71.4304)
    upload = decode({"fixes": [first, second]})

    assert [(f.seq, f.lat) for f in upload.fixes] == [(5, 43.238949)]
    assert len(upload.rejections) == 1
    r = upload.rejections[0]
    assert r.reason == "fixes[1]: seq 5 is used by another record in this upload"
    assert r.record == second
    # The seq is already accounted for by the first record: it is not counted twice.
    assert r.seq is None
    assert upload.seqs == [5]


def test_a_fix_and_an_event_with_one_seq_the_event_is_refused() -> None:
    upload = decode({"fixes": [fix(9)], "events": [event(9)]})
    assert [f.seq for f in upload.fixes] == [9]
    assert upload.events == []
    assert ["seq 9 is used by another record" in r.reason for r in upload.rejections] == [True]
    assert upload.seqs == [9]


# --- properties -----------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
FIX_FIELDS = ["seq", "t", "lat", "lon", "acc", "src", "spd", "batt"]


@st.composite
def mutated_fixes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid fixes with some fields replaced by arbitrary JSON scalars or left out."""
    out = []
    for i in range(draw(st.integers(1, 8))):
        rec = fix(i + 1)
        for name in draw(st.lists(st.sampled_from(FIX_FIELDS), max_size=3, unique=True)):
            if draw(st.booleans()):
                rec[name] = draw(SCALARS)
            else:
                del rec[name]
        out.append(rec)
    return out


def _valid_seq(rec: dict[str, Any]) -> int | None:
    seq = rec.get("seq")
    return seq if type(seq) is int and seq >= 1 else None


@PROPERTY
@given(mutated_fixes(), st.lists(st.sampled_from(sorted(EVENT_KINDS)), max_size=3))
def test_the_relays_wire_form_gives_back_the_same_upload(
    records: list[dict[str, Any]], kinds: list[str]
) -> None:
    """The broker relay decodes uploads and hands the service their wire form through a
    pipe (marshal): rebuilt, it is the very upload that decoding gives, records refused
    with their reasons and raw bytes included."""
    events = [
        {"seq": 100 + i, "t": T + i, "kind": k, "detail": {"id": "c-1", "ok": True, "n": [1.5]}}
        for i, k in enumerate(kinds)
    ]
    payload = json.dumps({"fixes": records, "events": events}).encode()
    upload = decode_upload(DEVICE, TOPIC, payload, RECEIVED)
    wire = marshal.loads(marshal.dumps(upload_to_wire(upload)))
    # By repr: a refused record may hold NaN, which is never equal to itself.
    assert repr(upload_from_wire(DEVICE, TOPIC, RECEIVED, wire)) == repr(upload)


def test_a_whole_upload_fault_crosses_the_wire_as_itself() -> None:
    with pytest.raises(UploadFault) as fault:
        decode_upload(DEVICE, TOPIC, b"[1]", RECEIVED)
    wire = marshal.loads(marshal.dumps(fault_to_wire(fault.value)))
    with pytest.raises(UploadFault, match="not a JSON object but list"):
        upload_from_wire(DEVICE, TOPIC, RECEIVED, wire)


@PROPERTY
@given(mutated_fixes())
def test_every_record_with_a_valid_seq_is_accounted_for(records: list[dict[str, Any]]) -> None:
    upload = decode({"fixes": records})  # never a whole-upload fault: only record faults

    valid = {s for s in map(_valid_seq, records) if s is not None}
    assert set(upload.seqs) == valid
    # Each seq is accounted for once: by a stored record or by a refused one.
    assert len(upload.seqs) == len(valid)
    assert len(upload.fixes) + len(upload.rejections) <= len(records)
    for f in upload.fixes:
        assert -90 <= f.lat <= 90
        assert -180 <= f.lon <= 180
        assert f.acc >= 0
        assert f.src in FIX_SOURCES


# --- hostile input: record faults and whole-upload faults, never a crash -----------


@pytest.mark.parametrize("src", [["gnss"], {"kind": "gnss"}])
def test_src_of_the_wrong_json_type_is_a_record_fault(src: object) -> None:
    upload = decode({"fixes": [fix(1), fix(2, src=src)]})
    assert [f.seq for f in upload.fixes] == [1]
    assert [r.seq for r in upload.rejections] == [2]
    assert "'src'" in upload.rejections[0].reason


@pytest.mark.parametrize("kind", [["sos"], {"k": "sos"}])
def test_event_kind_of_the_wrong_json_type_is_a_record_fault(kind: object) -> None:
    upload = decode({"fixes": [fix(1)], "events": [event(2, kind=kind)]})
    assert [f.seq for f in upload.fixes] == [1]
    assert [r.seq for r in upload.rejections] == [2]


@pytest.mark.parametrize("name", ["lat", "lon", "acc", "spd"])
def test_a_huge_integer_number_is_a_record_fault(name: str) -> None:
    huge = "1" + "0" * 400
    payload = json.dumps({"fixes": [fix(1), fix(2, **{name: 0})]}).encode()
    payload = payload.replace(f'"{name}": 0'.encode(), f'"{name}": {huge}'.encode())
    upload = decode(payload)
    assert [f.seq for f in upload.fixes] == [1]
    assert [r.seq for r in upload.rejections] == [2]


def test_an_integer_beyond_the_conversion_limit_is_an_upload_fault() -> None:
    payload = b'{"fixes": [{"seq": 1' + b"0" * 5000 + b"}]}"
    with pytest.raises(UploadFault):
        decode(payload)


def test_deeply_nested_json_is_an_upload_fault() -> None:
    with pytest.raises(UploadFault):
        decode(b'{"fixes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_or_utf32_payload_is_refused_as_not_utf8(encoding: str) -> None:
    payload = json.dumps({"fixes": [fix(1)]}).encode(encoding)
    with pytest.raises(UploadFault, match="not UTF-8"):
        decode(payload)

"""Decoding protocol-v1 uploads and checking their signatures. Pure: bytes in, values out.

Faults come in two sizes, as the protocol says. A whole-upload fault (not JSON, not an
object, more than 500 records, a bad signature) refuses everything in it. A record fault
(a field missing, of the wrong type or out of range) refuses that record only: it is kept
with its reason and counts as accounted for, so the device stops resending it.

The protocol's vocabulary (fix sources, event kinds, the record limit, the signature) is
defined once in `protocol`, shared with the device simulator; `sign`, `verify_signature`
and `b64url` stay importable from here, where the service has always found them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from monitor.domain import EVENT_KINDS, FIX_SOURCES, DeviceEvent, Fix, Rejection, from_epoch_ms
from protocol.records import MAX_RECORDS
from protocol.signature import b64url, sign, verify_signature

__all__ = [
    "MAX_RECORDS",
    "Upload",
    "UploadFault",
    "WireUpload",
    "b64url",
    "decode_upload",
    "fault_to_wire",
    "sign",
    "upload_from_wire",
    "upload_to_wire",
    "verify_signature",
]

# Fix times outside these bounds cannot be a real device's clock: 2000-01-01 .. 2100-01-01.
_T_MIN_MS = 946_684_800_000
_T_MAX_MS = 4_102_444_800_000

_FIX_FIELDS = {"seq", "t", "lat", "lon", "acc", "src", "spd", "batt"}
_EVENT_FIELDS = {"seq", "t", "kind", "detail"}


class UploadFault(ValueError):
    """The whole upload is refused; the message is the reason kept with its bytes."""


@dataclass(frozen=True, slots=True)
class Upload:
    fixes: list[Fix] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        """Every seq this upload accounts for: stored records and refused ones alike."""
        out = [f.seq for f in self.fixes if f.seq is not None]
        out += [e.seq for e in self.events if e.seq is not None]
        out += [r.seq for r in self.rejections if r.seq is not None]
        return out


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def _seq_t(rec: dict[str, Any]) -> tuple[int, datetime]:
    seq = rec.get("seq")
    if "seq" not in rec:
        raise ValueError("field 'seq' is missing")
    if (type(seq) is not int and not _is_int(seq)) or seq < 1:
        raise ValueError(f"'seq' must be an integer >= 1, got {seq!r}")
    if "t" not in rec:
        raise ValueError("field 't' is missing")
    t = rec["t"]
    if type(t) is not int and not _is_int(t):
        raise ValueError(f"'t' must be an integer (epoch milliseconds), got {t!r}")
    if not _T_MIN_MS <= t <= _T_MAX_MS:
        raise ValueError(f"'t' {t} is outside 2000-01-01..2100-01-01 (epoch milliseconds?)")
    return int(seq), from_epoch_ms(int(t))


def _fix(device_id: str, rec: dict[str, Any], received_at: datetime) -> Fix:
    # Ten of these per upload, 10,000 a second: the checks take the common case (plain
    # floats, which JSON gives for numbers with a point) first, with the same errors.
    if not rec.keys() <= _FIX_FIELDS:
        raise ValueError(f"unknown field(s) in a fix: {sorted(set(rec) - _FIX_FIELDS)}")
    seq, t = _seq_t(rec)
    try:
        lat, lon, acc, src = rec["lat"], rec["lon"], rec["acc"], rec["src"]
    except KeyError as missing:
        raise ValueError(f"field '{missing.args[0]}' is missing") from None
    # NaN fails every comparison; an infinity fails the ranges (not acc's: isfinite).
    if (type(lat) is not float and not _is_number(lat)) or not -90 <= lat <= 90:
        raise ValueError(f"'lat' must be a number in [-90, 90], got {lat!r}")
    if (type(lon) is not float and not _is_number(lon)) or not -180 <= lon <= 180:
        raise ValueError(f"'lon' must be a number in [-180, 180], got {lon!r}")
    if not _is_number(acc) or acc < 0:
        raise ValueError(f"'acc' must be a number >= 0 (metres), got {acc!r}")
    if type(src) is not str or src not in FIX_SOURCES:
        raise ValueError(f"'src' must be one of {sorted(FIX_SOURCES)}, got {src!r}")
    spd = rec.get("spd")
    if spd is not None and (not _is_number(spd) or spd < 0):
        raise ValueError(f"'spd' must be a number >= 0 (m/s), got {spd!r}")
    batt = rec.get("batt")
    if batt is not None and (not _is_int(batt) or not 0 <= batt <= 100):
        raise ValueError(f"'batt' must be an integer in [0, 100], got {batt!r}")
    return Fix(
        device_id,
        seq,
        t,
        float(lat),
        float(lon),
        float(acc),
        src,
        received_at,
        float(spd) if spd is not None else None,
        batt,
    )


def _event(device_id: str, rec: dict[str, Any], received_at: datetime) -> DeviceEvent:
    unknown = set(rec) - _EVENT_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) in an event: {sorted(unknown)}")
    seq, t = _seq_t(rec)
    kind = rec.get("kind")
    if kind is None:
        raise ValueError("field 'kind' is missing")
    if not isinstance(kind, str) or kind not in EVENT_KINDS:
        raise ValueError(f"'kind' {kind!r} is not an event kind of protocol v1")
    detail = rec.get("detail")
    if detail is not None and not isinstance(detail, dict):
        raise ValueError("'detail' must be an object")
    if kind == "cmd_result":
        if detail is None or "id" not in detail:
            raise ValueError("a cmd_result needs 'detail' with the command's 'id'")
        if not isinstance(detail.get("ok"), bool):
            raise ValueError("a cmd_result needs 'detail.ok' true or false")
    return DeviceEvent(device_id, seq, t, str(kind), received_at, detail)


def decode_upload(device_id: str, topic: str, payload: bytes, received_at: datetime) -> Upload:
    """Decode an upload; raise UploadFault for a whole-upload fault."""
    try:
        # Decoded as UTF-8 explicitly: json.loads(bytes) would also accept UTF-16/32.
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadFault("payload is not UTF-8 text") from None
    if "\x00" in text:  # UTF-16 without a byte-order mark decodes, NULs and all
        raise UploadFault("payload is not UTF-8 text: it contains NUL bytes (UTF-16?)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UploadFault(f"payload is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise UploadFault("payload is not JSON this service accepts: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's conversion limit
        raise UploadFault(f"payload is not JSON this service accepts: {exc}") from None
    if not isinstance(doc, dict):
        raise UploadFault(f"payload is not a JSON object but {type(doc).__name__}")
    unknown = set(doc) - {"fixes", "events"}
    if unknown:
        raise UploadFault(f"unknown top-level field(s) {sorted(unknown)}: expected fixes, events")
    fixes_raw = doc.get("fixes", [])
    events_raw = doc.get("events", [])
    if not isinstance(fixes_raw, list):
        raise UploadFault("'fixes' must be an array")
    if not isinstance(events_raw, list):
        raise UploadFault("'events' must be an array")
    if len(fixes_raw) + len(events_raw) > MAX_RECORDS:
        raise UploadFault(
            f"{len(fixes_raw) + len(events_raw)} records in one upload; at most {MAX_RECORDS}"
        )

    upload = Upload()
    seen: dict[int, Any] = {}
    for kind, records in (("fix", fixes_raw), ("event", events_raw)):
        for i, rec in enumerate(records):
            seq = rec.get("seq") if isinstance(rec, dict) else None
            seq_ok = seq if _is_int(seq) and seq >= 1 else None
            try:
                if not isinstance(rec, dict):
                    raise ValueError("a record must be an object")
                if seq_ok is not None and seq_ok in seen:
                    if seen[seq_ok] == rec:
                        continue  # the same record twice in one upload: stored once
                    raise ValueError(f"seq {seq_ok} is used by another record in this upload")
                if kind == "fix":
                    upload.fixes.append(_fix(device_id, rec, received_at))
                else:
                    upload.events.append(_event(device_id, rec, received_at))
            except ValueError as exc:
                raw = json.dumps(rec, separators=(",", ":"), default=str).encode()
                where = f"{'fixes' if kind == 'fix' else 'events'}[{i}]"
                upload.rejections.append(
                    Rejection(
                        topic=topic,
                        reason=f"{where}: {exc}",
                        raw=raw,
                        received_at=received_at,
                        device_id=device_id,
                        seq=seq_ok if seq_ok not in seen else None,
                        record=rec if isinstance(rec, dict) else {"value": rec},
                    )
                )
            if seq_ok is not None and seq_ok not in seen:
                seen[seq_ok] = rec
    return upload


# The broker relay (a process of its own) decodes uploads as they arrive and hands the
# service this form of the result: plain values that `marshal` carries, times as integer
# microseconds since the epoch (exact), and what every record shares (the device, the
# topic, the arrival time) left out. Rebuilding the records costs the service less than
# half of decoding them (measured: 25 against 54 µs for a 10-fix upload).

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

WireUpload = tuple[Any, ...]


def upload_to_wire(upload: Upload) -> WireUpload:
    return (
        "ok",
        [
            (f.seq, (f.t - _EPOCH) // _US, f.lat, f.lon, f.acc, f.src, f.spd, f.batt)
            for f in upload.fixes
        ],
        [(e.seq, (e.t - _EPOCH) // _US, e.kind, e.detail) for e in upload.events],
        [(r.reason, r.raw, r.seq, r.record) for r in upload.rejections],
    )


def fault_to_wire(fault: UploadFault) -> WireUpload:
    return ("fault", str(fault))


def upload_from_wire(device_id: str, topic: str, received_at: datetime, wire: WireUpload) -> Upload:
    """What decode_upload gave in the relay; raises its UploadFault again."""
    if wire[0] == "fault":
        raise UploadFault(wire[1])
    _ok, fixes, events, rejections = wire
    epoch = _EPOCH
    return Upload(
        [
            Fix(
                device_id,
                seq,
                epoch + timedelta(microseconds=t_us),
                lat,
                lon,
                acc,
                src,
                received_at,
                spd,
                batt,
            )
            for seq, t_us, lat, lon, acc, src, spd, batt in fixes
        ],
        [
            DeviceEvent(
                device_id, seq, epoch + timedelta(microseconds=t_us), kind, received_at, detail
            )
            for seq, t_us, kind, detail in events
        ],
        [
            Rejection(topic, reason, raw, received_at, device_id, seq, record)
            for reason, raw, seq, record in rejections
        ],
    )

"""A device's store-and-forward bookkeeping: record numbers, what waits for an ack,
what is due to be (re)sent. No network here, and the clock is passed in.

On disk (when given a directory) it is three files:

- `journal.jsonl`: one line per record, appended before the record is ever published,
  so a seq that went out on the wire is always found again after a restart;
- `state.json`: `{"acked_upto": N, "next_seq": M}`, rewritten atomically when the
  acknowledgement moves and before the journal is compacted;
- `acked.jsonl`: what compaction dropped from the journal, as runs of consecutive seqs
  of one class (`["fix", first, last, t_min, t_max]`), so that `device-sim check` can
  still say which acknowledged seqs were fixes (`read_history`).

Lines are flushed to the operating system, not fsynced: a killed simulator loses
nothing, a power cut may lose the last records (a bracelet's flash would do better).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeAlias

# The fix sources and v1 event kinds are the protocol's, shared with the backend, so
# what the journal refuses to number is exactly what the backend would refuse to store.
from protocol.records import EVENT_KINDS, FIX_SOURCES

__all__ = [
    "EVENT_KINDS",
    "FIX_SOURCES",
    "History",
    "Journal",
    "Record",
    "RecordKind",
    "Span",
    "SpanClass",
    "classify",
    "encode_upload",
    "event_problem",
    "fix_problem",
    "read_history",
]

log = logging.getLogger(__name__)

RecordKind = Literal["fix", "event"]

_JOURNAL = "journal.jsonl"
_STATE = "state.json"
_ACKED = "acked.jsonl"
# Acknowledged lines tolerated in the journal file before it is rewritten.
_COMPACT_AFTER = 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One record as it goes on the wire: `body` holds every field, `seq` included."""

    kind: RecordKind
    body: Mapping[str, object]

    @property
    def seq(self) -> int:
        seq = self.body["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError(f"seq must be an integer, not {seq!r}")
        return seq

    def line(self) -> str:
        """The record as one journal line."""
        return json.dumps({self.kind: self.body}, separators=(",", ":"), ensure_ascii=False)


def encode_upload(records: list[Record]) -> bytes:
    """The `up` payload for these records: compact JSON, both arrays always present."""
    payload = {
        "fixes": [r.body for r in records if r.kind == "fix"],
        "events": [r.body for r in records if r.kind == "event"],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: object, lo: float, hi: float) -> bool:
    """A JSON number (not a boolean) within [lo, hi]; NaN is not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


def fix_problem(fields: Mapping[str, object]) -> str | None:
    """Why protocol v1 refuses this fix (its fields, `seq` aside), None when it does not."""
    t, lat, lon, acc = fields.get("t"), fields.get("lat"), fields.get("lon"), fields.get("acc")
    src, spd, batt = fields.get("src"), fields.get("spd"), fields.get("batt")
    if not _is_int(t):
        return f"t must be integer epoch milliseconds, not {t!r}"
    if not _in_range(lat, -90, 90):
        return f"lat must be in [-90, 90], not {lat!r}"
    if not _in_range(lon, -180, 180):
        return f"lon must be in [-180, 180], not {lon!r}"
    if not _in_range(acc, 0, math.inf):
        return f"acc must be a number >= 0, not {acc!r}"
    if src not in FIX_SOURCES:
        return f"src must be one of {sorted(FIX_SOURCES)}, not {src!r}"
    if spd is not None and not _in_range(spd, 0, math.inf):
        return f"spd must be a number >= 0, not {spd!r}"
    if batt is not None and not (_is_int(batt) and _in_range(batt, 0, 100)):
        return f"batt must be an integer in [0, 100], not {batt!r}"
    return None


def event_problem(fields: Mapping[str, object]) -> str | None:
    """Why protocol v1 refuses this event, None when it does not."""
    t, kind, detail = fields.get("t"), fields.get("kind"), fields.get("detail")
    if not _is_int(t):
        return f"t must be integer epoch milliseconds, not {t!r}"
    if kind not in EVENT_KINDS:
        return f"kind must be one of {sorted(EVENT_KINDS)}, not {kind!r}"
    if detail is not None and not isinstance(detail, dict):
        return f"detail must be an object, not {detail!r}"
    return None


class Journal:
    """Numbers records, keeps them until acknowledged, and says which are due to send.

    `directory=None` keeps everything in memory only (tools and tests).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._records: OrderedDict[int, Record] = OrderedDict()
        # Records not sent since the last (re)connect, in seq order.
        self._unsent: OrderedDict[int, None] = OrderedDict()
        # Records sent and not yet acknowledged, oldest send first, with its time.
        self._sent: OrderedDict[int, float] = OrderedDict()
        self._acked_upto = 0
        self._next_seq = 1
        self._file: IO[str] | None = None
        self._file_lines = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)
            self._file = (directory / _JOURNAL).open("a", encoding="utf-8")

    # -- reading -----------------------------------------------------------------

    @property
    def acked_upto(self) -> int:
        """Every record with a seq up to this is acknowledged by the backend."""
        return self._acked_upto

    @property
    def last_seq(self) -> int:
        """The seq given to the latest record, 0 before the first."""
        return self._next_seq - 1

    @property
    def pending(self) -> int:
        """How many records wait for an acknowledgement."""
        return len(self._records)

    @property
    def all_acked(self) -> bool:
        return not self._records

    def unacked(self) -> list[Record]:
        """Every record still waiting for an acknowledgement, in seq order."""
        return list(self._records.values())

    # -- adding ------------------------------------------------------------------

    def add_fix(
        self,
        t_ms: int,
        lat: float,
        lon: float,
        acc: float,
        src: str = "gnss",
        *,
        spd: float | None = None,
        batt: int | None = None,
    ) -> int:
        """Number and keep a fix; returns its seq. Refuses what protocol v1 refuses."""
        fields: dict[str, object] = {"t": t_ms, "lat": lat, "lon": lon, "acc": acc, "src": src}
        if spd is not None:
            fields["spd"] = spd
        if batt is not None:
            fields["batt"] = batt
        problem = fix_problem(fields)
        if problem is not None:
            raise ValueError(problem)
        return self.add("fix", fields)

    def add_event(self, t_ms: int, kind: str, detail: Mapping[str, object] | None = None) -> int:
        """Number and keep an event; returns its seq."""
        fields: dict[str, object] = {"t": t_ms, "kind": kind}
        if detail is not None:
            fields["detail"] = dict(detail)
        problem = event_problem(fields)
        if problem is not None:
            raise ValueError(problem)
        return self.add("event", fields)

    def add(self, kind: RecordKind, fields: Mapping[str, object]) -> int:
        """Number and keep a record as given, unchecked (to exercise the backend's
        refusals); returns its seq. A `seq` in `fields` is replaced."""
        seq = self._next_seq
        record = Record(kind, {"seq": seq, **{k: v for k, v in fields.items() if k != "seq"}})
        # Written before anyone can publish it: a seq seen on the wire is never reused.
        self._append(record)
        self._next_seq = seq + 1
        self._records[seq] = record
        self._unsent[seq] = None
        return seq

    # -- sending -----------------------------------------------------------------

    def due(self, now: float, resend_after_s: float, limit: int) -> list[Record]:
        """Up to `limit` records to send now, lowest seq first: those never sent since
        the last (re)connect, and those sent at least `resend_after_s` ago and still
        unacknowledged."""
        seqs: list[int] = []
        for seq, sent_at in self._sent.items():
            if sent_at > now - resend_after_s or len(seqs) >= limit:
                break
            seqs.append(seq)
        for n, seq in enumerate(self._unsent):
            if n >= limit:
                break
            seqs.append(seq)
        seqs.sort()
        return [self._records[s] for s in seqs[:limit]]

    def has_due(self, now: float, resend_after_s: float) -> bool:
        if self._unsent:
            return True
        first = next(iter(self._sent.values()), None)
        return first is not None and first <= now - resend_after_s

    @property
    def unsent(self) -> int:
        """How many records were not sent since the last (re)connect."""
        return len(self._unsent)

    def mark_sent(self, records: list[Record], now: float) -> None:
        for record in records:
            seq = record.seq
            if seq not in self._records:
                continue
            self._unsent.pop(seq, None)
            self._sent.pop(seq, None)
            self._sent[seq] = now

    def mark_unsent(self) -> None:
        """After a reconnect everything unacknowledged is sent again."""
        self._sent.clear()
        self._unsent = OrderedDict.fromkeys(self._records)

    def acknowledge(self, upto: int) -> int:
        """Apply `{"upto": N}`; returns how many records it newly acknowledged.

        An ack below the current one is stale (retained from earlier) and ignored. An ack
        beyond the last seq means this device lost its state while the backend kept
        its records: numbering continues after it, since reused seqs would be taken for
        duplicates and silently dropped.
        """
        if upto <= self._acked_upto:
            return 0
        done: list[int] = []
        for seq in self._records:  # in seq order: stop at the first one above `upto`
            if seq > upto:
                break
            done.append(seq)
        for seq in done:
            del self._records[seq]
            self._unsent.pop(seq, None)
            self._sent.pop(seq, None)
        self._acked_upto = upto
        if upto >= self._next_seq:
            log.warning(
                "backend acknowledges up to %d but the last seq here is %d: continuing at %d",
                upto,
                self._next_seq - 1,
                upto + 1,
            )
            self._next_seq = upto + 1
        self._save_state()
        if self._file_lines - len(self._records) > max(_COMPACT_AFTER, len(self._records)):
            self._compact()
        return len(done)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._save_state()

    # -- disk --------------------------------------------------------------------

    def _load(self, directory: Path) -> None:
        state_path = directory / _STATE
        if state_path.exists():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            self._acked_upto = int(state.get("acked_upto", 0))
            self._next_seq = max(int(state.get("next_seq", 1)), self._acked_upto + 1)
        journal_path = directory / _JOURNAL
        if not journal_path.exists():
            return
        _cut_torn_tail(journal_path)
        with journal_path.open(encoding="utf-8") as lines:
            for n, line in enumerate(lines, 1):
                self._file_lines += 1
                try:
                    entry = json.loads(line)
                    kind: RecordKind = "fix" if "fix" in entry else "event"
                    record = Record(kind, entry[kind])
                    seq = record.seq
                except (ValueError, KeyError, TypeError):
                    # Whole lines come from this class only: this one was damaged.
                    log.warning("%s line %d is unreadable, skipped", journal_path, n)
                    continue
                self._next_seq = max(self._next_seq, seq + 1)
                if seq > self._acked_upto:
                    self._records[seq] = record
        self._records = OrderedDict(sorted(self._records.items()))
        self._unsent = OrderedDict.fromkeys(self._records)

    def _append(self, record: Record) -> None:
        if self._dir is None:
            return
        if self._file is None:
            raise RuntimeError(f"the journal in {self._dir} is closed")
        self._file.write(record.line() + "\n")
        self._file.flush()
        self._file_lines += 1

    def _save_state(self) -> None:
        if self._dir is None:
            return
        state = {"acked_upto": self._acked_upto, "next_seq": self._next_seq}
        tmp = self._dir / (_STATE + ".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self._dir / _STATE)

    def _compact(self) -> None:
        """Rewrite the journal with only what is still unacknowledged, after adding what
        it drops to `acked.jsonl` (a crash between the two leaves a record in both, which
        `read_history` tolerates)."""
        if self._dir is None or self._file is None:
            return
        self._file.close()
        dropped = [r for r in _read_records(self._dir / _JOURNAL) if r.seq not in self._records]
        _append_spans(self._dir / _ACKED, _spans(dropped))
        tmp = self._dir / (_JOURNAL + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for record in self._records.values():
                out.write(record.line() + "\n")
        # state.json already holds next_seq, so dropping acknowledged lines loses no number.
        os.replace(tmp, self._dir / _JOURNAL)
        self._file = (self._dir / _JOURNAL).open("a", encoding="utf-8")
        self._file_lines = len(self._records)


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line cut short by a kill, so the next append starts a line of its
    own. A record whose line was never completed was never published either."""
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping an unfinished last line (%d bytes)", path, len(data) - keep)
            f.truncate(keep)


# -- what was acknowledged, for `device-sim check` ----------------------------------------

# How the backend treats a record: a fix is stored as a fix, an event as an event, and a
# record the protocol refuses is kept apart as refused (but acknowledged all the same).
SpanClass: TypeAlias = Literal["fix", "event", "refused"]


@dataclass(frozen=True, slots=True)
class Span:
    """Consecutive seqs `first`..`last` of one class; `t_min`, `t_max` bound their times
    (None when no record in it has a readable one)."""

    cls: SpanClass
    first: int
    last: int
    t_min: int | None = None
    t_max: int | None = None

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def classify(record: Record) -> SpanClass:
    """What the backend makes of a record: a stored fix or event, or a refused record."""
    if record.kind == "fix":
        return "fix" if fix_problem(record.body) is None else "refused"
    return "event" if event_problem(record.body) is None else "refused"


def _span_bound(a: int | None, b: int | None, pick: Callable[[int, int], int]) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)


def _spans(records: list[Record]) -> list[Span]:
    """Runs of consecutive seqs of one class, in seq order."""
    out: list[Span] = []
    for record in sorted(records, key=lambda r: r.seq):
        cls = classify(record)
        t = record.body.get("t")
        t_ms = t if isinstance(t, int) and not isinstance(t, bool) else None
        last = out[-1] if out else None
        if last is not None and last.cls == cls and last.last + 1 == record.seq:
            lo = _span_bound(last.t_min, t_ms, min)
            hi = _span_bound(last.t_max, t_ms, max)
            out[-1] = Span(cls, last.first, record.seq, lo, hi)
        else:
            out.append(Span(cls, record.seq, record.seq, t_ms, t_ms))
    return out


def _append_spans(path: Path, spans: list[Span]) -> None:
    if not spans:
        return
    with path.open("a", encoding="utf-8") as out:
        for s in spans:
            out.write(json.dumps([s.cls, s.first, s.last, s.t_min, s.t_max]) + "\n")


def _read_records(path: Path) -> list[Record]:
    """Every readable record line of a journal file (unreadable ones are skipped)."""
    if not path.exists():
        return []
    records: list[Record] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
                kind: RecordKind = "fix" if "fix" in entry else "event"
                record = Record(kind, entry[kind])
                _ = record.seq  # raises for a line without an integer seq
            except (ValueError, KeyError, TypeError):
                continue
            records.append(record)
    return records


@dataclass(frozen=True, slots=True)
class History:
    """Everything one device's journal directory says: up to which seq the backend
    acknowledged, the last seq given, and the class of every seq it still knows."""

    acked_upto: int
    last_seq: int
    spans: tuple[Span, ...]  # sorted by seq, not overlapping

    def known(self, seq: int) -> SpanClass | None:
        i = bisect.bisect_right([s.first for s in self.spans], seq) - 1
        if i >= 0 and self.spans[i].first <= seq <= self.spans[i].last:
            return self.spans[i].cls
        return None

    def acked_spans(self, cls: SpanClass) -> list[Span]:
        """The spans of `cls` cut at the acknowledgement (times are those of the span)."""
        out: list[Span] = []
        for s in self.spans:
            if s.cls != cls or s.first > self.acked_upto:
                continue
            out.append(Span(cls, s.first, min(s.last, self.acked_upto), s.t_min, s.t_max))
        return out

    def count(self, cls: SpanClass, acked_only: bool = True) -> int:
        spans = self.acked_spans(cls) if acked_only else [s for s in self.spans if s.cls == cls]
        return sum(s.size for s in spans)


def read_history(directory: Path) -> History | None:
    """The `History` of the journal in `directory`, None when there is none. Read-only:
    safe while the device runs (it may then be a moment behind)."""
    state_path = directory / _STATE
    journal_path = directory / _JOURNAL
    if not state_path.exists() and not journal_path.exists():
        return None
    acked_upto, next_seq = 0, 1
    if state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        acked_upto = int(state.get("acked_upto", 0))
        next_seq = int(state.get("next_seq", 1))
    spans: list[Span] = []
    acked_path = directory / _ACKED
    if acked_path.exists():
        for line in acked_path.read_text(encoding="utf-8").splitlines():
            try:
                cls, first, last, t_min, t_max = json.loads(line)
            except (ValueError, TypeError):
                continue
            spans.append(Span(cls, int(first), int(last), t_min, t_max))
    spans.sort(key=lambda s: s.first)
    firsts = [s.first for s in spans]

    def covered(seq: int) -> bool:
        i = bisect.bisect_right(firsts, seq) - 1
        return i >= 0 and spans[i].first <= seq <= spans[i].last

    # A crash during compaction may leave a record both in the ledger and the journal.
    fresh = [r for r in _read_records(journal_path) if not covered(r.seq)]
    unique = list({r.seq: r for r in fresh}.values())
    merged: list[Span] = []
    for s in sorted([*spans, *_spans(unique)], key=lambda s: s.first):
        last = merged[-1] if merged else None
        if last is not None and last.cls == s.cls and last.last + 1 == s.first:
            lo = _span_bound(last.t_min, s.t_min, min)
            hi = _span_bound(last.t_max, s.t_max, max)
            merged[-1] = Span(s.cls, last.first, s.last, lo, hi)
        else:
            merged.append(s)
    last_seq = max([next_seq - 1, *(s.last for s in merged)])
    return History(acked_upto, last_seq, tuple(merged))

"""A device's store-and-forward bookkeeping: record numbers, what waits for an ack,
what is due to be (re)sent. No network here, and the clock is passed in.

On disk (when given a directory) it is two files:

- `journal.jsonl`: one line per record, appended before the record is ever published,
  so a seq that went out on the wire is always found again after a restart;
- `state.json`: `{"acked_upto": N, "next_seq": M}`, rewritten atomically when the
  acknowledgement moves and before the journal is compacted.

Lines are flushed to the operating system, not fsynced: a killed simulator loses
nothing, a power cut may lose the last records (a bracelet's flash would do better).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "EVENT_KINDS",
    "FIX_SOURCES",
    "Journal",
    "Record",
    "RecordKind",
    "encode_upload",
]

log = logging.getLogger(__name__)

RecordKind = Literal["fix", "event"]

FIX_SOURCES = frozenset({"gnss", "wifi", "cell", "beacon"})
EVENT_KINDS = frozenset(
    {
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
)

_JOURNAL = "journal.jsonl"
_STATE = "state.json"
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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        if not isinstance(t_ms, int) or isinstance(t_ms, bool):
            raise ValueError(f"t must be integer epoch milliseconds, not {t_ms!r}")
        if not (_is_number(lat) and -90 <= lat <= 90):
            raise ValueError(f"lat must be in [-90, 90], not {lat!r}")
        if not (_is_number(lon) and -180 <= lon <= 180):
            raise ValueError(f"lon must be in [-180, 180], not {lon!r}")
        if not (_is_number(acc) and acc >= 0):
            raise ValueError(f"acc must be a number >= 0, not {acc!r}")
        if src not in FIX_SOURCES:
            raise ValueError(f"src must be one of {sorted(FIX_SOURCES)}, not {src!r}")
        if spd is not None and not (_is_number(spd) and spd >= 0):
            raise ValueError(f"spd must be a number >= 0, not {spd!r}")
        if batt is not None and not (
            isinstance(batt, int) and not isinstance(batt, bool) and 0 <= batt <= 100
        ):
            raise ValueError(f"batt must be an integer in [0, 100], not {batt!r}")
        fields: dict[str, object] = {"t": t_ms, "lat": lat, "lon": lon, "acc": acc, "src": src}
        if spd is not None:
            fields["spd"] = spd
        if batt is not None:
            fields["batt"] = batt
        return self.add("fix", fields)

    def add_event(self, t_ms: int, kind: str, detail: Mapping[str, object] | None = None) -> int:
        """Number and keep an event; returns its seq."""
        if not isinstance(t_ms, int) or isinstance(t_ms, bool):
            raise ValueError(f"t must be integer epoch milliseconds, not {t_ms!r}")
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {sorted(EVENT_KINDS)}, not {kind!r}")
        fields: dict[str, object] = {"t": t_ms, "kind": kind}
        if detail is not None:
            fields["detail"] = dict(detail)
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
        """Rewrite the journal with only what is still unacknowledged."""
        if self._dir is None or self._file is None:
            return
        self._file.close()
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

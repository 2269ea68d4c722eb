"""What a scenario expects the backend to have recorded, as a JSON file for `check`.

The file (version 1):

    {"version": 1, "created_at": "...Z", "seed": 1, "anchor": "...Z", "prefix": "S1",
     "api_url": "http://...", "state_dir": "/path",
     "devices": [{"device_id": "S1-LR1", "subject_id": "...", "kind": "bracelet",
                  "scenario": "leave-radius", "journal": true}, ...],
     "expectations": [
       {"type": "alert", "scenario": "leave-radius", "must": "exist", "kind": "zone_exit",
        "subject_id": "...", "device_id": "S1-LR1",
        "fix_time": {"from": "...Z", "until": "...Z"}, "count": {"min": 1, "max": null},
        "cleared": true, "why": "rode 900 m from home"},
       {"type": "fixes", "scenario": "owntracks", "subject_id": "...",
        "device_id": "S1-OT1", "count": {"min": 21, "max": 21}, "distinct_t": true},
       {"type": "device", "scenario": "silent", "device_id": "S1-SI1", "online": false}]}

An alert expectation matches the alerts of its subject with its `kind` and every other
field it gives: `device_id`, `zone_id`, `fix_time` window (from inclusive, until
exclusive), `cleared` (whether the alert's condition has cleared), `delay_s` bounds on
received_at minus fix_time, `detail` (a subset of the alert's detail), `state`. `must`
says what to make of the matches: `exist` (their number within `count`, at least one by
default), `absent` (none), or `may` (reported, never a difference: a kind the backend
may raise, such as liveness alerts not yet built). New kinds need no new code; a field
this version does not know is reported as a difference rather than silently ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "VERSION",
    "AlertExpectation",
    "Bounds",
    "DeviceEntry",
    "DeviceExpectation",
    "ExpectFile",
    "Expectation",
    "FixesExpectation",
    "Must",
    "Window",
    "iso_ms",
    "ms_of",
    "parse_time",
]

VERSION = 1

Must: TypeAlias = Literal["exist", "absent", "may"]
_MUSTS: tuple[str, ...] = get_args(Must)


def iso_ms(t_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with a `Z`, to the millisecond."""
    t = datetime.fromtimestamp(t_ms / 1000, UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant (a `Z` or an offset; naive means UTC)."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def ms_of(text: str) -> int:
    t = parse_time(text)
    return round(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) of fix time, ISO 8601; either end may be open (None)."""

    start: str | None = None
    end: str | None = None

    def contains(self, t: str | None) -> bool:
        if t is None:
            return False
        at = parse_time(t)
        if self.start is not None and at < parse_time(self.start):
            return False
        return not (self.end is not None and at >= parse_time(self.end))

    def text(self) -> str:
        return f"[{self.start or '…'}, {self.end or '…'})"

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start, "until": self.end}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Window:
        return cls(raw.get("from"), raw.get("until"))


@dataclass(frozen=True, slots=True)
class Bounds:
    """min <= value <= max; either may be open (None)."""

    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)

    def text(self) -> str:
        if self.min is not None and self.min == self.max:
            return f"exactly {self.min:g}"
        parts = []
        if self.min is not None:
            parts.append(f"at least {self.min:g}")
        if self.max is not None:
            parts.append(f"at most {self.max:g}")
        return " and ".join(parts) or "any"

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | float) -> Bounds:
        if isinstance(raw, int | float):
            return cls(raw, raw)
        return cls(raw.get("min"), raw.get("max"))


@dataclass(frozen=True, slots=True)
class AlertExpectation:
    scenario: str
    kind: str
    subject_id: str
    must: Must = "exist"
    device_id: str | None = None
    zone_id: str | None = None
    fix_time: Window | None = None
    count: Bounds | None = None  # exist: default at least 1
    cleared: bool | None = None
    delay_s: Bounds | None = None  # received_at - fix_time
    state: str | None = None
    detail: dict[str, Any] | None = None
    why: str = ""

    type: Literal["alert"] = field(default="alert", init=False)

    def describe(self) -> str:
        parts = [self.kind, self.device_id or f"subject {self.subject_id}"]
        if self.zone_id:
            parts.append(f"zone {self.zone_id}")
        if self.fix_time is not None:
            parts.append(f"fix time in {self.fix_time.text()}")
        if self.cleared is not None:
            parts.append("cleared" if self.cleared else "not cleared")
        if self.delay_s is not None:
            parts.append(f"received {self.delay_s.text()} s after its fix time")
        if self.state is not None:
            parts.append(f"state {self.state}")
        if self.detail:
            parts.append(f"detail ⊇ {json.dumps(self.detail, sort_keys=True)}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class FixesExpectation:
    """The fixes of one device among its subject's fixes: how many, and whether no two
    share a fix time (OwnTracks fixes have no seq: the time is their identity)."""

    scenario: str
    subject_id: str
    device_id: str
    count: Bounds
    distinct_t: bool = False
    why: str = ""

    type: Literal["fixes"] = field(default="fixes", init=False)

    def describe(self) -> str:
        extra = ", no fix time twice" if self.distinct_t else ""
        return f"fixes of {self.device_id}: {self.count.text()}{extra}"


@dataclass(frozen=True, slots=True)
class DeviceExpectation:
    """What `GET /api/v1/devices/{id}` says of the device (its online state)."""

    scenario: str
    device_id: str
    online: bool | None = None
    why: str = ""

    type: Literal["device"] = field(default="device", init=False)

    def describe(self) -> str:
        state = {None: "known", True: "online", False: "offline"}[self.online]
        return f"device {self.device_id} {state}"


Expectation: TypeAlias = AlertExpectation | FixesExpectation | DeviceExpectation


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    device_id: str
    subject_id: str
    kind: str  # bracelet | owntracks
    scenario: str
    journal: bool  # a journal under state_dir/devices/{device_id}


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An expectation this version cannot check, kept to be reported as a difference."""

    scenario: str
    raw: dict[str, Any]
    reason: str

    def describe(self) -> str:
        return f"{self.reason}: {json.dumps(self.raw, sort_keys=True)[:200]}"


_ALERT_FIELDS = frozenset(
    {
        "type",
        "scenario",
        "kind",
        "subject_id",
        "must",
        "device_id",
        "zone_id",
        "fix_time",
        "count",
        "cleared",
        "delay_s",
        "state",
        "detail",
        "why",
    }
)
_FIXES_FIELDS = frozenset(
    {"type", "scenario", "subject_id", "device_id", "count", "distinct_t", "why"}
)
_DEVICE_FIELDS = frozenset({"type", "scenario", "device_id", "online", "why"})


def _to_json(e: Expectation) -> dict[str, Any]:
    out: dict[str, Any] = {"type": e.type}
    for name, value in asdict(e).items():
        if name == "type" or value is None or value == "":
            continue
        if isinstance(e, AlertExpectation) and name == "fix_time" and e.fix_time is not None:
            out[name] = e.fix_time.to_json()
        elif name in ("count", "delay_s"):
            bounds = getattr(e, name)
            out[name] = bounds.to_json()
        else:
            out[name] = value
    return out


def _from_json(raw: dict[str, Any]) -> Expectation | Unsupported:
    kind = raw.get("type", "alert")
    scenario = str(raw.get("scenario", "?"))
    allowed = {"alert": _ALERT_FIELDS, "fixes": _FIXES_FIELDS, "device": _DEVICE_FIELDS}.get(kind)
    if allowed is None:
        return Unsupported(scenario, raw, f"unknown expectation type {kind!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        return Unsupported(scenario, raw, f"fields this check does not know: {unknown}")
    try:
        if kind == "alert":
            must = raw.get("must", "exist")
            if must not in _MUSTS:
                return Unsupported(scenario, raw, f"must is one of {list(_MUSTS)}, not {must!r}")
            return AlertExpectation(
                scenario=scenario,
                kind=str(raw["kind"]),
                subject_id=str(raw["subject_id"]),
                must=must,
                device_id=raw.get("device_id"),
                zone_id=raw.get("zone_id"),
                fix_time=Window.from_json(raw["fix_time"]) if raw.get("fix_time") else None,
                count=Bounds.from_json(raw["count"]) if raw.get("count") is not None else None,
                cleared=raw.get("cleared"),
                delay_s=Bounds.from_json(raw["delay_s"]) if raw.get("delay_s") else None,
                state=raw.get("state"),
                detail=raw.get("detail"),
                why=str(raw.get("why", "")),
            )
        if kind == "fixes":
            return FixesExpectation(
                scenario=scenario,
                subject_id=str(raw["subject_id"]),
                device_id=str(raw["device_id"]),
                count=Bounds.from_json(raw["count"]),
                distinct_t=bool(raw.get("distinct_t", False)),
                why=str(raw.get("why", "")),
            )
        return DeviceExpectation(
            scenario=scenario,
            device_id=str(raw["device_id"]),
            online=raw.get("online"),
            why=str(raw.get("why", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Unsupported(scenario, raw, f"unreadable expectation ({exc!r})")


@dataclass
class ExpectFile:
    seed: int | None = None
    anchor: str | None = None
    prefix: str | None = None
    api_url: str | None = None
    state_dir: str | None = None
    created_at: str = field(
        default_factory=lambda: (
            datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    )
    devices: list[DeviceEntry] = field(default_factory=list)
    expectations: list[Expectation | Unsupported] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "created_at": self.created_at,
            "seed": self.seed,
            "anchor": self.anchor,
            "prefix": self.prefix,
            "api_url": self.api_url,
            "state_dir": self.state_dir,
            "scenarios": self.scenarios,
            "devices": [asdict(d) for d in self.devices],
            "expectations": [
                e.raw if isinstance(e, Unsupported) else _to_json(e) for e in self.expectations
            ],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ExpectFile:
        version = raw.get("version")
        if version != VERSION:
            raise ValueError(f"expect file version {version!r}; this check reads {VERSION}")
        devices = [
            DeviceEntry(
                device_id=str(d["device_id"]),
                subject_id=str(d["subject_id"]),
                kind=str(d.get("kind", "bracelet")),
                scenario=str(d.get("scenario", "")),
                journal=bool(d.get("journal", True)),
            )
            for d in raw.get("devices", [])
        ]
        return cls(
            seed=raw.get("seed"),
            anchor=raw.get("anchor"),
            prefix=raw.get("prefix"),
            api_url=raw.get("api_url"),
            state_dir=raw.get("state_dir"),
            created_at=str(raw.get("created_at", "")),
            devices=devices,
            expectations=[_from_json(dict(e)) for e in raw.get("expectations", [])],
            scenarios=list(raw.get("scenarios", [])),
        )

    @classmethod
    def load(cls, path: Path) -> ExpectFile:
        """Raises OSError, or ValueError for a file that is not an expect file."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a JSON object")
        return cls.from_json(raw)

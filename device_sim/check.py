"""`device-sim check`: what the backend recorded and alerted, against what the devices
were told was stored and what the scenarios expected.

Two sources of truth, both read through the operator API only:

- each device's journal (`state_dir/devices/{device_id}`): every seq up to the device's
  acknowledgement that was a fix must be among its subject's fixes exactly once. Events
  have no read API of their own in the contract, so acknowledged events are counted and
  reported but not compared; records the protocol refuses are acknowledged without
  being stored, and are left out. Fixes stamped before the device was assigned to its
  subject belong to no subject and are not in the API either: they are left out too.
- the expect file a scenario run wrote (`device_sim.expect`).

Every comparison is a `Finding`; `run_check` prints them and answers the exit status:
0 when nothing differs, 1 otherwise.
"""

from __future__ import annotations

import json
import urllib.error
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from device_sim.api import ApiError, OperatorClient
from device_sim.expect import (
    AlertExpectation,
    Bounds,
    DeviceEntry,
    DeviceExpectation,
    ExpectFile,
    FixesExpectation,
    Unsupported,
    ms_of,
    parse_time,
)
from device_sim.journal import History, read_history

__all__ = [
    "REASON",
    "Finding",
    "judge_alert",
    "judge_device",
    "judge_fixes",
    "judge_journal",
    "ranges_text",
    "run_check",
]

# The justification every read of a subject's data carries (the consultation log).
REASON = "device-sim check: simulated fleet verification"

Verdict = Literal["ok", "FAIL", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    where: str  # a scenario or a device
    text: str

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"


def ranges_text(seqs: Iterable[int], limit: int = 12) -> str:
    """`1-4, 9, 12-13` for the sorted seqs, cut after `limit` runs."""
    runs: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if runs and runs[-1][1] + 1 == s:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"… ({len(runs) - limit} more runs)")
    return ", ".join(parts)


# -- journals ---------------------------------------------------------------------------


def judge_journal(
    device_id: str,
    history: History,
    stored: Sequence[int | None],
    assigned_at_ms: int | None = None,
) -> list[Finding]:
    """Compare one device's journal with the seqs of its fixes the API returned."""
    findings: list[Finding] = []
    counts = Counter(s for s in stored if s is not None)
    expected: set[int] = set()
    before_assignment = 0
    straddling: list[tuple[int, int]] = []
    for span in history.acked_spans("fix"):
        if assigned_at_ms is not None and span.t_max is not None and span.t_max < assigned_at_ms:
            before_assignment += span.size
            continue
        if assigned_at_ms is not None and span.t_min is not None and span.t_min < assigned_at_ms:
            straddling.append((span.first, span.last))
            continue
        expected.update(range(span.first, span.last + 1))
    missing = sorted(expected - set(counts))
    doubled = sorted(s for s, n in counts.items() if n > 1)
    foreign: list[int] = []
    unacked_stored = 0
    unknown = 0
    for seq in counts:
        cls = history.known(seq)
        if cls == "fix":
            if seq > history.acked_upto:
                unacked_stored += 1
            continue
        if cls is None and seq <= history.last_seq:
            unknown += 1  # the journal lost the line (unreadable): cannot say
            continue
        foreign.append(seq)
    if missing:
        findings.append(
            Finding(
                "FAIL",
                device_id,
                f"{len(missing)} acknowledged fix(es) not stored: seq {ranges_text(missing)}",
            )
        )
    if doubled:
        findings.append(
            Finding(
                "FAIL",
                device_id,
                f"{len(doubled)} fix(es) stored more than once: seq {ranges_text(doubled)}",
            )
        )
    if foreign:
        findings.append(
            Finding(
                "FAIL",
                device_id,
                f"{len(foreign)} stored fix(es) the device never made as a fix: "
                f"seq {ranges_text(foreign)}",
            )
        )
    if not (missing or doubled or foreign):
        events = history.count("event")
        refused = history.count("refused")
        extra = [f"{events} acknowledged event(s) not compared (no events API)"]
        if refused:
            extra.append(f"{refused} refused record(s) acknowledged unstored")
        if unacked_stored:
            extra.append(f"{unacked_stored} stored before their ack reached the device")
        findings.append(
            Finding(
                "ok",
                device_id,
                f"{len(expected)} acknowledged fix(es) up to seq {history.acked_upto}, "
                f"each stored once; " + "; ".join(extra),
            )
        )
    pending = history.last_seq - history.acked_upto
    if pending > 0:
        findings.append(
            Finding(
                "info",
                device_id,
                f"{pending} record(s) after seq {history.acked_upto} "
                "not acknowledged yet (not compared)",
            )
        )
    if before_assignment:
        findings.append(
            Finding(
                "info",
                device_id,
                f"{before_assignment} fix(es) stamped before the device was assigned: "
                "not among the subject's fixes, not compared",
            )
        )
    if straddling:
        total = sum(b - a + 1 for a, b in straddling)
        findings.append(
            Finding(
                "info",
                device_id,
                f"{total} fix(es) in runs that straddle the assignment time, not compared: "
                f"seq {ranges_text(s for a, b in straddling for s in range(a, b + 1))}",
            )
        )
    if unknown:
        findings.append(
            Finding("info", device_id, f"{unknown} stored seq(s) the journal no longer knows")
        )
    return findings


# -- expectations -------------------------------------------------------------------------


def _alert_matches(e: AlertExpectation, a: Mapping[str, Any]) -> bool:
    if a.get("kind") != e.kind or str(a.get("subject_id")) != e.subject_id:
        return False
    if e.device_id is not None and a.get("device_id") != e.device_id:
        return False
    if e.zone_id is not None and a.get("zone_id") != e.zone_id:
        return False
    if e.fix_time is not None and not e.fix_time.contains(a.get("fix_time")):
        return False
    detail = a.get("detail") or {}
    if e.cleared is not None and (detail.get("cleared_at") is not None) != e.cleared:
        return False
    if e.state is not None and a.get("state") != e.state:
        return False
    if e.delay_s is not None:
        fix_time, received = a.get("fix_time"), a.get("received_at")
        if fix_time is None or received is None:
            return False
        delay = (parse_time(received) - parse_time(fix_time)).total_seconds()
        if not e.delay_s.holds(delay):
            return False
    if e.detail:
        for key, value in e.detail.items():
            if detail.get(key) != value:
                return False
    return True


def _alert_text(a: Mapping[str, Any]) -> str:
    detail = a.get("detail") or {}
    cleared = "cleared" if detail.get("cleared_at") else "not cleared"
    return (
        f"{a.get('kind')} {a.get('device_id')} fix_time {a.get('fix_time')} "
        f"received {a.get('received_at')} {a.get('state')} {cleared}"
    )


def judge_alert(e: AlertExpectation, alerts: Sequence[Mapping[str, Any]]) -> Finding:
    """`alerts`: the alerts of the expectation's subject."""
    matching = [a for a in alerts if _alert_matches(e, a)]
    n = len(matching)
    why = f" ({e.why})" if e.why else ""
    if e.must == "may":
        found = f"{n} present" if n else "none"
        return Finding("info", e.scenario, f"may exist: {e.describe()}: {found}")
    if e.must == "absent":
        if not n:
            return Finding("ok", e.scenario, f"absent as expected: {e.describe()}{why}")
        listed = "; ".join(_alert_text(a) for a in matching[:3])
        return Finding(
            "FAIL", e.scenario, f"should be absent: {e.describe()}{why}; found {n}: {listed}"
        )
    bounds = e.count or Bounds(1, None)
    if bounds.holds(n):
        times = ", ".join(str(a.get("fix_time")) for a in matching[:3])
        return Finding("ok", e.scenario, f"exists: {e.describe()}: {n} alert(s) ({times})")
    same_kind = [a for a in alerts if a.get("kind") == e.kind]
    near = "; ".join(_alert_text(a) for a in same_kind[:3]) or "no alert of that kind"
    return Finding(
        "FAIL",
        e.scenario,
        f"should exist ({bounds.text()}): {e.describe()}{why}; found {n} matching. "
        f"Of kind {e.kind} for the subject: {near}",
    )


def judge_fixes(e: FixesExpectation, fixes: Sequence[Mapping[str, Any]]) -> Finding:
    """`fixes`: the GeoJSON features of the expectation's device."""
    n = len(fixes)
    times = Counter(f.get("properties", {}).get("t") for f in fixes)
    twice = sorted(str(t) for t, c in times.items() if c > 1)
    problems = []
    if not e.count.holds(n):
        problems.append(f"{n} stored, expected {e.count.text()}")
    if e.distinct_t and twice:
        problems.append(f"fix times stored more than once: {', '.join(twice[:5])}")
    if problems:
        return Finding("FAIL", e.scenario, f"{e.describe()}: " + "; ".join(problems))
    return Finding("ok", e.scenario, f"{e.describe()}: {n} stored")


def judge_device(e: DeviceExpectation, device: Mapping[str, Any] | None) -> Finding:
    if device is None:
        return Finding("FAIL", e.scenario, f"{e.describe()}: the API does not know the device")
    if e.online is not None and device.get("online") != e.online:
        return Finding(
            "FAIL", e.scenario, f"{e.describe()}: the API says online={device.get('online')}"
        )
    return Finding("ok", e.scenario, f"{e.describe()}")


# -- reading the backend ----------------------------------------------------------------


@dataclass
class _Backend:
    """What the API says, fetched once per subject and device."""

    api: OperatorClient
    workers: int = 4

    def __post_init__(self) -> None:
        self.fixes: dict[str, list[dict[str, Any]]] = {}
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        self.devices: dict[str, dict[str, Any] | None] = {}
        self.unknown_subjects: dict[str, str] = {}  # subject id -> why

    def load(
        self, subjects: Iterable[str], devices: Iterable[str], alerts_for: Iterable[str]
    ) -> None:
        def fixes(subject: str) -> None:
            try:
                self.fixes[subject] = list(self.api.all_fixes(subject, REASON))
            except ApiError as exc:
                self._unknown(subject, exc)
                self.fixes[subject] = []

        def alerts(subject: str) -> None:
            try:
                self.alerts[subject] = list(self.api.all_alerts(REASON, subject))
            except ApiError as exc:
                self._unknown(subject, exc)
                self.alerts[subject] = []

        def device(device_id: str) -> None:
            try:
                self.devices[device_id] = self.api.device(device_id)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self.devices[device_id] = None

        jobs = [
            *((device, d) for d in sorted(set(devices))),
            *((fixes, s) for s in sorted(set(subjects))),
            *((alerts, s) for s in sorted(set(alerts_for))),
        ]
        # Threads only overlap the waiting on HTTP: each call has its own connection.
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for future in [pool.submit(fn, arg) for fn, arg in jobs]:
                future.result()

    def _unknown(self, subject: str, exc: ApiError) -> None:
        """A subject the API does not know (404) or whose id it refuses (422) is a
        difference to report, not a failure of the check: anything else propagates."""
        if exc.status not in (404, 422):
            raise exc
        self.unknown_subjects[subject] = f"the API knows no such subject ({exc.status})"

    def device_fixes(self, subject: str, device_id: str) -> list[dict[str, Any]]:
        return [
            f
            for f in self.fixes.get(subject, [])
            if f.get("properties", {}).get("device_id") == device_id
        ]


def _journal_dirs(state_dir: Path) -> dict[str, Path]:
    root = state_dir / "devices"
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and ((p / "state.json").exists() or (p / "journal.jsonl").exists())
    }


def run_check(
    api: OperatorClient,
    expect: ExpectFile | None,
    state_dir: Path | None,
    out: TextIO,
    *,
    strict: bool = False,
    verbose: bool = False,
    workers: int = 4,
) -> int:
    """Fetch, compare, print; 0 when nothing differs, 1 otherwise. API errors and
    unreachable URLs propagate (the CLI answers them with 2)."""
    entries: dict[str, DeviceEntry] = {d.device_id: d for d in (expect.devices if expect else [])}
    journals = _journal_dirs(state_dir) if state_dir is not None else {}
    expectations = list(expect.expectations) if expect else []

    device_ids = set(journals) | set(entries)
    for e in expectations:
        if isinstance(e, DeviceExpectation):
            device_ids.add(e.device_id)
    backend = _Backend(api, workers)
    backend.load([], device_ids, [])
    subject_of: dict[str, str] = {}
    for device_id in device_ids:
        known = backend.devices.get(device_id)
        if known is not None and known.get("subject_id"):
            subject_of[device_id] = str(known["subject_id"])
        elif device_id in entries:
            subject_of[device_id] = entries[device_id].subject_id
    fix_subjects = {subject_of[d] for d in journals if d in subject_of}
    fix_subjects |= {e.subject_id for e in expectations if isinstance(e, FixesExpectation)}
    alert_subjects = {e.subject_id for e in expectations if isinstance(e, AlertExpectation)}
    if strict:
        alert_subjects |= {d.subject_id for d in entries.values()}
    backend.load(fix_subjects, [], alert_subjects)

    findings: list[tuple[str, Finding]] = []
    for unknown, why in sorted(backend.unknown_subjects.items()):
        findings.append(("subjects", Finding("FAIL", unknown, why)))
    if state_dir is not None:
        for device_id, entry in sorted(entries.items()):
            if entry.journal and device_id not in journals:
                text = f"no journal under {state_dir / 'devices' / device_id}"
                findings.append(("journals", Finding("FAIL", device_id, text)))
    for device_id, directory in journals.items():
        history = read_history(directory)
        if history is None:
            continue
        subject = subject_of.get(device_id)
        if subject is None:
            findings.append(
                ("journals", Finding("FAIL", device_id, "the API knows no such device"))
            )
            continue
        info = backend.devices.get(device_id) or {}
        assigned = info.get("assigned_at")
        seqs = [
            f.get("properties", {}).get("seq") for f in backend.device_fixes(subject, device_id)
        ]
        for f in judge_journal(device_id, history, seqs, ms_of(assigned) if assigned else None):
            findings.append(("journals", f))

    matched: dict[str, set[str]] = defaultdict(set)  # subject -> ids of expected alerts
    for e in expectations:
        if isinstance(e, Unsupported):
            findings.append(("expectations", Finding("FAIL", e.scenario, e.describe())))
        elif isinstance(e, AlertExpectation):
            alerts = backend.alerts.get(e.subject_id, [])
            findings.append(("expectations", judge_alert(e, alerts)))
            if e.must in ("exist", "may"):
                matched[e.subject_id].update(
                    str(a.get("id")) for a in alerts if _alert_matches(e, a)
                )
        elif isinstance(e, FixesExpectation):
            fixes = backend.device_fixes(e.subject_id, e.device_id)
            findings.append(("expectations", judge_fixes(e, fixes)))
        else:
            findings.append(("expectations", judge_device(e, backend.devices.get(e.device_id))))

    scenario_of = {d.subject_id: d.scenario for d in entries.values()}
    for subject in sorted(alert_subjects):
        extra = [
            a for a in backend.alerts.get(subject, []) if str(a.get("id")) not in matched[subject]
        ]
        if not extra:
            continue
        kinds = Counter(str(a.get("kind")) for a in extra)
        text = "alerts no expectation names: " + ", ".join(
            f"{k} ×{n}" for k, n in sorted(kinds.items())
        )
        findings.append(
            (
                "expectations",
                Finding("FAIL" if strict else "info", scenario_of.get(subject, subject), text),
            )
        )

    _print(out, findings, verbose, expect, state_dir)
    return 1 if any(f.failed for _, f in findings) else 0


def _print(
    out: TextIO,
    findings: list[tuple[str, Finding]],
    verbose: bool,
    expect: ExpectFile | None,
    state_dir: Path | None,
) -> None:
    failed = [f for _, f in findings if f.failed]
    width = max((len(f.where) for _, f in findings), default=10)
    for section in ("subjects", "journals", "expectations"):
        rows = [f for s, f in findings if s == section]
        if not rows:
            continue
        print(section, file=out)
        for f in rows:
            if f.verdict == "info" and not verbose and not f.text.startswith("may exist"):
                continue
            print(f"  {f.verdict:4}  {f.where:<{width}}  {f.text}", file=out)
    ok = sum(1 for _, f in findings if f.verdict == "ok")
    sources = []
    if expect is not None:
        sources.append(f"{len(expect.expectations)} expectation(s)")
    if state_dir is not None:
        sources.append(f"journals in {state_dir}")
    summary = (
        f"check: {ok} matched, {len(failed)} difference(s) ({', '.join(sources) or 'nothing'})"
    )
    print(summary, file=out)
    if failed:
        print("differences:", file=out)
        for f in failed:
            print(f"  {f.where}: {f.text}", file=out)


def describe_error(exc: BaseException) -> str:
    """One line for an error reaching the API."""
    if isinstance(exc, ApiError):
        return str(exc)
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {exc.reason}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc}"
    return f"{type(exc).__name__}: {exc}"

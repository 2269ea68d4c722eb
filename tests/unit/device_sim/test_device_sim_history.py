"""What a journal still knows after compaction: which acknowledged seqs were fixes."""

from __future__ import annotations

import json
from pathlib import Path

from device_sim.journal import Journal, Record, Span, classify, read_history

T0 = 1_763_816_700_000


def test_no_journal_no_history(tmp_path: Path) -> None:
    assert read_history(tmp_path) is None


def test_history_without_compaction_reads_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for i in range(3):
        journal.add_fix(T0 + i * 1000, 43.2, 76.9, 8.0)
    journal.add_event(T0 + 3000, "strap_open")
    journal.add("fix", {"t": T0 + 4000, "lat": 123.0, "lon": 76.9, "acc": 5.0})
    journal.add_fix(T0 + 5000, 43.2, 76.9, 8.0)
    journal.acknowledge(5)
    journal.close()
    history = read_history(tmp_path)
    assert history is not None
    assert history.acked_upto == 5
    assert history.last_seq == 6
    assert history.spans == (
        Span("fix", 1, 3, T0, T0 + 2000),
        Span("event", 4, 4, T0 + 3000, T0 + 3000),
        Span("refused", 5, 5, T0 + 4000, T0 + 4000),
        Span("fix", 6, 6, T0 + 5000, T0 + 5000),
    )
    # The last fix is not acknowledged yet: not among those to compare.
    assert history.acked_spans("fix") == [Span("fix", 1, 3, T0, T0 + 2000)]
    assert history.count("event") == 1
    assert history.count("refused") == 1
    assert history.known(4) == "event"
    assert history.known(6) == "fix"
    assert history.known(7) is None


def test_compaction_keeps_the_class_of_what_it_drops(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for i in range(3000):
        if i % 1000 == 999:
            journal.add_event(T0 + i * 1000, "boot")
        else:
            journal.add_fix(T0 + i * 1000, 43.2, 76.9, 8.0)
    for upto in range(100, 2801, 100):
        journal.acknowledge(upto)
    journal.close()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert len(lines) < 3000, "compacted"
    assert (tmp_path / "acked.jsonl").exists()
    history = read_history(tmp_path)
    assert history is not None
    assert history.acked_upto == 2800
    fixes = history.acked_spans("fix")
    assert [(s.first, s.last) for s in fixes] == [(1, 999), (1001, 1999), (2001, 2800)]
    assert history.count("fix") == 2800 - 2
    assert history.count("fix", acked_only=False) == 3000 - 3
    assert fixes[0].t_min == T0
    assert fixes[0].t_max == T0 + 998_000


def test_a_record_in_both_the_ledger_and_the_journal_counts_once(tmp_path: Path) -> None:
    # A crash between writing acked.jsonl and rewriting the journal leaves both.
    journal = Journal(tmp_path)
    for i in range(4):
        journal.add_fix(T0 + i, 43.2, 76.9, 8.0)
    journal.acknowledge(4)
    journal.close()
    (tmp_path / "acked.jsonl").write_text(json.dumps(["fix", 1, 2, T0, T0 + 1]) + "\n")
    history = read_history(tmp_path)
    assert history is not None
    assert history.spans == (Span("fix", 1, 4, T0, T0 + 3),)
    assert history.count("fix") == 4


def test_classify_follows_the_protocol() -> None:
    ok = {"seq": 1, "t": T0, "lat": 1.0, "lon": 2.0, "acc": 3.0, "src": "gnss"}
    assert classify(Record("fix", ok)) == "fix"
    assert classify(Record("fix", {**ok, "src": "gps"})) == "refused"
    assert classify(Record("fix", {**ok, "batt": 101})) == "refused"
    assert classify(Record("event", {"seq": 2, "t": T0, "kind": "sos"})) == "event"
    assert classify(Record("event", {"seq": 2, "t": T0, "kind": "party"})) == "refused"

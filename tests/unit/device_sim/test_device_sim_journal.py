"""Store-and-forward bookkeeping: numbering, persistence, acks, what is due to send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_sim.journal import Journal, Record, encode_upload

T0 = 1_763_816_700_000


def _fill(journal: Journal, n: int) -> list[int]:
    return [journal.add_fix(T0 + i * 1000, 43.2, 76.9, 8.5) for i in range(n)]


def test_seq_starts_at_1_and_grows_by_1_across_fixes_and_events() -> None:
    journal = Journal()
    assert journal.last_seq == 0
    assert journal.add_fix(T0, 43.2, 76.9, 8.5) == 1
    assert journal.add_event(T0 + 1, "strap_open") == 2
    assert journal.add_fix(T0 + 2, 43.2, 76.9, 8.5) == 3
    assert journal.last_seq == 3
    assert journal.pending == 3


def test_fix_fields_are_exactly_the_protocols() -> None:
    journal = Journal()
    journal.add_fix(T0, 43.238949, 76.889709, 8.5, "gnss", spd=1.2, batt=81)
    journal.add_fix(T0 + 1000, 43.238949, 76.889709, 8.5, "wifi")
    journal.add_event(T0 + 2000, "cmd_result", {"id": "c-81f2", "ok": True})
    payload = json.loads(encode_upload(journal.due(0.0, 30.0, 500)))
    assert payload == {
        "fixes": [
            {"seq": 1, "t": T0, "lat": 43.238949, "lon": 76.889709, "acc": 8.5,
             "src": "gnss", "spd": 1.2, "batt": 81},
            {"seq": 2, "t": T0 + 1000, "lat": 43.238949, "lon": 76.889709, "acc": 8.5,
             "src": "wifi"},
        ],
        "events": [
            {"seq": 3, "t": T0 + 2000, "kind": "cmd_result",
             "detail": {"id": "c-81f2", "ok": True}},
        ],
    }  # fmt: skip


def test_an_upload_is_compact_json_with_both_arrays() -> None:
    journal = Journal()
    journal.add_event(T0, "boot")
    assert encode_upload(journal.due(0.0, 30.0, 500)) == (
        b'{"fixes":[],"events":[{"seq":1,"t":1763816700000,"kind":"boot"}]}'
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lat", 123.0, "lat"),
        ("lon", -180.5, "lon"),
        ("acc", -1.0, "acc"),
        ("src", "gps", "src"),
        ("spd", -0.1, "spd"),
        ("batt", 101, "batt"),
        ("batt", 80.5, "batt"),
        ("t", 1.5e12, "t must be"),
        ("t", True, "t must be"),
    ],
)
def test_fixes_the_protocol_refuses_are_refused_here(
    field: str, value: object, message: str
) -> None:
    fields: dict[str, object] = {"t_ms": T0, "lat": 43.2, "lon": 76.9, "acc": 8.5}
    fields["t_ms" if field == "t" else field] = value
    journal = Journal()
    with pytest.raises(ValueError, match=message):
        journal.add_fix(**fields)  # type: ignore[arg-type]
    assert journal.last_seq == 0, "a refused record takes no seq"


def test_unknown_event_kinds_are_refused_but_raw_records_pass() -> None:
    journal = Journal()
    with pytest.raises(ValueError, match="kind"):
        journal.add_event(T0, "teleported")
    seq = journal.add("fix", {"t": T0, "lat": 123, "lon": 76.9, "acc": 5, "src": "gnss"})
    assert seq == 1
    assert journal.unacked()[0].body["lat"] == 123


def test_acknowledging_drops_what_is_covered_and_ignores_stale_acks() -> None:
    journal = Journal()
    _fill(journal, 10)
    assert journal.acknowledge(4) == 4
    assert journal.acked_upto == 4
    assert [r.seq for r in journal.unacked()] == [5, 6, 7, 8, 9, 10]
    assert journal.acknowledge(3) == 0  # a retained ack from earlier
    assert journal.acked_upto == 4
    assert journal.acknowledge(10) == 6
    assert journal.all_acked


def test_an_ack_beyond_the_last_seq_moves_the_numbering_past_it() -> None:
    # This device lost its state while the backend kept its records: reusing those
    # seqs would have the new records dropped as duplicates.
    journal = Journal()
    _fill(journal, 2)
    journal.acknowledge(41)
    assert journal.all_acked
    assert journal.add_event(T0, "boot") == 42


def test_new_records_are_due_once_and_unacked_ones_again_after_the_timeout() -> None:
    journal = Journal()
    _fill(journal, 3)
    first = journal.due(now=100.0, resend_after_s=30.0, limit=500)
    assert [r.seq for r in first] == [1, 2, 3]
    journal.mark_sent(first, now=100.0)
    assert journal.due(now=110.0, resend_after_s=30.0, limit=500) == []
    assert not journal.has_due(now=110.0, resend_after_s=30.0)
    journal.add_fix(T0 + 9000, 43.2, 76.9, 8.5)
    assert [r.seq for r in journal.due(now=111.0, resend_after_s=30.0, limit=500)] == [4]
    journal.mark_sent(journal.due(now=111.0, resend_after_s=30.0, limit=500), now=111.0)
    journal.acknowledge(2)
    # Record 3 (sent at 100) is due again at 130; record 4 (sent at 111) at 141.
    assert [r.seq for r in journal.due(now=130.0, resend_after_s=30.0, limit=500)] == [3]
    assert [r.seq for r in journal.due(now=141.0, resend_after_s=30.0, limit=500)] == [3, 4]


def test_after_a_reconnect_everything_unacked_is_due_in_seq_order() -> None:
    journal = Journal()
    _fill(journal, 5)
    journal.mark_sent(journal.due(0.0, 30.0, 500), now=0.0)
    journal.acknowledge(2)
    journal.mark_unsent()
    assert [r.seq for r in journal.due(now=1.0, resend_after_s=30.0, limit=500)] == [3, 4, 5]


def test_batches_take_the_lowest_seqs_first_up_to_the_limit() -> None:
    journal = Journal()
    _fill(journal, 1200)
    batches: list[list[int]] = []
    while journal.has_due(0.0, 30.0):
        batch = journal.due(0.0, 30.0, 500)
        journal.mark_sent(batch, 0.0)
        batches.append([r.seq for r in batch])
    assert [len(b) for b in batches] == [500, 500, 200]
    assert batches[0][0] == 1
    assert batches[2][-1] == 1200


def test_the_numbering_and_unacked_records_survive_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _fill(journal, 5)
    journal.acknowledge(2)
    journal.close()

    again = Journal(tmp_path)
    assert again.acked_upto == 2
    assert [r.seq for r in again.unacked()] == [3, 4, 5]
    assert again.unacked()[0] == Record(
        "fix", {"seq": 3, "t": T0 + 2000, "lat": 43.2, "lon": 76.9, "acc": 8.5, "src": "gnss"}
    )
    assert again.add_event(T0, "boot") == 6
    # Whatever was unacknowledged is due at once after the restart.
    assert [r.seq for r in again.due(0.0, 30.0, 500)] == [3, 4, 5, 6]


def test_a_killed_simulator_loses_nothing_it_wrote(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _fill(journal, 3)
    # No close(): the process dies here.
    again = Journal(tmp_path)
    assert again.last_seq == 3
    assert again.pending == 3


def test_a_line_cut_short_by_a_kill_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _fill(journal, 2)
    journal.close()
    with (tmp_path / "journal.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"fix":{"seq":3,"t":17638')
    again = Journal(tmp_path)
    assert [r.seq for r in again.unacked()] == [1, 2]
    # Seq 3 was never published (its line was never finished), so it may be used.
    assert again.add_event(T0, "boot") == 3
    assert [r.seq for r in Journal(tmp_path).unacked()] == [1, 2, 3]


def test_compaction_keeps_the_numbering(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _fill(journal, 3000)
    journal.acknowledge(2995)
    lines = (tmp_path / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    journal.acknowledge(3000)
    journal.close()
    again = Journal(tmp_path)
    assert again.all_acked
    assert again.add_fix(T0, 43.2, 76.9, 8.5) == 3001


def test_an_in_memory_journal_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    journal = Journal()
    _fill(journal, 3)
    journal.acknowledge(3)
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_closed_journal_takes_no_more_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        journal.add_event(T0, "boot")
    assert journal.last_seq == 0

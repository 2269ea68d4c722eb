"""NOTIFY rules carries a rule change whole between processes (RulesChanged.notice)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.service import RulesChanged

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)


def test_a_change_with_keys_survives_the_round_trip() -> None:
    change = RulesChanged("s-1", SINCE, frozenset({"zone:z-2", "status:z-1"}))
    back, origin = RulesChanged.from_notice(change.notice("proc-a"), NOW)
    assert back == change
    assert origin == "proc-a"


def test_a_reload_only_change_stays_reload_only() -> None:
    back, _ = RulesChanged.from_notice(RulesChanged("s-1", SINCE).notice("proc-a"), NOW)
    assert back.keys is None  # reload, not "judge again with no new keys"
    assert back.since == SINCE


def test_a_bare_subject_id_is_a_reload_from_now_with_no_origin() -> None:
    back, origin = RulesChanged.from_notice("7f76f609-e638-4024-a4c2-221035451ca0", NOW)
    assert back == RulesChanged("7f76f609-e638-4024-a4c2-221035451ca0", NOW)
    assert origin is None


def test_a_notice_that_is_json_but_not_a_change_is_taken_as_a_subject_id() -> None:
    for payload in ('"s-1"', "[1, 2]", '{"subject_id": "s-1"}', '{"since": "x"}'):
        back, origin = RulesChanged.from_notice(payload, NOW)
        assert back == RulesChanged(payload, NOW)
        assert origin is None


def test_the_notice_fits_postgresql_payload_limit() -> None:
    keys = frozenset(f"zone:{i:08d}-0000-0000-0000-000000000000" for i in range(100))
    assert len(RulesChanged("s-1", SINCE, keys).notice("p" * 32).encode()) < 8000

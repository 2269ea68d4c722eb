"""monitor.domain: epoch milliseconds and the API's ISO 8601 times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.domain import (
    ALERT_KINDS,
    DEFAULT_SEVERITY,
    AlertKind,
    Severity,
    from_epoch_ms,
    iso,
    to_epoch_ms,
)

PROPERTY = settings(database=None, deadline=None, max_examples=200)


def test_from_epoch_ms_is_aware_utc() -> None:
    assert from_epoch_ms(1_763_816_700_000) == datetime(2025, 11, 22, 13, 5, tzinfo=UTC)
    assert from_epoch_ms(1_763_816_700_250).microsecond == 250_000


@PROPERTY
@given(st.integers(946_684_800_000, 4_102_444_800_000))
def test_epoch_ms_round_trips(ms: int) -> None:
    assert to_epoch_ms(from_epoch_ms(ms)) == ms


def test_iso_writes_utc_with_a_z_and_milliseconds() -> None:
    almaty = timezone(timedelta(hours=5))
    assert iso(datetime(2026, 11, 22, 18, 5, 1, 200_000, tzinfo=almaty)) == (
        "2026-11-22T13:05:01.200Z"
    )
    assert iso(datetime(2026, 11, 22, 13, 5, tzinfo=UTC)) == "2026-11-22T13:05:00.000Z"
    assert iso(None) is None


def test_every_alert_kind_has_a_default_severity() -> None:
    assert set(DEFAULT_SEVERITY) == set(AlertKind)
    assert {k.value for k in AlertKind} == ALERT_KINDS
    assert DEFAULT_SEVERITY[AlertKind.ZONE_EXIT] is Severity.CRITICAL
    assert DEFAULT_SEVERITY[AlertKind.TAMPER] is Severity.CRITICAL
    assert DEFAULT_SEVERITY[AlertKind.BATTERY] is Severity.SERIOUS
    assert DEFAULT_SEVERITY[AlertKind.DATA_GAP] is Severity.WARNING

"""monitor.rules.watermark: the acknowledgement watermark and data gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.rules.watermark import Gap, Watermark

PROPERTY = settings(database=None, deadline=None, max_examples=200)

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=10)


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def test_a_new_watermark_has_acknowledged_nothing() -> None:
    wm = Watermark()
    assert (wm.upto, wm.above, wm.hole_since) == (0, set(), None)
    assert wm.expire(minutes(60), TIMEOUT) == []


def test_contiguous_seqs_advance_upto() -> None:
    wm = Watermark()
    wm.account([1, 2, 3], T0)
    assert (wm.upto, wm.above, wm.hole_since) == (3, set(), None)
    wm.account([4], minutes(1))
    assert wm.upto == 4


def test_contiguous_seqs_in_any_order_advance_upto() -> None:
    wm = Watermark()
    wm.account([3, 1, 2], T0)
    assert wm.upto == 3


def test_seqs_across_uploads_advance_upto_once_the_hole_fills() -> None:
    wm = Watermark()
    wm.account([1, 2, 4, 5], T0)
    assert (wm.upto, wm.above, wm.hole_since) == (2, {4, 5}, T0)
    wm.account([3], minutes(1))
    assert (wm.upto, wm.above, wm.hole_since) == (5, set(), None)


def test_a_hole_holds_upto() -> None:
    wm = Watermark()
    wm.account([1, 2, 4], T0)
    wm.account([5, 6], minutes(1))
    assert wm.upto == 2
    assert wm.above == {4, 5, 6}
    assert wm.hole_since == T0  # when the hole was first seen, not the latest upload


def test_duplicates_and_seqs_at_or_below_upto_are_no_ops() -> None:
    wm = Watermark()
    wm.account([1, 2, 3, 5], T0)
    before = wm.copy()
    wm.account([1, 2, 3], minutes(3))
    wm.account([5], minutes(4))
    wm.account([5, 2], minutes(5))
    assert (wm.upto, wm.above, wm.hole_since) == (before.upto, before.above, before.hole_since)


def test_the_watermark_accepts_a_set() -> None:
    wm = Watermark()
    wm.account({2, 1}, T0)
    assert wm.upto == 2


def test_nothing_expires_before_the_timeout() -> None:
    wm = Watermark()
    wm.account([1, 2, 5], T0)
    for now in (T0, minutes(5), minutes(10) - timedelta(microseconds=1)):
        assert wm.expire(now, TIMEOUT) == []
    assert (wm.upto, wm.above, wm.hole_since) == (2, {5}, T0)


def test_a_hole_open_for_the_timeout_becomes_a_gap_and_upto_moves_past_it() -> None:
    wm = Watermark()
    wm.account([1, 2, 6, 7], T0)

    gaps = wm.expire(minutes(10), TIMEOUT)

    assert gaps == [Gap(first_seq=3, last_seq=5, opened_at=T0)]
    assert (wm.upto, wm.above, wm.hole_since) == (7, set(), None)
    assert wm.expire(minutes(30), TIMEOUT) == []


def test_a_hole_from_the_start_becomes_a_gap_from_seq_1() -> None:
    wm = Watermark()
    wm.account([4], T0)
    assert wm.expire(minutes(11), TIMEOUT) == [Gap(1, 3, T0)]
    assert wm.upto == 4


def test_a_gapped_seq_arriving_later_is_a_no_op() -> None:
    wm = Watermark()
    wm.account([1, 3], T0)
    wm.expire(minutes(10), TIMEOUT)
    wm.account([2], minutes(12))
    assert (wm.upto, wm.above, wm.hole_since) == (3, set(), None)


def test_a_second_hole_gets_a_fresh_timeout() -> None:
    wm = Watermark()
    wm.account([3], T0)  # hole 1..2
    wm.account([6], minutes(4))  # hole 4..5
    assert wm.expire(minutes(10), TIMEOUT) == [Gap(1, 2, T0)]
    assert (wm.upto, wm.above, wm.hole_since) == (3, {6}, minutes(10))

    assert wm.expire(minutes(19), TIMEOUT) == []
    assert wm.upto == 3
    assert wm.expire(minutes(20), TIMEOUT) == [Gap(4, 5, minutes(10))]
    assert (wm.upto, wm.above, wm.hole_since) == (6, set(), None)


def test_copy_is_independent() -> None:
    wm = Watermark()
    wm.account([1, 3], T0)
    twin = wm.copy()
    twin.account([2], minutes(1))
    assert (wm.upto, wm.above) == (1, {3})
    assert (twin.upto, twin.above) == (3, set())


@PROPERTY
@given(st.lists(st.lists(st.integers(1, 40), max_size=10), max_size=8))
def test_upto_is_the_longest_accounted_prefix(uploads: list[list[int]]) -> None:
    wm = Watermark()
    seen: set[int] = set()
    for i, seqs in enumerate(uploads):
        wm.account(seqs, minutes(i))
        seen.update(seqs)
        upto = 0
        while upto + 1 in seen:
            upto += 1
        assert wm.upto == upto
        assert wm.above == {s for s in seen if s > upto}
        assert (wm.hole_since is None) == (not wm.above)


def test_a_hole_seen_later_gets_its_own_timeout_when_an_earlier_hole_fills() -> None:
    wm = Watermark()
    wm.account([5], T0)  # hole 1..4
    wm.account([1, 2, 3, 4, 7], minutes(9))  # that hole fills; seq 6 is missing from now on
    assert wm.expire(minutes(10), TIMEOUT) == []
    assert wm.expire(minutes(19), TIMEOUT) == [Gap(6, 6, minutes(9))]

"""The MP230 decisions on a bare calendar: boundaries of each rule."""

from __future__ import annotations

import pytest

from scheduler.calendar import Calendar
from scheduler.errors import AdmissionRefused
from scheduler.policy import Limits, Move, Placement, place_unscheduled, propose
from smets1.config_dcc import SchedulerConfig

EPOCH = 1_740_787_200.0
A, B, C = 1, 2, 3


def limits(**kw: object) -> Limits:
    return Limits.from_config(SchedulerConfig.model_validate(kw))


def cal(capacity: int = 12_000, peaks: list[tuple[float, float]] | None = None) -> Calendar:
    return Calendar(EPOCH, capacity, peaks or [])


def test_large_is_strictly_over_the_threshold() -> None:
    lim = limits()
    assert not lim.is_large(750_000)
    assert lim.is_large(750_001)
    assert limits(large_image_threshold_bytes=1_000).is_large(1_001)


def test_admission_window_is_stale_minus_trt() -> None:
    assert limits().admission_days == 2
    assert limits(trt_seconds=86_400.0 * 6).admission_days == 1


def test_user_allowance_500_then_held() -> None:
    c, lim = cal(), limits()
    for _ in range(500):
        assert place_unscheduled(c, lim, A, 0).placement is Placement.PLANNED
    d = place_unscheduled(c, lim, A, 0)
    assert (d.placement, d.day) == (Placement.HELD, 0)
    # Another User is not affected by A's allowance.
    assert place_unscheduled(c, lim, B, 0).placement is Placement.PLANNED
    assert c.user_unscheduled(0, A) == 500


def test_capacity_exactly_full_then_next_day_then_refused() -> None:
    c, lim = cal(capacity=10), limits(large_images_per_day=10, user_daily_limit=100)
    days = [place_unscheduled(c, lim, A, 0).day for _ in range(20)]
    assert days == [0] * 10 + [1] * 10
    assert c.free(0) == 0 and c.free(1) == 0
    refused = place_unscheduled(c, lim, B, 0)
    assert refused.placement is Placement.REFUSED
    assert refused.day == 2  # the earliest day that would work


def test_proposal_takes_earliest_free_batches() -> None:
    c, lim = cal(capacity=100), limits(large_images_per_day=100)
    c.book(0, C, 60)
    p = propose(c, lim, A, 250, 0, None, {})
    assert p.batches == {0: 40, 1: 100, 2: 100, 3: 10}
    assert p.moves == []
    assert propose(c, lim, A, 250, 0, 80, {}).batches == {0: 40, 1: 80, 2: 80, 3: 50}


def test_proposal_claims_a_fair_share_by_moving_an_earlier_schedule() -> None:
    c, lim = cal(capacity=100), limits(large_images_per_day=100)
    for day in range(3):
        c.reserve(day, 7, 100)  # schedule 7 of User A holds three full days
    p = propose(c, lim, B, 50, 0, None, {7: A})
    assert p.batches == {0: 50}
    assert p.moves == [Move(7, 0, 50)]
    # Within its fair share nothing moves for a User who holds the day alone.
    assert propose(c, lim, A, 10, 0, None, {7: A}).batches == {3: 10}


def test_proposal_beyond_horizon_is_refused() -> None:
    c, lim = cal(capacity=10), limits(large_images_per_day=10, schedule_horizon_days=3)
    with pytest.raises(AdmissionRefused):
        propose(c, lim, A, 31, 0, None, {})


def test_peak_windows_are_skipped() -> None:
    c = cal(peaks=[(16, 19), (18, 20)])
    assert c.peaks == [(16 * 3600.0, 20 * 3600.0)]
    assert c.peak_end(EPOCH + 17 * 3600) == EPOCH + 20 * 3600
    assert c.peak_end(EPOCH + 15 * 3600) is None
    assert c.offpeak_left(EPOCH) == 20 * 3600
    assert c.offpeak_seconds(0) == 20 * 3600

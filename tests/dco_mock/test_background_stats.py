"""The latency histogram of background traffic: percentiles within half a percent of the
exact ones, from a few thousand counters at most."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from dco_mock.background_stats import LATENCY_FLOOR_SECONDS, BackgroundStats, LatencyHistogram

latencies = st.lists(
    st.floats(min_value=2 * LATENCY_FLOOR_SECONDS, max_value=1e6, allow_nan=False),
    min_size=1,
    max_size=300,
)


@given(latencies, st.sampled_from([50.0, 95.0, 99.0, 100.0]))
def test_a_percentile_is_within_half_a_percent_of_the_exact_one(
    values: list[float], q: float
) -> None:
    h = LatencyHistogram()
    for v in values:
        h.observe(v)
    exact = sorted(values)[max(1, math.ceil(q / 100 * len(values))) - 1]
    got = h.percentile(q)
    assert got is not None
    assert abs(got - exact) <= 0.0051 * exact


def test_no_latency_no_percentile_and_tiny_ones_in_the_first_bucket() -> None:
    h = LatencyHistogram()
    assert h.percentile(95) is None
    h.observe(0.0)
    assert h.percentile(50) is not None and h.percentile(50) < 2 * LATENCY_FLOOR_SECONDS


def test_met_missed_and_unanswered_by_kind_and_by_hour() -> None:
    stats = BackgroundStats(("read_registers", "read_profile"), (30.0, 60.0))
    for kind, hour in ((0, 7), (0, 7), (1, 18), (1, 18)):
        stats.made(kind, hour)
    stats.answered(0, 7, 12.0)  # met
    stats.answered(0, 7, 31.0)  # missed: over 30 s
    stats.answered(1, 18, 31.0)  # met: under 60 s
    stats.lost(1, 18, 3_600.0)  # given up after an hour
    out = stats.summary(open_at_end=0, timezone="Europe/London")
    # The unanswered one counts in the latencies at its give-up time (a lower bound).
    assert out["kinds"]["read_profile"]["p95_seconds"] > 3_500
    assert out["kinds"]["read_registers"]["p95_seconds"] < 32
    assert (out["requests"], out["met"], out["missed"], out["unanswered"]) == (4, 2, 2, 1)
    assert out["kinds"]["read_registers"]["missed"] == 1
    assert out["kinds"]["read_profile"]["unanswered"] == 1
    assert out["by_hour"]["requests"][7] == out["by_hour"]["requests"][18] == 2
    assert out["by_hour"]["missed"][7] == out["by_hour"]["missed"][18] == 1
    assert out["by_hour"]["p95_seconds"][0] is None
    assert out["met_share"] == 0.5

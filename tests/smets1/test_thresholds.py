"""Thresholds of the CI gate: a count or a percentage, anything else refused by name."""

from __future__ import annotations

import pytest

from smets1.thresholds import Threshold, ThresholdKind, parse_threshold


@pytest.mark.parametrize(
    ("given", "kind", "value"),
    [
        (10, ThresholdKind.COUNT, 10),
        ("0", ThresholdKind.COUNT, 0),
        ("2.5%", ThresholdKind.PERCENT, 2.5),
        (" 100% ", ThresholdKind.PERCENT, 100),
    ],
)
def test_counts_and_percentages(given: object, kind: ThresholdKind, value: float) -> None:
    t = parse_threshold(given)
    assert (t.kind, t.value) == (kind, value)


@pytest.mark.parametrize("given", ["-1", -1, "x", "5x", "101%", "nan%", "-0.1%", 1.5, True, None])
def test_anything_else_is_refused_saying_what_was_expected(given: object) -> None:
    with pytest.raises(ValueError, match=r"expected|percentage must be"):
        parse_threshold(given)


def test_limit_of_a_percentage_is_a_share_of_the_total() -> None:
    assert Threshold(ThresholdKind.PERCENT, 10).limit(420) == 42
    assert Threshold(ThresholdKind.COUNT, 7).limit(420) == 7
    assert str(Threshold(ThresholdKind.PERCENT, 2.5)) == "2.5%"

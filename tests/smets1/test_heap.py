"""The collector settings a run uses are the run's alone: restored after it, even when
it raises, and young cyclic garbage is still collected within it."""

from __future__ import annotations

import gc
import weakref

import pytest

from smets1.heap import RUN_THRESHOLDS, built_to_last, collector_for_a_run


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_thresholds_and_freeze_hold_within_the_block_only() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collector_for_a_run():
        assert gc.get_threshold() == RUN_THRESHOLDS
        with built_to_last():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0
        raise RuntimeError("a run that fails")
    assert gc.get_threshold() == before


def test_cyclic_garbage_made_during_a_run_is_collected() -> None:
    with collector_for_a_run(), built_to_last():
        node = _Node()
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # a cycle: reference counting alone cannot free it
        gc.collect()
        assert gone() is None

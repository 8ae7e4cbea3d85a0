"""The process heap as a run uses it: the cyclic garbage collector set for a long run.

A run makes millions of short-lived objects (frames, timer handles, futures) and keeps a
large, slowly growing heap (devices, requests, notifications). With CPython's default
thresholds the collector walks that whole heap again and again: on a demo day of tiny
images (12,000 devices, every control frame, no bulk bytes) it took 2.5 of 12.7 CPU
seconds, in 13 full collections (BENCHMARKS.md). These helpers keep it to young garbage.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: The collector's thresholds while a run goes on (CPython's defaults: 700, 10, 10). A
#: young collection every 50,000 net allocations, a full one after 100 middle ones: a
#: cycle that outlives a full simulated day is still collected in a long run, later.
RUN_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def collector_for_a_run() -> Iterator[None]:
    """Within the block the collector runs at `RUN_THRESHOLDS`; after it, as it was."""
    before = gc.get_threshold()
    gc.set_threshold(*RUN_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextmanager
def built_to_last() -> Iterator[None]:
    """Within the block, every object made before it (the fleet's devices, their models,
    the images) is out of the collector's way (`gc.freeze`): a full collection walks only
    what the run has made since. After the block they are the collector's again
    (`gc.unfreeze`), so that a process that runs again can free them."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

"""The DCO resends what the device's bitmap lacks, in runs: exactly the missing blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dco_mock.service import missing_runs
from smets1.codes import DeviceState, Reason
from smets1.wire import NO_BLOCK, Status


@settings(max_examples=100, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=1, max_size=300), run_blocks=st.integers(1, 70))
def test_missing_runs_cover_exactly_the_missing_blocks(bits: list[bool], run_blocks: int) -> None:
    count = len(bits)
    bitmap = bytearray((count + 7) // 8)
    for i, held in enumerate(bits):
        if held:
            bitmap[i >> 3] |= 1 << (i & 7)
    first = bits.index(False) if False in bits else NO_BLOCK
    status = Status(
        1, 1, DeviceState.RECEIVING, Reason.NONE, sum(bits), first, count, bytes(bitmap)
    )
    runs = missing_runs(status, run_blocks)
    sent = [b for start, n in runs for b in range(start, start + n)]
    if sum(bits) == 0:
        assert sorted(sent) == list(range(count))
    else:
        assert sent == [i for i, held in enumerate(bits) if not held]
    assert all(1 <= n <= run_blocks for _, n in runs)

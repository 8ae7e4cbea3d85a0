"""Property tests of block reception: whatever the network does to the blocks, the slot
ends holding exactly the image's bytes, or the device says clearly why not."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dco_mock.service import missing_runs
from emulator.device import Esme
from emulator.slots import FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.wire import NO_BLOCK, Blocks, Initiate, Query, Status
from tests.factories import device_model, make_image

IMAGES = [make_image(n, seed=n) for n in (3_000, 4_321, 9_000)]
MODEL = device_model()

op = st.one_of(
    st.tuples(st.just("run"), st.integers(0, 200), st.integers(1, 12)),
    st.tuples(st.just("corrupt"), st.integers(0, 200), st.integers(1, 12), st.integers(0, 11)),
    st.tuples(st.just("lose"), st.integers(0, 200), st.integers(1, 12)),
    st.tuples(st.just("power")),
    st.tuples(st.just("reinitiate")),
)


def _bits(status: Status) -> list[int]:
    return [status.bitmap[i >> 3] >> (i & 7) & 1 for i in range(status.block_count)]


def _run(image: bytes, bs: int, tid: int, first: int, count: int, bad: int | None) -> Blocks:
    data = image[first * bs : (first + count) * bs]
    frame = Blocks.build(1, tid, first, data, bs)
    if bad is not None:
        mutable = bytearray(data)
        mutable[bad * bs] ^= 0x5A
        frame = Blocks(1, tid, first, frame.crcs, bytes(mutable))
    return frame


@settings(max_examples=60, deadline=None)
@given(
    which=st.integers(0, len(IMAGES) - 1),
    bs=st.sampled_from([64, 200, 256, 1024]),
    right_hash=st.booleans(),
    ops=st.lists(op, max_size=40),
)
def test_any_order_duplicates_losses_and_power_cuts_end_with_the_exact_image(
    which: int, bs: int, right_hash: bool, ops: list[tuple[Any, ...]]
) -> None:
    image = IMAGES[which]
    fw = parse_image(image).firmware_hash if right_hash else b"\xee" * 32
    n = -(-len(image) // bs)
    dev = Esme(1, MODEL, SlotImage(0x01000000), FlashStore())
    tid = 1
    assert dev.on_initiate(Initiate(1, tid, len(image), bs, fw)).reason is Reason.NONE
    for o in ops:
        if dev.state is not DeviceState.RECEIVING:
            break
        kind = o[0]
        if kind in ("run", "corrupt"):
            first = o[1] % n
            count = min(o[2], n - first)
            bad = o[3] % count if kind == "corrupt" else None
            before = dev.on_query(Query(1, tid)).received
            dev.on_blocks(_run(image, bs, tid, first, count, bad))
            if bad is not None and dev.rx is not None:
                assert dev.rx.corrupt_blocks >= 1
                assert dev.rx.received <= before + count - 1
        elif kind == "power":
            dev.power_off(0.0)
            dev.power_on(1.0)
            tid += 1  # a new session after the cut, as the DCO would start
            assert dev.on_initiate(Initiate(1, tid, len(image), bs, fw)).reason is Reason.NONE
        elif kind == "reinitiate":
            tid += 1
            kept = dev.rx.received if dev.rx is not None else None
            dev.on_initiate(Initiate(1, tid, len(image), bs, fw))
            if kept is not None and dev.rx is not None:
                assert dev.rx.received == kept  # resumed, never restarted from block 0
        # "lose": the run never arrives.
        if dev.rx is not None:
            status = dev.on_query(Query(1, tid))
            bits = _bits(status)
            assert status.received == sum(bits)
            expected_first = bits.index(0) if 0 in bits else NO_BLOCK
            assert status.first_missing == expected_first
            buf = dev.rx.buffer
            for b, held in enumerate(bits):
                if held:  # nothing corrupted was ever kept
                    assert buf[b * bs : (b + 1) * bs] == image[b * bs : (b + 1) * bs]
    # Then the DCO fills the gaps from the bitmap, as many rounds as it takes.
    for _ in range(n + 2):
        if dev.state is not DeviceState.RECEIVING:
            break
        status = dev.on_query(Query(1, tid))
        for first, count in missing_runs(status, 8):
            dev.on_blocks(_run(image, bs, tid, first, count, None))
    if right_hash:
        assert dev.state is DeviceState.VERIFIED and dev.reason is Reason.NONE
        assert dev.inactive is not None and dev.inactive.data == image
    else:
        assert (dev.state, dev.reason) == (DeviceState.VERIFY_FAILED, Reason.HASH_MISMATCH)
        assert dev.inactive is None
    assert dev.active.file_version == 0x01000000

"""Assembly buffers lent by the flash store: a reception that writes over an earlier
image's buffer ends with exactly the bytes it was sent, and fails exactly as a fresh
buffer would; with a flash journal nothing is lent."""

from __future__ import annotations

from emulator.device import Esme
from emulator.slots import SPARE_BUFFERS, FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.wire import Blocks, Initiate
from tests.factories import device_model, make_image

BS = 1024


def receive(dev: Esme, image: bytes, tid: int, skip: tuple[int, ...] = ()) -> None:
    h = parse_image(image).firmware_hash
    assert dev.on_initiate(Initiate(dev.device_id, tid, len(image), BS, h)).reason is Reason.NONE
    for b in range(-(-len(image) // BS)):
        if b not in skip:
            dev.on_blocks(Blocks.build(dev.device_id, tid, b, image[b * BS : (b + 1) * BS], BS))


def test_a_verified_reception_gives_its_buffer_back_and_the_next_writes_over_it() -> None:
    flash = FlashStore()
    first = make_image(20_000, seed=1)
    second = make_image(20_000, seed=2)
    assert len(first) == len(second) and first != second
    a = Esme(1, device_model(), SlotImage(0x01000000), flash)
    receive(a, first, 1)
    assert a.state is DeviceState.VERIFIED
    lent = flash.lend_buffer(len(first))
    assert bytes(lent) == first  # the buffer `a` assembled, not a new zeroed one
    flash.give_back(lent)

    b = Esme(2, device_model(), SlotImage(0x01000000), flash)
    receive(b, second, 1, skip=(7,))
    assert b.rx is not None and b.rx.buffer is lent  # written over, block 7 still `first`'s
    assert b.state is DeviceState.RECEIVING
    receive(b, second, 2)
    assert b.state is DeviceState.VERIFIED
    assert b.inactive is not None and b.inactive.data == second


def test_a_reception_over_a_dirty_buffer_still_fails_a_bad_image() -> None:
    flash = FlashStore()
    good = make_image(20_000, seed=1)
    a = Esme(1, device_model(), SlotImage(0x01000000), flash)
    receive(a, good, 1)
    # The same length, another body: the hash announced is the good image's.
    bad = bytearray(good)
    bad[-100] ^= 0xFF
    b = Esme(2, device_model(), SlotImage(0x01000000), flash)
    h = parse_image(good).firmware_hash
    b.on_initiate(Initiate(2, 1, len(bad), BS, h))
    for blk in range(-(-len(bad) // BS)):
        b.on_blocks(Blocks.build(2, 1, blk, bytes(bad[blk * BS : (blk + 1) * BS]), BS))
    assert b.state is DeviceState.VERIFY_FAILED


def test_spares_are_bounded_and_a_journal_lends_nothing() -> None:
    flash = FlashStore()
    for _ in range(SPARE_BUFFERS + 5):
        flash.give_back(bytearray(b"\x01" * 64))
    kept = [flash.lend_buffer(64) for _ in range(SPARE_BUFFERS + 1)]
    assert sum(1 for buf in kept if buf == b"\x01" * 64) == SPARE_BUFFERS
    assert kept[-1] == bytes(64)  # the store ran out: a new, zeroed buffer

    journalled = FlashStore()
    journalled.sink = lambda rx, first, n, view: None
    journalled.give_back(bytearray(b"\x01" * 64))
    assert journalled.lend_buffer(64) == bytes(64)

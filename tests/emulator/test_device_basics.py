"""The ESME's reception and activation, driven frame by frame (no bus, no clock)."""

from __future__ import annotations

import hashlib

from emulator.device import Esme
from emulator.slots import FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.signing import demo_private_key
from smets1.wire import NO_BLOCK, Activate, Blocks, Initiate, Query, ReadVersion, decode
from tests.factories import device_model, make_image

BS = 1024


def device(**kw: object) -> Esme:
    return Esme(1, device_model(**kw), SlotImage(0x01000000), FlashStore())


def send_all(dev: Esme, image: bytes, tid: int = 1, order: list[int] | None = None) -> None:
    n = -(-len(image) // BS)
    for b in order if order is not None else range(n):
        dev.on_blocks(Blocks.build(1, tid, b, image[b * BS : (b + 1) * BS], BS))


def initiate(dev: Esme, image: bytes, tid: int = 1, fw_hash: bytes | None = None) -> None:
    h = fw_hash or parse_image(image).firmware_hash
    st = dev.on_initiate(Initiate(1, tid, len(image), BS, h))
    assert st.reason is Reason.NONE


def test_blocks_in_any_order_assemble_the_exact_image() -> None:
    image = make_image(20_000)
    dev = device()
    initiate(dev, image)
    n = -(-len(image) // BS)
    order = [*range(n - 1, -1, -1), 0, 3, 3]  # reversed, then duplicates
    send_all(dev, image, order=order)
    assert dev.state is DeviceState.VERIFIED
    assert dev.inactive is not None and dev.inactive.data == image
    assert (
        dev.inactive.firmware_hash == hashlib.sha256(parse_image(image).manufacturer_image).digest()
    )


def test_missing_blocks_show_in_bitmap_and_resume_fills_them() -> None:
    image = make_image(20_000)
    dev = device()
    initiate(dev, image)
    n = -(-len(image) // BS)
    send_all(dev, image, order=[b for b in range(n) if b not in (2, 9)])
    st = dev.on_query(Query(1, 1))
    assert st.state is DeviceState.RECEIVING
    assert st.first_missing == 2 and st.received == n - 2
    assert not st.bitmap[0] >> 2 & 1 and not st.bitmap[1] >> 1 & 1
    # A new INITIATE for the same image resumes: the bitmap is kept, not reset.
    st = dev.on_initiate(Initiate(1, 2, len(image), BS, parse_image(image).firmware_hash))
    assert st.received == n - 2
    send_all(dev, image, tid=2, order=[2, 9])
    assert dev.on_query(Query(1, 2)).first_missing == NO_BLOCK
    assert dev.state is DeviceState.VERIFIED


def test_corrupted_block_is_rejected_and_counted() -> None:
    image = make_image(4000)
    dev = device()
    initiate(dev, image)
    good = Blocks.build(1, 1, 0, image[:BS], BS)
    bad = Blocks(1, 1, 0, good.crcs, b"\xff" + image[1:BS])
    dev.on_blocks(bad)
    assert dev.rx is not None and dev.rx.corrupt_blocks == 1 and dev.rx.received == 0


def test_activation_reboots_into_new_slot_and_version_reads_new() -> None:
    image = make_image(8000)
    fw = parse_image(image).firmware_hash
    dev = device()
    initiate(dev, image)
    send_all(dev, image)
    assert dev.on_read_version(ReadVersion(1, 0)).pending_version == 0x02000000
    reply, wake = dev.on_activate(Activate(1, 1, 0.0, fw), now=100.0)
    assert reply.state is DeviceState.ACTIVATING and wake == 130.0
    reply2, again = dev.on_timer(130.0)
    assert reply2 is not None and reply2.state is DeviceState.ACTIVE and again is None
    assert reply2.running_version == 0x02000000
    v = dev.on_read_version(ReadVersion(1, 0))
    assert v.running_version == 0x02000000 and dev.inactive is not None
    assert dev.inactive.file_version == 0x01000000  # the old image stays in the other slot


def test_wrong_firmware_hash_is_refused_and_device_keeps_running() -> None:
    image = make_image(8000)
    dev = device()
    initiate(dev, image)
    send_all(dev, image)
    reply, wake = dev.on_activate(Activate(1, 1, 0.0, b"\x00" * 32), now=0.0)
    assert reply.reason is Reason.HASH_MISMATCH and wake is None
    assert dev.active.file_version == 0x01000000


def test_hash_named_at_initiate_must_match_what_arrived() -> None:
    image = make_image(8000)
    dev = device()
    initiate(dev, image, fw_hash=b"\x01" * 32)
    send_all(dev, image)
    assert dev.state is DeviceState.VERIFY_FAILED and dev.reason is Reason.HASH_MISMATCH


def test_model_checks() -> None:
    cases = [
        (make_image(4000, manufacturer=0x9999), Reason.WRONG_MANUFACTURER, {}),
        (make_image(4000, image_type=7), Reason.WRONG_IMAGE_TYPE, {}),
        (make_image(4000, hw=(4, 9)), Reason.HARDWARE_MISMATCH, {}),
        (make_image(4000), Reason.BAD_SIGNATURE, {"public_key": demo_private_key(1).public_key()}),
    ]
    for image, reason, kw in cases:
        dev = device(**kw)
        initiate(dev, image)
        send_all(dev, image)
        assert (dev.state, dev.reason) == (DeviceState.VERIFY_FAILED, reason)


def test_image_larger_than_slot_is_refused_at_initiate() -> None:
    image = make_image(8000)
    dev = device(slot_capacity_bytes=4096)
    st = dev.on_initiate(Initiate(1, 1, len(image), BS, parse_image(image).firmware_hash))
    assert st.reason is Reason.TOO_LARGE_FOR_SLOT


def test_flash_store_shares_one_copy_between_devices() -> None:
    image = make_image(8000)
    flash = FlashStore()
    devs = [Esme(i, device_model(), SlotImage(1), flash) for i in range(3)]
    for d in devs:
        d.on_initiate(Initiate(d.device_id, 1, len(image), BS, parse_image(image).firmware_hash))
        n = -(-len(image) // BS)
        for b in range(n):
            d.on_blocks(Blocks.build(d.device_id, 1, b, image[b * BS : (b + 1) * BS], BS))
    assert len(flash) == 1
    assert devs[0].inactive is not None and devs[1].inactive is not None
    assert devs[0].inactive.data is devs[1].inactive.data


def test_run_crc_mismatch_falls_back_to_per_block_checks() -> None:
    image = make_image(8000)
    dev = device()
    initiate(dev, image)
    sent = Blocks.build(1, 1, 0, image[: 4 * BS], BS)
    damaged = bytearray(sent.data)
    damaged[2 * BS + 5] ^= 0x01  # block 2 damaged in transit; the run CRC no longer holds
    frame = decode(Blocks(1, 1, 0, sent.crcs, bytes(damaged), sent.run_crc).serialize())
    assert isinstance(frame, Blocks) and frame.run_crc == sent.run_crc
    dev.on_blocks(frame)
    assert dev.rx is not None
    assert dev.rx.corrupt_blocks == 1 and dev.rx.received == 3
    assert bytes(dev.rx.have[:4]) == b"\x01\x01\x00\x01"
    assert dev.rx.buffer[: 2 * BS] == image[: 2 * BS]

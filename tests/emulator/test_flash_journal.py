"""A shard's flash on disk (emulator.flash_journal): every state round trips, a partial
transfer resumes from its bitmap, a pending activation survives, a torn last frame leaves
the state of the commit before, block bytes are stored once, and a reply is never sent
before the flash that backs it is written."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import Any

import pytest

from emulator import flash_journal
from emulator.device import Esme
from emulator.errors import FlashStateError
from emulator.flash_journal import JOURNAL_NAME, FlashJournal, read_journal
from emulator.fleet import FleetHost
from emulator.slots import FlashStore, SlotImage
from smets1.bus import InProcessBus, down_topic, up_topic
from smets1.clock import VirtualClock
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.wire import (
    CANCEL_AFTER_SECONDS,
    IMMEDIATE,
    Activate,
    Activation,
    Blocks,
    Initiate,
    Query,
    Status,
    decode,
)
from tests.factories import device_model, make_image

S = DeviceState
BS = 1024
IMAGE = make_image(20_000)
FW = parse_image(IMAGE).firmware_hash
N = -(-len(IMAGE) // BS)
REBOOT = 30.0
FACTORY = 0x01000000


def fleet(n: int) -> tuple[dict[int, Esme], FlashStore]:
    flash = FlashStore()
    model = device_model(reboot_seconds=REBOOT)
    factory = SlotImage(FACTORY)
    return {i: Esme(i, model, factory, flash) for i in range(1, n + 1)}, flash


def open_journal(path: Path, n: int, **kw: Any) -> tuple[FlashJournal, dict[int, Esme]]:
    devices, flash = fleet(n)
    return FlashJournal.open(path, devices, flash, fleet=kw.pop("name", "t"), **kw), devices


def initiate(dev: Esme, tid: int = 1, fw: bytes = FW, image: bytes = IMAGE) -> Status:
    return dev.on_initiate(Initiate(dev.device_id, tid, len(image), BS, fw))


def blocks(dev: Esme, which: range | list[int], tid: int = 1, image: bytes = IMAGE) -> None:
    for b in which:
        dev.on_blocks(Blocks.build(dev.device_id, tid, b, image[b * BS : (b + 1) * BS], BS))


def flash_of(dev: Esme) -> tuple[Any, ...]:
    """Everything a device keeps in flash, held bytes included."""
    rx = dev.rx
    rx_view = None
    if rx is not None:
        held = b"".join(
            bytes(rx.buffer[b * BS : (b + 1) * BS]) for b in range(rx.block_count) if rx.have[b]
        )
        rx_view = (
            rx.transfer_id,
            rx.image_size,
            rx.block_size,
            rx.firmware_hash,
            bytes(rx.have),
            rx.received,
            held,
        )
    slots = [
        None if s is None else (s.file_version, s.firmware_hash, s.data)
        for s in (dev.active, dev.inactive)
    ]
    return (
        dev.state,
        dev.reason,
        dev.transfer_id,
        dev.activate_at,
        dev.activations,
        *slots,
        rx_view,
    )


def every_state(devices: dict[int, Esme]) -> None:
    """Drive one device into each state, by frames where the state lasts."""
    d = iter(devices.values())
    next(d)  # idle
    dev = next(d)  # receiving, half the blocks and then some
    initiate(dev)
    blocks(dev, [*range(0, N, 2), 5])
    for forced in (S.RECEIVED, S.VERIFYING):  # transient in the host; still round trip
        dev = next(d)
        initiate(dev)
        blocks(dev, range(3))
        dev.state = forced
    dev = next(d)
    initiate(dev)
    blocks(dev, range(N))
    assert dev.state is S.VERIFIED
    scheduled = next(d)
    initiate(scheduled)
    blocks(scheduled, range(N))
    scheduled.on_activate(Activate(scheduled.device_id, 2, 5_000.0, FW), now=1_000.0)
    assert scheduled.state is S.ACTIVATION_SCHEDULED
    dev = next(d)
    initiate(dev)
    blocks(dev, range(N))
    dev.on_activate(Activate(dev.device_id, 2, IMMEDIATE, FW), now=1_000.0)
    assert dev.state is S.ACTIVATING
    for boot_ok, state in ((True, S.ACTIVE), (False, S.ACTIVATION_FAILED)):
        dev = next(d)
        initiate(dev)
        blocks(dev, range(N))
        dev.on_activate(Activate(dev.device_id, 2, IMMEDIATE, FW), now=1_000.0)
        dev.on_timer(1_000.0 + REBOOT, boot_ok=boot_ok)
        assert dev.state is state
    dev = next(d)
    initiate(dev, fw=bytes(32))  # the hash the 11.3 names is not the image's
    blocks(dev, range(N))
    assert (dev.state, dev.reason) == (S.VERIFY_FAILED, Reason.HASH_MISMATCH)
    dev = next(d)
    initiate(dev)
    blocks(dev, range(N))
    dev.on_activate(Activate(dev.device_id, 2, 5_000.0, FW), now=1_000.0)
    dev.on_activate(Activate(dev.device_id, 3, 2_000.0 + CANCEL_AFTER_SECONDS, FW), now=2_000.0)
    assert dev.state is S.CANCELLED


def test_every_state_round_trips_through_the_journal(tmp_path: Path) -> None:
    journal, devices = open_journal(tmp_path, 11)
    every_state(devices)
    assert {d.state for d in devices.values()} == set(DeviceState)
    for dev in devices.values():
        journal.touch(dev)
    journal.commit()
    journal.close()
    again, reloaded = open_journal(tmp_path, 11)
    try:
        for device_id, dev in devices.items():
            assert flash_of(reloaded[device_id]) == flash_of(dev), dev.state.name
        # Slots holding the same image share one copy, as FlashStore has them.
        active = next(d for d in reloaded.values() if d.state is S.ACTIVE)
        verified = next(d for d in reloaded.values() if d.state is S.VERIFIED)
        assert active.active.data is verified.inactive.data  # type: ignore[union-attr]
        assert again.loaded_devices == 10  # the idle one needs no record
    finally:
        again.close()


def test_partial_transfer_resumes_from_the_persisted_bitmap(tmp_path: Path) -> None:
    journal, devices = open_journal(tmp_path, 2)
    first, second = devices[1], devices[2]
    initiate(first)
    blocks(first, range(N))  # the pool now holds every block
    initiate(second)
    held = [b for b in range(N) if b % 3]
    blocks(second, held)
    before = second.on_query(Query(2, 1))
    journal.touch(first)
    journal.touch(second)
    journal.commit()
    journal.close()

    again, reloaded = open_journal(tmp_path, 2)
    try:
        dev = reloaded[2]
        after = dev.on_query(Query(2, 1))
        assert (after.state, after.received, after.first_missing, after.bitmap) == (
            S.RECEIVING,
            len(held),
            0,
            before.bitmap,
        )
        # The DCO resumes: only the missing blocks are sent, and the image verifies.
        assert initiate(dev, tid=2).received == len(held)
        blocks(dev, [b for b in range(N) if not b % 3], tid=2)
        assert dev.state is S.VERIFIED
        assert dev.inactive is not None and dev.inactive.data == IMAGE
    finally:
        again.close()


def test_block_bytes_are_stored_once_and_a_diverging_device_keeps_its_own(
    tmp_path: Path,
) -> None:
    journal, devices = open_journal(tmp_path, 12)
    for dev in list(devices.values())[:10]:
        initiate(dev)
        blocks(dev, range(N - 1))
        journal.touch(dev)
    # Device 11 receives other bytes under the same FirmwareHash (a wrong image): they
    # must come back as it received them, not as the pool holds them.
    other = make_image(20_000, seed=99)
    odd = devices[11]
    initiate(odd)
    blocks(odd, range(N - 1), image=other)
    journal.touch(odd)
    journal.commit()
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    # One copy of the blocks for the ten devices, one for the odd one, and records.
    assert 2 * len(IMAGE) < size < 2 * len(IMAGE) + 4096
    journal.close()
    again, reloaded = open_journal(tmp_path, 12)
    try:
        for device_id in range(1, 12):
            assert flash_of(reloaded[device_id]) == flash_of(devices[device_id])
        blocks(reloaded[11], [N - 1], image=other)
        assert reloaded[11].reason is Reason.HASH_MISMATCH
    finally:
        again.close()


def test_pending_activation_survives_and_runs_when_due(tmp_path: Path) -> None:
    journal, devices = open_journal(tmp_path, 1)
    dev = devices[1]
    initiate(dev)
    blocks(dev, range(N))
    dev.on_activate(Activate(1, 2, 5_000.0, FW), now=1_000.0)
    journal.touch(dev)
    journal.commit()
    journal.close()
    again, reloaded = open_journal(tmp_path, 1)
    try:
        dev = reloaded[1]
        assert (dev.state, dev.activate_at, dev.transfer_id) == (S.ACTIVATION_SCHEDULED, 5_000.0, 2)
        assert dev.on_timer(4_000.0) == (None, None)  # not yet
        reply, wake = dev.on_timer(5_000.0)
        assert reply is not None and reply.state is S.ACTIVATING and wake == 5_000.0 + REBOOT
        reply, _ = dev.on_timer(5_000.0 + REBOOT)
        assert reply is not None and reply.state is S.ACTIVE
        assert reply.running_version == parse_image(IMAGE).header.file_version
    finally:
        again.close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "header-only"])
def test_torn_last_frame_leaves_the_state_of_the_commit_before(tmp_path: Path, damage: str) -> None:
    journal, devices = open_journal(tmp_path, 2)
    dev = devices[1]
    initiate(dev)
    blocks(dev, range(5))
    journal.touch(dev)
    journal.commit()
    committed = flash_of(dev)
    good_size = (tmp_path / JOURNAL_NAME).stat().st_size
    blocks(dev, range(5, N))  # verified now
    initiate(devices[2])
    journal.touch(dev)
    journal.touch(devices[2])
    journal.commit()
    journal.close()
    path = tmp_path / JOURNAL_NAME
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) - 7 :]
    elif damage == "flip":
        data[-3] ^= 0x40
    else:
        del data[good_size + 5 :]
    path.write_bytes(bytes(data))

    again, reloaded = open_journal(tmp_path, 2)
    try:
        assert flash_of(reloaded[1]) == committed
        assert reloaded[2].state is S.IDLE
        assert path.stat().st_size == good_size  # the torn tail is cut off
        # And the journal goes on from there.
        blocks(reloaded[1], range(5, N))
        again.touch(reloaded[1])
        again.commit()
    finally:
        again.close()
    final, devices3 = open_journal(tmp_path, 2)
    final.close()
    assert devices3[1].state is S.VERIFIED


def test_compaction_keeps_the_live_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, devices = open_journal(tmp_path, 4)
    every = list(devices.values())
    for dev in every[:3]:
        initiate(dev)
        blocks(dev, range(0, N, 2))
        journal.touch(dev)
    blocks(every[2], [1], image=make_image(20_000, seed=5))  # one block of its own
    journal.commit()
    grown = (tmp_path / JOURNAL_NAME).stat().st_size
    # From now on every commit compacts (as a long run's journal does past 64 MiB).
    monkeypatch.setattr(flash_journal, "COMPACT_MIN_BYTES", 0)
    monkeypatch.setattr(flash_journal, "COMPACT_GROWTH", 1)
    blocks(every[0], range(1, N, 2))  # verified: its pool is still live for the others
    journal.touch(every[0])
    journal.commit()
    expected = [flash_of(d) for d in every]
    journal.close()
    # The pool's blocks are written once, not once per commit that came before.
    assert (tmp_path / JOURNAL_NAME).stat().st_size < grown + 2 * len(IMAGE)
    again, reloaded = open_journal(tmp_path, 4)
    try:
        assert [flash_of(d) for d in reloaded.values()] == expected
        assert (
            reloaded[3].rx is not None and reloaded[3].rx.buffer[BS : 2 * BS] != IMAGE[BS : 2 * BS]
        )
    finally:
        again.close()


def test_a_state_dir_of_another_fleet_or_shard_is_refused(tmp_path: Path) -> None:
    journal, _ = open_journal(tmp_path, 3)
    with pytest.raises(FlashStateError, match="in use by another process"):
        open_journal(tmp_path, 3)
    journal.close()
    with pytest.raises(FlashStateError, match=r"written for fleet 't' shard 0/1 \(3 devices\)"):
        open_journal(tmp_path, 4)
    with pytest.raises(FlashStateError, match=r"not fleet 't' shard 1/2"):
        open_journal(tmp_path, 3, shard=1, shards=2)
    with pytest.raises(FlashStateError, match="not fleet 'other'"):
        open_journal(tmp_path, 3, name="other")
    (tmp_path / JOURNAL_NAME).write_bytes(b"this is not a journal at all")
    with pytest.raises(FlashStateError, match="not a flash journal"):
        open_journal(tmp_path, 3)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(FlashStateError, match=f"fleet state dir {a_file}: "):
        open_journal(a_file, 3)


def test_a_reply_is_sent_only_once_its_flash_is_written(tmp_path: Path) -> None:
    """Every answer the DCO hears is backed by the journal on disk at that instant."""
    clock = VirtualClock()
    devices, flash = fleet(2)
    journal = FlashJournal.open(tmp_path, devices, flash, fleet="t")
    path = tmp_path / JOURNAL_NAME
    checked: list[str] = []

    def on_uplink(topic: str, payload: bytes) -> None:
        frame = decode(payload)
        on_disk = read_journal(path.read_bytes(), str(path)).devices[frame.device_id]
        head, rx_head, bitmap = on_disk
        state = DeviceState(head[1])
        if isinstance(frame, Status) and frame.state is S.RECEIVING:
            assert rx_head is not None and state is S.RECEIVING
            have = zlib.decompress(bitmap)  # every block told as held is held on disk
            told = [i for i in range(N) if frame.bitmap[i >> 3] >> (i & 7) & 1]
            assert len(told) == frame.received and all(have[i] for i in told)
        elif isinstance(frame, Status):
            assert state is frame.state
        elif isinstance(frame, Activation):
            assert state is frame.state, (state, frame.state)
            assert head[7] == frame.running_version  # active slot version
        checked.append(type(frame).__name__ + ":" + frame.state.name)

    async def main() -> None:
        bus = InProcessBus()
        host = FleetHost(clock, bus, "t", devices, journal=journal)
        host.start()
        bus.subscribe(up_topic("t", 0), on_uplink)
        down = down_topic("t", 0)
        bus.publish(down, Initiate(1, 1, len(IMAGE), BS, FW).serialize())
        await clock.sleep(5)
        for part in (range(0, 8, 4), range(8, N, 4)):
            for b in part:
                run = IMAGE[b * BS : (b + 4) * BS]
                bus.publish(down, Blocks.build(1, 1, b, run, BS).serialize())
            bus.publish(down, Query(1, 1).serialize())
            await clock.sleep(30)
        bus.publish(down, Activate(1, 1, IMMEDIATE, FW).serialize())
        await clock.sleep(REBOOT + 10)
        await bus.close()

    clock.run(main())
    journal.close()
    assert checked == [
        "Status:RECEIVING",
        "Status:RECEIVING",
        "Status:VERIFIED",
        "Activation:ACTIVATING",
        "Activation:ACTIVE",
    ]


def test_a_restarted_host_finishes_an_activation_its_flash_holds(tmp_path: Path) -> None:
    """A shard killed while a device rebooted: the restarted host reboots it again and
    the device answers ACTIVE on the transfer it was activating."""
    journal, devices = open_journal(tmp_path, 1)
    dev = devices[1]
    initiate(dev, tid=9)
    blocks(dev, range(N), tid=9)
    dev.on_activate(Activate(1, 9, IMMEDIATE, FW), now=100.0)
    journal.touch(dev)
    journal.commit()
    journal.close()  # killed: nothing more is written

    clock = VirtualClock()
    again, reloaded = open_journal(tmp_path, 1)
    heard: list[Activation] = []

    async def main() -> None:
        bus = InProcessBus()
        bus.subscribe(up_topic("t", 0), lambda t, p: heard.append(decode(p)))  # type: ignore[arg-type]
        FleetHost(clock, bus, "t", reloaded, journal=again).start()
        await clock.sleep(REBOOT + 5)
        await asyncio.sleep(0)
        await bus.close()

    clock.run(main())
    again.close()
    assert [(a.transfer_id, a.state, a.running_version) for a in heard] == [
        (9, S.ACTIVE, parse_image(IMAGE).header.file_version)
    ]
    final, after = open_journal(tmp_path, 1)
    final.close()
    assert after[1].state is S.ACTIVE and after[1].activations == 1


def test_a_failed_write_leaves_everything_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, devices = open_journal(tmp_path, 2)
    dev = devices[1]
    initiate(dev)
    blocks(dev, range(N))  # verified: the image record goes with this commit
    journal.touch(dev)
    real_write = flash_journal.os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flash_journal.os, "write", full_disk)
    with pytest.raises(OSError):
        journal.commit([dev])
    monkeypatch.setattr(flash_journal.os, "write", real_write)
    assert journal.changed(dev)
    journal.commit([dev])
    journal.close()
    again, reloaded = open_journal(tmp_path, 2)
    again.close()
    assert flash_of(reloaded[1]) == flash_of(dev)

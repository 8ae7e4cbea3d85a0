"""Whole 11.3s through a real DCO, fleet host and bus: every failure path, and recovery.

Each test asserts what the DCO hands back (state and reason) and what the device holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dco_mock.service import Dco, Recovery
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.services import ActivationOutcome
from smets1.wire import CANCEL_AFTER_SECONDS, IMMEDIATE, Blocks, decode
from tests.dco_mock.harness import BLOCK_BYTES, FIRST, Harness, TamperingBus, fleet_config, run
from tests.factories import make_image

S = DeviceState
IMAGE = make_image(8_000)  # 8,115 bytes: 32 blocks of 256
FW = parse_image(IMAGE).firmware_hash
BLOCKS = -(-len(IMAGE) // 256)
NEW_VERSION = 0x02000000
OLD_VERSION = 0x01000000


def activate_one(
    faults: dict[str, Any] | None = None,
    image: bytes = IMAGE,
    execution_time: float = IMMEDIATE,
    recovery: Recovery | None = None,
    **model: Any,
) -> tuple[ActivationOutcome, Harness]:
    group: dict[str, Any] = {"count": 1}
    if faults is not None:
        group["faults"] = faults
    cfg = fleet_config([group], **model)

    async def body(h: Harness) -> tuple[ActivationOutcome, Harness]:
        stored = await h.dco.update_firmware(image)
        at = execution_time if execution_time == IMMEDIATE else h.clock.now() + execution_time
        return await h.dco.activate_firmware(FIRST, stored.firmware_hash, at), h

    return run(cfg, body) if recovery is None else run(cfg, body, recovery)


def test_clean_transfer_sends_each_block_once_and_activates() -> None:
    out, h = activate_one()
    assert (out.ok, out.state, out.reason) == (True, S.ACTIVE, Reason.NONE)
    assert out.running_version == NEW_VERSION
    assert out.blocks_sent == BLOCKS
    # 8 KiB over 2 kbit/s is about half a minute of link time, not zero.
    assert out.finished_at - out.started_at > len(IMAGE) * 8 / 2_000
    assert h.host.devices[FIRST].state is S.ACTIVE


def test_named_link_profile_sets_the_transfer_time() -> None:
    slow, _ = activate_one(link="gprs-poor")
    fast, _ = activate_one(link="umts")
    assert slow.ok and fast.ok
    reboot = 30.0
    assert slow.blocks_sent == fast.blocks_sent == BLOCKS  # jitter keeps frames in order
    slow_s = slow.finished_at - slow.started_at - reboot
    fast_s = fast.finished_at - fast.started_at - reboot
    assert slow_s > len(IMAGE) * 8 / 8_000
    assert slow_s > 5 * fast_s


def test_lost_and_corrupted_blocks_are_sent_again_from_the_bitmap() -> None:
    out, h = activate_one({"block_loss_rate": 0.2, "block_corruption_rate": 0.1})
    assert out.ok and out.state is S.ACTIVE
    faults = h.host.counters.faults
    assert faults["blocks_lost"] > 0 and faults["blocks_corrupted"] > 0
    assert out.rounds > 1
    # Only what was missing went again: far less than a whole second copy per round.
    assert out.blocks_sent < BLOCKS + faults["blocks_lost"] + faults["blocks_corrupted"] + 1


def test_every_block_lost_fails_incomplete() -> None:
    out, h = activate_one({"block_loss_rate": 1.0})
    assert (out.ok, out.state, out.reason) == (False, S.RECEIVING, Reason.INCOMPLETE)
    assert h.host.devices[FIRST].active.file_version == OLD_VERSION


def test_power_cut_mid_transfer_resumes_from_the_bitmap() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, int]:
        stored = await h.dco.update_firmware(IMAGE)
        task = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash))
        await h.clock.sleep(20)  # part-way through the first round
        h.host.power_cut(FIRST, 900)
        rx = h.host.devices[FIRST].rx
        held = 0 if rx is None else rx.received
        return await task, held

    out, held = run(cfg, body)
    assert 0 < held < BLOCKS
    assert out.ok and out.state is S.ACTIVE
    # The first round sent every block; the resumed one only those the bitmap lacked.
    assert out.blocks_sent == BLOCKS + (BLOCKS - held)
    assert out.finished_at - out.started_at > 900


def test_random_power_cuts_during_transfers_cost_less_than_a_restart() -> None:
    cfg = fleet_config([{"count": 10, "faults": {"power_loss_during_transfer": 1.0}}])

    async def body(h: Harness) -> tuple[list[ActivationOutcome], Harness]:
        stored = await h.dco.update_firmware(IMAGE)
        outs = await asyncio.gather(
            *(h.dco.activate_firmware(d, stored.firmware_hash) for d in h.host.devices)
        )
        return list(outs), h

    outs, h = run(cfg, body)
    assert all(o.ok for o in outs)
    assert h.host.counters.faults["power_losses"] == 10
    assert h.dco.counters.resumes >= 5
    assert sum(o.blocks_sent for o in outs) < 2 * BLOCKS * 10


def test_hung_link_is_resumed_after_the_silence() -> None:
    out, h = activate_one({"hang_probability": 0.2, "hang_seconds": 1200})
    assert out.ok and out.state is S.ACTIVE
    assert h.host.counters.faults["hangs"] >= 1
    assert h.host.counters.frames_dropped["hang"] >= 1


def test_offline_window_is_crossed_by_retrying_with_backoff() -> None:
    window = {"start_seconds": 0, "duration_seconds": 7_200}
    out, h = activate_one({"offline_windows": [window]})
    assert out.ok and out.state is S.ACTIVE
    assert h.dco.counters.retries >= 2
    assert out.finished_at - out.started_at >= 7_200


def test_device_online_two_hours_a_night_is_reached_in_its_window() -> None:
    window = {"start_seconds": 7_200, "duration_seconds": 7_200, "every_seconds": 86_400}
    out, h = activate_one({"online_windows": [window]})
    assert out.ok and out.state is S.ACTIVE
    done = out.finished_at - h.clock.epoch
    assert 7_200 <= done <= 14_400 + 600


def test_device_never_reachable_fails_offline_at_the_give_up_time() -> None:
    window = {"start_seconds": 0, "duration_seconds": 10 * 86_400}
    out, _ = activate_one({"offline_windows": [window]})
    assert (out.ok, out.reason) == (False, Reason.OFFLINE)
    assert 86_400 - 600 <= out.finished_at - out.started_at <= 86_400 + 600


def test_a_silent_device_does_not_hold_the_dcos_transfer_slot() -> None:
    offline = {"offline_windows": [{"start_seconds": 0, "duration_seconds": 43_200}]}
    cfg = fleet_config(
        [{"count": 1, "faults": offline}, {"count": 1}], dco={"max_concurrent_transfers": 1}
    )

    async def body(h: Harness) -> list[ActivationOutcome]:
        stored = await h.dco.update_firmware(IMAGE)
        first = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash))
        await h.clock.sleep(1)
        second = await h.dco.activate_firmware(FIRST + 1, stored.firmware_hash)
        return [await first, second]

    silent, reachable = run(cfg, body)
    # Served while the other waits out its silence, not after it.
    assert reachable.ok and reachable.finished_at - cfg.epoch_seconds < 3_600
    assert silent.ok and silent.finished_at - silent.started_at >= 43_200


def test_refusal_reaches_the_dco_with_its_reason() -> None:
    out, _ = activate_one({"refusal_rate": 1.0})
    assert (out.ok, out.state, out.reason) == (False, S.IDLE, Reason.REFUSED)
    assert out.blocks_sent == 0


def test_failed_boot_rolls_back_and_reports_boot_failed() -> None:
    out, h = activate_one({"boot_failure_rate": 1.0})
    assert (out.ok, out.state, out.reason) == (False, S.ACTIVATION_FAILED, Reason.BOOT_FAILED)
    dev = h.host.devices[FIRST]
    assert out.running_version == OLD_VERSION == dev.active.file_version


def test_power_cut_during_activation_still_ends_active() -> None:
    out, h = activate_one({"power_loss_during_activation": 1.0, "power_off_seconds": 300})
    assert out.ok and out.state is S.ACTIVE and out.running_version == NEW_VERSION
    assert h.host.counters.faults["power_losses"] == 1


def test_image_for_other_hardware_fails_verification() -> None:
    out, h = activate_one(hardware_version=9)
    assert (out.ok, out.state, out.reason) == (False, S.VERIFY_FAILED, Reason.HARDWARE_MISMATCH)
    assert h.host.devices[FIRST].active.file_version == OLD_VERSION


def test_image_larger_than_the_slot_is_refused_before_any_block() -> None:
    out, _ = activate_one(slot_capacity_bytes=4_096)
    assert (out.ok, out.reason) == (False, Reason.TOO_LARGE_FOR_SLOT)
    assert out.blocks_sent == 0


def test_bytes_that_do_not_hash_to_the_firmware_hash_fail_verification() -> None:
    # Something between the DCO and the meter changes one byte of the body and makes
    # the block's CRCs fit again: every block passes its check, the image parses, and
    # only the SHA-256 the 11.3 names can tell. The DCO hands back the device's reason.
    cfg = fleet_config([{"count": 1}])

    def tamper(payload: bytes) -> bytes:
        frame = decode(payload)
        if not isinstance(frame, Blocks) or frame.first_block != 0:
            return payload
        data = bytearray(frame.data)
        data[len(data) - 1] ^= 0xFF  # the body, past the header: the image still parses
        return Blocks.build(
            frame.device_id, frame.transfer_id, 0, bytes(data), BLOCK_BYTES
        ).serialize()

    async def body(h: Harness) -> ActivationOutcome:
        stored = await h.dco.update_firmware(IMAGE)
        return await h.dco.activate_firmware(FIRST, stored.firmware_hash)

    out = run(cfg, body, bus=TamperingBus(tamper))
    assert (out.ok, out.state, out.reason) == (False, S.VERIFY_FAILED, Reason.HASH_MISMATCH)


def test_scheduled_activation_waits_for_its_time_and_version_reads_pending() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, Any, float]:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 3 * 3_600
        task = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash, at))
        await h.clock.sleep(3_600)
        reading = await h.dco.read_firmware_version(FIRST)
        return await task, reading, at

    out, reading, at = run(cfg, body)
    assert reading.state is S.ACTIVATION_SCHEDULED
    assert (reading.running_version, reading.pending_version) == (OLD_VERSION, NEW_VERSION)
    assert out.ok and out.state is S.ACTIVE
    assert out.finished_at >= at + 30  # the time it named, then the model's reboot


def test_far_future_date_cancels_a_scheduled_activation() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome, Any]:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 86_400
        task = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash, at))
        await h.clock.sleep(3_600)
        cancel = await h.dco.activate_firmware(
            FIRST, stored.firmware_hash, h.clock.now() + CANCEL_AFTER_SECONDS + 1
        )
        scheduled = await task
        reading = await h.dco.read_firmware_version(FIRST)
        return cancel, scheduled, reading

    cancel, scheduled, reading = run(cfg, body)
    assert (cancel.ok, cancel.state, cancel.blocks_sent) == (True, S.CANCELLED, 0)
    assert (scheduled.ok, scheduled.state, scheduled.reason) == (
        False,
        S.CANCELLED,
        Reason.CANCELLED,
    )
    assert reading.running_version == OLD_VERSION and reading.pending_version is None


def test_restarted_dco_resumes_the_transfer_instead_of_starting_over() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, int]:
        stored = await h.dco.update_firmware(IMAGE)
        first = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash))
        await h.clock.sleep(20)  # part-way through the blocks
        # The DCO dies, and the site's power with it: the frames in flight are lost.
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        h.host.power_cut(FIRST, 60)
        rx = h.host.devices[FIRST].rx
        held = 0 if rx is None else rx.received
        await h.clock.sleep(120)
        second = Dco(h.clock, h.bus, cfg.name, 1, cfg.dco, block_size=cfg.block_size_bytes)
        second.start()
        await second.update_firmware(IMAGE)
        out = await second.activate_firmware(FIRST, stored.firmware_hash)
        await second.close()
        return out, held

    out, held = run(cfg, body)
    assert 0 < held < BLOCKS
    assert out.ok and out.state is S.ACTIVE
    assert out.blocks_sent == BLOCKS - held


def test_restarted_dco_counts_its_images_without_loading_them(tmp_path: Path) -> None:
    cfg = fleet_config([{"count": 1}])
    images = [make_image(8_000, seed=s, version=0x02000000 + s) for s in (21, 22, 23)]

    async def body(h: Harness) -> tuple[int, int]:
        first = Dco(h.clock, h.bus, cfg.name, 1, cfg.dco, tmp_path, cfg.block_size_bytes)
        for image in images[:2]:
            await first.update_firmware(image)
        await first.close()
        second = Dco(h.clock, h.bus, cfg.name, 1, cfg.dco, tmp_path, cfg.block_size_bytes)
        await second.update_firmware(images[2])
        loaded = second.store.loaded
        await second.close()
        return second.counters.images_stored, loaded

    stored, loaded = run(cfg, body)
    # All three counted; only the new one was assembled in memory (11.3s load the rest).
    assert (stored, loaded) == (3, 1)


def test_repeated_11_3_after_success_answers_active_without_a_second_activation() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome, int, Harness]:
        stored = await h.dco.update_firmware(IMAGE)
        one = await h.dco.activate_firmware(FIRST, stored.firmware_hash)
        n = h.host.transitions().total()
        two = await h.dco.activate_firmware(FIRST, stored.firmware_hash)
        return one, two, h.host.transitions().total() - n, h

    one, two, extra, h = run(cfg, body)
    assert one.ok and one.blocks_sent == BLOCKS
    assert (two.ok, two.state, two.reason, two.running_version) == (
        True,
        S.ACTIVE,
        Reason.NONE,
        NEW_VERSION,
    )
    # The meter already runs it: no block sent again, no round, no reboot, no transition.
    assert (two.blocks_sent, two.bytes_sent, two.rounds) == (0, 0, 0)
    assert extra == 0
    assert two.finished_at - two.started_at < 30  # the model's reboot takes 30 s
    dev = h.host.devices[FIRST]
    assert dev.state is S.ACTIVE and dev.inactive is not None
    assert dev.inactive.file_version == OLD_VERSION  # the previous image, still kept


def test_a_cancelled_image_may_be_activated_again_without_resending_it() -> None:
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> ActivationOutcome:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 86_400
        task = asyncio.create_task(h.dco.activate_firmware(FIRST, stored.firmware_hash, at))
        await h.clock.sleep(3_600)
        far = h.clock.now() + CANCEL_AFTER_SECONDS + 1
        assert (await h.dco.activate_firmware(FIRST, stored.firmware_hash, far)).ok
        await task
        return await h.dco.activate_firmware(FIRST, stored.firmware_hash)

    again = run(cfg, body)
    assert (again.ok, again.state, again.reason) == (True, S.ACTIVE, Reason.NONE)
    assert again.running_version == NEW_VERSION and again.blocks_sent == 0


def test_scheduled_activations_and_cancellations_hold_no_transfer_slot() -> None:
    cfg = fleet_config([{"count": 2}], dco={"max_concurrent_transfers": 1})

    async def body(h: Harness) -> list[ActivationOutcome]:
        stored = await h.dco.update_firmware(IMAGE)
        fw = stored.firmware_hash
        at = h.clock.now() + 2 * 86_400
        scheduled = asyncio.create_task(h.dco.activate_firmware(FIRST, fw, at))
        await h.clock.sleep(3_600)  # transferred long ago; now waits two days to activate
        other = asyncio.create_task(h.dco.activate_firmware(FIRST + 1, fw))
        await h.clock.sleep(1)  # the other device's transfer has the only slot
        far = h.clock.now() + CANCEL_AFTER_SECONDS + 1
        try:
            # Bounded, so that a cancellation stuck behind a slot fails here, not hangs.
            cancel = await h.clock.timeout(86_400, h.dco.activate_firmware(FIRST, fw, far))
            return [await scheduled, await other, cancel]
        finally:
            for task in (scheduled, other):
                task.cancel()
            await asyncio.gather(scheduled, other, return_exceptions=True)

    scheduled, other, cancel = run(cfg, body)
    t0 = cfg.epoch_seconds
    # The immediate 11.3 ran in its hour, not after the scheduled one's two days.
    assert other.ok and other.finished_at - t0 < 2 * 3_600
    # The cancellation took no slot: it did not wait for the other transfer either.
    assert (cancel.ok, cancel.state) == (True, S.CANCELLED)
    assert cancel.finished_at < other.finished_at
    assert (scheduled.state, scheduled.reason) == (S.CANCELLED, Reason.CANCELLED)
    assert scheduled.finished_at == cancel.finished_at


def test_a_late_answer_is_not_taken_for_the_next_requests() -> None:
    # A reply timeout shorter than a round's link time: the QUERY's answer comes after
    # the DCO gave up on it and sent INITIATE again.
    faults = {"block_loss_rate": 0.2}
    slow = fleet_config([{"count": 1, "faults": faults}], dco={"reply_timeout_seconds": 20})
    patient = fleet_config([{"count": 1, "faults": faults}])

    async def body(h: Harness) -> tuple[ActivationOutcome, int]:
        stored = await h.dco.update_firmware(IMAGE)
        out = await h.dco.activate_firmware(FIRST, stored.firmware_hash)
        return out, h.dco.counters.resumes

    (late, resumes), (ref, _) = run(slow, body), run(patient, body)
    assert resumes >= 1 and late.ok and ref.ok
    # Taken for the next answer, the late one made the DCO send the same runs twice.
    assert (late.blocks_sent, late.rounds) == (ref.blocks_sent, ref.rounds)


@pytest.mark.parametrize("seed", [1, 2])
def test_same_seed_same_outcomes(seed: int) -> None:
    faults = {
        "block_loss_rate": 0.1,
        "block_corruption_rate": 0.05,
        "hang_probability": 0.05,
        "power_loss_during_transfer": 0.3,
        "power_loss_during_activation": 0.3,
        "boot_failure_rate": 0.3,
        "refusal_rate": 0.1,
    }

    def once() -> list[tuple[Any, ...]]:
        cfg = fleet_config([{"count": 12, "faults": faults}])
        cfg = cfg.model_copy(update={"seed": seed})

        async def body(h: Harness) -> list[tuple[Any, ...]]:
            stored = await h.dco.update_firmware(IMAGE)
            outs = await asyncio.gather(
                *(h.dco.activate_firmware(d, stored.firmware_hash) for d in h.host.devices)
            )
            return [(o.state, o.reason, o.blocks_sent, o.finished_at) for o in outs] + [
                tuple(sorted(h.host.counters.faults.items()))
            ]

        return run(cfg, body)

    a, b = once(), once()
    assert a == b
    assert any(o[1] is not Reason.NONE for o in a[:-1]) or a[-1]  # faults did happen


def test_settled_devices_let_their_random_streams_go() -> None:
    cfg = fleet_config([{"count": 6, "faults": {"block_loss_rate": 0.1}}], link="gprs")

    async def body(h: Harness) -> tuple[list[ActivationOutcome], Harness]:
        stored = await h.dco.update_firmware(IMAGE)
        outs = await asyncio.gather(
            *(h.dco.activate_firmware(d, stored.firmware_hash) for d in h.host.devices)
        )
        for d in h.host.devices:  # an 11.2 afterwards, as the scheduler asks
            assert (await h.dco.read_firmware_version(d)).running_version == NEW_VERSION
        return list(outs), h

    outs, h = run(cfg, body)
    assert all(o.ok for o in outs)
    # Each used a stream (jitter, losses) and dropped it once its 11.3 settled.
    assert all(d.rng is None and d.rng_streams >= 1 for d in h.host.devices.values())


def test_newer_transfer_replaces_the_older_and_the_older_11_3_is_told() -> None:
    cfg = fleet_config([{"count": 1}])
    other = make_image(8_000, seed=11, version=0x02000001)

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome]:
        a = await h.dco.update_firmware(IMAGE)
        b = await h.dco.update_firmware(other)
        older = asyncio.create_task(h.dco.activate_firmware(FIRST, a.firmware_hash))
        await h.clock.sleep(5)
        newer = await h.dco.activate_firmware(FIRST, b.firmware_hash)
        return await older, newer

    older, newer = run(cfg, body)
    assert (newer.ok, newer.state, newer.running_version) == (True, S.ACTIVE, 0x02000001)
    assert (older.ok, older.reason) == (False, Reason.NO_TRANSFER)


def test_transfer_refused_while_another_image_waits_to_activate() -> None:
    cfg = fleet_config([{"count": 1}])
    other = make_image(8_000, seed=11, version=0x02000001)

    async def body(h: Harness) -> tuple[ActivationOutcome, Any]:
        a = await h.dco.update_firmware(IMAGE)
        b = await h.dco.update_firmware(other)
        at = h.clock.now() + 86_400
        pending = asyncio.create_task(h.dco.activate_firmware(FIRST, a.firmware_hash, at))
        await h.clock.sleep(3_600)
        refused = await h.dco.activate_firmware(FIRST, b.firmware_hash)
        return refused, await pending

    refused, pending = run(cfg, body)
    assert (refused.ok, refused.state, refused.reason) == (
        False,
        S.ACTIVATION_SCHEDULED,
        Reason.BUSY,
    )
    assert pending.ok and pending.running_version == NEW_VERSION


def test_device_out_of_reach_after_scheduling_ends_in_timeout() -> None:
    # Reachable for the transfer, then out of reach for ten days from the first hour.
    window = {"start_seconds": 3_600, "duration_seconds": 10 * 86_400}
    cfg = fleet_config([{"count": 1, "faults": {"offline_windows": [window]}}])

    async def body(h: Harness) -> tuple[ActivationOutcome, Harness]:
        stored = await h.dco.update_firmware(IMAGE)
        at = h.clock.now() + 2 * 3_600
        return await h.dco.activate_firmware(FIRST, stored.firmware_hash, at), h

    out, h = run(cfg, body)
    assert (out.ok, out.state, out.reason) == (False, S.ACTIVATION_SCHEDULED, Reason.TIMEOUT)
    # The meter did activate at its time; only its answer never got through.
    assert h.host.devices[FIRST].state is S.ACTIVE
    assert h.host.counters.frames_dropped["offline"] >= 1


def test_a_transfer_cancelled_while_waiting_for_its_slot_gives_back_none() -> None:
    # One slot. The first device is offline, so its 11.3 backs off and lends its slot to
    # the second device's transfer; when its wait ends it queues to take the slot back,
    # and is cancelled there. The DCO must still move one transfer at a time, not two.
    offline = {"offline_windows": [{"start_seconds": 0, "duration_seconds": 86_400}]}
    cfg = fleet_config(
        [{"count": 1, "faults": offline}, {"count": 3}], dco={"max_concurrent_transfers": 1}
    )

    async def body(h: Harness) -> tuple[bool, list[bool], int]:
        fw = (await h.dco.update_firmware(IMAGE)).firmware_hash
        silent = asyncio.create_task(h.dco.activate_firmware(FIRST, fw))
        for _ in range(3_600):  # INITIATE unanswered: the backoff lends the slot
            if h.dco.counters.retries:
                break
            await h.clock.sleep(1)
        other = asyncio.create_task(h.dco.activate_firmware(FIRST + 1, fw))
        # The backoff ends while the other transfer holds the slot: the silent one queues.
        queued = False
        for _ in range(3_600):
            if h.dco.counters.waiting_for_slot:
                queued = True
                break
            await h.clock.sleep(1)
        silent.cancel()
        await asyncio.gather(silent, return_exceptions=True)
        ok = [(await other).ok]
        # Two more transfers at once: with the one slot given back once, never do two
        # devices receive blocks at the same time.
        both = [asyncio.create_task(h.dco.activate_firmware(FIRST + n, fw)) for n in (2, 3)]
        most = 0
        while not all(t.done() for t in both):
            most = max(most, h.host.state_counts()["receiving"])
            await h.clock.sleep(1)
        ok += [t.result().ok for t in both]
        return queued, ok, most

    queued, ok, most = run(cfg, body)
    assert queued, "the silent 11.3 never queued for its slot"
    assert ok == [True, True, True]
    assert most == 1


def test_11_3_sent_again_during_the_reboot_waits_for_it_and_activates_once() -> None:
    # A restarted scheduler sends an 11.3 again while the meter reboots into that image:
    # no block is sent again, no second activation, and both 11.3s end ACTIVE.
    cfg = fleet_config([{"count": 1}])

    async def body(h: Harness) -> tuple[ActivationOutcome, ActivationOutcome, int]:
        fw = (await h.dco.update_firmware(IMAGE)).firmware_hash
        first = asyncio.create_task(h.dco.activate_firmware(FIRST, fw))
        for _ in range(36_000):
            if h.host.devices[FIRST].state is S.ACTIVATING:
                break
            await h.clock.sleep(1)
        assert h.host.devices[FIRST].state is S.ACTIVATING
        again = await h.clock.timeout(3_600, h.dco.activate_firmware(FIRST, fw))
        one = await first
        return one, again, h.host.transitions()[S.ACTIVE.name.lower()]

    one, again, activations = run(cfg, body)
    assert one.ok and again.ok and again.state is S.ACTIVE
    assert again.running_version == NEW_VERSION
    assert (again.blocks_sent, again.rounds) == (0, 0)
    assert activations == 1

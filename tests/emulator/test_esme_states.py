"""The ESME's state machine, power cycles and activation timing, frame by frame."""

from __future__ import annotations

import math

import pytest

from emulator.device import TRANSITIONS, Esme
from emulator.errors import TransitionError
from emulator.slots import FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.image import parse_image
from smets1.wire import (
    CANCEL_AFTER_SECONDS,
    NO_VERSION,
    Activate,
    Blocks,
    Initiate,
    Query,
    ReadVersion,
)
from tests.factories import device_model, make_image

S = DeviceState
BS = 512
IMAGE = make_image(6_000)
FW = parse_image(IMAGE).firmware_hash
N = -(-len(IMAGE) // BS)
REBOOT = 30.0


def esme() -> Esme:
    model = device_model(reboot_seconds=REBOOT)
    return Esme(7, model, SlotImage(0x01000000, b"\x11" * 32), FlashStore())


def initiate(dev: Esme, tid: int = 1, image: bytes = IMAGE, fw: bytes = FW) -> Reason:
    return dev.on_initiate(Initiate(7, tid, len(image), BS, fw)).reason


def blocks(dev: Esme, which: range | list[int], tid: int = 1, image: bytes = IMAGE) -> None:
    for b in which:
        dev.on_blocks(Blocks.build(7, tid, b, image[b * BS : (b + 1) * BS], BS))


def verified() -> Esme:
    dev = esme()
    initiate(dev)
    blocks(dev, range(N))
    assert dev.state is S.VERIFIED
    return dev


def test_every_state_has_a_way_out_except_none() -> None:
    assert set(TRANSITIONS) == set(DeviceState.__members__.values())
    for state, after in TRANSITIONS.items():
        assert after, f"{state.name} has no way out"
        assert after <= set(DeviceState), state.name


def test_wrong_transition_names_both_states() -> None:
    dev = esme()
    with pytest.raises(TransitionError, match="IDLE to ACTIVE") as err:
        dev.transition(S.ACTIVE)
    assert (err.value.current, err.value.wanted) == ("IDLE", "ACTIVE")
    assert dev.state is S.IDLE


def test_transitions_are_counted() -> None:
    dev = verified()
    t = dev.profile.transitions
    assert [t["receiving"], t["received"], t["verifying"], t["verified"]] == [1, 1, 1, 1]


def test_power_cut_keeps_blocks_and_bitmap_and_resumes() -> None:
    dev = esme()
    initiate(dev)
    blocks(dev, range(0, N, 2))
    held = dev.on_query(Query(7, 1))
    dev.power_off(10.0)
    assert not dev.powered and dev.off_until == math.inf
    assert dev.power_on(20.0) is None
    # After the cut the DCO starts a new session: the device answers with what it kept.
    st = dev.on_initiate(Initiate(7, 2, len(IMAGE), BS, FW))
    assert (st.received, st.bitmap) == (held.received, held.bitmap)
    blocks(dev, range(1, N, 2), tid=2)
    assert dev.state is S.VERIFIED and dev.inactive is not None and dev.inactive.data == IMAGE


def test_newer_transfer_replaces_an_unfinished_one() -> None:
    dev = esme()
    initiate(dev)
    blocks(dev, range(3))
    other = make_image(6_000, seed=99)
    other_fw = parse_image(other).firmware_hash
    assert initiate(dev, tid=2, image=other, fw=other_fw) is Reason.NONE
    assert dev.on_query(Query(7, 2)).received == 0
    assert dev.on_query(Query(7, 1)).reason is Reason.NO_TRANSFER
    blocks(dev, range(N), tid=2, image=other)
    assert dev.inactive is not None and dev.inactive.firmware_hash == other_fw


def test_initiate_for_the_verified_image_sends_nothing_more() -> None:
    dev = verified()
    st = dev.on_initiate(Initiate(7, 5, len(IMAGE), BS, FW))
    assert (st.state, st.reason) == (S.VERIFIED, Reason.NONE)
    assert dev.inactive is not None


def test_scheduled_activation_runs_at_its_time_and_version_says_pending() -> None:
    dev = verified()
    reply, wake = dev.on_activate(Activate(7, 1, 5_000.0, FW), now=1_000.0)
    assert (reply.state, wake) == (S.ACTIVATION_SCHEDULED, 5_000.0)
    v = dev.on_read_version(ReadVersion(7, 0))
    assert (v.running_version, v.pending_version) == (0x01000000, 0x02000000)
    assert dev.on_timer(4_000.0) == (None, None)  # not yet
    reply2, wake2 = dev.on_timer(5_000.0)
    assert reply2 is not None and reply2.state is S.ACTIVATING and wake2 == 5_000.0 + REBOOT
    reply3, _ = dev.on_timer(5_000.0 + REBOOT)
    assert reply3 is not None and reply3.state is S.ACTIVE
    assert dev.on_read_version(ReadVersion(7, 0)).running_version == 0x02000000


def test_far_future_date_cancels_and_the_image_may_be_scheduled_again() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 5_000.0, FW), now=1_000.0)
    reply, wake = dev.on_activate(Activate(7, 2, 2_000.0 + CANCEL_AFTER_SECONDS, FW), now=2_000.0)
    assert (reply.state, reply.reason, wake) == (S.CANCELLED, Reason.CANCELLED, None)
    assert dev.on_timer(5_000.0) == (None, None)  # the old timer does nothing
    assert dev.on_read_version(ReadVersion(7, 0)).pending_version == NO_VERSION
    reply2, wake2 = dev.on_activate(Activate(7, 3, 0.0, FW), now=6_000.0)
    assert reply2.state is S.ACTIVATING and wake2 == 6_000.0 + REBOOT


def test_initiate_after_a_cancellation_answers_ready_not_cancelled() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 5_000.0, FW), now=1_000.0)
    dev.on_activate(Activate(7, 2, 2_000.0 + CANCEL_AFTER_SECONDS, FW), now=2_000.0)
    assert dev.reason is Reason.CANCELLED
    # A new 11.3 for the same image finds it held: nothing to send, nothing stale to say.
    st = dev.on_initiate(Initiate(7, 3, len(IMAGE), BS, FW))
    assert (st.state, st.reason, st.complete) == (S.CANCELLED, Reason.NONE, True)
    reply, _ = dev.on_activate(Activate(7, 3, 0.0, FW), now=3_000.0)
    assert (reply.state, reply.reason) == (S.ACTIVATING, Reason.NONE)


def test_initiate_for_the_running_image_answers_complete_without_a_transition() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 0.0, FW), now=0.0)
    dev.on_timer(REBOOT)
    assert dev.state is S.ACTIVE
    before = dict(dev.profile.transitions)
    previous = dev.inactive
    st = dev.on_initiate(Initiate(7, 2, len(IMAGE), BS, FW))
    assert (st.state, st.reason, st.complete, st.received) == (S.ACTIVE, Reason.NONE, True, 0)
    assert dict(dev.profile.transitions) == before
    assert dev.rx is None and dev.inactive is previous  # the previous image stays kept
    reply, wake = dev.on_activate(Activate(7, 2, 0.0, FW), now=100.0)
    assert (reply.state, reply.reason, reply.running_version, wake) == (
        S.ACTIVE,
        Reason.NONE,
        0x02000000,
        None,
    )


def test_initiate_alone_allocates_no_image_buffer() -> None:
    dev = esme()
    initiate(dev)
    assert dev.rx is not None and len(dev.rx.buffer) == 0
    assert dev.on_query(Query(7, 1)).received == 0
    blocks(dev, [2])
    assert len(dev.rx.buffer) == len(IMAGE)
    assert dev.rx.buffer[2 * BS : 3 * BS] == IMAGE[2 * BS : 3 * BS]


def test_all_corrupt_run_allocates_no_image_buffer() -> None:
    dev = esme()
    initiate(dev)
    good = Blocks.build(7, 1, 0, IMAGE[:BS], BS)
    dev.on_blocks(Blocks(7, 1, 0, good.crcs, bytes(BS)))
    assert dev.rx is not None and dev.rx.corrupt_blocks == 1 and len(dev.rx.buffer) == 0


def test_timer_due_allows_the_float_slack_and_not_more() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 0.0, FW), now=0.0)
    assert dev.timer_due(REBOOT - 1e-9) and not dev.timer_due(REBOOT - 1e-3)
    dev.power_off(1.0)
    assert not dev.timer_due(REBOOT)


def test_cancel_with_nothing_scheduled_is_refused() -> None:
    dev = verified()
    reply, _ = dev.on_activate(Activate(7, 1, CANCEL_AFTER_SECONDS + 10, FW), now=0.0)
    assert reply.reason is Reason.NO_TRANSFER and dev.state is S.VERIFIED


def test_cancel_naming_another_image_leaves_the_pending_activation() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 5_000.0, FW), now=1_000.0)
    other = bytes(32)
    reply, _ = dev.on_activate(Activate(7, 2, 2_010 + CANCEL_AFTER_SECONDS, other), now=2_000.0)
    assert reply.reason is Reason.NO_TRANSFER and dev.state is S.ACTIVATION_SCHEDULED
    reply, _ = dev.on_timer(5_000.0)
    assert reply is not None and reply.state is S.ACTIVATING


def test_failed_boot_keeps_the_previous_image_running() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 0.0, FW), now=0.0)
    reply, wake = dev.on_timer(REBOOT, boot_ok=False)
    assert reply is not None and wake is None
    assert (reply.state, reply.reason, reply.running_version) == (
        S.ACTIVATION_FAILED,
        Reason.BOOT_FAILED,
        0x01000000,
    )
    # Asked again, it says the same rather than booting the bad image once more.
    again, wake = dev.on_activate(Activate(7, 2, 0.0, FW), now=100.0)
    assert (again.state, again.reason, wake) == (S.ACTIVATION_FAILED, Reason.BOOT_FAILED, None)


def test_power_cut_during_activation_restarts_the_reboot() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 0.0, FW), now=0.0)
    dev.power_off(10.0)
    assert dev.on_timer(REBOOT) == (None, None)  # off: the old timer does nothing
    wake = dev.power_on(100.0)
    assert wake == 100.0 + REBOOT and dev.state is S.ACTIVATING
    assert dev.on_timer(REBOOT) == (None, None)  # stale
    reply, _ = dev.on_timer(100.0 + REBOOT)
    assert reply is not None and reply.state is S.ACTIVE


def test_scheduled_time_passed_while_off_activates_at_power_on() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 500.0, FW), now=0.0)
    dev.power_off(100.0)
    assert dev.on_timer(500.0) == (None, None)
    assert dev.power_on(900.0) == 900.0
    reply, _ = dev.on_timer(900.0)
    assert reply is not None and reply.state is S.ACTIVATING


def test_transfer_refused_while_an_activation_is_pending() -> None:
    dev = verified()
    dev.on_activate(Activate(7, 1, 5_000.0, FW), now=0.0)
    other = make_image(6_000, seed=5)
    st = dev.on_initiate(Initiate(7, 2, len(other), BS, parse_image(other).firmware_hash))
    assert (st.state, st.reason) == (S.ACTIVATION_SCHEDULED, Reason.BUSY)


def test_activate_before_every_block_is_in_says_incomplete() -> None:
    dev = esme()
    initiate(dev)
    blocks(dev, range(2))
    reply, wake = dev.on_activate(Activate(7, 1, 0.0, FW), now=0.0)
    assert (reply.state, reply.reason, wake) == (S.RECEIVING, Reason.INCOMPLETE, None)


def test_refusal_leaves_the_device_as_it_was() -> None:
    dev = esme()
    st = dev.on_initiate(Initiate(7, 1, len(IMAGE), BS, FW), refuse=True)
    assert (st.state, st.reason) == (S.IDLE, Reason.REFUSED) and dev.rx is None

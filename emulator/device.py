"""The ESME: two firmware slots, block reception, checks, activation, power cycles.

The device is sans-IO: each method takes a decoded frame (and the time, where it matters)
and returns the frame to send back, plus, for activation, when it next needs waking. The
fleet host owns the bus, the clock and the dice: it says when the power fails, whether a
boot succeeds and whether the device refuses. An idle device is a small slotted object
with no task of its own.

What survives a power cut (flash), after DLMS Image Transfer, where the image blocks and
the transferred-blocks bitmap are attributes of the image being written:

* the active slot (the running image, or its version for factory firmware);
* the inactive slot: a verified image (`inactive`), or the transfer being written into it
  (`rx`: the identity named at INITIATE, the blocks and the bitmap);
* the state, the reason of the last failure, the transfer id, and the time a scheduled
  activation is due (a DLMS single-action schedule is persistent too);
* the bootloader's "try the new slot" mark, so a cut during activation reboots into it;
* the count of activations (a meter's event log).

A fleet shard can keep all of this on disk (emulator.flash_journal), so that a shard
killed and started again is to its devices one more power cut.

What a cut loses (RAM): every frame that reaches the device while it is off, the modem's
queue, the counters of corrupt and duplicate blocks. A transfer therefore resumes from the
bitmap after a cut; it never starts again from block 0.
"""

from __future__ import annotations

import math
import random

from emulator.errors import TransitionError
from emulator.model import DeviceModel, DeviceProfile, default_profile
from emulator.reception import Reception
from emulator.slots import FlashStore, SlotImage
from smets1.codes import DeviceState, Reason
from smets1.image import ImageError, parse_image, verify_signature
from smets1.wire import (
    IMMEDIATE,
    NO_BLOCK,
    NO_VERSION,
    Activate,
    Activation,
    Blocks,
    Initiate,
    Query,
    Reading,
    ReadRequest,
    ReadVersion,
    Status,
    Version,
    is_cancellation,
)

#: A timer may fire a hair before its time after the float round trip through loop time.
_TIMER_SLACK_SECONDS = 1e-6


S = DeviceState

#: Which state may follow which (STYLE 7); anything else raises TransitionError.
TRANSITIONS: dict[DeviceState, frozenset[DeviceState]] = {
    S.IDLE: frozenset({S.RECEIVING}),
    # RECEIVING → RECEIVING: a newer transfer replaced an unfinished one.
    S.RECEIVING: frozenset({S.RECEIVING, S.RECEIVED}),
    S.RECEIVED: frozenset({S.VERIFYING}),
    S.VERIFYING: frozenset({S.VERIFIED, S.VERIFY_FAILED}),
    S.VERIFIED: frozenset({S.RECEIVING, S.ACTIVATING, S.ACTIVATION_SCHEDULED}),
    S.ACTIVATION_SCHEDULED: frozenset({S.ACTIVATING, S.ACTIVATION_SCHEDULED, S.CANCELLED}),
    S.ACTIVATING: frozenset({S.ACTIVE, S.ACTIVATION_FAILED}),
    S.ACTIVE: frozenset({S.RECEIVING}),
    S.VERIFY_FAILED: frozenset({S.RECEIVING}),
    S.ACTIVATION_FAILED: frozenset({S.RECEIVING}),
    # A cancelled activation leaves the verified image in the slot: it may be scheduled again.
    S.CANCELLED: frozenset({S.RECEIVING, S.ACTIVATING, S.ACTIVATION_SCHEDULED}),
}

#: States in which the inactive slot holds a verified image that may be activated.
HOLDING = frozenset({S.VERIFIED, S.ACTIVATION_SCHEDULED, S.CANCELLED})


class Esme:
    """One electricity meter with two firmware slots."""

    __slots__ = (
        "activate_at",
        "activations",
        "active",
        "device_id",
        "flash",
        "inactive",
        "link_down_until",
        "link_free_at",
        "model",
        "off_until",
        "profile",
        "reason",
        "rng",
        "rng_streams",
        "rx",
        "state",
        "transfer_id",
    )

    def __init__(
        self,
        device_id: int,
        model: DeviceModel,
        active: SlotImage,
        flash: FlashStore,
        profile: DeviceProfile | None = None,
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.profile = profile if profile is not None else default_profile(model)
        self.flash = flash
        self.active = active  # the slot that runs
        self.inactive: SlotImage | None = None  # a complete, verified image, if any
        self.rx: Reception | None = None  # a transfer being written into the inactive slot
        self.transfer_id = 0
        self.state = S.IDLE
        self.reason = Reason.NONE
        #: When a scheduled activation is due, or when the activation reboot ends.
        self.activate_at = 0.0
        #: Images booted into successfully, ever (a meter's event log keeps this in flash).
        self.activations = 0
        # The rest belongs to the fleet host: link timing, faults and their dice.
        self.link_free_at = 0.0  # when the downlink has finished its last frame
        self.link_down_until = 0.0  # a hung link carries nothing until then
        self.off_until = 0.0  # math.inf while the power is off
        self.rng: random.Random | None = None  # the device's random stream, made when needed
        self.rng_streams = 0  # streams made so far: a new one never repeats an old one

    # -- states -------------------------------------------------------------------------

    def transition(self, new: DeviceState) -> None:
        """Move to `new`, or raise TransitionError naming both states."""
        if new not in TRANSITIONS.get(self.state, frozenset()):
            raise TransitionError(self.device_id, self.state.name, new.name)
        self.state = new
        self.profile.transitions[new.name.lower()] += 1

    @property
    def powered(self) -> bool:
        return self.off_until == 0.0

    def power_off(self, now: float) -> None:
        """The power fails: RAM is lost, flash is kept (see the module docstring)."""
        self.off_until = math.inf
        self.link_free_at = now
        rx = self.rx
        if rx is not None:
            rx.corrupt_blocks = 0
            rx.duplicate_blocks = 0

    def power_on(self, now: float) -> float | None:
        """The power is back; return when the host must call `on_timer`, if ever.

        A cut during activation restarts the reboot into the new slot (the bootloader's
        mark is in flash); a scheduled activation whose time passed while off runs now.
        """
        self.off_until = 0.0
        self.link_free_at = now
        if self.state is S.ACTIVATING:
            self.activate_at = now + self.model.reboot_seconds
            return self.activate_at
        if self.state is S.ACTIVATION_SCHEDULED:
            return max(now, self.activate_at)
        return None

    # -- transfer ---------------------------------------------------------------------

    def _reply(self, transfer_id: int, reason: Reason) -> Status:
        """A refusal: the device's state is unchanged."""
        return Status(self.device_id, transfer_id, self.state, reason, 0, 0, 0)

    def _status(self, transfer_id: int) -> Status:
        rx = self.rx
        if rx is not None and rx.transfer_id == transfer_id:
            return Status(
                self.device_id,
                transfer_id,
                self.state,
                self.reason,
                rx.received,
                rx.first_missing,
                rx.block_count,
                rx.bitmap(),
            )
        if transfer_id == self.transfer_id and self.state is not S.IDLE:
            return Status(self.device_id, transfer_id, self.state, self.reason, 0, NO_BLOCK, 0)
        return self._reply(transfer_id, Reason.NO_TRANSFER)

    def on_initiate(self, f: Initiate, refuse: bool = False) -> Status:
        """Start, resume or replace a transfer into the inactive slot, or answer that the
        image is already held (verified) or already runs (complete, nothing to send)."""
        if refuse:
            return self._reply(f.transfer_id, Reason.REFUSED)
        slot = self.inactive
        same_held = slot is not None and slot.firmware_hash == f.firmware_hash
        if self.state is S.ACTIVATING and same_held:
            # Rebooting into this very image (an 11.3 sent again, say by a restarted
            # scheduler): nothing to send; the answer to the reboot goes to this transfer.
            self.transfer_id = f.transfer_id
            return Status(self.device_id, f.transfer_id, S.ACTIVATING, Reason.NONE, 0, NO_BLOCK, 0)
        if self.state is S.ACTIVATING or (self.state is S.ACTIVATION_SCHEDULED and not same_held):
            # The slot is committed to an activation: cancel it first (far-future 11.3).
            return self._reply(f.transfer_id, Reason.BUSY)
        if f.block_size == 0 or f.image_size == 0:
            return self._reply(f.transfer_id, Reason.BAD_REQUEST)
        if f.image_size > self.model.slot_capacity_bytes:
            return self._reply(f.transfer_id, Reason.TOO_LARGE_FOR_SLOT)
        if same_held and self.state in HOLDING:
            # Already received and verified (a lost answer, or a restarted DCO). A cancelled
            # activation's reason goes: the image may be scheduled again.
            self.transfer_id = f.transfer_id
            self.reason = Reason.NONE
            return self._status(f.transfer_id)
        if self.state is S.ACTIVE and self.active.firmware_hash == f.firmware_hash:
            # It already runs this image: nothing to send and nothing to activate again.
            self.transfer_id = f.transfer_id
            return Status(self.device_id, f.transfer_id, S.ACTIVE, Reason.NONE, 0, NO_BLOCK, 0)
        rx = self.rx
        if (
            rx is not None
            and self.state is S.RECEIVING
            and rx.firmware_hash == f.firmware_hash
            and rx.image_size == f.image_size
            and rx.block_size == f.block_size
        ):
            # The same image again: keep every block already held and resume.
            rx.transfer_id = self.transfer_id = f.transfer_id
            return self._status(f.transfer_id)
        # A newer transfer replaces an older, unfinished one (or the previous image).
        self.transition(S.RECEIVING)
        self.rx = Reception(
            f.transfer_id,
            f.image_size,
            f.block_size,
            f.firmware_hash,
            self.flash.sink,
            self.flash.lend_buffer,
        )
        self.inactive = None
        self.transfer_id = f.transfer_id
        self.reason = Reason.NONE
        return self._status(f.transfer_id)

    def on_blocks(self, f: Blocks) -> Status | None:
        """Take a run of blocks; silent (the DCO queries), verifies when the last is in."""
        rx = self.rx
        if rx is None or rx.transfer_id != f.transfer_id or self.state is not S.RECEIVING:
            return None
        if rx.accept(f.first_block, f.crcs, f.data, f.run_crc) is None:
            return None
        if rx.complete:
            self.transition(S.RECEIVED)
            self._verify()
        return None

    def on_query(self, f: Query) -> Status:
        return self._status(f.transfer_id)

    def _verify(self) -> None:
        rx = self.rx
        assert rx is not None
        self.transition(S.VERIFYING)
        reason = self._check(rx)
        # Either way the assembly buffer goes: a verified image is interned, a bad one is
        # of no use and a new INITIATE starts over. The flash store lends it out again.
        self.rx = None
        self.flash.give_back(rx.buffer)
        if reason is Reason.NONE:
            self.transition(S.VERIFIED)
        else:
            self.reason = reason
            self.transition(S.VERIFY_FAILED)

    def _check(self, rx: Reception) -> Reason:
        m = self.model
        try:
            image = parse_image(rx.buffer)
        except ImageError:
            return Reason.BAD_IMAGE
        h = image.header
        if h.manufacturer_code != m.manufacturer_code:
            return Reason.WRONG_MANUFACTURER
        if h.image_type != m.image_type:
            return Reason.WRONG_IMAGE_TYPE
        lo, hi = h.min_hardware_version, h.max_hardware_version
        if lo is not None and hi is not None and not lo <= m.hardware_version <= hi:
            return Reason.HARDWARE_MISMATCH
        if image.size_bytes > m.slot_capacity_bytes:
            return Reason.TOO_LARGE_FOR_SLOT
        digest = image.firmware_hash
        if digest != rx.firmware_hash:
            return Reason.HASH_MISMATCH
        if not verify_signature(image, m.public_key, firmware_hash=digest):
            return Reason.BAD_SIGNATURE
        # Checked: the slot now holds exactly these bytes; share the interned copy.
        self.inactive = SlotImage(h.file_version, digest, self.flash.intern(digest, rx.buffer))
        return Reason.NONE

    # -- activation ---------------------------------------------------------------------

    def on_activate(self, f: Activate, now: float) -> tuple[Activation, float | None]:
        """Answer an ACTIVATE; the float is when the host must call `on_timer` next.

        Asking again is harmless: a device already active on, activating, or failed with
        the named image answers as it stands instead of starting over.
        """
        state = self.state
        slot = self.inactive
        same_slot = slot is not None and slot.firmware_hash == f.firmware_hash
        if is_cancellation(f.execution_time, now):
            # A cancellation names the image whose activation it ends; another's stays.
            if state is S.ACTIVATION_SCHEDULED and same_slot:
                self.reason = Reason.CANCELLED
                self.transition(S.CANCELLED)
                return self._activation(f.transfer_id, now), None
            if state is S.CANCELLED and same_slot:
                return self._activation(f.transfer_id, now), None
            return self._activation(f.transfer_id, now, Reason.NO_TRANSFER), None
        if state is S.ACTIVE and self.active.firmware_hash == f.firmware_hash:
            return self._activation(f.transfer_id, now), None
        if state in (S.ACTIVATING, S.ACTIVATION_FAILED) and same_slot:
            return self._activation(f.transfer_id, now), None
        if state is S.VERIFY_FAILED:
            return self._activation(f.transfer_id, now), None  # carries the check's reason
        if slot is None or state not in HOLDING:
            rx = self.rx
            receiving_it = rx is not None and rx.firmware_hash == f.firmware_hash
            # INCOMPLETE only for the image still arriving; one that a newer transfer
            # replaced is simply no longer held.
            reason = Reason.INCOMPLETE if receiving_it else Reason.NO_TRANSFER
            return self._activation(f.transfer_id, now, reason), None
        if not same_slot:
            return self._activation(f.transfer_id, now, Reason.HASH_MISMATCH), None
        self.reason = Reason.NONE
        self.transfer_id = f.transfer_id
        if f.execution_time == IMMEDIATE or f.execution_time <= now:
            self.transition(S.ACTIVATING)
            self.activate_at = now + self.model.reboot_seconds
        else:
            self.transition(S.ACTIVATION_SCHEDULED)
            self.activate_at = f.execution_time
        return self._activation(f.transfer_id, now), self.activate_at

    def timer_due(self, now: float) -> bool:
        """Whether a timer firing at `now` finds the device on and its time come."""
        return self.powered and now + _TIMER_SLACK_SECONDS >= self.activate_at

    def on_timer(self, now: float, boot_ok: bool = True) -> tuple[Activation | None, float | None]:
        """The time the device asked for has come: start or finish an activation.

        `boot_ok` False: the new image fails to boot and the bootloader falls back to the
        previous slot within the same reboot. A stale timer (the power was cut, or the
        activation was cancelled or moved) does nothing.
        """
        if not self.timer_due(now):
            return None, None
        if self.state is S.ACTIVATION_SCHEDULED:
            self.transition(S.ACTIVATING)
            self.activate_at = now + self.model.reboot_seconds
            return self._activation(self.transfer_id, now), self.activate_at
        if self.state is S.ACTIVATING:
            new = self.inactive
            assert new is not None
            if boot_ok:
                self.inactive = self.active  # the previous image stays in the other slot
                self.active = new
                self.activations += 1
                self.transition(S.ACTIVE)
            else:
                self.reason = Reason.BOOT_FAILED
                self.transition(S.ACTIVATION_FAILED)
            return self._activation(self.transfer_id, now), None
        return None, None

    def _activation(
        self, transfer_id: int, now: float, refusal: Reason = Reason.NONE
    ) -> Activation:
        return Activation(
            self.device_id,
            transfer_id,
            self.state,
            refusal if refusal else self.reason,
            self.active.file_version,
            now,
        )

    # -- 11.2 ---------------------------------------------------------------------------

    def on_read_version(self, f: ReadVersion) -> Version:
        pending = NO_VERSION
        if self.inactive is not None and self.state in (
            S.VERIFIED,
            S.ACTIVATION_SCHEDULED,
            S.ACTIVATING,
        ):
            pending = self.inactive.file_version
        return Version(self.device_id, f.transfer_id, self.active.file_version, pending, self.state)

    # -- background traffic (issue 16) ------------------------------------------------------

    def on_read(self, f: ReadRequest) -> Reading:
        """Answer an ordinary service request (a meter read) with the data it asks for.

        Whatever the firmware is doing: the meter keeps metering. When the answer is late,
        it is the link that made it so (the fleet host queues the request behind the
        blocks on their way), not the device."""
        return Reading(self.device_id, f.transfer_id, f.kind, bytes(f.data_bytes))

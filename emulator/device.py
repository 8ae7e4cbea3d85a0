"""The ESME: two firmware slots, block reception, checks, activation.

The device is sans-IO: each method takes a decoded frame (and the time, where it matters)
and returns the frame to send back, plus, for activation, when it next needs waking. The
fleet host owns the bus and the clock. An idle device is a small slotted object with no
task of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

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
    ReadVersion,
    Status,
    Version,
)

#: An ExecutionDateTime this far ahead cancels a pending activation, as DUIS uses a
#: far-future date (3000-01-01) to cancel.
CANCEL_AFTER_SECONDS = 100 * 365 * 86_400.0


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What every device of one model shares."""

    name: str
    manufacturer_code: int
    image_type: int
    hardware_version: int
    slot_capacity_bytes: int
    reboot_seconds: float
    public_key: EllipticCurvePublicKey
    bandwidth_bps: float
    latency_seconds: float


S = DeviceState


class Esme:
    """One electricity meter with two firmware slots."""

    __slots__ = (
        "activate_at",
        "active",
        "device_id",
        "flash",
        "inactive",
        "link_free_at",
        "model",
        "reason",
        "rx",
        "state",
        "transfer_id",
    )

    def __init__(self, device_id: int, model: DeviceModel, active: SlotImage, flash: FlashStore):
        self.device_id = device_id
        self.model = model
        self.flash = flash
        self.active = active  # the slot that runs
        self.inactive: SlotImage | None = None  # a complete, verified image, if any
        self.rx: Reception | None = None  # RAM side of a transfer in progress
        self.transfer_id = 0
        self.state = S.IDLE
        self.reason = Reason.NONE
        self.activate_at = 0.0
        self.link_free_at = 0.0  # when the downlink has finished its last frame (fleet host)

    # -- transfer ---------------------------------------------------------------------

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
        if transfer_id == self.transfer_id and self.inactive is not None:
            return Status(self.device_id, transfer_id, self.state, self.reason, 0, NO_BLOCK, 0)
        if transfer_id == self.transfer_id and self.state is not S.IDLE:
            return Status(self.device_id, transfer_id, self.state, self.reason, 0, NO_BLOCK, 0)
        return Status(self.device_id, transfer_id, self.state, Reason.NO_TRANSFER, 0, 0, 0)

    def on_initiate(self, f: Initiate) -> Status:
        if self.state in (S.ACTIVATING, S.ACTIVATION_SCHEDULED):
            return Status(self.device_id, f.transfer_id, self.state, Reason.REFUSED, 0, 0, 0)
        if f.block_size == 0 or f.image_size == 0:
            return Status(self.device_id, f.transfer_id, self.state, Reason.BAD_REQUEST, 0, 0, 0)
        if f.image_size > self.model.slot_capacity_bytes:
            return Status(
                self.device_id, f.transfer_id, S.VERIFY_FAILED, Reason.TOO_LARGE_FOR_SLOT, 0, 0, 0
            )
        rx = self.rx
        resumable = (
            rx is not None
            and rx.firmware_hash == f.firmware_hash
            and rx.image_size == f.image_size
            and rx.block_size == f.block_size
        )
        self.transfer_id = f.transfer_id
        if resumable:
            assert rx is not None
            rx.transfer_id = f.transfer_id  # same image: keep every block already held
        else:
            # A newer transfer replaces an older, unfinished one.
            self.rx = Reception(f.transfer_id, f.image_size, f.block_size, f.firmware_hash)
            self.inactive = None
        self.state = S.RECEIVING
        self.reason = Reason.NONE
        return self._status(f.transfer_id)

    def on_blocks(self, f: Blocks) -> Status | None:
        """Take a run of blocks; silent unless the run completes the image (then verifies)."""
        rx = self.rx
        if rx is None or rx.transfer_id != f.transfer_id or self.state is not S.RECEIVING:
            return None
        if rx.accept(f.first_block, f.crcs, f.data) is None:
            return None
        if rx.complete:
            self.state = S.RECEIVED
            self._verify()
        return None

    def on_query(self, f: Query) -> Status:
        return self._status(f.transfer_id)

    def _verify(self) -> None:
        rx = self.rx
        assert rx is not None
        self.state = S.VERIFYING
        reason = self._check(rx)
        if reason is Reason.NONE:
            self.state = S.VERIFIED
        else:
            self.state = S.VERIFY_FAILED
            self.reason = reason

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
        self.rx = None
        return Reason.NONE

    # -- activation ---------------------------------------------------------------------

    def on_activate(self, f: Activate, now: float) -> tuple[Activation, float | None]:
        """Answer an ACTIVATE; the float is when the host must call `on_timer` next."""
        slot = self.inactive
        if f.execution_time != IMMEDIATE and f.execution_time - now >= CANCEL_AFTER_SECONDS:
            if self.state is S.ACTIVATION_SCHEDULED:
                self.state = S.CANCELLED
                self.reason = Reason.CANCELLED
                return self._activation(f.transfer_id, now), None
            return self._activation(f.transfer_id, now, Reason.NO_TRANSFER), None
        if slot is None or self.state not in (S.VERIFIED, S.ACTIVATION_SCHEDULED, S.CANCELLED):
            reason = Reason.INCOMPLETE if self.rx is not None else Reason.NO_TRANSFER
            if self.state is S.VERIFY_FAILED:
                reason = self.reason
            return self._activation(f.transfer_id, now, reason), None
        if slot.firmware_hash != f.firmware_hash:
            return self._activation(f.transfer_id, now, Reason.HASH_MISMATCH), None
        self.reason = Reason.NONE
        if f.execution_time == IMMEDIATE or f.execution_time <= now:
            self.state = S.ACTIVATING
            self.activate_at = now
            return self._activation(f.transfer_id, now), now + self.model.reboot_seconds
        self.state = S.ACTIVATION_SCHEDULED
        self.activate_at = f.execution_time
        return self._activation(f.transfer_id, now), f.execution_time

    def on_timer(self, now: float) -> tuple[Activation | None, float | None]:
        """The time the device asked for has come: start or finish an activation."""
        if self.state is S.ACTIVATION_SCHEDULED and now >= self.activate_at:
            self.state = S.ACTIVATING
            return self._activation(self.transfer_id, now), now + self.model.reboot_seconds
        if self.state is S.ACTIVATING:
            new = self.inactive
            assert new is not None
            self.inactive = self.active  # the previous image stays in the other slot
            self.active = new
            self.state = S.ACTIVE
            return self._activation(self.transfer_id, now), None
        return None, None  # a timer for an activation since cancelled or replaced

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

"""Codes that travel on the wire: device states and failure reasons.

An unknown value decodes to an `undefined_0x..` member instead of failing (STYLE 3):
a DCO talking to newer firmware must not fall over on a code it does not know.
"""

from __future__ import annotations

import enum
from typing import Any


class _OpenEnum(enum.IntEnum):
    """An IntEnum that turns unknown values into `undefined_0x..` pseudo-members."""

    @classmethod
    def _missing_(cls, value: Any) -> Any:
        if not isinstance(value, int) or not 0 <= value <= 0xFF:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"undefined_0x{value:02x}"
        member._value_ = value
        return cls._value2member_map_.setdefault(value, member)


class DeviceState(_OpenEnum):
    """Where a device stands with its firmware (DLMS image_transfer_status, widened)."""

    IDLE = 0  # running its active image; nothing in the inactive slot in flight
    RECEIVING = 1  # a transfer was initiated; blocks are arriving in the inactive slot
    RECEIVED = 2  # every block is held; not yet checked
    VERIFYING = 3  # hashing the assembled image and checking its signature and model fit
    VERIFIED = 4  # the inactive slot holds a checked image, ready to activate
    ACTIVATION_SCHEDULED = 5  # verified, waiting for an ExecutionDateTime
    ACTIVATING = 6  # rebooting into the new slot
    ACTIVE = 7  # running the new image
    VERIFY_FAILED = 8  # the assembled image failed a check; the device runs its old image
    ACTIVATION_FAILED = 9  # the new image did not boot; the device booted its old slot again
    CANCELLED = 10  # a pending activation was cancelled (far-future ExecutionDateTime)


class Reason(_OpenEnum):
    """Why a device refused or failed; 0 means no failure. Passed back by the DCO."""

    NONE = 0
    HASH_MISMATCH = 1  # SHA-256 of the assembled image is not the FirmwareHash of the 11.3
    BAD_SIGNATURE = 2  # the manufacturer's ECDSA P-256 signature does not verify
    WRONG_MANUFACTURER = 3  # image manufacturer code is not the device's
    WRONG_IMAGE_TYPE = 4  # image type is not the device model's
    HARDWARE_MISMATCH = 5  # the device's hardware version is outside the image's range
    TOO_LARGE_FOR_SLOT = 6  # the image does not fit the inactive slot
    BAD_IMAGE = 7  # the assembled bytes do not parse as an OTA image
    NO_TRANSFER = 8  # a block, query or activation names a transfer the device does not hold
    INCOMPLETE = 9  # activation asked for before every block arrived
    BOOT_FAILED = 10  # the new image failed to boot; the previous slot runs again
    REFUSED = 11  # the device refused the request (busy, or configured to refuse)
    BAD_REQUEST = 12  # a frame the device could not use (block size, block range)
    TIMEOUT = 13  # the device did not answer in time (set by the DCO, never by a device)
    CANCELLED = 14  # the activation was cancelled
    OFFLINE = 15  # the device could not be reached (set by the DCO)
    BUSY = 16  # the inactive slot is committed to an activation: cancel it or wait
    #: another User's 11.3 holds the device's transfer or pending activation (set by the
    #: DCO, which never ends one User's request because of another's)
    OTHER_ORIGINATOR = 17


FAILED_STATES = frozenset({DeviceState.VERIFY_FAILED, DeviceState.ACTIVATION_FAILED})


class ReadKind(_OpenEnum):
    """Which ordinary service request a background read is (issue 16): the traffic other
    Users send every day, which large-image traffic must not degrade. Each kind has its own
    sizes and target response time in the config (`background.kinds`)."""

    READ_REGISTERS = 1  # an on-demand read of the instantaneous import registers
    READ_DAILY_LOG = 2  # the daily read log (the registers at each midnight)
    READ_PROFILE = 3  # half-hourly profile data
    READ_EVENT_LOG = 4  # the event or security log

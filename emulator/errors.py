"""Exceptions of the emulator package.

EmulatorError (a smets1.errors.Smets1Error)
├── TransitionError     a device asked to move between states that do not connect
├── FleetError          a fleet that cannot be built from its config (keys, models)
└── FlashStateError     a shard's state dir that cannot be used (another fleet's, in use)
"""

from __future__ import annotations

from smets1.errors import Smets1Error


class EmulatorError(Smets1Error):
    """Root of every error the emulator raises on purpose."""


class TransitionError(EmulatorError):
    def __init__(self, device_id: int, current: str, wanted: str) -> None:
        super().__init__(f"device {device_id:016X}: cannot go from {current} to {wanted}")
        self.device_id = device_id
        self.current = current
        self.wanted = wanted


class FleetError(EmulatorError):
    pass


class FlashStateError(EmulatorError):
    pass

"""Exceptions of the DCO mock.

DcoError (a smets1.errors.Smets1Error)
├── ImageRejected       an 11.1 image that does not parse (the ImageError is its cause)
└── UnknownImage        an 11.3 names a FirmwareHash the DCO does not hold
"""

from __future__ import annotations

from smets1.errors import Smets1Error


class DcoError(Smets1Error):
    """Root of every error the DCO mock raises on purpose."""


class ImageRejected(DcoError):
    pass


class UnknownImage(DcoError):
    def __init__(self, firmware_hash: bytes) -> None:
        super().__init__(f"no stored image has FirmwareHash {firmware_hash.hex()}")
        self.firmware_hash = firmware_hash

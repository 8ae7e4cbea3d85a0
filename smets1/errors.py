"""Exceptions of the shared smets1 package.

Smets1Error
├── ImageError          a firmware image that does not parse (field, offset)
├── SigningError        a key or signature file that cannot be used
├── WireError           a binary frame that does not decode (field, offset)
├── ConfigError         a fleet config that does not validate (file, field)
└── BusError            a transport that cannot deliver or connect
"""

from __future__ import annotations


class Smets1Error(Exception):
    """Root of every error the smets1 package raises on purpose."""


class WireError(Smets1Error):
    """A frame that does not decode; names the field and the byte offset."""

    def __init__(self, field: str, offset: int, message: str) -> None:
        super().__init__(f"{field} at offset {offset}: {message}")
        self.field = field
        self.offset = offset


class ConfigError(Smets1Error):
    """A config file that cannot be used; the message names the file and the field."""


class BusError(Smets1Error):
    """A transport failure (publish on a closed bus, broker unreachable)."""

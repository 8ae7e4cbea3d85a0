"""Exceptions of the shared smets1 package, and the one root of every project error.

Every package draws its own tree under `Smets1Error`, so a caller at the top (the
command line) catches one type and prints one line:

Smets1Error                 root of everything the project raises on purpose
├── ImageError              a firmware image that does not parse (field, offset)
├── SigningError            a key or signature file that cannot be used
├── WireError               a binary frame that does not decode (field, offset)
├── ConfigError             a fleet config that does not validate (file, field)
├── BusError                a transport that cannot deliver or connect
├── EmulatorError           emulator.errors: the fleet's devices
├── DcoError                dco_mock.errors: the DCO
├── SchedulerError          scheduler.errors: the DCC side
└── OrchestratorError       orchestrator.errors: commands, role processes, runs
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

"""Exceptions of the shared smets1 package, and the one root of every project error.

Every package draws its own tree under `Smets1Error`, so a caller at the top (the
command line) catches one type and prints one line:

Smets1Error                 root of everything the project raises on purpose
├── DecodeError             bytes that do not decode: which field, at which offset, why
│   ├── ImageError          ... a firmware image
│   ├── WireError           ... a binary frame between the DCO and a device
│   ├── EnvelopeError       ... an MQTT envelope or batch (also a BusError)
│   └── ClockAnnouncementError ... the shared clock's announcement (also a ClockError)
├── SigningError            a key or signature file that cannot be used
├── KeyFileError            an XML-signing certificate or key file of DUIS that cannot
│                           be used (smets1.duis_keys; also a ValueError)
├── ConfigError             a fleet config that does not validate (file, field)
├── BusError                a transport that cannot deliver or connect
├── ClockError              the shared clock: no announcement in time, a bad speed
├── EmulatorError           emulator.errors: the fleet's devices
├── DcoError                dco_mock.errors: the DCO
├── SchedulerError          scheduler.errors: the DCC side
└── OrchestratorError       orchestrator.errors: commands, role processes, runs
"""

from __future__ import annotations

from typing import Any


class Smets1Error(Exception):
    """Root of every error the project raises on purpose."""


class DecodeError(Smets1Error):
    """Bytes that do not decode; names the field, its byte offset, and what was wrong
    (expected against got). Raised by the structs of `smets1.structs`."""

    def __init__(self, field: str, offset: int, message: str) -> None:
        super().__init__(f"{field} at offset {offset}: {message}")
        self.field = field
        self.offset = offset
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable across process boundaries (sharded fleets).
        return (type(self), (self.field, self.offset, self.message))


class ImageError(DecodeError):
    """A firmware image that does not parse: which field, at which byte offset, and why."""


class WireError(DecodeError):
    """A frame that does not decode; names the field and the byte offset."""


class ConfigError(Smets1Error):
    """A config file that cannot be used; the message names the file and the field."""


class BusError(Smets1Error):
    """A transport failure (publish on a closed bus, broker unreachable)."""


class EnvelopeError(DecodeError, BusError):
    """An MQTT message from an MqttBus whose envelope or batch does not decode."""


class ClockError(Smets1Error):
    """The clock a distributed run shares (smets1.shared_clock): no announcement from the
    leader in time, or a speed that cannot be used."""


class ClockAnnouncementError(DecodeError, ClockError):
    """A clock announcement (or speed request) whose bytes do not decode."""

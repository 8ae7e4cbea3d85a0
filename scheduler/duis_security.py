"""DUIS security: what the scheduler signs on the way out and checks on the way in.

The interface the DUIS routes use (issue 12). Until the signing work lands this is the
open door it replaces: nothing is signed and nothing is checked.

- `seal(document)`: the bytes to send, signed with the DCC's key (`scheduler.duis`
  `signing_key`/`signing_certificate`) and, with `schema_dir`, checked against the DUIS
  schema first. Every acknowledgement and response goes through it.
- `authenticate(document)`: the EUI-64 of the User whose configured certificate signed
  the document, or None for an unsigned document where `require_signature` is false
  (the bearer token then says who it is). Refuses with a `scheduler.errors` exception
  carrying the DUIS response code that fits.
"""

from __future__ import annotations

from smets1.config_dcc import SchedulerConfig


class DuisSecurity:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config

    def seal(self, document: bytes) -> bytes:
        return document

    def authenticate(self, document: bytes) -> int | None:
        return None

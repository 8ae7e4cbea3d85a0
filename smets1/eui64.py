"""EUI-64 identifiers of devices and Users, written `00-DB-12-34-56-78-90-A0` in DUIS."""

from __future__ import annotations

import re

_EUI64_RE = re.compile(r"^[0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){7}$")


def format_eui64(value: int) -> str:
    return value.to_bytes(8, "big").hex("-").upper()


def parse_eui64(text: str) -> int:
    """Parse `00-DB-12-34-56-78-90-A0` (dashes, colons or none); ValueError names the text."""
    if not isinstance(text, str) or not _EUI64_RE.match(text.strip()):
        raise ValueError(f"expected an EUI-64 like 00-DB-12-34-56-78-90-A0, got {text!r}")
    return int(re.sub(r"[-:]", "", text.strip()), 16)

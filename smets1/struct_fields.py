"""The vocabulary of `smets1.structs`: wire types, field options and the compiled entry.

A struct declares its fields with these in `Annotated` metadata (see smets1.structs);
`Layout` (smets1.structs) compiles them into `Entry`s, and smets1.structs_codegen writes
code from the entries. Both stand on this module, which imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

Check = Callable[[Any, Mapping[str, Any]], "str | None"]
ErrorType = Callable[[str, int, str], Exception]

# -- wire types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fixed:
    """A value of `size` bytes that one `struct` format code packs ("B", "I", "32s")."""

    shape: ClassVar[str] = "fixed"
    code: str
    size: int
    decode: Callable[[Any], Any] | None = None  # the raw value -> the field's value
    encode: Callable[[Any], Any] | None = None  # the field's value -> the raw value

    @property
    def bits(self) -> int | None:
        """Width of an unsigned integer, None for other codes."""
        return self.size * 8 if self.code in ("B", "H", "I", "Q") else None


u8 = Fixed("B", 1)
u16 = Fixed("H", 2)
u32 = Fixed("I", 4)
u64 = Fixed("Q", 8)
f64 = Fixed("d", 8)


def Bytes(size: int) -> Fixed:
    """Exactly `size` bytes, decoded as bytes."""
    return Fixed(f"{size}s", size)


def _text_decode(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("utf-8", "surrogateescape")


def _text_encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def Text(size: int) -> Fixed:
    """UTF-8 text NUL-padded to `size` bytes; surrogateescape lets bytes that are not
    UTF-8 survive a round trip exactly. The struct's class refuses text that is too long."""
    return Fixed(f"{size}s", size, _text_decode, _text_encode)


@dataclass(frozen=True, slots=True)
class LVBytes:
    """Bytes behind their length (zigpy LVBytes). Decoded as a zero-copy memoryview into
    the buffer, so a 64 KiB run of blocks is not copied."""

    prefix: Fixed


@dataclass(frozen=True, slots=True)
class LVList:
    """Fixed-size items behind their count (zigpy LVList), decoded as a tuple."""

    item: Fixed
    prefix: Fixed


@dataclass(frozen=True, slots=True)
class Items:
    """Fixed-size items, as many as the earlier field `count` says; decoded as a tuple."""

    shape: ClassVar[str] = "items"
    item: Fixed
    count: str


@dataclass(frozen=True, slots=True)
class SizedBytes:
    """Bytes whose length is `size(earlier field)` (the field itself if `size` is None).
    Decoded as bytes (a copy, for small fields such as a bitmap), or with `view` as a
    zero-copy memoryview."""

    shape: ClassVar[str] = "bytes"
    field: str
    size: Callable[[int], int] | None = None
    view: bool = False


WIRE_TYPES = (Fixed, LVBytes, LVList, Items, SizedBytes)

# -- field options ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """On a ClassVar: the class's value goes on the wire and must come back on decode.
    `message` is formatted with `expected` and `got`, or called with them; `name` is the
    field's name in errors when it is not the attribute's."""

    message: str | Callable[[Any, Any], str] = "expected {expected}, got {got}"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Flag:
    """A condition: every bit of `mask` is set in the earlier field `field`."""

    field: str
    mask: int

    def holds(self, values: Mapping[str, Any]) -> bool:
        return (int(values[self.field]) & int(self.mask)) == int(self.mask)


@dataclass(frozen=True, slots=True)
class Field:
    """How one field behaves besides its wire type.

    requires: present only when this flag holds (zigpy's ``requires=``), else None.
    check: called as check(value, fields read so far) when the field is read; a string it
        returns is the error message for this field.
    check_after: run the check once this later field is read instead (a length that the
        flags after it announce).
    fill: what to write when the attribute is None (a checksum computed on serialize).
    """

    requires: Flag | None = None
    check: Check | None = None
    check_after: str | None = None
    fill: Callable[[Any], Any] | None = None


# -- the compiled entry ----------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    """One item on the wire, in wire order."""

    name: str  # the attribute, or a made-up name for a length prefix
    label: str  # the field's name in errors
    wire: Fixed | Items | SizedBytes
    kind: str  # "attr": a dataclass field; "const": the class's value; "count": a len()
    value: Any = None  # kind "const"
    of: str = ""  # kind "count": whose len()
    message: str | Callable[[Any, Any], str] = ""  # kind "const"
    convert: Callable[[Any], Any] | None = None
    encode: Callable[[Any], Any] | None = None
    requires: Flag | None = None
    check: Check | None = None
    check_after: str | None = None
    fill: Callable[[Any], Any] | None = None
    section: str | None = None

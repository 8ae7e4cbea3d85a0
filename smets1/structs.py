"""Binary structs declared once: both directions, sizes, flags and errors from one class.

A struct is a slotted dataclass whose fields carry their wire type in `Annotated` metadata,
in the manner of zigpy's ``zigpy/types/struct.py`` (STYLE 1)::

    @binary(endian="<", error=WireError)
    class Ping(Struct):
        KIND: ClassVar[Annotated[int, u8, Const()]] = 0xA5  # written, checked on decode
        seq: Annotated[int, u32]
        flags: Annotated[PingFlags, u8]  # an enum type: the enum decodes the value
        extra: Annotated[int | None, u16, Field(requires=Flag("flags", PingFlags.EXTRA))] = None
        payload: Annotated[bytes | memoryview, LVBytes(u16)] = b""

    Ping(7, PingFlags(0)).serialize() -> bytes
    Ping.deserialize(data) -> (Ping, the bytes after it)

Why one declaration: which optional fields are present, the size a set of flags announces,
the flags a set of fields needs, the checks, and both directions all follow from it, so
they cannot drift apart as hand-written copies of a layout do.

Why generated code: frames are the hot path. At class creation each layout is compiled
once: consecutive fixed-size fields share one precompiled `struct.Struct`, and
`serialize` and `decode_at` are generated as straight-line Python (as `dataclasses` does
for `__init__`), so a fully fixed struct packs or unpacks in one call. When the buffer is
short or a check fails, the generated code hands over to `Layout.walk`, a plain
interpreter of the same declaration that reads field by field and raises the error.

Errors: decoding raises the struct's `error` type, called as (field, offset, message):
the field, its byte offset in the buffer, what was expected and what was found. A check
runs as soon as its field is read, so a short file with a wrong magic is reported as a
wrong magic, not as a truncation. The fixed-size fields a class declares with `section=`
are read as one unit, and a truncation inside the unit names the section.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import struct as _struct
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, NoReturn, Self, TypeVar, cast, dataclass_transform

from smets1.errors import DecodeError
from smets1.struct_fields import WIRE_TYPES as _WIRE_TYPES
from smets1.struct_fields import (
    Bytes,
    Check,
    Const,
    Entry,
    ErrorType,
    Field,
    Fixed,
    Flag,
    Items,
    LVBytes,
    LVList,
    SizedBytes,
    Text,
    f64,
    u8,
    u16,
    u32,
    u64,
)
from smets1.structs_codegen import generate

__all__ = [
    "Bytes",
    "Const",
    "Field",
    "Fixed",
    "Flag",
    "Items",
    "LVBytes",
    "LVList",
    "Layout",
    "SizedBytes",
    "Struct",
    "Text",
    "binary",
    "f64",
    "u8",
    "u16",
    "u32",
    "u64",
]

_B = TypeVar("_B", bytes, bytearray, memoryview)
_S = TypeVar("_S", bound="Struct")


@dataclass(frozen=True, slots=True)
class _Unit:
    """What `walk` reads at once: a section, or a single entry."""

    label: str
    entries: tuple[Entry, ...]
    packer: _struct.Struct | None  # fixed units


@dataclass(frozen=True, slots=True)
class _Options:
    endian: str
    error: ErrorType
    truncated: str


_DEFAULTS = _Options("<", DecodeError, "expected at least {end} bytes, got {got}")
_MISSING = object()


class Layout:
    """The compiled declaration of one struct class, and what can be derived from it."""

    def __init__(self, cls: type, entries: list[Entry], options: _Options) -> None:
        self.cls = cls
        self.entries = tuple(entries)
        self.endian = options.endian
        self.error = options.error
        self.truncated = options.truncated
        self.concrete = all(e.kind != "const" or e.value is not _MISSING for e in entries)
        self.init_fields = [f for f in dataclasses.fields(cls) if f.init]
        _validate(cls.__name__, self.entries, {f.name for f in self.init_fields})
        self.units = _units(self.entries, self.endian)
        self._deferred: dict[str, list[Entry]] = {}
        for e in self.entries:
            if e.check is not None and e.check_after is not None:
                self._deferred.setdefault(e.check_after, []).append(e)
        self.source = ""  # the generated code, for a curious reader
        #: (name, bits) of each unsigned integer attribute, and (flag, name) of each
        #: optional one: what `check_ranges` and `check_presence` walk, found once.
        self._ranged = [
            (e.name, e.wire.bits)
            for e in self.entries
            if e.kind == "attr" and isinstance(e.wire, Fixed) and e.wire.bits is not None
        ]
        self._optional = [(e.requires, e.name) for e in self.entries if e.requires is not None]

    def __repr__(self) -> str:
        return f"<Layout of {self.cls.__name__}: {', '.join(e.label for e in self.entries)}>"

    def size(self, **values: Any) -> int:
        """Bytes on the wire of an all-fixed layout, given the fields its flags live in."""
        total = 0
        for e in self.entries:
            if not isinstance(e.wire, Fixed):
                raise TypeError(f"{self.cls.__name__}.{e.label} has no fixed size")
            if e.requires is None or e.requires.holds(values):
                total += e.wire.size
        return total

    def flags(self, field: str, **present: Any) -> int:
        """The bits of `field` that announce the optional fields given a value in `present`."""
        bits = 0
        for e in self.entries:
            if e.requires is not None and e.requires.field == field:
                if present.get(e.name) is not None:
                    bits |= int(e.requires.mask)
        return bits

    def all_flags(self, field: str) -> int:
        """Every bit of `field` that announces a field."""
        return self.flags(field, **{e.name: True for e in self.entries})

    def check_presence(self, obj: object) -> None:
        """ValueError unless each optional field is set exactly when its flag says so."""
        for flag, name in self._optional:
            flags = int(getattr(obj, flag.field))
            if flag.holds({flag.field: flags}) != (getattr(obj, name) is not None):
                width = 2 * cast(Fixed, self._entry(flag.field).wire).size
                raise ValueError(f"{flag.field} 0x{flags:0{width}X} disagrees with {name}")

    def check_ranges(self, obj: object) -> None:
        """ValueError for an unsigned integer attribute that does not fit its width."""
        for name, bits in self._ranged:
            value = getattr(obj, name)
            if value is not None and not 0 <= value < 1 << bits:
                raise ValueError(f"{name} must fit in {bits} bits unsigned, got {value}")

    def offset(self, name: str) -> int:
        """Where the named field starts, for a field after fixed, unconditional ones."""
        return self.reader(name).size - cast(Fixed, self._entry(name).wire).size

    def reader(self, *names: str) -> _struct.Struct:
        """A precompiled `struct.Struct` that picks the named fields, in wire order, out of
        the front of a buffer: for a peek at a few fields without decoding the rest."""
        fmt, offset, end, wanted = [self.endian], 0, 0, list(names)
        unknown = set(names) - {e.name for e in self.entries}
        if unknown:
            raise ValueError(f"{self.cls.__name__} has no field {sorted(unknown)[0]!r}")
        for e in self.entries:
            if not wanted:
                break
            if not isinstance(e.wire, Fixed) or e.requires is not None:
                raise TypeError(f"{self.cls.__name__}.{e.label} has no fixed offset")
            if e.name == wanted[0]:
                fmt.append(f"{offset - end}x{e.wire.code}")
                end = offset + e.wire.size
                wanted.pop(0)
            offset += e.wire.size
        if wanted:
            raise ValueError(f"{self.cls.__name__} has no {wanted[0]!r} after the others")
        return _struct.Struct("".join(fmt))

    def walk(self, data: memoryview, start: int = 0) -> tuple[dict[str, Any], int]:
        """Decode unit by unit from `start`: every value by name, and where it ends.

        The reference the generated decoder follows, and where every decoding error is
        raised: slow and simple, it runs only when the fast path meets something wrong.
        """
        values: dict[str, Any] = {}
        offsets: dict[str, int] = {}
        n = len(data)
        offset = start
        for unit in self.units:
            head = unit.entries[0]
            if head.requires is not None and not head.requires.holds(values):
                values.update(dict.fromkeys((e.name for e in unit.entries), None))
                continue
            wire = head.wire
            if unit.packer is not None:
                size = unit.packer.size
            elif isinstance(wire, Items):
                size = values[wire.count] * wire.item.size
            else:
                wire = cast(SizedBytes, wire)
                size = values[wire.field] if wire.size is None else wire.size(values[wire.field])
            if n < offset + size:
                left = n - offset
                message = self.truncated.format(end=offset + size, got=n, size=size, left=left)
                raise self.error(unit.label, offset, message)
            if unit.packer is not None:
                rel = offset
                for e, raw in zip(unit.entries, unit.packer.unpack_from(data, offset), strict=True):
                    offsets[e.name] = rel
                    rel += cast(Fixed, e.wire).size
                    self._accept(e, raw, values, offsets)
            else:
                offsets[head.name] = offset
                if isinstance(wire, Items):
                    fmt = f"{self.endian}{values[wire.count]}{wire.item.code}"
                    values[head.name] = _struct.unpack_from(fmt, data, offset)
                elif isinstance(wire, SizedBytes) and not wire.view:
                    values[head.name] = bytes(data[offset : offset + size])
                else:
                    values[head.name] = data[offset : offset + size]
            offset += size
        return values, offset

    def fail(self, data: memoryview, start: int) -> NoReturn:
        """Raise the error the fast path met, as `walk` words it."""
        self.walk(data, start)
        raise AssertionError(f"{self.cls.__name__}: walk accepts what the generated code refused")

    def _accept(
        self, e: Entry, raw: Any, values: dict[str, Any], offsets: Mapping[str, int]
    ) -> None:
        if e.kind == "const" and raw != e.value:
            m = e.message
            wrong = m(e.value, raw) if callable(m) else m.format(expected=e.value, got=raw)
            raise self.error(e.label, offsets[e.name], wrong)
        values[e.name] = raw if e.convert is None else e.convert(raw)
        owners = [e] if e.check is not None and e.check_after is None else []
        for owner in owners + self._deferred.get(e.name, []):
            text = cast(Check, owner.check)(values[owner.name], values)
            if text is not None:
                raise self.error(owner.label, offsets[owner.name], text)

    def _entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)


def _validate(where: str, entries: tuple[Entry, ...], init: set[str]) -> None:
    """TypeError for a declaration whose fields refer to what is not before them."""
    before: set[str] = set()
    for e in entries:
        wire: Any = e.wire
        refs = (
            e.requires and e.requires.field,
            getattr(wire, "count", 0),
            getattr(wire, "field", 0),
        )
        for ref in refs:
            if ref and ref not in before:
                raise TypeError(f"{where}.{e.label} refers to {ref!r}, which is not before it")
        before.add(e.name)
    attrs = {e.name for e in entries if e.kind == "attr"}
    if attrs != init:
        raise TypeError(f"{where}: on the wire {sorted(attrs)}, in __init__ {sorted(init)}")
    for e in entries:
        if e.kind == "count" and e.of not in attrs:
            raise TypeError(f"{where}.{e.label} counts {e.of!r}, which is not a field")
        if e.check_after is not None and e.check_after not in before:
            raise TypeError(f"{where}.{e.label} checks after {e.check_after!r}, not a field")


def _units(entries: tuple[Entry, ...], endian: str) -> tuple[_Unit, ...]:
    groups: list[list[Entry]] = []
    for e in entries:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and e.section is not None
            and e.section == last.section
            and e.requires is None
            and last.requires is None
        ):
            groups[-1].append(e)
        else:
            groups.append([e])
    units = []
    for group in groups:
        head = group[0]
        packer = None
        if isinstance(head.wire, Fixed):
            packer = _struct.Struct(endian + "".join(e.wire.code for e in group))  # type: ignore[union-attr]
        units.append(_Unit(head.section or head.label, tuple(group), packer))
    return tuple(units)


# -- the declaration -------------------------------------------------------------------------


class Struct:
    """Base of declared structs; `binary` compiles each subclass and fills in its methods."""

    __slots__ = ()
    LAYOUT: ClassVar[Layout]

    def serialize(self) -> bytes:
        raise TypeError(f"{type(self).__name__} is abstract: a Const has no value")

    @classmethod
    def decode_at(cls, data: memoryview, offset: int = 0) -> tuple[Self, int]:
        """Decode from `offset` of a byte memoryview; return the struct and where it ends."""
        raise TypeError(f"{cls.__name__} is abstract: a Const has no value")

    @classmethod
    def deserialize(cls, data: _B) -> tuple[Self, _B]:
        """Decode from the front of `data`; return the struct and the bytes after it, of
        the type `data` has."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        obj, end = cls.decode_at(view, 0)
        if isinstance(data, memoryview):
            return obj, cast(_B, view[end:])
        return obj, data[end:]


@dataclass_transform(field_specifiers=(dataclasses.field,))
def binary(
    *,
    endian: str | None = None,
    error: ErrorType | None = None,
    truncated: str | None = None,
    section: str | None = None,
    wire_order: tuple[str, ...] | None = None,
    frozen: bool = False,
) -> Callable[[type[_S]], type[_S]]:
    """Make a `Struct` subclass a slotted dataclass and compile its layout.

    endian: "<" or ">" (inherited; "<" by default). error: called as (field, offset,
    message) for what does not decode (inherited). truncated: the message for a short
    buffer, formatted with end, got, size and left (inherited). section: the name of the
    unit the class's own fixed-size fields are read as. wire_order: the class's own fields
    in wire order, when it is not the constructor's. Methods the class body defines itself
    are kept.
    """

    def build(cls: type[_S]) -> type[_S]:
        own = list(inspect.get_annotations(cls))
        made = dataclasses.dataclass(cls, slots=True, frozen=frozen)
        parent = next((k for k in made.__mro__[1:] if "_struct_options" in k.__dict__), None)
        base = parent.__dict__["_struct_options"] if parent is not None else _DEFAULTS
        options = _Options(endian or base.endian, error or base.error, truncated or base.truncated)
        hints = typing.get_type_hints(made, include_extras=True)
        declared = _declared(made, own, hints, section)
        if wire_order is not None:
            if sorted(wire_order) != sorted(declared):
                raise TypeError(f"{made.__name__}: wire_order {wire_order} != {list(declared)}")
            declared = {name: declared[name] for name in wire_order}
        made._struct_options = options  # type: ignore[attr-defined]
        made._struct_own = [e for group in declared.values() for e in group]  # type: ignore[attr-defined]
        entries = []
        for klass in reversed(made.__mro__):
            for e in klass.__dict__.get("_struct_own", ()):
                value = getattr(made, e.name, _MISSING) if e.kind == "const" else None
                entries.append(dataclasses.replace(e, value=value))
        layout = Layout(made, entries, options)
        made.LAYOUT = layout
        if layout.concrete:
            serialize, decode_at = generate(layout)
            if "serialize" not in cls.__dict__:
                made.serialize = serialize  # type: ignore[method-assign]
            if "decode_at" not in cls.__dict__:
                made.decode_at = classmethod(decode_at)  # type: ignore[method-assign,assignment]
        return made

    return build


def _declared(
    cls: type, names: list[str], hints: dict[str, Any], section: str | None
) -> dict[str, list[Entry]]:
    """The entries of the fields a class declares itself, by field."""
    out: dict[str, list[Entry]] = {}
    for name in names:
        hint = hints[name]
        classvar = typing.get_origin(hint) is ClassVar
        if classvar:
            hint = typing.get_args(hint)[0]
        if typing.get_origin(hint) is not Annotated:
            continue
        pytype, *meta = typing.get_args(hint)
        wires = [m for m in meta if isinstance(m, _WIRE_TYPES)]
        if not wires:
            continue
        where = f"{cls.__name__}.{name}"
        if len(wires) > 1:
            raise TypeError(f"{where} has two wire types")
        wire = wires[0]
        opts = next((m for m in meta if isinstance(m, Field)), Field())
        const = next((m for m in meta if isinstance(m, Const)), None)
        if (opts.requires or opts.check or opts.fill) and not isinstance(wire, Fixed):
            raise TypeError(f"{where}: requires, check and fill need a fixed-size field")
        e = Entry(name, name, wire, "attr", requires=opts.requires, check=opts.check)  # type: ignore[arg-type]
        e.check_after, e.fill = opts.check_after, opts.fill
        if classvar:
            if const is None:
                raise TypeError(f"{where}: a ClassVar on the wire needs Const()")
            e.kind, e.label, e.message = "const", const.name or name, const.message
        if isinstance(wire, Fixed):
            if e.kind == "attr":  # a const is compared, never kept
                e.convert = wire.decode or _enum_converter(pytype)
                e.encode = wire.encode
            e.section = section
            out[name] = [e]
        elif isinstance(wire, LVBytes | LVList):
            prefix = Entry(f"_{name}_length", name, wire.prefix, "count", of=name)
            if isinstance(wire, LVBytes):
                e.wire = SizedBytes(prefix.name, None, view=True)
            else:
                e.wire = Items(wire.item, prefix.name)
            out[name] = [prefix, e]
        else:
            out[name] = [e]
    return out


def _enum_converter(pytype: Any) -> Callable[[int], Any] | None:
    """The raw value to its member: a dictionary lookup for a plain enum (a call of the
    class is several times slower, and frames decode one or two each); the class itself,
    which also reports an unknown value, for anything else."""
    cls = _enum_in(pytype)
    if cls is None:
        return None
    if issubclass(cls, enum.Flag):
        return cls  # a flag's value may combine members: the class works it out
    known = cls._value2member_map_.get

    def convert(value: int) -> Any:
        member = known(value)
        return member if member is not None else cls(value)

    return convert


def _enum_in(pytype: Any) -> type[enum.Enum] | None:
    for t in typing.get_args(pytype) or (pytype,):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return t
    return None

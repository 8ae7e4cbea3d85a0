"""Code generation for `smets1.structs`: the straight-line `serialize` and `decode_at` of
one compiled layout.

Why generate: a generic loop over fields costs a Python call or two per field, and frames
are the hot path. The generated code looks like what one would write by hand: one
precompiled `struct.Struct` per run of consecutive fixed-size fields (one call for a fully
fixed struct), the enum calls and checks inline. It decides only whether the bytes are
good; when they are not it calls `Layout.fail`, which decodes again field by field and
raises the error that names the field, so there is one source of error messages.

It reads the entries (smets1.struct_fields) and the few attributes of a layout that
`Layout` below names, so it imports nothing from smets1.structs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol, cast

from smets1.struct_fields import Entry, Fixed, Flag


class Layout(Protocol):
    """What code generation reads of a compiled layout (smets1.structs.Layout)."""

    cls: type
    entries: tuple[Entry, ...]
    endian: str
    init_fields: list[Any]
    source: str

    def fail(self, data: Any, start: int) -> Any: ...


Source = list[str]


def _segments(entries: tuple[Entry, ...]) -> list[list[Entry]]:
    """Runs of consecutive fixed-size entries under the same condition; others alone."""
    out: list[list[Entry]] = []
    for e in entries:
        last = out[-1][-1] if out else None
        if (
            last is not None
            and e.wire.shape == "fixed"
            and last.wire.shape == "fixed"
            and e.requires == last.requires
        ):
            out[-1].append(e)
        else:
            out.append([e])
    return out


def _condition(flag: Flag | None, prefix: str) -> str | None:
    if flag is None:
        return None
    mask = int(flag.mask)
    return f"({prefix}{flag.field} & {mask:#x}) == {mask:#x}"


def generate(layout: Layout) -> tuple[Callable[..., bytes], Callable[..., Any]]:
    """serialize(self) and decode_at(cls, data, offset=0) for `layout`."""
    ns: dict[str, Any] = {"_pack": struct.pack, "_unpack_from": struct.unpack_from}
    ns["_fail"] = layout.fail
    segments = _segments(layout.entries)
    source = [*_serialize(layout, segments, ns), "", *_decode(layout, segments, ns)]
    layout.source = "\n".join(source)
    exec(compile(layout.source, f"<struct {layout.cls.__qualname__}>", "exec"), ns)
    return ns["serialize"], ns["decode_at"]


def _argument(e: Entry, ns: dict[str, Any]) -> str:
    if e.kind == "const":
        ns[f"_k_{e.name}"] = e.value
        return f"_k_{e.name}"
    if e.kind == "count":
        return f"len(self.{e.of})"
    expr = f"self.{e.name}"
    if e.fill is not None:
        ns[f"_fill_{e.name}"] = e.fill
        expr = f"(_fill_{e.name}(self) if {expr} is None else {expr})"
    if e.encode is not None:
        ns[f"_enc_{e.name}"] = e.encode
        expr = f"_enc_{e.name}({expr})"
    return expr


def _serialize(layout: Layout, segments: list[list[Entry]], ns: dict[str, Any]) -> Source:
    lines = ["def serialize(self):"]
    kinds = {e.name: e.kind for e in layout.entries}
    parts: list[tuple[str | None, str]] = []
    for k, seg in enumerate(segments):
        head = seg[0]
        shape = head.wire.shape
        if shape == "fixed":
            ns[f"_s{k}"] = struct.Struct(layout.endian + "".join(e.wire.code for e in seg))  # type: ignore[union-attr]
            expr = f"_s{k}.pack({', '.join(_argument(e, ns) for e in seg)})"
        elif shape == "items":
            code = head.wire.item.code  # type: ignore[union-attr]
            expr = f"_pack(f'{layout.endian}{{len(self.{head.name})}}{code}', *self.{head.name})"
        else:
            expr = f"self.{head.name}"
        # A length that is a field of its own must agree, or the bytes would not decode.
        size_field = getattr(head.wire, "count", None) or getattr(head.wire, "field", None)
        if size_field is not None and kinds[size_field] == "attr":
            size = f"self.{size_field}"
            if getattr(head.wire, "size", None) is not None:
                ns[f"_size_{head.name}"] = head.wire.size  # type: ignore[union-attr]
                size = f"_size_{head.name}({size})"
            lines.append(f"    if len(self.{head.name}) != {size}:")
            lines.append(
                f"        raise ValueError(f'{head.name} is {{len(self.{head.name})}} long,"
                f" {size_field} {{self.{size_field}}} needs {{{size}}}')"
            )
        parts.append((_condition(head.requires, "self."), expr))
    if all(cond is None for cond, _ in parts):
        if len(parts) == 1 and segments[0][0].wire.shape == "fixed":
            lines.append(f"    return {parts[0][1]}")
        else:
            lines.append(f"    return b''.join(({', '.join(expr for _, expr in parts)},))")
        return lines
    lines.append("    parts = []")
    for cond, expr in parts:
        if cond is None:
            lines.append(f"    parts.append({expr})")
        else:
            lines += [f"    if {cond}:", f"        parts.append({expr})"]
    lines.append("    return b''.join(parts)")
    return lines


def _accept(layout: Layout, e: Entry, ind: str, seen: list[str], ns: dict[str, Any]) -> Source:
    """Lines that check and convert entry `e` just read, as `Layout._accept` does."""
    lines = []
    var = f"f_{e.name}"
    if e.kind == "const":
        ns[f"_k_{e.name}"] = e.value
        lines += [f"{ind}if {var} != _k_{e.name}:", f"{ind}    _fail(data, start)"]
    if e.convert is not None:
        ns[f"_conv_{e.name}"] = e.convert
        lines.append(f"{ind}{var} = _conv_{e.name}({var})")
    owners = [e] if e.check is not None and e.check_after is None else []
    owners += [d for d in layout.entries if d.check is not None and d.check_after == e.name]
    fields = "{" + ", ".join(f"{name!r}: f_{name}" for name in seen) + "}"
    for owner in owners:
        ns[f"_check_{owner.name}"] = owner.check
        lines.append(f"{ind}if _check_{owner.name}(f_{owner.name}, {fields}) is not None:")
        lines.append(f"{ind}    _fail(data, start)")
    return lines


def _need(ind: str, size: str) -> Source:
    return [f"{ind}end = offset + {size}", f"{ind}if n < end:", f"{ind}    _fail(data, start)"]


def _decode(layout: Layout, segments: list[list[Entry]], ns: dict[str, Any]) -> Source:
    lines = ["def decode_at(cls, data, offset=0):", "    n = len(data)", "    start = offset"]
    seen: list[str] = []
    for k, seg in enumerate(segments):
        head = seg[0]
        wire: Any = head.wire
        cond = _condition(head.requires, "f_")
        ind = "    "
        if cond is not None:
            lines.append(f"    if {cond}:")
            ind = "        "
        var = f"f_{head.name}"
        if wire.shape == "fixed":
            total = sum(cast("Fixed", e.wire).size for e in seg)
            lines += _need(ind, str(total))
            targets = "".join(f"f_{e.name}, " for e in seg)
            lines.append(f"{ind}{targets}= _s{k}.unpack_from(data, offset)")
            for e in seg:
                seen.append(e.name)
                lines += _accept(layout, e, ind, seen, ns)
            lines.append(f"{ind}offset = end")
        else:
            seen.append(head.name)
            if wire.shape == "items":
                size = f"f_{wire.count} * {wire.item.size}"
                fmt = f"f'{layout.endian}{{f_{wire.count}}}{wire.item.code}'"
                value = f"_unpack_from({fmt}, data, offset)"
            else:
                size = f"f_{wire.field}"
                if wire.size is not None:
                    ns[f"_size_{head.name}"] = wire.size
                    size = f"_size_{head.name}({size})"
                value = "data[offset:end]" if wire.view else "bytes(data[offset:end])"
            lines += _need(ind, size)
            lines += [f"{ind}{var} = {value}", f"{ind}offset = end"]
        if cond is not None:
            lines += ["    else:", "        " + " = ".join(f"f_{e.name}" for e in seg) + " = None"]
    init = [f.name for f in layout.init_fields]
    lines.append(f"    return cls({', '.join(f'f_{name}' for name in init)}), offset")
    return lines

"""YAML for fleet configs: duplicate keys refused, every field's line kept, errors with
file and line.

PyYAML's `safe_load` lets a repeated key silently win over the first, names
`<unicode string>` instead of the file, and lets a few Python errors out untranslated (a
timestamp with month 13, an integer of 5,000 digits, deep nesting). `load_yaml` parses
once into nodes, walks them (duplicate keys, the line of each field, how many values the
aliases expand to), then constructs the data from the same nodes.

    data, lines = load_yaml(text, "fleet.yaml")
    lines[("devices", 0, "count")] -> 12       # 1-based line of that key
    line_of(lines, ("devices", 0, "count", "x")) -> 12   # the nearest enclosing field
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.scanner import ScannerError

from smets1.errors import ConfigError
from smets1.limits import MAX_CONFIG_NESTING, MAX_CONFIG_VALUES

Path = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose Python errors while constructing a value become YAML errors with
    the value's position, and which stops at MAX_CONFIG_NESTING brackets deep."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_CONFIG_NESTING:
            raise ScannerError(
                None, None, f"nested more than {MAX_CONFIG_NESTING} deep", self.get_mark()
            )
        super().fetch_flow_collection_start(TokenClass)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, str(exc), node.start_mark) from exc


def _where(name: str, mark: Any) -> str:
    return f"{name}:{mark.line + 1}:{mark.column + 1}"


def _yaml_message(name: str, exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        text = exc.problem or "cannot be read"
        if exc.context and exc.context_mark is not None:
            text += f" ({exc.context} at line {exc.context_mark.line + 1})"
        elif exc.context:
            text += f" ({exc.context})"
        return f"{_where(name, exc.problem_mark)}: not valid YAML: {text}"
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"{name}: not valid YAML: character #x{exc.character:04x} at offset"
            f" {exc.position} is not allowed"
        )
    return f"{name}: not valid YAML: {exc}"


class _Walk:
    """One pass over the node tree: lines of fields, duplicate keys, expanded size."""

    def __init__(self, loader: _Loader, name: str) -> None:
        self.loader = loader
        self.name = name
        self.lines: dict[Path, int] = {}
        self.sizes: dict[int, int] = {}  # id(node) -> values it expands to
        self.open: set[int] = set()  # nodes being walked: seeing one again is a cycle

    def node(self, node: Node, path: Path, line: int) -> int:
        self.lines.setdefault(path, line)
        key = id(node)
        if key in self.sizes:  # an alias: its lines are the anchor's; size is known
            return self.sizes[key]
        if key in self.open:
            raise ConfigError(
                f"{_where(self.name, node.start_mark)}: {_dotted(path)}: an alias refers to"
                " a value that holds it (a recursive structure)"
            )
        self.open.add(key)
        size = 1
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                size += self.node(item, (*path, i), item.start_mark.line + 1)
        elif isinstance(node, MappingNode):
            size += self.mapping(node, path)
        self.open.discard(key)
        self.sizes[key] = size
        if size > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{_where(self.name, node.start_mark)}: {_dotted(path)}: expands to more than"
                f" {MAX_CONFIG_VALUES:,} values through aliases (*name); write it out instead"
            )
        return size

    def mapping(self, node: MappingNode, path: Path) -> int:
        seen: dict[Any, int] = {}
        size = 0
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                size += self.node(value_node, path, key_node.start_mark.line + 1)
                continue
            line = key_node.start_mark.line + 1
            key: Any = key_node.value if isinstance(key_node, ScalarNode) else None
            if isinstance(key_node, ScalarNode):
                key = self.loader.construct_object(key_node, deep=True)
            if key is not None and _hashable(key):
                if key in seen:
                    raise ConfigError(
                        f"{self.name}:{line}: {_dotted((*path, key))}: duplicate key (first at"
                        f" line {seen[key]}); a key may appear once in a mapping"
                    )
                seen[key] = line
            field = key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)
            size += self.node(value_node, (*path, field), line)
        return size


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def load_yaml(text: str, name: str) -> tuple[Any, dict[Path, int]]:
    """The data of a YAML document and the 1-based line of each field by path; ConfigError
    naming `name`, the line and what is wrong for anything that cannot be used."""
    loader = _Loader(text)
    loader.name = name  # marks name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        walk = _Walk(loader, name)
        walk.node(node, (), node.start_mark.line + 1)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(name, exc)) from None
    except RecursionError:
        raise ConfigError(f"{name}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, walk.lines


def line_of(lines: Mapping[Path, int], path: Sequence[Any]) -> int | None:
    """The line of `path`, or of the nearest field that encloses it."""
    loc = tuple(path)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None

"""The layering, read from the imports: core ← roles ← composition root, nothing back.

    smets1        the core: imports no role and not the composition root
    emulator, dco_mock, scheduler
                  the roles: each imports the core only, never another role
    orchestrator  the composition root: may import anything; nothing imports it

Every import counts, wherever it stands (module level, inside a function, under
TYPE_CHECKING): each is an arrow in the design. Inside a package, modules import each
other without cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "smets1"
ROLES = ("emulator", "dco_mock", "scheduler")
COMPOSITION = "orchestrator"
PACKAGES = (CORE, *ROLES, COMPOSITION)


@dataclass(frozen=True)
class Import:
    file: str  # relative to the tree, e.g. "smets1/wire.py"
    line: int
    module: str  # the module imported, e.g. "emulator.device"


def module_name(tree: Path, path: Path) -> str:
    parts = list(path.relative_to(tree).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: Path, path: Path) -> Iterator[Import]:
    here = module_name(tree, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(str(path.relative_to(tree)), node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` may name a module: count pkg.mod as well as pkg.
            yield Import(str(path.relative_to(tree)), node.lineno, base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if (tree / Path(*candidate.split("."))).with_suffix(".py").exists():
                    yield Import(str(path.relative_to(tree)), node.lineno, candidate)


def top(module: str) -> str:
    return module.split(".", 1)[0]


def layering_violations(tree: Path) -> list[str]:
    """Each import that breaks the layering, as `file:line imports module: rule`."""
    out = []
    for package in PACKAGES:
        for path in sorted((tree / package).rglob("*.py")):
            for imp in imports_of(tree, path):
                target = top(imp.module)
                rule = None
                if target == COMPOSITION and package != COMPOSITION:
                    rule = "nothing imports the composition root"
                elif package == CORE and target in ROLES:
                    rule = "the core imports no role"
                elif package in ROLES and target in ROLES and target != package:
                    rule = "a role never imports another role"
                if rule:
                    out.append(f"{imp.file}:{imp.line} imports {imp.module}: {rule}")
    return out


def import_cycles(tree: Path, package: str) -> list[list[str]]:
    """Cycles among the modules of one package (each cycle once, as a list of modules)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((tree / package).rglob("*.py")):
        here = module_name(tree, path)
        deps = graph.setdefault(here, set())
        for imp in imports_of(tree, path):
            if top(imp.module) == package and imp.module != here and imp.module != package:
                deps.add(imp.module)
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in stack:
                cycle = stack[stack.index(dep) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append([*cycle, dep])
            elif len(stack) < len(graph):
                visit(dep, [*stack, dep])

    for start in sorted(graph):
        visit(start, [start])
    return cycles


def test_the_core_imports_no_role_and_no_role_imports_another() -> None:
    violations = layering_violations(ROOT)
    assert not violations, "layering broken:\n  " + "\n  ".join(violations)


def test_no_package_has_an_import_cycle() -> None:
    found = {p: import_cycles(ROOT, p) for p in PACKAGES}
    cycles = [" → ".join(c) for p in PACKAGES for c in found[p]]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_name_each_offending_file_and_import(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "smets1/wire.py": "import json\nfrom emulator.device import Esme\n",
            "emulator/device.py": "def f():\n    from scheduler import service\n",
            "scheduler/service.py": "from orchestrator.runner import run\n",
            "dco_mock/a.py": "from . import b\n",
            "dco_mock/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from dco_mock import a\n",
            "orchestrator/runner.py": "from emulator.device import Esme\nfrom scheduler import x\n",
        },
    )
    assert sorted(layering_violations(tree)) == [
        "emulator/device.py:2 imports scheduler.service: a role never imports another role",
        "emulator/device.py:2 imports scheduler: a role never imports another role",
        "scheduler/service.py:1 imports orchestrator.runner: nothing imports the composition root",
        "smets1/wire.py:2 imports emulator.device: the core imports no role",
    ]
    assert import_cycles(tree, "dco_mock") == [["dco_mock.a", "dco_mock.b", "dco_mock.a"]]
    assert import_cycles(tree, "orchestrator") == []

"""No import cycles among the ``spacesync`` modules, and every module imports on its own.

The graph is read from the source: the imports a module runs when it is loaded (top level,
and inside top-level ``try``/``if`` blocks other than ``if TYPE_CHECKING:``). Imports inside
functions run later and are left out. ``from . import x`` counts as an import of the module
``x`` only (not of the package, whose loading has begun by then).
"""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import spacesync

SOURCE = Path(spacesync.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _loaded_at_import(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                yield from _loaded_at_import(node.orelse)
                continue
            if isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
                yield from _loaded_at_import(node.orelse)
                continue
            yield from _loaded_at_import(node.body)
            yield from _loaded_at_import(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _loaded_at_import(node.body)
            for handler in node.handlers:
                yield from _loaded_at_import(handler.body)
            yield from _loaded_at_import(node.orelse)
            yield from _loaded_at_import(node.finalbody)


def _owner(name: str) -> str | None:
    """The spacesync module ``name`` is, or the one that defines it."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str) -> set[str]:
    """The spacesync modules ``name`` imports when it is loaded."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _loaded_at_import(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` needs the module ``sub``, and of ``pkg`` only that its
            # loading has begun (which a submodule's import guarantees); any other name
            # needs ``pkg`` (or the module ``base``) loaded.
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [base, *subs]
        for target in targets:
            owner = _owner(target)
            if owner is not None and owner != name:
                found.add(owner)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_graph_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_relative_imports() -> None:
    found = imports_of("spacesync.handlers.membership")
    assert {"spacesync.handlers.dispatch", "spacesync.handlers.payloads"} <= found
    assert "spacesync.protocol" in found
    assert "spacesync.handlers" not in found  # ``from . import payloads``: the module only


def test_no_import_cycles_among_spacesync_modules() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(g) for g in found)


def test_every_module_imports_in_a_fresh_interpreter_in_any_order() -> None:
    names = [n for n in MODULES if n not in ("spacesync.__main__",)]
    seed = random.randrange(2**32)
    random.Random(seed).shuffle(names)
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(
        [sys.executable, "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert result.returncode == 0, f"order (seed {seed}): {names}\n{result.stderr[-3000:]}"

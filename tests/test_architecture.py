"""The package's shape, checked: modules import each other without cycles
(lazy and TYPE_CHECKING imports included), stay small, open with a docstring
saying what they own and must never do, and hold no ``assert`` (an assert is
gone under ``python -O``, so it cannot guard shared memory)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dictdb_shm")
MAX_LINES = 520


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: str) -> set[str]:
    """Every dictdb_shm module ``name`` imports, anywhere in its body."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def test_no_import_cycles():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    # A package's __init__ importing its own submodules is how packages
    # export; a cycle through it is still a cycle for everyone else.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_and_says_what_it_owns(name):
    path = MODULES[name]
    source = open(path).read()
    assert source.count("\n") <= MAX_LINES, f"{name} has {source.count(chr(10))} lines"
    doc = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
    assert doc, f"{name} has no docstring"
    if not path.endswith("__init__.py") and name != "dictdb_shm.__main__":
        assert "must never" in doc.lower(), f"{name}'s docstring does not say what it must never do"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_assert_in_the_package(name):
    tree = ast.parse(open(MODULES[name]).read())
    lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not lines, f"{name} uses assert at lines {lines}"

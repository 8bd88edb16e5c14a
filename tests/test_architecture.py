"""The import graph points one way: experiments -> library packages -> harness (README, package map).

Every module of the project is parsed (function-local imports included) and three rules checked:

1. no cycle among project modules;
2. no library package imports ``experiments``, ``benchmarks``, ``notebooks`` or ``tests``, and
   the leaf ``harness`` imports no other project package;
3. a function-local import of a project module carries a one-line reason (a comment on its line
   or the line above), because hiding a cycle is never a reason (STYLE.md, section 4).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOP_LEVEL = ("experiments", "benchmarks")  # entry points, configs and scripts: the top layer
LEAF = "harness"


def _packages() -> list[str]:
    return sorted(
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and p.name not in ("tests", "notebooks")
    )


PACKAGES = _packages()
LIBRARIES = [p for p in PACKAGES if p not in TOP_LEVEL]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name refers to (longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


class Import:
    def __init__(self, target: str, line: int, local: bool):
        self.target, self.line, self.local = target, line, local


def _imports(module: str, path: pathlib.Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            in_def = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = _resolve(alias.name)
                    if target:
                        found.append(Import(target, child.lineno, local))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    # `from pkg import mod` depends on pkg.mod, not on pkg's __init__.
                    target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                    if target:
                        found.append(Import(target, child.lineno, local))
            visit(child, in_def)

    visit(tree, False)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a self-import (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, []):
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_checker_sees_every_package():
    assert {"harness", "adarl", "ssm", "flowrl", "experiments"} <= set(PACKAGES)
    assert len(MODULES) > 40


def test_find_cycles_reports_a_planted_cycle():
    graph = {"a.x": ["a.y"], "a.y": ["a.z"], "a.z": ["a.x"], "a.w": ["a.x"]}
    assert find_cycles(graph) == [["a.x", "a.y", "a.z"]]
    assert find_cycles({"a.x": ["a.y"], "a.y": []}) == []


def test_no_import_cycles():
    graph = {m: sorted({i.target for i in imps if i.target != m}) for m, imps in GRAPH.items()}
    assert find_cycles(graph) == []


@pytest.mark.parametrize("package", LIBRARIES)
def test_libraries_do_not_import_the_layer_above(package):
    forbidden = set(TOP_LEVEL) | ({p for p in PACKAGES if p != LEAF} if package == LEAF else set())
    bad = [
        f"{m}:{i.line} imports {i.target}"
        for m, imps in GRAPH.items()
        if _top(m) == package
        for i in imps
        if _top(i.target) in forbidden
    ]
    assert bad == []


def test_function_local_project_imports_state_a_reason():
    bad = []
    for module, imps in GRAPH.items():
        lines = MODULES[module].read_text().splitlines()
        for i in imps:
            if not i.local:
                continue
            here, above = lines[i.line - 1], lines[i.line - 2] if i.line > 1 else ""
            if "#" not in here and not above.strip().startswith("#"):
                bad.append(f"{module}:{i.line} imports {i.target} inside a function")
    assert bad == []

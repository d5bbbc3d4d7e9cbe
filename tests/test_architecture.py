"""The packages' modules import each other without cycles.

A cycle means no module of it can be understood, tested or imported alone, and lazy
imports inside functions only hide one: so every ``import`` counts, wherever it is,
except those under ``if TYPE_CHECKING:`` (they never run). A package's ``__init__``
re-exporting its submodules is not a cycle with them: an import of a package counts
only from outside that package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crystallize", "crystallize_ray")

# Cycles that exist today outside the scope of the change that added this test, each
# the exact set of modules of one strongly connected component. The goal is an empty set.
KNOWN_CYCLES: set[frozenset[str]] = set()

Graph = dict[str, set[str]]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """``{"crystallize.config.loader": path}`` for every module of ``packages`` under ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = file
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of the module, at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules of ``known`` that an import statement of ``importer`` loads."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            for end in range(len(parts), 0, -1):  # the deepest module of the dotted name we know
                if ".".join(parts[:end]) in known:
                    yield ".".join(parts[:end])
                    break
        return
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            yield submodule  # ``from pkg import mod`` imports the submodule
        elif base in known:
            yield base


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> Graph:
    """Module -> the modules it imports, counting a package only when imported from outside it."""
    files = module_files(root, packages)
    known = set(files)
    graph: Graph = {name: set() for name in files}
    for name, file in files.items():
        is_package = file.name == "__init__.py"
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in _imports(tree):
            for target in _targets(node, name, is_package, known):
                target_is_package = files[target].name == "__init__.py"
                if target == name or (target_is_package and name.startswith(target + ".")):
                    continue
                graph[name].add(target)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _a_loop(graph: Mapping[str, set[str]], component: frozenset[str]) -> list[str]:
    """One import loop through the component, to show in the failure message."""
    start = min(component)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & component):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    return sorted(component)


def _describe(graph: Mapping[str, set[str]], components: Iterable[frozenset[str]]) -> str:
    return "\n".join(
        f"  {{{', '.join(sorted(c))}}}: {' -> '.join(_a_loop(graph, c))}" for c in sorted(components, key=sorted)
    )


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    new = set(cycles(graph)) - KNOWN_CYCLES
    assert not new, f"import cycles (lazy imports count; TYPE_CHECKING imports do not):\n{_describe(graph, new)}"


def test_known_cycles_are_still_there() -> None:
    """A cycle that was broken leaves KNOWN_CYCLES, so that it cannot come back unnoticed."""
    gone = KNOWN_CYCLES - set(cycles(import_graph(ROOT)))
    assert not gone, "no longer cycles; remove them from KNOWN_CYCLES:\n" + "\n".join(f"  {sorted(c)}" for c in gone)


def test_the_analysis_sees_lazy_relative_and_submodule_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import A\nfrom . import b\n",
        "a.py": "def f():\n    from .sub import c\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nelse:\n    import os\n",
        "sub/__init__.py": "from .c import C\n",
        "sub/c.py": "from ..b import x\nfrom .. import a\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text, encoding="utf-8")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg.sub.c"},
        "pkg.b": set(),
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.a", "pkg.b"},
    }
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.sub.c"})]

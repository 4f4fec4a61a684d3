"""The project's import graph, read from the source with ``ast`` (nothing is imported or executed).

Every ``import`` / ``from ... import`` counts wherever it is written: at module
level, inside a function (lazy imports), under ``if TYPE_CHECKING``. A lazy
import still makes the two modules depend on each other, it only hides the
circle until both run. ``from pkg import name`` is an edge to ``pkg.name`` when
that is a module of the project, else to ``pkg``; relative imports are resolved
against the importing module's package. Only edges between project modules are
kept. The parent packages that Python also runs (``audiences/learning/__init__``
for ``audiences.learning.registry``) are not added as edges: they are modules of
their own in the graph with their own imports.

Used by tests/test_import_cycles.py (no circles) and meant for a layer test
(which package may import which): :func:`package_edges`.

Why our own walk rather than a library (grimp / import-linter): ~100 lines of
standard library, no new dependency, and the rules above are ours to state.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

SKIPPED_DIRS = frozenset({".venv", "venv", "tests", "bench", "node_modules", "__pycache__", "build", "dist"})


def discover_packages(root: Path) -> list[str]:
    """Top-level folders of ``root`` that are packages (hold ``__init__.py``), minus tests, bench, .venv."""
    return sorted(
        p.name
        for p in Path(root).iterdir()
        if p.is_dir()
        and not p.name.startswith((".", "_"))
        and p.name not in SKIPPED_DIRS
        and (p / "__init__.py").is_file()
    )


def module_files(root: Path, packages: Iterable[str] | None = None) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the given packages (default: discovered)."""
    root = Path(root)
    out: dict[str, Path] = {}
    for package in packages if packages is not None else discover_packages(root):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if any(part in SKIPPED_DIRS or part.startswith(".") for part in rel.parts[:-1]):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _package_of(module: str, path: Path) -> str:
    """The package that relative imports in ``module`` start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_from(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute name of ``from <this> import ...``."""
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _known_prefix(name: str, known: Mapping[str, Path] | set[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is a project module (``import a.b.c`` -> a.b.c)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, path: Path, known: Mapping[str, Path] | set[str]) -> set[str]:
    """Project modules that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(node, module, path)
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            hit = _known_prefix(target, known)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def module_imports(root: Path, packages: Iterable[str] | None = None) -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module of ``packages`` (default: discovered)."""
    files = module_files(root, packages)
    return {module: imports_of(module, path, files) for module, path in files.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (each sorted), as a sorted list.

    Tarjan's algorithm, iterative so that a deep import chain cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def circle(graph: Mapping[str, Iterable[str]], component: Iterable[str]) -> list[str]:
    """One closed path through a component, first module repeated at the end: a -> b -> c -> a."""
    members = sorted(component)
    start = members[0]
    inside = set(members)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        nxt: list[str] = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target in inside and target not in previous:
                    previous[target] = node
                    nxt.append(target)
        frontier = nxt
    return [*members, start]  # not reached for a real component


def package_edges(graph: Mapping[str, Iterable[str]], depth: int = 1) -> dict[str, set[str]]:
    """The graph folded to packages (first ``depth`` name parts): for layer rules."""
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = ".".join(module.split(".")[:depth])
        out.setdefault(source, set())
        for target in targets:
            folded = ".".join(target.split(".")[:depth])
            if folded != source:
                out[source].add(folded)
    return out


def circles_touching(graph: Mapping[str, Iterable[str]], packages: Iterable[str] | None = None) -> list[str]:
    """One line per circle that has a module in ``packages`` (all when None): ``a -> b -> a`` and its members.

    A circle through a checked package is reported even when it passes through
    another package: the whole graph is walked, only the report is filtered.
    """
    wanted = set(packages) if packages is not None else None
    lines = []
    for component in cycles(graph):
        if wanted is None or any(module.split(".")[0] in wanted for module in component):
            path = " -> ".join(circle(graph, component))
            lines.append(f"{path}  (all of: {', '.join(component)})")
    return lines

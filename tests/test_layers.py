"""Imports point down the layers (README.md, "Layout"): a test so that it stays so.

Every import counts, at module level or inside a function: a lazy import that
points up is still a dependency upwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports_graph import module_imports

REPO = Path(__file__).resolve().parent.parent

# Bottom to top. A package may import its own modules and any package of a LOWER layer; never a
# package of its own layer, never one above. `relance` holds the surfaces (the CLI, the console).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("audiences", "channels"),
    ("delivery",),
    ("tracking",),
    ("journeys", "reporting"),
    ("flows",),
    ("relance",),
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def package_of(module: str) -> str:
    return module.split(".", 1)[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` lines for every import of a package not strictly below the importer's."""
    wrong = []
    for module, imported in sorted(graph.items()):
        mine = package_of(module)
        for target in sorted(imported):
            theirs = package_of(target)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                wrong.append(
                    f"{module} -> {target} ({mine} is layer {RANK[mine]}, {theirs} layer {RANK[theirs]})"
                )
    return wrong


def test_every_package_has_a_layer():
    graph = module_imports(REPO)
    packages = {package_of(m) for m in graph}
    assert packages <= set(RANK), f"packages without a layer: {packages - set(RANK)}: add them to LAYERS"
    assert {"core", "delivery", "tracking", "reporting", "flows", "relance"} <= packages


def test_imports_point_down():
    assert upward_imports(module_imports(REPO)) == []


def test_the_core_imports_nothing_of_the_project():
    graph = module_imports(REPO)
    assert {
        t for m, ts in graph.items() if package_of(m) == "core" for t in ts if package_of(t) != "core"
    } == set()


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("channels.sendgrid_email", "audiences.consent"),
        ("core.db", "relance.cli"),
        ("delivery.ledger", "tracking.events"),
    ],
)
def test_an_upward_or_sideways_import_is_named(importer, imported):
    assert upward_imports({importer: {imported}}) == [
        f"{importer} -> {imported} ({package_of(importer)} is layer {RANK[package_of(importer)]}, "
        f"{package_of(imported)} layer {RANK[package_of(imported)]})"
    ]


def test_no_package_is_a_folder_that_commands_write_into():
    """`make demo` writes reports/, outbox/, models/ in the working directory: a package there would mix
    code with output (and `make clean` removes those folders)."""
    from core.settings import Settings

    written = {
        str(field.default)
        for name, field in Settings.model_fields.items()
        if name in ("outbox_dir", "reports_dir", "models_dir")
    }
    assert written == {"outbox", "reports", "models"}
    assert not written & {package_of(m) for m in module_imports(REPO)}


def test_a_long_module_says_why_it_is_one_piece():
    """Issue 23: a module past ~400 lines is split by concern, or its docstring says why it is one piece."""
    import ast

    from tests.imports_graph import module_files

    long_without_reason = []
    for module, path in module_files(REPO).items():
        text = path.read_text(encoding="utf-8")
        if ".migrations." in module or text.count("\n") <= 420:
            continue
        if "Why one module" not in (ast.get_docstring(ast.parse(text)) or ""):
            long_without_reason.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert long_without_reason == []

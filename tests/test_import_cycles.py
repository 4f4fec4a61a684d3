"""No import circles between the project's modules (issue 23), lazy imports inside functions included.

The graph is read from the source (tests/imports_graph.py); every package the
walk discovers must be free of circles.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.imports_graph import circles_touching, cycles, discover_packages, module_imports

ROOT = Path(__file__).resolve().parent.parent


def check_no_circles(root: Path, checked: tuple[str, ...] | None) -> None:
    """Fail with every circle touching ``checked`` (None: every package), each named module by module."""
    found = circles_touching(module_imports(root), checked)
    if found:
        lines = "\n  ".join(found)
        raise AssertionError(
            f"import circles (every import counts, also inside functions):\n  {lines}\n"
            "make the imports point one way: move what both need into a lower module, "
            "or pass it in as a parameter"
        )


def test_project_packages_are_discovered() -> None:
    found = discover_packages(ROOT)
    rooms = {"core", "audiences", "channels", "delivery", "tracking", "reporting", "flows", "relance"}
    assert rooms <= set(found)
    assert not {"tests", "bench", ".venv"} & set(found)


def test_no_package_has_an_import_circle() -> None:
    graph = module_imports(ROOT)
    assert "audiences.rules" in graph["audiences.selection"]  # the walk sees the project's imports
    check_no_circles(ROOT, None)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A small tree: alpha.a <-> alpha.b through a lazy import, beta clean, tests/ and .venv/ ignored."""
    _write(
        tmp_path,
        {
            "alpha/__init__.py": "",
            "alpha/a.py": """
                import os

                def f():
                    from alpha import b  # lazy: still an edge
                    return b
            """,
            "alpha/b.py": """
                from typing import TYPE_CHECKING

                from . import c
                from .c import helper

                if TYPE_CHECKING:
                    from alpha.a import f
            """,
            "alpha/c.py": "def helper():\n    return 1\n",
            "alpha/sub/__init__.py": "from .. import c\n",
            "alpha/sub/d.py": "import alpha.c\nfrom ..c import helper\nimport beta.e\n",
            "beta/__init__.py": "",
            "beta/e.py": "from alpha.c import helper\n",
            "tests/__init__.py": "",
            "tests/x.py": "from tests import y\n",
            "tests/y.py": "from tests import x\n",
            ".venv/__init__.py": "",
            "notes/readme.py": "import alpha.a\n",  # no __init__.py: not a package
        },
    )
    return tmp_path


def test_graph_resolves_relative_lazy_and_package_imports(planted: Path) -> None:
    assert discover_packages(planted) == ["alpha", "beta"]
    graph = module_imports(planted)
    assert graph == {
        "alpha": set(),
        "alpha.a": {"alpha.b"},
        "alpha.b": {"alpha.a", "alpha.c"},
        "alpha.c": set(),
        "alpha.sub": {"alpha.c"},
        "alpha.sub.d": {"alpha.c", "beta.e"},
        "beta": set(),
        "beta.e": {"alpha.c"},
    }
    assert cycles(graph) == [["alpha.a", "alpha.b"]]


def test_a_planted_circle_fails_and_is_named(planted: Path) -> None:
    with pytest.raises(AssertionError, match=r"alpha\.a -> alpha\.b -> alpha\.a"):
        check_no_circles(planted, ("alpha",))
    check_no_circles(planted, ("beta",))  # the circle is not in beta: the check passes


def test_a_longer_circle_across_packages_is_reported(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "one/__init__.py": "",
            "one/m.py": "from two import n\n",
            "two/__init__.py": "",
            "two/n.py": "def g():\n    import three.o\n",
            "three/__init__.py": "",
            "three/o.py": "from one.m import x\n",
        },
    )
    with pytest.raises(AssertionError, match=r"one\.m -> two\.n -> three\.o -> one\.m"):
        check_no_circles(tmp_path, ("two",))

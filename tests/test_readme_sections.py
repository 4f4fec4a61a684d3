"""The command examples of campaigns/README.md, templates/README.md and audiences/README.md, as shown.

Like tests/test_readme_path.py: the commands are read from each README and run
as subprocesses in a fresh folder with a user's environment; every command
needs a check, and a check that no README command uses fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.readme_commands import REPO, Workspace, block_after, commands, ok, rejected_lines, run, workspace

TABLES = {"customers": "customer", "orders": "orders", "devices": "device", "suppressions": "suppression"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with a small imported demo base (set-up, not a README under test)."""
    ws = workspace(tmp_path_factory.mktemp("readme"))
    ok(run(ws, ["relance", "demo-data", "--customers", "400"]))
    return ws


def check_validate(ws: Workspace, argv: list[str]) -> None:
    out = " ".join(ok(run(ws, argv)).split())
    files = len(argv[2:]) or len(list((ws.root / "campaigns").glob("*.yaml")))
    assert f"{files} campaign file(s) checked: 0 error(s)" in out


def check_plan(ws: Workspace, argv: list[str]) -> None:
    assert "estimated cost" in ok(run(ws, argv))


def check_preview(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    if "--channel" in argv:
        assert "SMS" in out and "e-mail" not in out
    else:
        assert "STOP" in out and "e-mail" in out
    if "--html" in argv:
        index = ws.root / argv[argv.index("--html") + 1] / "index.html"
        assert index.exists() and "<a " in index.read_text(encoding="utf-8")


def check_demo_data(ws: Workspace, argv: list[str]) -> None:
    out = " ".join(ok(run(ws, argv)).split())
    assert f"'customers': {argv[argv.index('--customers') + 1]}" in out


def check_import(ws: Workspace, argv: list[str]) -> None:
    ok(run(ws, argv))
    path = ws.root / argv[3]
    rows = path.read_text(encoding="utf-8").count("\n") - 1
    stored = ws.scalar(f"SELECT count(*) FROM {TABLES[argv[2]]}")
    assert stored >= rows - rejected_lines(path.with_suffix(".problems.csv")) and stored > 0


def check_features(ws: Workspace, argv: list[str]) -> None:
    ok(run(ws, argv))
    assert ws.scalar("SELECT count(*) FROM customer_features") == ws.scalar("SELECT count(*) FROM customer")


def check_customers(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    external_id = argv[3]
    if argv[2] == "export":
        assert json.loads(out)["customer"]["external_id"] == external_id
    else:
        erased = ws.scalar("SELECT erased_at FROM customer WHERE external_id = ?", external_id)
        assert erased is not None


CHECKS: dict[tuple[str, ...], Callable[[Workspace, list[str]], None]] = {
    ("relance", "validate"): check_validate,
    ("relance", "plan"): check_plan,
    ("relance", "preview"): check_preview,
    ("relance", "demo-data"): check_demo_data,
    ("relance", "import"): check_import,
    ("relance", "features"): check_features,
    ("relance", "customers"): check_customers,
}


def run_block(ws: Workspace, readme: Path, heading: str) -> set[tuple[str, ...]]:
    used = set()
    for argv in commands(block_after(readme, heading)):
        check = CHECKS.get(tuple(argv[:2]))
        assert check is not None, f"{readme.name} shows `{' '.join(argv)}`: no check for it here"
        check(ws, argv)
        used.add(tuple(argv[:2]))
    return used


def test_campaigns_readme_commands(base):
    run_block(base, REPO / "campaigns" / "README.md", "# ")


def test_templates_readme_commands(base):
    run_block(base, REPO / "templates" / "README.md", "## Check your message")


def test_audiences_readme_commands(tmp_path):
    ws = workspace(tmp_path)
    run_block(ws, REPO / "audiences" / "README.md", "## The commands, in order")


def test_every_check_serves_a_readme_command():
    used = set()
    for readme, heading in (
        ("campaigns/README.md", "# "),
        ("templates/README.md", "## Check your message"),
        ("audiences/README.md", "## The commands, in order"),
    ):
        used |= {tuple(a[:2]) for a in commands(block_after(REPO / readme, heading))}
    assert used == set(CHECKS)


def test_a_readme_command_without_a_check_fails(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n```sh\nrelance frobnicate --now   # new\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="relance frobnicate --now"):
        run_block(Workspace(tmp_path, {}), readme, "# x")


def test_commands_split_chains_and_drop_comments():
    assert commands(["relance train && relance models   # both", "# only a comment", ""]) == [
        ["relance", "train"],
        ["relance", "models"],
    ]

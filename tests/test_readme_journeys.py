"""README.md's "Journeys" commands, run as a newcomer runs them on a demo base, one check per command."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.readme_commands import REPO, Workspace, block_after, commands, ok, run, workspace

HEADING = "## Journeys: follow-ups"
JOURNEY = "relance-inactifs"


def check_validate(ws: Workspace, argv: list[str]) -> None:
    assert "0 error(s), 0 warning(s)" in ok(run(ws, argv))


def check_plan(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    assert all(step in out for step in ("offer-email", "three-days", "opened", "sms-reminder")), out


def check_preview(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    assert "offer-email" in out and "sms-reminder" in out and "REVIENS15" in out, out


def check_run(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    assert f"journey {JOURNEY}:" in out and "customer(s) entered" in out, out
    entered = ws.scalar("SELECT count(*) FROM journey_entry WHERE journey = ?", JOURNEY)
    control = ws.scalar("SELECT count(*) FROM journey_entry WHERE status = 'control'")
    assert entered > 100 and 0 < control < entered


def check_journeys(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    if argv[2] == "status":
        assert JOURNEY in out and "control group" in out, out
    else:  # tick: nothing may be due yet (the wait), or sends deferred to the window: both are said
        assert "nothing due" in out or "step(s) done" in out, out


def check_report(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    assert "offer-email" in out and (ws.root / "reports" / f"{JOURNEY}.html").is_file(), out


CHECKS: dict[tuple[str, ...], Callable[[Workspace, list[str]], None]] = {
    ("relance", "validate"): check_validate,
    ("relance", "plan"): check_plan,
    ("relance", "preview"): check_preview,
    ("relance", "run"): check_run,
    ("relance", "journeys"): check_journeys,
    ("relance", "report"): check_report,
}


def test_the_journeys_block_is_what_the_checks_know():
    seen = {tuple(argv[:2]) for argv in commands(block_after(REPO / "README.md", HEADING))}
    assert seen == set(CHECKS)


@pytest.mark.prefect
@pytest.mark.xdist_group("demo")
def test_journeys_as_the_readme_shows_them(tmp_path):
    ws = workspace(tmp_path)
    ok(run(ws, ["relance", "demo-data", "--customers", "3000"]))  # a base to enter (README's first block)
    for argv in commands(block_after(REPO / "README.md", HEADING)):
        CHECKS[tuple(argv[:2])](ws, argv)

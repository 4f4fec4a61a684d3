"""`relance journeys status` and `tick`: where each journey's customers are; one tick of every journey.

Imports are inside the commands so that `relance --help` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from relance.cli.app import app
from relance.cli.common import console, fail

journeys_app = typer.Typer(help="Journeys: customers followed step by step over days.", no_args_is_help=True)
app.add_typer(journeys_app, name="journeys")


def parse_now(now: str | None) -> datetime:
    """``--now`` as an aware UTC datetime (naive input is read as UTC); the current time if absent."""
    from delivery.ledger import RunError, run_datetime

    try:
        return run_datetime(now)
    except RunError as exc:
        fail(str(exc))


def journey_files(folder: Path) -> dict[str, Any]:
    """name -> Campaign of the journey files in ``folder`` (files that do not load are left to validate)."""
    from journeys.definition import load_journeys

    found: dict[str, Any] = {}
    for jf in load_journeys(folder):
        found.setdefault(jf.name, jf.campaign)
    return found


def _step_rows(status: Any, spec: Any) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """(step, kind, counts) in the file's order, then steps with entries the file no longer has."""
    from core.spec_steps import kind_of

    rows, removed = [], []
    names = set()
    for step in spec.steps if spec is not None else []:
        names.add(step.name)
        rows.append((step.name, kind_of(step), status.step(step.name)))
    for counts in status.steps:
        if counts.step not in names:
            rows.append((counts.step, "removed" if spec is not None else "?", counts))
            removed.append(counts.step)
    return rows, removed


def _print_status(status: Any, spec: Any) -> None:
    from rich.table import Table

    out = console()
    out.print()
    where = "" if spec is not None else " (no journey file of this name in the campaigns folder)"
    out.print(f"[bold]{status.journey}[/bold]: {status.entered:,} entered, {status.active:,} active{where}")
    table = Table(show_edge=False)
    table.add_column("step", overflow="fold")
    table.add_column("kind", overflow="fold")
    for col in ("active", "due 1 h", "due 24 h"):
        table.add_column(col, justify="right", overflow="fold")
    rows, removed = _step_rows(status, spec)
    for name, kind, counts in rows:
        table.add_row(name, kind, f"{counts.active:,}", f"{counts.due_hour:,}", f"{counts.due_day:,}")
    out.print(table)
    if removed and spec is not None:
        out.print(
            f"[yellow]steps no longer in the file: {', '.join(removed)}[/yellow]; their entries leave "
            "when their step falls due (exit reason `step removed: <name>`)"
        )
    out.print(f"control group (held out at entry): {status.control:,}")
    for label, reasons in (("completed", status.completed), ("exited", status.exited)):
        total = sum(reasons.values())
        out.print(f"{label}: {total:,}")
        for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            out.print(f"  {reason}: {n:,}")


@journeys_app.command("status")
def status_cmd(
    name: str = typer.Argument(None, help="A journey's name (default: every journey)"),
    now: str = typer.Option(None, "--now", help="Count what is due as if at this ISO date-time"),
) -> None:
    """How many customers are at each step now, due in the next hour / day, and who left and why."""
    from core.settings import get_settings
    from journeys.status import journey_status
    from relance.cli.common import ensure_db

    at = parse_now(now)
    specs = journey_files(Path(get_settings().campaigns_dir))
    engine = ensure_db()
    with engine.connect() as conn:
        found = journey_status(conn, name, at)
    if name is None:
        present = {s.journey for s in found}
        found += [journey_status_empty(n) for n in sorted(specs) if n not in present]
        found.sort(key=lambda s: s.journey)
        if not found:
            console().print("no journey: write one in campaigns/ (a campaign file with `steps:`)")
            return
    elif name not in specs and not found[0].entered:
        fail(f"no journey named {name!r}: neither a journey file in {get_settings().campaigns_dir}/ "
             "nor entries in the database; run `relance journeys status` to list them")  # fmt: skip
    console().print(f"journeys at {at.isoformat(timespec='minutes')}")
    for status in found:
        _print_status(status, specs.get(status.journey))


@journeys_app.command("tick")
def tick_cmd(
    now: str = typer.Option(None, "--now", help="Tick as if at this ISO date-time (a demo or test clock)"),
    no_prefect: bool = typer.Option(
        False, "--no-prefect", help="Tick in this process without the Prefect engine (same statements)"
    ),
) -> None:
    """Move every journey's due customers on and send their messages: what `advance-journeys` runs."""
    from core.settings import get_settings
    from relance.cli.common import ensure_db

    at = parse_now(now)
    engine = ensure_db()
    if no_prefect:
        from journeys.definition import load_journeys
        from journeys.tick import tick

        loaded = load_journeys(get_settings().campaigns_dir)
        result = tick(engine, loaded, at)
        moves = {name: a.total for name, a in result.advanced.items() if a.total}
        sent, journeys = dict(result.sent), len(loaded)
    else:
        from flows.advance_journeys import advance_journeys
        from relance.cli.prefect_server import prefect_api

        with prefect_api():
            done = advance_journeys(now=at.isoformat())
        moves = {name: n for name, n in done["moves"].items() if n}
        sent, journeys = done["sent"], done["journeys"]
    if not moves and not sent:
        console().print(f"{at.isoformat(timespec='minutes')}: nothing due in {journeys} journey(s)")
        return
    for name, n in sorted(moves.items()):
        console().print(f"{name}: {n:,} step(s) done")
    messages = ", ".join(f"{n:,} {status}" for status, n in sorted(sent.items())) or "none"
    console().print(f"messages: {messages}")


def journey_status_empty(name: str) -> Any:
    from journeys.status import JourneyStatus

    return JourneyStatus(name)


# --------------------------------------------------------------------------
# `relance plan JOURNEY` (relance/cli/campaigns.py sends journeys here)
# --------------------------------------------------------------------------


def _count(value: float | None) -> str:
    return "unknown" if value is None else f"{round(value):,}"


def _euros(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.2f}"


def print_journey_plan(plan: Any) -> None:
    """The entry funnel, then one row per step: now, waiting, expected in total, cost; fits 80 columns."""
    from rich.table import Table

    out = console()
    out.print(f"[bold]plan {plan.journey}[/bold] at {plan.now.isoformat()}")
    entry = Table(title="entry (the journey's audience now)", show_edge=False)
    entry.add_column("step", overflow="fold")
    entry.add_column("customers", justify="right", overflow="fold")
    entry.add_column("removed", justify="right", overflow="fold")
    entry.add_column("why", overflow="fold")
    for row in plan.funnel["steps"]:
        first = row["step"] == "base"
        removed = "" if first else f"-{row['removed']:,}"
        why = "" if first else row["why"]
        entry.add_row(row["step"].replace("_", " "), f"{row['count']:,}", removed, why)
    ctl = plan.funnel["control"]
    entry.add_row(
        "control group", f"{plan.funnel['entering'] - ctl['held_out_customers']:,}",
        f"-{ctl['held_out_customers']:,}", f"{ctl['percent']:g}% held out at entry (stable hash), never sent",
    )  # fmt: skip
    out.print(entry)
    if plan.triggered is not None:
        t = plan.triggered
        out.print(
            f"enters on `{t['event']}` events (first step {t['delay']} after each): "
            f"the last {t['days']} days had {t['events']:,} matching events of {t['customers']:,} "
            f"customers, about {t['per_day']:,} "
            "entries a day before the audience, control group and re-entry rules",
            highlight=False,
        )
    if plan.entered or not plan.funnel["entering"]:
        treated = plan.entered - plan.entered_control
        out.print(f"entering now: {treated:,} (+{plan.entered_control:,} control)")
    else:
        out.print(
            f"entering now: 0: this occurrence ({plan.funnel['entry_key']}) has entered its customers already"
        )
    steps = Table(title="steps: now, then expected (past response rates)", show_edge=False)
    steps.add_column("step", overflow="fold")
    steps.add_column("kind", overflow="fold")
    steps.add_column("when", overflow="fold")
    for col in ("now", "waiting", "expected", "cost EUR"):
        steps.add_column(col, justify="right", overflow="fold")
    for s in plan.steps:
        steps.add_row(s.step, s.kind, s.when, f"{s.now:,}", f"{s.waiting:,}", _count(s.expected),
                      _euros(s.cost_euros) if s.kind == "send" else "")  # fmt: skip
    out.print(steps)
    out.print(
        "now: entries this step moves in a tick now; waiting: on it after that tick; expected: now + "
        "those on the journey expected to reach it later; when: earliest after entry",
        highlight=False,
    )
    for s in plan.steps:
        if s.messages_now or s.deferred_now:
            sent = ", ".join(f"{n:,} {ch}" for ch, n in sorted(s.messages_now.items())) or "no message"
            held = f"; {s.deferred_now:,} held to a later moment" if s.deferred_now else ""
            skipped = s.outcomes_now.get("skipped", 0)
            held += f"; {skipped:,} skipped" if skipped else ""
            out.print(f"  {s.step} now: {sent}{held}", highlight=False)
    for step, why in plan.rates.items():
        out.print(f"  {step}: {why}", highlight=False)
    if plan.exits_now:
        left = ", ".join(f"{reason} {n:,}" for reason, n in sorted(plan.exits_now.items()))
        out.print(f"  leaving now (exit_when): {left}", highlight=False)
    total = plan.total_cost
    if total is None:
        known = sum(s.cost.get("total_euros", 0) for s in plan.steps if s.kind == "send")
        out.print(f"estimated cost: unknown (messages now and known later: {known:,.2f} EUR)")
    else:
        out.print(f"estimated cost: {total:,.2f} EUR (messages x the configured prices per channel)")


def plan_journey_cmd(engine: Any, journey: Any, at: datetime, *, as_json: bool, refused: Any) -> None:
    """`relance plan` of a journey file: nothing is kept (the tick's writes are rolled back)."""
    import json

    from audiences.rules import RuleError
    from audiences.selection import SelectionError
    from journeys.plan import plan_journey

    if refused:
        fail("--explain and --output apply to campaigns; a journey's entries: `relance journeys status`")
    try:
        plan = plan_journey(engine, journey, at)
    except (RuleError, SelectionError) as exc:
        fail(f"{journey.name}: {exc}")
    if as_json:
        console().print_json(json.dumps(plan.as_dict(), default=str))
    else:
        print_journey_plan(plan)

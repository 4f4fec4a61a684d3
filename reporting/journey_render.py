"""A journey report three ways: terminal (rich, whole at 80 columns), one HTML file, a CSV per step.

The campaign report's helpers are reused where they fit (report_render: the width-fitted
tables, the uplift row, money formats); what is journey-specific is the per-step layout.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.console import Console
from rich.table import Table

from reporting import charts
from reporting.journey_report import JourneyReport, StepFigures
from reporting.report_render import METHODS, TEMPLATES, _Column, _fitted, euros, pct, uplift_row

# Per step, what a marketer reads first (the funnel down to conversions), then what went wrong.
STEP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("results", ("entered", "waiting", "sent", "delivered", "opened", "clicked", "converted")),
    (
        "skips, opt-outs and exits",
        ("skipped", "not_sent", "bounced", "complained", "unsubscribed", "exited", "messages", "cost"),
    ),
)
STEP_COLUMNS = tuple(n for _, group in STEP_GROUPS for n in group)
SEND_ONLY = frozenset(STEP_COLUMNS) - {"entered", "waiting", "exited"}  # blank on other kinds of step
LABELS = {"not_sent": "not sent", "unsubscribed": "unsub.", "complained": "complaints"}


def journey_methods(report: JourneyReport) -> str:
    """How the figures are counted, then the statistics as the campaign report states them."""
    stats = METHODS[METHODS.index("95% intervals") :]
    return (
        f"An entry converts when its customer placed an order within {report.window_days} days of "
        "entering the journey, in both groups alike: treated entries against the control group held "
        "out at entry (never sent anything). Entries whose window is still open count as they are. "
        "Per step: entered = entries that did the step; send figures count an entry's messages of "
        "one run once (bounced ones as sent); converted is the attribution's credit. " + stats
    )


def hours(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f} h" if value < 48 else f"{value / 24:,.1f} days"


def step_cells(s: StepFigures) -> list[str]:
    """The figures of one step as printed; send-only figures stay blank on other kinds of step."""
    out = []
    for name in STEP_COLUMNS:
        if name in SEND_ONLY and s.kind != "send":
            out.append("")
        elif name == "cost":
            out.append(euros(s.cost_total * 100))
        else:
            out.append(f"{getattr(s, name):,}")
    return out


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def outcome_rows(report: JourneyReport) -> list[tuple[str, str, int]]:
    """(step, what happened, how many): paths taken, skips and their reasons, exits.

    Counts are entries, except the ledger's reasons for messages not sent, which count messages.
    """
    rows: list[tuple[str, str, int]] = []
    for s in report.steps:
        for outcome, n in s.outcomes.items():
            if (s.kind == "send" and outcome == "skipped") or s.kind == "exit":
                continue  # listed with their reasons below; an exit step's outcome is its exits
            text = {"then": "then (test held)", "else": "else (test failed)"}.get(outcome, outcome)
            rows.append((s.name, f"→ {text}" if s.kind == "split" else text, n))
        rows += [(s.name, f"skipped: {why}", n) for why, n in s.skipped_why.items()]
        rows += [(s.name, f"messages {why}", n) for why, n in s.not_sent_why.items()]
        if s.waiting:
            rows.append((s.name, "waiting here now", s.waiting))
        rows += [(s.name, f"left here: {why}", n) for why, n in s.exited_here.items()]
    return rows


def entries_summary(report: JourneyReport) -> dict[str, str]:
    b = report.by_status
    return {
        "entries": f"{report.entries:,}",
        "treated": f"{report.treated:,}",
        "control group": f"{report.control:,}",
        "active now": f"{b.get('active', 0):,}",
        "completed": f"{b.get('completed', 0):,}",
        "exited early": f"{b.get('exited', 0):,}",
        "window still open": f"{report.open_windows:,}",
    }


def money(report: JourneyReport) -> dict[str, str]:
    u = report.uplift
    conversions = u.treated_conversions if u else 0
    rpe, crpe, inc = report.revenue_per_entry, report.control_revenue_per_entry, report.incremental_revenue
    return {
        "revenue (treated, window)": euros(report.treated_revenue_cents),
        "revenue per entry": "—" if rpe is None else euros(rpe * 100),
        "revenue per control entry": "—" if crpe is None else euros(crpe * 100),
        "incremental revenue": "—" if inc is None else euros(inc * 100),
        "messages sent": f"{report.messages:,}",
        "cost": euros(report.cost["total"] * 100),
        "cost per conversion": euros(report.cost["total"] * 100 / conversions) if conversions else "—",
    }


def time_summary(report: JourneyReport) -> dict[str, str]:
    t = report.time_to_convert
    return {
        "counted within": f"{report.window_days} days of entry",
        "converted entries": f"{t.converters:,}",
        "median": hours(t.median_hours),
        "75th percentile": hours(t.p75_hours),
    }


def conclusion(report: JourneyReport) -> str:
    if report.uplift is None:
        return "no treated entry yet: incrementality cannot be measured"
    return report.uplift.conclusion.replace("the campaign ", "the journey ", 1)


# ---------------------------------------------------------------- terminal


def _kv(title: str, values: dict[str, str]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    for k, v in values.items():
        table.add_row(k, v)
    return table


def _steps_tables(report: JourneyReport, width: int) -> list[Table]:
    """Steps as rows, in two groups of figures, each in as many tables as the width needs."""
    first = _Column("step", [s.name for s in report.steps], "left")
    cells = {n: [c[i] for c in map(step_cells, report.steps)] for i, n in enumerate(STEP_COLUMNS)}
    tables = []
    for i, (group, names) in enumerate(STEP_GROUPS):
        columns = [_Column(label(n), cells[n]) for n in names]
        if i == 0:
            columns.insert(0, _Column("kind", [s.kind for s in report.steps], "left"))
        tables += _fitted(f"Steps: {group}", first, columns, width)
    return tables


def _outcomes_table(report: JourneyReport) -> Table:
    """What each step did; the text column wraps at words, the others never."""
    table = Table(title="What each step did", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("outcome", overflow="fold")
    table.add_column("count", justify="right", no_wrap=True)
    for step, text, n in outcome_rows(report):
        table.add_row(step, text, f"{n:,}")
    return table


def _uplift_tables(report: JourneyReport, width: int) -> list[Table]:
    assert report.uplift is not None
    cells = uplift_row(report.uplift)
    measures = [k for k in cells if k != "conclusion"]
    first = _Column("", measures, "left")
    return _fitted(
        "Whole journey vs control group", first, [_Column("journey", [cells[m] for m in measures])], width
    )


def print_journey_report(report: JourneyReport, console: Console | None = None) -> None:
    console = console or Console()
    width = console.width
    console.rule(f"[bold]{report.journey}[/bold] — journey, {report.entries:,} entries")
    for alert in report.alerts:
        console.print(f"[bold red]ALERT[/bold red] {alert}")
    console.print(_kv("Entries", entries_summary(report)))
    for table in _steps_tables(report, width):
        console.print(table)
    if outcome_rows(report):
        console.print(_outcomes_table(report))
    if report.exit_reasons:
        console.print(_kv("Exits by reason", {k: f"{v:,}" for k, v in report.exit_reasons.items()}))
    console.print(_kv("Time to convert", time_summary(report)))
    console.print(_kv("Money", money(report)))
    if report.uplift is not None:
        for table in _uplift_tables(report, width):
            console.print(table)
    console.print(journey_methods(report), style="dim")
    console.print(f"[bold]whole journey:[/bold] {conclusion(report)}")


# ---------------------------------------------------------------- files


def write_csv(report: JourneyReport, path: Path) -> Path:
    """One row per step with every figure; then what each step did; then the uplift."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        names = [n for n in STEP_COLUMNS if n != "cost"]
        writer.writerow(["journey", "step", "kind", *names, "then", "else", "cost_eur"])
        for s in report.steps:
            writer.writerow(
                [
                    report.journey,
                    s.name,
                    s.kind,
                    *(getattr(s, n) for n in names),
                    s.outcomes.get("then", 0) if s.kind == "branch" else "",
                    s.outcomes.get("else", 0) if s.kind == "branch" else "",
                    f"{s.cost_total:.2f}",
                ]
            )
        writer.writerow([])
        writer.writerow(["journey", "step", "outcome", "entries"])
        for step, text, n in outcome_rows(report):
            writer.writerow([report.journey, step, text, n])
        writer.writerow([])
        writer.writerow(
            [
                "journey",
                "uplift",
                "window_days",
                "treated_n",
                "treated_conversions",
                "control_n",
                "control_conversions",
                "abs_uplift",
                "abs_low",
                "abs_high",
                "p_value",
                "incremental_revenue_eur",
            ]
        )
        u = report.uplift
        if u is not None:
            a = u.absolute
            inc = report.incremental_revenue
            writer.writerow(
                [
                    report.journey,
                    "uplift",
                    report.window_days,
                    u.treated_n,
                    u.treated_conversions,
                    u.control_n,
                    u.control_conversions,
                    *(("", "", "") if a is None else (a.estimate, a.low, a.high)),
                    "" if u.p_value is None else u.p_value,
                    "" if inc is None else f"{inc:.2f}",
                ]
            )
    return path


def _charts(report: JourneyReport) -> dict[str, str]:
    entered = [(s.name, float(s.entered)) for s in report.steps]
    u = report.uplift
    interval = (
        [("whole journey", u.absolute.estimate * 100, u.absolute.low * 100, u.absolute.high * 100)]
        if u is not None and u.absolute is not None
        else []
    )
    return {
        "steps": charts.bars(entered, title="Entries per step"),
        "uplift": charts.intervals(interval, title="Conversion uplift with a 95% interval"),
    }


def write_html(report: JourneyReport, path: Path) -> Path:
    """One self-contained file: inline CSS and SVG, no script, nothing fetched."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    html = env.get_template("journey.html.j2").render(
        report=report,
        charts=_charts(report),
        groups=STEP_GROUPS,
        columns=STEP_COLUMNS,
        step_cells=step_cells,
        label=label,
        outcomes=outcome_rows(report),
        entries=entries_summary(report),
        times=time_summary(report),
        money=money(report),
        uplift=uplift_row(report.uplift) if report.uplift else None,
        conclusion=conclusion(report),
        methods=journey_methods(report),
        conversion=pct(report.uplift.treated_rate) if report.uplift else "—",
        control_conversion=pct(report.uplift.control_rate) if report.uplift and report.control else "—",
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path

"""`relance report`: what a campaign did, and what it really added against its control group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from relance.cli.app import app
from relance.cli.common import console

ALERT_EXIT = 3


@app.command("report")
def report(
    campaign: str = typer.Argument(None, help="Campaign or journey name (the `name:` in its YAML)"),
    run: str = typer.Option(None, "--run", help="One run, by key or id"),
    since: datetime = typer.Option(
        None, "--since", help="Only runs since this date (YYYY-MM-DD); with --all, the programme period"
    ),
    all_: bool = typer.Option(False, "--all", help="Portfolio: every campaign ranked by incremental revenue"),
    out: Path = typer.Option(
        None, "--out", help="Directory for the HTML and CSV (default: RELANCE_REPORTS_DIR)"
    ),
) -> None:
    """Print the report, and write it as one self-contained HTML file and a CSV of the figures.

    Exits with status 3 when an alert threshold was crossed (bounces, complaints, unsubscribes).
    """

    from core.db import get_engine, migrate
    from core.settings import get_settings
    from reporting.portfolio import portfolio, print_portfolio, print_programme, programme_uplift
    from reporting.report import build_report
    from reporting.report_render import print_report, write_csv, write_html

    migrate()
    out = out or get_settings().reports_dir
    with get_engine().connect() as conn:
        if all_:
            print_portfolio(portfolio(conn), console())
            start = since or datetime.now() - timedelta(days=30)
            print_programme(programme_uplift(conn, start.astimezone(UTC)), start, console())
            return
        if not campaign:
            raise typer.BadParameter("name a campaign, or use --all for the portfolio")
        if _report_journey(conn, campaign, run, since, Path(out)):
            return
        try:
            result = build_report(conn, campaign, run, since)
        except LookupError as exc:
            console().print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
    print_report(result, console())
    stem = campaign if run is None else f"{campaign}-{run}"
    html = write_html(result, Path(out) / f"{stem}.html")
    csv_path = write_csv(result, Path(out) / f"{stem}.csv")
    console().print(f"HTML report: [bold]{html}[/bold]\nCSV figures: [bold]{csv_path}[/bold]")
    if result.alerts:
        raise typer.Exit(ALERT_EXIT)


def _report_journey(conn, name: str, run: str | None, since: datetime | None, out: Path) -> bool:
    """The journey report when ``name`` is a journey (its file has `steps:`, or it has entries).

    Steps in the file's order and its conversion window come from the file when it is found.
    """
    from core.settings import get_settings
    from core.spec_steps import kind_of
    from reporting.journey_render import print_journey_report, write_csv, write_html
    from reporting.journey_report import build_journey_report, has_entries, journey_spec

    spec = journey_spec(name, get_settings().campaigns_dir)
    if spec is None and not has_entries(conn, name):
        return False
    if run is not None or since is not None:
        console().print(
            f"[red]error:[/red] `{name}` is a journey: its report covers every entry; "
            "drop --run and --since (they apply to campaigns)"
        )
        raise typer.Exit(1)
    steps = [(s.name, kind_of(s)) for s in spec.steps or []] if spec is not None else None
    window = spec.conversion.window_days if spec is not None else None
    result = build_journey_report(conn, name, window, steps=steps)
    print_journey_report(result, console())
    html = write_html(result, out / f"{name}.html")
    csv_path = write_csv(result, out / f"{name}.csv")
    console().print(f"HTML report: [bold]{html}[/bold]\nCSV figures: [bold]{csv_path}[/bold]")
    if result.alerts:
        raise typer.Exit(ALERT_EXIT)
    return True

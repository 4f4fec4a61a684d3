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
    campaign: str = typer.Argument(None, help="Campaign name (the `name:` in its YAML)"),
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

"""The `report-campaign` flow: responses arrive for days after a send, so reports are refreshed on a
schedule and published where operators look (Prefect artifacts), and as HTML/CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from core.db import ready_engine
from core.settings import get_settings
from flows.artifacts import publish_run_artifacts
from reporting import journey_render
from reporting.journey_report import report_for
from reporting.portfolio import portfolio
from reporting.report import build_report, campaigns_with_runs, select_runs
from reporting.report_render import write_csv, write_html


@flow(name="report-campaign", log_prints=True)
def report_campaign(campaign: str, run_key: str | None = None) -> dict[str, Any]:
    """Publish the latest (or the given) run's figures as artifacts; write the campaign's HTML and CSV."""
    engine = ready_engine()
    with engine.connect() as conn:
        runs = select_runs(conn, campaign, run_key)
        if not runs:
            raise LookupError(f"no run of campaign `{campaign}` to report")
        key = runs[-1].key
        published = publish_run_artifacts(conn, campaign, key)
        report = build_report(conn, campaign)
    out = Path(get_settings().reports_dir)
    html = write_html(report, out / f"{campaign}.html")
    write_csv(report, out / f"{campaign}.csv")
    print(f"{campaign}: run {key} published; report {html}")
    return {"run_key": key, "html": str(html), "alerts": report.alerts, "rows": len(published["rows"])}


@flow(name="refresh-reports", log_prints=True)
def refresh_reports() -> dict[str, Any]:
    """Every campaign's report rewritten (late opens, clicks and purchases keep arriving for days) and
    the portfolio, ranked by incremental revenue, published as a table artifact."""
    engine = ready_engine()
    out = Path(get_settings().reports_dir)
    written = {}
    with engine.connect() as conn:
        for name in campaigns_with_runs(conn):
            journey = report_for(conn, name, get_settings().campaigns_dir)
            if journey is not None:  # a journey: per step and against its control group
                written[name] = str(journey_render.write_html(journey, out / f"{name}.html"))
                journey_render.write_csv(journey, out / f"{name}.csv")
                continue
            report = build_report(conn, name)
            written[name] = str(write_html(report, out / f"{name}.html"))
            write_csv(report, out / f"{name}.csv")
            for alert in report.alerts:
                print(f"ALERT {name}: {alert}")
        lines = portfolio(conn)
    create_table_artifact(
        key="relance-portfolio",
        table=[
            {
                "campaign": line.campaign,
                "runs": line.runs,
                "targeted": line.targeted,
                "revenue_eur": round(line.revenue, 2),
                "incremental_revenue_eur": None
                if line.incremental_revenue is None
                else round(line.incremental_revenue, 2),
                "conclusion": line.conclusion,
            }
            for line in lines
        ],
        description="relance: campaigns ranked by incremental revenue (against their control groups)",
    )
    print(f"{len(written)} report(s) refreshed in {out}")
    return {"reports": written, "ranking": [line.campaign for line in lines]}

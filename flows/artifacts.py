"""Publish a run's summary as Prefect artifacts so operators read it in the Prefect UI."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlalchemy import Connection

from reporting.report import build_report
from reporting.report_render import COLUMNS, money, rates, uplift_row


def _key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100]


def publish_run_artifacts(conn: Connection, campaign: str, run_key: str) -> dict:
    """A table (per variant and channel) and a markdown summary (rates, money, uplift, alerts)."""
    report = build_report(conn, campaign, run_key)
    rows = [
        {
            "slice": f"{scope}: {label}",
            **{c: getattr(f, c) for c in COLUMNS},
            "revenue_eur": f.revenue_cents / 100,
        }
        for scope, slices in (("variant", report.by_variant), ("channel", report.by_channel))
        for label, f in slices.items()
    ]
    create_table_artifact(
        key=_key(f"{campaign}-figures"),
        table=rows,
        description=f"relance run {run_key}: figures per variant and channel",
    )
    lines = [f"# {campaign} — run `{run_key}`", ""]
    lines += [f"**ALERT** {a}" for a in report.alerts]
    lines += ["", "| rate | value |", "|---|---|"] + [
        f"| {k} | {v} |" for k, v in rates(report.totals).items()
    ]
    lines += ["", "| money | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in money(report).items()]
    if report.uplift_total:
        lines += ["", "| uplift | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in uplift_row(report.uplift_total).items()]
    create_markdown_artifact(
        key=_key(f"{campaign}-summary"),
        markdown="\n".join(lines),
        description=f"relance run {run_key}: summary",
    )
    return {"rows": rows, "markdown": "\n".join(lines)}

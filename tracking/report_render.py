"""A report three ways: a terminal view (rich), one self-contained HTML file, and a CSV of the figures."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.console import Console
from rich.table import Table

from tracking import charts
from tracking.report import Figures, Report
from tracking.stats import Uplift

TEMPLATES = Path(__file__).parent / "report_templates"

COLUMNS = [
    "messages",
    "held_out",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "bounced_hard",
    "complained",
    "unsubscribed",
    "failed",
    "unknown",
    "skipped",
]


def euros(cents: float) -> str:
    return f"{cents / 100:,.2f} €".replace(",", " ")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def rates(f: Figures) -> dict[str, str]:
    return {
        "delivery": pct(f.rate("delivered", "sent")),
        "open": pct(f.rate("opened")),
        "click": pct(f.rate("clicked")),
        "conversion": pct(f.converted / f.targeted if f.targeted else None),
        "hard bounce": pct(f.rate("bounced_hard", "sent")),
        "complaint": pct(f.rate("complained")),
        "unsubscribe": pct(f.rate("unsubscribed")),
    }


def money(report: Report) -> dict[str, str]:
    t = report.totals
    conversions = t.converted
    return {
        "revenue": euros(t.revenue_cents),
        "revenue per recipient": euros(t.revenue_cents / t.targeted) if t.targeted else "—",
        "ARPU of converters": euros(t.revenue_cents / conversions) if conversions else "—",
        "cost": f"{report.cost['total']:,.2f} €",
        "cost per conversion": f"{report.cost['total'] / conversions:,.2f} €" if conversions else "—",
        "incremental revenue": "—"
        if report.incremental_revenue is None
        else f"{report.incremental_revenue:,.2f} €",
    }


def uplift_row(u: Uplift) -> dict[str, str]:
    a, r, rev = u.absolute, u.relative, u.revenue_per_customer
    return {
        "treated": f"{u.treated_conversions}/{u.treated_n} ({u.treated_rate:.2%})",
        "control": f"{u.control_conversions}/{u.control_n} ({u.control_rate:.2%})",
        "absolute uplift": "—"
        if a is None
        else f"{a.estimate * 100:+.2f} pts [{a.low * 100:+.2f}, {a.high * 100:+.2f}]",
        "relative uplift": "—" if r is None else f"{r.estimate:+.1%} [{r.low:+.1%}, {r.high:+.1%}]",
        "revenue / customer": "—"
        if rev is None
        else f"{rev.estimate:+.2f} € [{rev.low:+.2f}, {rev.high:+.2f}]",
        "p-value": "—" if u.p_value is None else f"{u.p_value:.3g}",
        "conclusion": u.conclusion,
    }


# ---------------------------------------------------------------- terminal


def _figures_table(title: str, slices: dict[str, Figures]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in COLUMNS:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_column("revenue", justify="right")
    for label, f in slices.items():
        table.add_row(label, *(f"{getattr(f, n):,}" for n in COLUMNS), euros(f.revenue_cents))
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    console.rule(f"[bold]{report.campaign}[/bold] — {len(report.runs)} run(s)")
    for alert in report.alerts:
        console.print(f"[bold red]ALERT[/bold red] {alert}")
    if report.funnel:
        funnel = Table(title="Funnel (plan)", title_justify="left")
        for col in ("step", "remaining", "removed", "why"):
            funnel.add_column(col, justify="left" if col in ("step", "why") else "right")
        for step in report.funnel:
            funnel.add_row(
                str(step.get("step", "")),
                f"{step.get('remaining', '')}",
                f"{step.get('removed', '') or ''}",
                str(step.get("reason", "") or ""),
            )
        console.print(funnel)
    console.print(_figures_table("Responses", {"total": report.totals}))
    console.print(_figures_table("Per variant", report.by_variant))
    console.print(_figures_table("Per channel", report.by_channel))
    console.print(_figures_table("Per locale", report.by_locale))
    kv = Table(title="Rates and money", title_justify="left", show_header=False)
    for k, v in {**rates(report.totals), **money(report)}.items():
        kv.add_row(k, v)
    console.print(kv)
    up = Table(
        title="Incrementality vs control group (95% CI; Newcombe, z-test, Welch)", title_justify="left"
    )
    up.add_column("")
    for col in (
        "treated",
        "control",
        "absolute uplift",
        "relative uplift",
        "revenue / customer",
        "p-value",
        "conclusion",
    ):
        up.add_column(col)
    rows = ({"all variants": report.uplift_total} if report.uplift_total else {}) | report.uplift_by_variant
    for label, u in rows.items():
        up.add_row(label, *uplift_row(u).values())
    console.print(up)
    if len(report.runs) > 1:
        console.print(_runs_table(report))


def _runs_table(report: Report) -> Table:
    table = Table(title="Runs compared", title_justify="left")
    for col in ("run", "status", "sent", "delivered", "clicked", "converted", "revenue", "uplift (pts)"):
        table.add_column(col)
    for r in report.runs:
        u = r.uplift.absolute if r.uplift else None
        table.add_row(
            r.key,
            r.status,
            f"{r.figures.sent:,}",
            f"{r.figures.delivered:,}",
            f"{r.figures.clicked:,}",
            f"{r.figures.converted:,}",
            euros(r.figures.revenue_cents),
            "—" if u is None else f"{u.estimate * 100:+.2f} [{u.low * 100:+.2f}, {u.high * 100:+.2f}]",
        )
    return table


# ---------------------------------------------------------------- files


def write_csv(report: Report, path: Path) -> Path:
    """One row per (scope, slice) with every count and the revenue: easy to pivot in a spreadsheet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["campaign", "scope", "slice", *COLUMNS, "revenue_eur"])
        scopes = [
            ("total", {"all": report.totals}),
            ("variant", report.by_variant),
            ("channel", report.by_channel),
            ("locale", report.by_locale),
            ("run", {r.key: r.figures for r in report.runs}),
        ]
        for scope, slices in scopes:
            for label, f in slices.items():
                writer.writerow(
                    [
                        report.campaign,
                        scope,
                        label,
                        *(getattr(f, n) for n in COLUMNS),
                        f"{f.revenue_cents / 100:.2f}",
                    ]
                )
        writer.writerow([])
        writer.writerow(
            [
                "campaign",
                "uplift",
                "slice",
                "treated_n",
                "treated_conversions",
                "control_n",
                "control_conversions",
                "abs_uplift",
                "abs_low",
                "abs_high",
                "p_value",
            ]
        )
        rows = ({"all": report.uplift_total} if report.uplift_total else {}) | report.uplift_by_variant
        for label, u in rows.items():
            a = u.absolute
            writer.writerow(
                [
                    report.campaign,
                    "uplift",
                    label,
                    u.treated_n,
                    u.treated_conversions,
                    u.control_n,
                    u.control_conversions,
                    *(("", "", "") if a is None else (a.estimate, a.low, a.high)),
                    "" if u.p_value is None else u.p_value,
                ]
            )
    return path


def _charts(report: Report) -> dict[str, str]:
    funnel_items = [(str(s.get("step")), float(s.get("remaining") or 0)) for s in report.funnel]
    t = report.totals
    response_items = [
        (n, float(getattr(t, n))) for n in ("targeted", "sent", "delivered", "opened", "clicked", "converted")
    ]
    series: dict[str, list[tuple[str, int]]] = {}
    for hour, kind, count in report.timeline:
        series.setdefault(kind, []).append((hour, count))
    uplift_items = [
        (label, u.absolute.estimate * 100, u.absolute.low * 100, u.absolute.high * 100)
        for label, u in (
            ({"all variants": report.uplift_total} if report.uplift_total else {}) | report.uplift_by_variant
        ).items()
        if u.absolute is not None
    ]
    return {
        "funnel": charts.bars(funnel_items, title="Audience funnel"),
        "responses": charts.bars(response_items, title="Responses"),
        "timeline": charts.series(series, title="Responses over time"),
        "uplift": charts.intervals(uplift_items, title="Conversion uplift with 95% intervals"),
    }


def write_html(report: Report, path: Path) -> Path:
    """One self-contained file: inline CSS and SVG, no script, nothing fetched."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    html = env.get_template("report.html.j2").render(
        report=report,
        charts=_charts(report),
        rates=rates(report.totals),
        money=money(report),
        columns=COLUMNS,
        uplift_rows=({"all variants": report.uplift_total} if report.uplift_total else {})
        | report.uplift_by_variant,
        uplift_row=uplift_row,
        euros=euros,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path

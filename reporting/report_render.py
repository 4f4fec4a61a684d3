"""A report three ways: a terminal view (rich), one self-contained HTML file, and a CSV of the figures."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.table import Table

from reporting import charts
from reporting.report import Figures, Report
from reporting.stats import Uplift

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

# What a marketer reads first (down to the money), then what went wrong: the terminal and the
# HTML show the figures in this order, split into these two groups.
FIGURE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("results", ("messages", "held_out", "sent", "delivered", "opened", "clicked", "converted", "revenue")),
    (
        "deliverability and opt-outs",
        ("bounced_hard", "complained", "unsubscribed", "failed", "unknown", "skipped"),
    ),
)
METHODS = (
    "Uplift counts, in both groups alike, the customers who bought within the conversion window after "
    "the (would-be) send, whether or not a message was credited with the purchase, so its treated "
    "conversions can exceed the converted column. "
    "95% intervals: Newcombe hybrid score for the rate difference, delta method for the relative "
    "uplift, Welch for revenue per customer; two-proportion z-test for the p-value."
)


def figure_cells(f: Figures, names: tuple[str, ...]) -> list[str]:
    """The figures ``names`` of one slice as printed: counts with thousands separators, revenue in euros."""
    return [euros(f.revenue_cents) if n == "revenue" else f"{getattr(f, n):,}" for n in names]


def label(name: str) -> str:
    return name.replace("_", " ")


@dataclass
class _Column:
    header: str
    cells: list[str]
    justify: JustifyMethod = "right"

    @property
    def width(self) -> int:
        return max(cell_len(t) for t in [self.header, *self.cells])


def _table_width(first: _Column, columns: list[_Column]) -> int:
    return 1 + sum(c.width + 3 for c in (first, *columns))  # left border, then padding 2 + border 1 each


def _fitted(
    title: str, first: _Column, columns: list[_Column], width: int, sections: tuple[int, ...] = ()
) -> list[Table]:
    """``columns`` beside ``first`` in as many tables as the width needs, none cut or wrapped.

    Rich shrinks a table wider than the terminal by cutting every cell to "m…"; measuring the
    cells and starting a new table (the label column repeated) when the next column would not
    fit keeps every header and number whole at any width, 80 columns or a pipe included.
    A rule is drawn after the rows numbered in ``sections``.
    """
    groups: list[list[_Column]] = [[]]
    for col in columns:
        if groups[-1] and _table_width(first, [*groups[-1], col]) > width:
            groups.append([])
        groups[-1].append(col)
    tables = []
    for i, group in enumerate(groups):
        table = Table(title=title if i == 0 else f"{title} (continued)", title_justify="left")
        for col in (first, *group):
            table.add_column(col.header, justify=col.justify, no_wrap=True, overflow="fold")
        for n, row in enumerate(zip(first.cells, *(c.cells for c in group), strict=True), start=1):
            table.add_row(*row, end_section=n in sections)
        tables.append(table)
    return tables


def _figures_tables(title: str, slices: dict[str, Figures], width: int) -> list[Table]:
    """The figures of ``slices``, laid out for the terminal's width.

    One slice a row when every figure fits side by side; otherwise the figures become the rows
    (results, a rule, then deliverability) and the slices the columns, as many tables as needed.
    """
    names = tuple(n for _, group in FIGURE_GROUPS for n in group)
    values = {name: figure_cells(f, names) for name, f in slices.items()}
    first = _Column("", list(slices), "left")
    columns = [_Column(label(n), [v[i] for v in values.values()]) for i, n in enumerate(names)]
    if _table_width(first, columns) <= width:
        return _fitted(title, first, columns, width)
    first = _Column("", [label(n) for n in names], "left")
    columns = [_Column(name, cells) for name, cells in values.items()]
    return _fitted(title, first, columns, width, sections=(len(FIGURE_GROUPS[0][1]),))


def _funnel_table(report: Report) -> Table:
    """The plan's funnel: customers left after each step, how many it removed and why (words wrap)."""
    table = Table(title="Funnel (plan)", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("customers", justify="right", no_wrap=True)
    table.add_column("removed", justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for step in report.funnel:
        count, removed = step.get("count"), step.get("removed")
        table.add_row(
            str(step["step"]),
            "" if count is None else f"{count:,}",
            "" if removed is None else f"-{removed:,}",
            str(step.get("why") or ""),
        )
    return table


def _uplift_tables(report: Report, width: int) -> list[Table]:
    """Incrementality with the measures as rows and the variants as columns (intervals are long)."""
    rows = uplift_rows(report)
    cells = {name: uplift_row(u) for name, u in rows.items()}
    measures = [k for k in next(iter(cells.values())) if k != "conclusion"]
    first = _Column("", measures, "left")
    columns = [_Column(name, [c[m] for m in measures]) for name, c in cells.items()]
    return _fitted("Incrementality vs control group", first, columns, width)


def uplift_rows(report: Report) -> dict[str, Uplift]:
    """The uplift of all variants together, then of each variant against the whole control group."""
    return ({"all variants": report.uplift_total} if report.uplift_total else {}) | report.uplift_by_variant


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    width = console.width
    console.rule(f"[bold]{report.campaign}[/bold] — {len(report.runs)} run(s)")
    for alert in report.alerts:
        console.print(f"[bold red]ALERT[/bold red] {alert}")
    if report.funnel:
        console.print(_funnel_table(report))
    tables = _figures_tables("Responses", {"total": report.totals}, width)
    for title, slices in (
        ("Per variant", report.by_variant),
        ("Per channel", report.by_channel),
        ("Per locale", report.by_locale),
    ):
        tables += _figures_tables(title, slices, width)
    for table in tables:
        console.print(table)
    kv = Table(title="Rates and money", title_justify="left", show_header=False)
    kv.add_column(no_wrap=True)
    kv.add_column(justify="right", no_wrap=True)
    for k, v in {**rates(report.totals), **money(report)}.items():
        kv.add_row(k, v)
    console.print(kv)
    if uplift_rows(report):
        for table in _uplift_tables(report, width):
            console.print(table)
        console.print(METHODS, style="dim")
        for name, u in uplift_rows(report).items():
            console.print(f"[bold]{name}:[/bold] {u.conclusion}")
    if len(report.runs) > 1:
        for table in _runs_tables(report, width):
            console.print(table)


def _runs_tables(report: Report, width: int) -> list[Table]:
    first = _Column("run", [r.key for r in report.runs], "left")
    values: dict[str, list[str]] = {
        k: [] for k in ("status", "sent", "delivered", "clicked", "converted", "revenue", "uplift (pts)")
    }
    for r in report.runs:
        u = r.uplift.absolute if r.uplift else None
        values["status"].append(r.status)
        for n in ("sent", "delivered", "clicked", "converted", "revenue"):
            values[n].append(figure_cells(r.figures, (n,))[0])
        values["uplift (pts)"].append(
            "—" if u is None else f"{u.estimate * 100:+.2f} [{u.low * 100:+.2f}, {u.high * 100:+.2f}]"
        )
    columns = [_Column(k, v, "left" if k == "status" else "right") for k, v in values.items()]
    return _fitted("Runs compared", first, columns, width)


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
            for name, f in slices.items():
                writer.writerow(
                    [
                        report.campaign,
                        scope,
                        name,
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
        for name, u in rows.items():
            a = u.absolute
            writer.writerow(
                [
                    report.campaign,
                    "uplift",
                    name,
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
    funnel_items = [(str(s["step"]), float(s.get("count") or 0)) for s in report.funnel]
    t = report.totals
    response_items = [
        (n, float(getattr(t, n))) for n in ("targeted", "sent", "delivered", "opened", "clicked", "converted")
    ]
    series: dict[str, list[tuple[str, int]]] = {}
    for hour, kind, count in report.timeline:
        series.setdefault(kind, []).append((hour, count))
    uplift_items = [
        (name, u.absolute.estimate * 100, u.absolute.low * 100, u.absolute.high * 100)
        for name, u in uplift_rows(report).items()
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
        figure_groups=FIGURE_GROUPS,
        figure_cells=figure_cells,
        label=label,
        methods=METHODS,
        uplift_rows=uplift_rows(report),
        uplift_row=uplift_row,
        euros=euros,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path

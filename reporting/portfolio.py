"""The portfolio view: every campaign ranked by the revenue it really added."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, case, func, select

from audiences import assign
from core.models import Customer, Order
from core.settings import get_settings
from reporting.report import Report, build_report, campaigns_with_runs
from reporting.stats import Uplift, uplift

C = Customer.__table__
O = Order.__table__  # noqa: E741


@dataclass
class PortfolioLine:
    campaign: str
    runs: int
    targeted: int
    revenue: float
    incremental_revenue: float | None
    low: float | None
    high: float | None
    conclusion: str


def portfolio(conn: Connection) -> list[PortfolioLine]:
    """Campaigns ranked by incremental revenue (treated count x revenue-per-customer uplift)."""
    lines = []
    for name in campaigns_with_runs(conn):
        report: Report = build_report(conn, name)
        u = report.uplift_total
        rev = u.revenue_per_customer if u else None
        lines.append(
            PortfolioLine(
                campaign=name,
                runs=len(report.runs),
                targeted=report.totals.targeted,
                revenue=report.totals.revenue_cents / 100,
                incremental_revenue=report.incremental_revenue,
                low=rev.low * u.treated_n if rev else None,
                high=rev.high * u.treated_n if rev else None,
                conclusion=u.conclusion if u else "no treated customers",
            )
        )
    return sorted(
        lines, key=lambda line: (line.incremental_revenue is None, -(line.incremental_revenue or 0))
    )


def print_portfolio(lines: list[PortfolioLine], console: Console | None = None) -> None:
    """The ranking as a table of figures, then each campaign's conclusion as a sentence below it.

    Why not a conclusion column: at 80 columns (a pipe, `make demo`) a sentence in a table cell wraps
    one word per line and long words are cut; figures fold rather than being cut with an ellipsis.
    """
    out = console or Console()
    table = Table(title="Campaigns ranked by incremental revenue (95% CI)", title_justify="left")
    for col in ("campaign", "runs", "targeted", "revenue", "incremental revenue", "95% CI"):
        table.add_column(col, justify="left" if col == "campaign" else "right", overflow="fold")
    for line in lines:
        inc = "—" if line.incremental_revenue is None else f"{line.incremental_revenue:,.2f} €"
        ci = "—" if line.low is None else f"[{line.low:,.0f}, {line.high:,.0f}]"
        table.add_row(line.campaign, str(line.runs), f"{line.targeted:,}", f"{line.revenue:,.2f} €", inc, ci)
    out.print(table)
    for line in lines:
        out.print(f"{line.campaign}: {line.conclusion}", highlight=False)


def programme_uplift(conn: Connection, since: datetime, until: datetime | None = None) -> Uplift | None:
    """What all campaigns together added: customers in the global control group vs everyone else.

    The global control group is never targeted by any campaign, so comparing
    its purchase rate and revenue per customer over a period with the rest of
    the (not erased) base measures the whole programme's effect. Conversion =
    at least one order in [since, until). None when no global control is set.
    """
    percent = get_settings().global_control_percent
    if percent <= 0:
        return None
    in_gc = assign.bucket_sql(C.c.id, assign.global_control_salt()) < assign.threshold(percent)
    order_filter = [O.c.ordered_at >= since] + ([O.c.ordered_at < until] if until else [])
    per_customer = (
        select(O.c.customer_id, func.sum(O.c.amount_cents).label("cents"))
        .where(*order_filter)
        .group_by(O.c.customer_id)
        .subquery("spend")
    )
    flagged = (
        select(
            case((in_gc, 1), else_=0).label("control"),
            per_customer.c.cents,
            (func.coalesce(per_customer.c.cents, 0) / 100.0).label("euros"),
        )
        .select_from(C.outerjoin(per_customer, per_customer.c.customer_id == C.c.id))
        .where(C.c.erased_at.is_(None))
        .subquery("flagged")
    )
    rows = (
        conn.execute(
            select(
                flagged.c.control,
                func.count().label("n"),
                func.sum(case((flagged.c.cents.is_not(None), 1), else_=0)).label("buyers"),
                func.sum(flagged.c.euros).label("revenue"),
                func.sum(flagged.c.euros * flagged.c.euros).label("revenue_sq"),
            ).group_by(flagged.c.control)
        )
        .mappings()
        .all()
    )
    groups = {int(r["control"]): r for r in rows}
    t, c = groups.get(0), groups.get(1)
    if t is None or c is None:
        return None
    return uplift(
        int(t["n"]),
        int(t["buyers"] or 0),
        int(c["n"]),
        int(c["buyers"] or 0),
        (float(t["revenue"] or 0), float(t["revenue_sq"] or 0)),
        (float(c["revenue"] or 0), float(c["revenue_sq"] or 0)),
    )


def print_programme(u: Uplift | None, since: datetime, console: Console | None = None) -> None:
    console = console or Console()
    if u is None:
        console.print(
            "Programme-wide uplift: no global control group configured (RELANCE_GLOBAL_CONTROL_PERCENT)."
        )
        return
    from reporting.report_render import uplift_row

    table = Table(
        title=f"Programme-wide uplift since {since:%Y-%m-%d}: global control group vs everyone else",
        title_justify="left",
        show_header=False,
    )
    for k, v in uplift_row(u).items():
        table.add_row(k.replace("treated", "targeted base"), v)
    console.print(table)

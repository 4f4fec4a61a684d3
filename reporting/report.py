"""The figures of a campaign report, computed by the database.

Two grouped queries carry everything: one over ledger rows (joined with the
per-message event flags) grouped by run, variant, channel, control and locale,
and one at customer level for incrementality. Everything else (totals,
breakdowns, rates, cost) is arithmetic on those few grouped rows, so a report
over millions of messages stays a matter of seconds.

Incrementality is intention to treat, like with like: a customer of either
group counts as converting when they bought within the conversion window
after the (would-be) send, credited to a message or not: ``converted`` OR
``purchased`` events (tracking.attribution records both groups' window
purchases; why there and not here from ``orders``: its module doc). The
attributed ``converted`` figures (funnel, revenue, click -> conversion) stay
the attribution's credit. Comparing credited treated purchases with every
control purchase biased the uplift down (issue 16).

Why one module of ~480 lines: the two grouped queries and the arithmetic on their rows are one
computation, read top to bottom; printing and HTML/CSV live in report_render.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, literal, or_, select

from core.models import CampaignRun, Customer, Event, LedgerEntry, Status
from core.settings import get_settings
from reporting.stats import Uplift, uplift

L = LedgerEntry.__table__
E = Event.__table__
C = Customer.__table__
R = CampaignRun.__table__

SENT_STATUSES = (
    Status.sent,
    Status.delivered,
    Status.opened,
    Status.clicked,
    Status.converted,
    Status.bounced,
)
DELIVERED_STATUSES = (Status.delivered, Status.opened, Status.clicked, Status.converted)
# A purchase within the window after the (would-be) send, credited or not: what uplift compares.
BOUGHT_EVENTS = ("converted", "purchased")


@dataclass
class Figures:
    """Counts for one slice of a campaign's messages (sums are additive across slices)."""

    messages: int = 0
    held_out: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0  # treated messages with a conversion credited by the attribution rule
    bought: int = 0  # treated messages whose customer bought in the window, credited or not (uplift)
    control_converted: int = 0  # held-out rows whose customer bought in the window (uplift)
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    unsubscribed: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    revenue_cents: int = 0  # treated, credited
    bought_revenue_cents: int = 0  # treated, every purchase in the window (uplift)
    control_revenue_cents: int = 0
    sms_segments: float = 0.0

    def add(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def targeted(self) -> int:
        return self.messages - self.held_out

    def rate(self, name: str, base: str = "delivered") -> float:
        denominator = getattr(self, base)
        return getattr(self, name) / denominator if denominator else 0.0


@dataclass
class RunSummary:
    id: int
    key: str
    status: str
    paused_reason: str | None
    started_at: datetime | None
    figures: Figures
    uplift: Uplift | None = None
    models: dict = field(default_factory=dict)


@dataclass
class Report:
    campaign: str
    runs: list[RunSummary]
    funnel: list[dict]  # steps: step, count (customers left), removed, why
    totals: Figures
    by_variant: dict[str, Figures]
    by_channel: dict[str, Figures]
    by_locale: dict[str, Figures]
    uplift_total: Uplift | None
    uplift_by_variant: dict[str, Uplift]
    timeline: list[tuple[str, str, int]]  # (hour, event type, count)
    cost: dict[str, float]
    alerts: list[str]

    @property
    def incremental_revenue(self) -> float | None:
        """Treated customers x (revenue per treated - revenue per control customer), in currency units."""
        u = self.uplift_total
        if u is None or u.revenue_per_customer is None:
            return None
        return u.revenue_per_customer.estimate * u.treated_n


def _flags_subquery(run_ids: list[int]):
    """One row per message with events: what happened to it."""

    def has(condition):
        return func.max(case((condition, 1), else_=0))

    return (
        select(
            E.c.ledger_id,
            has(E.c.type == "delivered").label("ev_delivered"),
            has(and_(E.c.type == "opened", E.c.machine == False)).label("ev_opened"),  # noqa: E712
            has(E.c.type == "clicked").label("ev_clicked"),
            has(E.c.type == "converted").label("ev_converted"),
            has(E.c.type.in_(BOUGHT_EVENTS)).label("ev_bought"),
            has(and_(E.c.type == "bounced", E.c.subtype != "soft")).label("ev_bounced_hard"),
            has(and_(E.c.type == "bounced", E.c.subtype == "soft")).label("ev_bounced_soft"),
            has(E.c.type == "complained").label("ev_complained"),
            has(E.c.type == "unsubscribed").label("ev_unsubscribed"),
            func.coalesce(func.sum(case((E.c.type == "converted", E.c.revenue_cents), else_=0)), 0).label(
                "ev_revenue"
            ),
            func.coalesce(func.sum(case((E.c.type.in_(BOUGHT_EVENTS), E.c.revenue_cents), else_=0)), 0).label(
                "ev_bought_revenue"
            ),
        )
        .where(E.c.run_id.in_(run_ids), E.c.ledger_id.is_not(None))
        .group_by(E.c.ledger_id)
        .subquery("flags")
    )


def _slice_rows(conn: Connection, run_ids: list[int]):
    ev = _flags_subquery(run_ids)
    treated = L.c.in_control == False  # noqa: E712
    status = L.c.status

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    def flag(name):
        return func.coalesce(getattr(ev.c, name), 0) == 1

    revenue = func.coalesce(ev.c.ev_revenue, 0)
    bought = func.coalesce(ev.c.ev_bought_revenue, 0)  # uplift: every purchase in the window
    stmt = (
        select(
            L.c.run_id,
            func.coalesce(L.c.variant, "default").label("variant"),
            L.c.channel,
            func.coalesce(C.c.locale, "?").label("locale"),
            func.count().label("messages"),
            count(L.c.in_control == True).label("held_out"),  # noqa: E712
            count(and_(treated, or_(status.in_(SENT_STATUSES), flag("ev_delivered")))).label("sent"),
            count(
                and_(
                    treated,
                    or_(
                        status.in_(DELIVERED_STATUSES),
                        flag("ev_delivered"),
                        flag("ev_opened"),
                        flag("ev_clicked"),
                    ),
                    status != Status.bounced,
                )
            ).label("delivered"),
            count(and_(treated, or_(flag("ev_opened"), flag("ev_clicked")))).label("opened"),
            count(and_(treated, flag("ev_clicked"))).label("clicked"),
            count(and_(treated, flag("ev_converted"))).label("converted"),
            count(and_(treated, flag("ev_bought"))).label("bought"),
            count(and_(L.c.in_control == True, flag("ev_bought"))).label("control_converted"),  # noqa: E712
            count(
                and_(
                    treated,
                    or_(flag("ev_bounced_hard"), and_(status == Status.bounced, ~flag("ev_bounced_soft"))),
                )
            ).label("bounced_hard"),
            count(and_(treated, flag("ev_bounced_soft"))).label("bounced_soft"),
            count(and_(treated, flag("ev_complained"))).label("complained"),
            count(and_(treated, flag("ev_unsubscribed"))).label("unsubscribed"),
            count(status == Status.failed).label("failed"),
            count(status == Status.unknown).label("unknown"),
            count(status == Status.skipped).label("skipped"),
            func.sum(case((treated, revenue), else_=0)).label("revenue_cents"),
            func.sum(case((treated, bought), else_=0)).label("bought_revenue_cents"),
            func.sum(case((treated, literal(0)), else_=bought)).label("control_revenue_cents"),
            func.sum(case((treated, bought * bought), else_=0)).label("revenue_sq_treated"),
            func.sum(case((treated, literal(0)), else_=bought * bought)).label("revenue_sq_control"),
            func.sum(
                case(
                    (
                        and_(treated, L.c.channel == "sms", status.in_(SENT_STATUSES)),
                        func.coalesce(L.c.cost_units, 1.0),
                    ),
                    else_=0.0,
                )
            ).label("sms_segments"),
        )
        .select_from(L.outerjoin(ev, ev.c.ledger_id == L.c.id).outerjoin(C, C.c.id == L.c.customer_id))
        .where(L.c.run_id.in_(run_ids))
        .group_by(L.c.run_id, L.c.variant, L.c.channel, C.c.locale)
    )
    return conn.execute(stmt).mappings().all()


def _one_row_per_customer(conn: Connection, run_ids: list[int]) -> bool:
    """True when no customer has two messages in one run (the usual case: one channel each)."""
    repeated = (
        select(L.c.customer_id)
        .where(L.c.run_id.in_(run_ids))
        .group_by(L.c.run_id, L.c.customer_id)
        .having(func.count() > 1)
        .limit(1)
    )
    return conn.execute(repeated).first() is None


def _outcomes_from_slices(rows) -> list[dict]:
    """Customer-level groups read off the slice rows, valid when each customer has one message per run."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        for control in (0, 1):
            key = (row["run_id"], row["variant"], control)
            g = groups.setdefault(
                key,
                {
                    "run_id": key[0],
                    "variant": key[1],
                    "control": control,
                    "n": 0,
                    "conversions": 0,
                    "revenue": 0.0,
                    "revenue_sq": 0.0,
                },
            )
            held = int(row["held_out"] or 0)
            g["n"] += held if control else int(row["messages"] or 0) - held
            g["conversions"] += int((row["control_converted"] if control else row["bought"]) or 0)
            g["revenue"] += (
                float((row["control_revenue_cents"] if control else row["bought_revenue_cents"]) or 0) / 100
            )
            square = row["revenue_sq_control"] if control else row["revenue_sq_treated"]
            g["revenue_sq"] += float(square or 0) / 1e4
    return [g for g in groups.values() if g["n"]]


def _customer_outcomes(conn: Connection, run_ids: list[int]):
    """Incrementality at customer level: one customer reached on two channels counts once.

    Intention to treat: every customer assigned to the treated group counts, sent or not
    (skipped, failed), as every control customer does; anything else would bias the comparison.
    A customer converts when they bought in the window (``BOUGHT_EVENTS``), and their revenue is
    their richest row's, not the sum: each of their rows in the run records the same purchases
    (its window covers them), so a sum would count an order once per channel.
    """
    ev = _flags_subquery(run_ids)
    per_customer = (
        select(
            L.c.run_id,
            L.c.customer_id,
            func.coalesce(func.max(L.c.variant), "default").label("variant"),
            func.max(case((L.c.in_control == True, 1), else_=0)).label("control"),  # noqa: E712
            func.max(func.coalesce(ev.c.ev_bought, 0)).label("converted"),
            (func.max(func.coalesce(ev.c.ev_bought_revenue, 0)) / 100.0).label("revenue"),
        )
        .select_from(L.outerjoin(ev, ev.c.ledger_id == L.c.id))
        .where(L.c.run_id.in_(run_ids))
        .group_by(L.c.run_id, L.c.customer_id)
        .subquery("per_customer")
    )
    stmt = select(
        per_customer.c.run_id,
        per_customer.c.variant,
        per_customer.c.control,
        func.count().label("n"),
        func.sum(per_customer.c.converted).label("conversions"),
        func.sum(per_customer.c.revenue).label("revenue"),
        func.sum(per_customer.c.revenue * per_customer.c.revenue).label("revenue_sq"),
    ).group_by(per_customer.c.run_id, per_customer.c.variant, per_customer.c.control)
    return conn.execute(stmt).mappings().all()


def _number(value) -> int | float:
    """SQL sums come back as Decimal on PostgreSQL: plain numbers for arithmetic and JSON."""
    if value is None:
        return 0
    return float(value) if isinstance(value, float) or not float(value).is_integer() else int(value)


def _uplift_from(groups: list) -> Uplift | None:
    t = [g for g in groups if not g["control"]]
    c = [g for g in groups if g["control"]]
    if not t:
        return None

    def total(rows, key):
        return sum(float(r[key] or 0) for r in rows)

    return uplift(
        int(total(t, "n")),
        int(total(t, "conversions")),
        int(total(c, "n")),
        int(total(c, "conversions")),
        (total(t, "revenue"), total(t, "revenue_sq")),
        (total(c, "revenue"), total(c, "revenue_sq")),
    )


def _timeline(conn: Connection, run_ids: list[int]) -> list[tuple[str, str, int]]:
    if conn.dialect.name == "postgresql":
        hour = func.to_char(func.date_trunc("hour", E.c.occurred_at), "YYYY-MM-DD HH24:00")
    else:
        hour = func.strftime("%Y-%m-%d %H:00", E.c.occurred_at)
    stmt = (
        select(hour.label("hour"), E.c.type, func.count())
        .where(E.c.run_id.in_(run_ids), E.c.type.in_(["opened", "clicked", "converted"]))
        .group_by(hour, E.c.type)
        .order_by(hour)
    )
    return [(str(h), t, int(n)) for h, t, n in conn.execute(stmt)]


def _funnel(run) -> list[dict]:
    """The plan's funnel stored on the run (audiences.plan.funnel), as steps of step / count / removed / why.

    The control group closes the list as the plan prints it: the customers selected, less
    those held out. A bare ``{name: count}`` (runs recorded without the planner) reads as steps too.
    """
    if not run.funnel:
        return []
    data = json.loads(run.funnel)
    if not isinstance(data, dict):
        return []
    if not isinstance(data.get("steps"), list):
        return [{"step": k, "count": v, "removed": None, "why": ""} for k, v in data.items()]
    steps = [
        {
            "step": str(s.get("step", "")),
            "count": s.get("count"),
            "removed": None if s.get("step") == "base" else s.get("removed"),
            "why": s.get("why") or "",
        }
        for s in data["steps"]
        if isinstance(s, dict)
    ]
    control, recipients = data.get("control"), data.get("recipients")
    if isinstance(control, dict) and isinstance(recipients, dict):
        steps.append(
            {
                "step": "control group",
                "count": recipients.get("customers"),
                "removed": control.get("held_out_customers"),
                "why": f"{control.get('percent', 0)}% held out (stable hash), not sent",
            }
        )
    return steps


def select_runs(conn: Connection, campaign: str, run: str | None = None, since: datetime | None = None):
    stmt = select(R).where(R.c.campaign == campaign).order_by(R.c.created_at, R.c.id)
    if run is not None:
        stmt = stmt.where(or_(R.c.key == run, R.c.id == int(run)) if run.isdigit() else R.c.key == run)
    if since is not None:
        stmt = stmt.where(R.c.created_at >= since)
    return conn.execute(stmt).all()


def cost_of(figures_by_channel: dict[str, Figures]) -> dict[str, float]:
    s = get_settings()
    sms = figures_by_channel.get("sms", Figures()).sms_segments * s.sms_price_per_segment
    email = figures_by_channel.get("email", Figures()).sent * s.email_price_per_message
    push = figures_by_channel.get("push", Figures()).sent * s.push_price_per_message
    return {
        "sms": round(sms, 2),
        "email": round(email, 2),
        "push": round(push, 2),
        "total": round(sms + email + push, 2),
    }


def build_report(
    conn: Connection, campaign: str, run: str | None = None, since: datetime | None = None
) -> Report:
    """Every figure of a campaign's report (optionally one run, or runs since a date)."""
    from delivery.alerts import describe_alerts

    runs = select_runs(conn, campaign, run, since)
    if not runs:
        raise LookupError(f"no run of campaign `{campaign}`" + (f" matching `{run}`" if run else ""))
    run_ids = [r.id for r in runs]
    rows = _slice_rows(conn, run_ids)
    if _one_row_per_customer(conn, run_ids):
        outcomes = _outcomes_from_slices(rows)
    else:
        outcomes = _customer_outcomes(conn, run_ids)

    totals, per_run = Figures(), defaultdict(Figures)
    by_variant, by_channel, by_locale = defaultdict(Figures), defaultdict(Figures), defaultdict(Figures)
    for row in rows:
        f = Figures(**{k.name: _number(row[k.name]) for k in fields(Figures)})
        for bucket in (
            totals,
            per_run[row["run_id"]],
            by_variant[row["variant"]],
            by_channel[row["channel"]],
            by_locale[row["locale"]],
        ):
            bucket.add(f)

    control_groups = [o for o in outcomes if o["control"]]
    uplift_by_variant = {
        variant: u
        for variant in sorted({o["variant"] for o in outcomes if not o["control"]})
        if (
            u := _uplift_from(
                [o for o in outcomes if o["variant"] == variant and not o["control"]] + control_groups
            )
        )
    }
    summaries = []
    for r in runs:
        summaries.append(
            RunSummary(
                id=r.id,
                key=r.key,
                status=r.status,
                paused_reason=r.paused_reason,
                started_at=r.started_at,
                figures=per_run[r.id],
                uplift=_uplift_from([o for o in outcomes if o["run_id"] == r.id]),
                models=json.loads(r.models) if r.models else {},
            )
        )
    return Report(
        campaign=campaign,
        runs=summaries,
        funnel=_funnel(runs[-1]),
        totals=totals,
        by_variant=dict(by_variant),
        by_channel=dict(by_channel),
        by_locale=dict(by_locale),
        uplift_total=_uplift_from(outcomes),
        uplift_by_variant=uplift_by_variant,
        timeline=_timeline(conn, run_ids),
        cost=cost_of(by_channel),
        alerts=describe_alerts(runs, totals),
    )


def campaigns_with_runs(conn: Connection) -> list[str]:
    return [name for (name,) in conn.execute(select(R.c.campaign).distinct().order_by(R.c.campaign))]

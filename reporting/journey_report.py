"""The figures of a journey report, read from the journey tables, the ledger and the orders.

A journey (core.spec_steps) leaves three traces: ``journey_entry`` (one row per customer pass,
where they are or how they left), ``journey_step`` (one row per step an entry did) and the
ledger rows of its send steps (``ledger.entry_id`` / ``ledger.step``). A handful of grouped
queries read them: per step the history outcomes, per step the ledger passes (one entry's
messages of one run count once, whatever the channels), per (status, step, reason) the entries,
and per entry the first order and revenue inside the conversion window. Everything else is
arithmetic on those grouped rows, so the report stays a matter of seconds on large journeys.

Incrementality is the whole journey against its control group (held out AT ENTRY, never sent
anything): an entry converts when its customer placed an order within ``window_days`` of
entering (``entered_at <= ordered_at < entered_at + window``), in both groups alike. Purchases
are the imported ``orders`` and the conversions API's purchases, which attribution stores only as
events (``converted`` / ``purchased``, a control entry's on its held-out ledger row), each once.

This module reads tables only: the journeys package (the engine) sits beside reporting in the
layers, and a report must not depend on the code that wrote the rows.

Why one module of ~500 lines: the grouped queries and the arithmetic that assembles their rows
into steps are one computation, read top to bottom (as reporting/report.py); printing, HTML and
CSV live in journey_render.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, and_, case, func, literal, select

from core.models import (
    CampaignRun,
    EntryStatus,
    Event,
    JourneyEntry,
    JourneyStepLog,
    LedgerEntry,
    Order,
    Status,
)
from reporting.report import Figures, cost_of
from reporting.stats import Uplift, uplift

JE = JourneyEntry.__table__
JS = JourneyStepLog.__table__
L = LedgerEntry.__table__
E = Event.__table__
O = Order.__table__  # noqa: E741
R = CampaignRun.__table__

DEFAULT_WINDOW_DAYS = 7
# A bounced message was sent (and billed): counted as sent, as the campaign report does.
SENT = (Status.sent, Status.delivered, Status.opened, Status.clicked, Status.converted, Status.bounced)
DELIVERED = (Status.delivered, Status.opened, Status.clicked, Status.converted)
OPENED = (Status.opened, Status.clicked, Status.converted)
CLICKED = (Status.clicked, Status.converted)
NOT_SENT = (Status.failed, Status.unknown, Status.skipped)
# The per-pass flags of a send step, in the order the report shows them.
SEND_FLAGS = ("sent", "delivered", "opened", "clicked", "converted", "bounced", "complained", "unsubscribed")
JOURNEY_KIND = "journey"  # history rows of exits decided by exit_when or a removed step, not by a step


@dataclass
class StepFigures:
    """What one step did. Send figures count passes (an entry's messages of one run), not messages."""

    name: str
    kind: str
    entered: int = 0  # history rows of this step: entries that did it
    waiting: int = 0  # active entries on this step now (not done yet)
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0  # the attribution's credit (ledger status converted)
    bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0
    not_sent: int = 0  # passes with ledger rows none of which went out (failed, unknown, skipped at send)
    skipped: int = 0  # the step skipped the entry (history outcome `skipped`): see ``skipped_why``
    messages: int = 0  # ledger rows sent (cost)
    sms_segments: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # history outcome -> entries
    skipped_why: dict[str, int] = field(default_factory=dict)
    not_sent_why: dict[str, int] = field(default_factory=dict)
    exited_here: dict[str, int] = field(default_factory=dict)  # exit reason -> entries that left here
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def exited(self) -> int:
        return sum(self.exited_here.values())

    @property
    def cost_total(self) -> float:
        return self.cost.get("total", 0.0)


@dataclass
class TimeToConvert:
    """From entering to the first order in the window, for the treated entries that converted."""

    converters: int
    median_hours: float | None
    p75_hours: float | None


@dataclass
class JourneyReport:
    journey: str
    window_days: int
    steps: list[StepFigures]
    entries: int
    control: int
    by_status: dict[str, int]  # active, control, completed, exited
    exit_reasons: dict[str, int]  # completed and exited entries by reason
    open_windows: int  # entries whose conversion window is still open: they may convert yet
    time_to_convert: TimeToConvert
    uplift: Uplift | None
    treated_revenue_cents: int
    control_revenue_cents: int
    cost: dict[str, float]
    alerts: list[str] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def treated(self) -> int:
        return self.entries - self.control

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.steps)

    @property
    def revenue_per_entry(self) -> float | None:
        return self.treated_revenue_cents / 100 / self.treated if self.treated else None

    @property
    def control_revenue_per_entry(self) -> float | None:
        return self.control_revenue_cents / 100 / self.control if self.control else None

    @property
    def incremental_revenue(self) -> float | None:
        """Treated entries x (revenue per treated - per control entry), in currency units."""
        u = self.uplift
        if u is None or u.revenue_per_customer is None:
            return None
        return u.revenue_per_customer.estimate * u.treated_n

    def totals(self) -> Figures:
        """The send figures of every step together, shaped for delivery.alerts."""
        total = Figures()
        for s in self.steps:
            total.sent += s.sent
            total.delivered += s.delivered
            total.bounced_hard += s.bounced
            total.complained += s.complained
            total.unsubscribed += s.unsubscribed
        return total


# ---------------------------------------------------------------- finding a journey


def journey_spec(name: str, folder: Path):
    """The journey (a campaign with `steps:`) named ``name`` in ``folder``, or None.

    Files that do not load are passed over: only the named journey matters here, and
    `relance validate` is where a broken file is reported.
    """
    from core.spec_loader import load_campaign

    for path in sorted(Path(folder).glob("*.y*ml")):
        try:
            campaign = load_campaign(path)
        except Exception:  # noqa: BLE001, S112 - another file's error is not this report's business
            continue
        if campaign.name == name and campaign.is_journey:
            return campaign
    return None


def report_for(conn: Connection, name: str, folder: Path) -> JourneyReport | None:
    """The journey report of ``name`` with the steps and window of its file (None: not a journey)."""
    from core.spec_steps import kind_of

    spec = journey_spec(name, folder)
    if spec is None and not has_entries(conn, name):
        return None
    steps = [(s.name, kind_of(s)) for s in spec.steps or []] if spec is not None else None
    window = spec.conversion.window_days if spec is not None else None
    return build_journey_report(conn, name, window, steps=steps)


def has_entries(conn: Connection, journey: str) -> bool:
    return conn.execute(select(JE.c.id).where(JE.c.journey == journey).limit(1)).first() is not None


# ---------------------------------------------------------------- queries


def _history(conn: Connection, journey: str):
    """Per (step, kind, outcome, detail): entries, and when the step was first done (its order)."""
    stmt = (
        select(
            JS.c.step,
            JS.c.kind,
            JS.c.outcome,
            JS.c.detail,
            func.count().label("n"),
            func.min(JS.c.at).label("first_at"),
            func.min(JS.c.id).label("first_id"),
        )
        .where(JS.c.journey == journey)
        .group_by(JS.c.step, JS.c.kind, JS.c.outcome, JS.c.detail)
    )
    return conn.execute(stmt).mappings().all()


def _entries(conn: Connection, journey: str):
    stmt = (
        select(JE.c.status, JE.c.step, JE.c.exit_reason, JE.c.in_control, func.count().label("n"))
        .where(JE.c.journey == journey)
        .group_by(JE.c.status, JE.c.step, JE.c.exit_reason, JE.c.in_control)
    )
    return conn.execute(stmt).mappings().all()


def _passes(conn: Connection, journey: str):
    """Per send step, the passes (entry x run) that reached each status, from their ledger rows.

    One entry's rows of one run (two channels, say) count once; an entry that does the same send
    step twice (a loop with a wait) counts twice, as its history does.
    """

    def has(statuses):
        return func.max(case((L.c.status.in_(statuses), 1), else_=0))

    responses = (
        select(
            E.c.ledger_id,
            func.max(case((E.c.type == "unsubscribed", 1), else_=0)).label("unsubscribed"),
            func.max(case((E.c.type == "complained", 1), else_=0)).label("complained"),
        )
        .where(E.c.type.in_(("unsubscribed", "complained")), E.c.ledger_id.is_not(None))
        .group_by(E.c.ledger_id)
        .subquery("responses")
    )
    per_pass = (
        select(
            L.c.step,
            has(SENT).label("sent"),
            has(DELIVERED).label("delivered"),
            has(OPENED).label("opened"),
            has(CLICKED).label("clicked"),
            has((Status.converted,)).label("converted"),
            has((Status.bounced,)).label("bounced"),
            func.max(func.coalesce(responses.c.complained, 0)).label("complained"),
            func.max(func.coalesce(responses.c.unsubscribed, 0)).label("unsubscribed"),
            has(NOT_SENT).label("any_not_sent"),
        )
        .select_from(L.outerjoin(responses, responses.c.ledger_id == L.c.id))
        .where(L.c.campaign == journey, L.c.entry_id.is_not(None), L.c.in_control == False)  # noqa: E712
        .group_by(L.c.step, L.c.entry_id, L.c.run_id)
        .subquery("passes")
    )
    p = per_pass.c
    stmt = select(
        p.step,
        *(func.sum(getattr(p, name)).label(name) for name in SEND_FLAGS),
        func.sum(case((and_(p.any_not_sent == 1, p.sent == 0), 1), else_=0)).label("not_sent"),
    ).group_by(p.step)
    return conn.execute(stmt).mappings().all()


def _messages(conn: Connection, journey: str):
    """Per (send step, channel): messages sent and SMS segments, for the cost."""
    sent = L.c.status.in_(SENT)
    stmt = (
        select(
            L.c.step,
            L.c.channel,
            func.sum(case((sent, 1), else_=0)).label("messages"),
            func.sum(
                case((and_(sent, L.c.channel == "sms"), func.coalesce(L.c.cost_units, 1.0)), else_=0.0)
            ).label("sms_segments"),
        )
        .where(L.c.campaign == journey, L.c.entry_id.is_not(None), L.c.in_control == False)  # noqa: E712
        .group_by(L.c.step, L.c.channel)
    )
    return conn.execute(stmt).mappings().all()


def _not_sent_reasons(conn: Connection, journey: str):
    stmt = (
        select(L.c.step, L.c.status, L.c.reason, func.count().label("n"))
        .where(L.c.campaign == journey, L.c.entry_id.is_not(None), L.c.status.in_(NOT_SENT))
        .group_by(L.c.step, L.c.status, L.c.reason)
    )
    return conn.execute(stmt).mappings().all()


def _in_window(conn: Connection, ordered_at, entered_at, days: int):
    """``entered_at <= ordered_at < entered_at + days``, on either database.

    PostgreSQL adds an interval; SQLite compares Julian day numbers (its datetimes are text).
    """
    if conn.dialect.name == "postgresql":
        return and_(ordered_at >= entered_at, ordered_at < entered_at + timedelta(days=days))
    return and_(
        func.julianday(ordered_at) >= func.julianday(entered_at),
        func.julianday(ordered_at) < func.julianday(entered_at) + literal(float(days)),
    )


def _seconds_between(conn: Connection, later, earlier):
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _order_key(conn: Connection, event_id):
    """The order an attribution event stands for: its id up to the first ':' (tracking.attribution)."""
    if conn.dialect.name == "postgresql":
        return func.split_part(event_id, ":", 1)
    cut = func.instr(event_id, ":")
    return case((cut > 0, func.substr(event_id, 1, cut - 1)), else_=event_id)


def _purchases(conn: Connection):
    """Every purchase once: imported orders and those the conversions API stored only as events.

    Why both: a purchase posted to the conversions API never reaches ``orders``; attribution
    stores it as a ``converted`` or ``purchased`` event (a control one too, on the held-out
    ledger row a journey's control entry has). UNION keeps an order that is in both once.
    """
    orders = select(
        O.c.customer_id, O.c.external_id.label("order_key"), O.c.ordered_at.label("at"),
        O.c.amount_cents.label("amount"),
    )  # fmt: skip
    events = select(
        E.c.customer_id, _order_key(conn, E.c.provider_event_id).label("order_key"),
        E.c.occurred_at.label("at"), func.coalesce(E.c.revenue_cents, 0).label("amount"),
    ).where(E.c.type.in_(("converted", "purchased")), E.c.customer_id.is_not(None))  # fmt: skip
    return orders.union(events).subquery("purchases")


def _conversions(conn: Connection, journey: str, days: int):
    """Per entry that converted: its group, seconds to the first purchase, its window revenue (cents)."""
    P = _purchases(conn)  # noqa: N806
    per_entry = (
        select(
            JE.c.id,
            JE.c.in_control,
            JE.c.entered_at,
            func.min(P.c.at).label("first_order"),
            func.sum(P.c.amount).label("revenue"),
        )
        .select_from(
            JE.join(
                P,
                and_(
                    P.c.customer_id == JE.c.customer_id,
                    _in_window(conn, P.c.at, JE.c.entered_at, days),
                ),
            )
        )
        .where(JE.c.journey == journey)
        .group_by(JE.c.id, JE.c.in_control, JE.c.entered_at)
        .subquery("converted_entries")
    )
    return per_entry


def _groups(conn: Connection, per_entry):
    """Per group (control or not): converting entries, revenue sum and sum of squares (currency units)."""
    revenue = per_entry.c.revenue / 100.0
    stmt = select(
        per_entry.c.in_control,
        func.count().label("conversions"),
        func.sum(revenue).label("revenue"),
        func.sum(revenue * revenue).label("revenue_sq"),
        func.sum(per_entry.c.revenue).label("revenue_cents"),
    ).group_by(per_entry.c.in_control)
    return {bool(r["in_control"]): r for r in conn.execute(stmt).mappings()}


def _time_to_convert(conn: Connection, per_entry) -> TimeToConvert:
    """Median and 75th percentile (linear interpolation, as numpy and percentile_cont) of the treated.

    One number per converting entry is read: converters are a small share of the entries.
    """
    import numpy as np

    seconds = _seconds_between(conn, per_entry.c.first_order, per_entry.c.entered_at)
    stmt = select(seconds).where(per_entry.c.in_control == False)  # noqa: E712
    values = [float(s) for (s,) in conn.execute(stmt)]
    if not values:
        return TimeToConvert(0, None, None)
    median, p75 = np.percentile(np.array(values) / 3600.0, [50, 75])
    return TimeToConvert(len(values), float(median), float(p75))


def _open_windows(conn: Connection, journey: str, days: int, now: datetime) -> int:
    stmt = select(func.count()).where(JE.c.journey == journey, JE.c.entered_at > now - timedelta(days=days))
    return int(conn.execute(stmt).scalar_one())


# ---------------------------------------------------------------- assembly


def _step_order(history, entries, steps: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The file's steps in its order, then any other step met in the data by first appearance.

    Without the file, history gives the order (when each step was first done, then its first
    row) and the kind; steps only entries sit on (none has done them yet) come last.
    """
    order: dict[str, str] = dict(steps or [])
    firsts: dict[str, tuple] = {}
    kinds: dict[str, str] = {}
    for h in history:
        key = (h["first_at"], h["first_id"])
        firsts[h["step"]] = min(firsts.get(h["step"], key), key)
        if h["kind"] != JOURNEY_KIND:
            kinds[h["step"]] = h["kind"]
    for name in sorted(firsts, key=lambda n: firsts[n]):
        order.setdefault(name, kinds.get(name, "?"))
    for e in entries:
        order.setdefault(e["step"], "?")
    return list(order.items())


def _fill_steps(steps: dict[str, StepFigures], history, entries, passes, messages, reasons) -> None:
    for h in history:
        s, n = steps[h["step"]], int(h["n"])
        if h["kind"] == JOURNEY_KIND:
            continue  # an exit decided before the step acted: counted in exited_here from the entries
        s.entered += n
        s.outcomes[h["outcome"]] = s.outcomes.get(h["outcome"], 0) + n
        if h["kind"] == "send" and h["outcome"] == "skipped":
            s.skipped += n
            why = h["detail"] or "no reason recorded"
            s.skipped_why[why] = s.skipped_why.get(why, 0) + n
    for e in entries:
        s, n = steps[e["step"]], int(e["n"])
        if e["status"] == EntryStatus.active:
            s.waiting += n
        elif e["status"] in (EntryStatus.completed, EntryStatus.exited):
            why = e["exit_reason"] or e["status"]
            s.exited_here[why] = s.exited_here.get(why, 0) + n
    for p in passes:
        s = steps[p["step"]]
        for name in SEND_FLAGS:
            setattr(s, name, int(p[name] or 0))
        s.not_sent = int(p["not_sent"] or 0)
    by_channel: dict[str, dict[str, Figures]] = defaultdict(dict)
    for m in messages:
        s = steps[m["step"]]
        s.messages += int(m["messages"] or 0)
        s.sms_segments += float(m["sms_segments"] or 0)
        by_channel[m["step"]][m["channel"]] = Figures(
            sent=int(m["messages"] or 0), sms_segments=float(m["sms_segments"] or 0)
        )
    for name, s in steps.items():
        s.cost = cost_of(by_channel.get(name, {}))
    for r in reasons:
        s = steps[r["step"]]
        why = f"{r['status']}: {r['reason'] or 'no reason recorded'}"
        s.not_sent_why[why] = s.not_sent_why.get(why, 0) + int(r["n"])


def _alerts(conn: Connection, journey: str, totals: Figures) -> list[str]:
    from delivery.alerts import describe_alerts

    runs = conn.execute(select(R.c.key, R.c.status, R.c.paused_reason).where(R.c.campaign == journey)).all()
    return describe_alerts(runs, totals)


def build_journey_report(
    conn: Connection,
    journey: str,
    window_days: int | None = None,
    steps: list[tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> JourneyReport:
    """Every figure of a journey's report.

    ``steps`` (name, kind) in the file's order, and ``window_days`` (the file's
    ``conversion.window_days``, default 7) come from the journey's file when the caller has it.
    LookupError when nothing is known of the journey (no entry, no history, no steps given).
    """
    days = window_days or DEFAULT_WINDOW_DAYS
    now = now or datetime.now(UTC)
    history, entries = _history(conn, journey), _entries(conn, journey)
    if not history and not entries and not steps:
        raise LookupError(f"no entry in journey `{journey}`: customers enter at its first scheduled run")
    passes, messages = _passes(conn, journey), _messages(conn, journey)
    reasons = _not_sent_reasons(conn, journey)
    order = _step_order(history, entries, steps)
    for row in (*passes, *messages, *reasons):
        if row["step"] not in dict(order):
            order.append((row["step"], "send"))
    figures = {name: StepFigures(name, kind) for name, kind in order}
    _fill_steps(figures, history, entries, passes, messages, reasons)

    by_status: dict[str, int] = defaultdict(int)
    exit_reasons: dict[str, int] = defaultdict(int)
    control = 0
    for e in entries:
        n = int(e["n"])
        by_status[e["status"]] += n
        control += n if e["in_control"] else 0
        if e["status"] in (EntryStatus.completed, EntryStatus.exited):
            exit_reasons[e["exit_reason"] or e["status"]] += n
    total = sum(by_status.values())

    per_entry = _conversions(conn, journey, days)
    groups = _groups(conn, per_entry)
    treated_g, control_g = groups.get(False), groups.get(True)

    def pick(g, key) -> float:
        return float(g[key] or 0) if g is not None else 0.0

    result = None
    if total - control:
        result = uplift(
            total - control,
            int(pick(treated_g, "conversions")),
            control,
            int(pick(control_g, "conversions")),
            (pick(treated_g, "revenue"), pick(treated_g, "revenue_sq")),
            (pick(control_g, "revenue"), pick(control_g, "revenue_sq")),
        )
    cost = {k: round(sum(s.cost.get(k, 0.0) for s in figures.values()), 2) for k in ("sms", "email", "push")}
    cost["total"] = round(sum(cost.values()), 2)
    report = JourneyReport(
        journey=journey,
        window_days=days,
        steps=list(figures.values()),
        entries=total,
        control=control,
        by_status={s: by_status.get(s, 0) for s in EntryStatus} | dict(by_status),
        exit_reasons=dict(sorted(exit_reasons.items(), key=lambda kv: -kv[1])),
        open_windows=_open_windows(conn, journey, days, now),
        time_to_convert=_time_to_convert(conn, per_entry),
        uplift=result,
        treated_revenue_cents=int(pick(treated_g, "revenue_cents")),
        control_revenue_cents=int(pick(control_g, "revenue_cents")),
        cost=cost,
    )
    report.alerts = _alerts(conn, journey, report.totals())
    return report

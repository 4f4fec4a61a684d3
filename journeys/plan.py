"""The plan of a journey: who enters now, what the next tick does, and where customers are expected after.

Three parts, in one transaction that is ROLLED BACK:

1. the entry funnel: the journey's audience counted step by step as
   journeys.engine.entry_rows selects it (consent and suppression on the
   journey's channels, the global control group, customers already in);
2. now: journeys.engine.enter + advance run for real on the same clock, so the
   counts of "now" (entered, moved, messages recorded per channel) are what a
   tick at that moment does, by construction, and nothing is kept;
3. later: from the state that leaves, the customers on each step flow through
   the graph: a split by its percents, a branch on a response by the past rate
   of that response for the messages of its step (ledger rows of earlier runs
   of the same templates, campaigns or journeys), a branch on an audience rule
   by the share of the journey's active entries matching it now. Fewer than
   ``MIN_DELIVERED`` delivered messages make a rate unknown, and every step
   after an unknown branch is unknown too (no guessed number is multiplied on).

Cost per step: expected messages per channel x the unit prices of
audiences.plan.estimate_cost (SMS segments from one rendered sample), as the
campaign plan prices a run. Known simplifications (notes/17-status-plan.md):
later exits by exit_when (conversions...) are not projected, and a branch's
rate is taken over delivered messages whatever its `within_hours`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, literal, not_, select

from audiences.plan import WHY, count_base, estimate_cost
from audiences.selection import candidates
from core.models import EntryStatus, JourneyEntry, JourneyStepLog, LedgerEntry
from core.settings import Settings, get_settings
from core.spec import Campaign, kind_of
from journeys import engine
from journeys.conditions import already_in
from journeys.definition import entry_campaign, send_campaign, step_channels, steps_of
from journeys.projection import branch_share, earliest, project

ENTRY = JourneyEntry.__table__
HISTORY = JourneyStepLog.__table__
LEDGER = LedgerEntry.__table__

ENTRY_WHY = {
    "base": WHY["base"],
    "segment": WHY["segment"],
    "consent": "no granted consent with a valid address on any channel of the journey ({channels})",
    "suppression": WHY["suppression"],
    "global_control": WHY["global_control"],
    "already_in": "in this journey already, or entered before ({reentry})",
}


# --------------------------------------------------------------------------
# The entry funnel
# --------------------------------------------------------------------------


def entry_funnel(conn: Connection, journey: Campaign, now: datetime, segments: Any = None) -> dict[str, Any]:
    """Who the journey's audience would enter now, step by step (the conditions of engine.entry_rows)."""
    camp = entry_campaign(journey)
    cand = candidates(camp, now, bind=conn, window=False, segments=segments)
    customer = cand.flag("customer_id")
    stage = case(
        (not_(cand.any_ok("consent")), literal("consent")),
        (not_(cand.any_ok("suppression")), literal("suppression")),
        (cand.flag("global_control") == 1, literal("global_control")),
        (already_in(journey, now, customer), literal("already_in")),
        else_=literal("enter"),
    ).label("stage")
    control = case((stage == "enter", cand.flag("control")), else_=0).label("control")
    by_stage: Counter = Counter()
    held = 0
    for st, ctl, n in conn.execute(select(stage, control, func.count()).group_by(stage, control)):
        by_stage[st] += n
        held += n if st == "enter" and ctl else 0
    every = journey.reentry.every_days if journey.reentry is not None else None
    fmt = {
        "channels": "/".join(cand.channels),
        "pct": get_settings().global_control_percent,
        "reentry": "reentry: once" if every is None else f"reentry: every {every} days",
    }
    base = count_base(conn)
    steps, remaining = [], base
    for name, why in ENTRY_WHY.items():
        if name == "base":
            count = base
        elif name == "segment":
            count = sum(by_stage.values())
        else:
            count = remaining - by_stage.get(name, 0)
        steps.append({"step": name, "count": count, "removed": remaining - count, "why": why.format(**fmt)})
        remaining = count
    return {
        "steps": steps,
        "entering": remaining,
        "control": {"percent": journey.control_group.percent, "held_out_customers": held},
        "entry_key": engine.default_entry_key(journey, now),
    }


# --------------------------------------------------------------------------
# The projection
# --------------------------------------------------------------------------


@dataclass
class StepPlan:
    step: str
    kind: str
    when: str  # the earliest it acts after entering, e.g. "entry", "+3d"
    now: int = 0  # entries this step moves at `now` (the tick's moves)
    outcomes_now: dict[str, int] = field(default_factory=dict)
    deferred_now: int = 0  # sends held to a later moment (window, cap, priority)
    messages_now: dict[str, int] = field(default_factory=dict)  # channel -> ledger rows recorded now
    waiting: int = 0  # active entries on this step once the tick is done
    later: float | None = 0.0  # entries expected to act here after now; None: unknown
    messages_later: dict[str, float] | None = None
    cost_euros: float | None = 0.0
    cost: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def expected(self) -> float | None:
        return None if self.later is None else self.now + self.later


@dataclass
class JourneyPlan:
    journey: str
    now: datetime
    funnel: dict[str, Any]
    entered: int
    entered_control: int
    steps: list[StepPlan]
    exits_now: dict[str, int]  # exit_when / removed steps at `now`: reason -> entries
    rates: dict[str, str]  # branch step -> the rate used and where it comes from
    runs_now: int
    triggered: dict[str, Any] | None = None  # entry on events: the last 30 days of matching events

    @property
    def total_cost(self) -> float | None:
        costs = [s.cost_euros for s in self.steps]
        return None if any(c is None for c in costs) else round(sum(costs), 2)

    def step_plan(self, name: str) -> StepPlan:
        return next(s for s in self.steps if s.step == name)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["now"] = self.now.isoformat()
        out["total_cost"] = self.total_cost
        for step, plan in zip(out["steps"], self.steps, strict=True):
            step["expected"] = plan.expected
        return out


# --------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------


def _channel_mix(conn: Connection, journey: Campaign, step: Any, plan: StepPlan) -> dict[str, float]:
    """Messages per entry at a send step, per channel: as recorded now, else past rows of its templates,
    else one message on the first channel of the strategy (every channel for `all`)."""
    if plan.now:
        return {ch: n / plan.now for ch, n in plan.messages_now.items()}
    channels = step_channels(journey, step)
    messages = [v.message for v in send_campaign(journey, step).effective_variants()]
    rows = conn.execute(
        select(LEDGER.c.channel, func.count())
        .where(LEDGER.c.message.in_(messages), LEDGER.c.channel.in_(channels), LEDGER.c.in_control == False)  # noqa: E712
        .group_by(LEDGER.c.channel)
    ).all()
    total = sum(n for _, n in rows)
    if total:
        return {ch: n / total for ch, n in rows}
    strategy = (step.send.channels or journey.channels).strategy
    return dict.fromkeys(channels, 1.0) if strategy == "all" else {channels[0]: 1.0}


def _sms_sampler(conn: Connection, camp: Campaign) -> Callable[[str, int], int | None]:
    """SMS segments of one customer's rendered message (short links as sent), for the cost."""
    from channels.render import RenderContext, Renderer
    from channels.tracking_links import MemoryLinkRegistry
    from core.models import Customer, CustomerFeatures

    renderer = Renderer(links=MemoryLinkRegistry())
    variants = {v.message: v for v in camp.effective_variants()}

    def segments(message: str, customer_id: int) -> int | None:
        ctab, ftab = Customer.__table__, CustomerFeatures.__table__
        customer = dict(conn.execute(select(ctab).where(ctab.c.id == customer_id)).mappings().one())
        feats = conn.execute(select(ftab).where(ftab.c.customer_id == customer_id)).mappings().first()
        variant = variants.get(message)
        offer = {**camp.offer, **(variant.offer if variant else {})}
        ctx = RenderContext(
            customer=customer, features=dict(feats or {}), offer=offer, campaign=camp.name,
            variant=variant.name if variant else "default",
        )  # fmt: skip
        return renderer.render(message, "sms", ctx).segments

    return segments


def _price(conn: Connection, journey: Campaign, step: Any, plan: StepPlan, settings: Settings) -> None:
    """Messages now + later per channel, and their cost (None when the later flow is unknown)."""
    mix = _channel_mix(conn, journey, step, plan)
    if plan.later is None:
        plan.messages_later, plan.cost_euros = None, None
        by_channel: dict[str, float] = dict(plan.messages_now)
    else:
        plan.messages_later = {ch: plan.later * share for ch, share in mix.items()}
        by_channel = Counter(plan.messages_now)
        for ch, n in plan.messages_later.items():
            by_channel[ch] += n
    sample = None
    if by_channel.get("sms"):
        first = conn.execute(
            select(func.min(ENTRY.c.customer_id)).where(ENTRY.c.journey == journey.name)
        ).scalar()
        message = send_campaign(journey, step).effective_variants()[0].message
        sample = (message, first) if first is not None and message else None
    camp = send_campaign(journey, step)
    plan.cost = estimate_cost(settings, by_channel, sample, _sms_sampler(conn, camp))
    if plan.later is not None:
        plan.cost_euros = plan.cost["total_euros"]


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


def _state(conn: Connection, journey: str) -> dict[str, int]:
    """Active entries per step."""
    rows = conn.execute(
        select(ENTRY.c.step, func.count())
        .where(ENTRY.c.journey == journey, ENTRY.c.status == str(EntryStatus.active))
        .group_by(ENTRY.c.step)
    )
    return {s: int(n) for s, n in rows}


def _moves_since(
    conn: Connection, journey: str, last_id: int
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """step -> outcome -> entries from the history rows the advance wrote, and the exit_when leavings.

    Read from the rows rather than engine.Advanced.moves: on SQLite an UPDATE that
    starts with a CTE reports rowcount -1 (see notes/17-status-plan.md); the rows are what a tick keeps.
    """
    outcomes: dict[str, dict[str, int]] = defaultdict(dict)
    exits: Counter = Counter()
    rows = conn.execute(
        select(HISTORY.c.kind, HISTORY.c.step, HISTORY.c.outcome, func.count())
        .where(HISTORY.c.journey == journey, HISTORY.c.id > last_id)
        .group_by(HISTORY.c.kind, HISTORY.c.step, HISTORY.c.outcome)
    )
    for kind, step, outcome, n in rows:
        if kind == "journey":  # exit_when and removed steps (engine.Mover.leave)
            exits[outcome] += int(n)
        else:
            outcomes[step][outcome] = int(n)
    return dict(outcomes), dict(exits)


def _deferred(conn: Connection, journey: str, now: datetime) -> dict[str, int]:
    """Entries a send step held to a later moment now: still on it, due later, touched at ``now``."""
    moment = literal(now, ENTRY.c.due_at.type)
    rows = conn.execute(
        select(ENTRY.c.step, func.count())
        .where(
            ENTRY.c.journey == journey,
            ENTRY.c.status == str(EntryStatus.active),
            ENTRY.c.due_at > moment,
            ENTRY.c.updated_at >= moment,
        )
        .group_by(ENTRY.c.step)
    )
    return {s: int(n) for s, n in rows}


def _messages_by_step(conn: Connection, run_ids: list[int]) -> dict[str, dict[str, int]]:
    if not run_ids:
        return {}
    out: dict[str, dict[str, int]] = defaultdict(dict)
    rows = conn.execute(
        select(LEDGER.c.step, LEDGER.c.channel, func.count())
        .where(LEDGER.c.run_id.in_(run_ids))
        .group_by(LEDGER.c.step, LEDGER.c.channel)
    )
    for step, channel, n in rows:
        out[step][channel] = int(n)
    return out


def plan_journey(
    bind: Engine, journey: Campaign, now: datetime, *, segments: Any = None, settings: Settings | None = None
) -> JourneyPlan:
    """The journey's plan at ``now``: entry funnel, the tick's moves (rolled back), the projection, costs."""
    settings = settings or get_settings()
    with bind.connect() as conn:
        trans = conn.begin()  # on SQLite the engine opens it for real (journeys.engine.lock_journey)
        try:
            return _plan_in(conn, journey, now, segments, settings)
        finally:
            trans.rollback()  # what enter and advance wrote was only there to be counted


def _plan_in(
    conn: Connection, journey: Campaign, now: datetime, segments: Any, settings: Settings
) -> JourneyPlan:
    from audiences.selection import tune_connection

    tune_connection(conn)
    funnel = entry_funnel(conn, journey, now, segments)
    key = engine.default_entry_key(journey, now)
    # a triggered journey enters on events only (in advance, below); a scheduled one by its audience now
    entered = 0 if journey.entry is not None else engine.enter(conn, journey, now, key, segments=segments)
    control = (
        conn.execute(
            select(func.count()).where(
                ENTRY.c.journey == journey.name,
                ENTRY.c.entry_key == key,
                ENTRY.c.status == str(EntryStatus.control),
            )
        ).scalar_one()
        if entered
        else 0
    )
    last = conn.execute(select(func.coalesce(func.max(HISTORY.c.id), 0))).scalar_one()
    advanced = engine.advance(conn, journey, now, segments=segments)
    entered += advanced.entered
    messages = _messages_by_step(conn, advanced.run_ids)
    waiting = _state(conn, journey.name)
    deferred = _deferred(conn, journey.name, now)
    outcomes, exits_now = _moves_since(conn, journey.name, last)
    shares: dict[str, float | None] = {}
    rates: dict[str, str] = {}
    for step in steps_of(journey):
        if kind_of(step) == "branch":
            shares[step.name], rates[step.name] = branch_share(conn, journey, step, now, segments)
    names = {s.name for s in steps_of(journey)}  # entries on a removed step leave: not projected
    start = {s: float(n) for s, n in waiting.items() if s in names}
    later, unknown = project(journey, start, shares)
    whens = earliest(journey)
    plans = []
    for step in steps_of(journey):
        kind = kind_of(step)
        plan = StepPlan(step.name, kind, whens[step.name])
        plan.outcomes_now = outcomes.get(step.name, {})
        plan.now = sum(plan.outcomes_now.values())
        plan.deferred_now = deferred.get(step.name, 0) if kind == "send" else 0
        plan.messages_now = messages.get(step.name, {})
        plan.waiting = waiting.get(step.name, 0)
        plan.later = None if step.name in unknown else later.get(step.name, 0.0)
        if kind == "send":
            _price(conn, journey, step, plan, settings)
        plan.note = rates.get(step.name, "")
        plans.append(plan)
    triggered = expected_triggers(conn, journey, now, segments) if journey.entry is not None else None
    return JourneyPlan(
        journey.name, now, funnel, entered, control, plans, dict(exits_now), rates, len(advanced.run_ids),
        triggered,
    )  # fmt: skip


TRIGGER_DAYS = 30


def expected_triggers(
    conn: Connection, journey: Campaign, now: datetime, segments: Any = None
) -> dict[str, Any]:
    """Entries per day to expect from the matching events of the last 30 days (known customers only).

    Events per day and distinct customers over the period; the journey's audience, control group and
    re-entry rules then take their share of those (the funnel above shows them for today's base).
    """
    from datetime import timedelta

    from audiences.event_rules import event_conditions
    from audiences.rule_context import RuleContext
    from core.spec_rules import EventCondition
    from journeys.event_entry import EVENTS

    spec = journey.entry
    ctx = RuleContext(now, segments=segments, bind=conn)
    since = now - timedelta(days=TRIGGER_DAYS)
    row = conn.execute(
        select(func.count(), func.count(EVENTS.c.customer_id.distinct())).where(
            EVENTS.c.customer_id.is_not(None),
            EVENTS.c.occurred_at > since,
            EVENTS.c.occurred_at <= now,
            *event_conditions(EventCondition(name=spec.event, where=spec.where), ctx),
        )
    ).one()
    return {
        "event": spec.event,
        "days": TRIGGER_DAYS,
        "events": int(row[0]),
        "customers": int(row[1]),
        "per_day": round(row[0] / TRIGGER_DAYS, 1),
        "delay": spec.delay,
    }

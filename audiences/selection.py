"""The audience of a campaign run as ONE set-based SQL query.

``build_selection(campaign, now)`` returns a ``Select`` with the columns
(customer_id, channel, variant, message, in_control) that the ledger inserts
with ``INSERT ... SELECT``; ``audiences.plan`` counts the same expressions, so
the plan and the run agree by construction.

Steps (each a column of the ``candidates`` subquery, so the plan can count
where each customer leaves):

1. base: customers not erased;            2. segment: the audience rules;
3. consent: granted on the channel and a valid address (e-mail, phone, active device);
4. suppression: the address suppressed on that channel or on every channel ('*');
   (3 and 4 are flags of the customer's row, kept exact by triggers: see step_conditions.reach_columns)
5. frequency caps: messages sent in the last N days (settings + campaign caps);
6. priority: already in the ledger today for a higher-priority campaign;
7. window: quiet hours / sending window / French SMS hours in the customer's zone;
8. global control group (held out of every campaign);
9. control group (rows kept, ``in_control`` true) and variant, both by stable hash;
10. channel strategy: preferred / first_available / all (one row per channel) / best.

Steps 3-7 are judged per channel: a customer whose SMS is capped falls back to
e-mail if the strategy allows; the customer leaves the funnel at the first step
after which no channel is left.

Steps 1-2 are computed first, once (the ``members`` CTE); steps 3-9 only look
at those members (see :func:`segment_members`). The SQL of steps 3-7 is built by
audiences.step_conditions; the ``best`` channel strategy by audiences.learning.choose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Subquery,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)

from audiences import assign
from audiences.learning.choose import best_channel
from audiences.policy import ChannelPolicy, campaign_policy
from audiences.rule_context import CUSTOMER, LEDGER, RuleContext, from_clause
from audiences.rules import compile_rule
from audiences.step_conditions import (
    campaign_priorities,
    caps_counts,
    caps_subquery,
    customer_timezones,
    day_start,
    dialect_name,
    effective_caps,
    one_if,
    open_condition,
    reach_columns,
)
from core.models import CHANNELS
from core.settings import Settings, get_settings
from core.spec import Campaign, FrequencyCap

# Funnel steps in order; a customer "leaves" at the first one they fail.
STEPS = ("base", "segment", "consent", "suppression", "frequency_cap", "priority", "window", "global_control")


class SelectionError(ValueError):
    """A campaign that cannot be selected as written; the message says what to change."""


# Strategies decided by a model: name -> fn(campaign, ok: {channel: SQL boolean}, cand, ctx) -> SQL channel.
ChannelChooser = Callable[[Campaign, dict[str, ColumnElement], Subquery, RuleContext], ColumnElement]
CHANNEL_CHOOSERS: dict[str, ChannelChooser] = {"best": best_channel}


@dataclass
class Candidates:
    """The per-customer flags subquery and what built it (shared by selection, plan and explain)."""

    sub: Subquery
    channels: list[str]
    ctx: RuleContext
    policy: ChannelPolicy
    caps: list[FrequencyCap]
    higher_priority: list[str]
    window_applied: bool
    notes: list[str] = field(default_factory=list)

    def flag(self, name: str, channel: str | None = None) -> ColumnElement:
        return self.sub.c[f"{name}_{channel}" if channel else name]

    def ok(self, channel: str, upto: str = "window") -> ColumnElement:
        """The channel still usable after step ``upto`` (consent, suppression, frequency_cap, window)."""
        conds = [self.flag("consent", channel) == 1]
        if upto in ("suppression", "frequency_cap", "window"):
            conds.append(self.flag("suppressed", channel) == 0)
        if upto in ("frequency_cap", "window"):
            conds.append(self.flag("capped", channel) == 0)
        if upto == "window":
            conds.append(self.flag("open", channel) == 1)
        return and_(*conds)

    def any_ok(self, upto: str) -> ColumnElement:
        return or_(*[self.ok(ch, upto) for ch in self.channels])


# --------------------------------------------------------------------------
# The candidates subquery
# --------------------------------------------------------------------------


def candidates(
    campaign: Campaign,
    now: datetime,
    *,
    bind: Engine | Connection | None = None,
    segments: Any = None,
    priorities: Mapping[str, int] | None = None,
    window: bool = True,
    customer_id: int | None = None,
    segment_as_column: bool = False,
    settings: Settings | None = None,
    among: Any = None,
) -> Candidates:
    """Segment members (or one customer) with every step's flags per channel.

    ``segment_as_column`` keeps non-members with a ``segment`` 0/1 column
    (``--explain``); ``window=False`` ignores time windows (to list who is deferred);
    ``among`` (a SELECT of customer ids) keeps only those customers (a journey's due entries).
    """
    settings = settings or get_settings()
    ctx = RuleContext(now, segments=segments, model_versions=campaign.model_versions, bind=bind)
    seg = compile_rule(campaign.audience, ctx)
    channels = channel_candidates(campaign)
    policy = campaign_policy(campaign, settings)
    caps = effective_caps(campaign, settings)
    members = segment_members(
        seg, ctx, customer_id=customer_id, segment_as_column=segment_as_column, among=among
    )
    customer = members.c.customer_id
    cols: list[ColumnElement] = [customer, members.c.timezone, members.c.preferred_channel]
    frm: Any = members  # members carry the customer columns: no second join to customer
    zones = customer_timezones(bind) if window else []
    sent: list[ColumnElement] = []  # messages within each cap's period, per member
    if caps and among is not None and dialect_name(bind) == "sqlite":  # a few members: look-ups
        sent = caps_counts(caps, now, members)
    elif caps:
        capsq, on = caps_subquery(caps, now, members, dialect_name(bind))
        frm = frm.outerjoin(capsq, on)
        sent = [func.coalesce(capsq.c[f"n{i}"], 0) for i in range(len(caps))]
    for ch in channels:
        cols.append(members.c[f"consent_{ch}"])
        cols.append(members.c[f"suppressed_{ch}"])
        hit = [sent[i] >= cap.max_messages for i, cap in enumerate(caps) if cap.channel in (None, ch)]
        cols.append(one_if(or_(*hit)).label(f"capped_{ch}") if hit else literal(0).label(f"capped_{ch}"))
        is_open = open_condition(policy, ch, now, zones, members.c.timezone) if window else true()
        cols.append(one_if(is_open).label(f"open_{ch}"))
    prios = dict(priorities) if priorities is not None else campaign_priorities(settings)
    higher = sorted(n for n, p in prios.items() if p > campaign.priority and n != campaign.name)
    if higher:
        taken = select(LEDGER.c.customer_id).where(
            LEDGER.c.campaign.in_(higher),
            LEDGER.c.created_at >= day_start(now, settings),
            LEDGER.c.status != "skipped",
        )
        cols.append(one_if(customer.in_(taken)).label("blocked"))
    else:
        cols.append(literal(0).label("blocked"))
    gpct = settings.global_control_percent
    gctl = assign.bucket_sql(customer, assign.global_control_salt()) < assign.threshold(gpct)
    cols.append(one_if(gctl).label("global_control") if gpct > 0 else literal(0).label("global_control"))
    pct = campaign.control_group.percent
    ctl = assign.bucket_sql(customer, assign.control_salt(campaign.name)) < assign.threshold(pct)
    cols.append(one_if(ctl).label("control") if pct > 0 else literal(0).label("control"))
    variants = campaign.effective_variants()
    names, weights = [v.name for v in variants], [v.weight for v in variants]
    cols.append(assign.variant_sql(customer, campaign.name, names, weights).label("variant"))
    cols.append(
        assign.variant_sql(customer, campaign.name, [v.message or "" for v in variants], weights).label(
            "message"
        )
    )
    if segment_as_column:
        cols += [members.c.not_erased, members.c.segment]
    sub = select(*cols).select_from(frm).subquery("cand")
    return Candidates(sub, channels, ctx, policy, caps, higher, window)


def segment_members(
    seg: ColumnElement,
    ctx: RuleContext,
    *,
    customer_id: int | None = None,
    segment_as_column: bool = False,
    among: Any = None,
) -> CTE:
    """The customers the funnel starts from (not erased, matching the rules), as a MATERIALIZED CTE.

    It carries the columns the later steps read (time zone, preferred channel,
    the reach flags of :func:`reach_columns`), so no table is joined a second time.

    Why first and materialized: the per-channel joins and the ledger / device
    aggregates then only see the segment's members (235k of 1M on the bench),
    and neither planner interleaves the rules with those joins (PostgreSQL ran
    the `bought` semi join after every LEFT JOIN, over 543k rows). With
    ``customer_id`` it holds that customer only, matching or not
    (``segment_as_column``: 0/1 columns ``not_erased`` and ``segment``, for ``--explain``).
    """
    c = CUSTOMER.c
    cols: list[ColumnElement] = [c.id.label("customer_id"), c.timezone, c.preferred_channel, *reach_columns()]
    where: list[ColumnElement] = []
    if customer_id is not None:
        where.append(CUSTOMER.c.id == customer_id)
    if among is not None:
        where.append(CUSTOMER.c.id.in_(among))
    if segment_as_column:
        cols += [
            one_if(CUSTOMER.c.erased_at.is_(None)).label("not_erased"),
            one_if(seg).label("segment"),
        ]
    else:
        where += [CUSTOMER.c.erased_at.is_(None), seg]
    members = select(*cols).select_from(from_clause(ctx)).where(*where)
    return members.cte("members").prefix_with("MATERIALIZED")


def channel_candidates(campaign: Campaign) -> list[str]:
    """The channels the strategy may use, in its order (unknown names refused)."""
    order = list(dict.fromkeys(campaign.channels.order))
    bad = [c for c in order if c not in CHANNELS]
    if bad or not order:
        raise SelectionError(f"channels.order: write channels among {', '.join(CHANNELS)}, not {bad or '[]'}")
    return order


def channel_choice(campaign: Campaign, cand: Candidates) -> ColumnElement | None:
    """The one channel per customer (SQL), or None for strategy `all` (a row per usable channel)."""
    ok = {ch: cand.ok(ch) for ch in cand.channels}
    strategy = campaign.channels.strategy
    first = [(ok[ch], literal(ch)) for ch in cand.channels]
    if strategy == "all":
        return None
    if strategy == "first_available":
        return case(*first, else_=None)
    if strategy == "preferred":
        pref = cand.flag("preferred_channel")
        return case(*[(and_(pref == ch, ok[ch]), literal(ch)) for ch in cand.channels], *first, else_=None)
    chooser = CHANNEL_CHOOSERS.get(strategy)
    if chooser is None:
        raise SelectionError(
            f"channels.strategy `{strategy}` needs a trained channel model, which is not available yet: "
            "write `strategy: preferred` (or first_available / all) for now"
        )
    return chooser(campaign, ok, cand.sub, cand.ctx)


def eligible(cand: Candidates) -> ColumnElement:
    """Customers past every step up to the global control group (the control group stays in, held out)."""
    return and_(cand.any_ok("window"), cand.flag("blocked") == 0, cand.flag("global_control") == 0)


def selection_from(campaign: Campaign, cand: Candidates) -> Select:
    """The recipients' rows from a candidates subquery (one row per customer and channel)."""
    chans = union_all(*[select(literal(ch).label("channel")) for ch in cand.channels]).subquery("chans")
    choice = channel_choice(campaign, cand)
    if choice is None:
        on = or_(*[and_(chans.c.channel == ch, cand.ok(ch)) for ch in cand.channels])
    else:
        on = chans.c.channel == choice
    return (
        select(
            cand.flag("customer_id"),
            chans.c.channel,
            cand.flag("variant"),
            cand.flag("message"),
            (cand.flag("control") == 1).label("in_control"),
        )
        .select_from(cand.sub.join(chans, on))
        .where(eligible(cand))
    )


def tune_connection(conn: Connection) -> None:
    """PostgreSQL settings for one big selection query, for the current transaction only.

    Why: JIT compiled the selection's expressions for ~1 s, longer than the
    query itself once the plan is right; the default 4 MB work_mem makes the
    GROUP BY and hash joins over a few hundred thousand rows spill to disk.
    Call it in the transaction that runs the selection (the plan does; the
    run's INSERT ... SELECT benefits as well). SQLite: nothing to do.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")


def build_selection(
    campaign: Campaign,
    now: datetime,
    *,
    bind: Engine | Connection | None = None,
    segments: Any = None,
    priorities: Mapping[str, int] | None = None,
    window: bool = True,
    settings: Settings | None = None,
) -> Select:
    """The campaign's recipients at ``now``: (customer_id, channel, variant, message, in_control).

    One set-based query for ``INSERT INTO ledger ... SELECT``. ``bind`` is only
    used by `score`/`top`/`target` rules to read model versions (default: the
    configured engine); ``priorities`` (name -> priority) defaults to the
    campaign files in settings.campaigns_dir.
    """
    cand = candidates(
        campaign, now, bind=bind, segments=segments, priorities=priorities, window=window, settings=settings
    )
    return selection_from(campaign, cand)

"""The per-channel conditions of the selection's funnel steps 3-7, as SQL (and the few Python decisions).

Consent and suppression flags of the customer's row (steps 3-4), frequency caps
over the ledger (5), the campaigns of higher priority and the day they count
in (6), the time zones open for sending (7). audiences.selection assembles them
into the ``candidates`` subquery; they were part of it until issue 23 split the
module (same code, same SQL).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Engine,
    Lateral,
    Subquery,
    and_,
    case,
    false,
    func,
    select,
    true,
)

from audiences.policy import ChannelPolicy
from audiences.rule_context import CUSTOMER, LEDGER, RuleContext, bind_connect
from core.models import CHANNELS
from core.settings import Settings
from core.spec import Campaign, FrequencyCap

# Ledger statuses that count as a message sent, for frequency caps.
CONTACT_STATUSES = ("sending", "unknown", "sent", "delivered", "opened", "clicked", "converted")


def one_if(cond: ColumnElement) -> ColumnElement:
    """A portable 0/1 integer (SQLite has no boolean type; PostgreSQL sums no booleans)."""
    return case((cond, 1), else_=0)


def reach_columns() -> list[ColumnElement]:
    """The consent and suppression flags of the customer's row, as columns of the ``members`` CTE.

    Why precomputed flags: they summarize three consent rows, the active devices
    and two suppression look-ups per customer; the triggers of migrations 0006
    and 0010 keep them exact in every transaction that changes those tables, so
    the plan reads them with the row it reads anyway (the 1M-customer bench read
    ~3M rows per plan before). Why on ``customer`` and not a table of their own:
    PostgreSQL 15 hashed all of that table in every process of the parallel
    segment (1.46-1.56 -> 1.11-1.21 s for the bench plan; migration 0010).
    """
    return [CUSTOMER.c[f"{kind}_{ch}"] for ch in CHANNELS for kind in ("consent", "suppressed")]


def effective_caps(campaign: Campaign, settings: Settings) -> list[FrequencyCap]:
    """Default caps from settings, then the campaign's own; every one applies."""
    defaults = [FrequencyCap.model_validate(c) for c in settings.default_frequency_caps]
    return defaults + list(campaign.frequency_caps)


def caps_subquery(
    caps: list[FrequencyCap], now: datetime, members: CTE, dialect: str
) -> tuple[Subquery | Lateral, ColumnElement]:
    """Messages sent per member within each cap's period, and the ON clause that joins them to ``members``.

    Both databases read only the members' ledger rows, through
    ix_ledger_customer_sent_status (covering, 0008), not every customer contacted
    in the window (the bench's window holds 600k rows of 400k customers; its
    segment has 235k members). SQLite groups the rows of ``customer_id IN (members)``;
    PostgreSQL counts per member in a LATERAL subquery (one index-only look-up
    each): 1.0-1.3 s instead of 1.5-2.2 s for the bench's plan, where
    aggregating the whole window in a hash cost ~0.45 s in the leader.
    """
    since = now - timedelta(days=max(c.days for c in caps))
    cols = []
    for i, cap in enumerate(caps):
        cond = LEDGER.c.sent_at >= now - timedelta(days=cap.days)
        if cap.channel:
            cond = and_(cond, LEDGER.c.channel == cap.channel)
        cols.append(func.sum(one_if(cond)).label(f"n{i}"))
    window = (LEDGER.c.sent_at >= since, LEDGER.c.sent_at <= now, LEDGER.c.status.in_(CONTACT_STATUSES))
    if dialect == "postgresql":
        per_member = select(*cols).where(LEDGER.c.customer_id == members.c.customer_id, *window)
        return per_member.lateral("recent"), true()
    recent = select(LEDGER.c.customer_id, *cols).where(
        LEDGER.c.customer_id.in_(select(members.c.customer_id)), *window
    )
    grouped = recent.group_by(LEDGER.c.customer_id).subquery("recent")
    return grouped, grouped.c.customer_id == members.c.customer_id


def caps_counts(caps: list[FrequencyCap], now: datetime, members: CTE) -> list[ColumnElement]:
    """Messages sent per member within each cap's period, as scalar sub-queries correlated to ``members``.

    For a few members (a journey step's due entries) on SQLite: the grouped ``recent`` of
    :func:`caps_subquery` got no automatic index there, so each member scanned every grouped row
    (25,000 x ~10,000: 17 of a tick's 24 s, notes/17-bench.md); one look-up per member in
    ix_ledger_customer_sent_status instead.
    """
    since = now - timedelta(days=max(c.days for c in caps))
    window = (LEDGER.c.sent_at >= since, LEDGER.c.sent_at <= now, LEDGER.c.status.in_(CONTACT_STATUSES))
    out = []
    for cap in caps:
        conds = [LEDGER.c.customer_id == members.c.customer_id, *window]
        conds.append(LEDGER.c.sent_at >= now - timedelta(days=cap.days))
        if cap.channel:
            conds.append(LEDGER.c.channel == cap.channel)
        out.append(select(func.count()).where(*conds).scalar_subquery())
    return out


def dialect_name(bind: Engine | Connection | None) -> str:
    from core.db import get_engine

    return (bind if bind is not None else get_engine()).dialect.name


def customer_timezones(bind: Engine | Connection | None) -> list[str]:
    """The distinct time zone names of the base, walked through ix_customer_timezone ("next zone after z").

    Why a recursive walk and not a GROUP BY: the GROUP BY reads every customer
    (0.4 s for 1M on SQLite, neither database skips through an index); each step
    here is one index seek, and a base has a handful of zones.
    """
    zones = select(func.min(CUSTOMER.c.timezone).label("tz")).cte("zones", recursive=True)
    after = select(func.min(CUSTOMER.c.timezone)).where(CUSTOMER.c.timezone > zones.c.tz).scalar_subquery()
    zones = zones.union_all(select(after).where(zones.c.tz.is_not(None)))
    ctx = RuleContext(datetime.now().astimezone(), bind=bind)
    with bind_connect(ctx) as conn:
        return [tz for (tz,) in conn.execute(select(zones.c.tz).where(zones.c.tz.is_not(None)))]


def open_condition(
    policy: ChannelPolicy, channel: str, now: datetime, zones: list[str], timezone: ColumnElement
) -> ColumnElement:
    """``customer.timezone IN (zones open at now)``, decided in Python per distinct zone (audiences.policy).

    Names that are not IANA zones behave like the default time zone. Always a
    positive list: a zone that appears after this query was built is not sent to.
    """
    if not policy.windows.get(channel):
        return true()
    open_zones = policy.open_zones(channel, now, zones)
    if not open_zones:
        return false()
    return timezone.in_(open_zones)


def campaign_priorities(settings: Settings) -> dict[str, int]:
    """name -> priority of the campaign files in campaigns_dir (read leniently: only two keys)."""
    import yaml

    out: dict[str, int] = {}
    folder = settings.campaigns_dir
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            prio = data.get("priority", 50)
            out[data["name"]] = prio if isinstance(prio, int) else 50
    return out


def day_start(now: datetime, settings: Settings) -> datetime:
    """Midnight of ``now``'s day in the default time zone: "today" for priority between campaigns."""
    local = now.astimezone(ZoneInfo(settings.default_timezone))
    return datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)

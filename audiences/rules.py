"""Audience rules (core.spec) compiled to one SQLAlchemy Core boolean over ``customer``.

The database does the filtering: every rule becomes a column comparison, an
``IN (subquery)`` on an indexed table (orders, interests, ledger, scores) or a
combination with AND / OR / NOT; nothing iterates over customers in Python.
Rules whose meaning moves with time (recency, tenure, age, "within N days")
compile against timestamps relative to ``now`` so they never go stale between
two feature refreshes.

The compiled expression refers to the ``customer`` table and, when a feature
rule is used (``ctx.uses_features``), to ``customer_features`` which the caller
LEFT JOINs on ``customer_id`` (see :func:`from_clause`).

Where the pieces live (issue 23: imports point one way, no circle): the tables,
names, RuleError and RuleContext in audiences.rule_context; comparisons and
whole-day arithmetic in audiences.comparisons; `score` / `top` / `target` and
model versions in audiences.score_rules; `event` rules in audiences.event_rules; named
segments in audiences.segments.
This module compiles a rule tree, dispatching to them. The names that used to be
defined here stay importable from here (``__all__``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, literal, not_, or_, select, true

from audiences.comparisons import (
    as_date,
    cents,
    compare,
    compare_missing_as_zero,
    days_since_timestamp,
    number,
    tenure,
    whole_number,
)
from audiences.event_rules import compile_event
from audiences.rule_context import (
    CAMPAIGN_EVENT_STATUSES,
    CUSTOMER,
    CUSTOMER_FIELDS,
    FEATURES,
    FEATURES_INFO,
    FEATURES_TABLE,
    INTERESTS,
    LEDGER,
    ORDERS,
    SCORES,
    VERSIONS,
    Attribute,
    RuleContext,
    RuleError,
    from_clause,
    suggest,
)
from audiences.score_rules import compile_score, compile_target, compile_top, model_version, scores_of
from core.spec import (
    AllRule,
    AnyRule,
    BoughtRule,
    CampaignRule,
    FeatureRule,
    FieldRule,
    InterestRule,
    NotRule,
    Rule,
    ScoreRule,
    SegmentRule,
    TargetRule,
    TopRule,
)
from core.spec_rules import EventRule

__all__ = [
    "CAMPAIGN_EVENT_STATUSES",
    "CUSTOMER",
    "CUSTOMER_FIELDS",
    "FEATURES",
    "FEATURES_INFO",
    "FEATURES_TABLE",
    "INTERESTS",
    "LEDGER",
    "ORDERS",
    "SCORES",
    "VERSIONS",
    "Attribute",
    "RuleContext",
    "RuleError",
    "compile_bought",
    "compile_campaign",
    "compile_event",
    "compile_feature",
    "compile_field",
    "compile_interest",
    "compile_rule",
    "compile_score",
    "compile_segment",
    "compile_target",
    "compile_top",
    "describe",
    "from_clause",
    "model_version",
    "scores_of",
]


# --------------------------------------------------------------------------
# Customer fields and features
# --------------------------------------------------------------------------


def compile_field(rule: FieldRule, ctx: RuleContext) -> ColumnElement:
    attr = CUSTOMER_FIELDS.get(rule.field)
    if attr is None:
        raise suggest(rule.field, CUSTOMER_FIELDS, "customer field")
    col = CUSTOMER.c[attr.column]
    if attr.kind == "age":
        return compare(literal(ctx.now.year) - col, rule, number)
    if attr.kind == "date":
        return compare(col, rule, as_date)
    if attr.kind == "number":
        return compare(col, rule, number)
    return compare(col, rule, lambda v: v if isinstance(v, str) else str(v))


def compile_feature(rule: FeatureRule, ctx: RuleContext) -> ColumnElement:
    attr = FEATURES_INFO.get(rule.feature)
    if attr is None:
        raise suggest(rule.feature, FEATURES_INFO, "feature")
    ctx.uses_features = True
    if attr.kind == "days":
        return days_since_timestamp(FEATURES_TABLE.c.last_order_at, rule, ctx.now)
    if attr.kind == "tenure":
        return tenure(rule, ctx.today)
    col = FEATURES_TABLE.c[attr.column]
    if attr.kind == "money":
        return compare_missing_as_zero(col, rule, cents)
    if attr.kind == "number":
        return compare_missing_as_zero(col, rule, whole_number)
    return compare(col, rule, str)


# --------------------------------------------------------------------------
# Relations: interests, orders, past campaigns (scores: audiences.score_rules)
# --------------------------------------------------------------------------


def _as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def compile_interest(rule: InterestRule, ctx: RuleContext) -> ColumnElement:
    tags = _as_list(rule.interest) or []
    return CUSTOMER.c.id.in_(select(INTERESTS.c.customer_id).where(INTERESTS.c.tag.in_(tags)))


def compile_bought(rule: BoughtRule, ctx: RuleContext) -> ColumnElement:
    """Customers with at least ``min_orders`` matching orders; an IN (subquery) over the indexed orders."""
    b = rule.bought
    conds: list[ColumnElement] = []
    if (cats := _as_list(b.category)) is not None:
        conds.append(ORDERS.c.category.in_(cats))
    if (products := _as_list(b.product)) is not None:
        conds.append(ORDERS.c.product.in_(products))
    if b.within_days is not None:
        conds.append(ORDERS.c.ordered_at >= ctx.now - timedelta(days=b.within_days))
        conds.append(ORDERS.c.ordered_at <= ctx.now)
    sub = select(ORDERS.c.customer_id).where(*conds)
    if b.min_orders > 1:
        sub = sub.group_by(ORDERS.c.customer_id).having(func.count() >= b.min_orders)
    return CUSTOMER.c.id.in_(sub)


def compile_campaign(rule: CampaignRule, ctx: RuleContext) -> ColumnElement:
    """Customers who received / opened / clicked / converted a past campaign (ledger statuses)."""
    c = rule.campaign
    conds = [LEDGER.c.campaign == c.name, LEDGER.c.status.in_(CAMPAIGN_EVENT_STATUSES[c.event])]
    if c.within_days is not None:
        conds.append(LEDGER.c.sent_at >= ctx.now - timedelta(days=c.within_days))
    return CUSTOMER.c.id.in_(select(LEDGER.c.customer_id).where(*conds))


# --------------------------------------------------------------------------
# Segments and combinators
# --------------------------------------------------------------------------


def _load_segments_file() -> dict[str, Rule]:
    """Named segments from settings.segments_file (``name: rule`` or ``segments: {name: {rule: ...}}``).

    Used only when no SegmentBook is passed: B1's audiences.segments is the full
    loader with line numbers.
    """
    import yaml
    from pydantic import TypeAdapter

    from core.settings import get_settings

    path = get_settings().segments_file
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data = data.get("segments", data) if isinstance(data, dict) else {}
    adapter = TypeAdapter(Rule)
    out: dict[str, Rule] = {}
    for name, body in data.items():
        if isinstance(body, dict) and "rule" in body:
            body = body["rule"]
        out[name] = adapter.validate_python(body)
    return out


def _segment_book(ctx: RuleContext) -> Any:
    if ctx.segments is None:
        try:
            from audiences.segments import SegmentBook  # B1's loader, when present

            ctx.segments = SegmentBook.load()
        except (ImportError, AttributeError, TypeError):
            ctx.segments = _load_segments_file()
    return ctx.segments


def _segment_rule(book: Any, name: str) -> Rule | None:
    if isinstance(book, Mapping):
        return book.get(name)
    getter = getattr(book, "rule", None) or getattr(book, "get", None)
    found = getter(name) if getter else None
    return getattr(found, "rule", found)


def compile_segment(rule: SegmentRule, ctx: RuleContext) -> ColumnElement:
    name = rule.segment
    if name in ctx._segment_stack:
        raise RuleError(f"segment `{name}` refers to itself ({' -> '.join([*ctx._segment_stack, name])})")
    book = _segment_book(ctx)
    found = _segment_rule(book, name)
    if found is None:
        known = list(book) if isinstance(book, Mapping) else list(getattr(book, "names", lambda: [])())
        raise suggest(name, dict.fromkeys(known), "segment")
    ctx._segment_stack.append(name)
    try:
        return compile_rule(found, ctx)
    finally:
        ctx._segment_stack.pop()


def compile_rule(rule: Rule | None, ctx: RuleContext) -> ColumnElement:
    """One rule (recursively) as a SQL boolean over ``customer`` (and ``customer_features``)."""
    if rule is None:
        return true()
    if isinstance(rule, AllRule):
        return and_(*[compile_rule(r, ctx) for r in rule.all])
    if isinstance(rule, AnyRule):
        return or_(*[compile_rule(r, ctx) for r in rule.any])
    if isinstance(rule, NotRule):
        if isinstance(rule.not_, EventRule):  # EXISTS is never NULL; a bare NOT lets the planners anti join
            return not_(compile_rule(rule.not_, ctx))
        # NULL (unknown city, no features row) counts as "not matching", so `not` includes it
        return not_(func.coalesce(compile_rule(rule.not_, ctx), false()))
    handler = _HANDLERS.get(type(rule))
    if handler is None:
        raise RuleError(f"rule kind {type(rule).__name__} is not supported")
    return handler(rule, ctx)


_HANDLERS: dict[type, Callable[[Any, RuleContext], ColumnElement]] = {
    FieldRule: compile_field,
    FeatureRule: compile_feature,
    InterestRule: compile_interest,
    BoughtRule: compile_bought,
    EventRule: compile_event,
    CampaignRule: compile_campaign,
    SegmentRule: compile_segment,
    ScoreRule: compile_score,
    TopRule: compile_top,
    TargetRule: compile_target,
}


def describe(rule: Rule) -> str:
    """A short human form of a rule, for ``plan --explain``."""
    data = rule.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)
    return ", ".join(f"{k}: {v}" for k, v in data.items())

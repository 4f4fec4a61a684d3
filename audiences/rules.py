"""Audience rules (relance.spec) compiled to one SQLAlchemy Core boolean over ``customer``.

The database does the filtering: every rule becomes a column comparison, an
``IN (subquery)`` on an indexed table (orders, interests, ledger, scores) or a
combination with AND / OR / NOT; nothing iterates over customers in Python.
Rules whose meaning moves with time (recency, tenure, age, "within N days")
compile against timestamps relative to ``now`` so they never go stale between
two feature refreshes.

The compiled expression refers to the ``customer`` table and, when a feature
rule is used (``ctx.uses_features``), to ``customer_features`` which the caller
LEFT JOINs on ``customer_id`` (see :func:`from_clause`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from relance.models import (
    Customer,
    CustomerFeatures,
    CustomerInterest,
    CustomerScore,
    LedgerEntry,
    Order,
    ScoreVersion,
)
from relance.spec import (
    AllRule,
    AnyRule,
    BoughtRule,
    CampaignRule,
    Comparison,
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

CUSTOMER = Customer.__table__
INTERESTS = CustomerInterest.__table__
ORDERS = Order.__table__
LEDGER = LedgerEntry.__table__
SCORES = CustomerScore.__table__
VERSIONS = ScoreVersion.__table__
FEATURES_TABLE = CustomerFeatures.__table__


@dataclass(frozen=True)
class Attribute:
    """A name a rule may use: the column it reads and what it means (shown by validate/schema)."""

    column: str
    description: str
    kind: str = "text"  # text, number, date, days, money


CUSTOMER_FIELDS: dict[str, Attribute] = {
    "country": Attribute("country", "ISO country code, e.g. FR, BE, RE"),
    "city": Attribute("city", "City name as imported"),
    "postcode": Attribute("postcode", "Post code, e.g. 75011"),
    "gender": Attribute("gender", "F, M or X"),
    "locale": Attribute("locale", "Locale, e.g. fr_FR"),
    "timezone": Attribute("timezone", "IANA time zone, e.g. Europe/Paris, Indian/Reunion"),
    "birth_year": Attribute("birth_year", "Year of birth", "number"),
    "age": Attribute("birth_year", "Age in years this year (derived from birth_year)", "age"),
    "signup_date": Attribute("signup_date", "Date of signup (YYYY-MM-DD)", "date"),
    "preferred_channel": Attribute("preferred_channel", "email, sms or push"),
    "preferred_payment_method": Attribute("preferred_payment_method", "Declared payment method"),
    "external_id": Attribute("external_id", "The customer id of the shop"),
}

FEATURES_INFO: dict[str, Attribute] = {
    "recency_days": Attribute("last_order_at", "Days since the last order (none without orders)", "days"),
    "frequency": Attribute("frequency", "Number of orders", "number"),
    "monetary": Attribute("monetary_cents", "Total spent, in euros", "money"),
    "avg_basket": Attribute("avg_basket_cents", "Average order, in euros", "money"),
    "tenure_days": Attribute("signup_date", "Days since signup (or first order)", "tenure"),
    "favourite_category": Attribute("favourite_category", "Category ordered most often"),
    "preferred_payment_method": Attribute("preferred_payment_method", "Payment method used most often"),
}
FEATURES = FEATURES_INFO  # the name B1's validator imports

# Ledger statuses that prove each level of response of a past campaign (statuses only move forward).
CAMPAIGN_EVENT_STATUSES: dict[str, tuple[str, ...]] = {
    "received": ("sent", "delivered", "opened", "clicked", "converted"),
    "opened": ("opened", "clicked", "converted"),
    "clicked": ("clicked", "converted"),
    "converted": ("converted",),
}


class RuleError(ValueError):
    """A rule that cannot be compiled; the message says what to write instead."""


@dataclass
class RuleContext:
    """What compiling needs: the reference time, named segments, pinned model versions, a connection."""

    now: datetime
    segments: Any = None  # Mapping name -> Rule, or B1's SegmentBook (``.get(name)``); None = load the file
    model_versions: Mapping[str, str] = field(default_factory=dict)
    bind: Engine | Connection | None = None  # only `score`/`top`/`target` rules query (model versions)
    uses_features: bool = False
    models_used: dict[str, str] = field(default_factory=dict)  # model -> version, for campaign_run.models
    _segment_stack: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self.now = self.now.astimezone(UTC)

    @property
    def today(self) -> date:
        return self.now.date()


def _suggest(name: str, known: Mapping[str, Any], what: str) -> RuleError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else f"; known: {', '.join(sorted(known))}"
    return RuleError(f"unknown {what} `{name}`{hint}")


def from_clause(ctx: RuleContext) -> FromClause:
    """``customer`` LEFT JOIN ``customer_features`` when a feature rule needs it."""
    if ctx.uses_features:
        return CUSTOMER.outerjoin(FEATURES_TABLE, FEATURES_TABLE.c.customer_id == CUSTOMER.c.id)
    return CUSTOMER


# --------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------


def _values(cmp: Comparison) -> dict[str, Any]:
    return {k: getattr(cmp, k) for k in ("eq", "ne", "in_", "not_in", "gt", "gte", "lt", "lte", "between")}


def _compare(expr: ColumnElement, cmp: Comparison, conv: Callable[[Any], Any] = lambda v: v) -> ColumnElement:
    """Every operator given, ANDed (``gte: 2, lt: 5`` is a range)."""
    v = _values(cmp)
    parts: list[ColumnElement] = []
    if v["eq"] is not None:
        parts.append(expr == conv(v["eq"]))
    if v["ne"] is not None:
        parts.append(expr != conv(v["ne"]))
    if v["in_"] is not None:
        parts.append(expr.in_([conv(x) for x in v["in_"]]))
    if v["not_in"] is not None:
        parts.append(expr.not_in([conv(x) for x in v["not_in"]]))
    for op, name in ((expr.__gt__, "gt"), (expr.__ge__, "gte"), (expr.__lt__, "lt"), (expr.__le__, "lte")):
        if v[name] is not None:
            parts.append(op(conv(v[name])))
    if v["between"] is not None:
        lo, hi = v["between"]
        parts.append(expr.between(conv(lo), conv(hi)))
    if cmp.is_null is not None:
        parts.append(expr.is_(None) if cmp.is_null else expr.is_not(None))
    return and_(*parts) if parts else true()


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"`{value!r}` is not a number; write e.g. 30")
    return float(value)


def _days(
    cmp: Comparison,
    at_least: Callable[[int], ColumnElement],
    at_most: Callable[[int], ColumnElement],
    null: ColumnElement,
) -> ColumnElement:
    """A whole-days quantity ``d`` that is never stored: ``at_least(n)`` means d >= n, ``at_most(n)`` d <= n.

    Why: ``recency_days`` stored at the last feature refresh is stale the next
    day; comparing the timestamp itself with ``now - n days`` is always right.
    """

    def eq(x: Any) -> ColumnElement:
        n = _number(x)
        return and_(at_least(int(n)), at_most(int(n))) if n == int(n) else false()

    v = _values(cmp)
    parts: list[ColumnElement] = []
    if v["eq"] is not None:
        parts.append(eq(v["eq"]))
    if v["ne"] is not None:
        parts.append(and_(not_(eq(v["ne"])), not_(null)))
    if v["in_"] is not None:
        parts.append(or_(*[eq(x) for x in v["in_"]]))
    if v["not_in"] is not None:
        parts.append(and_(not_(null), *[not_(eq(x)) for x in v["not_in"]]))
    if v["gt"] is not None:
        parts.append(at_least(math.floor(_number(v["gt"])) + 1))
    if v["gte"] is not None:
        parts.append(at_least(math.ceil(_number(v["gte"]))))
    if v["lt"] is not None:
        parts.append(at_most(math.ceil(_number(v["lt"])) - 1))
    if v["lte"] is not None:
        parts.append(at_most(math.floor(_number(v["lte"]))))
    if v["between"] is not None:
        lo, hi = v["between"]
        parts.append(and_(at_least(math.ceil(_number(lo))), at_most(math.floor(_number(hi)))))
    if cmp.is_null is not None:
        parts.append(null if cmp.is_null else not_(null))
    return and_(*parts) if parts else true()


def _days_since_timestamp(col: ColumnElement, cmp: Comparison, now: datetime) -> ColumnElement:
    """d = whole days between ``col`` and ``now`` (recency_days)."""
    return _days(
        cmp,
        at_least=lambda n: col <= now - timedelta(days=n),
        at_most=lambda n: col > now - timedelta(days=n + 1),
        null=col.is_(None),
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _tenure(cmp: Comparison, today: date) -> ColumnElement:
    """Days since signup_date, else since the date of the first order (as audiences.features defines it)."""
    signup, first = CUSTOMER.c.signup_date, FEATURES_TABLE.c.first_order_at
    by_signup = _days(
        cmp,
        at_least=lambda n: signup <= today - timedelta(days=n),
        at_most=lambda n: signup >= today - timedelta(days=n),
        null=signup.is_(None),
    )
    by_first = _days(
        cmp,
        at_least=lambda n: first < _midnight(today - timedelta(days=n - 1)),
        at_most=lambda n: first >= _midnight(today - timedelta(days=n)),
        null=first.is_(None),
    )
    if cmp.is_null:
        return and_(signup.is_(None), first.is_(None))
    return or_(and_(signup.is_not(None), by_signup), and_(signup.is_(None), by_first))


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise RuleError(f"`{value}` is not a date; write YYYY-MM-DD, e.g. 2024-01-31") from exc


def _cents(value: Any) -> int:
    return round(_number(value) * 100)


def compile_field(rule: FieldRule, ctx: RuleContext) -> ColumnElement:
    attr = CUSTOMER_FIELDS.get(rule.field)
    if attr is None:
        raise _suggest(rule.field, CUSTOMER_FIELDS, "customer field")
    col = CUSTOMER.c[attr.column]
    if attr.kind == "age":
        return _compare(literal(ctx.now.year) - col, rule, _number)
    if attr.kind == "date":
        return _compare(col, rule, _date)
    if attr.kind == "number":
        return _compare(col, rule, _number)
    return _compare(col, rule, lambda v: v if isinstance(v, str) else str(v))


def compile_feature(rule: FeatureRule, ctx: RuleContext) -> ColumnElement:
    attr = FEATURES_INFO.get(rule.feature)
    if attr is None:
        raise _suggest(rule.feature, FEATURES_INFO, "feature")
    ctx.uses_features = True
    if attr.kind == "days":
        return _days_since_timestamp(FEATURES_TABLE.c.last_order_at, rule, ctx.now)
    if attr.kind == "tenure":
        return _tenure(rule, ctx.today)
    col = FEATURES_TABLE.c[attr.column]
    if attr.kind == "money":
        return _compare_missing_as_zero(col, rule, _cents)
    if attr.kind == "number":
        return _compare_missing_as_zero(col, rule, _whole_number)
    return _compare(col, rule, str)


def _whole_number(value: Any) -> int | float:
    """2.0 -> 2: an integer column compared with a float is cast to numeric on PostgreSQL (no statistics)."""
    n = _number(value)
    return int(n) if n == int(n) else n


def _compare_missing_as_zero(
    col: ColumnElement, cmp: Comparison, conv: Callable[[Any], Any]
) -> ColumnElement:
    """``coalesce(col, 0) <op> v`` written on the bare column, so the planners keep its statistics.

    Why: ``frequency >= 2`` keeps PostgreSQL's row estimate (``coalesce(...)``
    hides it, the plan then chose nested loops over 500k rows). A missing value
    counts as 0, so ``col IS NULL`` is added only when 0 itself matches.
    """
    if cmp.is_null is not None:
        return _compare(func.coalesce(col, 0), cmp, conv)
    cond = _compare(col, cmp, conv)
    return or_(col.is_(None), cond) if _matches(0, cmp, conv) else cond


def _matches(value: Any, cmp: Comparison, conv: Callable[[Any], Any]) -> bool:
    """``value`` against every operator given (Python twin of :func:`_compare`, for one constant)."""
    v = _values(cmp)
    checks = {
        "eq": lambda x: value == conv(x),
        "ne": lambda x: value != conv(x),
        "in_": lambda xs: value in [conv(x) for x in xs],
        "not_in": lambda xs: value not in [conv(x) for x in xs],
        "gt": lambda x: value > conv(x),
        "gte": lambda x: value >= conv(x),
        "lt": lambda x: value < conv(x),
        "lte": lambda x: value <= conv(x),
        "between": lambda lh: conv(lh[0]) <= value <= conv(lh[1]),
    }
    return all(check(v[name]) for name, check in checks.items() if v[name] is not None)


# --------------------------------------------------------------------------
# Relations: interests, orders, past campaigns, scores
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


def _bind_connect(ctx: RuleContext):
    from contextlib import nullcontext

    from relance.db import get_engine

    if isinstance(ctx.bind, Connection):
        return nullcontext(ctx.bind)
    return (ctx.bind or get_engine()).connect()


def model_version(model: str, ctx: RuleContext) -> str:
    """The pinned version of ``model`` (campaign ``model_versions:``) or its newest scored one."""
    with _bind_connect(ctx) as conn:
        pinned = ctx.model_versions.get(model)
        q = select(VERSIONS.c.version).where(VERSIONS.c.model == model)
        if pinned is not None:
            found = conn.execute(q.where(VERSIONS.c.version == pinned)).scalar()
            if found is None:
                raise RuleError(
                    f"no scores for model {model} version {pinned} (pinned in model_versions): "
                    f"run `relance train {model}` or pin an existing version"
                )
        else:
            found = _registry_version(model, conn, q)  # helper G: newest version passing its floors
            if found is None:
                found = conn.execute(
                    q.order_by(VERSIONS.c.scored_at.desc(), VERSIONS.c.version.desc()).limit(1)
                ).scalar()
            if found is None:
                raise RuleError(f"no scores for model {model}: run `relance train {model}` first")
    ctx.models_used[model] = found
    return found


def _registry_version(model: str, conn: Connection, q: Any) -> str | None:
    """The newest version in settings.models_dir that passes its metric floors and has scores (helper G).

    None when the registry knows no version of ``model`` (scores written by other means: newest scored
    wins); a RuleError when it knows some but none passing has scores.
    """
    from audiences.learning import registry

    known = registry.versions(model)
    if not known:
        return None
    for info in known:
        if info.passed and conn.execute(q.where(VERSIONS.c.version == info.version)).scalar():
            return info.version
    passing = [i.version for i in known if i.passed]
    if not passing:
        raise RuleError(
            f"model {model}: no version passes its metric floors ({registry.summary(known[0])} for "
            f"{known[0].version}); train on more data or pin a version in model_versions"
        )
    raise RuleError(
        f"model {model}: version {passing[0]} passes but has no scores: run `relance score {model}`"
    )


def scores_of(model: str, version: str) -> ColumnElement:
    """``customer_score`` rows of one (model, version): its id, read once by the database."""
    vid = select(VERSIONS.c.id).where(VERSIONS.c.model == model, VERSIONS.c.version == version)
    return SCORES.c.version_id == vid.scalar_subquery()


def _scored(model: str, version: str, *conds: ColumnElement) -> ColumnElement:
    return CUSTOMER.c.id.in_(select(SCORES.c.customer_id).where(scores_of(model, version), *conds))


def compile_score(rule: ScoreRule, ctx: RuleContext) -> ColumnElement:
    s = rule.score
    version = model_version(s.model, ctx)
    conds = []
    if s.min is not None:
        conds.append(SCORES.c.score >= s.min)
    if s.max is not None:
        conds.append(SCORES.c.score <= s.max)
    return _scored(s.model, version, *conds)


def compile_top(rule: TopRule, ctx: RuleContext) -> ColumnElement:
    """The best ``percent`` % of scored customers; the cut score is read once (ties are all kept)."""
    t = rule.top
    version = model_version(t.model, ctx)
    scope = scores_of(t.model, version)
    with _bind_connect(ctx) as conn:
        n = conn.execute(select(func.count()).where(scope)).scalar_one()
        k = max(1, math.ceil(n * t.percent / 100))
        cut = conn.execute(
            select(SCORES.c.score).where(scope).order_by(SCORES.c.score.desc()).offset(k - 1).limit(1)
        ).scalar()
    return _scored(t.model, version, SCORES.c.score >= cut)


def compile_target(rule: TargetRule, ctx: RuleContext) -> ColumnElement:
    """`target: uplift`: customers the uplift model expects to be moved by the message (score > 0)."""
    version = model_version("uplift", ctx)
    return _scored("uplift", version, SCORES.c.score > 0)


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

    from relance.settings import get_settings

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
        raise _suggest(name, dict.fromkeys(known), "segment")
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

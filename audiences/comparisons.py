"""Comparisons (``gte: 2``, ``between: [18, 30]``, ``is_null``...) as SQL booleans, including whole days.

Rules whose meaning moves with time (recency, tenure) compile against
timestamps relative to ``now``, so they never go stale between two feature
refreshes. Used by audiences.rules for `field` and `feature` rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, true

from audiences.rule_context import CUSTOMER, FEATURES_TABLE, RuleError
from core.spec import Comparison


def _values(cmp: Comparison) -> dict[str, Any]:
    return {k: getattr(cmp, k) for k in ("eq", "ne", "in_", "not_in", "gt", "gte", "lt", "lte", "between")}


def compare(expr: ColumnElement, cmp: Comparison, conv: Callable[[Any], Any] = lambda v: v) -> ColumnElement:
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


def number(value: Any) -> float:
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
        n = number(x)
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
        parts.append(at_least(math.floor(number(v["gt"])) + 1))
    if v["gte"] is not None:
        parts.append(at_least(math.ceil(number(v["gte"]))))
    if v["lt"] is not None:
        parts.append(at_most(math.ceil(number(v["lt"])) - 1))
    if v["lte"] is not None:
        parts.append(at_most(math.floor(number(v["lte"]))))
    if v["between"] is not None:
        lo, hi = v["between"]
        parts.append(and_(at_least(math.ceil(number(lo))), at_most(math.floor(number(hi)))))
    if cmp.is_null is not None:
        parts.append(null if cmp.is_null else not_(null))
    return and_(*parts) if parts else true()


def days_since_timestamp(col: ColumnElement, cmp: Comparison, now: datetime) -> ColumnElement:
    """d = whole days between ``col`` and ``now`` (recency_days)."""
    return _days(
        cmp,
        at_least=lambda n: col <= now - timedelta(days=n),
        at_most=lambda n: col > now - timedelta(days=n + 1),
        null=col.is_(None),
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def tenure(cmp: Comparison, today: date) -> ColumnElement:
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


def as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise RuleError(f"`{value}` is not a date; write YYYY-MM-DD, e.g. 2024-01-31") from exc


def cents(value: Any) -> int:
    return round(number(value) * 100)


def whole_number(value: Any) -> int | float:
    """2.0 -> 2: an integer column compared with a float is cast to numeric on PostgreSQL (no statistics)."""
    n = number(value)
    return int(n) if n == int(n) else n


def compare_missing_as_zero(col: ColumnElement, cmp: Comparison, conv: Callable[[Any], Any]) -> ColumnElement:
    """``coalesce(col, 0) <op> v`` written on the bare column, so the planners keep its statistics.

    Why: ``frequency >= 2`` keeps PostgreSQL's row estimate (``coalesce(...)``
    hides it, the plan then chose nested loops over 500k rows). A missing value
    counts as 0, so ``col IS NULL`` is added only when 0 itself matches.
    """
    if cmp.is_null is not None:
        return compare(func.coalesce(col, 0), cmp, conv)
    cond = compare(col, cmp, conv)
    return or_(col.is_(None), cond) if _matches(0, cmp, conv) else cond


def _matches(value: Any, cmp: Comparison, conv: Callable[[Any], Any]) -> bool:
    """``value`` against every operator given (Python twin of :func:`compare`, for one constant)."""
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

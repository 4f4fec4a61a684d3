"""`event:` rules compiled to SQL: did an event (with property conditions) at least / at most N times.

A rule counts the customer's rows of ``customer_event`` of one type, optionally in the
last D days (``occurred_at`` in ``(now - D days, now]``) and with conditions on their JSON
properties, and compares the count with ``min_count`` / ``max_count``. It stays one
boolean over ``customer`` (audiences.rules), so it nests in all / any / not, segments and
journey branches like every other rule.

Three shapes, chosen for the (customer_id, type, occurred_at) index and the planners:

- at least once (``min_count: 1``, no max): ``EXISTS`` (correlated on the customer), the
  common case; PostgreSQL turns it into a semi join, SQLite probes the index per customer;
- never (``max_count: 0``): ``NOT EXISTS``, the same probe;
- other counts: the matching events grouped by customer (``GROUP BY customer_id HAVING
  count(*) ...``) and ``EXISTS`` a group of this customer: a hash join on the groups where
  the planner can, else an index look-up per customer (see :func:`_among`); "at most N"
  with N > 0 is "not among those with more than N", so customers without any event match.

Property values are read from the JSON with the declared type of the property
(audiences.event_types): numbers (number, integer) as floats, booleans, strings, and
datetimes by their UTC date (rules compare dates, YYYY-MM-DD). A value of another JSON
type than declared (an event stored before its type changed) reads as missing, instead
of failing the whole selection on a cast: an event without the property matches only
``is_null: true``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    Float,
    FunctionElement,
    Select,
    String,
    and_,
    exists,
    func,
    literal,
    not_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles

from audiences.comparisons import as_date, compare, number
from audiences.rule_context import CUSTOMER, RuleContext, RuleError, suggest
from core.models import CustomerEvent
from core.spec_base import nearest
from core.spec_rules import Comparison, EventCondition, EventRule

EVENTS = CustomerEvent.__table__

ORDERED_KINDS = frozenset({"number", "integer", "datetime"})  # gt / gte / lt / lte / between make sense
UNORDERED_HINT = "use eq, ne, in, not_in or is_null"


# --------------------------------------------------------------------------
# The declared event types (audiences.event_types)
# --------------------------------------------------------------------------


def declared_types() -> dict[str, dict[str, str]]:
    """Event type -> {property: kind}: the built-in types and those of audiences/events.yaml."""
    from audiences.event_types import current
    from core.spec_loader import SpecError

    try:
        types = current()
    except SpecError as exc:
        first = exc.problems[0]
        raise RuleError(f"{first} (event types): fix it, `relance validate` lists every problem") from None
    return {name: dict(t.properties) for name, t in types.types.items()}


def event_properties(name: str, types: Mapping[str, Mapping[str, str]]) -> Mapping[str, str]:
    """The properties of event type ``name``, or a RuleError naming the closest known type."""
    if name not in types:
        raise suggest(name, types, "event type")
    return types[name]


def property_kind(event: str, prop: str, properties: Mapping[str, str]) -> str:
    """The declared kind of ``prop``, or a RuleError naming the closest property of the event."""
    if prop not in properties:
        if not properties:
            raise RuleError(f"event `{event}` has no properties: remove `{prop}` from its `where:`")
        raise suggest(prop, properties, f"property of event `{event}`")
    return properties[prop]


def event_rule_problems(
    e: EventCondition, types: Mapping[str, Any], file: str
) -> list[tuple[tuple[str, ...], str, bool]]:
    """What `relance validate` reports for one `event:` rule: (path under `event:`, sentence, at the key?).

    ``types`` maps names to audiences.event_types.EventType (``.properties``).
    """
    if e.name not in types:
        close = nearest(e.name, types)
        known = f"known: {', '.join(sorted(types))} (declare yours in {file})"
        hint = f"did you mean `{close}`?" if close else known
        return [(("name",), f"`name: {e.name}` is not a known event type; {hint}", False)]
    declared = types[e.name].properties
    out: list[tuple[tuple[str, ...], str, bool]] = []
    for prop, cmp in e.where.items():
        if prop not in declared:
            close = nearest(prop, declared)
            listed = f"it has {', '.join(sorted(declared))}" if declared else "it has no properties"
            hint = f"did you mean `{close}`?" if close else listed
            out.append((("where", prop), f"`{prop}` is not a property of event `{e.name}`; {hint}", True))
        elif (ordered := _ordered_operators(cmp)) and declared[prop] not in ORDERED_KINDS:
            text = f"`{ordered[0]}` does not apply to `{prop}` (a {declared[prop]}); {UNORDERED_HINT}"
            out.append((("where", prop, ordered[0]), text, True))
    return out


def _ordered_operators(cmp: Comparison) -> list[str]:
    return [op for op in ("gt", "gte", "lt", "lte", "between") if getattr(cmp, op) is not None]


# --------------------------------------------------------------------------
# Reading a property with its declared type (SQLite json_extract, PostgreSQL ->>)
# --------------------------------------------------------------------------


class _Property(FunctionElement):
    """``properties[key]`` as a SQL value of one kind; NULL when missing or of another JSON type."""

    inherit_cache = True
    kind = "string"

    def __init__(self, column: ColumnElement, key: str) -> None:
        super().__init__(column, literal(key, String))


class _NumberProperty(_Property):
    inherit_cache = True
    kind = "number"
    type = Float()


class _BooleanProperty(_Property):
    inherit_cache = True
    kind = "boolean"
    type = Boolean()


class _StringProperty(_Property):
    inherit_cache = True
    kind = "string"
    type = String()


class _DateProperty(_Property):
    inherit_cache = True
    kind = "datetime"
    type = Date()


_PROPERTY_OF_KIND: dict[str, type[_Property]] = {
    "number": _NumberProperty,
    "integer": _NumberProperty,
    "boolean": _BooleanProperty,
    "string": _StringProperty,
    "datetime": _DateProperty,
}

_SQLITE_JSON_TYPES = {"number": "'integer', 'real'", "boolean": "'true', 'false'", "string": "'text'",
                      "datetime": "'text'"}  # fmt: skip
_PG_JSON_TYPES = {"number": "number", "boolean": "boolean", "string": "string", "datetime": "string"}


@compiles(_Property, "sqlite")
def _sqlite_property(element: _Property, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    path = f"'$.' || json_quote({key})"  # `$."cart value"`: any property name, quoted
    value = f"json_extract({column}, {path})"  # booleans come out as 1 / 0
    typed = f"CASE WHEN json_type({column}, {path}) IN ({_SQLITE_JSON_TYPES[element.kind]}) THEN {value} END"
    return f"date({typed})" if element.kind == "datetime" else typed  # date(): the UTC date, NULL if no date


@compiles(_Property, "postgresql")
def _pg_property(element: _Property, compiler: Any, **kw: Any) -> str:
    col, key_el = list(element.clauses)
    column, key = compiler.process(col, **kw), compiler.process(key_el, **kw)
    typeof = "jsonb_typeof" if isinstance(col.type, JSONB) else "json_typeof"
    text = f"({column} ->> {key})"
    guard = f"{typeof}({column} -> {key}) = '{_PG_JSON_TYPES[element.kind]}'"
    cast = {
        "number": f"{text}::double precision",
        "boolean": f"{text}::boolean",
        "string": text,
        # a date-time string with its offset, as the event API stores it; its date in UTC
        "datetime": f"(({text})::timestamptz AT TIME ZONE 'UTC')::date",
    }[element.kind]
    if element.kind == "datetime":
        guard += rf" AND {text} ~ '^\d{{4}}-\d{{2}}-\d{{2}}'"
    return f"CASE WHEN {guard} THEN {cast} END"


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RuleError(f"`{value!r}` is not true or false; write true or false")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "number": number,
    "integer": number,
    "boolean": _boolean,
    "string": _text,
    "datetime": as_date,
}


def property_condition(event: str, prop: str, kind: str, cmp: Comparison) -> ColumnElement:
    """The comparisons of ``where: {prop: ...}`` on the property read with its declared kind."""
    if kind not in _PROPERTY_OF_KIND:
        raise RuleError(f"property `{prop}` of event `{event}` has the unknown type `{kind}`")
    ordered = _ordered_operators(cmp)
    if ordered and kind not in ORDERED_KINDS:
        raise RuleError(
            f"`{ordered[0]}` does not apply to `{prop}` of event `{event}` (a {kind}); {UNORDERED_HINT}"
        )
    value = _PROPERTY_OF_KIND[kind](EVENTS.c.properties, prop)
    return compare(value, cmp, _CONVERT[kind])


# --------------------------------------------------------------------------
# The count
# --------------------------------------------------------------------------


def event_conditions(
    e: EventCondition, ctx: RuleContext, types: Mapping[str, Mapping[str, str]] | None = None
) -> list[ColumnElement]:
    """WHERE conditions on ``customer_event`` of one event rule: its type, period and properties."""
    properties = event_properties(e.name, declared_types() if types is None else types)
    conds: list[ColumnElement] = [EVENTS.c.type == e.name]
    if e.within_days is not None:
        conds.append(EVENTS.c.occurred_at > ctx.now - timedelta(days=e.within_days))
        conds.append(EVENTS.c.occurred_at <= ctx.now)
    for prop, cmp in e.where.items():
        conds.append(property_condition(e.name, prop, property_kind(e.name, prop, properties), cmp))
    return conds


def compile_event(rule: EventRule, ctx: RuleContext) -> ColumnElement:
    """Customers whose matching events number between ``min_count`` and ``max_count`` (see module doc)."""
    e = rule.event
    conds = event_conditions(e, ctx)
    if e.max_count is None and e.min_count <= 1:
        # min_count 0 without max_count is refused by the model; 1 = did it at least once
        return _exists(conds)
    if e.max_count == 0:
        return not_(_exists(conds))
    count = func.count()
    per_customer = (
        select(EVENTS.c.customer_id)
        .where(EVENTS.c.customer_id.is_not(None), *conds)
        .group_by(EVENTS.c.customer_id)
    )
    if e.min_count == 0:  # at most max_count (> 0) times, zero included: not among those with more
        return not_(_among(per_customer.having(count > e.max_count)))
    bounds = [count >= e.min_count]
    if e.max_count is not None:
        bounds.append(count <= e.max_count)
    return _among(per_customer.having(and_(*bounds)))


def _among(grouped: Select) -> ColumnElement:
    """``EXISTS (SELECT 1 FROM (grouped) g WHERE g.customer_id = customer.id)``.

    Why not ``customer.id IN (grouped)``: under `not:` or `any:` PostgreSQL keeps an IN as a
    SubPlan, hashed only when the set fits in work_mem; with 690k ids it scanned the set for
    every customer (over 60 s on the 1M bench, and NOT IN for `max_count` likewise). This
    EXISTS is a hash (anti) join where it can be, and otherwise a per-customer look-up in
    the (customer_id, type, occurred_at) index, the condition pushed into the grouping
    (about 5 s per million customers, bench/event_rules.py).
    """
    g = grouped.subquery("event_counts")
    return exists(
        select(literal(1)).select_from(g).where(g.c.customer_id == CUSTOMER.c.id).correlate(CUSTOMER)
    )


def _exists(conds: list[ColumnElement]) -> ColumnElement:
    return exists(select(literal(1)).where(EVENTS.c.customer_id == CUSTOMER.c.id, *conds).correlate(CUSTOMER))

"""Events the customer base implies: orders placed, customers created, and, derived daily in SQL,
anniversaries and lapsing.

Every id is deterministic (``order:<order id>``, ``customer_created:<external id>``, ...) and every
insert is ``ON CONFLICT (event_id) DO NOTHING``, so a re-import or a re-run stores nothing twice.
The daily ones are set-based: one ``INSERT ... SELECT`` per kind, with
deterministic event ids, so running a day twice stores nothing twice and a missed day is
caught up by running that date. Dates are UTC dates (the customer's time zone is not used:
a daily event is meant for a daily journey tick, not for the minute).

There is no birth date in the base (only ``birth_year``), so there is no birthday event;
``signup_anniversary`` (from ``customer.signup_date``) and ``first_order_anniversary`` are the
date fields relance has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlmodel.sql.sqltypes import UTCDateTime

from audiences.event_types import BUILTIN
from core.models import utcnow

# --------------------------------------------------------------------------
# Built-in events of single orders and customers
# --------------------------------------------------------------------------


def order_placed(
    order_id: str,
    customer_id: int,
    external_id: str | None,
    ordered_at: datetime,
    amount_cents: int,
    currency: str = "EUR",
    category: str | None = None,
    product: str | None = None,
) -> dict:
    """The built-in ``order_placed`` event of one order (id ``order:<order external id>``: one per order,
    whichever way it arrived: import or conversions API)."""
    props = {"order_id": order_id, "amount": amount_cents / 100, "currency": currency}
    props.update({k: v for k, v in (("category", category), ("product", product)) if v is not None})
    return {
        "event_id": f"order:{order_id}",
        "type": "order_placed",
        "customer_id": customer_id,
        "external_id": external_id,
        "occurred_at": ordered_at,
        "properties": props,
    }


# --------------------------------------------------------------------------
# Built-in events written by the CSV imports (raw driver, stored forms)
# --------------------------------------------------------------------------

STORED_INSERT = (
    "INSERT INTO customer_event (event_id, type, customer_id, external_id, email, occurred_at, received_at, "
    "properties, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'relance') ON CONFLICT (event_id) DO NOTHING"
)


def write_stored(db: Any, rows: list[tuple]) -> None:
    """Insert built-in events through the imports' raw driver (``csv_import.common.Driver``: ``many``).

    ``rows`` are (event_id, type, customer_id, external_id, email, occurred_at, received_at,
    properties as JSON text or None) with datetimes in the driver's stored form (common.stored).
    Why raw: an import writes tens of thousands of these per chunk, where SQLAlchemy's per-row
    processing would cost as much as the insert itself.
    """
    db.many(STORED_INSERT, rows)


def customers_created(db: Any, created: list[tuple[int, str, str | None]], now_stored: Any) -> None:
    """``customer_created`` for customers new in an import chunk: (id, external id, e-mail)."""
    write_stored(
        db,
        [
            (f"customer_created:{ext}", "customer_created", cid, ext, email, now_stored, now_stored, None)
            for cid, ext, email in created
        ],
    )


def orders_placed(db: Any, orders: list[tuple], now: datetime) -> int:
    """``order_placed`` for orders new in an import chunk, in the transaction of their rows; returns
    how many were written.

    ``orders``: (order external id, customer id, customer external id, ordered_at stored, amount_cents,
    currency, category, product), the last three possibly None. Orders older than the type's
    retention get no event: purge would delete it, and a backfill of years of history then costs
    nothing here (bench: events for all 400k demo orders made `import orders` 60 % slower).
    """
    cutoff = _stored(now - timedelta(days=BUILTIN["order_placed"].retention_days), db.dialect)
    received = _stored(now, db.dialect)
    rows = []
    for order_id, cid, ext, at, cents, currency, category, product in orders:
        if at < cutoff:
            continue
        props = {"order_id": order_id, "amount": cents / 100, "currency": currency or "EUR"}
        props.update({k: v for k, v in (("category", category), ("product", product)) if v is not None})
        props_text = json.dumps(props, ensure_ascii=False)
        rows.append((f"order:{order_id}", "order_placed", cid, ext, None, at, received, props_text))
    write_stored(db, rows)
    return len(rows)


def _stored(moment: datetime, dialect: str) -> Any:
    """An aware datetime as the imports' driver stores it (csv_import.common.stored)."""
    if dialect != "sqlite":
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# --------------------------------------------------------------------------
# Daily, in SQL
# --------------------------------------------------------------------------


class _Sql:
    """The few expressions that differ between SQLite and PostgreSQL (dates of UTC timestamps, JSON)."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def month_day(self, expr: str, is_date: bool = False) -> str:
        if self.pg:
            return f"to_char({expr}, 'MM-DD')" if is_date else f"to_char({expr} AT TIME ZONE 'UTC', 'MM-DD')"
        return f"strftime('%m-%d', {expr})"

    def year(self, expr: str, is_date: bool = False) -> str:
        if self.pg:
            inner = expr if is_date else f"{expr} AT TIME ZONE 'UTC'"
            return f"CAST(EXTRACT(YEAR FROM {inner}) AS INTEGER)"
        return f"CAST(strftime('%Y', {expr}) AS INTEGER)"

    def day_text(self, expr: str, is_date: bool = False) -> str:
        if self.pg:
            inner = expr if is_date else f"{expr} AT TIME ZONE 'UTC'"
            return f"to_char({inner}, 'YYYY-MM-DD')"
        return f"strftime('%Y-%m-%d', {expr})"

    def iso(self, expr: str) -> str:
        """An aware timestamp as event properties store datetimes: 2026-12-04T10:00:00+00:00."""
        if self.pg:
            return f"to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')"
        return f"strftime('%Y-%m-%dT%H:%M:%S+00:00', {expr})"

    def json(self, *pairs: tuple[str, str]) -> str:
        fn = "json_build_object" if self.pg else "json_object"
        args = ", ".join(f"'{k}', {v}" for k, v in pairs)
        return f"{fn}({args})"


def _month_days(day: date) -> list[str]:
    """Month-days celebrated on ``day``: 29 February falls on 28 February in other years."""
    out = [day.strftime("%m-%d")]
    if day.month == 2 and day.day == 28 and not _leap(day.year):
        out.append("02-29")
    return out


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_TIMES = ("at", "received", "start", "end")


def _insert_select(conn: Connection, select_sql: str, params: dict) -> int:
    """INSERT INTO customer_event (...) <select_sql> ON CONFLICT (event_id) DO NOTHING; rows inserted."""
    stmt = text(
        "INSERT INTO customer_event (event_id, type, customer_id, external_id, email, occurred_at, "
        f"received_at, properties, source) {select_sql} ON CONFLICT (event_id) DO NOTHING"
    ).bindparams(*(bindparam(k, type_=UTCDateTime) for k in _TIMES if k in params))
    return conn.execute(stmt, params).rowcount


def derive_daily(conn: Connection, today: date, lapsing_days: Sequence[int] | None = None) -> dict[str, int]:
    """The events the base implies on ``today`` (UTC dates), idempotent: run twice, stored once.

    - ``first_order_anniversary`` (id ``first_order_anniversary:<customer>:<year>``);
    - ``signup_anniversary`` from ``customer.signup_date`` (id ``signup_anniversary:<customer>:<year>``);
    - ``lapsing`` for each N of ``lapsing_days`` (RELANCE_LAPSING_DAYS): the last order was N days
      before ``today`` (id ``lapsing:<customer>:<N>:<date of the last order>``: a new lapse after a new
      order is a new event).
    A missed day is caught up by calling this for that date (the ids do not depend on when it runs).
    """
    if lapsing_days is None:
        from core.settings import get_settings

        lapsing_days = get_settings().lapsing_days
    sql = _Sql(conn.dialect.name)
    at = datetime.combine(today, time(0), UTC)
    base = {"at": at, "received": utcnow(), "year": today.year}
    md = ", ".join(f"'{m}'" for m in _month_days(today))  # fixed strings built here, not user input
    counts: dict[str, int] = {}

    first, first_year = sql.month_day("f.first_at"), sql.year("f.first_at")
    counts["first_order_anniversary"] = _insert_select(
        conn,
        "SELECT 'first_order_anniversary:' || CAST(c.id AS TEXT) || ':' || CAST(:year AS TEXT), "
        "'first_order_anniversary', c.id, c.external_id, c.email, :at, :received, "
        f"{sql.json(('years', ':year - ' + first_year), ('first_order_at', sql.iso('f.first_at')))}, "
        "'relance' FROM (SELECT customer_id, min(ordered_at) AS first_at FROM orders GROUP BY customer_id) f "
        f"JOIN customer c ON c.id = f.customer_id WHERE c.erased_at IS NULL AND {first} IN ({md}) "
        f"AND {first_year} < :year",
        base,
    )
    signup, signup_year = sql.month_day("c.signup_date", True), sql.year("c.signup_date", True)
    signup_props = sql.json(
        ("years", ":year - " + signup_year), ("signup_date", sql.day_text("c.signup_date", True))
    )
    counts["signup_anniversary"] = _insert_select(
        conn,
        "SELECT 'signup_anniversary:' || CAST(c.id AS TEXT) || ':' || CAST(:year AS TEXT), "
        "'signup_anniversary', c.id, c.external_id, c.email, :at, :received, "
        f"{signup_props}, 'relance' FROM customer c WHERE c.erased_at IS NULL AND c.signup_date IS NOT NULL "
        f"AND {signup} IN ({md}) AND {signup_year} < :year",
        base,
    )
    counts["lapsing"] = 0
    for days in sorted(set(lapsing_days)):
        start = datetime.combine(today - timedelta(days=days), time(0), UTC)
        params = {**base, "days": days, "start": start, "end": start + timedelta(days=1)}
        counts["lapsing"] += _insert_select(
            conn,
            "SELECT 'lapsing:' || CAST(c.id AS TEXT) || ':' || CAST(:days AS TEXT) || ':' || "
            f"{sql.day_text('l.last_at')}, 'lapsing', c.id, c.external_id, c.email, :at, :received, "
            f"{sql.json(('days', ':days'), ('last_order_at', sql.iso('l.last_at')))}, 'relance' "
            "FROM (SELECT customer_id, max(ordered_at) AS last_at FROM orders GROUP BY customer_id) l "
            "JOIN customer c ON c.id = l.customer_id "
            "WHERE c.erased_at IS NULL AND l.last_at >= :start AND l.last_at < :end",
            params,
        )
    return counts


__all__ = ["customers_created", "derive_daily", "order_placed", "orders_placed", "write_stored"]

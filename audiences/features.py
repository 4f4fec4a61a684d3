"""Customer features (RFM and friends), computed in SQL into ``customer_features``.

One INSERT ... SELECT ... GROUP BY ... ON CONFLICT upsert per refresh, on SQLite
and PostgreSQL alike, so nothing is loaded into Python. Which customers to
recompute is kept in the database itself: the importer deletes the features
row of every customer whose profile or orders changed, and an incremental
refresh recomputes every customer who has no row. That survives a crash
between import and refresh (no in-memory "touched" set to lose) and needs no
extra table. ``--all`` recomputes everyone, which also moves ``recency_days``
and ``tenure_days`` forward: run it daily (or before a campaign).

Definitions (as of the refresh time ``now``):
- recency_days: whole days since the last order (NULL without orders)
- frequency: number of orders; monetary_cents: their total (all currencies summed, the shop sells in one)
- avg_basket_cents: monetary / frequency, rounded
- tenure_days: whole days since signup (or since the first order when the signup date is unknown)
- favourite_category: the category ordered most often (ties: higher spend, then alphabetical)
- preferred_payment_method: the method used most often (same ties), else the one declared on the customer
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, text
from sqlmodel.sql.sqltypes import UTCDateTime

from core.db import get_engine
from core.models import utcnow

TARGETS = "relance_feature_targets"


@dataclass
class RefreshResult:
    customers: int
    full: bool
    seconds: float


def _day_diff(dialect: str, later: str, earlier: str) -> str:
    """Whole days between two datetimes, as SQL for the dialect."""
    if dialect == "postgresql":
        return f"CAST(EXTRACT(DAY FROM ({later} - {earlier})) AS INTEGER)"
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


def _ranked(column: str) -> str:
    """Per customer, the value of ``column`` ordered most often (rank 1)."""
    return f"""
        SELECT customer_id, {column} AS value,
               ROW_NUMBER() OVER (PARTITION BY customer_id
                                  ORDER BY COUNT(*) DESC, SUM(amount_cents) DESC, {column}) AS rk
        FROM orders
        WHERE {column} IS NOT NULL AND customer_id IN (SELECT customer_id FROM {TARGETS})
        GROUP BY customer_id, {column}
    """


def upsert_sql(dialect: str) -> str:
    if dialect == "postgresql":
        today = "CAST(:now AS DATE)"
        tenure = f"({today} - COALESCE(c.signup_date, CAST(a.first_at AT TIME ZONE 'UTC' AS DATE)))"
    else:
        tenure = _day_diff(dialect, "date(:now)", "COALESCE(c.signup_date, date(a.first_at))")
    recency = _day_diff(dialect, ":now", "a.last_at")
    cols = (
        "first_order_at, last_order_at, recency_days, frequency, monetary_cents, avg_basket_cents, "
        "tenure_days, favourite_category, preferred_payment_method, computed_at"
    )
    updates = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in cols.split(","))
    return f"""
        INSERT INTO customer_features (customer_id, {cols})
        SELECT t.customer_id, a.first_at, a.last_at, {recency},
               COALESCE(a.n, 0), COALESCE(a.total, 0),
               COALESCE(CAST(ROUND(1.0 * a.total / a.n) AS INTEGER), 0),
               COALESCE({tenure}, 0),
               fc.value, COALESCE(pm.value, c.preferred_payment_method), :now
        FROM {TARGETS} t
        JOIN customer c ON c.id = t.customer_id
        LEFT JOIN (
            SELECT customer_id, MIN(ordered_at) AS first_at, MAX(ordered_at) AS last_at,
                   COUNT(*) AS n, SUM(amount_cents) AS total
            FROM orders
            WHERE customer_id IN (SELECT customer_id FROM {TARGETS})
            GROUP BY customer_id
        ) a ON a.customer_id = t.customer_id
        LEFT JOIN ({_ranked("category")}) fc ON fc.customer_id = t.customer_id AND fc.rk = 1
        LEFT JOIN ({_ranked("payment_method")}) pm ON pm.customer_id = t.customer_id AND pm.rk = 1
        WHERE true
        ON CONFLICT (customer_id) DO UPDATE SET {updates}
    """


def _fill_targets(conn: Connection, full: bool, customer_ids: list[int] | None) -> int:
    conn.execute(text(f"DROP TABLE IF EXISTS {TARGETS}"))
    conn.execute(text(f"CREATE TEMPORARY TABLE {TARGETS} (customer_id INTEGER PRIMARY KEY)"))
    if customer_ids is not None:
        if customer_ids:
            conn.execute(
                text(f"INSERT INTO {TARGETS} (customer_id) SELECT id FROM customer WHERE id = :id"),
                [{"id": i} for i in sorted(set(customer_ids))],
            )
    elif full:
        conn.execute(text(f"INSERT INTO {TARGETS} (customer_id) SELECT id FROM customer"))
    else:
        conn.execute(
            text(
                f"INSERT INTO {TARGETS} (customer_id) SELECT c.id FROM customer c "
                "WHERE NOT EXISTS (SELECT 1 FROM customer_features f WHERE f.customer_id = c.id)"
            )
        )
    return conn.execute(text(f"SELECT COUNT(*) FROM {TARGETS}")).scalar_one()


def refresh(
    engine: Engine | None = None,
    full: bool = False,
    customer_ids: list[int] | None = None,
    now: datetime | None = None,
) -> RefreshResult:
    """Recompute features: everyone (``full``), given customers, or those without a row (default)."""
    engine = engine or get_engine()
    started = time.perf_counter()
    now = now or utcnow()
    with engine.begin() as conn:
        count = _fill_targets(conn, full, customer_ids)
        if count:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"ANALYZE {TARGETS}"))
            stmt = text(upsert_sql(conn.dialect.name)).bindparams(bindparam("now", type_=UTCDateTime()))
            conn.execute(stmt, {"now": now})
        conn.execute(text(f"DROP TABLE {TARGETS}"))
    return RefreshResult(customers=count, full=full, seconds=time.perf_counter() - started)

"""Training and scoring rows, with every feature computed AS IT WAS at a reference time.

Why not read ``customer_features``: it holds the features of *now*, so a model
trained on it for a message sent three months ago would see orders the message
may itself have caused (leakage). Here the order aggregates are recomputed in
SQL with ``orders.ordered_at < reference time`` in the JOIN condition:

- a past message: the reference is ``ledger.sent_at``, else the run's
  ``started_at`` (control rows are never sent), else the row's ``created_at``;
- a churn snapshot: the cut-off date; - scoring: now.

Speed (1M customers, 3M orders): the orders are read ONCE per training or
scoring run into an :class:`OrderHistory` (sorted by time, with running
per-customer totals), and the features of any (customer, reference time) pair
are a backward as-of lookup in it (``pandas.merge_asof``, strictly before the
reference) instead of a SQL join per row: 4 churn snapshots or 1.8M past
messages cost one read of the orders instead of one GROUP BY each (24-80 s
each on SQLite). The definitions are those of the former GROUP BY (checked
equal on the 1M bench database, notes/7-learning.md "speed-up"). Times are
compared as Julian day numbers returned by the database (same code on SQLite
and PostgreSQL; SQLite's julianday() keeps milliseconds, so an order less than
1 ms before the reference may count as "at" it). Outcomes within the
conversion window are read from normalized events (``event.ledger_id``).

Why one module of ~470 lines: the as-of-time feature SQL is shared by training rows, churn
snapshots and scoring; split, one definition of a feature would be spread over files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import (
    Connection,
    Float,
    Subquery,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel.sql.sqltypes import UTCDateTime

from core.models import CampaignRun, Customer, Event, LedgerEntry, Order, utcnow

if TYPE_CHECKING:
    import pandas as pd

CUSTOMER = Customer.__table__
ORDERS = Order.__table__
LEDGER = LedgerEntry.__table__
RUNS = CampaignRun.__table__
EVENTS = Event.__table__

# The model inputs. Numbers may be NaN (no order yet): HistGradientBoosting handles missing values.
NUMERIC_FEATURES: tuple[str, ...] = (
    "recency_days",  # days since the last order before the reference time (NaN: never ordered)
    "frequency",  # orders before the reference time
    "monetary",  # their total, euros
    "avg_basket",  # monetary / frequency, euros
    "tenure_days",  # days since signup, else since the first order
    "first_order_days",  # days since the first order
    "n_categories",  # distinct categories ordered
)
CHANNEL_FEATURE = "channel"

# Ledger rows that are a message that left (responses are possible) and control rows (held out).
SENT_STATUSES: tuple[str, ...] = ("sent", "delivered", "opened", "clicked", "converted")
CONTROL_STATUS = "held_out"
RESPONSE_EVENTS: tuple[str, ...] = ("opened", "clicked", "converted")  # opened counts only if not machine
# A purchase within the window after the (would-be) send, credited to the message or not (`purchased`:
# treated rows the attribution rule did not credit): like with like against the control group, whose
# every window purchase is a `converted` event (tracking/attribution.py). Else the uplift model would
# learn an effect too low, negative for customers who buy without clicking.
PURCHASE_EVENTS: tuple[str, ...] = ("converted", "purchased")
OUTCOME_EVENTS: tuple[str, ...] = (*RESPONSE_EVENTS, "purchased", "unsubscribed")


def julian(expr: ColumnElement, dialect: str) -> ColumnElement:
    """A datetime or date as a Julian day number (float days), the same on SQLite and PostgreSQL."""
    if dialect == "sqlite":
        return func.julianday(expr)
    return func.extract("epoch", expr) / 86400.0 + 2440587.5


def frame(conn: Connection, query) -> pd.DataFrame:
    """Rows of ``query`` as a DataFrame, fetched from the driver's cursor.

    Why not ``result.fetchall()``: SQLAlchemy's per-row processing doubles the time on millions
    of rows; the queries passed here return numbers and strings only (Julian days, not datetimes).
    """
    import pandas as pd

    result = conn.execute(query)
    return pd.DataFrame.from_records(result.cursor.fetchall(), columns=list(map(str, result.keys())))


def julian_of(conn: Connection, at: datetime) -> float:
    """``at`` as the database's Julian day number (compared with those of the orders)."""
    return float(conn.execute(select(julian(literal(at, UTCDateTime()), conn.dialect.name))).scalar_one())


@dataclass(frozen=True)
class OrderHistory:
    """Every order once, sorted by time, with running per-customer aggregates (inclusive of the row).

    Columns: customer_id, t (Julian day), n_orders, total_cents, first_j, n_categories.
    The aggregates of a customer strictly before time r are those of their last row with t < r.
    """

    orders: pd.DataFrame


def order_history(conn: Connection) -> OrderHistory:
    """Read the orders once (one scan, no GROUP BY) and compute the running aggregates in pandas."""
    import numpy as np

    dialect = conn.dialect.name
    df = frame(
        conn,
        select(
            ORDERS.c.customer_id,
            cast(julian(ORDERS.c.ordered_at, dialect), Float).label("t"),
            ORDERS.c.amount_cents,
            ORDERS.c.category,
        ),
    )
    df["customer_id"] = df["customer_id"].astype(np.int64)
    df["t"] = df["t"].astype(float)
    df["amount_cents"] = df["amount_cents"].fillna(0).astype(np.int64)
    df = df.sort_values(["customer_id", "t"], kind="mergesort", ignore_index=True)
    by = df.groupby("customer_id", sort=False)
    new_category = df["category"].notna() & ~df.duplicated(["customer_id", "category"])
    out = df[["customer_id", "t"]].assign(
        n_orders=by.cumcount() + 1,
        total_cents=by["amount_cents"].cumsum(),
        first_j=by["t"].transform("first"),
        n_categories=new_category.astype(int).groupby(df["customer_id"], sort=False).cumsum(),
    )
    # merge_asof needs the right side sorted by time; a stable sort keeps each customer's rows at the
    # same time in running order, so the last one (the one merge_asof picks) holds all of them.
    return OrderHistory(out.sort_values("t", kind="mergesort", ignore_index=True))


def as_of(history: OrderHistory, customer_ids, ref_j) -> pd.DataFrame:
    """Order aggregates of each (customer, reference) pair over the orders strictly before it.

    Returns n_orders, total_cents, last_j, first_j, n_categories, in the order of the inputs.
    """
    import numpy as np
    import pandas as pd

    left = pd.DataFrame(
        {"customer_id": np.asarray(customer_ids, dtype=np.int64), "ref_j": np.asarray(ref_j, dtype=float)}
    )
    left["row"] = np.arange(len(left))
    merged = pd.merge_asof(
        left.sort_values("ref_j", kind="mergesort"),
        history.orders,
        left_on="ref_j",
        right_on="t",
        by="customer_id",
        allow_exact_matches=False,  # strictly before the reference time
        direction="backward",
    ).sort_values("row")
    return pd.DataFrame(
        {
            "n_orders": merged["n_orders"].fillna(0).to_numpy(),
            "total_cents": merged["total_cents"].fillna(0).to_numpy(),
            "last_j": merged["t"].to_numpy(),
            "first_j": merged["first_j"].to_numpy(),
            "n_categories": merged["n_categories"].fillna(0).to_numpy(),
        }
    )


def _base_rows(conn: Connection, base, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """key, customer_id, *extra, and the reference and signup times as Julian days, by key."""
    dialect = conn.dialect.name
    q = (
        select(
            base.c.key,
            base.c.customer_id,
            *(base.c[c] for c in extra),
            cast(julian(base.c.ref_at, dialect), Float).label("ref_j"),
            cast(julian(CUSTOMER.c.signup_date, dialect), Float).label("signup_j"),
        )
        .select_from(base.join(CUSTOMER, CUSTOMER.c.id == base.c.customer_id))
        .order_by(base.c.key)
    )
    return frame(conn, q)


def features_at(
    conn: Connection,
    base: Subquery,
    extra: tuple[str, ...] = (),
    history: OrderHistory | None = None,
) -> pd.DataFrame:
    """Features of each row of ``base`` (columns key, customer_id, ref_at, *extra) as of its ref_at."""
    rows = _base_rows(conn, base, extra)
    history = history or order_history(conn)
    aggregates = as_of(history, rows["customer_id"], rows["ref_j"])
    return derive(pd_concat(rows, aggregates))


def pd_concat(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Columns of two frames of the same length side by side (by position)."""
    import pandas as pd

    return pd.concat([left.reset_index(drop=True), right.reset_index(drop=True)], axis=1)


def derive(raw: pd.DataFrame) -> pd.DataFrame:
    """Model features from the SQL aggregates (Julian days, counts, cents)."""
    import numpy as np

    df = raw.copy()
    for col in ("ref_j", "signup_j", "last_j", "first_j"):
        df[col] = df[col].astype(float)
    freq = df["n_orders"].astype(float)
    df["frequency"] = freq
    df["monetary"] = df["total_cents"].astype(float) / 100.0
    df["avg_basket"] = np.where(freq > 0, df["monetary"] / freq.where(freq > 0, 1.0), 0.0)
    df["recency_days"] = np.floor(df["ref_j"] - df["last_j"])
    df["first_order_days"] = np.floor(df["ref_j"] - df["first_j"])
    df["tenure_days"] = np.floor(df["ref_j"] - df["signup_j"]).fillna(df["first_order_days"])
    df["n_categories"] = df["n_categories"].astype(float)
    return df.drop(columns=["signup_j", "last_j", "first_j", "n_orders", "total_cents"])


# --------------------------------------------------------------------------
# Past messages (response and uplift models)
# --------------------------------------------------------------------------


def reference_time() -> ColumnElement:
    """When a ledger row's message counts as sent: sent_at, else the run's start, else the row's creation."""
    return func.coalesce(LEDGER.c.sent_at, RUNS.c.started_at, LEDGER.c.created_at)


def message_rows(
    conn: Connection,
    *,
    window_days: int,
    until: datetime | None = None,
    since: datetime | None = None,
    history: OrderHistory | None = None,
) -> pd.DataFrame:
    """One row per past message or control row whose conversion window closed before ``until`` (now if
    not given).

    Columns: key (ledger id), customer_id, channel, campaign, run_id, in_control, ref_j, the
    NUMERIC_FEATURES, and outcomes within ``window_days``: responded (human open, click or
    conversion), converted, revenue (euros), unsubscribed. A window still open at ``until`` would
    count future responses as "no response": those rows are left out.
    """
    ref = reference_time()
    last_ref = (until or utcnow()) - timedelta(days=window_days)
    conds = [
        LEDGER.c.status.in_((*SENT_STATUSES, CONTROL_STATUS)),
        ref < literal(last_ref, UTCDateTime()),
    ]
    if since is not None:
        conds.append(ref >= literal(since, UTCDateTime()))
    base = (
        select(
            LEDGER.c.id.label("key"),
            LEDGER.c.customer_id,
            ref.label("ref_at"),
            LEDGER.c.channel,
            LEDGER.c.campaign,
            LEDGER.c.run_id,
            LEDGER.c.in_control,
        )
        .select_from(LEDGER.join(RUNS, RUNS.c.id == LEDGER.c.run_id))
        .where(*conds)
        .subquery("msg")
    )
    df = features_at(conn, base, extra=("channel", "campaign", "run_id", "in_control"), history=history)
    df["in_control"] = df["in_control"].astype(bool)
    outcomes = _outcomes(conn, base, window_days)
    df = df.merge(outcomes, how="left", left_on="key", right_index=True)
    for col in ("responded", "converted", "unsubscribed"):
        df[col] = df[col].fillna(0).astype(int)
    df["revenue"] = df["revenue"].fillna(0.0)
    return df


def _outcomes(conn: Connection, base: Subquery, window_days: int) -> pd.DataFrame:
    """Per ledger id: what happened within ``window_days`` after the reference time."""
    import numpy as np
    import pandas as pd

    dialect = conn.dialect.name
    q = (
        select(
            EVENTS.c.ledger_id,
            EVENTS.c.type,
            EVENTS.c.machine,
            EVENTS.c.revenue_cents,
            julian(EVENTS.c.occurred_at, dialect).label("at_j"),
            julian(base.c.ref_at, dialect).label("ref_j"),
        )
        .select_from(EVENTS.join(base, base.c.key == EVENTS.c.ledger_id))
        .where(EVENTS.c.type.in_(OUTCOME_EVENTS))
    )
    result = conn.execute(q)
    ev = pd.DataFrame(result.fetchall(), columns=list(map(str, result.keys())))
    cols = ["responded", "converted", "revenue", "unsubscribed"]
    if ev.empty:
        return pd.DataFrame(columns=cols, dtype=float)
    delta = ev["at_j"].astype(float) - ev["ref_j"].astype(float)
    ev = ev[(delta >= 0) & (delta < window_days)]
    human_open = ev["type"].eq("opened") & ~ev["machine"].astype(bool)
    ev = ev.assign(
        responded=(ev["type"].isin(("clicked", *PURCHASE_EVENTS)) | human_open).astype(int),
        converted=ev["type"].isin(PURCHASE_EVENTS).astype(int),
        revenue=np.where(
            ev["type"].isin(PURCHASE_EVENTS), ev["revenue_cents"].fillna(0).astype(float) / 100, 0.0
        ),
        unsubscribed=(ev["type"] == "unsubscribed").astype(int),
    )
    agg = ev.groupby("ledger_id").agg(
        responded=("responded", "max"),
        converted=("converted", "max"),
        revenue=("revenue", "sum"),
        unsubscribed=("unsubscribed", "max"),
    )
    return agg


# --------------------------------------------------------------------------
# Churn snapshots: order history alone, so churn works before any campaign ran
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    cutoff: datetime
    horizon_days: int


def churn_snapshots(until: datetime, horizon_days: int, count: int, step_days: int) -> list[Snapshot]:
    """Cut-off dates, newest first, each with its whole horizon before ``until`` (no unknown labels)."""
    last = until - timedelta(days=horizon_days)
    return [Snapshot(last - timedelta(days=i * step_days), horizon_days) for i in range(count)]


def churn_rows(conn: Connection, snap: Snapshot, history: OrderHistory | None = None) -> pd.DataFrame:
    """Customers with an order before the cut-off: features then, and churned = no order in the horizon."""
    history = history or order_history(conn)
    dialect = conn.dialect.name
    customers = frame(
        conn,
        select(
            CUSTOMER.c.id.label("key"),
            CUSTOMER.c.id.label("customer_id"),
            cast(julian(CUSTOMER.c.signup_date, dialect), Float).label("signup_j"),
        )
        .where(CUSTOMER.c.erased_at.is_(None))
        .order_by(CUSTOMER.c.id),
    )
    cutoff_j = julian_of(conn, snap.cutoff)
    end_j = julian_of(conn, snap.cutoff + timedelta(days=snap.horizon_days))
    ids = customers["customer_id"]
    before = as_of(history, ids, [cutoff_j] * len(ids))
    by_end = as_of(history, ids, [end_j] * len(ids))
    df = pd_concat(customers.assign(ref_j=cutoff_j), before)
    df["bought_after"] = (by_end["n_orders"].to_numpy() > before["n_orders"].to_numpy()).astype(int)
    df = derive(df[df["n_orders"] > 0].reset_index(drop=True))
    df["churned"] = 1 - df.pop("bought_after")
    df["cutoff"] = snap.cutoff
    return df


# --------------------------------------------------------------------------
# Scoring: everyone now, in id ranges
# --------------------------------------------------------------------------


def customer_batches(conn: Connection, batch_size: int) -> Iterator[tuple[int, int]]:
    """Inclusive customer id ranges of about ``batch_size`` customers (not erased), in id order."""
    ids = select(CUSTOMER.c.id).where(CUSTOMER.c.erased_at.is_(None)).order_by(CUSTOMER.c.id)
    bounds = conn.execute(
        select(func.min(CUSTOMER.c.id), func.max(CUSTOMER.c.id)).where(CUSTOMER.c.erased_at.is_(None))
    ).one()
    if bounds[0] is None:
        return
    lo = bounds[0]
    while lo is not None:
        hi = conn.execute(ids.where(CUSTOMER.c.id >= lo).offset(batch_size - 1).limit(1)).scalar()
        if hi is None:
            yield lo, bounds[1]
            return
        yield lo, hi
        lo = conn.execute(select(func.min(CUSTOMER.c.id)).where(CUSTOMER.c.id > hi)).scalar()


def current_rows(
    conn: Connection,
    now: datetime,
    lo: int | None = None,
    hi: int | None = None,
    history: OrderHistory | None = None,
) -> pd.DataFrame:
    """Features as of ``now`` for the customers (not erased), all of them or those with lo <= id <= hi.

    Why not :func:`features_at`: with ONE reference time for everybody, the as-of lookup is a plain
    aggregate of the orders strictly before it (:func:`aggregates_before`); building the running
    aggregates of every order and merging as of took most of the time of scoring 1M customers. The
    values are the same (counts and cents are integers; first/last are min/max of the same Julian
    days): identical frames in tests/test_learning*.py, identical scores on the 1M bench base
    (notes/7-learning.md). ``history`` (given) keeps the as-of path.
    """
    conds = [CUSTOMER.c.erased_at.is_(None)]
    if lo is not None and hi is not None:
        conds.append(CUSTOMER.c.id.between(lo, hi))
    base = (
        select(
            CUSTOMER.c.id.label("key"),
            CUSTOMER.c.id.label("customer_id"),
            literal(now, UTCDateTime()).label("ref_at"),
        )
        .where(*conds)
        .subquery("who")
    )
    if history is not None:
        return features_at(conn, base, history=history)
    import numpy as np
    import pandas as pd

    rows = _base_rows(conn, base)
    if rows.empty:
        return features_at(conn, base)  # the columns and dtypes of the general path
    ref_j = float(rows["ref_j"].iloc[0])  # the same literal for every row
    agg = aggregates_before(conn, ref_j, lo, hi).reindex(rows["customer_id"].to_numpy(np.int64))
    aggregates = pd.DataFrame(
        {
            "n_orders": agg["n_orders"].fillna(0).to_numpy(float),
            "total_cents": agg["total_cents"].fillna(0).to_numpy(float),
            "last_j": agg["last_j"].to_numpy(float),
            "first_j": agg["first_j"].to_numpy(float),
            "n_categories": agg["n_categories"].fillna(0).to_numpy(float),
        }
    )
    return derive(pd_concat(rows, aggregates))


def aggregates_before(conn: Connection, ref_j: float, lo: int | None = None, hi: int | None = None):
    """Per customer id with orders strictly before Julian day ``ref_j``: n_orders, total_cents, last_j,
    first_j, n_categories (distinct non-null categories), the definitions of :func:`order_history`."""
    import numpy as np

    dialect = conn.dialect.name
    q = select(
        ORDERS.c.customer_id,
        cast(julian(ORDERS.c.ordered_at, dialect), Float).label("t"),
        ORDERS.c.amount_cents,
        ORDERS.c.category,
    )
    if lo is not None and hi is not None:
        q = q.where(ORDERS.c.customer_id.between(lo, hi))
    df = frame(conn, q)
    df["customer_id"] = df["customer_id"].astype(np.int64)
    df["t"] = df["t"].astype(float)
    df["amount_cents"] = df["amount_cents"].fillna(0).astype(np.int64)
    df = df[df["t"] < ref_j]
    by = df.groupby("customer_id", sort=False)
    return by.agg(
        n_orders=("t", "size"),
        total_cents=("amount_cents", "sum"),
        last_j=("t", "max"),
        first_j=("t", "min"),
        n_categories=("category", "nunique"),
    )

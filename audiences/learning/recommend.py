"""Next best offer: item-to-item recommendations from co-purchases, into the ``recommendation`` table.

An item is the order's product, or its category when the product is unknown.
With X the customers x items matrix (1 if the customer bought the item, from
one SQL GROUP BY), co-occurrence is XᵀX and the similarity of two items is the
cosine ``co(i, j) / sqrt(n_i n_j)`` (pairs bought together by fewer than
``min_support`` customers are dropped as noise). A customer's score for an
item is the sum of its similarities to the items they bought; items already
bought are excluded, and the list is completed with the most popular items
when co-purchases give fewer than ``k``. scipy sparse matrices keep this to a
few seconds for a million customers (items are few: hundreds, not millions).

Templates get ``recommendations`` (a list of {item, score, rank}) from
:func:`recommendations_for`, which the send flow calls once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select

from core.models import Customer, Order, Recommendation, utcnow

ORDERS = Order.__table__
CUSTOMER = Customer.__table__
RECS = Recommendation.__table__
BATCH = 50_000
CHUNK = 20_000


@dataclass(frozen=True)
class RecommendResult:
    version: str
    customers: int
    rows: int
    items: int
    seconds: float


def purchases(conn: Connection) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(customer ids, item index, item names): one row per customer and item bought (not erased)."""
    item = func.coalesce(ORDERS.c.product, ORDERS.c.category)
    rows = conn.execute(
        select(ORDERS.c.customer_id, item.label("item"))
        .select_from(ORDERS.join(CUSTOMER, CUSTOMER.c.id == ORDERS.c.customer_id))
        .where(item.is_not(None), CUSTOMER.c.erased_at.is_(None))
        .group_by(ORDERS.c.customer_id, item)
    ).all()
    if not rows:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64), []
    cust = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    names, idx = np.unique(np.array([r[1] for r in rows], dtype=object), return_inverse=True)
    return cust, idx.astype(np.int64), [str(x) for x in names]


def similarity(x, min_support: int = 2) -> np.ndarray:
    """Item x item cosine similarity of co-purchases (dense: items are few), zero diagonal."""
    co = (x.T @ x).toarray().astype(float)
    counts = np.diag(co).copy()
    co[co < min_support] = 0.0
    norm = np.sqrt(np.outer(counts, counts))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(norm > 0, co / norm, 0.0)
    np.fill_diagonal(sim, 0.0)
    return sim


def top_items(
    scores: np.ndarray, bought: np.ndarray, popularity: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best items not bought (co-purchase score, then popularity): (indices, scores)."""
    k = min(k, scores.shape[1])
    # popularity breaks ties and fills rows without co-purchase signal (tiny weight, below any real score)
    ranked = scores + 1e-9 * popularity / max(popularity.max(), 1.0)
    ranked[bought] = -np.inf
    part = np.argpartition(-ranked, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-ranked, part, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return best, np.take_along_axis(scores, best, axis=1)


def recommend(
    engine: Engine | None = None, *, k: int | None = None, min_support: int = 2, version: str | None = None
) -> RecommendResult:
    """Recompute every customer's recommendations (replacing the previous ones in one transaction)."""
    from scipy import sparse

    from core.db import get_engine
    from core.settings import get_settings

    engine = engine or get_engine()
    k = k or get_settings().recommendations_per_customer
    version = version or utcnow().strftime("%Y%m%dT%H%M%SZ")
    t0 = time.perf_counter()
    with engine.connect() as conn:
        cust, item, names = purchases(conn)
    customers = np.unique(cust)
    rows = np.searchsorted(customers, cust)
    x = sparse.csr_matrix((np.ones(len(cust)), (rows, item)), shape=(len(customers), len(names)))
    sim = similarity(x, min_support) if len(names) else np.zeros((0, 0))
    popularity = np.asarray(x.sum(axis=0)).ravel()
    written = 0
    with engine.begin() as conn:
        conn.execute(delete(RECS))
        for lo in range(0, len(customers), BATCH):
            xb = x[lo : lo + BATCH]
            bought = xb.toarray() > 0
            best, score = top_items(np.asarray(xb @ sim), bought, popularity, k)
            out = [
                {
                    "customer_id": int(customers[lo + r]),
                    "rank": rank + 1,
                    "item": names[best[r, rank]],
                    "score": round(float(score[r, rank]), 6),
                    "model_version": version,
                }
                for r in range(best.shape[0])
                for rank in range(best.shape[1])
                if not bought[r, best[r, rank]]
            ]
            for i in range(0, len(out), CHUNK):
                conn.execute(insert(RECS), out[i : i + CHUNK])
            written += len(out)
    return RecommendResult(version, len(customers), written, len(names), time.perf_counter() - t0)


def recommendations_for(conn: Connection, customer_ids: Iterable[int]) -> dict[int, list[dict]]:
    """customer id -> [{item, score, rank}, ...] by rank, for one batch of messages (one query)."""
    ids = list(customer_ids)
    out: dict[int, list[dict]] = {cid: [] for cid in ids}
    if not ids:
        return out
    rows = conn.execute(
        select(RECS.c.customer_id, RECS.c.rank, RECS.c.item, RECS.c.score)
        .where(RECS.c.customer_id.in_(ids))
        .order_by(RECS.c.customer_id, RECS.c.rank)
    )
    for cid, rank, item, score in rows:
        out[cid].append({"item": item, "score": score, "rank": rank})
    return out

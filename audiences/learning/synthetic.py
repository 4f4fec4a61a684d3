"""Synthetic history with KNOWN planted effects, for tests and bench/train.py (never for real use).

Customers order as a Poisson process until they silently stop (churn is then
readable from recency and frequency); past campaign runs send a message to a
random share of the base with a control group, and outcomes follow rules
planted on the features AT SEND TIME:

- response (human click) is likely for recent buyers (last order < 60 days);
  SMS works for rare buyers (< 3 orders), e-mail for frequent ones (>= 5): the
  best channel depends on the customer;
- conversion is likely for recent buyers whether they get a message or not
  ("sure things"), and the message adds conversions only for lapsing buyers
  (last order 60-180 days ago): the "persuadables" that uplift must find and a
  plain response model misses.

Products come in taste clusters (customers mostly buy within one), so
co-purchase recommendations have something to find. Rows are written with
SQLAlchemy Core multi-row inserts in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, insert

from core.models import CampaignRun, Consent, Customer, Event, LedgerEntry, Order

CATEGORIES = ("shoes", "bags", "shirts", "dresses", "beauty", "home")
CLUSTERS = 4
PRODUCTS_PER_CLUSTER = 6
CHUNK = 20_000


def product_names() -> list[str]:
    return [f"p{c}-{k}" for c in range(CLUSTERS) for k in range(PRODUCTS_PER_CLUSTER)]


@dataclass
class Truth:
    """What was planted, per run, for the tests to compare with."""

    customer_ids: np.ndarray
    runs: list[dict] = field(default_factory=list)


def response_probability(recency: np.ndarray, frequency: np.ndarray, channel: np.ndarray) -> np.ndarray:
    p = 0.03 + 0.30 * (recency < 60)
    p = p + np.where(channel == "sms", 0.25 * (frequency < 3), 0.0)
    p = p + np.where(channel == "email", 0.25 * (frequency >= 5), 0.0)
    return np.clip(p, 0, 1)


def conversion_probability(recency: np.ndarray, treated: np.ndarray) -> np.ndarray:
    sure = 0.40 * (recency < 60)
    persuadable = 0.25 * ((recency >= 60) & (recency < 180)) * treated
    return 0.02 + sure + persuadable


def _chunks(engine: Engine, table, rows: list[dict]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(rows), CHUNK):
            conn.execute(insert(table), rows[i : i + CHUNK])


def generate(
    engine: Engine,
    customers: int,
    *,
    now: datetime,
    seed: int = 0,
    run_days_ago: tuple[int, ...] = (75, 50, 25),
    share_per_run: float = 0.6,
    control_percent: float = 30.0,
    history_days: int = 730,
) -> Truth:
    """Write customers, orders, consents, campaign runs, ledger rows and events; return the truth."""
    rng = np.random.default_rng(seed)
    n = customers
    with engine.begin() as conn:
        first_id = (conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM customer").scalar() or 0) + 1
    ids = np.arange(first_id, first_id + n)
    start = now - timedelta(days=history_days)
    signup_days = rng.uniform(0, history_days * 0.6, n)  # days after `start`
    rate = rng.gamma(1.3, 2.5, n)  # orders per year while active
    stop_days = signup_days + rng.exponential(history_days * 0.8, n)
    _chunks(
        engine,
        Customer.__table__,
        [
            {
                "id": int(cid),
                "external_id": f"syn-{seed}-{cid}",
                "email": f"c{cid}@example.test",
                "phone": f"+3361{cid:07d}"[:12],
                "signup_date": (start + timedelta(days=float(sd))).date(),
                "preferred_channel": "email",
                "created_at": now,
                "updated_at": now,
            }
            for cid, sd in zip(ids.tolist(), signup_days.tolist(), strict=True)
        ],
    )
    _chunks(
        engine,
        Consent.__table__,
        [
            {
                "customer_id": int(c),
                "channel": ch,
                "status": "granted",
                "updated_at": now,
                "source": "synthetic",
            }
            for c in ids.tolist()
            for ch in ("email", "sms")
        ],
    )
    # Orders: Poisson process on [signup, min(stop, now)]
    active = np.clip(np.minimum(stop_days, history_days) - signup_days, 0, None)
    counts = rng.poisson(rate * active / 365.0)
    owner = np.repeat(np.arange(n), counts)
    at_days = signup_days[owner] + rng.uniform(0, 1, len(owner)) * active[owner]
    cluster = rng.integers(0, CLUSTERS, n)
    own_cluster = rng.uniform(0, 1, len(owner)) < 0.85
    ocluster = np.where(own_cluster, cluster[owner], rng.integers(0, CLUSTERS, len(owner)))
    product_idx = ocluster * PRODUCTS_PER_CLUSTER + rng.integers(0, PRODUCTS_PER_CLUSTER, len(owner))
    names = product_names()
    amounts = np.round(rng.lognormal(3.6, 0.5, len(owner)) * 100).astype(int)
    order_at = [start + timedelta(days=float(d)) for d in at_days.tolist()]
    _chunks(
        engine,
        Order.__table__,
        [
            {
                "external_id": f"syn-{seed}-o{k}",
                "customer_id": int(ids[o]),
                "ordered_at": at,
                "amount_cents": int(a),
                "category": CATEGORIES[p % len(CATEGORIES)],
                "product": names[p],
            }
            for k, (o, at, a, p) in enumerate(
                zip(owner.tolist(), order_at, amounts.tolist(), product_idx.tolist(), strict=True)
            )
        ],
    )
    truth = Truth(ids)
    for r, days_ago in enumerate(run_days_ago):
        truth.runs.append(
            _run(
                engine,
                rng,
                r,
                now - timedelta(days=days_ago),
                ids,
                owner,
                at_days,
                start,
                share_per_run,
                control_percent,
                seed,
            )
        )
    return truth


def _features_at(
    when_days: float, n: int, owner: np.ndarray, at_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Recency (days, inf without orders) and frequency of every customer before ``when_days``."""
    before = at_days < when_days
    freq = np.bincount(owner[before], minlength=n)
    last = np.full(n, -np.inf)
    np.maximum.at(last, owner[before], at_days[before])
    return when_days - last, freq


def _run(engine, rng, r, sent_at, ids, owner, at_days, start, share, control_percent, seed) -> dict:
    n = len(ids)
    recency, freq = _features_at((sent_at - start).total_seconds() / 86400, n, owner, at_days)
    chosen = np.flatnonzero(rng.uniform(0, 1, n) < share)
    control = rng.uniform(0, 1, len(chosen)) < control_percent / 100
    channel = np.where(rng.uniform(0, 1, len(chosen)) < 0.5, "email", "sms")
    rec, fr = recency[chosen], freq[chosen]
    responded = (rng.uniform(0, 1, len(chosen)) < response_probability(rec, fr, channel)) & ~control
    converted = rng.uniform(0, 1, len(chosen)) < conversion_probability(rec, ~control)
    name = f"synthetic-{r}"
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(CampaignRun.__table__).values(
                key=f"{name}:{seed}:{sent_at:%Y-%m-%d}",
                campaign=name,
                status="completed",
                created_at=sent_at,
                started_at=sent_at,
                finished_at=sent_at + timedelta(hours=1),
            )
        ).inserted_primary_key[0]
        first_ledger = (conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM ledger").scalar() or 0) + 1
    ledger_ids = np.arange(first_ledger, first_ledger + len(chosen))
    status = np.where(
        control, "held_out", np.where(converted, "converted", np.where(responded, "clicked", "sent"))
    )
    _chunks(
        engine,
        LedgerEntry.__table__,
        [
            {
                "id": int(lid),
                "run_id": run_id,
                "campaign": name,
                "customer_id": int(ids[c]),
                "channel": ch,
                "in_control": bool(ctl),
                "status": st,
                "created_at": sent_at,
                "updated_at": sent_at,
                "sent_at": None if ctl else sent_at,
                "variant": "default",
            }
            for lid, c, ch, ctl, st in zip(
                ledger_ids.tolist(),
                chosen.tolist(),
                channel.tolist(),
                control.tolist(),
                status.tolist(),
                strict=True,
            )
        ],
    )
    events: list[dict] = []
    for k in np.flatnonzero(responded).tolist():
        events.append(_event(ledger_ids[k], ids[chosen[k]], run_id, "clicked", sent_at + timedelta(hours=20)))
    for k in np.flatnonzero(converted).tolist():
        events.append(
            _event(
                ledger_ids[k],
                ids[chosen[k]],
                run_id,
                "converted",
                sent_at + timedelta(days=2),
                revenue=4500,
                subtype="control" if control[k] else None,
            )
        )
    _chunks(engine, Event.__table__, events)
    return {
        "run_id": run_id,
        "sent_at": sent_at,
        "customer_ids": ids[chosen],
        "control": control,
        "channel": channel,
        "recency": rec,
        "frequency": fr,
        "responded": responded,
        "converted": converted,
    }


def _event(ledger_id, customer_id, run_id, kind, at, revenue=None, subtype=None) -> dict:
    return {
        "ledger_id": int(ledger_id),
        "customer_id": int(customer_id),
        "run_id": int(run_id),
        "type": kind,
        "subtype": subtype,
        "provider": "synthetic",
        "provider_event_id": f"{kind}-{ledger_id}",
        "occurred_at": at,
        "received_at": at,
        "machine": False,
        "revenue_cents": revenue,
    }

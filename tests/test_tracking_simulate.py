"""simulate_responses drives the endpoints in process (ASGI) and leaves a plausible, consistent trail."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core.models import Event, LedgerEntry
from tests.test_tracking_support import seed
from tracking.simulate import Rates, _buyers, simulate_responses


def test_simulated_responses_go_through_the_endpoints(sqlite_engine):
    sent = datetime.now(UTC) - timedelta(minutes=1)
    email = seed(sqlite_engine, n=120, control=tuple(range(100, 120)), sent_at=sent)
    seed(sqlite_engine, n=0)  # another run: untouched
    counts = simulate_responses(email.run_id, None, seed=7, engine=sqlite_engine)
    with sqlite_engine.connect() as conn:
        e, ledger = Event.__table__, LedgerEntry.__table__
        types = Counter(dict(conn.execute(select(e.c.type, func.count()).group_by(e.c.type)).all()))
        statuses = Counter(
            dict(conn.execute(select(ledger.c.status, func.count()).group_by(ledger.c.status)).all())
        )
    assert types["processed"] == 100 == counts["sendgrid_events"] - types["bounced"] - types["delivered"]
    assert types["delivered"] > 85 and types["opened"] > 20 and types["clicked"] > 3
    # purchases are posted to the conversions API; treated buyers come through the message (a click, the
    # default attribution rule), so each one and each control-group purchase is a `converted` event
    assert types["converted"] == counts.get("purchases", 0) + counts.get("control_purchases", 0) >= 1
    assert statuses["held_out"] == 20 and statuses["sent"] == 0
    assert counts["sendgrid_batches"] >= 2


def test_sms_rows_get_callbacks_and_replies(sqlite_engine):
    world = seed(sqlite_engine, n=60, channel="sms", sent_at=datetime.now(UTC) - timedelta(minutes=1))
    counts = simulate_responses(world.run_id, None, seed=3, engine=sqlite_engine)
    with sqlite_engine.connect() as conn:
        ledger = LedgerEntry.__table__
        statuses = Counter(
            dict(conn.execute(select(ledger.c.status, func.count()).group_by(ledger.c.status)).all())
        )
    assert counts["twilio_callbacks"] == 120
    assert statuses["sent"] == 0 and statuses["delivered"] + statuses["clicked"] + statuses["converted"] > 40


def test_purchases_draw_the_same_baseline_for_treated_and_control_and_the_lift_only_where_it_arrived():
    """The world of the simulation (tracking/simulate.py's doc), on 60,000 customers without HTTP."""
    import random
    from types import SimpleNamespace

    n = 20_000
    rows = [
        SimpleNamespace(id=i, customer_id=i, in_control=i < n, status="held_out" if i < n else "sent")
        for i in range(3 * n)
    ]
    arrived = set(range(n, 2 * n))  # the third n: treated, message bounced or failed
    buyers, via_link = _buyers(rows, arrived, random.Random(5), Rates(organic=0.05, lift=0.06))
    tags = {r.id: tag for r, tag in buyers}

    def share(lo: int, hi: int) -> float:
        return sum(lo <= i < hi for i in tags) / n

    assert abs(share(0, n) - 0.05) < 0.008  # control: organic only
    assert abs(share(n, 2 * n) - 0.11) < 0.01  # reached: organic + lift, all through the link
    assert abs(share(2 * n, 3 * n) - 0.05) < 0.008  # treated but not reached: organic only
    assert via_link == {i for i in tags if n <= i < 2 * n}
    assert {tags[i] for i in tags if i < n} == {"control_purchases"}
    assert {tags[i] for i in tags if i >= 2 * n} == {"other_purchases"}

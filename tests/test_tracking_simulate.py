"""simulate_responses drives the endpoints in process (ASGI) and leaves a plausible, consistent trail."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from relance.models import Event, LedgerEntry
from tests.test_tracking_support import seed
from tracking.simulate import simulate_responses


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
    # purchases are posted to the conversions API; only those after a click (the default rule) or by
    # control-group customers become `converted` events
    assert 1 <= types["converted"] <= counts.get("purchases", 0) + counts.get("control_purchases", 0)
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

"""Purchases posted to the conversions API (events only, no `orders` row) end a journey and count once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert

from core.models import Event, Order
from journeys.tick import run_journey, tick
from reporting.journey_report import build_journey_report
from tests.journey_support import SMS_FIRST, at, entries, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs


def test_api_purchases_exit_the_journey_and_count_once_in_the_report(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 40)
    seed_features(engine, ids)
    jf = write_journey(tmp_path, SMS_FIRST, control=30)
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    state = entries(engine)
    treated = sorted(c for c, e in state.items() if not e["in_control"])
    control = sorted(c for c, e in state.items() if e["in_control"])
    bought_at = start + timedelta(hours=6)
    by_api, imported, held_out = treated[0], treated[1], control[0]
    with engine.begin() as conn:
        conn.execute(  # the conversions API: an attributed event only
            insert(Event.__table__),
            [
                {"customer_id": by_api, "type": "converted", "provider": "orders", "provider_event_id": "A1",
                 "occurred_at": bought_at, "revenue_cents": 5000},
                {"customer_id": held_out, "type": "purchased", "provider": "orders",
                 "provider_event_id": "A2:control:1", "occurred_at": bought_at, "revenue_cents": 3000},
                {"customer_id": imported, "type": "converted", "provider": "orders",
                 "provider_event_id": "B1", "occurred_at": bought_at, "revenue_cents": 2000},
            ],
        )  # fmt: skip
        conn.execute(  # the same order B1 imported as well: one purchase, not two
            insert(Order.__table__).values(
                external_id="B1", customer_id=imported, ordered_at=bought_at, amount_cents=2000
            )
        )
    tick(engine, [jf], start + timedelta(days=1))
    state = entries(engine)
    assert {c for c, e in state.items() if e["exit_reason"] == "converted"} == {by_api, imported}

    with engine.connect() as conn:
        report = build_journey_report(conn, "relance-panier", window_days=7, now=start + timedelta(days=2))
    assert report.treated_revenue_cents == 7000 and report.control_revenue_cents == 3000
    assert report.uplift.treated_conversions == 2 and report.uplift.control_conversions == 1
    assert report.uplift.treated_n == len(treated) and report.uplift.control_n == len(control)

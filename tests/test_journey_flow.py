"""Journeys through the real Prefect engine: a scheduled occurrence enters and sends, then ticks follow."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.journey_support import at, entries, history_counts, messages, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import outbox_ledger_ids, seed_features, use_tmp_dirs


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_run_campaign_enters_a_journey_and_advance_journeys_ticks_it(
    prefect_harness, sqlite_engine, tmp_path, monkeypatch
):
    from flows.advance_journeys import advance_journeys
    from flows.run_campaign import run_campaign

    use_tmp_dirs(monkeypatch, tmp_path, batch_size="4")
    ids = seed_customers(sqlite_engine, 12, phone_every=1)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path, control=0)
    monday = at("2026-11-23 10:00")

    summary = run_campaign(jf.path, now=monday.isoformat())
    assert summary["entered"] == 12 and summary["moves"] == {"relance-panier": 12}  # sent (into the wait)
    assert len(outbox_ledger_ids(tmp_path / "outbox")) == 12 == summary["sent"]["sent"]

    nothing = advance_journeys(now=(monday + timedelta(days=1)).isoformat())
    assert nothing["journeys"] == 1 and nothing["moves"] == {} and nothing["sent"] == {}

    later = advance_journeys(now=(monday + timedelta(days=3)).isoformat())
    assert later["moves"] == {"relance-panier": 12 * 4}  # waited, branch, SMS sent, exit
    assert later["sent"] == {"sent": 12}
    assert len(messages(sqlite_engine, "sms-reminder")) == 12
    assert {e["exit_reason"] for e in entries(sqlite_engine).values()} == {"reminded"}
    assert history_counts(sqlite_engine)[("opened", "else")] == 12
    assert len(outbox_ledger_ids(tmp_path / "outbox")) == 24

    from pathlib import Path

    from flows.report import refresh_reports

    refreshed = refresh_reports()  # the daily upkeep writes the journey's own report
    page = Path(refreshed["reports"]["relance-panier"]).read_text(encoding="utf-8")
    assert "sms-reminder" in page and "three-days" in page


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_scheduled_tick_run_keeps_ticking_for_triggered_journeys(
    prefect_harness, sqlite_engine, tmp_path, monkeypatch
):
    """An event arriving while the minute's run is going is sent within that run (every tick_seconds)."""
    import threading
    import time

    from sqlalchemy import insert

    from core.models import CustomerEvent, utcnow
    from flows.advance_journeys import advance_journeys
    from tests.test_journey_triggers import CART

    use_tmp_dirs(monkeypatch, tmp_path, journeys_tick_seconds="0.5", journeys_tick_period_seconds="4")
    ids = seed_customers(sqlite_engine, 2)
    seed_features(sqlite_engine, ids)
    write_journey(tmp_path, CART.replace("delay: 1h", "delay: 0m"), name="panier")

    def shop_sends_an_event() -> None:
        time.sleep(1.0)
        with sqlite_engine.begin() as conn:
            conn.execute(insert(CustomerEvent.__table__).values(
                event_id="late-1", type="cart_abandoned", customer_id=ids[0], occurred_at=utcnow(),
                properties={"cart_value": 75.0}, source="api",
            ))  # fmt: skip

    shop = threading.Thread(target=shop_sends_an_event)
    shop.start()
    started = time.monotonic()
    done = advance_journeys()  # as the deployment runs it: no `now`
    shop.join()
    assert time.monotonic() - started < 10
    assert done["sent"].get("sent") == 1 and messages(sqlite_engine, "reminder")[0]["customer_id"] == ids[0]

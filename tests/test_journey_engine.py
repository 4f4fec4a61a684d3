"""Journeys on a fake clock: each step kind, each exit, sends exactly once per (entry, step)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from journeys.tick import run_journey, tick
from tests.journey_support import LEDGER, at, entries, history_counts, messages, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs


def _base(engine, n=20, phone_every=1):
    ids = seed_customers(engine, n, phone_every=phone_every)
    seed_features(engine, ids)
    return ids


def test_three_step_journey_sends_waits_branches_and_exits(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    jf = write_journey(tmp_path)
    monday = at("2026-11-23 10:00")

    first = run_journey(engine, jf, monday)
    assert first.entered["relance-panier"] == 20
    sent = messages(engine, "offer-email")
    assert len(sent) == 20 and {m["channel"] for m in sent} == {"email"}
    assert {m["status"] for m in sent} == {"sent"}
    state = entries(engine)
    assert {e["step"] for e in state.values()} == {"three-days"}
    assert all(e["due_at"] == monday + timedelta(days=3) for e in state.values())

    assert tick(engine, [jf], monday + timedelta(days=1)).moves == 0  # nothing due yet
    opened = ids[:5]
    with engine.begin() as conn:  # five customers opened the e-mail
        conn.execute(update(LEDGER).where(LEDGER.c.customer_id.in_(opened)).values(status="opened"))

    later = tick(engine, [jf], monday + timedelta(days=3, minutes=1))
    state = entries(engine)
    assert {c for c, e in state.items() if e["exit_reason"] == "opened-the-offer"} == set(opened)
    assert {c for c, e in state.items() if e["exit_reason"] == "reminded"} == set(ids[5:])
    assert {e["status"] for e in state.values()} == {"completed"}
    sms = messages(engine, "sms-reminder")
    assert sorted(m["customer_id"] for m in sms) == sorted(ids[5:]) and {m["channel"] for m in sms} == {"sms"}
    assert later.sent["sent"] == 15
    counts = history_counts(engine)
    assert counts[("opened", "then")] == 5 and counts[("opened", "else")] == 15
    assert counts[("offer-email", "sent")] == 20 and counts[("three-days", "waited")] == 20

    again = tick(engine, [jf], monday + timedelta(days=3, minutes=2))  # nothing twice
    assert again.moves == 0 and len(messages(engine)) == 35

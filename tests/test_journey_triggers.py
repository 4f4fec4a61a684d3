"""Triggered journeys on a fake clock: an event enters (once), the delay holds, an event exits."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from core.models import CustomerEvent
from journeys.tick import tick
from tests.journey_support import ENTRY, at, entries, history_counts, messages, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs

EVENTS = CustomerEvent.__table__

CART = """\
name: {name}
control_group:
  percent: {control}
offer:
  code: MERCI10
entry:
  event: cart_abandoned
  where: {{cart_value: {{gte: 50}}}}
  delay: 1h
exit_when:
  event: order_placed
{extra}
steps:
  - name: reminder
    send: {{message: t/hello, channels: {{order: [email]}}}}
  - name: next-day
    wait: {{days: 1}}
  - name: last-call
    send: {{message: t/hello, channels: {{order: [sms]}}}}
"""


def _event(event_id: str, customer: int, kind: str, when, **properties) -> dict:
    return {"event_id": event_id, "type": kind, "customer_id": customer, "occurred_at": when,
            "properties": properties or None, "source": "api"}  # fmt: skip


def test_an_event_enters_after_its_delay_and_an_order_event_exits(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 4, phone_every=1)
    seed_features(engine, ids)
    jf = write_journey(tmp_path, CART, name="panier")
    t = at("2026-11-24 10:00")
    with engine.begin() as conn:
        conn.execute(
            insert(EVENTS),
            [
                _event("e1", ids[0], "cart_abandoned", t, cart_value=80.0),
                _event("e2", ids[1], "cart_abandoned", t, cart_value=30.0),  # below `where`
                _event("e3", ids[2], "cart_abandoned", t, cart_value=60.0),
                _event("v1", ids[3], "product_viewed", t, product="sac"),  # another type
            ],
        )
    first = tick(engine, [jf], t + timedelta(minutes=1))
    assert first.advanced["panier"].entered == 2 and messages(engine) == []  # the delay holds
    state = entries(engine, "panier")
    assert set(state) == {ids[0], ids[2]}
    assert {e["entry_key"] for e in state.values()} == {"event:e1", "event:e3"}
    assert {e["due_at"] for e in state.values()} == {t + timedelta(hours=1)}
    assert {e["entered_at"] for e in state.values()} == {t}

    tick(engine, [jf], t + timedelta(hours=1))
    assert sorted(m["customer_id"] for m in messages(engine, "reminder")) == [ids[0], ids[2]]
    with engine.begin() as conn:  # customer 3 orders before the last call
        conn.execute(insert(EVENTS), [_event("o3", ids[2], "order_placed", t + timedelta(hours=5))])
    tick(engine, [jf], t + timedelta(days=1, hours=1))
    state = entries(engine, "panier")
    assert state[ids[2]]["exit_reason"] == "event order_placed" and state[ids[2]]["status"] == "exited"
    assert [m["customer_id"] for m in messages(engine, "last-call")] == [ids[0]]
    assert history_counts(engine)[("last-call", "sent")] == 1


def test_the_same_event_never_enters_twice(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 3)
    seed_features(engine, ids)
    jf = write_journey(tmp_path, CART, name="panier", extra="reentry:\n  every_days: 1\n")
    t = at("2026-11-24 10:00")
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), [_event("e1", ids[0], "cart_abandoned", t, cart_value=99.0)])
    for minutes in (1, 2, 3):  # three ticks read the same event (the cursor lags by its look-back)
        tick(engine, [jf], t + timedelta(minutes=minutes))
    with engine.begin() as conn:  # a second cart the same hour: the customer is in the journey already
        conn.execute(insert(EVENTS), [_event("e2", ids[0], "cart_abandoned", t, cart_value=70.0)])
    tick(engine, [jf], t + timedelta(minutes=4))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ENTRY)).scalar_one() == 1


def test_plan_of_a_triggered_journey_expects_entries_from_the_last_30_days(
    engine, settings, tmp_path, monkeypatch
):
    from journeys.plan import plan_journey

    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 6)
    seed_features(engine, ids)
    jf = write_journey(tmp_path, CART, name="panier")
    t = at("2026-11-24 10:00")
    rows = [  # 12 matching events of 4 customers in 30 days; older, smaller and unknown ones do not count
        _event(f"m{i}", ids[i % 4], "cart_abandoned", t - timedelta(days=1 + i * 2), cart_value=55.0 + i)
        for i in range(12)
    ]
    rows += [
        _event("old", ids[4], "cart_abandoned", t - timedelta(days=40), cart_value=90.0),
        _event("small", ids[5], "cart_abandoned", t - timedelta(days=2), cart_value=10.0),
        _event("nobody", None, "cart_abandoned", t - timedelta(days=2), cart_value=90.0),
    ]
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), rows)
    plan = plan_journey(engine, jf.campaign, t)
    assert plan.triggered == {
        "event": "cart_abandoned", "days": 30, "events": 12, "customers": 4, "per_day": 0.4, "delay": "1h",
    }  # fmt: skip
    assert entries(engine, "panier") == {}  # the plan rolled back what the tick would enter now


def test_validate_names_an_unknown_entry_event_and_property(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_run_support import write_campaign

    write_campaign(tmp_path, name="unused")
    (tmp_path / "campaigns" / "unused.yaml").unlink()
    body = CART.format(name="panier", control=0, extra="").replace("cart_abandoned", "cart_abandonned")
    body = body.replace("exit_when:\n  event: order_placed", "exit_when:\n  event: order_place")
    path = tmp_path / "campaigns" / "panier.yaml"
    path.write_text(body, encoding="utf-8")
    relance = str(Path(sys.executable).parent / "relance")
    env = {"RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_DATABASE_URL": "sqlite:///" + str(
        tmp_path / "none.db"), "PATH": str(Path(sys.executable).parent)}  # fmt: skip
    done = subprocess.run(
        [relance, "validate", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode != 0
    unknown = "`event: cart_abandonned` is not a known event type; did you mean `cart_abandoned`?"
    assert f"{path}:7:10: {unknown}" in done.stdout, done.stdout
    unknown = "`event: order_place` is not a known event type; did you mean `order_placed`?"
    assert f"{path}:11:10: {unknown}" in done.stdout, done.stdout

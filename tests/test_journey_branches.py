"""Branches on each response to an earlier step, read from what tracking stored (ledger statuses, events)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from core.models import Event
from journeys.tick import run_journey, tick
from tests.journey_support import LEDGER, at, entries, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs

BRANCH = """\
name: {name}
control_group:
  percent: {control}
offer:
  code: MERCI10
{extra}
steps:
  - name: mail
    send: {{message: t/hello, channels: {{order: [email]}}}}
  - name: two-days
    wait: {{days: 2}}
  - name: test
    branch:
      if: {{step: mail, response: RESPONSE WITHIN}}
      then: yes
      else: no
  - name: yes
    exit: yes
  - name: no
    exit: no
"""

# response -> (ledger status of customers 1-2, event type of customer 3, expected "yes" customers)
CASES = {
    "delivered": ("delivered", "delivered", {1, 2, 3}),
    "opened": ("opened", "opened", {1, 2, 3}),
    "clicked": ("clicked", "clicked", {1, 2, 3}),
    "converted": ("converted", "converted", {1, 2, 3}),
    "bounced": ("bounced", "bounced", {1, 2, 3}),
    "unsubscribed": ("delivered", "unsubscribed", {3}),
    "no_response": ("opened", "opened", {4, 5, 6}),
}


def _journey(tmp_path, response: str, within: str = ""):
    body = BRANCH.replace("RESPONSE", response).replace(" WITHIN", within)
    # purchases would end the journey before the branch (exit_when's default): off, to test the branch
    return write_journey(tmp_path, body, name="responses", extra="exit_when:\n  converted: false\n")


def _respond(engine, sent, status: str, event: str, ids: list[int], at_time) -> None:
    by_customer = {m["customer_id"]: m for m in sent}
    with engine.begin() as conn:
        conn.execute(
            update(LEDGER)
            .where(LEDGER.c.customer_id.in_(ids[:2]), LEDGER.c.step == "mail")
            .values(status=status)
        )
        ledger_row = by_customer[ids[2]]
        if event in ("delivered", "opened", "clicked", "converted", "bounced"):
            conn.execute(update(LEDGER).where(LEDGER.c.id == ledger_row["id"]).values(status=event))
        conn.execute(
            insert(Event.__table__).values(
                ledger_id=ledger_row["id"], customer_id=ids[2], run_id=ledger_row["run_id"], type=event,
                provider="test", provider_event_id=f"e-{ids[2]}", occurred_at=at_time,
            )
        )  # fmt: skip


@pytest.mark.parametrize("response", sorted(CASES))
def test_branch_on_each_response(response, sqlite_engine, settings, tmp_path, monkeypatch):
    engine = sqlite_engine
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 6)
    seed_features(engine, ids)
    jf = _journey(tmp_path, response)
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    with engine.connect() as conn:
        sent = [dict(r) for r in conn.execute(select(LEDGER)).mappings()]
    status, event, yes = CASES[response]
    _respond(engine, sent, status, event, ids, start + timedelta(hours=3))
    tick(engine, [jf], start + timedelta(days=2))
    state = entries(engine, "responses")
    got = {ids.index(c) + 1 for c, e in state.items() if e["exit_reason"] == "yes"}
    assert got == yes
    assert {e["exit_reason"] for e in state.values()} <= {"yes", "no"} and len(state) == 6


def test_no_response_within_hours_counts_only_responses_in_time(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(engine, 4)
    seed_features(engine, ids)
    jf = _journey(tmp_path, "no_response", ", within_hours: 24")
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    with engine.connect() as conn:
        sent = {r.customer_id: r for r in conn.execute(select(LEDGER))}
    with engine.begin() as conn:  # customer 1 opened after 2 h, customer 2 after 30 h
        for n, (cid, hours) in enumerate(((ids[0], 2), (ids[1], 30))):
            row = sent[cid]
            conn.execute(
                insert(Event.__table__).values(
                    ledger_id=row.id, customer_id=cid, run_id=row.run_id, type="opened", provider="test",
                    provider_event_id=f"o{n}", occurred_at=row.sent_at + timedelta(hours=hours),
                )
            )  # fmt: skip
    tick(engine, [jf], start + timedelta(days=2))
    state = entries(engine, "responses")
    assert {c for c, e in state.items() if e["exit_reason"] == "yes"} == {ids[1], ids[2], ids[3]}
    assert state[ids[0]]["exit_reason"] == "no"

"""Outcomes committed as they come back, and unknown outcomes settled by evidence.

- a batch through the SendGrid provider never holds more rows in ``sending`` than the provider's
  concurrency, and outcomes are committed while the batch is still in flight;
- the outbox settles the rows a crash left unknown from its own files;
- SendGrid / Twilio events settle unknown rows to what they prove;
- ``--resend-unknown`` requeues only the rows still unknown and says how many.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import func, select

from channels.outbox import append_lines
from core.models import LedgerEntry
from delivery import claims, ledger, reconcile, runs, send
from tests.test_ledger_support import seed_customers
from tests.test_run_support import outbox_ledger_ids, seed_features, use_tmp_dirs, write_campaign
from tests.test_tracking_support import seed, sg_event
from tracking.events import store_events
from tracking.sendgrid_events import normalize
from tracking.twilio_events import status_event

L = LedgerEntry.__table__
NOW = "2026-11-24T10:00:00+01:00"


def _prepare(engine, tmp_path, monkeypatch, n=30, batch_size="10", **env):
    use_tmp_dirs(monkeypatch, tmp_path, batch_size=batch_size, **env)
    ids = seed_customers(engine, n)
    seed_features(engine, ids)
    path = write_campaign(tmp_path, control=0)
    run = runs.prepare_run(engine, str(path), "relaunch:r", ledger.run_datetime(NOW))
    return run, path


def _crash_in_flight(engine, run_id: int, batch: int, provider: str) -> list[int]:
    """What a kill -9 leaves: the batch claimed by a dead worker, its rows `sending` with their provider."""
    with engine.begin() as conn:
        assert claims.claim_batch(conn, run_id, "far-host:4242:dead", batch) == batch
        conn.execute(
            L.update()
            .where(L.c.run_id == run_id, L.c.batch == batch)
            .values(status="sending", attempts=1, provider=provider)
        )
        return list(conn.execute(select(L.c.id).where(L.c.batch == batch).order_by(L.c.id)).scalars())


def _rows(engine, ids=None):
    with engine.connect() as conn:
        stmt = select(L).order_by(L.c.id)
        if ids is not None:
            stmt = stmt.where(L.c.id.in_(ids))
        return {r.id: r for r in conn.execute(stmt).all()}


def test_sendgrid_batch_keeps_sending_within_concurrency_and_commits_as_it_goes(
    engine, sendgrid_env, tmp_path, monkeypatch
):
    sendgrid_env.latency = 0.03
    run, _ = _prepare(engine, tmp_path, monkeypatch, n=60, batch_size="60", sendgrid_concurrency="8")
    ctx = runs.make_context(run)
    seen: list[tuple[int, int]] = []  # (sending, sent) sampled while the batch runs
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with engine.connect() as conn:
                seen.append(
                    conn.execute(
                        select(
                            func.count().filter(L.c.status == "sending"),
                            func.count().filter(L.c.status == "sent"),
                        )
                    ).one()
                )
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with engine.begin() as conn:
            batch = claims.claim_batch(conn, run.run_id, ctx.worker)
        outcome = send.process_batch(engine, ctx, batch)
    finally:
        done.set()
        sampler.join()
    assert {k: n for k, n in outcome.counts.items() if n} == {"sent": 60}
    assert sendgrid_env.max_in_flight <= 8
    assert max(s for s, _ in seen) <= 8, "more rows in `sending` than requests the provider holds"
    assert any(s and 0 < d < 60 for s, d in seen), "outcomes were not committed while the batch ran"
    rows = _rows(engine).values()
    assert all(r.status == "sent" and r.provider == "sendgrid" and r.provider_message_id for r in rows)


def test_outbox_settles_what_a_crash_left_in_flight_from_its_own_file(engine, tmp_path, monkeypatch):
    run, path = _prepare(engine, tmp_path, monkeypatch, claim_timeout_seconds="0")
    in_flight = _crash_in_flight(engine, run.run_id, 1, "outbox")
    written = in_flight[:4]  # the dead worker's append reached the outbox for these four only
    outbox = tmp_path / "outbox"
    append_lines(
        outbox / "email.jsonl",
        [json.dumps({"ledger_id": i, "run_id": run.run_id, "customer_id": 0}) for i in written],
    )

    summary = runs.run_direct(engine, str(path), "relaunch:r", ledger.run_datetime(NOW))
    assert summary["totals"] == {"sent": 30} and summary["status"] == "completed"
    rows = _rows(engine, in_flight)
    assert all(rows[i].reason == "reconciled: found in the outbox after a crash" for i in written)
    assert all(rows[i].attempts == 1 and rows[i].sent_at for i in written)
    assert all(rows[i].attempts == 2 for i in in_flight[4:])  # never written: written now, once
    counted = [lid for lid, _ in outbox_ledger_ids(outbox)]
    assert sorted(counted) == sorted(set(counted)) and len(counted) == 30


def test_webhook_events_settle_unknown_rows_to_what_they_prove(engine):
    world = seed(engine, n=6)
    sms = seed(engine, n=1, channel="sms")
    ids = world.ledger_ids
    with engine.begin() as conn:
        conn.execute(
            L.update()
            .where(L.c.id.in_([*ids[:5], *sms.ledger_ids]))
            .values(status="unknown", reason=ledger.CRASH_REASON, sent_at=None)
        )
        conn.execute(L.update().where(L.c.id == ids[5]).values(status="sending", sent_at=None))
        events = [
            normalize(sg_event("processed", ids[0], sg_message_id="XMSGID0.filter0001.1")),
            normalize(sg_event("processed", ids[1])),
            normalize(sg_event("delivered", ids[1])),  # same row, higher rank: delivered wins
            normalize(sg_event("bounce", ids[2], type="bounce", reason="550 no such user")),
            normalize(sg_event("open", ids[3], sg_machine_open=True)),  # a machine open proves delivery
            normalize(sg_event("processed", ids[5])),  # still with its worker: left for it to record
            status_event({"MessageSid": "SM1", "MessageStatus": "sent"}, ledger_id=sms.ledger_ids[0]),
        ]
        store_events(conn, events)
    rows = _rows(engine)
    assert rows[ids[0]].status == "sent" and rows[ids[0]].provider_message_id == "XMSGID0"
    assert rows[ids[0]].reason == "reconciled: sendgrid processed event" and rows[ids[0]].sent_at
    assert rows[ids[1]].status == "delivered" and rows[ids[1]].reason.startswith("reconciled: sendgrid")
    assert rows[ids[2]].status == "bounced" and "550 no such user" in rows[ids[2]].reason
    assert rows[ids[3]].status == "delivered"
    assert rows[ids[4]].status == "unknown" and rows[ids[4]].reason == ledger.CRASH_REASON  # no evidence
    assert rows[ids[5]].status == "sending"
    twilio = rows[sms.ledger_ids[0]]
    assert twilio.status == "sent" and twilio.provider_message_id == "SM1"
    with engine.connect() as conn:
        assert reconcile.reconciled_count(conn, world.run_id) == 4


def test_resend_unknown_requeues_only_rows_still_unknown(engine, tmp_path, monkeypatch):
    run, path = _prepare(engine, tmp_path, monkeypatch, claim_timeout_seconds="0")
    in_flight = _crash_in_flight(engine, run.run_id, 2, "sendgrid")  # a provider that keeps no record
    first = runs.run_direct(engine, str(path), "relaunch:r", ledger.run_datetime(NOW))
    assert first["totals"] == {"sent": 20, "unknown": 10}
    with engine.begin() as conn:  # SendGrid's webhook says three of them were accepted
        store_events(conn, [normalize(sg_event("processed", i)) for i in in_flight[:3]])

    again = runs.prepare_run(engine, str(path), "relaunch:r", ledger.run_datetime(NOW), resend_unknown=True)
    assert again.requeued == 7 and again.reconciled == 3
    resent = runs.run_direct(engine, str(path), "relaunch:r", ledger.run_datetime(NOW))
    assert resent["totals"] == {"sent": 30}
    rows = _rows(engine, in_flight)
    assert all(rows[i].attempts == 1 for i in in_flight[:3])  # settled by evidence: not re-sent
    assert all(rows[i].attempts == 2 and rows[i].provider == "outbox" for i in in_flight[3:])
    counted = [lid for lid, _ in outbox_ledger_ids(tmp_path / "outbox")]
    assert sorted(set(counted) & set(in_flight)) == in_flight[3:]


def test_a_provider_that_cannot_be_built_marks_nothing_sending(engine, tmp_path, monkeypatch):
    from channels.registry import ProviderConfigError

    run, _ = _prepare(engine, tmp_path, monkeypatch, n=10)
    use_tmp_dirs(monkeypatch, tmp_path, email_provider="sendgrid")  # no RELANCE_SENDGRID_API_KEY
    ctx = runs.make_context(run)
    with engine.begin() as conn:
        batch = claims.claim_batch(conn, run.run_id, ctx.worker)
    with pytest.raises(ProviderConfigError, match="RELANCE_SENDGRID_API_KEY"):
        send.process_batch(engine, ctx, batch)
    assert {r.status for r in _rows(engine).values()} == {"planned"}  # never sent: not unknown

"""The ledger: runs keyed by occurrence, set-based recording, claims, forward-only outcomes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.models import CampaignRun, LedgerEntry, SendBatch, Status
from delivery import batch, claims, ledger
from tests.test_ledger_support import seed_customers, simple_selection

L = LedgerEntry.__table__
B = SendBatch.__table__


def _record(engine, key="t:2026-11-22", n=25, batch_size=10, control_every=10):
    seed_customers(engine, n)
    with engine.begin() as conn:
        run_id = ledger.start_run(conn, "t", key)
        inserted = ledger.record_selection(
            conn, run_id, "t", simple_selection(control_every), batch_size, funnel={"selected": n}
        )
    return run_id, inserted


def test_start_run_same_key_resumes_same_run(engine):
    with engine.begin() as conn:
        a = ledger.start_run(conn, "winback", "winback:2026-11-22")
        b = ledger.start_run(conn, "winback", "winback:2026-11-22")
        c = ledger.start_run(conn, "winback", "winback:2026-11-29")
    assert a == b != c
    with engine.begin() as conn, pytest.raises(ledger.RunError, match="belongs to campaign 'winback'"):
        ledger.start_run(conn, "other", "winback:2026-11-22")


def test_record_selection_numbers_batches_in_sql_and_holds_out_control(engine):
    run_id, inserted = _record(engine, n=25, batch_size=10, control_every=10)
    assert inserted == 25
    with engine.connect() as conn:
        rows = conn.execute(
            select(L.c.customer_id, L.c.batch, L.c.status, L.c.reason).order_by(L.c.customer_id)
        ).all()
        batches = conn.execute(select(B.c.batch, B.c.status).order_by(B.c.batch)).all()
        funnel = conn.execute(select(CampaignRun.__table__.c.funnel)).scalar_one()
    held = [r for r in rows if r.status == Status.held_out]
    assert [r.customer_id % 10 for r in held] == [0, 0] and all(r.batch == 0 for r in held)
    assert all(r.reason == ledger.CONTROL_REASON for r in held)
    planned = [r for r in rows if r.status == Status.planned]
    assert len(planned) == 23
    # 23 rows to send in batches of 10: 10 + 10 + 3, numbered from 1 in customer order
    assert [sum(1 for r in planned if r.batch == b) for b in (1, 2, 3)] == [10, 10, 3]
    assert [r.batch for r in planned] == sorted(r.batch for r in planned)
    assert batches == [(1, "pending"), (2, "pending"), (3, "pending")]
    assert json.loads(funnel) == {"selected": 25}


def test_resumed_run_records_nothing_twice(engine):
    run_id, _ = _record(engine)
    seed_customers(engine, 5, prefix="N")  # new customers after a crash are not added to a recorded run
    with engine.begin() as conn:
        again = ledger.start_run(conn, "t", "t:2026-11-22")
        assert again == run_id
        assert ledger.record_selection(conn, run_id, "t", simple_selection(10), 10) == 0
        assert conn.execute(select(func.count()).select_from(L)).scalar_one() == 25


def test_claims_are_exclusive_and_stale_claims_turn_sending_into_unknown(engine):
    run_id, _ = _record(engine, n=25, batch_size=10, control_every=10)
    alive, dead = claims.worker_id("a"), "elsewhere-host:1:x"
    with engine.begin() as conn:
        assert claims.claim_batch(conn, run_id, alive) == 1
        assert claims.claim_batch(conn, run_id, dead) == 2
        assert claims.claim_batch(conn, run_id, alive, batch=2) is None  # already claimed
        # the dead worker had marked its batch sending, then vanished
        conn.execute(L.update().where(L.c.batch == 2).values(status=Status.sending))
    with engine.begin() as conn:
        assert claims.reclaim_stale(conn, run_id, claim_timeout=3600) == []  # other host, claim is fresh
        assert claims.reclaim_stale(conn, run_id, claim_timeout=0) == [2]  # timed out: released
        statuses = dict(
            conn.execute(select(L.c.status, func.count()).where(L.c.batch == 2).group_by(L.c.status)).all()
        )
        reasons = set(conn.execute(select(L.c.reason).where(L.c.batch == 2)).scalars())
        assert statuses == {"unknown": 10} and reasons == {ledger.CRASH_REASON}
        assert claims.claim_batch(conn, run_id, alive) == 2
        # loading batch 2 now finds nothing to send: unknown rows are never re-sent
        assert batch.load_batch(conn, run_id, 2) == []
        assert [r.customer_id for r in batch.load_batch(conn, run_id, 1)][:3] == [1, 2, 3]


def test_dead_local_process_claim_is_reclaimed_at_once(engine):
    import subprocess
    import sys

    run_id, _ = _record(engine)
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = f"{claims.worker_id().split(':')[0]}:{proc.stdout.strip()}:x"
    with engine.begin() as conn:
        claims.claim_batch(conn, run_id, gone)
        assert claims.reclaim_stale(conn, run_id, claim_timeout=3600) == [1]


def test_record_results_is_forward_only_and_requeue_is_explicit(engine):
    run_id, _ = _record(engine, n=5, batch_size=10, control_every=0)
    with engine.begin() as conn:
        ids = list(conn.execute(select(L.c.id).order_by(L.c.id)).scalars())
        conn.execute(L.update().values(status=Status.sending, attempts=1))
        results = [
            {"ledger_id": ids[0], "status": "sent", "provider": "outbox", "provider_message_id": "m-1"}
        ]
        results.append(
            {"ledger_id": ids[1], "status": "failed", "provider": "outbox", "reason": "bad address"}
        )
        assert ledger.record_results(conn, results) == 2
        # a replay (Prefect retry) cannot move a sent row back or change it
        ledger.record_results(conn, [{"ledger_id": ids[0], "status": "failed", "reason": "late"}])
        from tracking.status import advance

        assert advance(conn, ids[0], Status.delivered) == 1
        assert advance(conn, ids[0], Status.sent) == 0  # never backwards
        assert ledger.mark_unknown_after_crash(conn, run_id) == 3
        row0 = conn.execute(select(L).where(L.c.id == ids[0])).mappings().one()
        assert (row0["status"], row0["provider_message_id"], row0["sent_at"] is not None) == (
            "delivered",
            "m-1",
            True,
        )
        assert ledger.requeue_unknown(conn, run_id) == 3
        assert conn.execute(select(func.count()).where(L.c.status == "planned")).scalar_one() == 3
        assert conn.execute(select(B.c.status)).scalars().all() == ["pending"]


def test_run_datetime_parses_iso_and_rejects_garbage():
    assert ledger.run_datetime("2026-11-22T10:00:00+01:00").isoformat() == "2026-11-22T09:00:00+00:00"
    with pytest.raises(ledger.RunError, match="ISO date-time"):
        ledger.run_datetime("next tuesday")

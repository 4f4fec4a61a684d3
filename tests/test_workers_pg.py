"""Several workers send one run together on PostgreSQL: no duplicate, no gap."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import select

from core.models import LedgerEntry, SendBatch
from delivery import claims, ledger, runs, send
from tests.test_ledger_support import seed_customers
from tests.test_run_support import outbox_ledger_ids, seed_features, write_campaign

pytestmark = pytest.mark.postgres
L = LedgerEntry.__table__
B = SendBatch.__table__


@pytest.fixture
def pg_engine(pg_url, settings, monkeypatch, tmp_path):
    from core.db import get_engine, migrate, reset_engines
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_DATABASE_URL", pg_url)
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(tmp_path / "campaigns"))
    get_settings.cache_clear()
    reset_engines()
    migrate(pg_url)
    return get_engine(pg_url)


def test_skip_locked_gives_concurrent_claimers_different_batches(pg_engine, tmp_path):
    ids = seed_customers(pg_engine, 30)
    seed_features(pg_engine, ids)
    run = runs.prepare_run(pg_engine, str(write_campaign(tmp_path, control=0)), "w:1", batch_size=10)
    with pg_engine.connect() as a, pg_engine.connect() as b:
        with a.begin():
            assert claims.claim_batch(a, run.run_id, "h:1:a") == 1  # row lock held, not committed
            with b.begin():
                assert claims.claim_batch(b, run.run_id, "h:1:b") == 2  # skipped the locked row, no wait
        with a.begin(), b.begin():
            assert claims.claim_batch(a, run.run_id, "h:1:a") == 3
            assert claims.claim_batch(b, run.run_id, "h:1:b") is None


def test_two_workers_send_one_run_without_duplicate_or_gap(pg_engine, tmp_path):
    ids = seed_customers(pg_engine, 300)
    seed_features(pg_engine, ids)
    path = write_campaign(tmp_path, control=10)
    run = runs.prepare_run(pg_engine, str(path), "w:2", batch_size=5)
    start = threading.Barrier(2)
    done: dict[str, int] = {}
    errors: list[BaseException] = []

    def worker(tag: str) -> None:
        try:
            joined = runs.join_run(pg_engine, "w:2", str(path))
            ctx = runs.make_context(joined, claims.worker_id(tag))
            start.wait()
            done[tag] = send.work(pg_engine, ctx, claim_timeout=3600)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    with pg_engine.connect() as conn:
        rows = conn.execute(select(L.c.id, L.c.customer_id, L.c.status)).all()
        claimers = Counter(conn.execute(select(B.c.claimed_by)).scalars())
        run_status = ledger.get_run(conn, "w:2")["status"]
    to_send = {r.id for r in rows if r.status != "held_out"}
    delivered = Counter(lid for lid, _ in outbox_ledger_ids(tmp_path / "outbox"))
    assert set(delivered) == to_send  # no gap
    assert max(delivered.values()) == 1  # no duplicate
    assert {r.status for r in rows} == {"sent", "held_out"}
    batches = len(to_send) // 5 + (len(to_send) % 5 > 0)
    assert sum(done.values()) == sum(claimers.values()) == batches and len(claimers) == 2
    assert all(n > 0 for n in done.values()), f"one worker did all the work: {done}"
    assert run_status == "completed" and run.recorded == len(ids)

"""A whole run without the Prefect engine: every customer ends final or skipped, nothing twice."""

from __future__ import annotations

from sqlalchemy import func, select

from core.models import CampaignRun, LedgerEntry, SendBatch
from delivery import claims, ledger, runs
from tests.test_ledger_support import seed_customers
from tests.test_run_support import outbox_ledger_ids, seed_features, use_tmp_dirs, write_campaign

L = LedgerEntry.__table__
NOW = "2026-11-24T10:00:00+01:00"


def _run(engine, path, **kw):
    return runs.run_direct(engine, str(path), now=ledger.run_datetime(NOW), **kw)


def test_every_selected_customer_ends_final_or_skipped(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="7")
    ids = seed_customers(engine, 60, missing_email_every=11)
    no_features = {ids[4], ids[30]}  # their template reads a missing feature: a template error
    seed_features(engine, [i for i in ids if i not in no_features])
    path = write_campaign(tmp_path, control=10)

    summary = _run(engine, path)
    assert summary["key"] == "relaunch:2026-11-24" and summary["status"] == "completed"
    with engine.connect() as conn:
        rows = conn.execute(select(L.c.customer_id, L.c.status, L.c.reason, L.c.provider_message_id)).all()
        funnel = conn.execute(select(CampaignRun.__table__.c.funnel)).scalar_one()
        batches = set(conn.execute(select(SendBatch.__table__.c.status)).scalars())
    by_status: dict[str, list] = {}
    for r in rows:
        by_status.setdefault(r.status, []).append(r)
    assert set(by_status) <= {"sent", "held_out", "skipped", "failed"}  # nothing left planned or sending
    assert all(r.reason for s in ("held_out", "skipped", "failed") for r in by_status.get(s, []))
    failed = {r.customer_id for r in by_status.get("failed", [])}
    assert failed <= no_features and failed  # one message fails, never its batch
    assert all("template error" in r.reason for r in by_status["failed"])
    no_email = {c for n, c in enumerate(ids, 1) if n % 11 == 0}
    assert not no_email & {r.customer_id for r in rows}  # left at selection, counted in the funnel
    sent = {r.customer_id for r in by_status["sent"]}
    assert all(r.provider_message_id for r in by_status["sent"])
    assert sorted(cid for _, cid in outbox_ledger_ids(tmp_path / "outbox")) == sorted(sent)
    assert batches == {"done"} and funnel


def test_same_key_again_sends_nothing_twice_and_unknown_waits_for_the_operator(
    engine, settings, tmp_path, monkeypatch
):
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="10")
    ids = seed_customers(engine, 40)
    seed_features(engine, ids)
    path = write_campaign(tmp_path, control=0)
    # a first process recorded the run, claimed batch 2, marked it sending and died (kill -9)
    run = runs.prepare_run(engine, str(path), "relaunch:once", ledger.run_datetime(NOW))
    with engine.begin() as conn:
        assert claims.claim_batch(conn, run.run_id, "far-host:4242:dead") == 1
        conn.execute(L.update().where(L.c.batch == 1).values(status="sending", attempts=1))
    use_tmp_dirs(monkeypatch, tmp_path, claim_timeout_seconds="0")

    first = _run(engine, path, run_key="relaunch:once")
    assert first["totals"] == {"unknown": 10, "sent": 30}
    assert {u["reason"] for u in first["unknown"]} == {ledger.CRASH_REASON}
    sent_once = outbox_ledger_ids(tmp_path / "outbox")
    assert len(sent_once) == 30

    again = _run(engine, path, run_key="relaunch:once")  # resume: nothing left, nothing re-sent
    assert again["totals"] == first["totals"]
    assert sorted(outbox_ledger_ids(tmp_path / "outbox")) == sorted(sent_once)

    resent = _run(engine, path, run_key="relaunch:once", resend_unknown=True)  # the operator decides
    assert resent["totals"] == {"sent": 40}
    assert sorted(cid for _, cid in outbox_ledger_ids(tmp_path / "outbox")) == sorted(ids)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).where(L.c.attempts == 2)).scalar_one() == 10


def test_open_breaker_pauses_the_run_with_its_reason_and_the_run_resumes(
    sqlite_engine, twilio_env, tmp_path, monkeypatch
):
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="10", circuit_min_attempts="5", circuit_window="10",
                 circuit_open_seconds="3600", provider_max_attempts="1")  # fmt: skip
    ids = seed_customers(sqlite_engine, 30, phone_every=1)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, control=0, channels="sms")
    twilio_env.fail_next(1000, 500)  # the provider is down

    paused = _run(sqlite_engine, path, run_key="sms:1")
    assert paused["status"] == "paused" and "circuit breaker open" in paused["paused_reason"]
    assert paused["totals"].get("planned") == 20  # the next batches were not attempted
    assert set(paused["totals"]) - {"planned"} <= {"failed", "unknown"}
    assert len(twilio_env.paths("Messages")) == 10

    twilio_env.reset()  # the provider is back: the same command resumes the run
    resumed = _run(sqlite_engine, path, run_key="sms:1")
    assert resumed["status"] == "completed" and resumed["paused_reason"] is None
    assert resumed["totals"]["sent"] == 20 and "planned" not in resumed["totals"]
    assert len(twilio_env.paths("Messages")) == 20  # the 10 failed were not retried by the resume


def test_consent_and_suppression_are_checked_again_at_send_time(engine, settings, tmp_path, monkeypatch):
    from audiences.consent import suppress, withdraw

    use_tmp_dirs(monkeypatch, tmp_path, batch_size="10")
    ids = seed_customers(engine, 20)
    seed_features(engine, ids)
    path = write_campaign(tmp_path, control=0)
    runs.prepare_run(engine, str(path), "late:1", ledger.run_datetime(NOW))  # recorded, not sent yet
    with engine.begin() as conn:  # meanwhile: one unsubscribes, one hard-bounces elsewhere
        withdraw(conn, ids[2], "email", source="unsubscribe")
        suppress(conn, f"c{ids.index(ids[5]) + 1}@example.org", "hard_bounce", channel="email")

    summary = _run(engine, path, run_key="late:1")
    assert summary["totals"] == {"sent": 18, "skipped": 2}
    with engine.connect() as conn:
        reasons = dict(conn.execute(select(L.c.customer_id, L.c.reason).where(L.c.status == "skipped")).all())
    assert reasons == {
        ids[2]: "consent withdrawn after the audience was recorded",
        ids[5]: "address suppressed after the audience was recorded",
    }
    assert {ids[2], ids[5]}.isdisjoint(cid for _, cid in outbox_ledger_ids(tmp_path / "outbox"))

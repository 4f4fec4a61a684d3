"""An alert threshold crossed during a run pauses it, with the reason, until the operator resumes."""

from __future__ import annotations

from sqlalchemy import select, update

from core.models import CampaignRun, LedgerEntry, Status
from core.settings import get_settings
from delivery import claims, ledger, runs, send
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs, write_campaign

L = LedgerEntry.__table__
R = CampaignRun.__table__
NOW = ledger.run_datetime("2026-11-24T10:00:00+01:00")


def test_hard_bounces_pause_the_run_between_batches(sqlite_engine, settings, tmp_path, monkeypatch):
    # alerts_pause_runs: set here so that monkeypatch restores it after `--ignore-alerts` changed it
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="50", alert_min_volume="40", alerts_pause_runs="true")
    ids = seed_customers(sqlite_engine, 200)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, control=0)
    run = runs.prepare_run(sqlite_engine, str(path), now=NOW)
    ctx = runs.make_context(run)

    with sqlite_engine.begin() as conn:
        first = claims.claim_batch(conn, run.run_id, ctx.worker)
    send.process_batch(sqlite_engine, ctx, first)
    with sqlite_engine.begin() as conn:  # the provider reports 10% hard bounces on the first batch
        sent = (
            conn.execute(select(L.c.id).where(L.c.run_id == run.run_id, L.c.status == "sent")).scalars().all()
        )
        conn.execute(update(L).where(L.c.id.in_(sent[:5])).values(status=Status.bounced))

    summary = runs.run_direct(sqlite_engine, str(path), run.key, NOW)
    assert summary["status"] == "paused"
    assert "hard bounces 10.00%" in summary["paused_reason"]
    with sqlite_engine.connect() as conn:
        planned = conn.execute(select(L.c.id).where(L.c.run_id == run.run_id, L.c.status == "planned")).all()
    assert len(planned) == 150  # nothing more was sent after the alert

    from typer.testing import CliRunner

    from relance.cli import app

    paused = CliRunner().invoke(app, ["run", str(path), "--run-key", run.key, "--no-prefect"])
    assert paused.exit_code == 3 and "hard bounces" in paused.output
    resumed = CliRunner().invoke(
        app, ["run", str(path), "--run-key", run.key, "--no-prefect", "--ignore-alerts"]
    )
    assert resumed.exit_code == 0, resumed.output
    with sqlite_engine.connect() as conn:
        assert (
            conn.execute(select(L.c.id).where(L.c.run_id == run.run_id, L.c.status == "planned")).all() == []
        )
        assert conn.execute(select(R.c.status).where(R.c.id == run.run_id)).scalar_one() == "completed"


def test_each_worker_rereads_alert_rates_at_most_every_interval(
    sqlite_engine, settings, tmp_path, monkeypatch
):
    """Counting a whole run before every batch made 1M-recipient runs quadratic: a worker checks
    before its first batch, then once `alert_check_seconds` have passed."""
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="50", alert_check_seconds="3600")
    ids = seed_customers(sqlite_engine, 10)
    seed_features(sqlite_engine, ids)
    run = runs.prepare_run(sqlite_engine, str(write_campaign(tmp_path, control=0)), now=NOW)
    ctx = runs.make_context(run)
    assert [ctx.alerts_due(), ctx.alerts_due(), ctx.alerts_due()] == [True, False, False]
    monkeypatch.setenv("RELANCE_ALERT_CHECK_SECONDS", "0")
    get_settings.cache_clear()
    assert [ctx.alerts_due(), ctx.alerts_due()] == [True, True]

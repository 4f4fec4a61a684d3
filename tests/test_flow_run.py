"""The run_campaign flow through the real Prefect engine: batch tasks, artifacts, resume by key."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.models import LedgerEntry
from tests.test_ledger_support import seed_customers
from tests.test_run_support import outbox_ledger_ids, seed_features, use_tmp_dirs, write_campaign

L = LedgerEntry.__table__


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_flow_sends_in_batch_tasks_and_resumes_by_key(prefect_harness, sqlite_engine, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterId, TaskRunFilter
    from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort

    import flows.run_campaign as run_campaign_module
    from flows.run_campaign import run_campaign

    use_tmp_dirs(monkeypatch, tmp_path, batch_size="8")
    ids = seed_customers(sqlite_engine, 50, missing_email_every=25)
    seed_features(sqlite_engine, ids[1:])  # the first customer's template fails: one message, not its batch
    path = write_campaign(tmp_path, control=10)

    state = run_campaign(str(path), run_key="flow:1", now="2026-11-24T10:00:00+01:00", return_state=True)
    summary = state.result()
    assert not run_campaign_module._contexts  # the run's renderer and caches are not kept by the process
    assert summary["status"] == "completed"
    totals = summary["totals"]
    assert totals.get("failed") == 1 and totals["held_out"] >= 1
    assert sum(totals.values()) == 48  # the two customers without e-mail left at selection (funnel)
    sent = outbox_ledger_ids(tmp_path / "outbox")
    assert len(sent) == totals["sent"] == len({lid for lid, _ in sent})

    # a batch per task run (never a task per message), and the run's table artifact
    import asyncio

    async def inspect():
        async with get_client() as client:
            flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            tasks = await client.read_task_runs(
                flow_run_filter=flow_runs, limit=200, sort=TaskRunSort.EXPECTED_START_TIME_ASC
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(),
                flow_run_filter=flow_runs,
                task_run_filter=TaskRunFilter(),
                limit=100,
                sort=ArtifactSort.ID_DESC,
            )
            return tasks, artifacts

    tasks, artifacts = asyncio.run(inspect())
    batch_tasks = [t for t in tasks if t.name.startswith("send-batch")]
    with sqlite_engine.connect() as conn:
        batches = conn.execute(select(func.count(func.distinct(L.c.batch))).where(L.c.batch > 0)).scalar_one()
    assert len(batch_tasks) == batches < totals["sent"]
    assert any(a.key == "run-flow-1" and a.type == "table" for a in artifacts)

    again = run_campaign(str(path), run_key="flow:1", now="2026-11-24T10:00:00+01:00")
    assert again["totals"] == totals
    assert outbox_ledger_ids(tmp_path / "outbox") == sent  # resumed: nothing sent twice


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_send_run_flow_joins_a_recorded_run(prefect_harness, sqlite_engine, tmp_path, monkeypatch):
    import flows.run_campaign as run_campaign_module
    from delivery import ledger, runs
    from flows.run_campaign import send_run

    use_tmp_dirs(monkeypatch, tmp_path, batch_size="10")
    ids = seed_customers(sqlite_engine, 30)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, control=0)
    runs.prepare_run(sqlite_engine, str(path), "join:1", ledger.run_datetime("2026-11-24T10:00:00+01:00"))

    summary = send_run("join:1")  # finds the campaign file by name in RELANCE_CAMPAIGNS_DIR
    assert summary["status"] == "completed" and summary["totals"] == {"sent": 30}
    assert not run_campaign_module._contexts
    assert sorted(cid for _, cid in outbox_ledger_ids(tmp_path / "outbox")) == sorted(ids)


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_configuration_error_is_not_retried(prefect_harness, sqlite_engine, tmp_path, monkeypatch):
    """Issue 16 (6): an unknown segment fails record-audience once, not after 2 retries 2 s apart."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from audiences.segments import SegmentError
    from flows.run_campaign import run_campaign

    use_tmp_dirs(monkeypatch, tmp_path)
    seed_customers(sqlite_engine, 3)
    path = write_campaign(tmp_path, control=0)
    path.write_text(path.read_text() + "audience:\n  segment: new_customrs\n", encoding="utf-8")

    state = run_campaign(str(path), run_key="bad:1", return_state=True)
    assert state.is_failed()
    with pytest.raises(SegmentError, match="did you mean `new_customers`"):
        state.result()

    async def task_runs():
        async with get_client() as client:
            flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flow_runs)

    [record] = [t for t in asyncio.run(task_runs()) if t.name.startswith("record-audience")]
    assert record.state.is_failed() and record.run_count == 1

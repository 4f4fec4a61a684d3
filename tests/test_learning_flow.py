"""The train_models Prefect flow: trains, scores the passing version, refreshes recommendations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from audiences.learning import scoring
from core.models import Recommendation


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_train_models_flow_trains_scores_and_recommends(prefect_harness, sqlite_engine, settings) -> None:
    from audiences.learning import registry, synthetic
    from flows.train_models import train_models

    synthetic.generate(sqlite_engine, 1500, now=datetime.now(UTC), seed=5)
    rows = train_models(models=["churn"], seed=1)
    churn, recs = rows
    assert churn["model"] == "churn" and churn["passed"] and churn["auc"] > 0.6
    assert churn["version"] == registry.resolve("churn").version
    assert recs["model"] == "recommendations" and recs["scored"] > 0
    with sqlite_engine.connect() as conn:
        scored = conn.execute(
            select(func.count()).where(scoring.named_scores().c.version == churn["version"])
        ).scalar_one()
        assert scored == churn["scored"] == 1500
        assert conn.execute(select(func.count()).select_from(Recommendation.__table__)).scalar_one() > 0


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_train_models_flow_reads_the_message_rows_once_for_response_and_uplift(
    prefect_harness, sqlite_engine, settings
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from audiences.learning import registry, synthetic
    from flows.train_models import train_models

    synthetic.generate(sqlite_engine, 1500, now=datetime.now(UTC), seed=5)
    state = train_models(models=["response", "uplift"], seed=1, recommendations=False, return_state=True)
    response, uplift = state.result()
    assert response["model"] == "response" and response["version"] and response["auc"] > 0.5
    assert uplift["model"] == "uplift" and uplift["version"]
    trained = {
        info.name: info
        for info in registry.versions()
        if info.version in (response["version"], uplift["version"])
    }
    # both learnt as of the same instant, from the same rows
    assert trained["response"].meta["as_of"] == trained["uplift"].meta["as_of"]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=50,
        )
    names = sorted(run.name.rsplit("-", 1)[0] for run in runs)
    assert names == ["read-message-rows", "train_one", "train_one"]

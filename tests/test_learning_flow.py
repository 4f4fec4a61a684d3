"""The train_models Prefect flow: trains, scores the passing version, refreshes recommendations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from audiences.learning import scoring
from relance.models import Recommendation


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

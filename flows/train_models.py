"""The `train_models` Prefect flow: retrain the targeting models, score customers, refresh recommendations.

Thin on purpose: training, evaluation, versioning and scoring live in
audiences.learning. One task per model (a model with too little data is
reported and skipped, the others still train); a version is scored only when
it passes its metric floors, so campaigns keep using the previous passing
version otherwise. Response and uplift learn from the same past messages:
they are read once per flow run, as of one ``now``, as ``relance train`` does
(about half of each model's time on a large base).

Entry point of the deployment in prefect.yaml: ``flows/train_models.py:train_models``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

MODELS = ("churn", "response", "uplift")


@task(name="read-message-rows", cache_policy=NO_CACHE)
def read_message_rows(names: list[str], now: datetime) -> dict[str, Any]:
    """``train`` options shared by the models of this run: the message rows when two models read them."""
    from audiences.learning.models import shared_rows
    from core.db import ready_engine

    return shared_rows(names, ready_engine(), now)


@task(cache_policy=NO_CACHE)
def train_one(
    name: str, seed: int = 0, now: datetime | None = None, shared: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train, evaluate and store one model; score customers when the new version passes."""
    from audiences.learning.models import NotEnoughData, train
    from audiences.learning.scoring import score
    from core.db import ready_engine

    logger = get_run_logger()
    engine = ready_engine()
    try:
        trained = train(name, engine, now=now, seed=seed, **(shared or {}))
    except NotEnoughData as exc:
        logger.warning("%s not trained: %s", name, exc)
        return {"model": name, "version": None, "passed": False, "note": str(exc)}
    info = trained.info
    row: dict[str, Any] = {"model": name, "version": info.version, "passed": info.passed}
    row.update({k: v for k, v in info.meta["metrics"].items() if isinstance(v, int | float)})
    if info.passed:
        res = score(name, engine, version=info.version)
        row["scored"] = res.customers
        logger.info(
            "%s %s passes; scored %d customers in %.1f s", name, info.version, res.customers, res.seconds
        )
    else:
        logger.warning("%s %s is below its floors %s: not used", name, info.version, info.meta["floors"])
    return row


@task(cache_policy=NO_CACHE)
def refresh_recommendations() -> dict[str, Any]:
    from audiences.learning.recommend import recommend

    res = recommend()
    return {"model": "recommendations", "version": res.version, "passed": True, "scored": res.customers}


@flow(name="train-models")
def train_models(models: list[str] | None = None, seed: int = 0, recommendations: bool = True) -> list[dict]:
    """Retrain ``models`` (default: churn, response, uplift) and publish their metrics as an artifact."""
    from core.models import utcnow

    names = list(models or MODELS)
    now = utcnow()
    shared = read_message_rows(names, now)
    # quote(): a DataFrame of every past message is passed as it is, not walked by Prefect for inputs
    rows = [train_one(name, seed, now, quote(shared)) for name in names]
    if recommendations:
        rows.append(refresh_recommendations())
    create_table_artifact(key="model-metrics", table=rows, description="Targeting models trained by this run")
    return rows

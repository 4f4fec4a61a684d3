"""Training: response propensity, churn risk and uplift, each a calibrated scikit-learn Pipeline.

Every model is ``ColumnTransformer`` (numbers passed through, the channel
one-hot encoded) + ``HistGradientBoostingClassifier`` (handles the NaN of
customers without orders, fast on a million rows, deterministic for a seed),
then calibrated with ``CalibratedClassifierCV`` on a slice of the training
rows the booster did not see (isotonic when there are enough positives,
sigmoid otherwise), because selection compares the probabilities with fixed
thresholds (``score: {min: 0.6}``) and the uplift model subtracts two of them.

Evaluation is on a time-based holdout: the newest campaign runs (response,
uplift) or the newest cut-off date (churn). With a single run there is no
"later" to hold out, so a stable 30 % of customers is used and the metadata
says so.

Uplift is a T-learner (two models): P(outcome | treated, x) - P(outcome | control, x).
Why: relance's control groups are small (10 % by default) and the class
transformation (Athey & Imbens transformed outcome, Jaskowski & Jaroszewicz)
either needs a 50/50 split or weights that multiply the noise of the control
arm by 1/p; the T-learner needs neither, reuses the calibrated response
pipeline, and each arm's probability is interpretable. Its known weakness
(each model regularized on its own, the difference noisier than either) is
reduced by a strongly regularized booster (large leaves, few iterations).

Why one module of ~400 lines: the three trainers share the pipeline, the calibration and the
time-based holdout evaluation; apart, each would repeat them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from audiences.learning import dataset, metrics, registry
from core.models import CHANNELS, utcnow
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

HOLDOUT_SHARE = 0.2  # time-based: the newest runs holding at least this share of rows
RANDOM_HOLDOUT_SHARE = 0.3  # when there is a single run
CALIBRATION_SHARE = 0.2  # of the training rows, for the calibrator


class NotEnoughData(ValueError):
    """Too little history to train a model worth using; the message gives counts found and needed."""


@dataclass(frozen=True)
class Trained:
    info: registry.ModelInfo
    seconds: float
    model: Any = None


# --------------------------------------------------------------------------
# The artifacts (module-level classes so joblib can load them)
# --------------------------------------------------------------------------


class ProbabilityModel:
    """A calibrated classifier and the columns it reads: ``predict(df)`` is P(positive)."""

    def __init__(self, estimator: Any, columns: list[str]) -> None:
        self.estimator = estimator
        self.columns = columns

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict_proba(df[self.columns])[:, 1]


class UpliftModel:
    """T-learner: P(outcome | message) - P(outcome | no message)."""

    def __init__(self, treated: ProbabilityModel, control: ProbabilityModel) -> None:
        self.treated = treated
        self.control = control

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.treated.predict(df) - self.control.predict(df)


# --------------------------------------------------------------------------
# Building and fitting
# --------------------------------------------------------------------------


def make_pipeline(with_channel: bool, seed: int, regularized: bool = False):
    """ColumnTransformer (numbers as they are, channel one-hot) + gradient boosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    parts: list[tuple] = [("num", "passthrough", list(dataset.NUMERIC_FEATURES))]
    if with_channel:
        encoder = OneHotEncoder(categories=[list(CHANNELS)], handle_unknown="ignore", sparse_output=False)
        parts.append(("channel", encoder, [dataset.CHANNEL_FEATURE]))
    booster = HistGradientBoostingClassifier(
        learning_rate=0.05 if regularized else 0.1,
        max_iter=100 if regularized else 200,
        max_leaf_nodes=15 if regularized else 31,
        min_samples_leaf=200 if regularized else 50,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=seed,
    )
    return Pipeline(
        [("features", ColumnTransformer(parts, verbose_feature_names_out=False)), ("model", booster)]
    )


def columns(with_channel: bool) -> list[str]:
    return [*dataset.NUMERIC_FEATURES, *([dataset.CHANNEL_FEATURE] if with_channel else [])]


def fit_calibrated(
    df: pd.DataFrame, target: str, with_channel: bool, seed: int, regularized: bool = False
) -> tuple[ProbabilityModel, str]:
    """Fit the pipeline on most rows and a calibrator on the rest (frozen booster): (model, method)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import train_test_split

    cols = columns(with_channel)
    y = df[target].to_numpy().astype(int)
    fit_idx, cal_idx = train_test_split(
        np.arange(len(df)), test_size=CALIBRATION_SHARE, random_state=seed, stratify=y
    )
    pipe = make_pipeline(with_channel, seed, regularized)
    pipe.fit(df.iloc[fit_idx][cols], y[fit_idx])
    method = "sigmoid"  # strictly monotonic: keeps the ranking (isotonic plateaus would tie `top` cuts)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipe), method=method)
    calibrated.fit(df.iloc[cal_idx][cols], y[cal_idx])
    return ProbabilityModel(calibrated, cols), method


def cpu_threads(settings: Settings | None = None):
    """Limit OpenMP threads (settings.learning_threads; 0 = no limit) for fitting and predicting.

    scikit-learn is imported first: threadpoolctl limits only the libraries already loaded, and the
    OpenMP runtime is loaded by that import. Without it a fresh process (``relance score``, the bench's
    ``--score-only``) predicted with every core, and OpenMP's spin-waiting on the busy 2-core machine
    made the predictions up to 6x slower (notes/7-learning.md, 2026-12-01 evening).
    """
    from contextlib import nullcontext

    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime, see above)
    from threadpoolctl import threadpool_limits

    n = (settings or get_settings()).learning_threads
    return threadpool_limits(limits=n, user_api="openmp") if n > 0 else nullcontext()


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= max_rows else df.sample(n=max_rows, random_state=seed).sort_index()


def _need(model: str, what: str, found: int, needed: int, hint: str) -> None:
    if found < needed:
        raise NotEnoughData(f"{model}: {found:,} {what} found, at least {needed:,} needed to train; {hint}")


def time_split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, holdout, description): the newest runs as holdout, else a stable share of customers."""
    starts = df.groupby("run_id")["ref_j"].min().sort_values(ascending=False)
    sizes = df.groupby("run_id").size()
    held: list[int] = []
    for run_id in starts.index[:-1]:  # the oldest run always stays in training
        held.append(int(run_id))
        if sizes[held].sum() >= HOLDOUT_SHARE * len(df):
            break
    if held and sizes[held].sum() >= HOLDOUT_SHARE * len(df):
        mask = df["run_id"].isin(held)
        return df[~mask], df[mask], f"time-based: the {len(held)} newest run(s) {sorted(held)}"
    return _random_split(df, seed, "a single run")


def _random_split(df: pd.DataFrame, seed: int, why: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    rng = np.random.default_rng(seed)
    customers = np.sort(df["customer_id"].unique())
    held = set(rng.choice(customers, size=int(len(customers) * RANDOM_HOLDOUT_SHARE), replace=False).tolist())
    mask = df["customer_id"].isin(held)
    return df[~mask], df[mask], f"random {int(RANDOM_HOLDOUT_SHARE * 100)} % of customers ({why})"


def _window(df: pd.DataFrame) -> dict[str, str | None]:
    from datetime import UTC

    if df.empty:
        return {"from": None, "to": None}
    to_dt = [
        datetime.fromtimestamp((float(x) - 2440587.5) * 86400, UTC).isoformat()
        for x in (df["ref_j"].min(), df["ref_j"].max())
    ]
    return {"from": to_dt[0], "to": to_dt[1]}


def _meta(name: str, seed: int, started: datetime, **fields: Any) -> dict[str, Any]:
    import sklearn

    return {
        "model": name,
        "version": registry.new_version(started),
        "trained_at": started.isoformat(),
        "seed": seed,
        "sklearn_version": sklearn.__version__,
        "estimator": "ColumnTransformer + HistGradientBoostingClassifier, CalibratedClassifierCV",
        **fields,
    }


# --------------------------------------------------------------------------
# The three models
# --------------------------------------------------------------------------


def message_rows(engine: Engine, now: datetime | None, settings: Settings | None = None) -> Any:
    """The past messages with their features at send time and outcomes: what response and uplift learn
    from. Built once when both are trained (:func:`shared_rows`): about half of each one's time.
    ``now`` None: as of this instant."""
    s = settings or get_settings()
    with engine.connect() as conn:
        return dataset.message_rows(conn, window_days=s.learning_window_days, until=now)


MESSAGE_MODELS = ("response", "uplift")


def shared_rows(
    names: list[str], engine: Engine, now: datetime | None, settings: Settings | None = None
) -> dict[str, Any]:
    """``train`` options for training ``names`` in a row: the message rows, read once for two models."""
    if sum(registry.canonical(n) in MESSAGE_MODELS for n in names) < 2:
        return {}
    return {"rows": message_rows(engine, now, settings)}


def train_response(
    engine: Engine, now: datetime, seed: int = 0, settings: Settings | None = None, rows: Any = None
) -> tuple[Any, dict[str, Any]]:
    """P(human open, click or conversion within the window | features at send time, channel)."""
    s = settings or get_settings()
    df = rows if rows is not None else message_rows(engine, now, s)
    sent = df[~df["in_control"]].reset_index(drop=True)
    hint = "run more campaigns (the ledger needs sent messages whose response window has closed)"
    _need("response", "sent messages with a closed response window", len(sent), s.learning_min_rows, hint)
    _need("response", "responses among them", int(sent["responded"].sum()), s.learning_min_positives, hint)
    train, hold, how = time_split(sent, seed)
    train = _sample(train, s.learning_max_rows, seed)
    model, method = fit_calibrated(train, "responded", with_channel=True, seed=seed)
    m = metrics.classification_metrics(hold["responded"], model.predict(hold))
    meta = {
        "target": f"responded within {s.learning_window_days} days (human open, click or conversion)",
        "window": {"train": _window(train), "holdout": _window(hold)},
        "holdout": how,
        "rows": {"train": len(train), "holdout": len(hold)},
        "positives": {"train": int(train["responded"].sum()), "holdout": int(hold["responded"].sum())},
        "features": columns(True),
        "channels": sorted(sent["channel"].unique().tolist()),
        "calibration": method,
        "metrics": m,
        "floors": {"auc": s.learning_min_auc},
        "passed": m["auc"] is not None and m["auc"] >= s.learning_min_auc,
    }
    return model, meta


def train_churn(
    engine: Engine, now: datetime, seed: int = 0, settings: Settings | None = None
) -> tuple[Any, dict[str, Any]]:
    """P(no order within the horizon | order history at a cut-off): needs no campaign history."""
    import pandas as pd

    s = settings or get_settings()
    snaps = dataset.churn_snapshots(now, s.churn_horizon_days, s.churn_snapshots, s.churn_snapshot_step_days)
    with engine.connect() as conn:
        history = dataset.order_history(conn)  # read once for all cut-offs
        frames = [dataset.churn_rows(conn, snap, history) for snap in snaps]
    df = pd.concat(frames, ignore_index=True)
    hint = (
        f"import more order history (each cut-off needs {s.churn_horizon_days} days of orders after it; "
        f"cut-offs {', '.join(f'{x.cutoff:%Y-%m-%d}' for x in snaps)})"
    )
    _need(
        "churn",
        "customer snapshots (customers with an order before a cut-off)",
        len(df),
        s.learning_min_rows,
        hint,
    )
    _need("churn", "churners among them", int(df["churned"].sum()), s.learning_min_positives, hint)
    _need("churn", "repeat buyers among them", int((1 - df["churned"]).sum()), s.learning_min_positives, hint)
    newest = snaps[0].cutoff
    if len(snaps) > 1 and len(frames[0]) and len(df) > len(frames[0]):
        train, hold = df[df["cutoff"] != newest], df[df["cutoff"] == newest]
        how = f"time-based: the newest cut-off {newest:%Y-%m-%d}"
    else:
        df["run_id"] = 0
        train, hold, how = _random_split(df, seed, "a single cut-off")
    train = _sample(train.reset_index(drop=True), s.learning_max_rows, seed)
    model, method = fit_calibrated(train, "churned", with_channel=False, seed=seed)
    m = metrics.classification_metrics(hold["churned"], model.predict(hold))
    meta = {
        "target": f"no order within {s.churn_horizon_days} days after the cut-off",
        "window": {"cutoffs": [f"{x.cutoff:%Y-%m-%d}" for x in snaps], "horizon_days": s.churn_horizon_days},
        "holdout": how,
        "rows": {"train": len(train), "holdout": len(hold)},
        "positives": {"train": int(train["churned"].sum()), "holdout": int(hold["churned"].sum())},
        "features": columns(False),
        "calibration": method,
        "metrics": m,
        "floors": {"auc": s.learning_min_auc},
        "passed": m["auc"] is not None and m["auc"] >= s.learning_min_auc,
    }
    return model, meta


def train_uplift(
    engine: Engine,
    now: datetime,
    seed: int = 0,
    settings: Settings | None = None,
    outcome: str = "converted",
    rows: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """T-learner on runs with a control group: P(outcome | sent) - P(outcome | held out)."""
    s = settings or get_settings()
    df = rows if rows is not None else message_rows(engine, now, s)
    runs_with_control = df.loc[df["in_control"], "run_id"].unique()
    df = df[df["run_id"].isin(runs_with_control)].reset_index(drop=True)
    treated, control = df[~df["in_control"]], df[df["in_control"]]
    hint = "run campaigns with a control group (control_group: {percent: 10} or more) and wait for the window"
    half = max(1, s.learning_min_rows // 2)
    _need("uplift", "sent messages in runs with a control group", len(treated), half, hint)
    _need("uplift", "control (held out) rows", len(control), half, hint)
    _need(
        "uplift",
        f"{outcome} outcomes among sent messages",
        int(treated[outcome].sum()),
        s.learning_min_positives,
        hint,
    )
    _need(
        "uplift",
        f"{outcome} outcomes in the control group",
        int(control[outcome].sum()),
        s.learning_min_positives,
        hint,
    )
    train, hold, how = time_split(df, seed)
    train = _sample(train, s.learning_max_rows, seed)
    arms = {}
    for arm, rows in (("treated", train[~train["in_control"]]), ("control", train[train["in_control"]])):
        arms[arm], _ = fit_calibrated(
            rows.reset_index(drop=True), outcome, with_channel=False, seed=seed, regularized=True
        )
    model = UpliftModel(arms["treated"], arms["control"])
    y, t = hold[outcome].to_numpy(), ~hold["in_control"].to_numpy()
    m = metrics.uplift_metrics(y, t, model.predict(hold))
    m["response_targeting"] = metrics.uplift_metrics(y, t, arms["treated"].predict(hold))
    meta = {
        "target": f"{outcome} within {s.learning_window_days} days; uplift = P(sent) - P(held out)",
        "method": "T-learner (two calibrated models)",
        "window": {"train": _window(train), "holdout": _window(hold)},
        "holdout": how,
        "rows": {"train": len(train), "holdout": len(hold)},
        "positives": {"train": int(train[outcome].sum()), "holdout": int(hold[outcome].sum())},
        "features": columns(False),
        "metrics": m,
        "floors": {"qini": s.learning_min_qini},
        "passed": m["qini"] > s.learning_min_qini,
    }
    return model, meta


TRAINERS = {"response": train_response, "churn": train_churn, "uplift": train_uplift}


def train(
    name: str,
    engine: Engine | None = None,
    *,
    now: datetime | None = None,
    seed: int = 0,
    settings: Settings | None = None,
    save: bool = True,
    **options: Any,
) -> Trained:
    """Train, evaluate on the holdout and store one new version of ``name``."""
    from core.db import get_engine

    name = registry.canonical(name)
    if name not in TRAINERS:
        raise ValueError(f"unknown model `{name}`: write one of {', '.join(TRAINERS)}")
    if name not in MESSAGE_MODELS:
        options.pop("rows", None)  # shared_rows() serves the message models only
    started = utcnow()
    t0 = time.perf_counter()
    with cpu_threads(settings):
        model, meta = TRAINERS[name](
            engine or get_engine(), now or started, seed=seed, settings=settings, **options
        )
    meta = _meta(name, seed, started, as_of=(now or started).isoformat(), **meta)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    info = (
        registry.save(name, model, meta) if save else registry.ModelInfo(name, meta["version"], Path(), meta)
    )
    return Trained(info, time.perf_counter() - t0, model)

"""Models trained on synthetic history with planted effects recover them; best, top, target in selection.

One synthetic base (audiences.learning.synthetic) is generated, trained and scored once for the module
(SQLite); each test then checks one property against what was planted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, update

from audiences.learning import campaign_models, dataset, models, registry, scoring, synthetic
from core.models import Consent

T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday: e-mail and SMS are open in Paris
N = 4000


@dataclass
class Planted:
    engine: Engine
    truth: synthetic.Truth
    trained: dict[str, models.Trained]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planted]:
    from core.db import get_engine, migrate, reset_engines
    from core.settings import get_settings

    tmp = tmp_path_factory.mktemp("planted")
    url = f"sqlite:///{tmp / 'relance.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELANCE_DATABASE_URL", url)
        mp.setenv("RELANCE_MODELS_DIR", str(tmp / "models"))
        mp.setenv("RELANCE_CAMPAIGNS_DIR", str(tmp / "campaigns"))
        get_settings.cache_clear()
        reset_engines()
        migrate(url)
        engine = get_engine(url)
        truth = synthetic.generate(engine, N, now=T0, seed=7)
        trained = {
            name: models.train(name, engine, now=T0, seed=3) for name in ("churn", "response", "uplift")
        }
        for name in trained:
            scoring.score(name, engine, now=T0)
        yield Planted(engine, truth, trained)
        reset_engines()
        get_settings.cache_clear()


def _current(engine: Engine):
    with engine.connect() as conn:
        return dataset.current_rows(conn, T0, 0, 10**9)


def test_every_model_passes_its_floors_on_the_time_based_holdout(planted: Planted) -> None:
    for name, tr in planted.trained.items():
        meta = tr.info.meta
        assert tr.info.passed, (name, meta["metrics"])
        assert meta["holdout"].startswith("time-based"), name
        assert meta["features"][: len(dataset.NUMERIC_FEATURES)] == list(dataset.NUMERIC_FEATURES)
        assert meta["sklearn_version"] and meta["trained_at"] and meta["window"]
        assert (tr.info.path / "model.joblib").is_file()
    assert planted.trained["response"].info.meta["metrics"]["auc"] > 0.7
    assert planted.trained["churn"].info.meta["metrics"]["auc"] > 0.7
    assert planted.trained["response"].info.meta["metrics"]["brier"] < 0.2


def test_response_model_recovers_who_responds_and_on_which_channel(planted: Planted) -> None:
    model = registry.load(planted.trained["response"].info)
    df = _current(planted.engine)
    recent = (df["recency_days"] < 45).to_numpy()
    old = (df["recency_days"] > 90).to_numpy()
    p_email = model.predict(df.assign(channel="email"))
    p_sms = model.predict(df.assign(channel="sms"))
    assert p_email[recent].mean() > p_email[old].mean() + 0.15
    rare = ((df["frequency"] < 3) & (df["recency_days"] > 90)).to_numpy()
    frequent = ((df["frequency"] >= 6) & (df["recency_days"] > 90)).to_numpy()
    assert (p_sms[rare] > p_email[rare]).mean() > 0.8
    assert (p_email[frequent] > p_sms[frequent]).mean() > 0.8


def test_uplift_model_finds_the_persuadables_that_a_response_model_misses(planted: Planted) -> None:
    m = planted.trained["uplift"].info.meta["metrics"]
    assert m["qini"] > m["response_targeting"]["qini"]
    assert m["uplift_top30"] > m["uplift_all"] and m["uplift_top30"] > m["response_targeting"]["uplift_top30"]
    model = registry.load(planted.trained["uplift"].info)
    df = _current(planted.engine)
    rec = df["recency_days"].to_numpy()
    u = model.predict(df)
    persuadable = (rec >= 75) & (rec < 165)
    sure_thing = rec < 45
    assert u[persuadable].mean() > 0.12
    assert abs(u[sure_thing].mean()) < 0.08
    assert u[persuadable].mean() > u[sure_thing].mean() + 0.1


def test_training_is_deterministic_for_a_seed(planted: Planted) -> None:
    """Also when response and uplift are trained from message rows read once for both (shared_rows)."""
    df = _current(planted.engine).head(500)
    shared = models.shared_rows(["churn", "response", "uplift"], planted.engine, T0)
    assert set(shared) == {"rows"} and models.shared_rows(["churn", "uplift"], planted.engine, T0) == {}
    again = models.train("response", planted.engine, now=T0, seed=3, save=False, **shared)
    uplift = models.train("uplift", planted.engine, now=T0, seed=3, save=False, **shared)
    assert uplift.info.meta["metrics"] == planted.trained["uplift"].info.meta["metrics"]
    first = registry.load(planted.trained["response"].info)
    for ch in ("email", "sms"):
        assert np.array_equal(
            again.model.predict(df.assign(channel=ch)), first.predict(df.assign(channel=ch))
        )
    assert again.info.meta["metrics"] == planted.trained["response"].info.meta["metrics"]


def test_scores_are_written_per_version_in_batches_identically(planted: Planted) -> None:
    info = planted.trained["churn"].info
    scores = scoring.named_scores()
    q = select(scores.c.customer_id, scores.c.score).where(scores.c.model == "churn").order_by("customer_id")
    with planted.engine.connect() as conn:
        before = conn.execute(q).all()
        names = set(conn.execute(select(scores.c.model).group_by(scores.c.model)).scalars())
        channel_scores = conn.execute(
            select(scores.c.model, func.count(scores.c.score_email), func.count(scores.c.score_sms),
                   func.count(scores.c.score_push)).group_by(scores.c.model).order_by(scores.c.model)
        ).all()  # fmt: skip
    assert len(before) == N
    assert names == {"churn", "uplift", "response"}  # one row per customer and model
    # the response row carries the score of each channel the model knows; the others have none
    assert channel_scores == [("churn", 0, 0, 0), ("response", N, N, 0), ("uplift", 0, 0, 0)]
    res = scoring.score("churn", planted.engine, version=info.version, now=T0, batch_size=1500)
    assert res.customers == N
    with planted.engine.connect() as conn:
        after = conn.execute(q).all()
    assert [r[0] for r in after] == [r[0] for r in before]
    assert np.allclose([r[1] for r in after], [r[1] for r in before])


def _campaign(**kw):
    from core.spec import Campaign

    data = {"name": "learn", "message": "promo/main", "control_group": {"percent": 10}}
    return Campaign.model_validate({**data, **kw})


def _selected(engine: Engine, camp) -> list[tuple]:
    from audiences.selection import build_selection

    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(build_selection(camp, T0, bind=conn, priorities={})))


def test_best_channel_is_the_argmax_among_consented_channels(planted: Planted) -> None:
    camp = _campaign(channels={"strategy": "best", "model": "channel", "order": ["email", "sms"]})
    scores = scoring.named_scores()
    version = planted.trained["response"].info.version
    with planted.engine.connect() as conn:
        per = {
            ch: dict(
                conn.execute(
                    select(scores.c.customer_id, scores.c[f"score_{ch}"]).where(
                        scores.c.model == "response", scores.c.version == version
                    )
                ).all()
            )
            for ch in ("email", "sms")
        }
    rows = _selected(planted.engine, camp)
    assert len(rows) > N * 0.9
    for cid, channel, *_ in rows:
        want = "sms" if per["sms"][cid] > per["email"][cid] else "email"
        assert channel == want
    assert {r[1] for r in rows} == {"email", "sms"}
    # withdraw SMS consent of a customer who is best reached by SMS: e-mail, the best remaining channel
    sms_best = next(cid for cid, ch, *_ in rows if ch == "sms")
    consent = Consent.__table__
    with planted.engine.begin() as conn:
        conn.execute(
            update(consent)
            .where(consent.c.customer_id == sms_best, consent.c.channel == "sms")
            .values(status="withdrawn")
        )
    try:
        again = {r[0]: r[1] for r in _selected(planted.engine, camp)}
        assert again[sms_best] == "email"
    finally:
        with planted.engine.begin() as conn:
            conn.execute(
                update(consent)
                .where(consent.c.customer_id == sms_best, consent.c.channel == "sms")
                .values(status="granted")
            )
    assert campaign_models.resolve_versions(camp, bind=planted.engine, now=T0) == {"response": version}


def test_response_score_is_the_best_consented_channel(planted: Planted) -> None:
    """`top: {model: response}` ranks by the `response` row: the best channel the customer may get."""
    from audiences.learning.scoring import score_many

    scores, consent = scoring.named_scores(), Consent.__table__
    version = planted.trained["response"].info.version
    with planted.engine.begin() as conn:  # some customers without SMS, a few with no consent at all
        before = conn.execute(select(consent.c.customer_id, consent.c.channel, consent.c.status)).all()
        conn.execute(update(consent).where(consent.c.customer_id % 3 == 0, consent.c.channel == "sms")
                     .values(status="withdrawn"))  # fmt: skip
        conn.execute(update(consent).where(consent.c.customer_id % 50 == 1).values(status="withdrawn"))
    try:
        score_many(["response"], planted.engine, versions={"response": version}, now=T0)
        with planted.engine.connect() as conn:
            rows = conn.execute(
                select(scores.c.customer_id, scores.c.score, scores.c.score_email, scores.c.score_sms).where(
                    scores.c.model == "response", scores.c.version == version
                )
            ).all()
            granted = set(
                conn.execute(
                    select(consent.c.customer_id, consent.c.channel).where(consent.c.status == "granted")
                )
            )
    finally:
        with planted.engine.begin() as conn:  # the module's other tests see the consents they had
            for cid, channel, status in before:
                conn.execute(
                    update(consent)
                    .where(consent.c.customer_id == cid, consent.c.channel == channel)
                    .values(status=status)
                )
        score_many(["response"], planted.engine, versions={"response": version}, now=T0)
    channels = ("email", "sms")
    assert len(rows) == N
    kinds = set()
    for cid, score, *per_channel in rows:
        found = dict(zip(channels, per_channel, strict=True))
        allowed = [found[ch] for ch in channels if (cid, ch) in granted]
        kinds.add(len(allowed))
        expected = max(allowed) if allowed else max(found.values())
        assert score == pytest.approx(expected)
    assert {0, len(channels) - 1, len(channels)} <= kinds  # every case of the rule is exercised


def test_score_top_and_uplift_rules_give_plan_and_run_the_same_audience(planted: Planted) -> None:
    from audiences.plan import funnel

    scores = scoring.named_scores()
    cases = {
        "top": {"top": {"model": "response", "percent": 30}},
        "churn": {"score": {"model": "churn", "min": 0.6}},
        "uplift": {"target": "uplift"},
    }
    for label, audience in cases.items():
        camp = _campaign(audience=audience, channels={"strategy": "first_available", "order": ["email"]})
        first, second = _selected(planted.engine, camp), _selected(planted.engine, camp)
        assert first == second and first, label
        with planted.engine.connect() as conn:
            plan = funnel(conn, camp, T0, priorities={})
        sent = sum(1 for r in first if not r[-1])
        assert plan["recipients"]["messages"] == sent, label
        assert plan["control"]["held_out_messages"] == len(first) - sent, label
        assert plan["models"] == campaign_models.resolve_versions(camp, bind=planted.engine, now=T0), label
    with planted.engine.connect() as conn:
        n_scored = conn.execute(
            select(func.count()).where(
                scores.c.model == "response",
                scores.c.version == plan["models"].get("response", planted.trained["response"].info.version),
            )
        ).scalar_one()
        positive = conn.execute(
            select(func.count()).where(scores.c.model == "uplift", scores.c.score > 0)
        ).scalar_one()
    top = _selected(
        planted.engine, _campaign(audience=cases["top"], channels={"strategy": "first_available"})
    )
    assert abs(len({r[0] for r in top}) - 0.3 * n_scored) <= 0.02 * n_scored
    uplift = _selected(
        planted.engine, _campaign(audience=cases["uplift"], channels={"strategy": "first_available"})
    )
    assert len({r[0] for r in uplift}) == positive


def test_models_command_lists_versions_metrics_and_the_one_used(planted: Planted) -> None:
    from typer.testing import CliRunner

    from relance.cli import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name, tr in planted.trained.items():
        assert name in result.output and tr.info.version in result.output
    assert "auc" in result.output and "qini" in result.output


def test_score_command_scores_every_model_in_one_pass(planted: Planted) -> None:
    from sqlalchemy import func, select
    from typer.testing import CliRunner

    from relance.cli import app

    result = CliRunner().invoke(app, ["score", "--now", T0.isoformat()], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    scores = scoring.named_scores()
    with planted.engine.connect() as conn:
        for name, tr in planted.trained.items():
            assert f"{name} {tr.info.version}: {N:,} customers" in result.output
            rows = select(func.count()).where(scores.c.model == name, scores.c.version == tr.info.version)
            assert conn.execute(rows).scalar_one() == N


def test_current_features_are_those_of_the_as_of_path(planted: Planted) -> None:
    """Scoring aggregates the orders before `now` directly; the values are those of the as-of lookup."""
    import pandas as pd

    with planted.engine.connect() as conn:
        history = dataset.order_history(conn)
        for lo, hi in ((None, None), (1, 700), (1500, 1510)):
            direct = dataset.current_rows(conn, T0, lo, hi)
            as_of = dataset.current_rows(conn, T0, lo, hi, history=history)
            assert len(direct) == (N if lo is None else hi - lo + 1)
            pd.testing.assert_frame_equal(direct, as_of[direct.columns], check_exact=True)
    assert (direct["frequency"] == 0).any() or lo is not None  # customers without orders are covered


def test_written_scores_are_the_models_predictions_and_foreign_keys_stay_on(planted: Planted) -> None:
    """Each distinct feature vector is predicted once and spread: the scores are exactly the model's."""
    from sqlalchemy import text

    scores = scoring.named_scores()
    features = _current(planted.engine)
    distinct, codes = scoring.distinct_rows(features)
    assert len(distinct) < len(features)  # customers who never ordered share vectors
    for name in ("churn", "uplift"):
        info = planted.trained[name].info
        res = scoring.score(name, planted.engine, version=info.version, now=T0)
        assert res.rows == N and set(res.phases) >= {"features", "predict", "write", "commit"}
        with planted.engine.connect() as conn:
            written = conn.execute(
                select(scores.c.customer_id, scores.c.score)
                .where(scores.c.model == name, scores.c.version == info.version)
                .order_by(scores.c.customer_id)
            ).all()
            # the pooled connection that wrote with the foreign key check off has it on again
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.rollback()
            orphan = text(  # a version that exists, a customer that does not
                "INSERT INTO customer_score (version_id, customer_id, score)"
                " SELECT min(id), -5, 0.5 FROM score_version"
            )
            with pytest.raises(Exception, match="FOREIGN KEY"), conn.begin():
                conn.execute(orphan)
        expected = registry.load(info).predict(features)
        assert [r[0] for r in written] == features["customer_id"].tolist()
        assert np.array_equal(np.array([r[1] for r in written]), np.asarray(expected, dtype=float))

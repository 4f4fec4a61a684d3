"""Targeting models (issue 7): features at send time, outcomes, too little data, registry and pinning.

The planted-effect, best-channel and plan-vs-run tests are in tests/test_learning_planted.py.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from audiences.learning import campaign_models, dataset, registry, scoring
from audiences.learning.models import NotEnoughData, train
from core.models import CampaignRun, Customer, Event, LedgerEntry, Order

T = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)


def _customer(conn, ext: str, signup: date | None = None) -> int:
    return conn.execute(
        insert(Customer.__table__)
        .values(external_id=ext, email=f"{ext}@x.test", signup_date=signup, created_at=T, updated_at=T)
        .returning(Customer.__table__.c.id)
    ).scalar_one()


def _order(conn, cid: int, ext: str, at: datetime, euros: int, category: str | None = "shoes") -> None:
    conn.execute(
        insert(Order.__table__).values(
            external_id=ext, customer_id=cid, ordered_at=at, amount_cents=euros * 100, category=category
        )
    )


def _run(conn, key: str, started: datetime) -> int:
    return conn.execute(
        insert(CampaignRun.__table__)
        .values(key=key, campaign="winback", status="completed", started_at=started, created_at=started)
        .returning(CampaignRun.__table__.c.id)
    ).scalar_one()


def _ledger(
    conn, run_id: int, cid: int, sent_at: datetime | None, status: str = "sent", control=False
) -> int:
    return conn.execute(
        insert(LedgerEntry.__table__)
        .values(
            run_id=run_id, campaign="winback", customer_id=cid, channel="email", status=status,
            in_control=control, sent_at=sent_at, created_at=T - timedelta(days=30), updated_at=T,
        )
        .returning(LedgerEntry.__table__.c.id)
    ).scalar_one()  # fmt: skip


def _event(conn, lid: int, cid: int, kind: str, at: datetime, machine=False, revenue=None) -> None:
    conn.execute(
        insert(Event.__table__).values(
            ledger_id=lid, customer_id=cid, type=kind, provider="test", provider_event_id=f"{kind}{lid}{at}",
            occurred_at=at, machine=machine, revenue_cents=revenue,
        )
    )  # fmt: skip


def _rows(engine, until: datetime) -> dict[int, dict]:
    with engine.connect() as conn:
        df = dataset.message_rows(conn, window_days=7, until=until)
    return {int(r["key"]): r for r in df.to_dict("records")}


def test_features_are_those_at_send_time_and_later_orders_change_nothing(engine) -> None:
    sent = T - timedelta(days=20)
    with engine.begin() as conn:
        cid = _customer(conn, "ana", signup=date(2025, 1, 1))
        _order(conn, cid, "o1", sent - timedelta(days=100), 40)
        _order(conn, cid, "o2", sent - timedelta(days=10, hours=3), 60, category="bags")
        run = _run(conn, "r1", sent)
        lid = _ledger(conn, run, cid, sent)
    before = _rows(engine, T)[lid]
    assert before["frequency"] == 2
    assert before["monetary"] == pytest.approx(100.0)
    assert before["avg_basket"] == pytest.approx(50.0)
    assert before["recency_days"] == 10
    assert before["first_order_days"] == 100
    assert before["tenure_days"] == (sent.date() - date(2025, 1, 1)).days
    assert before["n_categories"] == 2
    # an order the message may have caused, and one today: the training features must not move
    with engine.begin() as conn:
        _order(conn, cid, "o3", sent + timedelta(hours=2), 500, category="home")
        _order(conn, cid, "o4", T, 80)
    after = _rows(engine, T)[lid]
    for col in dataset.NUMERIC_FEATURES:
        assert after[col] == before[col], col


def test_outcomes_within_the_window_only_human_opens_and_control_rows(engine) -> None:
    sent = T - timedelta(days=30)
    with engine.begin() as conn:
        run = _run(conn, "r1", sent)
        ids = {name: _customer(conn, name) for name in ("click", "machine", "late", "buyer", "ctl", "unsub")}
        lid = {name: _ledger(conn, run, cid, sent) for name, cid in ids.items() if name != "ctl"}
        lid["ctl"] = _ledger(conn, run, ids["ctl"], None, status="held_out", control=True)
        _event(conn, lid["click"], ids["click"], "clicked", sent + timedelta(hours=5))
        _event(conn, lid["machine"], ids["machine"], "opened", sent + timedelta(minutes=1), machine=True)
        _event(conn, lid["late"], ids["late"], "clicked", sent + timedelta(days=8))
        _event(conn, lid["buyer"], ids["buyer"], "converted", sent + timedelta(days=6), revenue=4990)
        _event(conn, lid["ctl"], ids["ctl"], "converted", sent + timedelta(days=1), revenue=1000)
        _event(conn, lid["unsub"], ids["unsub"], "unsubscribed", sent + timedelta(days=1))
        # a message whose window is still open at T is not a training row yet
        recent = _ledger(conn, run, _customer(conn, "recent"), T - timedelta(days=3))
    rows = _rows(engine, T)
    assert recent not in rows
    got = {name: (rows[i]["responded"], rows[i]["converted"], rows[i]["revenue"]) for name, i in lid.items()}
    assert got == {
        "click": (1, 0, 0.0), "machine": (0, 0, 0.0), "late": (0, 0, 0.0), "buyer": (1, 1, 49.9),
        "ctl": (1, 1, 10.0), "unsub": (0, 0, 0.0),
    }  # fmt: skip
    assert rows[lid["unsub"]]["unsubscribed"] == 1
    assert bool(rows[lid["ctl"]]["in_control"]) is True
    # control rows have no sent_at: their reference time is the run's start
    assert rows[lid["ctl"]]["ref_j"] == pytest.approx(rows[lid["click"]]["ref_j"])


def test_a_window_purchase_without_credit_is_a_conversion_as_for_the_control_group(engine) -> None:
    """Like with like (tracking/attribution.py): a treated customer who bought in the window without
    clicking has a `purchased` event; their label converts, as a control customer's window purchase does."""
    sent = T - timedelta(days=30)
    with engine.begin() as conn:
        run = _run(conn, "r1", sent)
        quiet, held = _customer(conn, "quiet"), _customer(conn, "held")
        treated_row = _ledger(conn, run, quiet, sent)
        control_row = _ledger(conn, run, held, None, status="held_out", control=True)
        _event(conn, treated_row, quiet, "purchased", sent + timedelta(days=2), revenue=3000)
        _event(conn, control_row, held, "converted", sent + timedelta(days=2), revenue=3000)
    rows = _rows(engine, T)
    labels = [
        (rows[i]["responded"], rows[i]["converted"], rows[i]["revenue"]) for i in (treated_row, control_row)
    ]
    assert labels == [(1, 1, 30.0), (1, 1, 30.0)]


def test_churn_snapshot_ignores_orders_after_the_cutoff_except_for_the_label(engine) -> None:
    snap = dataset.Snapshot(cutoff=T - timedelta(days=90), horizon_days=60)
    with engine.begin() as conn:
        stays = _customer(conn, "stays")
        leaves = _customer(conn, "leaves")
        _customer(conn, "never")
        for cid in (stays, leaves):
            _order(conn, cid, f"{cid}-a", snap.cutoff - timedelta(days=40), 30)
        _order(conn, stays, "s-after", snap.cutoff + timedelta(days=10), 999)
        _order(conn, leaves, "l-late", snap.cutoff + timedelta(days=61), 999)  # after the horizon
    with engine.connect() as conn:
        df = dataset.churn_rows(conn, snap).set_index("customer_id")
    assert set(df.index) == {stays, leaves}  # never ordered: no snapshot
    assert df.loc[stays, "churned"] == 0 and df.loc[leaves, "churned"] == 1
    for cid in (stays, leaves):
        assert df.loc[cid, "frequency"] == 1 and df.loc[cid, "monetary"] == 30.0
        assert df.loc[cid, "recency_days"] == 40


def test_too_little_data_says_what_was_found_and_what_is_needed(sqlite_engine, settings) -> None:
    with sqlite_engine.begin() as conn:
        run = _run(conn, "r1", T - timedelta(days=20))
        for i in range(12):
            lid = _ledger(conn, run, _customer(conn, f"c{i}"), T - timedelta(days=20))
            if i < 3:
                _event(conn, lid, i + 1, "clicked", T - timedelta(days=19))
    with pytest.raises(NotEnoughData) as err:
        train("response", sqlite_engine, now=T)
    assert "12 sent messages" in str(err.value) and "1,000 needed" in str(err.value)
    with pytest.raises(NotEnoughData, match=r"uplift: 0 sent messages in runs with a control group found"):
        train("uplift", sqlite_engine, now=T, settings=settings.model_copy(update={"learning_min_rows": 10}))
    with pytest.raises(NotEnoughData, match=r"churn: 0 customer snapshots"):
        train("churn", sqlite_engine, now=T)
    from relance.cli import app

    result = CliRunner().invoke(app, ["train", "response", "--now", T.isoformat()])
    assert result.exit_code == 2
    assert "response: not trained" in result.output and "12 sent messages" in result.output
    assert not (settings.models_dir / "response").exists()  # no silent bad model


def _fake_version(name: str, version: str, passed: bool, auc: float) -> None:
    meta = {"version": version, "passed": passed, "metrics": {"auc": auc}, "floors": {"auc": 0.55}}
    registry.save(name, {"stub": True}, meta)


def test_registry_uses_the_newest_passing_version_unless_pinned(settings) -> None:
    with pytest.raises(registry.ModelNotFound, match="run `relance train churn`"):
        registry.resolve("churn")
    _fake_version("churn", "20260101T000000Z", True, 0.71)
    _fake_version("churn", "20260201T000000Z", True, 0.74)
    _fake_version("churn", "20260301T000000Z", False, 0.52)  # newest, below the floor
    assert [i.version for i in registry.versions("churn")][0] == "20260301T000000Z"
    assert registry.resolve("churn").version == "20260201T000000Z"
    assert registry.resolve("churn", pinned="20260301T000000Z").version == "20260301T000000Z"
    with pytest.raises(registry.ModelNotFound, match="known versions: 20260301T000000Z, 20260201T000000Z"):
        registry.resolve("churn", pinned="2025")
    saved = registry.save("churn", {"stub": 2}, {"version": "20260201T000000Z", "passed": True})
    assert saved.version == "20260201T000000Z-2"  # never overwritten
    assert registry.load(saved) == {"stub": 2}
    meta = json.loads((saved.path / "meta.json").read_text())
    assert meta["model"] == "churn" and meta["version"] == saved.version
    assert registry.canonical("channel") == "response"


def test_selection_reads_the_scores_of_the_resolved_or_pinned_version(db_url, engine, settings) -> None:
    from audiences.rules import RuleContext, RuleError, compile_rule
    from core.spec import Campaign

    with engine.begin() as conn:
        a, b = _customer(conn, "a"), _customer(conn, "b")
        rows = [("20260101T000000Z", a, 0.9), ("20260101T000000Z", b, 0.1),
                ("20260301T000000Z", a, 0.1), ("20260301T000000Z", b, 0.9)]  # fmt: skip
        for version in ("20260101T000000Z", "20260301T000000Z"):
            scoring.insert_scores(conn, "churn", version, [(c, s) for v, c, s in rows if v == version], T)
    _fake_version("churn", "20260101T000000Z", True, 0.7)
    _fake_version("churn", "20260301T000000Z", False, 0.5)

    def chosen(pins: dict[str, str]) -> tuple[set[int], dict]:
        camp = Campaign.model_validate(
            {"name": "c", "message": "m/x", "audience": {"score": {"model": "churn", "min": 0.6}},
             "model_versions": pins}
        )  # fmt: skip
        ctx = RuleContext(T, model_versions=camp.model_versions, bind=engine)
        cond = compile_rule(camp.audience, ctx)
        with engine.connect() as conn:
            ids = set(conn.execute(select(Customer.__table__.c.id).where(cond)).scalars())
        assert campaign_models.resolve_versions(camp, bind=engine, now=T) == ctx.models_used
        return ids, ctx.models_used

    assert chosen({}) == ({a}, {"churn": "20260101T000000Z"})  # the newest passing, not the newest
    assert chosen({"churn": "20260301T000000Z"}) == ({b}, {"churn": "20260301T000000Z"})
    _fake_version("churn", "20260401T000000Z", True, 0.8)  # passes but was never scored: not usable yet
    assert chosen({}) == ({a}, {"churn": "20260101T000000Z"})
    _fake_version("uplift", "20260401T000000Z", True, 0.8)
    ctx = RuleContext(T, bind=engine)
    with pytest.raises(RuleError, match="run `relance score uplift`"):
        compile_rule(
            Campaign.model_validate(
                {"name": "c", "message": "m/x", "audience": {"target": "uplift"}}
            ).audience,
            ctx,
        )


def test_prune_keeps_the_three_most_recently_scored_versions_of_each_score(sqlite_engine) -> None:
    from audiences.learning.scoring import insert_scores, named_scores, prune

    with sqlite_engine.begin() as conn:
        cid = conn.execute(insert(Customer).values(external_id="P1")).inserted_primary_key[0]
        for name in ("churn", "response"):
            for i in (3, 1, 4, 2, 5):  # scored in this order of days, names not sorted
                insert_scores(conn, name, f"v{i}", [(cid, 0.5)], T + timedelta(days=i))
        prune(conn, ["churn"])
        scores = named_scores()
        kept = conn.execute(select(scores.c.model, scores.c.version)).all()
        versions = conn.execute(select(scoring.VERSIONS.c.model, scoring.VERSIONS.c.version)).all()
    assert sorted(v for m, v in kept if m == "churn") == ["v3", "v4", "v5"]
    assert sorted(v for m, v in kept if m == "response") == ["v1", "v2", "v3", "v4", "v5"]  # not asked
    assert sorted(versions) == sorted(kept)  # the pruned versions' rows are gone too


def test_migration_0007_moves_per_channel_scores_into_the_response_row_and_back(db_url) -> None:
    """Versions scored before 0007 (a row per channel) keep their channel scores, also after a downgrade."""
    from alembic import command
    from sqlalchemy import text

    from core.db import alembic_config, get_engine, migrate

    engine = get_engine(db_url)
    command.downgrade(alembic_config(db_url), "0006")  # the fixture migrated to head
    old = [("churn", 1, 0.9), ("response", 1, 0.6), ("response.email", 1, 0.6), ("response.sms", 1, 0.2),
           ("response", 2, 0.3), ("response.sms", 2, 0.3)]  # fmt: skip
    with engine.begin() as conn:
        for cid in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO customer (id, external_id, email, locale, timezone, created_at, updated_at) "
                    "VALUES (:id, :ext, :email, 'fr_FR', 'Europe/Paris', :now, :now)"
                ),
                {"id": cid, "ext": f"M{cid}", "email": f"m{cid}@x.test", "now": T},
            )
        conn.execute(
            text(
                "INSERT INTO customer_score (model, version, customer_id, score, scored_at) "
                "VALUES (:m, 'v1', :c, :s, :now)"
            ),
            [{"m": m, "c": c, "s": s, "now": T} for m, c, s in old],
        )
    migrate(db_url)
    s = scoring.named_scores()
    with engine.connect() as conn:
        got = conn.execute(
            select(
                s.c.model, s.c.customer_id, s.c.score, s.c.score_email, s.c.score_sms, s.c.score_push
            ).order_by(s.c.model, s.c.customer_id)
        ).all()
    assert got == [("churn", 1, 0.9, None, None, None), ("response", 1, 0.6, 0.6, 0.2, None),
                   ("response", 2, 0.3, None, 0.3, None)]  # fmt: skip
    command.downgrade(alembic_config(db_url), "0006")
    with engine.connect() as conn:
        back = conn.execute(text("SELECT model, customer_id, score FROM customer_score")).all()
    assert sorted(back) == sorted(old)


def test_scoring_reads_consented_ids_and_current_features_on_both_databases(engine) -> None:
    """The consent ids come as one aggregated string per channel; the features as of now aggregate the
    orders before it directly: both equal what the row-by-row / as-of paths give, on each database."""
    import numpy as np
    import pandas as pd

    from audiences.consent import set_consent
    from audiences.learning import scoring

    with engine.begin() as conn:
        ids = [_customer(conn, f"c{i}", signup=date(2025, 1, 1) if i % 2 else None) for i in range(5)]
        for i, cid in enumerate(ids):
            for day in range(i):  # customer i has i orders, one of them after `now`
                _order(conn, cid, f"o{i}-{day}", T - timedelta(days=10 * day - 5), 10 + day,
                       category=None if day == 2 else f"k{day % 3}")  # fmt: skip
        set_consent(conn, ids[0], "email", "granted", "test")
        set_consent(conn, ids[3], "email", "granted", "test")
        set_consent(conn, ids[1], "email", "withdrawn", "test")
        set_consent(conn, ids[1], "sms", "granted", "test")
    with engine.connect() as conn:
        found = scoring._consented(conn, ["email", "sms", "push"])
        direct = dataset.current_rows(conn, T)
        as_of = dataset.current_rows(conn, T, history=dataset.order_history(conn))
    assert found["email"].tolist() == sorted([ids[0], ids[3]])
    assert found["sms"].tolist() == [ids[1]] and found["push"].dtype == np.int64 and not len(found["push"])
    pd.testing.assert_frame_equal(direct, as_of[direct.columns], check_exact=True)
    assert direct["frequency"].tolist() == [0, 0, 1, 2, 3]  # the order after `now` is not counted
    assert direct["n_categories"].tolist() == [0, 0, 1, 1, 2]  # distinct, NULL category not counted

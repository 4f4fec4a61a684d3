"""Each rule kind on a small hand-checked base, compiled to SQL and run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from audiences.learning.scoring import insert_scores
from audiences.rules import CUSTOMER_FIELDS, FEATURES, RuleError
from tests.test_selection_support import T0, add_customer, add_run, add_sent, campaign, members

NO_CAPS_ALL = {"channels": {"strategy": "first_available", "order": ["email"]}}


def aud(rule: dict, **kw) -> object:
    return campaign(audience=rule, **NO_CAPS_ALL, **kw)


@pytest.fixture
def base(engine):
    """Five customers whose every attribute below is checked by hand."""
    with engine.begin() as c:
        add_customer(
            c, "ana", country="FR", city="Paris", birth_year=1990, signup_date=date(2020, 1, 1), gender="F",
            orders=[(10, "mode", 50), (40, "beaute", 30)], interests=("yoga", "bio"),
        )  # fmt: skip
        add_customer(
            c, "bob", country="BE", city=None, birth_year=1960, signup_date=date(2025, 12, 1),
            orders=[(90, "mode", 200), (100, "mode", 100), (120, "sport", 80)], interests=("running",),
        )  # fmt: skip
        add_customer(c, "cy", country="FR", city="Lyon", birth_year=2000, orders=[(365, "maison", 20)])
        add_customer(c, "dee", country="FR", city="Paris")  # no order, no features row
        add_customer(c, "eve", country="FR", city="Paris", erased_at=T0)  # erased: never selected
    return engine


def test_field_rules(base):
    with base.connect() as c:
        assert members(c, aud({"field": "country", "eq": "FR"})) == {"ana", "cy", "dee"}
        assert members(c, aud({"field": "city", "in": ["Paris", "Lyon"]})) == {"ana", "cy", "dee"}
        assert members(c, aud({"field": "age", "gte": 30})) == {"ana", "bob"}  # 2026-1990 = 36
        assert members(c, aud({"field": "age", "between": [20, 40]})) == {"ana", "cy"}
        assert members(c, aud({"field": "signup_date", "gte": date(2025, 1, 1)})) == {"bob"}
        assert members(c, aud({"field": "signup_date", "is_null": True})) == {"cy", "dee"}
        # `not` counts an unknown city as "not in Paris"
        assert members(c, aud({"not": {"field": "city", "eq": "Paris"}})) == {"bob", "cy"}


def test_feature_rules_use_now_not_the_stored_recency(base):
    with base.connect() as c:
        assert members(c, aud({"feature": "recency_days", "lt": 90})) == {"ana"}
        assert members(c, aud({"feature": "recency_days", "lte": 90})) == {"ana", "bob"}
        assert members(c, aud({"feature": "recency_days", "eq": 90})) == {"bob"}
        assert members(c, aud({"feature": "recency_days", "gt": 90})) == {"cy"}
        assert members(c, aud({"feature": "recency_days", "is_null": True})) == {"dee"}
        # 30 days later the same rule sees everyone 30 days older, without a feature refresh
        later = T0 + timedelta(days=30)
        assert members(c, aud({"feature": "recency_days", "lt": 90}), now=later) == {"ana"}
        assert members(c, aud({"feature": "recency_days", "gte": 100}), now=later) == {"bob", "cy"}
        # money is written in euros
        assert members(c, aud({"feature": "monetary", "gte": 380})) == {"bob"}
        assert members(c, aud({"feature": "monetary", "lt": 50})) == {"cy", "dee"}
        assert members(c, aud({"feature": "avg_basket", "between": [30, 50]})) == {"ana"}
        assert members(c, aud({"feature": "frequency", "gte": 2})) == {"ana", "bob"}
        assert members(c, aud({"feature": "frequency", "eq": 0})) == {"dee"}
        assert members(c, aud({"feature": "favourite_category", "eq": "mode"})) == {"ana", "bob"}
        # tenure: signup date, else first order (cy: 365 days)
        assert members(c, aud({"feature": "tenure_days", "gte": 365})) == {"ana", "cy"}
        assert members(c, aud({"feature": "tenure_days", "lt": 100})) == {"bob"}


def test_interest_bought_and_combinators(base):
    with base.connect() as c:
        assert members(c, aud({"interest": "yoga"})) == {"ana"}
        assert members(c, aud({"interest": ["yoga", "running"]})) == {"ana", "bob"}
        assert members(c, aud({"bought": {"category": "mode", "within_days": 30}})) == {"ana"}
        assert members(c, aud({"bought": {"category": "mode", "within_days": 95}})) == {"ana", "bob"}
        assert members(c, aud({"bought": {"category": "mode", "min_orders": 2}})) == {"bob"}
        assert members(c, aud({"bought": {"product": "maison-p"}})) == {"cy"}
        assert members(c, aud({"not": {"bought": {"category": "mode"}}})) == {"cy", "dee"}
        rule = {
            "all": [
                {"field": "country", "eq": "FR"},
                {"any": [{"interest": "bio"}, {"feature": "frequency", "eq": 0}]},
            ]
        }  # noqa: E501
        assert members(c, aud(rule)) == {"ana", "dee"}


def test_past_campaign_rules(base):
    with base.begin() as c:
        run = add_run(c, "welcome")
        ids = {r.external_id: r.id for r in c.exec_driver_sql("SELECT id, external_id FROM customer")}
        add_sent(c, run, "welcome", ids["ana"], "email", T0 - timedelta(days=3), "clicked")
        add_sent(c, run, "welcome", ids["bob"], "email", T0 - timedelta(days=40), "delivered")
        add_sent(c, run, "welcome", ids["cy"], "email", T0 - timedelta(days=3), "failed")
    with base.connect() as c:
        assert members(c, aud({"campaign": {"name": "welcome"}})) == {"ana", "bob"}
        assert members(c, aud({"campaign": {"name": "welcome", "within_days": 7}})) == {"ana"}
        assert members(c, aud({"campaign": {"name": "welcome", "event": "opened"}})) == {"ana"}
        assert members(c, aud({"campaign": {"name": "welcome", "event": "converted"}})) == set()
        assert members(c, aud({"not": {"campaign": {"name": "welcome"}}})) == {"cy", "dee"}


def test_segments_and_scores(base):
    segs = {"parisians": campaign(audience={"field": "city", "eq": "Paris"}).audience}
    with base.connect() as c:
        assert members(c, aud({"segment": "parisians"}), segments=segs) == {"ana", "dee"}
        with pytest.raises(RuleError, match="did you mean `parisians`"):
            members(c, aud({"segment": "parisian"}), segments=segs)
        with pytest.raises(RuleError, match=r"no scores for model churn: run `relance train churn`"):
            members(c, aud({"score": {"model": "churn", "min": 0.5}}))
    with base.begin() as c:
        ids = {r.external_id: r.id for r in c.exec_driver_sql("SELECT id, external_id FROM customer")}
        rows = [
            ("v1", "ana", 0.9),
            ("v1", "bob", 0.2),
            ("v1", "cy", 0.6),
            ("v2", "bob", 0.95),
            ("v2", "cy", 0.1),
        ]
        for version in ("v1", "v2"):
            at = T0 - timedelta(days=3 if version == "v1" else 1)
            pairs = [(ids[ext], score) for v, ext, score in rows if v == version]
            insert_scores(c, "churn", version, pairs, at)
    with base.connect() as c:
        assert members(c, aud({"score": {"model": "churn", "min": 0.5}})) == {"bob"}  # newest: v2
        pinned = aud({"score": {"model": "churn", "min": 0.5}}, model_versions={"churn": "v1"})
        assert members(c, pinned) == {"ana", "cy"}
        top = aud({"top": {"model": "churn", "percent": 50}}, model_versions={"churn": "v1"})
        assert members(c, top) == {"ana", "cy"}


def test_unknown_names_suggest_the_right_one(base):
    with base.connect() as c:
        with pytest.raises(RuleError, match="did you mean `recency_days`"):
            members(c, aud({"feature": "recency_day", "lt": 3}))
        with pytest.raises(RuleError, match="did you mean `country`"):
            members(c, aud({"field": "contry", "eq": "FR"}))
    assert {"age", "country", "signup_date"} <= set(CUSTOMER_FIELDS)
    assert {"recency_days", "monetary", "tenure_days"} <= set(FEATURES)

"""build_selection: consent, suppression, caps, priority, windows, control group and channel strategies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from audiences import assign
from audiences.rules import RuleError
from audiences.selection import SelectionError, build_selection
from tests.test_selection_support import T0, add_customer, add_run, add_sent, campaign, selected, suppress

ALL = {"strategy": "all", "order": ["email", "sms", "push"]}


def test_consent_address_and_suppression(engine):
    with engine.begin() as c:
        add_customer(c, "full")
        add_customer(c, "no-sms-consent", consent=("email", "push"))
        add_customer(c, "stop", withdrawn=("sms",))  # replied STOP: consent withdrawn
        add_customer(c, "no-phone", phone=None)
        add_customer(c, "no-device", device=False)
        add_customer(c, "unsub-email")
        add_customer(c, "banned")
        suppress(c, "unsub-email@example.fr", "email")
        suppress(c, "banned@example.fr", "*")  # every channel
    with engine.connect() as c:
        got = selected(c, campaign(channels=ALL))
    by = {}
    for ext, ch in got:
        by.setdefault(ext, set()).add(ch)
    assert by == {
        "full": {"email", "sms", "push"},
        "no-sms-consent": {"email", "push"},
        "stop": {"email", "push"},
        "no-phone": {"email", "push"},
        "no-device": {"email", "sms"},
        "unsub-email": {"sms", "push"},
    }


def test_channel_strategies(engine):
    with engine.begin() as c:
        add_customer(c, "likes-sms", preferred_channel="sms")
        add_customer(c, "likes-sms-no-consent", preferred_channel="sms", consent=("email", "push"))
        add_customer(c, "likes-push", preferred_channel="push")
        add_customer(c, "push-only", consent=("push",))
    with engine.connect() as c:
        pref = selected(c, campaign(channels={"strategy": "preferred", "order": ["email", "sms", "push"]}))
        assert pref == {
            ("likes-sms", "sms"), ("likes-sms-no-consent", "email"),
            ("likes-push", "push"), ("push-only", "push"),
        }  # fmt: skip
        first = selected(c, campaign(channels={"strategy": "first_available", "order": ["sms", "push"]}))
        assert first == {
            ("likes-sms", "sms"), ("likes-sms-no-consent", "push"),
            ("likes-push", "sms"), ("push-only", "push"),
        }  # fmt: skip
        only_email = selected(c, campaign(channels={"strategy": "preferred", "order": ["email"]}))
        assert {ext for ext, _ in only_email} == {"likes-sms", "likes-sms-no-consent", "likes-push"}
        # `best` is delegated to the targeting models: without scores, a clear "train first" error
        with pytest.raises((SelectionError, RuleError), match="relance train|trained channel model"):
            selected(c, campaign(channels={"strategy": "best", "model": "channel"}))


def test_frequency_caps_count_recent_sends_across_campaigns(engine):
    with engine.begin() as c:
        busy = add_customer(c, "busy")  # 3 messages this week: global cap 3/7d reached
        sms_week = add_customer(c, "sms-this-week", preferred_channel="sms")  # 1 SMS: SMS capped, e-mail ok
        old = add_customer(c, "old-sends")  # 3 messages 10 days ago: free again
        add_customer(c, "fresh", preferred_channel="sms")
        for i in range(3):
            run = add_run(c, "other")
            add_sent(c, run, "other", busy, "email", T0 - timedelta(days=i + 1))
            add_sent(c, run, "other", old, "email", T0 - timedelta(days=10 + i))
        add_sent(c, run, "other", sms_week, "sms", T0 - timedelta(days=2))
        add_sent(c, run, "other", old, "push", T0 - timedelta(days=1), status="failed")  # not a contact
    prefer_sms = {"strategy": "preferred", "order": ["email", "sms"]}
    with engine.connect() as c:
        got = selected(c, campaign(channels=prefer_sms))
        assert got == {("sms-this-week", "email"), ("old-sends", "email"), ("fresh", "sms")}
        # a campaign cap of 1 message in 14 days removes old-sends too
        strict = campaign(channels=prefer_sms, frequency_caps=[{"max_messages": 1, "days": 14}])
        assert {e for e, _ in selected(c, strict)} == {"fresh"}


def test_priority_excludes_customers_taken_today_by_a_higher_priority_campaign(engine):
    with engine.begin() as c:
        taken = add_customer(c, "taken")
        low = add_customer(c, "taken-by-low")
        add_customer(c, "free")
        run_hi, run_lo = add_run(c, "black-friday"), add_run(c, "newsletter")
        add_sent(c, run_hi, "black-friday", taken, "email", T0 - timedelta(hours=1), status="planned")
        add_sent(c, run_lo, "newsletter", low, "email", T0 - timedelta(hours=1))
        yesterday = add_customer(c, "yesterday")
        add_sent(c, run_hi, "black-friday", yesterday, "email", T0 - timedelta(days=1), status="held_out")
    prios = {"black-friday": 90, "newsletter": 10, "test": 50}
    camp = campaign(channels={"strategy": "first_available", "order": ["email"]}, priority=50)
    with engine.connect() as c:
        assert {e for e, _ in selected(c, camp, priorities=prios)} == {"taken-by-low", "free", "yesterday"}
        top = campaign(channels={"strategy": "first_available", "order": ["email"]}, priority=95)
        assert {e for e, _ in selected(c, top, priorities=prios)} == {
            "taken",
            "taken-by-low",
            "free",
            "yesterday",
        }


def test_sms_hours_in_each_customer_time_zone(engine):
    with engine.begin() as c:
        add_customer(c, "paris", timezone="Europe/Paris", consent=("sms",))
        add_customer(c, "reunion", timezone="Indian/Reunion", consent=("sms",))
        add_customer(
            c, "both-channels", timezone="Indian/Reunion", consent=("sms", "email"), preferred_channel="sms"
        )
    sms = campaign(channels={"strategy": "preferred", "order": ["sms", "email"]})
    with engine.connect() as c:
        evening = datetime(2026, 3, 3, 16, 30, tzinfo=UTC)  # Paris 17:30, Reunion 20:30
        assert selected(c, sms, evening) == {("paris", "sms"), ("both-channels", "email")}  # falls back
        morning = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)  # Paris 05:30, Reunion 08:30
        assert selected(c, sms, morning) == {("reunion", "sms"), ("both-channels", "sms")}
        sunday = datetime(2026, 3, 8, 10, 0, tzinfo=UTC)
        assert selected(c, sms, sunday) == {("both-channels", "email")}
        bastille = datetime(2026, 7, 14, 10, 0, tzinfo=UTC)
        assert selected(c, sms, bastille) == {("both-channels", "email")}
        whit_monday = datetime(2026, 5, 25, 10, 0, tzinfo=UTC)
        assert selected(c, sms, whit_monday) == {("both-channels", "email")}
        # window=False lists who would be reached once the window opens (to defer them)
        assert {e for e, _ in selected(c, sms, sunday, window=False)} == {"paris", "reunion", "both-channels"}


def test_control_group_and_variants_are_stable_and_match_python(engine, monkeypatch):
    with engine.begin() as c:
        for i in range(400):
            add_customer(c, f"c{i}", consent=("email",), device=False)
    camp = campaign(
        channels={"strategy": "preferred", "order": ["email"]},
        control_group={"percent": 20},
        variants=[{"name": "a", "weight": 1, "message": "m/a"}, {"name": "b", "weight": 3, "message": "m/b"}],
    )
    with engine.connect() as c:
        rows = c.execute(build_selection(camp, T0, bind=c, priorities={})).all()
        again = c.execute(build_selection(camp, T0, bind=c, priorities={})).all()
    assert sorted(rows) == sorted(again)
    assert len(rows) == 400
    for r in rows:
        assert bool(r.in_control) == assign.in_control(r.customer_id, "test", 20)
        assert r.variant == assign.variant_of(r.customer_id, "test", ["a", "b"], [1, 3])
        assert r.message == f"m/{r.variant}"
    held = sum(bool(r.in_control) for r in rows)
    assert 50 <= held <= 110  # 20% of 400 = 80


def test_global_control_group_is_excluded_from_every_campaign(engine, monkeypatch):
    from core.settings import get_settings

    with engine.begin() as c:
        ids = [add_customer(c, f"g{i}", consent=("email",), device=False) for i in range(300)]
    monkeypatch.setenv("RELANCE_GLOBAL_CONTROL_PERCENT", "10")
    get_settings.cache_clear()
    camp = campaign(channels={"strategy": "preferred", "order": ["email"]})
    with engine.connect() as c:
        got = {r.customer_id for r in c.execute(build_selection(camp, T0, bind=c, priorities={}))}
        n = c.execute(select(func.count()).select_from(build_selection(camp, T0, bind=c).subquery())).scalar()
    expected = {i for i in ids if not assign.in_global_control(i, 10)}
    assert got == expected and n == len(expected) and 240 <= len(got) <= 290

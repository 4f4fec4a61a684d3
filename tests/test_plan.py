"""The plan's funnel equals an independent pandas computation; explain and the CLI command."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import text
from typer.testing import CliRunner

from audiences import assign
from audiences.plan import explain, funnel
from audiences.policy import campaign_policy
from core.settings import get_settings
from tests.test_selection_support import add_customer, add_run, add_sent, campaign, suppress

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # Guadeloupe 06:00: SMS and push closed there
ZONES = ["Europe/Paris", "Europe/Paris", "Indian/Reunion", "America/Guadeloupe"]
CAMP = dict(
    audience={"all": [{"field": "country", "eq": "FR"}, {"feature": "frequency", "gte": 1}]},
    channels={"strategy": "preferred", "order": ["email", "sms", "push"]},
    control_group={"percent": 10},
)


def _random_base(engine, n: int = 240) -> None:
    rnd = random.Random(7)
    with engine.begin() as c:
        runs = [add_run(c, "past") for _ in range(3)]
        for i in range(n):
            consent = tuple(ch for ch in ("email", "sms", "push") if rnd.random() < 0.7)
            cid = add_customer(
                c, f"k{i}", consent=consent, withdrawn=tuple(ch for ch in consent if rnd.random() < 0.1),
                email=None if rnd.random() < 0.1 else "", device=rnd.random() < 0.5,
                country=rnd.choice(["FR", "FR", "BE"]), timezone=rnd.choice(ZONES),
                preferred_channel=rnd.choice([None, "email", "sms", "push"]),
                orders=[(rnd.randint(1, 400), "mode", 40)] * rnd.randint(0, 2), now=NOW,
            )  # fmt: skip
            if rnd.random() < 0.1:
                suppress(c, f"k{i}@example.fr", rnd.choice(["email", "*"]))
            if rnd.random() < 0.05:  # erased (by plain SQL, as an operator could): never in the funnel
                c.execute(text("UPDATE customer SET erased_at = :t WHERE id = :id"), {"t": NOW, "id": cid})
            for r in runs:
                if rnd.random() < 0.4:
                    add_sent(
                        c,
                        r,
                        "past",
                        cid,
                        rnd.choice(["email", "sms"]),
                        NOW - timedelta(days=rnd.randint(1, 9)),
                    )


def _expected(engine) -> dict:
    """The funnel recomputed with pandas from the raw tables."""
    with engine.connect() as c:
        cust = pd.read_sql("SELECT * FROM customer", c)
        feats = pd.read_sql("SELECT customer_id, frequency FROM customer_features", c)
        consent = pd.read_sql("SELECT * FROM consent WHERE status = 'granted'", c)
        supp = pd.read_sql("SELECT * FROM suppression", c)
        dev = pd.read_sql("SELECT customer_id FROM device WHERE active", c)
        ledger = pd.read_sql("SELECT customer_id, channel, sent_at FROM ledger", c)
    ledger["sent_at"] = pd.to_datetime(ledger["sent_at"], utc=True)
    recent = ledger[ledger.sent_at >= NOW - timedelta(days=7)]
    n_all = recent.groupby("customer_id").size()
    n_sms = recent[recent.channel == "sms"].groupby("customer_id").size()
    cust = cust.merge(feats, left_on="id", right_on="customer_id", how="left")
    seg = cust[(cust.country == "FR") & (cust.frequency.fillna(0) >= 1) & cust.erased_at.isna()].copy()
    policy = campaign_policy(campaign(**CAMP), get_settings())
    ok = {}
    for ch in ("email", "sms", "push"):
        granted = set(consent[consent.channel == ch].customer_id)
        address = {
            "email": seg.email.notna(),
            "sms": seg.phone.notna(),
            "push": seg.id.isin(set(dev.customer_id)),
        }[ch]
        c1 = seg.id.isin(granted) & address
        own = set(supp[supp.channel.isin([ch, "*"])].address)
        star = set(supp[supp.channel == "*"].address)
        mine = seg.phone if ch == "sms" else seg.email
        other = seg.email if ch == "sms" else seg.phone
        sup = mine.isin(own) | other.isin(star) if ch != "push" else seg.email.isin(own) | seg.phone.isin(own)
        c2 = c1 & ~sup
        capped = seg.id.map(n_all).fillna(0) >= 3
        if ch == "sms":
            capped |= seg.id.map(n_sms).fillna(0) >= 1
        c3 = c2 & ~capped
        c4 = c3 & seg.timezone.map(lambda tz, ch=ch: policy.allowed(ch, NOW, tz))
        ok[ch] = (c1, c2, c3, c4)
    counts = [len(cust[cust.erased_at.isna()]), len(seg)]
    for k in range(4):
        counts.append(int((ok["email"][k] | ok["sms"][k] | ok["push"][k]).sum()))
    final = seg[ok["email"][3] | ok["sms"][3] | ok["push"][3]].copy()

    def channel(row) -> str:
        order = ["email", "sms", "push"]
        usable = [ch for ch in order if ok[ch][3][row.name]]
        return row.preferred_channel if row.preferred_channel in usable else usable[0]

    final["channel"] = final.apply(channel, axis=1)
    final["control"] = final.id.map(lambda i: assign.in_control(int(i), "test", 10))
    sent = final[~final.control]
    return {
        "counts": counts,
        "by_channel": sent.channel.value_counts().to_dict(),
        "held": int(final.control.sum()),
    }


def test_funnel_matches_an_independent_pandas_computation(engine):
    _random_base(engine)
    with engine.connect() as c:
        got = funnel(c, campaign(**CAMP), NOW, priorities={})
    exp = _expected(engine)
    steps = {s["step"]: s["count"] for s in got["steps"]}
    assert [
        steps[k] for k in ("base", "segment", "consent", "suppression", "frequency_cap", "window")
    ] == exp["counts"]
    assert steps["priority"] == steps["frequency_cap"] and steps["global_control"] == steps["window"]
    assert got["by_channel"] == exp["by_channel"]
    assert got["control"]["held_out_customers"] == exp["held"]
    assert got["recipients"]["customers"] + exp["held"] == steps["global_control"]
    assert all(s["removed"] >= 0 for s in got["steps"])
    assert got["window"]["deferred_customers"] == steps["frequency_cap"] - steps["window"]
    if got["window"]["deferred_customers"]:
        assert {z["timezone"] for z in got["window"]["by_timezone"]} == {"America/Guadeloupe"}
    import json

    json.dumps(got)  # stored as campaign_run.funnel


def test_explain_one_customer(engine):
    with engine.begin() as c:
        add_customer(c, "in", country="FR", orders=[(5, "mode", 40)], consent=("email",), now=NOW)
        add_customer(c, "be", country="BE", orders=[(5, "mode", 40)], now=NOW)
        add_customer(c, "stop", country="FR", orders=[(5, "mode", 40)], consent=("sms",), withdrawn=("sms",))
        add_customer(
            c, "gp", country="FR", orders=[(5, "mode", 40)], consent=("sms",), timezone="America/Guadeloupe"
        )
    camp = campaign(**{**CAMP, "control_group": {"percent": 0}})
    with engine.connect() as c:
        e = explain(c, camp, NOW, "in", priorities={})
        assert e["in"] and e["messages"] == [
            {"channel": "email", "variant": "default", "message": "promo/main"}
        ]
        e = explain(c, camp, NOW, "be", priorities={})
        assert not e["in"] and e["step"] == "segment" and "country" in e["why"]
        e = explain(c, camp, NOW, "stop", priorities={})
        assert e["step"] == "consent" and e["channels"]["sms"] == "no granted consent or no valid address"
        e = explain(c, camp, NOW, "gp", priorities={})
        assert e["step"] == "window" and "SMS hours" in e["why"]
        assert explain(c, camp, NOW, "nobody", priorities={})["why"] == "no customer with this id"


def test_plan_command_prints_the_funnel_explains_and_writes_csv(db_url, tmp_path, monkeypatch):
    from core.db import get_engine
    from relance.cli.app import app

    engine = get_engine(db_url)
    with engine.begin() as c:
        for i in range(30):
            add_customer(c, f"p{i}", country="FR", orders=[(5, "mode", 40)], consent=("email",), now=NOW)
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(tmp_path))
    get_settings.cache_clear()
    path = tmp_path / "promo.yaml"
    path.write_text(
        "name: promo\nmessage: promo/main\npriority: 50\ncontrol_group: {percent: 10}\n"
        "audience:\n  all:\n    - field: country\n      eq: FR\n"
        "channels: {strategy: preferred, order: [email, sms]}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    out = tmp_path / "out.csv"
    res = runner.invoke(app, ["plan", str(path), "--now", NOW.isoformat(), "--output", "csv", str(out)])
    assert res.exit_code == 0, res.output
    assert "frequency_cap" in res.output and "estimated cost" in res.output
    rows = pd.read_csv(out)
    assert len(rows) == 30 and set(rows.channel) == {"email"}
    held = {int(i) for i in rows[rows.in_control == 1].customer_id}
    assert held == {int(i) for i in rows.customer_id if assign.in_control(int(i), "promo", 10)}
    res = runner.invoke(app, ["plan", str(path), "--now", NOW.isoformat(), "--explain", "p3"])
    assert res.exit_code == 0 and "customer p3" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmessage: m\naudience: {feature: recency_day, lt: 3}\n", encoding="utf-8")
    res = runner.invoke(app, ["plan", str(bad)])
    assert res.exit_code == 1 and "recency_days" in res.output

"""Reports: figures against an independent computation, intervals on known inputs, alerts."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from core.models import CampaignRun, Customer, Event, LedgerEntry, Status
from delivery import alerts
from reporting.report import build_report
from reporting.report_render import print_report, write_csv, write_html
from reporting.stats import MIN_CONTROL, newcombe_difference, two_proportion_p_value, uplift, wilson

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def make_ledger(conn, n: int = 400, seed: int = 7, campaign: str = "winback", key: str = "winback:1"):
    """A hand-made run with events; returns the plain-Python truth it was built from."""
    rng = random.Random(seed)
    run_id = conn.execute(
        insert(CampaignRun.__table__).values(
            key=key,
            campaign=campaign,
            status="completed",
            created_at=T0,
            started_at=T0,
            funnel=json.dumps(  # the shape audiences.plan.funnel stores
                {
                    "steps": [
                        {"step": "base", "count": n * 2, "removed": 0, "why": "customers not erased"},
                        {
                            "step": "segment",
                            "count": n,
                            "removed": n,
                            "why": "do not match the audience rules",
                        },
                    ]
                }
            ),
        )
    ).inserted_primary_key[0]
    truth = []
    event_rows = []
    for i in range(n):
        cid = conn.execute(
            insert(Customer.__table__).values(
                external_id=f"{key}-c{i}", locale=rng.choice(["fr_FR", "en_GB"])
            )
        ).inserted_primary_key[0]
        control = rng.random() < 0.3
        channel = rng.choice(["email", "sms"])
        variant = rng.choice(["a", "b"])
        row = {"control": control, "channel": channel, "variant": variant, "events": set(), "revenue": 0}
        if control:
            status = Status.held_out
        else:
            status = rng.choices(
                [Status.sent, Status.delivered, Status.opened, Status.clicked, Status.bounced, Status.failed],
                [1, 3, 2, 2, 1, 1],
            )[0]
        lid = conn.execute(
            insert(LedgerEntry.__table__).values(
                run_id=run_id,
                campaign=campaign,
                customer_id=cid,
                channel=channel,
                variant=variant,
                in_control=control,
                status=status,
                sent_at=None if control else T0,
                cost_units=2 if channel == "sms" else None,
            )
        ).inserted_primary_key[0]
        kinds = []
        if status in (Status.delivered, Status.opened, Status.clicked):
            kinds.append("delivered")
        if status in (Status.opened, Status.clicked):
            kinds.append("opened")
        if status == Status.clicked:
            kinds.append("clicked")
        if status == Status.bounced:
            kinds.append("bounced")
        if not control and status != Status.bounced and rng.random() < 0.05:
            kinds.append("unsubscribed")
        if (status in (Status.clicked, Status.opened) and rng.random() < 0.5) or (
            control and rng.random() < 0.1
        ):
            kinds.append("converted")
        for k in kinds:
            revenue = rng.randint(1000, 9000) if k == "converted" else None
            row["revenue"] += revenue or 0
            event_rows.append(
                {
                    "ledger_id": lid,
                    "customer_id": cid,
                    "run_id": run_id,
                    "type": k,
                    "provider": "test",
                    "provider_event_id": f"{key}-{lid}-{k}",
                    "occurred_at": T0 + timedelta(hours=rng.randint(0, 30)),
                    "subtype": "hard" if k == "bounced" else None,
                    "revenue_cents": revenue,
                }
            )
        row["status"] = status
        row["events"] = set(kinds)
        truth.append(row)
    conn.execute(insert(Event.__table__), event_rows)
    return run_id, truth


def test_figures_match_an_independent_computation(engine):
    with engine.begin() as conn:
        _, truth = make_ledger(conn)
    with engine.connect() as conn:
        report = build_report(conn, "winback")

    treated = [r for r in truth if not r["control"]]
    control = [r for r in truth if r["control"]]
    t = report.totals
    assert t.messages == len(truth)
    assert t.held_out == len(control)
    assert t.sent == sum(r["status"] != Status.failed for r in treated)
    assert t.delivered == sum("delivered" in r["events"] for r in treated)
    assert t.opened == sum("opened" in r["events"] for r in treated)
    assert t.clicked == sum("clicked" in r["events"] for r in treated)
    assert t.converted == sum("converted" in r["events"] for r in treated)
    assert t.control_converted == sum("converted" in r["events"] for r in control)
    assert t.bounced_hard == sum(r["status"] == Status.bounced for r in treated)
    assert t.unsubscribed == sum("unsubscribed" in r["events"] for r in treated)
    assert t.failed == sum(r["status"] == Status.failed for r in treated)
    assert t.revenue_cents == sum(r["revenue"] for r in treated)
    assert t.control_revenue_cents == sum(r["revenue"] for r in control)

    for variant in ("a", "b"):
        rows = [r for r in treated if r["variant"] == variant]
        assert report.by_variant[variant].clicked == sum("clicked" in r["events"] for r in rows)
        u = report.uplift_by_variant[variant]
        assert u.treated_n == len(rows)
        assert u.control_n == len(control)  # every variant is compared with the whole control group
        assert u.treated_conversions == sum("converted" in r["events"] for r in rows)
    sms_sent = [r for r in treated if r["channel"] == "sms" and r["status"] != Status.failed]
    assert report.by_channel["sms"].sms_segments == 2 * len(sms_sent)
    assert report.cost["sms"] == pytest.approx(round(2 * len(sms_sent) * 0.045, 2))

    u = report.uplift_total
    assert (u.treated_n, u.control_n) == (len(treated), len(control))
    expected = newcombe_difference(u.treated_conversions, len(treated), u.control_conversions, len(control))
    assert u.absolute == expected
    mean_t = sum(r["revenue"] for r in treated) / 100 / len(treated)
    mean_c = sum(r["revenue"] for r in control) / 100 / len(control)
    assert u.revenue_per_customer.estimate == pytest.approx(mean_t - mean_c)
    assert [s["step"] for s in report.funnel] == ["base", "segment"]
    assert sum(n for _, kind, n in report.timeline if kind == "clicked") == t.clicked


def test_newcombe_interval_matches_the_published_values():
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10.
    d = newcombe_difference(56, 70, 48, 80)
    assert (round(d.estimate, 4), round(d.low, 4), round(d.high, 4)) == (0.2, 0.0524, 0.3339)
    d = newcombe_difference(9, 10, 3, 10)
    assert (round(d.low, 4), round(d.high, 4)) == (0.1705, 0.8090)
    low, high = wilson(81, 263)  # Newcombe (1998) one-sample example: 0.2553 to 0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert two_proportion_p_value(56, 70, 48, 80) == pytest.approx(0.00805, abs=1e-4)


def test_too_small_control_group_says_so():
    u = uplift(5000, 250, MIN_CONTROL - 1, 3)
    assert "control group too small to conclude" in u.conclusion
    assert f"{MIN_CONTROL - 1} customers" in u.conclusion
    big = uplift(5000, 250, 5000, 150)
    assert "significantly" in big.conclusion and big.absolute.low > 0
    assert "no control group" in uplift(100, 5, 0, 0).conclusion


def test_alert_pauses_the_run_and_shows_in_report(sqlite_engine, settings):
    with sqlite_engine.begin() as conn:
        run_id = conn.execute(
            insert(CampaignRun.__table__).values(
                key="promo:1", campaign="promo", status="running", created_at=T0
            )
        ).inserted_primary_key[0]
        rows = []
        for i in range(300):
            cid = conn.execute(insert(Customer.__table__).values(external_id=f"p{i}")).inserted_primary_key[0]
            rows.append(
                {
                    "run_id": run_id,
                    "campaign": "promo",
                    "customer_id": cid,
                    "channel": "email",
                    "status": Status.bounced if i < 30 else Status.delivered,
                }
            )
        conn.execute(insert(LedgerEntry.__table__), rows)
        crossed = alerts.pause_if_crossed(conn, run_id)
    assert [a.name for a in crossed] == ["hard bounces"]
    assert crossed[0].rate == pytest.approx(0.1)
    with sqlite_engine.connect() as conn:
        run = conn.execute(select(CampaignRun.__table__).where(CampaignRun.__table__.c.id == run_id)).one()
        assert run.status == "paused" and "hard bounces 10.00%" in run.paused_reason
        assert alerts.is_paused(conn, run_id)
        report = build_report(conn, "promo")
    assert any("hard bounces" in a for a in report.alerts)


def test_below_minimum_volume_no_alert(settings):
    assert alerts.evaluate(sent=50, delivered=40, hard_bounces=10, complaints=5, unsubscribes=5) == []


def test_cli_report_writes_html_and_csv_and_exits_on_alert(sqlite_engine, settings, tmp_path):
    from typer.testing import CliRunner

    from relance.cli import app

    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=150)
    result = CliRunner().invoke(app, ["report", "winback", "--out", str(tmp_path / "r")])
    assert result.exit_code in (0, 3), result.output
    assert "Incrementality" in result.output
    html = (tmp_path / "r" / "winback.html").read_text()
    assert (
        "<svg" in html and "<table" in html and "http://" not in html.replace('xmlns="http://www.w3.org', "")
    )
    rows = list(csv.reader((tmp_path / "r" / "winback.csv").open()))
    assert rows[0][:3] == ["campaign", "scope", "slice"] and rows[1][2] == "all"
    assert CliRunner().invoke(app, ["report", "nope"]).exit_code == 1
    portfolio = CliRunner().invoke(app, ["report", "--all"])
    assert portfolio.exit_code == 0 and "winback" in portfolio.output


def test_runs_compared_and_render(sqlite_engine, settings, tmp_path):
    from rich.console import Console

    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=120, seed=1, key="winback:1")
        make_ledger(conn, n=120, seed=2, key="winback:2")
    with sqlite_engine.connect() as conn:
        report = build_report(conn, "winback")
        one = build_report(conn, "winback", run="winback:2")
    assert [r.key for r in report.runs] == ["winback:1", "winback:2"]
    assert report.totals.messages == 240 and one.totals.messages == 120
    console = Console(record=True, width=200)
    print_report(report, console)
    assert "Runs compared" in console.export_text()
    path = write_html(report, tmp_path / "r.html")
    assert 'id="runs"' in path.read_text()
    write_csv(report, tmp_path / "r.csv")


def test_programme_uplift_compares_the_global_control_group(engine, monkeypatch):
    from audiences.assign import in_global_control
    from core.models import Order
    from core.settings import get_settings
    from reporting.portfolio import programme_uplift

    monkeypatch.setenv("RELANCE_GLOBAL_CONTROL_PERCENT", "20")
    get_settings.cache_clear()
    assert programme_uplift  # imported lazily above so the env is read at call time
    rng = random.Random(3)
    truth = {True: [0, 0, 0.0], False: [0, 0, 0.0]}  # n, buyers, revenue
    with engine.begin() as conn:
        for i in range(600):
            cid = conn.execute(insert(Customer.__table__).values(external_id=f"g{i}")).inserted_primary_key[0]
            control = in_global_control(cid, 20)
            truth[control][0] += 1
            if rng.random() < (0.1 if control else 0.2):
                cents = rng.randint(1000, 5000)
                conn.execute(
                    insert(Order.__table__).values(
                        external_id=f"o{i}",
                        customer_id=cid,
                        ordered_at=T0 + timedelta(days=1),
                        amount_cents=cents,
                    )
                )
                truth[control][1] += 1
                truth[control][2] += cents / 100
            conn.execute(
                insert(Order.__table__).values(  # before the period: must not count
                    external_id=f"old{i}",
                    customer_id=cid,
                    ordered_at=T0 - timedelta(days=60),
                    amount_cents=999,
                )
            )
        u = programme_uplift(conn, T0)
    assert (u.control_n, u.control_conversions) == tuple(truth[True][:2])
    assert (u.treated_n, u.treated_conversions) == tuple(truth[False][:2])
    assert 60 < u.control_n < 180  # about 20% of 600
    expected = truth[False][2] / truth[False][0] - truth[True][2] / truth[True][0]
    assert u.revenue_per_customer.estimate == pytest.approx(expected)


def test_programme_uplift_needs_a_global_control(sqlite_engine, settings):
    from reporting.portfolio import programme_uplift

    with sqlite_engine.connect() as conn:
        assert programme_uplift(conn, T0) is None

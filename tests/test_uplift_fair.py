"""Uplift against the control group compares like with like (issue 16): intention to treat.

Both groups count a customer who bought within the conversion window after the (would-be) send,
whether or not the campaign's attribution rule credited the purchase to a message; the attributed
``converted`` figures (funnel, revenue, click -> conversion) stay the attribution's own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relance.cli.demo import DEMO_LIFT
from reporting.report import build_report
from tests.test_tracking_support import seed, sent_sms
from tracking.attribution import ConversionSettings, Purchase, attribute_purchases
from tracking.events import NormalizedEvent, store_events
from tracking.simulate import Rates, simulate_responses

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
N = 400  # customers of the run, every other one held out


@pytest.fixture
def defaults(tmp_path) -> ConversionSettings:
    """No campaign file: click attribution, a 7-day window."""
    return ConversionSettings(tmp_path / "no-campaigns")


def _buy(engine, conversions, customer_ids, prefix: str, amount: int = 5000) -> None:
    with engine.begin() as conn:
        attribute_purchases(
            conn,
            [Purchase(f"{prefix}{cid}", cid, T0 + timedelta(days=1), amount) for cid in customer_ids],
            conversions,
        )


def _click(engine, ledger_id: int) -> None:
    with engine.begin() as conn:
        store_events(
            conn,
            [NormalizedEvent(type="clicked", provider="relance", ledger_id=ledger_id, occurred_at=T0)],
        )


def _report(engine, campaign: str = "winback"):
    with engine.connect() as conn:
        return build_report(conn, campaign)


def test_equal_purchase_rates_without_clicks_read_as_no_uplift(engine, defaults):
    world = seed(engine, n=N, control=tuple(range(0, N, 2)), sent_at=T0)
    treated, held = world.customer_ids[1::2], world.customer_ids[0::2]
    _buy(engine, defaults, treated[:20], "t")  # 10 % of each group, nobody clicked
    _buy(engine, defaults, held[:20], "c")

    report = _report(engine)
    u = report.uplift_total
    assert (u.treated_n, u.treated_conversions, u.control_n, u.control_conversions) == (200, 20, 200, 20)
    assert u.absolute.estimate == pytest.approx(0.0) and u.absolute.contains_zero()
    assert u.relative.estimate == pytest.approx(0.0)
    assert u.revenue_per_customer.estimate == pytest.approx(0.0)
    assert report.incremental_revenue == pytest.approx(0.0)
    assert not u.conclusion.startswith("the campaign lowered")
    # attribution is unchanged: no click, no credit
    assert (report.totals.converted, report.totals.revenue_cents) == (0, 0)


def test_a_treated_buyer_who_did_not_click_counts_like_a_control_buyer(engine, defaults):
    world = seed(engine, n=N, control=tuple(range(0, N, 2)), sent_at=T0)
    clicker, quiet, held = world.customer_ids[1], world.customer_ids[3], world.customer_ids[0]
    _click(engine, world.ledger_ids[1])
    _buy(engine, defaults, [clicker], "k", 7000)
    _buy(engine, defaults, [quiet], "q", 3000)
    _buy(engine, defaults, [held], "h", 4000)

    report = _report(engine)
    u = report.uplift_total
    assert (u.treated_conversions, u.control_conversions) == (2, 1)  # intention to treat
    assert u.treated_rate == pytest.approx(2 / 200) and u.control_rate == pytest.approx(1 / 200)
    assert u.revenue_per_customer.estimate == pytest.approx((70 + 30) / 200 - 40 / 200)
    assert u.absolute.estimate == pytest.approx(1 / 200)
    # the funnel's converted and the revenue are what the click attribution credited
    assert (report.totals.clicked, report.totals.converted, report.totals.revenue_cents) == (1, 1, 7000)
    assert report.uplift_by_variant["default"].treated_conversions == 2


def test_a_customer_reached_on_two_channels_counts_once_with_each_purchase_once(engine, defaults):
    world = seed(engine, n=N, control=tuple(range(0, N, 2)), sent_at=T0)
    both, clicked_both = world.customer_ids[1], world.customer_ids[3]
    sms = [sent_sms(engine, world.run_id, "winback", cid, T0) for cid in (both, clicked_both)]  # same run
    _click(engine, sms[1])
    _buy(engine, defaults, [both], "b", 6000)  # no click: a window purchase on both rows
    _buy(engine, defaults, [clicked_both], "k", 2000)  # credited to the SMS, a window purchase by e-mail
    _buy(engine, defaults, world.customer_ids[0:4:2], "h", 1000)

    report = _report(engine)
    u = report.uplift_total
    assert (u.treated_n, u.treated_conversions, u.control_conversions) == (200, 2, 2)
    assert u.revenue_per_customer.estimate == pytest.approx((60 + 20) / 200 - 20 / 200)
    assert (report.totals.converted, report.totals.revenue_cents) == (1, 2000)


@pytest.mark.parametrize("via_link", [0.5])
def test_buyers_who_skip_the_link_no_longer_hide_the_lift(sqlite_engine, via_link):
    """tracking.simulate's ``via_link`` reproduces the bias: half the treated buyers never click."""
    n = 1200
    world = seed(
        sqlite_engine,
        n=n,
        control=tuple(range(0, n, 2)),
        sent_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    rates = Rates(lift=DEMO_LIFT["winback"], via_link=via_link)
    counts = simulate_responses(world.run_id, None, seed=11, engine=sqlite_engine, rates=rates)

    report = _report(sqlite_engine)
    u = report.uplift_total
    assert u.treated_conversions == counts["purchases"] + counts["other_purchases"]
    assert u.control_conversions == counts["control_purchases"]
    assert report.totals.converted < u.treated_conversions  # attribution credits the clickers only
    assert u.absolute.low > 0, u.absolute
    # near the true effect: the lift, where the message arrived (it was ~0.03 when only clicks counted)
    true_effect = rates.lift * report.totals.delivered / report.totals.targeted
    assert abs(u.absolute.estimate - true_effect) < 0.03, (u.absolute.estimate, true_effect)
    assert u.conclusion.startswith("the campaign raised conversion significantly"), u.conclusion

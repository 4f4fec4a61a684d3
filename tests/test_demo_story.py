"""The demo's simulated responses tell the story relance is for (issue 16, defect 5).

A campaign whose message really adds purchases beats its control group in the report, with an
uplift interval above zero; a campaign that adds nothing reads as "no difference" (interval around 0).
Responses go through the tracking endpoints (tracking.simulate) and the figures are the report's own
(reporting.report), on a seeded run with the campaigns' click attribution.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relance.cli.demo import DEMO_LIFT
from reporting.report import build_report
from tests.test_tracking_support import seed
from tracking.simulate import Rates, simulate_responses

CUSTOMERS = 1200  # per campaign, half of them held out: power for the demo's 6-point effect


def _run(engine, campaign: str, rates: Rates, seed_: int):
    sent = datetime.now(UTC) - timedelta(minutes=1)
    world = seed(engine, n=CUSTOMERS, campaign=campaign, control=tuple(range(0, CUSTOMERS, 2)), sent_at=sent)
    counts = simulate_responses(world.run_id, None, seed=seed_, engine=engine, rates=rates)
    with engine.connect() as conn:
        return build_report(conn, campaign), counts


def test_a_campaign_with_an_effect_beats_its_control_group_in_the_report(sqlite_engine) -> None:
    assert DEMO_LIFT["winback"] > 0
    report, counts = _run(sqlite_engine, "winback", Rates(lift=DEMO_LIFT["winback"]), seed_=11)
    u = report.uplift_total
    assert u.treated_n == u.control_n == CUSTOMERS // 2
    assert counts["purchases"] > counts["control_purchases"] > 0
    assert u.treated_rate > u.control_rate + 0.02, (u.treated_rate, u.control_rate)
    assert u.absolute.low > 0, u.absolute
    assert u.revenue_per_customer.estimate > 0 and report.incremental_revenue > 0
    assert u.conclusion.startswith("the campaign raised conversion significantly"), u.conclusion
    # every treated purchase in the window counts, through the message or not (intention to treat)
    assert u.treated_conversions == counts["purchases"] + counts.get("other_purchases", 0)
    assert u.control_conversions == counts["control_purchases"]


def test_a_campaign_without_effect_reads_as_no_difference(sqlite_engine) -> None:
    assert DEMO_LIFT["flash-sale"] == 0
    report, counts = _run(sqlite_engine, "flash-sale", Rates(lift=DEMO_LIFT["flash-sale"]), seed_=11)
    u = report.uplift_total
    assert counts["control_purchases"] >= 5 and counts["purchases"] >= 5
    assert u.absolute.contains_zero(), u.absolute
    assert abs(u.absolute.estimate) < 0.03
    assert not u.conclusion.startswith("the campaign raised"), u.conclusion

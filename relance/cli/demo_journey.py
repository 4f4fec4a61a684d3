"""The demo's journey: ten simulated days of `relance-inactifs` on a demo clock, with no real waiting.

The journey enters its audience as its Monday occurrence would (the `run-campaign`
flow), the offer e-mail gets simulated responses through the tracking endpoints,
then the `advance-journeys` flow ticks once per simulated day: waits end,
the branch reads who opened, the SMS reminder goes out in the legal hours,
buyers leave. The control group held out at entry buys on its own, as the
campaigns' control groups do (tracking.simulate's world).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from relance.cli.common import console

# The world of the demo journey: the offer e-mail brings back 8 more customers in 100 where it
# arrives, the SMS reminder 3 more in 100 of those it reaches (no organic purchase drawn twice).
EMAIL_LIFT, SMS_LIFT = 0.08, 0.03
DAYS = 10


def journey_runs(engine, journey: str) -> dict[str, int]:  # noqa: ANN001
    """step (or "control") -> id of the journey's latest run for it."""
    from delivery.ledger import RUNS

    with engine.connect() as conn:
        rows = conn.execute(
            select(RUNS.c.id, RUNS.c.step, RUNS.c.key).where(RUNS.c.campaign == journey).order_by(RUNS.c.id)
        ).all()
    return {(r.step or ("control" if r.key.endswith(":control") else "entry")): r.id for r in rows}


def simulate(engine, run_id: int, seed: int, lift: float, organic: float | None = None) -> dict[str, int]:  # noqa: ANN001
    from tracking.attribution import attribute
    from tracking.simulate import Rates, simulate_responses

    rates = Rates(lift=lift) if organic is None else Rates(lift=lift, organic=organic)
    counts = simulate_responses(run_id, seed=seed, rates=rates)
    with engine.begin() as conn:
        attribute(conn)
    return counts


def run_demo_journey(engine, path: Path, now: datetime, seed: int) -> str:  # noqa: ANN001
    """Enter, simulate, tick day by day; return the journey's name (for its report)."""
    from flows.advance_journeys import advance_journeys
    from flows.run_campaign import run_campaign

    summary = run_campaign(str(path), now=now.isoformat())
    name = summary["journey"]
    console().print(f"{now:%a %d %b %H:%M}: {summary['entered']:,} customers entered `{name}`")
    console().print(f"offer e-mails sent now: {summary['sent'].get('sent', 0):,}")
    runs = journey_runs(engine, name)
    console().print(f"responses to the e-mail: {simulate(engine, runs['offer-email'], seed, EMAIL_LIFT)}")
    if "control" in runs:  # the held-out customers buy on their own, as everyone does
        simulate(engine, runs["control"], seed + 1, EMAIL_LIFT)
    for day in range(1, DAYS + 1):
        moment = now + timedelta(days=day)
        tick = advance_journeys(now=moment.isoformat())
        moved = tick["moves"].get(name, 0)
        sent = tick["sent"].get("sent", 0)
        if moved or sent:
            console().print(f"{moment:%a %d %b %H:%M}: {moved:,} step(s) done, {sent:,} message(s) sent")
    after = journey_runs(engine, name)
    if "sms-reminder" in after:
        counts = simulate(engine, after["sms-reminder"], seed + 2, SMS_LIFT, organic=0.0)
        console().print(f"responses to the SMS reminder: {counts}")
    return name

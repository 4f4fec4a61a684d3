"""Plan counts per variant x channel x control equal the run's rows (build_selection), every strategy."""

from __future__ import annotations

from collections import Counter

import pytest

from audiences.plan import funnel
from audiences.selection import build_selection
from tests.test_plan import CAMP, NOW, _random_base
from tests.test_selection_support import campaign


@pytest.mark.parametrize("strategy", ["preferred", "first_available", "all"])
def test_plan_rows_equal_the_run_rows(engine, strategy):
    _random_base(engine, n=120)
    camp = campaign(
        **{**CAMP, "channels": {"strategy": strategy, "order": ["sms", "email", "push"]}},
        variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 2}],
    )
    with engine.connect() as c:
        plan = funnel(c, camp, NOW, priorities={})
        rows = c.execute(build_selection(camp, NOW, bind=c, priorities={})).all()
    run = Counter((r.variant, r.channel, bool(r.in_control)) for r in rows)
    planned = {(r["variant"], r["channel"], r["in_control"]): r["messages"] for r in plan["rows"]}
    assert planned == dict(run) and sum(run.values()) > 0
    customers = {r.customer_id for r in rows}
    assert plan["selected_customers"] == len(customers)
    held = {r.customer_id for r in rows if r.in_control}
    assert plan["control"]["held_out_customers"] == len(held)

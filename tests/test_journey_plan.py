"""`relance plan JOURNEY`: the tick's counts now (rolled back) equal a real tick's; the projection after."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

from core.models import CampaignRun, JourneyEntry, JourneyStepLog, Order
from core.spec import Campaign
from journeys.plan import plan_journey
from journeys.projection import MIN_DELIVERED, PastRates, earliest, project
from journeys.tick import run_journey, tick
from tests.journey_support import LEDGER, at, entries, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs

MONDAY = at("2026-11-23 10:00")
RUNS = CampaignRun.__table__
HISTORY = JourneyStepLog.__table__


def _base(engine, n=20):
    ids = seed_customers(engine, n, phone_every=1)
    seed_features(engine, ids)
    return ids


def _past(engine, ids, statuses: list[str], message: str = "t/hello") -> None:
    """Earlier campaign runs of ``message`` (60 days ago: no frequency cap), one row per status given."""
    long_ago = MONDAY - timedelta(days=60)
    with engine.begin() as conn:
        rows = []
        for start in range(0, len(statuses), len(ids)):
            values = {"key": f"past:{start}", "campaign": "past", "status": "completed"}
            run = conn.execute(insert(RUNS).values(**values).returning(RUNS.c.id)).scalar_one()
            rows += [
                {"run_id": run, "campaign": "past", "customer_id": cid, "channel": "email",
                 "message": message, "status": st, "sent_at": long_ago, "created_at": long_ago,
                 "updated_at": long_ago}
                for cid, st in zip(ids, statuses[start : start + len(ids)], strict=False)
            ]  # fmt: skip
        conn.execute(insert(LEDGER), rows)


def _table_counts(engine) -> tuple[int, int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (JourneyEntry.__table__, HISTORY, LEDGER, RUNS)
        )


def _tick_counts(engine, since_id: int) -> dict[str, dict[str, int]]:
    """step -> outcome -> n from the history rows written after ``since_id`` (exits under `journey`)."""
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(HISTORY.c.kind, HISTORY.c.step, HISTORY.c.outcome, func.count())
            .where(HISTORY.c.id > since_id)
            .group_by(HISTORY.c.kind, HISTORY.c.step, HISTORY.c.outcome)
        )
        for kind, step, outcome, n in rows:
            out.setdefault("(exit_when)" if kind == "journey" else step, {})[outcome] = n
    return out


def _last_history_id(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(HISTORY.c.id), 0))).scalar_one()


def _ledger_by_step(engine, since_id: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(LEDGER.c.step, LEDGER.c.channel, func.count())
            .where(LEDGER.c.id > since_id, LEDGER.c.step.is_not(None))  # sends (control rows: no step)
            .group_by(LEDGER.c.step, LEDGER.c.channel)
        )
        for step, channel, n in rows:
            out.setdefault(step, {})[channel] = n
    return out


def _active_by_step(engine) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries(engine).values():
        if e["status"] == "active":
            out[e["step"]] = out.get(e["step"], 0) + 1
    return out


def _assert_plan_is_tick(plan, engine, history_since: int, ledger_since: int) -> None:
    done = _tick_counts(engine, history_since)
    planned = {s.step: s.outcomes_now for s in plan.steps if s.outcomes_now}
    if plan.exits_now:
        planned["(exit_when)"] = plan.exits_now
    assert planned == done
    recorded = _ledger_by_step(engine, ledger_since)
    assert {s.step: s.messages_now for s in plan.steps if s.messages_now} == recorded
    assert {s.step: s.waiting for s in plan.steps if s.waiting} == _active_by_step(engine)


def _max_ledger_id(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(LEDGER.c.id), 0))).scalar_one()


def test_plan_now_is_what_the_ticks_then_do(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    jf = write_journey(tmp_path, control=20)
    before = _table_counts(engine)

    plan = plan_journey(engine, jf.campaign, MONDAY)
    assert _table_counts(engine) == before  # rolled back: nothing kept
    assert plan.funnel["entering"] == plan.entered == 20
    assert 0 < plan.entered_control == plan.funnel["control"]["held_out_customers"] < 20
    treated = 20 - plan.entered_control
    first = plan.steps[0]
    assert first.outcomes_now == {"sent": treated} and first.messages_now == {"email": treated}

    h0, l0 = _last_history_id(engine), _max_ledger_id(engine)
    done = run_journey(engine, jf, MONDAY, send=False)
    assert done.entered["relance-panier"] == plan.entered
    _assert_plan_is_tick(plan, engine, h0, l0)

    # three days later: some opened, one bought (exit_when converted), plan then tick at the same clock
    later = MONDAY + timedelta(days=3, minutes=1)
    sent = [e for e in entries(engine).values() if e["status"] == "active"]
    with engine.begin() as conn:
        opened = [e["id"] for e in sent[:3]]
        conn.execute(update(LEDGER).where(LEDGER.c.entry_id.in_(opened)).values(status="opened"))
        conn.execute(
            insert(Order.__table__).values(
                external_id="o-1", customer_id=sent[3]["customer_id"], ordered_at=later - timedelta(hours=1),
                amount_cents=5000, category="x", product="p",
            )
        )  # fmt: skip
    plan = plan_journey(engine, jf.campaign, later)
    assert plan.exits_now == {"converted": 1}
    h0, l0 = _last_history_id(engine), _max_ledger_id(engine)
    tick(engine, [jf], later, send=False)
    _assert_plan_is_tick(plan, engine, h0, l0)
    assert plan.step_plan("opened").outcomes_now == {"then": 3, "else": len(sent) - 4}
    assert ids  # the base exists


def test_projection_uses_past_response_rates_and_prices_each_step(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    jf = write_journey(tmp_path)
    # 200 earlier messages of t/hello: 10 bounced, 120 delivered, 50 opened, 20 clicked
    _past(engine, ids, ["bounced"] * 10 + ["delivered"] * 120 + ["opened"] * 50 + ["clicked"] * 20)
    plan = plan_journey(engine, jf.campaign, MONDAY)
    opened = 70 / 190  # opened or clicked, of the delivered (delivered, opened, clicked)
    expect = {
        "offer-email": 20, "three-days": 20, "opened": 20, "thanks": 20 * opened,
        "sms-reminder": 20 * (1 - opened), "done": 20 * (1 - opened),
    }  # fmt: skip
    got = {s.step: s.expected for s in plan.steps}
    assert got == pytest.approx(expect)
    assert plan.step_plan("offer-email").now == 20 and plan.step_plan("three-days").waiting == 20
    assert plan.step_plan("three-days").when == "+3d" and plan.step_plan("offer-email").when == "entry"
    assert "opened 36.8% of 190 delivered" in plan.rates["opened"]
    prices = settings
    email = plan.step_plan("offer-email")
    assert email.cost_euros == round(20 * prices.email_price_per_message, 2)
    sms = plan.step_plan("sms-reminder")
    assert sms.messages_later == pytest.approx({"sms": 20 * (1 - opened)})
    segments = sms.cost["sms_segments_per_message"]
    assert segments >= 1 and "rendered SMS" in sms.cost["note"]
    assert sms.cost_euros == round(20 * (1 - opened) * segments * prices.sms_price_per_segment, 2)
    assert plan.total_cost == pytest.approx(email.cost_euros + sms.cost_euros)

    result = CliRunner().invoke(
        __import__("relance.cli", fromlist=["app"]).app,
        ["plan", str(tmp_path / "campaigns" / "relance-panier.yaml"), "--now", MONDAY.isoformat()],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and max(len(x) for x in result.output.splitlines()) <= 80
    cells = [line.replace("│", " ").split() for line in result.output.splitlines()]
    rows = {c[0]: c[1:] for c in cells if c and c[0] in expect}
    assert rows["sms-reminder"][:5] == ["send", "+3d", "0", "0", f"{round(20 * (1 - opened))}"]
    assert "entering now: 20 (+0 control)" in result.output


def test_unknown_without_enough_history(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    jf = write_journey(tmp_path)
    _past(engine, ids, ["opened"] * (MIN_DELIVERED - 1))
    plan = plan_journey(engine, jf.campaign, MONDAY)
    got = {s.step: s.expected for s in plan.steps}
    assert got == {
        "offer-email": 20, "three-days": 20, "opened": 20, "thanks": None, "sms-reminder": None, "done": None
    }  # fmt: skip
    assert plan.rates["opened"].startswith("unknown: 99 delivered")
    assert plan.step_plan("sms-reminder").cost_euros is None and plan.total_cost is None


def test_projection_arithmetic_split_branch_and_loop():
    journey = Campaign.model_validate(
        {
            "name": "j",
            "steps": [
                {"name": "s", "send": {"message": "m"}},
                {"name": "ab", "split": [{"percent": 30, "next": "a"}, {"percent": 70, "next": "b"}]},
                {"name": "a", "wait": {"days": 1, "time": "10:00"}, "next": "br"},
                {"name": "b", "wait": {"hours": 4}, "next": "br"},
                {
                    "name": "br",
                    "branch": {"if": {"step": "s", "response": "clicked"}, "then": "end", "else": "again"},
                },  # fmt: skip
                {"name": "again", "wait": {"days": 7}, "next": "br"},  # a loop through a wait
                {"name": "end", "exit": "clicked"},
            ],
        }
    )
    expected, unknown = project(journey, {"s": 100.0}, {"br": 0.5})
    assert not unknown
    assert expected["a"] == pytest.approx(30) and expected["b"] == pytest.approx(70)
    assert expected["br"] == pytest.approx(200)  # 100 + 50 + 25 + ...: each pass half loops
    assert expected["again"] == pytest.approx(100) and expected["end"] == pytest.approx(100)
    expected, unknown = project(journey, {"s": 100.0}, {"br": None})
    assert unknown == {"end", "again", "br"}  # the loop feeds the unknown share back into the branch
    assert expected["a"] == pytest.approx(30)
    assert earliest(journey) == {
        "s": "entry", "ab": "entry", "a": ">=+1d", "b": "+4h", "br": "+4h", "again": "+7d4h", "end": "+4h"
    }  # fmt: skip


def test_past_rates_responses():
    rates = PastRates(("m",), sent=200, delivered=180, counts={"opened": 90, "clicked": 18, "bounced": 20})
    assert rates.rate("opened") == 0.5 and rates.rate("no_response") == 0.5
    assert rates.rate("clicked") == 0.1 and rates.rate("delivered") == 0.9 and rates.rate("bounced") == 0.1
    assert PastRates(("m",), sent=99, delivered=99, counts={"opened": 9}).rate("opened") is None


AUDIENCE_BRANCH = """\
name: {name}
control_group: {{percent: {control}}}
channels: {{strategy: first_available, order: [email]}}
offer: {{code: MERCI10}}
steps:
  - name: hello
    send: {{message: t/hello}}
  - name: a-day
    wait: {{days: 1}}
  - name: in-lyon
    branch:
      if: {{audience: {{field: city, eq: Lyon}}}}
      then: lyon
      else: elsewhere
  - name: lyon
    exit: lyon
  - name: elsewhere
    exit: elsewhere
"""


def test_audience_branch_share_is_the_entries_matching_now(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    from core.models import Customer

    with engine.begin() as conn:
        table = Customer.__table__
        conn.execute(update(table).where(table.c.id.in_(ids[:5])).values(city="Lyon"))
    jf = write_journey(tmp_path, body=AUDIENCE_BRANCH)
    plan = plan_journey(engine, jf.campaign, MONDAY)
    assert plan.rates["in-lyon"] == "audience rule: 5 of the 20 active entries match it now"
    got = {s.step: s.expected for s in plan.steps}
    assert got == pytest.approx({"hello": 20, "a-day": 20, "in-lyon": 20, "lyon": 5, "elsewhere": 15})
    # and the tick a day later takes the same paths
    run_journey(engine, jf, MONDAY, send=False)
    tick(engine, [jf], MONDAY + timedelta(days=1), send=False)
    reasons = [e["exit_reason"] for e in entries(engine).values()]
    assert reasons.count("lyon") == 5 and reasons.count("elsewhere") == 15

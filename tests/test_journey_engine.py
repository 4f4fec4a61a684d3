"""Journeys on a fake clock: each step kind, each exit, sends exactly once per (entry, step)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from journeys.tick import run_journey, tick
from tests.journey_support import LEDGER, SMS_FIRST, at, entries, history_counts, messages, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, use_tmp_dirs


def _soon_on_a_working_day():
    """10:00 Paris on the first of the next three days that is Mon-Sat and not a public holiday."""
    from datetime import datetime, time

    from audiences.policy import is_public_holiday
    from tests.journey_support import PARIS

    today = datetime.now(PARIS).date()
    for d in range(1, 4):
        day = today + timedelta(days=d)
        if day.weekday() < 6 and not is_public_holiday(day, "Europe/Paris"):
            return datetime.combine(day, time(10), tzinfo=PARIS)
    raise AssertionError("three days in a row without a working day")


def _base(engine, n=20, phone_every=1):
    ids = seed_customers(engine, n, phone_every=phone_every)
    seed_features(engine, ids)
    return ids


def test_three_step_journey_sends_waits_branches_and_exits(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine)
    jf = write_journey(tmp_path)
    monday = at("2026-11-23 10:00")

    first = run_journey(engine, jf, monday)
    assert first.entered["relance-panier"] == 20
    sent = messages(engine, "offer-email")
    assert len(sent) == 20 and {m["channel"] for m in sent} == {"email"}
    assert {m["status"] for m in sent} == {"sent"}
    state = entries(engine)
    assert {e["step"] for e in state.values()} == {"three-days"}
    assert all(e["due_at"] == monday + timedelta(days=3) for e in state.values())

    assert tick(engine, [jf], monday + timedelta(days=1)).moves == 0  # nothing due yet
    opened = ids[:5]
    with engine.begin() as conn:  # five customers opened the e-mail
        conn.execute(update(LEDGER).where(LEDGER.c.customer_id.in_(opened)).values(status="opened"))

    later = tick(engine, [jf], monday + timedelta(days=3, minutes=1))
    state = entries(engine)
    assert {c for c, e in state.items() if e["exit_reason"] == "opened-the-offer"} == set(opened)
    assert {c for c, e in state.items() if e["exit_reason"] == "reminded"} == set(ids[5:])
    assert {e["status"] for e in state.values()} == {"completed"}
    sms = messages(engine, "sms-reminder")
    assert sorted(m["customer_id"] for m in sms) == sorted(ids[5:]) and {m["channel"] for m in sms} == {"sms"}
    assert later.sent["sent"] == 15
    counts = history_counts(engine)
    assert counts[("opened", "then")] == 5 and counts[("opened", "else")] == 15
    assert counts[("offer-email", "sent")] == 20 and counts[("three-days", "waited")] == 20

    again = tick(engine, [jf], monday + timedelta(days=3, minutes=2))  # nothing twice
    assert again.moves == 0 and len(messages(engine)) == 35


def test_sms_rule_delays_a_saturday_night_send_to_monday_morning(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine, 6)
    jf = write_journey(tmp_path, SMS_FIRST)
    saturday_night = at("2026-11-28 20:30")  # French SMS hours: Mon-Sat 08:00-20:00

    run_journey(engine, jf, saturday_night)
    assert messages(engine) == []  # not dropped: waiting
    state = entries(engine)
    assert {e["step"] for e in state.values()} == {"reminder"}
    monday = at("2026-11-30 08:00")
    assert {e["due_at"] for e in state.values()} == {monday}
    assert tick(engine, [jf], at("2026-11-29 12:00")).moves == 0  # Sunday: still nothing
    assert messages(engine) == []

    tick(engine, [jf], monday)
    sms = messages(engine, "reminder")
    assert sorted(m["customer_id"] for m in sms) == sorted(ids) and {m["status"] for m in sms} == {"sent"}
    assert {e["due_at"] for e in entries(engine).values()} == {monday + timedelta(days=1)}
    assert history_counts(engine) == {("reminder", "sent"): 6}


def test_a_purchase_during_the_wait_exits_before_the_next_send(engine, settings, tmp_path, monkeypatch):
    from core.models import Order

    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine, 8)
    jf = write_journey(tmp_path, SMS_FIRST)
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    with engine.begin() as conn:
        conn.execute(
            Order.__table__.insert(),
            [{"external_id": f"O{c}", "customer_id": c, "ordered_at": start + timedelta(hours=5),
              "amount_cents": 3000} for c in ids[:3]],
        )  # fmt: skip
    tick(engine, [jf], start + timedelta(days=1))
    state = entries(engine)
    assert {c for c, e in state.items() if e["exit_reason"] == "converted"} == set(ids[:3])
    assert all(state[c]["status"] == "exited" for c in ids[:3])
    assert sorted(m["customer_id"] for m in messages(engine, "follow-up")) == sorted(ids[3:])


def test_consent_withdrawn_exits_and_control_group_gets_nothing(engine, settings, tmp_path, monkeypatch):
    from audiences.consent import withdraw

    use_tmp_dirs(monkeypatch, tmp_path)
    _base(engine, 200)
    jf = write_journey(tmp_path, SMS_FIRST, control=20)
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    state = entries(engine)
    control = {c for c, e in state.items() if e["status"] == "control"}
    assert 20 <= len(control) <= 60 and all(state[c]["in_control"] for c in control)
    treated = sorted(c for c in state if c not in control)
    gone = treated[:4]
    with engine.begin() as conn:
        for c in gone:
            for channel in ("email", "sms", "push"):
                withdraw(conn, c, channel, "test")
    tick(engine, [jf], start + timedelta(days=1))
    state = entries(engine)
    assert {c for c, e in state.items() if e["exit_reason"] == "consent withdrawn"} == set(gone)
    sent_to = {m["customer_id"] for m in messages(engine)}
    assert not sent_to & control and sent_to == set(treated)
    assert {e["status"] for c, e in state.items() if c in control} == {"control"}
    from sqlalchemy import select

    with engine.connect() as conn:  # held out in the ledger as a campaign's control group is
        held = conn.execute(
            select(LEDGER.c.customer_id, LEDGER.c.entry_id).where(LEDGER.c.status == "held_out")
        )
        held = {cid: eid for cid, eid in held}
    assert set(held) == control and all(held[c] == state[c]["id"] for c in control)


def test_reentry_once_and_every_n_days(engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path, default_frequency_caps="[]")
    _base(engine, 5)
    once = write_journey(tmp_path, SMS_FIRST, name="once-only")
    every = write_journey(tmp_path, SMS_FIRST, name="monthly", extra="reentry:\n  every_days: 30\n")
    start = at("2026-11-24 10:00")
    for day in (0, 3, 35):  # the journey is over after a day: who may come back? (day 31: Christmas)
        when = start + timedelta(days=day)
        run_journey(engine, once, when)
        run_journey(engine, every, when)
        tick(engine, [once, every], when + timedelta(days=1, minutes=1))
    from sqlalchemy import func, select

    from tests.journey_support import ENTRY

    with engine.connect() as conn:
        per = dict(conn.execute(select(ENTRY.c.journey, func.count()).group_by(ENTRY.c.journey)).all())
    assert per == {"once-only": 5, "monthly": 10}  # monthly: day 0 and day 35, not day 3
    assert len(messages(engine)) == 5 * 2 + 10 * 2


def test_editing_a_journey_in_flight_keeps_steps_by_name_and_exits_removed_ones(
    engine, settings, tmp_path, monkeypatch
):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine, 6)
    jf = write_journey(tmp_path)
    monday = at("2026-11-23 10:00")
    run_journey(engine, jf, monday)  # everyone waits on `three-days`
    edited = jf.campaign.model_copy(
        update={"steps": [s for s in jf.campaign.steps if s.name != "three-days"]}
    )
    from journeys.definition import JourneyFile

    tick(engine, [JourneyFile(jf.path, edited)], monday + timedelta(days=3))
    state = entries(engine)
    assert {e["exit_reason"] for e in state.values()} == {"step removed: three-days"}
    assert {e["status"] for e in state.values()} == {"exited"} and len(state) == len(ids)
    assert len(messages(engine)) == 6  # the e-mail only


SPLIT = """\
name: {name}
control_group:
  percent: {control}
offer:
  code: MERCI10
{extra}
steps:
  - name: test-paths
    split:
      - {{percent: 30, next: by-email}}
      - {{percent: 70, next: by-sms}}
  - name: by-email
    send: {{message: t/hello, channels: {{order: [email]}}}}
    next: no-answer
  - name: by-sms
    send: {{message: t/hello, channels: {{order: [sms]}}}}
    next: no-answer
  - name: no-answer
    wait: {{hours: 48}}
  - name: answered
    branch:
      if: {{audience: {{field: external_id, eq: "C000001"}}}}
      then: vip
      else: finished
  - name: vip
    exit: vip
  - name: finished
    exit: finished
"""


def test_split_is_stable_and_audience_branches_read_the_customer_now(engine, settings, tmp_path, monkeypatch):
    from audiences import assign

    use_tmp_dirs(monkeypatch, tmp_path)
    ids = _base(engine, 300)
    jf = write_journey(tmp_path, SPLIT, name="paths")
    start = at("2026-11-24 10:00")
    run_journey(engine, jf, start)
    salt = assign.salt("paths", "test-paths", "split")
    expect_email = {c for c in ids if assign.bucket(c, salt) < assign.threshold(30)}
    by = {m["customer_id"]: m["step"] for m in messages(engine)}
    assert {c for c, s in by.items() if s == "by-email"} == expect_email
    assert 60 <= len(expect_email) <= 120 and len(by) == 300
    tick(engine, [jf], start + timedelta(hours=48))
    state = entries(engine, "paths")
    assert {c for c, e in state.items() if e["exit_reason"] == "vip"} == {ids[0]}
    assert sum(e["exit_reason"] == "finished" for e in state.values()) == 299


def test_a_capped_send_is_retried_hourly_then_skipped_after_max_delay(
    engine, settings, tmp_path, monkeypatch
):
    use_tmp_dirs(monkeypatch, tmp_path, default_frequency_caps='[{"max_messages": 1, "days": 7}]')
    ids = _base(engine, 4)
    jf = write_journey(tmp_path, SMS_FIRST)
    start = _soon_on_a_working_day()  # caps count real send times (ledger.sent_at): a clock near now
    run_journey(engine, jf, start)  # the SMS: one message this week, the cap is reached
    tick(engine, [jf], start + timedelta(days=1))  # the e-mail is held back, retried in an hour
    state = entries(engine)
    assert {e["step"] for e in state.values()} == {"follow-up"}
    assert {e["due_at"] for e in state.values()} == {start + timedelta(days=1, hours=1)}
    for hours in (1, 2, 71, 72):
        tick(engine, [jf], start + timedelta(days=1, hours=hours))
    state = entries(engine)
    assert {e["status"] for e in state.values()} == {"completed"} and len(state) == len(ids)
    assert history_counts(engine)[("follow-up", "skipped")] == 4
    assert len(messages(engine, "follow-up")) == 0


def test_enter_and_advance_roll_back_as_one_transaction(engine, settings, tmp_path, monkeypatch):
    """SQLite's driver opens no transaction before a statement starting with WITH: the engine does."""
    from journeys.engine import advance, enter

    use_tmp_dirs(monkeypatch, tmp_path)
    _base(engine, 5)
    jf = write_journey(tmp_path)
    now = at("2026-11-23 10:00")
    with engine.connect() as conn:
        trans = conn.begin()
        assert enter(conn, jf.campaign, now) == 5
        assert advance(conn, jf.campaign, now).moves[("offer-email", "sent")] == 5
        trans.rollback()
    assert entries(engine) == {} and messages(engine) == []

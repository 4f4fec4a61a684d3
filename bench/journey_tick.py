# ruff: noqa: E501  (long SQL strings read better unwrapped)
"""Benchmark a journey tick (issue 17): 1,000,000 customers in flight, 100,000 of them due.

The base (customers with consent and reach flags, orders, features) is bench/plan.py's,
generated inside the database once (``--orders-per-customer 1`` by default: the journey
reads orders only for its `converted` exit). Then, for each repeat, the journey's state is
re-created with SQL (no tick can be rolled back: a tick commits):

* 1,000,000 ``journey_entry`` rows, one per customer, all active, spread over the steps:
  ``--due`` of them due at NOW (a quarter each: the e-mail send step, the end of the
  3-day wait, the branch, the end of the 2-day wait), the others waiting with due_at
  in the next days on the two wait steps;
* the e-mail of the first step in the ledger for every entry past it that could get one
  (consent and no suppression), sent 3 days ago, 20 % opened and 5 % clicked, so the
  branch ``opened`` reads real ledger rows.

The journey: e-mail -> wait 3 days -> branch (opened the e-mail?) -> split 50/50 ->
SMS or push -> wait 2 days -> exit. The entries reaching the branch move on in the same
tick (e-mail -> branch -> split -> SMS/push), so a tick does more than ``--due`` moves.

Timed: ``journeys.tick.tick(engine, [journey], NOW)``, reported as ``advance`` (the moves
and the ledger rows, one transaction: the figure the issue bounds, "excluding the provider
calls") and ``send`` (render + outbox files), then a second tick at the same NOW, with
nothing due (the issue's "empty tick").

    flock /tmp/relance-bench.lock .venv/bin/python bench/journey_tick.py --repeat 3 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_journey
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import plan  # noqa: E402  bench/plan.py: the 1M base generated in SQL
from sqlalchemy import Engine, func, select, text  # noqa: E402

NOW = plan.NOW  # Tuesday 2026-03-03 09:30 UTC (10:30 in Paris): SMS hours open
NAME = "bench-journey"
JOURNEY = """\
name: bench-journey
priority: 50
control_group: {percent: 0}
channels: {strategy: first_available, order: [email, sms, push]}
offer:
  code: REVIENS15
  discount_percent: 15
  price: 29.9
  url: https://maison.example/offre/reviens
steps:
  - name: offer-email
    send: {message: winback/offer-15, channels: {strategy: first_available, order: [email]}}
  - name: three-days
    wait: {days: 3}
  - name: opened
    branch:
      if: {step: offer-email, response: opened}
      then: thanks
      else: reminder
  - name: reminder
    split: [{percent: 50, next: sms-reminder}, {percent: 50, next: push-reminder}]
  - name: sms-reminder
    send: {message: winback/offer-15, channels: {strategy: first_available, order: [sms]}}
    next: two-days
  - name: push-reminder
    send: {message: winback/offer-15, channels: {strategy: first_available, order: [push]}}
  - name: two-days
    wait: {days: 2}
  - name: done
    exit: reminded
  - name: thanks
    exit: opened-the-offer
"""
# due entries, by (id / 1000) % 4: where they stand and how many moves they made before
DUE_STEPS = [("offer-email", 0), ("three-days", 1), ("opened", 2), ("two-days", 4)]
WAITING_STEPS = [("three-days", 1), ("two-days", 4)]  # the others, due in the next days


def env_setup(workdir: Path) -> None:
    """Campaigns (the journey alone), the repo's templates, an outbox in ``workdir``."""
    (workdir / "campaigns").mkdir(parents=True, exist_ok=True)
    (workdir / "campaigns" / f"{NAME}.yaml").write_text(JOURNEY, encoding="utf-8")
    os.environ["RELANCE_CAMPAIGNS_DIR"] = str(workdir / "campaigns")
    os.environ["RELANCE_TEMPLATES_DIR"] = str(REPO / "templates")
    os.environ["RELANCE_OUTBOX_DIR"] = str(workdir / "outbox")
    os.environ.setdefault("RELANCE_SECRET_KEY", "bench-secret")
    for channel in ("EMAIL", "SMS", "PUSH"):
        os.environ[f"RELANCE_{channel}_PROVIDER"] = "outbox"
    from core.settings import get_settings

    get_settings.cache_clear()


def _ts(dialect: str, minutes: str) -> str:
    """NOW + ``minutes`` (an SQL integer expression) as the column type stores it."""
    if dialect == "sqlite":
        return f"strftime('%Y-%m-%d %H:%M:%f', '2026-03-03 09:30:00.000000', ({minutes}) || ' minutes')"
    return f"(TIMESTAMPTZ '2026-03-03 09:30:00+00' + ({minutes}) * INTERVAL '1 minute')"


def _pick(expr: str, pairs: list[tuple[str, int]], col: int) -> str:
    whens = " ".join(
        f"WHEN {k} THEN {p[col] if isinstance(p[col], int) else repr(p[col])}" for k, p in enumerate(pairs)
    )
    return f"CASE {expr} {whens} END"


def reset_state(engine: Engine, customers: int, due: int) -> None:
    """The journey's entries and its first e-mail's ledger rows as described above (previous ones deleted)."""
    d = engine.dialect.name
    per_mille = round(1000 * due / customers)
    is_due = f"(c.id % 1000) < {per_mille}"
    due_kind, wait_kind = f"((c.id / 1000) % {len(DUE_STEPS)})", f"((c.id / 1000) % {len(WAITING_STEPS)})"
    step = f"CASE WHEN {is_due} THEN {_pick(due_kind, DUE_STEPS, 0)} ELSE {_pick(wait_kind, WAITING_STEPS, 0)} END"
    moves = f"CASE WHEN {is_due} THEN {_pick(due_kind, DUE_STEPS, 1)} ELSE {_pick(wait_kind, WAITING_STEPS, 1)} END"
    due_at = f"CASE WHEN {is_due} THEN {_ts(d, '-(c.id % 60)')} ELSE {_ts(d, '1 + c.id % 4000')} END"
    since = _ts(d, "-(c.id % 60) - 1440")
    entered = _ts(d, "-(c.id % 60) - 4 * 1440")
    three_days_ago = _ts(d, "-3 * 1440")
    false = "0" if d == "sqlite" else "false"
    status = "CASE WHEN (e.id * 13) % 100 < 5 THEN 'clicked' WHEN (e.id * 13) % 100 < 25 THEN 'opened' ELSE 'delivered' END"
    with engine.begin() as c:
        c.execute(text("DELETE FROM journey_step"))
        c.execute(text("DELETE FROM ledger WHERE campaign = :n"), {"n": NAME})
        c.execute(
            text("DELETE FROM send_batch WHERE run_id IN (SELECT id FROM campaign_run WHERE campaign = :n)"),
            {"n": NAME},
        )
        c.execute(text("DELETE FROM campaign_run WHERE campaign = :n"), {"n": NAME})
        c.execute(text("DELETE FROM journey_entry"))
        if d == "postgresql":  # bench/plan.py inserted campaign_run ids 1 and 2 itself
            c.execute(text("SELECT setval('campaign_run_id_seq', (SELECT max(id) FROM campaign_run))"))
        c.execute(text(
            "INSERT INTO journey_entry (journey, customer_id, entry_key, step, status, due_at, since, moves, "
            "in_control, exit_reason, entered_at, updated_at) "
            f"SELECT '{NAME}', c.id, '{NAME}:2026-02-27', {step}, 'active', {due_at}, {since}, {moves}, "
            f"{false}, NULL, {entered}, {since} FROM customer c WHERE c.id <= {customers}"
        ))  # fmt: skip
        run = c.execute(text(
            "INSERT INTO campaign_run (key, campaign, status, created_at, step) "
            f"VALUES ('{NAME}:offer-email:past', '{NAME}', 'completed', {three_days_ago}, 'offer-email') RETURNING id"
        )).scalar_one()  # fmt: skip
        c.execute(text(
            "INSERT INTO ledger (run_id, campaign, customer_id, channel, variant, message, in_control, batch, status, "
            "attempts, created_at, updated_at, sent_at, entry_id, step) "
            f"SELECT {run}, '{NAME}', e.customer_id, 'email', 'default', 'winback/offer-15', {false}, 1, {status}, 1, "
            f"{three_days_ago}, {three_days_ago}, {three_days_ago}, e.id, 'offer-email' "
            "FROM journey_entry e JOIN customer c ON c.id = e.customer_id "
            f"WHERE e.journey = '{NAME}' AND e.moves >= 1 AND c.consent_email = 1 AND c.suppressed_email = 0"
        ))  # fmt: skip
    # planner statistics, as a live base has them (the tables changed by a million rows)
    if d == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE journey_entry"))
            c.execute(text("VACUUM ANALYZE journey_step"))
            c.execute(text("VACUUM ANALYZE ledger"))
            c.execute(text("VACUUM ANALYZE campaign_run"))
    else:
        with engine.begin() as c:
            c.execute(text("ANALYZE"))


def state_counts(engine: Engine) -> tuple[int, int]:
    from core.models import JourneyEntry

    e = JourneyEntry.__table__
    with engine.connect() as c:
        total = c.execute(select(func.count()).select_from(e)).scalar_one()
        due = c.execute(select(func.count()).where(e.c.status == "active", e.c.due_at <= NOW)).scalar_one()
    return total, due


def time_tick(engine: Engine, jf, workdir: Path, customers: int, due: int) -> dict:
    from journeys.tick import tick

    shutil.rmtree(workdir / "outbox", ignore_errors=True)
    t = time.perf_counter()
    reset_state(engine, customers, due)
    reset_s = time.perf_counter() - t
    total, due_now = state_counts(engine)
    result = tick(engine, [jf], NOW)
    t = time.perf_counter()
    empty = tick(engine, [jf], NOW)
    empty_ms = (time.perf_counter() - t) * 1000
    adv = result.advanced[NAME]
    moves = Counter({f"{s}:{o}": n for (s, o), n in adv.moves.items()})
    return {
        "entries": total,
        "due": due_now,
        "reset_s": reset_s,
        "advance_s": result.advance_seconds,
        "send_s": result.send_seconds,
        "empty_ms": empty_ms,
        "empty_moves": empty.moves + empty.runs_sent,
        "moves": moves,
        "deferred": dict(adv.deferred),
        "passes": adv.passes,
        "sent": dict(result.sent),
        "load": os.getloadavg()[0],
    }


def report(label: str, runs: list[dict]) -> None:
    last = runs[-1]
    print(
        f"\n{label}: {last['entries']:,} entries in flight, {last['due']:,} due at {NOW:%Y-%m-%d %H:%M} UTC"
    )
    print(f"  moves ({sum(last['moves'].values()):,} in {last['passes']} passes): "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(last["moves"].items())))  # fmt: skip
    if last["deferred"]:
        print(f"  deferred: {last['deferred']}")
    print(f"  sent to the outbox: {last['sent']}")
    print(f"  {'run':>3} {'advance s':>10} {'send s':>8} {'empty tick ms':>14} {'reset s':>8} {'load':>5}")
    for i, r in enumerate(runs, 1):
        print(
            f"  {i:>3} {r['advance_s']:>10.2f} {r['send_s']:>8.2f} {r['empty_ms']:>14.1f} {r['reset_s']:>8.1f} {r['load']:>5.1f}"
        )
    adv = [r["advance_s"] for r in runs]
    empty = [r["empty_ms"] for r in runs]
    print(f"  advance: best {min(adv):.2f} s, median {statistics.median(adv):.2f} s; "
          f"empty tick: best {min(empty):.1f} ms, median {statistics.median(empty):.1f} ms")  # fmt: skip
    assert all(r["empty_moves"] == 0 for r in runs), "the second tick at the same NOW did something"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--due", type=int, default=100_000)
    p.add_argument("--orders-per-customer", type=int, default=1)
    p.add_argument("--sqlite", default="bench/out/journey.db", help="SQLite file ('' to skip)")
    p.add_argument("--postgres", default="", help="PostgreSQL URL of a bench database (created when missing)")
    p.add_argument("--fresh", action="store_true", help="Regenerate the base even if the database has one")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default="", help="campaigns + outbox directory (default: a temp dir)")
    args = p.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="relance-journey-bench-"))
    env_setup(workdir)
    from core.settings import get_settings
    from core.spec_loader import load_campaign
    from journeys.definition import JourneyFile

    path = workdir / "campaigns" / f"{NAME}.yaml"
    jf = JourneyFile(str(path), load_campaign(path))
    targets = []
    if args.sqlite:
        targets.append(f"sqlite:///{Path(args.sqlite).resolve()}")
    if args.postgres:
        targets.append(args.postgres)
    print(f"load average at start: {os.getloadavg()}; workdir {workdir}")
    for url in targets:
        # delivery.runs.make_context opens the link registry on the configured database, not the tick's
        os.environ["RELANCE_DATABASE_URL"] = url
        get_settings.cache_clear()
        engine = plan.prepare(url, args.customers, args.orders_per_customer, args.fresh)
        runs = [time_tick(engine, jf, workdir, args.customers, args.due) for _ in range(args.repeat)]
        report(url.split(":")[0], runs)
        engine.dispose()


if __name__ == "__main__":
    main()

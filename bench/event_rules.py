# ruff: noqa: E501  (long SQL strings read better unwrapped)
"""Benchmark `relance plan` with `event:` rules (default 1,000,000 customers, ~5,000,000 events).

The base (customers, orders, consents, features, past campaigns) is bench/plan.py's; this
script adds random events in SQL (5 per customer on average, 3 % of unknown customers,
over the last 120 days: 30 % cart_abandoned with cart_value / items / category,
50 % product_viewed, 20 % signed_up_newsletter), then times the plan of one campaign per
shape of event rule (see audiences.event_rules): at least once (EXISTS), at least twice
(EXISTS over the grouped counts), never (NOT EXISTS), at most twice (NOT EXISTS grouped),
a grouped count under `not:`, and bench/plan.py's RFM campaign with and without a
`not: event` rule. It prints the query plan lines that
read customer_event, to show which index each shape uses.

    flock /tmp/relance-bench.lock .venv/bin/python bench/event_rules.py --sqlite bench/out/event_rules.db \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_event_rules
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import plan as plan_bench  # noqa: E402  (bench/plan.py: the 1M base generator)
from sqlalchemy import Engine, text  # noqa: E402

NOW = plan_bench.NOW
EVENTS_YAML = (
    Path(__file__).resolve().parent.parent / "audiences" / "events.yaml"
)  # declares cart_abandoned...

CART_30 = {"name": "cart_abandoned", "within_days": 30}
RULES: dict[str, dict] = {
    "at least once in 30 days, cart_value >= 50 (EXISTS)": {
        "event": {**CART_30, "where": {"cart_value": {"gte": 50}}}
    },
    "at least twice in 30 days (EXISTS grouped)": {"event": {**CART_30, "min_count": 2}},
    "never in 30 days (NOT EXISTS)": {"event": {**CART_30, "max_count": 0}},
    "at most twice in 30 days (NOT EXISTS grouped)": {"event": {**CART_30, "max_count": 2}},
    "viewed mode 3-5 times ever (EXISTS grouped, where)": {
        "event": {
            "name": "product_viewed",
            "where": {"category": {"eq": "mode"}},
            "min_count": 3,
            "max_count": 5,
        }
    },
    "not viewed at least twice ever (under not: per-customer look-up)": {
        "not": {"event": {"name": "product_viewed", "min_count": 2}}
    },
    "bench/plan.py RFM campaign (no event rule)": plan_bench.CAMPAIGN["audience"],
    "RFM + not cart_abandoned in 7 days": {
        "all": [
            *plan_bench.CAMPAIGN["audience"]["all"],
            {"not": {"event": {"name": "cart_abandoned", "within_days": 7}}},
        ]
    },
}


def generate_events(engine: Engine, customers: int, per_customer: int) -> None:
    d = engine.dialect.name
    rand = plan_bench._rand
    cats = plan_bench.CATEGORIES
    if d == "sqlite":
        seq = f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {customers}) "
        src = "FROM s"
        cat = f"json_extract('[{', '.join(chr(34) + c + chr(34) for c in cats)}]', '$[' || {rand(d, len(cats), 'c')} || ']')"
        when = f"strftime('%Y-%m-%d %H:%M:%f', '2026-03-03 09:30:00.000000', '-' || ({rand(d, 120 * 1440, 'm')}) || ' minutes')"
        props = f"json_object('cart_value', {rand(d, 30000, 'v')} / 100.0, 'items', 1 + {rand(d, 6, 'n')}, 'category', {cat})"
        null_customer = "NULL"
    else:
        seq = ""
        src = f"FROM generate_series(1, {customers}) AS s(i)"
        cat = f"(ARRAY[{', '.join(repr(c) for c in cats)}])[1 + {rand(d, len(cats), 'c')}]"
        when = f"(TIMESTAMPTZ '2026-03-03 09:30:00+00' - ({rand(d, 120 * 1440, 'm')}) * INTERVAL '1 minute')"
        props = f"json_build_object('cart_value', {rand(d, 30000, 'v')} / 100.0, 'items', 1 + {rand(d, 6, 'n')}, 'category', {cat})"
        null_customer = "NULL::int"
    kind = f"CASE WHEN {rand(d, 10, 't')} < 3 THEN 'cart_abandoned' WHEN {rand(d, 10, 'u')} < 7 THEN 'product_viewed' ELSE 'signed_up_newsletter' END"
    who = f"CASE WHEN {rand(d, 100, 'k')} < 3 THEN {null_customer} ELSE 1 + {rand(d, customers, 'w')} END"
    with engine.begin() as c:
        for k in range(per_customer):
            c.execute(text(
                f"{seq}INSERT INTO customer_event (event_id, type, customer_id, occurred_at, received_at, properties, source) "
                f"SELECT 'E' || i || '-{k}', {kind}, {who}, {when}, {when}, {props}, 'api' {src}"
            ))  # fmt: skip
            print(f"  events: {(k + 1) * customers:,}", flush=True)


def prepare(url: str, customers: int, per_customer: int, fresh: bool) -> Engine:
    engine = plan_bench.prepare(url, customers, 4, fresh)
    with engine.connect() as c:
        have = c.execute(text("SELECT count(*) FROM customer_event")).scalar_one()
    if have == 0:
        t = time.perf_counter()
        generate_events(engine, customers, per_customer)
        print(f"  events generated in {time.perf_counter() - t:.1f} s", flush=True)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE customer_event"))
        else:
            with engine.begin() as c:
                c.execute(text("ANALYZE"))
    return engine


def explain(engine: Engine, rule: dict) -> list[str]:
    """The plan lines of the segment query that read customer_event (which index, how)."""
    from pydantic import TypeAdapter
    from sqlalchemy import select

    from audiences.rule_context import CUSTOMER, RuleContext, from_clause
    from audiences.rules import compile_rule
    from core.spec import Rule

    ctx = RuleContext(NOW)
    cond = compile_rule(TypeAdapter(Rule).validate_python(rule), ctx)
    query = select(CUSTOMER.c.id).select_from(from_clause(ctx)).where(cond)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as c:
        rows = [" ".join(str(x) for x in r) for r in c.exec_driver_sql(prefix + sql)]
    return [r for r in rows if "customer_event" in r or "SubPlan" in r or "Semi" in r or "Anti" in r]


def time_rules(engine: Engine, repeat: int, names: list[str]) -> None:
    from audiences.plan import funnel
    from core.spec import Campaign

    for name in names:
        rule = RULES[name]
        campaign = Campaign.model_validate({**plan_bench.CAMPAIGN, "name": "bench-events", "audience": rule})
        times, cpu, result = [], [], None
        for _ in range(repeat):
            with engine.connect() as conn:
                t, p, s = time.perf_counter(), time.process_time(), plan_bench._server_cpu(conn)
                result = funnel(conn, campaign, NOW, priorities={})
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - p + plan_bench._server_cpu(conn) - s)
        assert result is not None
        segment = next(s["count"] for s in result["steps"] if s["step"] == "segment")
        print(f"  {name}: segment {segment:,}, recipients {result['recipients']['customers']:,}; plan best "
              f"{min(times):.2f} s, median {statistics.median(times):.2f} s (CPU median {statistics.median(cpu):.2f} s; "
              f"load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        for line in explain(engine, rule):
            print(f"      {line.strip()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--events-per-customer", type=int, default=5)
    p.add_argument("--sqlite", default="bench/out/event_rules.db", help="SQLite file ('' to skip)")
    p.add_argument("--postgres", default="", help="PostgreSQL URL of a bench database (created when missing)")
    p.add_argument("--fresh", action="store_true", help="Regenerate the base even if the database has one")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="", help="Time only the rules whose label contains this text")
    args = p.parse_args()

    os.environ.setdefault("RELANCE_CAMPAIGNS_DIR", "/nonexistent")  # no competing campaigns
    os.environ.setdefault("RELANCE_EVENTS_FILE", str(EVENTS_YAML))
    names = [n for n in RULES if args.only in n]
    targets = []
    if args.sqlite:
        targets.append(f"sqlite:///{Path(args.sqlite).resolve()}")
    if args.postgres:
        targets.append(args.postgres)
    for url in targets:
        print(
            f"{url.split(':')[0]}: {args.customers:,} customers, ~{args.customers * args.events_per_customer:,} events"
        )
        engine = prepare(url, args.customers, args.events_per_customer, args.fresh)
        time_rules(engine, args.repeat, names)


if __name__ == "__main__":
    main()

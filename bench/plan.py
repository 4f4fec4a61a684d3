# ruff: noqa: E501  (long SQL strings read better unwrapped)
"""Benchmark `relance plan` on a large base (default 1,000,000 customers, 4,000,000 orders).

The base is generated inside the database with SQL (recursive CTE on SQLite,
generate_series on PostgreSQL): it is faster than the CSV path and needs no
disk space outside the database. Then features are computed
(audiences.features.refresh) and a few past campaigns are written into the
ledger, so the frequency cap has something to read. Finally the plan of a
campaign with RFM rules, a category-bought-in-window rule, consent,
suppression, a frequency cap and a 10% control group is timed.

    .venv/bin/python bench/plan.py --customers 1000000 --sqlite bench/out/plan.db \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_plan
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402

NOW = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)  # a Tuesday, 10:30 in Paris
CATEGORIES = ["mode", "chaussures", "beaute", "maison", "sport", "high-tech", "enfants", "epicerie-fine"]
ZONES = ["Europe/Paris"] * 17 + ["Indian/Reunion", "America/Guadeloupe", "America/Martinique"]

CAMPAIGN = {
    "name": "bench-winback",
    "message": "winback/offer-15",
    "priority": 60,
    "audience": {
        "all": [
            {"feature": "recency_days", "between": [60, 365]},
            {"feature": "frequency", "gte": 2},
            {"feature": "monetary", "gte": 100},
            {"bought": {"category": ["mode", "chaussures"], "within_days": 365}},
        ]
    },
    "control_group": {"percent": 10},
    "channels": {"strategy": "preferred", "order": ["email", "sms", "push"]},
    "frequency_caps": [{"max_messages": 2, "days": 14}],
}


def _rand(dialect: str, n: int, salt: str) -> str:
    """An integer in [0, n) per row (random())."""
    if dialect == "sqlite":
        return f"(abs(random()) % {n})"
    return f"floor(random() * {n})::int"


def generate(engine: Engine, customers: int, orders_per_customer: int) -> None:
    d = engine.dialect.name
    zones = ", ".join(f"'{z}'" for z in ZONES)
    cats = ", ".join(f"'{c}'" for c in CATEGORIES)
    if d == "sqlite":
        seq = f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {customers}) "
        src = "FROM s"
        idx = "i"
        zone_pick = f"json_extract('[{zones.replace(chr(39), chr(34))}]', '$[' || (i % {len(ZONES)}) || ']')"
        ts_now = "'2026-03-03 09:30:00.000000'"
        days_ago = lambda expr: f"strftime('%Y-%m-%d %H:%M:%f', {ts_now}, '-' || ({expr}) || ' days')"  # noqa: E731
        date_ago = lambda expr: f"date('2026-03-03', '-' || ({expr}) || ' days')"  # noqa: E731
        cat_pick = f"json_extract('[{cats.replace(chr(39), chr(34))}]', '$[' || {_rand(d, len(CATEGORIES), 'c')} || ']')"  # noqa: E501
    else:
        seq = ""
        src = f"FROM generate_series(1, {customers}) AS s(i)"
        idx = "i"
        zone_pick = f"(ARRAY[{zones}])[1 + i % {len(ZONES)}]"
        days_ago = lambda expr: f"(TIMESTAMPTZ '2026-03-03 09:30:00+00' - ({expr}) * INTERVAL '1 day')"  # noqa: E731
        date_ago = lambda expr: f"(DATE '2026-03-03' - ({expr}))"  # noqa: E731
        cat_pick = f"(ARRAY[{cats}])[1 + {_rand(d, len(CATEGORIES), 'c')}]"
    chan = f"CASE {_rand(d, 10, 'p')} WHEN 0 THEN 'sms' WHEN 1 THEN 'push' ELSE 'email' END"
    with engine.begin() as c:
        c.execute(text(
            f"{seq}INSERT INTO customer (id, external_id, email, phone, locale, timezone, country, birth_year, "
            "signup_date, preferred_channel, created_at, updated_at) "
            f"SELECT {idx}, 'C' || {idx}, 'c' || {idx} || '@example.fr', '+336' || (10000000 + {idx}), 'fr_FR', "
            f"{zone_pick}, 'FR', 1950 + {_rand(d, 55, 'b')}, {date_ago(_rand(d, 2000, 's'))}, {chan}, "
            f"{days_ago('3000')}, {days_ago('1')} {src}"
        ))  # fmt: skip
        print(f"  customers: {customers:,}", flush=True)
        for k in range(orders_per_customer):
            c.execute(text(
                f"{seq}INSERT INTO orders (external_id, customer_id, ordered_at, amount_cents, currency, category, "
                f"product, payment_method) SELECT 'O' || {idx} || '-{k}', 1 + {_rand(d, customers, 'o')}, "
                f"{days_ago(_rand(d, 730, 'd'))}, 500 + {_rand(d, 20000, 'a')}, 'EUR', {cat_pick}, NULL, 'card' {src}"
            ))  # fmt: skip
            print(f"  orders: {(k + 1) * customers:,}", flush=True)
        for ch, share in (("email", 85), ("sms", 45), ("push", 30)):
            status = f"CASE WHEN {_rand(d, 100, 'g')} < 95 THEN 'granted' ELSE 'withdrawn' END"
            c.execute(text(
                f"{seq}INSERT INTO consent (customer_id, channel, status, updated_at, source) "
                f"SELECT {idx}, '{ch}', {status}, {days_ago('10')}, 'bench' {src} WHERE {idx} % 100 < {share}"
            ))  # fmt: skip
        c.execute(text(
            f"{seq}INSERT INTO device (customer_id, token, platform, active) "
            f"SELECT {idx}, 'tok' || {idx}, 'android', {'1' if d == 'sqlite' else 'true'} {src} WHERE {idx} % 3 = 0"
        ))  # fmt: skip
        c.execute(text(
            f"{seq}INSERT INTO suppression (channel, address, reason, created_at) "
            f"SELECT 'email', 'c' || {idx} || '@example.fr', 'unsubscribed', {days_ago('5')} {src} "
            f"WHERE {idx} % 97 = 0"
        ))  # fmt: skip
        # two past campaigns: 30% of customers got one message 3 and 10 days ago
        for n, ago in ((1, 3), (2, 10)):
            c.execute(text(
                "INSERT INTO campaign_run (id, key, campaign, status, created_at) "
                f"VALUES ({n}, 'past-{n}', 'past-{n}', 'completed', {days_ago(str(ago))})"
            ))  # fmt: skip
            c.execute(text(
                f"{seq}INSERT INTO ledger (run_id, campaign, customer_id, channel, in_control, batch, status, "
                "attempts, created_at, updated_at, sent_at) "
                f"SELECT {n}, 'past-{n}', {idx}, 'email', {'0' if d == 'sqlite' else 'false'}, 1, 'delivered', 1, "
                f"{days_ago(str(ago))}, {days_ago(str(ago))}, {days_ago(str(ago))} {src} WHERE ({idx} * 7 + {n}) % 10 < 3"
            ))  # fmt: skip
        if d == "postgresql":
            c.execute(text("SELECT setval('customer_id_seq', (SELECT max(id) FROM customer))"))


def prepare(url: str, customers: int, orders: int, fresh: bool) -> Engine:
    from audiences.features import refresh
    from core.db import get_engine, migrate

    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:  # PostgreSQL: the bench database is created when missing, re-created with --fresh
        import psycopg

        name = url.rsplit("/", 1)[1]
        admin = url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as a:
            exists = a.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if fresh or not exists:
                a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                a.execute(f'CREATE DATABASE "{name}"')
    migrate(url)
    engine = get_engine(url)
    with engine.connect() as c:
        have = c.execute(text("SELECT count(*) FROM customer")).scalar_one()
    if have == 0:
        t = time.perf_counter()
        generate(engine, customers, orders)
        print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        refresh(engine, full=True, now=NOW)
        print(f"  features computed in {time.perf_counter() - t:.1f} s", flush=True)
    # planner statistics after bulk loads and new indexes (sqlite_stat1 / pg_statistic change the plans);
    # on PostgreSQL also VACUUM, as autovacuum would soon after a bulk load: it sets the visibility map
    # that index-only scans need (a freshly loaded table makes every index entry fetch its heap page)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as c:
            c.execute(text("ANALYZE"))
    return engine


def _server_cpu(conn) -> float:  # noqa: ANN001
    """CPU seconds of this connection's PostgreSQL backend (server on this machine), else 0.

    Why: under a shared machine's load the wall time mostly measures the wait
    for a core; the backend's CPU is what the query costs (parallel workers not counted).
    """
    if conn.dialect.name != "postgresql":
        return 0.0
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_plan(engine: Engine, repeat: int) -> None:
    from audiences.plan import funnel
    from core.spec import Campaign

    campaign = Campaign.model_validate(CAMPAIGN)
    times, cpu, result = [], [], None
    for _ in range(repeat):
        with engine.connect() as conn:
            t, p, s = time.perf_counter(), time.process_time(), _server_cpu(conn)
            result = funnel(conn, campaign, NOW, priorities={})
            times.append(time.perf_counter() - t)
            # SQLite runs in this process; PostgreSQL in its backend: CPU without the wait for a core
            cpu.append(time.process_time() - p + _server_cpu(conn) - s)
    assert result is not None
    steps = " -> ".join(f"{s['step']} {s['count']:,}" for s in result["steps"])
    print(f"  funnel: {steps}; recipients {result['recipients']['customers']:,}, "
          f"held out {result['control']['held_out_customers']:,}")  # fmt: skip
    print(
        f"  plan: best {min(times):.2f} s, median {statistics.median(times):.2f} s over {repeat} runs "
        f"(CPU median {statistics.median(cpu):.2f} s, this process + PostgreSQL backend; load average {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--orders-per-customer", type=int, default=4)
    p.add_argument("--sqlite", default="bench/out/plan.db", help="SQLite file ('' to skip)")
    p.add_argument(
        "--postgres", default="", help="PostgreSQL URL of a bench database (dropped and re-created)"
    )
    p.add_argument("--fresh", action="store_true", help="Regenerate the base even if the database has one")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    os.environ.setdefault("RELANCE_CAMPAIGNS_DIR", "/nonexistent")  # no competing campaigns
    targets = []
    if args.sqlite:
        targets.append(f"sqlite:///{Path(args.sqlite).resolve()}")
    if args.postgres:
        targets.append(args.postgres)
    for url in targets:
        print(
            f"{url.split(':')[0]}: {args.customers:,} customers, {args.customers * args.orders_per_customer:,} orders"
        )
        engine = prepare(url, args.customers, args.orders_per_customer, args.fresh)
        time_plan(engine, args.repeat)


if __name__ == "__main__":
    main()

"""Benchmark: `features refresh` on 1,000,000 customers and ~4,000,000 orders (SQLite by default).

Builds the database once with the real importers from the demo-data files
(bench/out/demo-<N>/, git-ignored; bench/import_customers.py generates them),
timing the orders import on the way, then times a full refresh (every customer
inserted), a second full refresh (every row updated) and an incremental refresh
after 1 % of the customers were invalidated.

    .venv/bin/python bench/features.py [--customers 1000000] [--rebuild] [--db-url URL]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import text

OUT = Path(__file__).parent / "out"


def build(data: Path, url: str) -> None:
    """Import the demo customers and orders (timed) into a fresh database."""
    from audiences.importer import import_customers, import_orders
    from core.db import get_engine, migrate

    migrate(url)
    engine = get_engine(url)
    for name, fn in (("customers", import_customers), ("orders", import_orders)):
        t = time.perf_counter()
        report = fn(data / f"{name}.csv", engine)
        seconds = time.perf_counter() - t
        print(
            f"import {name}: {report.rows:,} rows in {seconds:.1f} s = {report.rows / seconds:,.0f} rows/s "
            f"(inserted {report.inserted:,}, rejected {len(report.rejected):,})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true", help="re-import even if the database exists")
    parser.add_argument("--db-url", help="default: a SQLite file in bench/out/")
    args = parser.parse_args()

    data = OUT / f"demo-{args.customers}"
    if not (data / "orders.csv").exists():
        raise SystemExit(f"{data}/orders.csv is missing: run bench/import_customers.py first")
    db = OUT / f"bench-features-{args.customers}.db"
    url = args.db_url or f"sqlite:///{db}"
    os.environ["RELANCE_DATABASE_URL"] = url
    if args.rebuild or (not args.db_url and not db.exists()):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        build(data, url)

    from audiences.features import refresh
    from core.db import get_engine

    engine = get_engine(url)
    with engine.connect() as conn:
        customers = conn.execute(text("SELECT COUNT(*) FROM customer")).scalar_one()
        orders = conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()
    print(f"database: {customers:,} customers, {orders:,} orders ({engine.dialect.name})")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM customer_features"))
    for label in ("full refresh (insert)", "full refresh (update)"):
        result = refresh(engine, full=True, now=now)
        print(f"{label}: {result.customers:,} customers in {result.seconds:.1f} s")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM customer_features WHERE customer_id % 100 = 0"))
    result = refresh(engine, now=now)
    print(f"incremental refresh (1 % invalidated): {result.customers:,} customers in {result.seconds:.1f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mb:.0f} MB (the refresh itself runs in the database); run on {date.today()}")
    print(f"machine: {os.cpu_count()} cores; target: full refresh well under 60 s")


if __name__ == "__main__":
    main()

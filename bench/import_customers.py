"""Benchmark: `import customers` of a 1,000,000-row CSV into a fresh SQLite (or PostgreSQL) database.

Generates the file once with the demo-data generator (bench/out/demo-<N>/, git-ignored),
then times the real importer and reports rows/s and peak memory (ru_maxrss) of the
importing process and of its validation workers. A second run of the same file
measures the idempotent no-op re-import.

    .venv/bin/python bench/import_customers.py [--customers 1000000] [--workers N] [--again]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_import]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

# this checkout first, not the installed one: a git worktree of older code then benchmarks that code
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
OUT = Path(__file__).parent / "out"


def _cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its finished children: unlike wall time, not inflated by other load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _generate(data: Path, customers: int, seed: int) -> dict:
    from audiences.demo_data import generate

    return generate(data, customers, seed=seed, as_of=date(2026, 11, 1)).counts


def _fresh_sqlite(db: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{db}"


def _fresh_postgres(url: str) -> str:
    """Drop and re-create the database of ``url``; the CPU printed is the importer's, not the server's."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="validation processes (default: auto)")
    parser.add_argument("--again", action="store_true", help="also time a second, no-op import of the file")
    parser.add_argument("--postgres", default="", help="PostgreSQL bench database URL (dropped, re-created)")
    args = parser.parse_args()

    data = OUT / f"demo-{args.customers}"
    customers_csv = data / "customers.csv"
    generated = not customers_csv.exists()
    if generated:
        # in a child process: the generator's numpy peak (~5 GB for 1M) must not count as the importer's
        t = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            counts = pool.submit(_generate, data, args.customers, args.seed).result()
        print(f"generated {counts} in {time.perf_counter() - t:.1f} s")
    size_mb = customers_csv.stat().st_size / 1e6

    url = _fresh_postgres(args.postgres) if args.postgres else _fresh_sqlite(OUT / "bench-import.db")
    os.environ["RELANCE_DATABASE_URL"] = url
    from audiences.importer import import_customers
    from core.db import get_engine, migrate

    migrate(url)
    engine = get_engine(url)
    runs = 2 if args.again else 1
    load = f"{os.getloadavg()[0]:.1f}"
    for run in range(runs):
        t, cpu = time.perf_counter(), _cpu_seconds()
        report = import_customers(customers_csv, engine, workers=args.workers)
        seconds = time.perf_counter() - t
        importer_cpu, workers_cpu = (now - before for now, before in zip(_cpu_seconds(), cpu, strict=True))
        label = "first import" if run == 0 else "re-import (no-op)"
        print(
            f"{label}: {report.rows:,} rows ({size_mb:.0f} MB) in {seconds:.1f} s "
            f"= {report.rows / seconds:,.0f} rows/s; "
            f"inserted {report.inserted:,}, updated {report.updated:,}, unchanged {report.unchanged:,}, "
            f"rejected {len(report.rejected):,}, warnings {len(report.warnings):,}; "
            f"CPU: importer {importer_cpu:.0f} s, validation workers {workers_cpu:.0f} s"
        )
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    note = " (or the data generator, when it ran in this call)" if generated else ""
    print(f"peak RSS: importer {self_mb:.0f} MB, largest validation worker{note} {children_mb:.0f} MB")
    print(
        f"machine: {os.cpu_count()} cores, load average before/after {load} / {os.getloadavg()[0]:.1f}; "
        "target < 120 s"
    )


if __name__ == "__main__":
    main()

"""kill -9 journey ticks at random moments, on a larger base than the test (issue 17).

The same journey, kills and checks as tests/test_journey_crash.py (e-mail -> wait 3 days ->
branch on the open -> SMS or exit, ticks SIGKILLed inside the advance and inside the sending,
then resumed on the same clocks), with more customers and kills. Prints where the kills
landed and the counts checked: every entry's history is its path exactly once, one ledger row
per (entry, step, channel), every message in the outbox at most once.

    flock /tmp/relance-bench.lock .venv/bin/python bench/journey_crash.py --customers 2000 --kills 15 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_journey_crash
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fresh_database(url: str, workdir: Path) -> str:
    """An empty, migrated database: a SQLite file in ``workdir`` or the PostgreSQL one re-created."""
    from core.db import migrate

    if not url:
        url = f"sqlite:///{workdir / 'relance.db'}"
    else:
        import psycopg

        name = url.rsplit("/", 1)[1]
        admin = url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            a.execute(f'CREATE DATABASE "{name}"')
    migrate(url)
    return url


def run(url: str, customers: int, kills: int, seed: int) -> None:
    from core.db import get_engine, reset_engines
    from core.settings import get_settings
    from tests.test_journey_crash import crash_and_check

    workdir = Path(tempfile.mkdtemp(prefix="relance-journey-crash-"))
    os.environ["RELANCE_OUTBOX_DIR"] = str(workdir / "outbox")
    os.environ["RELANCE_TEMPLATES_DIR"] = str(workdir / "templates")
    os.environ["RELANCE_CAMPAIGNS_DIR"] = str(workdir / "campaigns")
    os.environ.setdefault("RELANCE_SECRET_KEY", "bench-secret")
    url = fresh_database(url, workdir)
    os.environ["RELANCE_DATABASE_URL"] = url
    get_settings.cache_clear()
    reset_engines()
    started = time.perf_counter()
    engine = get_engine(url)
    seen = crash_and_check(engine, url, workdir, customers=customers, kills_per_clock=kills, seed=seed)
    took = time.perf_counter() - started
    landed = seen["kills"]
    print(f"{url.split(':')[0]}: {customers:,} customers, {sum(landed.values())} kills in {took:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"  kills landed: {dict(landed)}")
    print(f"  ledger rows: {seen['ledger']} ({seen['unknown']} unknown); history rows {seen['history']:,}; "
          f"outbox messages {seen['outbox']:,} (each once)")  # fmt: skip
    print("  checked: each entry's history = its path, each step once; one ledger row per (entry, step, "
          "channel); no outbox message twice; every customer entered and completed")  # fmt: skip
    reset_engines()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--kills", type=int, default=15, help="kills per clock (two clocks)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--postgres", default="", help="PostgreSQL URL of a database (dropped and re-created)")
    args = p.parse_args()
    if args.sqlite:
        run("", args.customers, args.kills, args.seed)
    if args.postgres:
        run(args.postgres, args.customers, args.kills, args.seed)


if __name__ == "__main__":
    main()

"""Benchmark: the report of a campaign with 1,000,000 ledger rows (target: under 10 s).

Builds a SQLite database (or uses RELANCE_DATABASE_URL / --url) with one run of
N messages, a 10% control group and realistic events (deliveries, opens,
clicks, conversions with revenue, bounces, unsubscribes), then times
``build_report`` and the HTML + CSV writing.

    .venv/bin/python bench/report.py --rows 1000000
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from core.db import get_engine, migrate
from core.models import CampaignRun, Customer, Event, LedgerEntry
from reporting.report import build_report
from reporting.report_render import write_csv, write_html

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CHUNK = 50_000


def populate(url: str, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    engine = get_engine(url)
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(CampaignRun.__table__).values(
                key="bench:1", campaign="bench", status="completed", created_at=T0, started_at=T0
            )
        ).inserted_primary_key[0]
    event_id = 0
    for start in range(0, rows, CHUNK):
        ids = range(start + 1, min(rows, start + CHUNK) + 1)
        customers, ledger, events = [], [], []
        for i in ids:
            control = rng.random() < 0.1
            channel = "sms" if rng.random() < 0.3 else "email"
            customers.append(
                {"id": i, "external_id": f"b{i}", "locale": "fr_FR" if rng.random() < 0.9 else "en_GB"}
            )
            outcome = rng.random()
            status = (
                "held_out"
                if control
                else (
                    "bounced"
                    if outcome < 0.02
                    else "clicked"
                    if outcome < 0.1
                    else "opened"
                    if outcome < 0.35
                    else "delivered"
                    if outcome < 0.95
                    else "sent"
                )
            )
            ledger.append(
                {
                    "id": i,
                    "run_id": run_id,
                    "campaign": "bench",
                    "customer_id": i,
                    "channel": channel,
                    "variant": "a" if rng.random() < 0.5 else "b",
                    "in_control": control,
                    "status": status,
                    "sent_at": None if control else T0,
                    "cost_units": 1 if channel == "sms" else None,
                }
            )
            kinds = {
                "delivered": ["delivered"],
                "opened": ["delivered", "opened"],
                "clicked": ["delivered", "opened", "clicked"],
                "bounced": ["bounced"],
            }.get(status, [])
            if (status == "clicked" and rng.random() < 0.3) or (status != "bounced" and rng.random() < 0.01):
                kinds.append("converted")
            for kind in kinds:
                event_id += 1
                events.append(
                    {
                        "id": event_id,
                        "ledger_id": i,
                        "customer_id": i,
                        "run_id": run_id,
                        "type": kind,
                        "subtype": "hard" if kind == "bounced" else None,
                        "provider": "bench",
                        "provider_event_id": str(event_id),
                        "machine": False,
                        "occurred_at": T0 + timedelta(minutes=rng.randint(1, 3000)),
                        "revenue_cents": rng.randint(1500, 15000) if kind == "converted" else None,
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(Customer.__table__), customers)
            conn.execute(insert(LedgerEntry.__table__), ledger)
            if events:
                conn.execute(insert(Event.__table__), events)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--url", default=None, help="database URL (default: a fresh SQLite file in bench/out)"
    )
    parser.add_argument("--reuse", action="store_true", help="skip populating (database already built)")
    args = parser.parse_args()
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    url = args.url
    if url is None:
        db = out / f"report-{args.rows}.db"
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{db}"
    migrate(url)
    if not args.reuse:
        t = time.perf_counter()
        populate(url, args.rows, args.seed)
        print(f"populated {args.rows:,} ledger rows in {time.perf_counter() - t:.1f} s")
    engine = get_engine(url)
    t = time.perf_counter()
    with engine.connect() as conn:
        report = build_report(conn, "bench")
    computed = time.perf_counter() - t
    write_html(report, out / "bench-report.html")
    write_csv(report, out / "bench-report.csv")
    total = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{engine.dialect.name}: report over {report.totals.messages:,} ledger rows: "
        f"figures {computed:.2f} s, "
        f"with HTML + CSV {total:.2f} s (target < 10 s); peak RSS {peak:.0f} MiB"
    )
    print(
        f"  sent {report.totals.sent:,}, clicked {report.totals.clicked:,}, converted "
        f"{report.totals.converted:,}; {report.uplift_total.conclusion}"
    )


if __name__ == "__main__":
    main()

"""Triggered journey latency: events in through `POST /events`, the message in the outbox.

A real tracking server (uvicorn, `tracking.app:create_app`) on loopback receives ``--rate`` events a
second (batches of ``--rate / 10`` every 0.1 s) for ``--seconds``, each for a different customer,
into a triggered journey with no delay whose first step e-mails through the outbox. A ticker
process ticks every ``--tick-seconds`` (10 s: RELANCE_JOURNEYS_TICK_SECONDS, what each minute's
`advance-journeys` run does), as with the default settings. Latency per event: from its acceptance
(``customer_event.received_at``) to its message written (``ledger.sent_at``), p50 / p95 / max.

    .venv/bin/python bench/journey_latency.py --seconds 300
    .venv/bin/python bench/journey_latency.py --seconds 300 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/relance_bench_latency
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ingest import Server, free_port  # noqa: E402 - after the sys.path line above

JOURNEY = """\
name: panier-latence
control_group: {percent: 0}
offer: {code: PANIER10, url: "https://shop.example/panier"}
entry:
  event: cart_abandoned
  delay: 0m
steps:
  - name: reminder
    send: {message: winback/offer-15, offer: {price: 29.9, discount_percent: 10}, channels: {order: [email]}}
"""
TICKER = """
import os, sys, time
sys.path.insert(0, os.environ["REPO"])
from core.db import get_engine
from journeys.definition import load_journeys
from journeys.tick import tick
every, engine = float(os.environ["TICK_SECONDS"]), get_engine()
journeys = load_journeys(os.environ["RELANCE_CAMPAIGNS_DIR"])
while True:
    started = time.monotonic()
    tick(engine, journeys)
    time.sleep(max(0.0, every - (time.monotonic() - started)))
"""


def seed(url: str, customers: int) -> None:
    """A fresh schema and ``customers`` customers with an e-mail and e-mail consent."""
    from sqlalchemy import insert, text

    from core.db import make_engine, migrate
    from core.models import Consent, Customer, utcnow

    if url.startswith("postgresql"):
        from sqlalchemy import create_engine

        admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        name = url.rsplit("/", 1)[1]
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    migrate(url)
    engine = make_engine(url)
    now = utcnow()
    rows = [
        {"external_id": f"L{i:07d}", "email": f"l{i}@example.org", "created_at": now, "updated_at": now}
        for i in range(customers)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), rows)
        ids = [r[0] for r in conn.execute(text("SELECT id FROM customer ORDER BY id"))]
        conn.execute(
            insert(Consent.__table__),
            [{"customer_id": i, "channel": "email", "status": "granted", "updated_at": now, "source": "bench"}
             for i in ids],
        )  # fmt: skip
    engine.dispose()


def load(port: int, key: str, rate: int, seconds: float, sent: list[str]) -> None:
    """``rate`` events a second in 10 batches a second, each event for the next customer."""
    per_batch, n = max(1, rate // 10), 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            batch = []
            for _ in range(per_batch):
                batch.append(
                    {
                        "event_id": uuid.uuid4().hex,
                        "type": "cart_abandoned",
                        "external_id": f"L{n:07d}",
                        "occurred_at": datetime.now(UTC).isoformat(),
                        "properties": {"cart_value": 59.9},
                    }
                )
                n += 1
            answer = client.post("/events", json={"events": batch}, headers={"X-API-Key": key})
            answer.raise_for_status()
            if answer.json()["accepted"] != len(batch):
                raise SystemExit(f"refused: {answer.json()}")
            sent += [e["event_id"] for e in batch]
            time.sleep(max(0.0, start + n / rate - time.monotonic()))


def latencies(url: str) -> tuple[int, int, list[float]]:
    from sqlalchemy import text

    from core.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM customer_event")).scalar_one()
        rows = conn.execute(
            text(
                "SELECT e.received_at, l.sent_at FROM customer_event e "
                "JOIN journey_entry j ON j.journey = 'panier-latence' AND j.customer_id = e.customer_id "
                "AND j.entry_key = 'event:' || e.event_id "
                "JOIN ledger l ON l.entry_id = j.id AND l.step = 'reminder' WHERE l.sent_at IS NOT NULL"
            )
        ).all()
    engine.dispose()

    def moment(v):  # SQLite returns text
        return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))

    return stored, len(rows), [(moment(s) - moment(r)).total_seconds() for r, s in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=f"sqlite:///{REPO}/bench/out/journey-latency.db")
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--tick-seconds", type=float, default=10.0)
    args = p.parse_args()
    customers = int(args.rate * args.seconds * 1.1) + 100
    if args.database_url.startswith("sqlite:///"):
        Path(args.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    seed(args.database_url, customers)
    work = Path(tempfile.mkdtemp(prefix="relance-latency-"))
    (work / "campaigns").mkdir()
    (work / "campaigns" / "panier.yaml").write_text(JOURNEY, encoding="utf-8")
    shutil.copytree(REPO / "templates", work / "templates")
    key, port = "bench-" + uuid.uuid4().hex, free_port()
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": args.database_url,
        "RELANCE_CONVERSIONS_API_KEY": key,
        "RELANCE_CAMPAIGNS_DIR": str(work / "campaigns"),
        "RELANCE_TEMPLATES_DIR": str(work / "templates"),
        "RELANCE_OUTBOX_DIR": str(work / "outbox"),
        "RELANCE_EVENTS_FILE": str(REPO / "audiences/events.yaml"),
        "RELANCE_DEFAULT_FREQUENCY_CAPS": "[]",
        "REPO": str(REPO),
        "TICK_SECONDS": str(args.tick_seconds),
    }
    server = Server(port, env)  # the webhook bench's uvicorn process, waited for on /healthz
    server.start()
    ticker = subprocess.Popen([sys.executable, "-c", TICKER], cwd=REPO, env=env)
    try:
        sent: list[str] = []
        started = time.monotonic()
        loader = threading.Thread(target=load, args=(port, key, args.rate, args.seconds, sent))
        loader.start()
        loader.join()
        elapsed = time.monotonic() - started
        time.sleep(args.tick_seconds * 2 + 5)  # the last events' tick
    finally:
        ticker.terminate()
        ticker.wait()
        server.stop()
    stored, done, lat = latencies(args.database_url)
    lat.sort()
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")
    print(f"database: {args.database_url.split('@')[-1]}")
    print(f"events sent {len(sent):,} in {elapsed:.0f} s ({len(sent) / elapsed:.1f}/s), stored {stored:,}")
    print(f"messages in the outbox: {done:,}; tick every {args.tick_seconds:g} s")
    if lat:
        print(f"latency acceptance -> outbox: p50 {statistics.median(lat):.1f} s, p95 {p95:.1f} s, "
              f"max {lat[-1]:.1f} s")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

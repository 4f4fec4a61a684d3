"""Customer event ingestion benchmark: POST /events batches into a real uvicorn server on loopback.

Starts `uvicorn --factory tracking.app:create_app` as a separate process on a fresh database
(SQLite in bench/out/ by default, or --database-url) with a seeded customer base, sends a bounded
number of batches of 100 events (cart_abandoned, product_viewed, signed_up_newsletter of
audiences/events.yaml; customers by external id, by e-mail, and some not imported yet) from a
few concurrent clients that retry 5xx answers and connection errors with the SAME event ids, as
a shop's sender must. Optionally the server is restarted in the middle of the load
(--restart-after N seconds; --kill sends SIGKILL instead of a graceful SIGTERM). Finally it
checks that the database holds exactly as many events as were sent (count in = count stored).

    .venv/bin/python bench/events_ingest.py --batches 600 --clients 4
    .venv/bin/python bench/events_ingest.py --batches 600 --clients 4 --restart-after 2 --kill
    .venv/bin/python bench/events_ingest.py --database-url postgresql+psycopg://postgres@127.0.0.1/x
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ingest import Server, free_port  # noqa: E402 - after the sys.path line above

API_KEY = "bench-events-key"


def seed_customers(db_url: str, rows: int) -> str:
    """``rows`` customers ``e-<tag>-<i>`` with e-mails ``e<i>-<tag>@example.com``; returns the tag."""
    from core.db import make_engine, migrate
    from core.models import Customer

    migrate(db_url)
    engine = make_engine(db_url, one_off=True)
    tag = uuid.uuid4().hex[:8]
    with engine.begin() as conn:
        conn.execute(
            Customer.__table__.insert(),
            [{"external_id": f"e-{tag}-{i}", "email": f"e{i}-{tag}@example.com"} for i in range(rows)],
        )
    engine.dispose()
    return tag


def count_events(db_url: str) -> int:
    from core.db import make_engine
    from core.models import CustomerEvent

    engine = make_engine(db_url, one_off=True)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(CustomerEvent.__table__)).scalar_one()
    engine.dispose()
    return n


def make_batches(tag: str, customers: int, batches: int, size: int = 100, seed: int = 7) -> list[bytes]:
    """JSON bodies of ``size`` events each: 80 % by external id, 15 % by e-mail, 5 % unknown customers."""
    rnd = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    out = []
    now = time.time()
    for b in range(batches):
        events = []
        for i in range(size):
            n = rnd.randrange(customers)
            who = rnd.random()
            event: dict = {"event_id": f"{run}-{b}-{i}"}
            if who < 0.80:
                event["external_id"] = f"e-{tag}-{n}"
            elif who < 0.95:
                event["email"] = f"E{n}-{tag}@Example.com"
            else:
                event["external_id"] = f"later-{tag}-{n}"
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - rnd.randrange(86_400)))
            event["occurred_at"] = at
            kind = rnd.random()
            if kind < 0.5:
                event["type"] = "cart_abandoned"
                event["properties"] = {
                    "cart_value": round(rnd.uniform(5, 400), 2),
                    "items": rnd.randrange(1, 8),
                    "category": rnd.choice(["mode", "maison", "beaute", "sport"]),
                }
            elif kind < 0.95:
                event["type"] = "product_viewed"
                event["properties"] = {"product": f"P{rnd.randrange(5000)}", "category": "mode"}
            else:
                event["type"] = "signed_up_newsletter"
            events.append(event)
        out.append(json.dumps({"events": events}).encode())
    return out


def send_all(url: str, bodies: list[bytes], clients: int) -> dict:
    """Post every batch until it is answered 200; retries (same body, same event ids) on 5xx and
    connection errors. Returns counters, including what the server said it accepted."""
    stats = {"retries": 0, "ok": 0, "accepted": 0, "duplicates": 0, "refused": 0}
    lock = threading.Lock()
    queue = list(reversed(bodies))
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                while True:
                    with contextlib.suppress(httpx.TransportError):  # server restarting: retry the batch
                        r = client.post("/events", content=body, headers=headers)
                        if r.status_code == 200:
                            answer = r.json()
                            break
                        if r.status_code < 500:
                            raise RuntimeError(f"refused: {r.status_code} {r.text}")
                    with lock:
                        stats["retries"] += 1
                    time.sleep(0.1)
                with lock:
                    stats["ok"] += 1
                    stats["accepted"] += answer["accepted"]
                    stats["duplicates"] += answer["duplicates"]
                    stats["refused"] += len(answer["refused"])

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


def run(
    db_url: str,
    batches: int,
    clients: int,
    restart_after: float | None = None,
    kill: bool = False,
    customers: int = 5000,
) -> dict:
    tag = seed_customers(db_url, customers)
    port = free_port()
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": db_url,
        "RELANCE_CONVERSIONS_API_KEY": API_KEY,
        "RELANCE_EVENTS_FILE": str(REPO / "audiences" / "events.yaml"),
        "RELANCE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    server = Server(port, env)
    server.start()
    bodies = make_batches(tag, customers, batches)
    before = count_events(db_url)
    restarter = None
    if restart_after is not None:

        def restart() -> None:
            time.sleep(restart_after)
            if kill and server.proc is not None:
                server.proc.send_signal(signal.SIGKILL)  # no graceful shutdown: requests in flight die
                server.proc.wait()
            else:
                server.stop()
            server.start()

        restarter = threading.Thread(target=restart)
    started = time.perf_counter()
    if restarter:
        restarter.start()
    stats = send_all(server.url, bodies, clients)
    elapsed = time.perf_counter() - started
    if restarter:
        restarter.join()
    server.stop()
    sent = batches * 100
    stored = count_events(db_url) - before
    return {
        "events": sent,
        "stored": stored,
        "seconds": round(elapsed, 3),
        "events_per_s": round(sent / elapsed),
        "retries": stats["retries"],
        "answered_accepted": stats["accepted"],
        "answered_duplicates": stats["duplicates"],
        "refused": stats["refused"],
        "lost": sent - stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=600, help="batches of 100 events")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders")
    parser.add_argument("--restart-after", type=float, default=None, help="restart the server after N s")
    parser.add_argument("--kill", action="store_true", help="restart with SIGKILL (kill -9), not SIGTERM")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in bench/out/")
    args = parser.parse_args()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    db_url = args.database_url or f"sqlite:///{out / f'events-{uuid.uuid4().hex[:8]}.db'}"
    result = run(db_url, args.batches, args.clients, args.restart_after, args.kill, args.customers)
    print(json.dumps({"database": db_url.split("://")[0], "restart": args.restart_after, "kill": args.kill,
                      **result}))  # fmt: skip
    if result["lost"]:
        sys.exit(f"{result['lost']} events lost")


if __name__ == "__main__":
    main()

"""Webhook ingestion benchmark: signed SendGrid batches into a real uvicorn server on loopback.

Starts `uvicorn --factory tracking.app:create_app` as a separate process on a
fresh database (SQLite in bench/out/ by default, or --database-url), sends a
bounded number of signed batches of 100 events from a few concurrent clients
(retrying 5xx and connection errors, as SendGrid does), optionally restarts
the server in the middle of the load (--restart-after), and finally checks
that the database holds exactly as many events as were sent.

    .venv/bin/python bench/ingest.py --batches 400 --clients 4
    .venv/bin/python bench/ingest.py --batches 400 --clients 4 --restart-after 1.0
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def signed(private: ec.EllipticCurvePrivateKey, body: bytes) -> dict:
    stamp = str(int(time.time()))
    sig = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def seed_ledger(db_url: str, rows: int) -> list[int]:
    """One run with ``rows`` customers and sent e-mail ledger rows (bench setup, written directly)."""
    from core.db import make_engine, migrate
    from core.models import CampaignRun, Customer, LedgerEntry, utcnow

    migrate(db_url)
    engine = make_engine(db_url, one_off=True)
    now = utcnow()
    with engine.begin() as conn:
        run_id = conn.execute(
            CampaignRun.__table__.insert().values(key=f"bench:{uuid.uuid4().hex}", campaign="bench")
        ).inserted_primary_key[0]
        tag = uuid.uuid4().hex[:8]
        conn.execute(
            Customer.__table__.insert(),
            [{"external_id": f"b-{tag}-{i}", "email": f"b{i}-{tag}@example.com"} for i in range(rows)],
        )
        ids = (
            conn.execute(
                select(Customer.__table__.c.id).where(Customer.__table__.c.external_id.like(f"b-{tag}-%"))
            )
            .scalars()
            .all()
        )
        conn.execute(
            LedgerEntry.__table__.insert(),
            [
                {
                    "run_id": run_id,
                    "campaign": "bench",
                    "customer_id": cid,
                    "channel": "email",
                    "status": "sent",
                    "sent_at": now,
                    "created_at": now,
                }
                for cid in ids
            ],
        )
        ledger = LedgerEntry.__table__
        result = conn.execute(select(ledger.c.id).where(ledger.c.run_id == run_id)).scalars().all()
    engine.dispose()
    return list(result)


def count_events(db_url: str) -> int:
    from core.db import make_engine
    from core.models import Event

    engine = make_engine(db_url, one_off=True)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Event.__table__)).scalar_one()
    engine.dispose()
    return n


class Server:
    """`uvicorn --factory tracking.app:create_app` in its own process."""

    def __init__(self, port: int, env: dict) -> None:
        self.port, self.env, self.proc = port, env, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tracking.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("tracking server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish and commit
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_batches(private, ledger_ids: list[int], batches: int, size: int = 100) -> list[tuple[bytes, dict]]:
    kinds = ["processed", "delivered", "open", "click", "deferred"]
    out = []
    for b in range(batches):
        events = []
        for i in range(size):
            n = b * size + i
            event = {
                "event": kinds[n % len(kinds)],
                "email": "x@example.com",
                "timestamp": int(time.time()),
                "sg_event_id": uuid.uuid4().hex,
                "ledger_id": str(ledger_ids[n % len(ledger_ids)]),
            }
            if event["event"] == "click":
                event["url"] = "https://shop.example/"
            events.append(event)
        body = json.dumps(events).encode()
        out.append((body, signed(private, body)))
    return out


def send_all(url: str, batches: list[tuple[bytes, dict]], clients: int) -> dict:
    """Post every batch once acknowledged; retries like SendGrid. Returns counters."""
    stats = {"retries": 0, "ok": 0}
    lock = threading.Lock()
    queue = list(reversed(batches))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body, headers = queue.pop()
                while True:
                    try:
                        r = client.post("/webhooks/sendgrid", content=body, headers=headers)
                        if r.status_code == 200:
                            break
                        if r.status_code < 500:
                            raise RuntimeError(f"refused: {r.status_code} {r.text}")
                    except httpx.TransportError:
                        pass
                    with lock:
                        stats["retries"] += 1
                    time.sleep(0.1)
                with lock:
                    stats["ok"] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


def run(db_url: str, batches: int, clients: int, restart_after: float | None, ledger_rows: int) -> dict:
    ledger_ids = seed_ledger(db_url, ledger_rows)
    private, public = keypair()
    port = free_port()
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": db_url,
        "RELANCE_SENDGRID_WEBHOOK_PUBLIC_KEY": public,
        "RELANCE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    server = Server(port, env)
    server.start()
    payloads = make_batches(private, ledger_ids, batches)
    before = count_events(db_url)
    restarter = None
    if restart_after is not None:

        def restart() -> None:
            time.sleep(restart_after)
            server.stop()
            server.start()

        restarter = threading.Thread(target=restart)
    started = time.perf_counter()
    if restarter:
        restarter.start()
    stats = send_all(server.url, payloads, clients)
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
        "lost": sent - stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=400, help="signed batches of 100 events")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders")
    parser.add_argument(
        "--restart-after", type=float, default=None, help="restart the server after N seconds"
    )
    parser.add_argument("--ledger-rows", type=int, default=2000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in bench/out/")
    args = parser.parse_args()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    db_url = args.database_url or f"sqlite:///{out / f'ingest-{uuid.uuid4().hex[:8]}.db'}"
    result = run(db_url, args.batches, args.clients, args.restart_after, args.ledger_rows)
    print(json.dumps({"database": db_url.split("///")[0], **result}))
    if result["lost"]:
        sys.exit(f"{result['lost']} events lost")


if __name__ == "__main__":
    main()

"""Crash outcomes: how many messages end `unknown` when a run is killed with kill -9, and were they?

    flock /tmp/relance-bench.lock .venv/bin/python bench/crash_outcomes.py --customers 2000 --kills 5

Every customer gets e-mail (SendGrid provider -> a fake v3 API on loopback with ``--latency``
and ``--fail`` 503 answers, retried), SMS and push (outbox). `relance run --no-prefect` runs in
a subprocess that is SIGKILLed ``--kills`` times at random moments while messages are in
flight, then run again with the same key until it finishes. Printed: rows left `sending` by
each kill, the final statuses, how many unknown e-mails the API had in fact accepted, and the
duplicates the API saw (must be 0). ``--clean`` also times one run without kills (messages/s
through the whole pipeline). ``--code DIR`` runs another checkout's code (before/after).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "crash_outcomes"
NOW = "2026-11-24T10:00:00+01:00"


def _flaky_fake(latency: float, fail: float, seed: int):
    from aiohttp import web

    from tests.fakes.sendgrid_fake import SendGridFake
    from tests.fakes.server import Fault

    class Flaky(SendGridFake):
        async def mail_send(self, request: web.Request) -> web.Response:
            if self.rng.random() < fail:
                await self._record(request)
                return self.fault_response(Fault(503))
            return await super().mail_send(request)

    fake = Flaky(latency=latency)
    fake.rng = random.Random(seed)
    return fake.start()


def _campaign(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("run_outbox", ROOT / "bench" / "run_outbox.py")
    run_outbox = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_outbox)
    campaign = run_outbox.write_campaign("email")
    text = campaign.read_text().replace("strategy: first_available", "strategy: all")
    text = text.replace("order: [email]", "order: [email, sms, push]")
    path.write_text(text)
    return run_outbox


def _in_flight(engine) -> tuple[int, int]:
    """(count, sum of ids) of the rows in `sending`: tells new ones from those a previous kill left."""
    from sqlalchemy import text

    with engine.connect() as conn:
        n, total = conn.execute(text("SELECT count(*), sum(id) FROM ledger WHERE status = 'sending'")).one()
    return n, total or 0


def _counts(engine, key: str) -> tuple[Counter, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.channel, l.status, count(*) FROM ledger l JOIN campaign_run r ON r.id = l.run_id "
                "WHERE r.key = :k GROUP BY l.channel, l.status"
            ),
            {"k": key},
        ).all()
    counts = Counter({(ch, st): n for ch, st, n in rows})
    return counts, sum(n for (_, st), n in counts.items() if st == "sending")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--fail", type=float, default=0.05, help="share of requests answered 503")
    parser.add_argument("--concurrency", type=int, default=256, help="RELANCE_SENDGRID_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--clean", action="store_true", help="also time one run without kills")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose code runs (PYTHONPATH)")
    args = parser.parse_args()

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    url = f"sqlite:///{OUT / 'bench.db'}"
    os.environ.update(RELANCE_DATABASE_URL=url, RELANCE_OUTBOX_DIR=str(OUT / "outbox"))
    run_outbox = _campaign(OUT / "crash.yaml")
    run_outbox.seed(url, args.customers)
    from core.db import get_engine

    engine = get_engine(url)
    fake = _flaky_fake(args.latency, args.fail, args.seed)
    env = {
        **os.environ,
        "PYTHONPATH": args.code,
        "RELANCE_DATABASE_URL": url,
        "RELANCE_OUTBOX_DIR": str(OUT / "outbox"),
        "RELANCE_TEMPLATES_DIR": os.environ["RELANCE_TEMPLATES_DIR"],
        "RELANCE_BATCH_SIZE": str(args.batch_size),
        "RELANCE_CLAIM_TIMEOUT_SECONDS": "3600",
        "RELANCE_EMAIL_PROVIDER": "sendgrid",
        "RELANCE_SENDGRID_HOST": fake.url,
        "RELANCE_SENDGRID_API_KEY": "SG.fake-key-for-tests",
        "RELANCE_SENDGRID_CONCURRENCY": str(args.concurrency),
        "RELANCE_SENDGRID_RATE_PER_SECOND": "0",
        "RELANCE_SECRET_KEY": "bench",
    }
    relance = str(Path(sys.executable).parent / "relance")
    rng = random.Random(args.seed)

    def cmd(key: str) -> list[str]:
        return [relance, "run", str(OUT / "crash.yaml"), "--run-key", key, "--now", NOW, "--no-prefect"]

    if args.clean:
        fake.requests.clear()
        t0 = time.perf_counter()
        subprocess.run(cmd("bench:clean"), env=env, check=True, capture_output=True)
        took = time.perf_counter() - t0
        counts, _ = _counts(engine, "bench:clean")
        print(f"clean run: {sum(counts.values()):,} messages in {took:.1f} s (incl. ~2 s start-up) = "
              f"{sum(counts.values()) / took:,.0f}/s; {dict(counts)}")  # fmt: skip
        fake.message_ids.clear()

    left, kills = [], 0
    while kills < args.kills:
        proc = subprocess.Popen(
            cmd("bench:crash"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        leftover = _in_flight(engine)  # what the previous kill left, taken over as unknown by this run
        while proc.poll() is None:  # wait for this run's first rows with the provider, then a random moment
            now = _in_flight(engine)
            if now[0] and now != leftover:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.0))
        if proc.poll() is not None:
            break  # finished before we could kill it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        counts, _ = _counts(engine, "bench:crash")
        left.append({ch: n for (ch, st), n in counts.items() if st == "sending"})
    for _ in range(3):
        if subprocess.run(cmd("bench:crash"), env=env, capture_output=True).returncode == 0:
            break
    counts, _ = _counts(engine, "bench:crash")
    from sqlalchemy import text

    with engine.connect() as conn:
        unknown_email = set(
            conn.execute(
                text(
                    "SELECT l.id FROM ledger l JOIN campaign_run r ON r.id = l.run_id "
                    "WHERE r.key = 'bench:crash' AND l.channel = 'email' AND l.status = 'unknown'"
                )
            ).scalars()
        )
    accepted = Counter(int(b["custom_args"]["ledger_id"]) for b in list(fake.message_ids.values()))
    fake.stop()
    print(
        f"code: {args.code}; {args.customers:,} customers x (email, sms, push); "
        f"concurrency {args.concurrency}; latency {args.latency * 1000:.0f} ms; {args.fail:.0%} 503"
    )
    print(f"kills: {kills}; rows left `sending` by each kill: {left}")
    print(f"final: {dict(sorted(counts.items()))}")
    unknown = sum(n for (_, st), n in counts.items() if st == "unknown")
    print(
        f"unknown: {unknown} (e-mail {len(unknown_email)}: {len(unknown_email & set(accepted))} accepted "
        f"by the API, {len(unknown_email - set(accepted))} never); per kill {unknown / max(1, kills):.0f}"
    )
    print(f"duplicates at the API: {sum(1 for n in accepted.values() if n > 1)}")


if __name__ == "__main__":
    main()

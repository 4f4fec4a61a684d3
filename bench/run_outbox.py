"""Throughput of one campaign run end to end: select, record, render, write to the outbox.

    .venv/bin/python bench/run_outbox.py --customers 1000000 --workers 2

Builds a customer base directly in SQL (consenting to e-mail, SMS and push) in
bench/out/, writes a small campaign and template set there, then times
``prepare_run`` (selection + ledger recording in SQL) and the send phase with
``--workers`` processes claiming batches of the same run (the ``relance work``
loop), and prints messages per second and peak memory (max RSS per process).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out" / "run_outbox"


def seed(url: str, n: int) -> None:
    """``n`` customers and their consents, inserted set-based (a recursive CTE on SQLite)."""
    from sqlalchemy import text

    from core.db import get_engine, migrate

    migrate(url)
    engine = get_engine(url)
    with engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM customer")).scalar_one() >= n:
            return
        series = (
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) SELECT i FROM s"
            if engine.dialect.name == "sqlite"
            else "SELECT generate_series(1, :n) AS i"
        )
        conn.execute(
            text(
                "INSERT INTO customer (external_id, first_name, last_name, email, phone, locale, timezone, "
                "created_at, updated_at) SELECT 'B' || i, 'Camille', 'Martin' || i, "
                "'c' || i || '@example.org', "
                "'+336' || substr('0000000' || i, -8, 8), 'fr_FR', 'Europe/Paris', :now, :now FROM ("
                + series
                + ") s"
            ),
            {"n": n, "now": "2026-11-01 00:00:00.000000"},
        )
        for channel in ("email", "sms", "push"):
            conn.execute(
                text(
                    "INSERT INTO consent (customer_id, channel, status, updated_at, source) "
                    "SELECT id, :channel, 'granted', :now, 'bench' FROM customer"
                ),
                {"now": "2026-11-01 00:00:00.000000", "channel": channel},
            )
        conn.execute(
            text(
                "INSERT INTO device (customer_id, token, platform, active) "
                "SELECT id, 'tok-' || id, 'android', :yes FROM customer"
            ),
            {"yes": True},
        )


def _worker(url: str, key: str, campaign: str, queue) -> None:
    os.environ["RELANCE_DATABASE_URL"] = url
    from core.db import get_engine
    from delivery import runs, send

    engine = get_engine(url)
    run = runs.join_run(engine, key, campaign)
    ctx = runs.make_context(run)
    batches = send.work(engine, ctx, claim_timeout=3600)
    queue.put((batches, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="processes sending the run together")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--channel", default="email", choices=["email", "sms", "push"])
    parser.add_argument(
        "--provider", default="outbox", choices=["outbox", "null"],
        help="null: render and record everything, write nothing (what the pipeline costs without the disk)",
    )  # fmt: skip
    parser.add_argument("--database-url", default=None, help="default: SQLite file in bench/out")
    parser.add_argument("--keep", action="store_true", help="reuse the base of a previous run")
    parser.add_argument("--now", default="2026-11-24T10:00:00+01:00", help="a weekday morning: windows open")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    if not args.keep:
        shutil.rmtree(OUT / "outbox", ignore_errors=True)
        for stale in OUT.glob("bench.db*"):
            stale.unlink()
    url = args.database_url or f"sqlite:///{OUT / 'bench.db'}"
    os.environ.update(
        RELANCE_DATABASE_URL=url,
        RELANCE_OUTBOX_DIR=str(OUT / "outbox"),
        RELANCE_BATCH_SIZE=str(args.batch_size),
        RELANCE_EMAIL_PROVIDER=args.provider,
        RELANCE_SMS_PROVIDER=args.provider,
        RELANCE_PUSH_PROVIDER=args.provider,
    )
    campaign = write_campaign(args.channel)

    t0 = time.perf_counter()
    seed(url, args.customers)
    t_seed = time.perf_counter() - t0

    from core.db import get_engine
    from delivery import ledger, runs

    key = f"bench:{int(time.time())}"
    t1 = time.perf_counter()
    now = ledger.run_datetime(args.now)
    run = runs.prepare_run(get_engine(url), str(campaign), key, now, batch_size=args.batch_size)
    t_record = time.perf_counter() - t1

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, key, str(campaign), queue)) for _ in range(args.workers)]
    t2 = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    t_send = time.perf_counter() - t2

    summary = runs.summarize(get_engine(url), run.run_id)
    sent = summary["totals"].get("sent", 0)
    total = t_record + t_send
    parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"customers            {args.customers:>12,}  (seeded in {t_seed:.1f} s)")
    print(f"ledger rows          {run.recorded:>12,}  statuses {summary['totals']}")
    print(f"select+record        {t_record:>12.2f} s")
    batches = sum(b for b, _ in results)
    print(f"render+send          {t_send:>12.2f} s  ({args.workers} worker process(es), {batches} batches)")
    print(f"end to end           {total:>12.2f} s  = {sent / total:,.0f} messages/s ({args.provider})")
    print(f"peak RSS (KiB)       parent {parent_rss:,}; workers {', '.join(f'{r:,}' for _, r in results)}")


CONTENT = """\
channels: [email, sms, push]
link: "https://shop.example/r/{{ offer.code }}"
fr:
  headline: "{{ greeting }}"
  body: "Nous avons sélectionné pour vous des produits de saison. Code {{ offer.code }}."
  cta: "Voir la sélection"
  recommendations_title: "Pour vous"
  footer_reason: "Vous êtes client de la Maison."
  unsubscribe: "Se désabonner"
  email:
    subject: "{{ first_name }}, votre code {{ offer.code }}"
    preheader: "Des produits de saison"
  sms: "Maison : code {{ offer.code }} sur la sélection {{ link }}"
  push:
    title: "Bonjour {{ first_name }}"
    body: "Code {{ offer.code }} sur la sélection"
"""


def write_campaign(channel: str) -> Path:
    """A campaign and its message (shared layout from templates/_layout) under OUT."""
    templates = OUT / "templates"
    shutil.rmtree(templates, ignore_errors=True)
    shutil.copytree(ROOT / "templates" / "_layout", templates / "_layout")
    (templates / "bench" / "hello").mkdir(parents=True)
    (templates / "bench" / "hello" / "content.yaml").write_text(CONTENT, encoding="utf-8")
    os.environ["RELANCE_TEMPLATES_DIR"] = str(templates)
    path = OUT / "bench.yaml"
    path.write_text(
        "name: bench\n"
        "message: bench/hello\n"
        "control_group:\n  percent: 0\n"
        f"channels:\n  strategy: first_available\n  order: [{channel}]\n"
        "offer:\n  code: BENCH10\n"
    )
    return path


if __name__ == "__main__":
    main()

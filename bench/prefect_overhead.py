"""Prefect's own overhead on a campaign run: the same batches through the flow vs called directly.

    .venv/bin/python bench/prefect_overhead.py --customers 100000
    .venv/bin/python bench/prefect_overhead.py --channel email --provider sendgrid --latency 0.1

Seeds a base (bench/run_outbox.py's SQL seeding) and runs the same campaign,
each time on a fresh copy of the base, alternately with ``delivery.send``
called directly (prepare_run + the worker loop + the summary) and through the
``run_campaign`` flow on a local Prefect API server, both sending one batch at
a time (``--concurrency``), ``--repeat`` pairs; the medians' difference is what
Prefect adds: task runs, state reports, artifacts. One pair is too noisy on a
2-core machine (3 % to 36 % in successive single runs here). The API server's
start-up is timed apart (once per machine or session, not per run).

Prefect's cost is per batch task, so its share depends on what a batch costs:
``--provider`` picks the channel's provider: ``outbox`` (files; the default),
``null`` (rendered and recorded, not written: the cheapest batch there is), or
``sendgrid`` (e-mail only: the fake SendGrid API of tests/fakes in its own
process, ``--latency`` seconds per request, as bench/sendgrid_throughput.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out" / "prefect_overhead"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1, help="batch tasks at once in the flow")
    parser.add_argument("--channel", default="email", choices=["email", "sms", "push"])
    parser.add_argument("--repeat", type=int, default=5, help="direct/flow pairs, alternated; medians shown")
    parser.add_argument("--provider", default="outbox", choices=["outbox", "null", "sendgrid"])
    parser.add_argument("--latency", type=float, default=0.1, help="sendgrid: seconds per request")
    parser.add_argument(
        "--outbox",
        type=Path,
        default=OUT,
        help="folder for the runs' outboxes (e.g. /dev/shm/relance: a RAM disk, so that the disk's "
        "writeback of earlier runs does not decide the figure)",
    )
    args = parser.parse_args()
    if args.provider == "sendgrid" and args.channel != "email":
        parser.error("--provider sendgrid sends e-mail: add --channel email")

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    args.outbox.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{OUT / 'bench.db'}"
    os.environ.update(
        RELANCE_DATABASE_URL=url,
        RELANCE_OUTBOX_DIR=str(OUT / "outbox"),
        RELANCE_BATCH_SIZE=str(args.batch_size),
        RELANCE_SEND_WORKERS=str(args.concurrency),
        PREFECT_HOME=str(OUT / "prefect"),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",  # no telemetry call (and its error) from the API server
    )
    os.environ[f"RELANCE_{args.channel.upper()}_PROVIDER"] = args.provider
    server = _start_sendgrid(args.latency) if args.provider == "sendgrid" else None
    try:
        _bench(args, url)
    finally:
        if server is not None:
            server.terminate()


def _start_sendgrid(latency: float) -> subprocess.Popen:
    """The fake SendGrid API in its own process (no shared interpreter lock), its URL in the settings."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "sendgrid", "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    from tests.fakes.sendgrid_fake import API_KEY

    os.environ.update(
        RELANCE_SENDGRID_API_KEY=API_KEY,
        RELANCE_SENDGRID_HOST=server.stdout.readline().strip(),
        RELANCE_SENDGRID_RATE_PER_SECOND="0",  # latency and concurrency only, as sendgrid_throughput.py
    )
    return server


def _bench(args: argparse.Namespace, url: str) -> None:
    import bench.run_outbox as ro
    from bench.run_outbox import seed, write_campaign

    ro.OUT = OUT
    campaign = str(write_campaign(args.channel))
    seed(url, args.customers)
    from core.db import reset_engines

    reset_engines()  # the last connection closing checkpoints the WAL into bench.db

    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.testing.utilities import prefect_test_harness

    from core.db import get_engine
    from core.settings import get_settings
    from delivery import ledger, runs, send
    from flows.run_campaign import run_campaign

    now = "2026-11-24T10:00:00+01:00"  # a weekday morning: sending windows are open
    flow_fn = run_campaign.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.concurrency))

    def fresh_copy(name: str) -> str:
        """Each run gets its own copy of the base: a run must not find another's sends in the ledger
        (frequency caps and priorities read it); and its own, empty outbox: writing into a folder that
        already holds the previous runs' 100,000s of files got slower run after run (19.9 s, then 38 s)."""
        for old in args.outbox.glob("outbox-*"):
            shutil.rmtree(old)
        shutil.copyfile(OUT / "bench.db", OUT / name)
        os.environ["RELANCE_DATABASE_URL"] = f"sqlite:///{OUT / name}"
        os.environ["RELANCE_OUTBOX_DIR"] = str(args.outbox / f"outbox-{name}")
        get_settings.cache_clear()
        os.sync()  # the last run's writes and deletions reach the disk before this run's clock starts
        return os.environ["RELANCE_DATABASE_URL"]

    def direct_run(i: int) -> float:
        engine = get_engine(fresh_copy(f"direct-{i}.db"))
        t = time.perf_counter()
        run = runs.prepare_run(
            engine, campaign, "bench:1", ledger.run_datetime(now), batch_size=args.batch_size
        )
        ctx = runs.make_context(run)
        with ThreadPoolExecutor(args.concurrency) as pool:  # as many batches at once as the flow's tasks
            for worker in [pool.submit(send.work, engine, ctx, 3600) for _ in range(args.concurrency)]:
                worker.result()
        summary = runs.summarize(engine, run.run_id)  # the flow's last task does it too
        seconds = time.perf_counter() - t
        assert summary["totals"].get("sent", 0) == args.customers
        return seconds

    def flow_run(i: int) -> float:
        fresh_copy(f"flow-{i}.db")
        t = time.perf_counter()
        summary = flow_fn(campaign, run_key="bench:1", now=now)
        seconds = time.perf_counter() - t
        assert summary["totals"].get("sent", 0) == args.customers
        return seconds

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):

        @flow
        def warm() -> None:  # first flow run: API client and database warm-up
            return None

        warm()
        startup = time.perf_counter() - t0
        pairs = []
        for i in range(args.repeat):  # alternated, so that a slow minute of the machine hits both sides
            pairs.append((direct_run(i), flow_run(i)))
            d, f = pairs[-1]
            print(
                f"pair {i + 1}: direct {d:6.2f} s, flow {f:6.2f} s, overhead {(f - d) / d * 100:5.1f} %",
                flush=True,
            )

    for old in args.outbox.glob("outbox-*"):  # a RAM disk keeps them in memory otherwise
        shutil.rmtree(old)
    direct = statistics.median(d for d, _ in pairs)
    through = statistics.median(f for _, f in pairs)
    n = args.customers
    print(
        f"median over {args.repeat} pairs, {n:,} recipients ({args.channel} via {args.provider}), "
        f"batches of {args.batch_size:,}:"
    )
    print(f"direct (no Prefect)  {direct:8.2f} s  {n / direct:,.0f} msg/s")
    print(f"through the flow     {through:8.2f} s  {n / through:,.0f} msg/s")
    share = (through - direct) / direct * 100
    print(f"Prefect overhead     {through - direct:8.2f} s  = {share:.1f} % of the direct run")
    print(f"API server start-up  {startup:8.2f} s  (once per session, not per run)")


if __name__ == "__main__":
    main()

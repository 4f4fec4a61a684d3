"""Prefect's own overhead on a campaign run: the same batches through the flow vs called directly.

    .venv/bin/python bench/prefect_overhead.py --customers 100000

Seeds a base (bench/run_outbox.py's SQL seeding) and runs the same campaign
twice under two run keys: once with ``tracking.dispatch`` called directly
(prepare_run + the worker loop) and once through the ``run_campaign`` flow on
Prefect's local ephemeral API, both sending one batch at a time
(``--concurrency``), so the difference is what Prefect adds: task runs, state
reports, artifacts. The API server's start-up is timed apart (once per machine
or session, not per run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
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
    args = parser.parse_args()

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    url = f"sqlite:///{OUT / 'bench.db'}"
    os.environ.update(
        RELANCE_DATABASE_URL=url,
        RELANCE_OUTBOX_DIR=str(OUT / "outbox"),
        RELANCE_BATCH_SIZE=str(args.batch_size),
        RELANCE_SEND_WORKERS=str(args.concurrency),
        PREFECT_HOME=str(OUT / "prefect"),
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    import bench.run_outbox as ro
    from bench.run_outbox import seed, write_campaign

    ro.OUT = OUT
    campaign = str(write_campaign(args.channel))
    seed(url, args.customers)
    # the flow gets its own copy of the same base: a run must not find the other's sends in the ledger
    # (frequency caps and priorities read it)
    flow_url = f"sqlite:///{OUT / 'flow.db'}"
    from relance.db import reset_engines

    reset_engines()  # the last connection closing checkpoints the WAL into bench.db
    shutil.copyfile(OUT / "bench.db", OUT / "flow.db")

    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.run_campaign import run_campaign
    from relance.db import get_engine
    from relance.settings import get_settings
    from tracking import dispatch, ledger

    engine = get_engine(url)
    phases: dict[str, list[float]] = {"prepare_run": [], "process_batch": []}
    for name in phases:  # time the shared steps in both paths (the flow runs in this process)
        setattr(dispatch, name, _timed(getattr(dispatch, name), phases[name]))
    t0 = time.perf_counter()
    now = "2026-11-24T10:00:00+01:00"  # a weekday morning: sending windows are open
    at = ledger.run_datetime(now)
    run = dispatch.prepare_run(engine, campaign, "bench:1", at, batch_size=args.batch_size)
    dispatch.work(engine, dispatch.make_context(run), claim_timeout=3600)
    direct = time.perf_counter() - t0
    sent_direct = dispatch.summarize(engine, run.run_id)["totals"].get("sent", 0)

    from prefect.testing.utilities import prefect_test_harness

    t1 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):

        @flow
        def warm() -> None:  # first flow run: API client and database warm-up
            return None

        warm()
        startup = time.perf_counter() - t1
        flow_fn = run_campaign.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.concurrency))
        os.environ["RELANCE_DATABASE_URL"] = flow_url
        get_settings.cache_clear()
        t2 = time.perf_counter()
        summary = flow_fn(campaign, run_key="bench:1", now=now)
        through = time.perf_counter() - t2
    sent_flow = summary["totals"].get("sent", 0)

    overhead = (through - direct) / direct * 100
    print(f"recipients sent      direct {sent_direct:,}  flow {sent_flow:,}")
    print(f"direct (no Prefect)  {direct:8.2f} s  {sent_direct / direct:,.0f} msg/s")
    print(f"through the flow     {through:8.2f} s  {sent_flow / through:,.0f} msg/s")
    print(f"Prefect overhead     {through - direct:8.2f} s  = {overhead:.1f} % of the direct run")
    for name, times in phases.items():
        print(
            f"{name:<20} direct {times[0] if name == 'prepare_run' else sum(times[: len(times) // 2]):.2f} s"
            f"  flow {times[-1] if name == 'prepare_run' else sum(times[len(times) // 2 :]):.2f} s"
        )
    print(f"API server start-up  {startup:8.2f} s  (once per session, not per run)")


def _timed(fn, into: list[float]):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)

    return wrapper


if __name__ == "__main__":
    main()

"""Provider throughput: e-mails through the SendGrid provider to the fake API with injected latency,
and the per-message cost of the outbox and null providers.

    .venv/bin/python bench/sendgrid_throughput.py --messages 100000 --latency 0.1

The fake SendGrid server runs in its own process (``python -m tests.fakes sendgrid``) so that
server and client do not share one interpreter lock. Messages go in batches as the send flow
sends them (``asyncio.run(provider.send_batch(batch))`` per batch, one pooled HTTP client per
batch), with the provider's rate limit off so that only latency, concurrency and CPU count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _messages(n: int, start: int = 0) -> list:
    from tests.fakes import messages

    return [
        messages.email(start + i, f"client{start + i}@example.com", customer_id=start + i) for i in range(n)
    ]


def _run(provider, total: int, batch_size: int, workers: int = 1) -> tuple[float, dict[str, int]]:
    """Batches sent by ``workers`` threads at once, each in its own ``asyncio.run`` (as the flow does)."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [_messages(min(batch_size, total - s), s) for s in range(0, total, batch_size)]  # untimed
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for results in pool.map(lambda b: asyncio.run(provider.send_batch(b)), batches):
            for r in results:
                counts[r.status] = counts.get(r.status, 0) + 1
    return time.perf_counter() - t0, counts


def bench_sendgrid(args) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "sendgrid", "--latency", str(args.latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        from tests.fakes.sendgrid_fake import API_KEY

        os.environ.update(
            RELANCE_SENDGRID_API_KEY=API_KEY,
            RELANCE_SENDGRID_HOST=url,
            RELANCE_SENDGRID_RATE_PER_SECOND="0",
            RELANCE_SENDGRID_CONCURRENCY=str(args.concurrency),
        )
        from channels.sendgrid_email import SendGridProvider
        from core.settings import get_settings

        get_settings.cache_clear()
        provider = SendGridProvider(get_settings())
        cpu = time.process_time()
        elapsed, counts = _run(provider, args.messages, args.batch_size, args.workers)
        cpu = time.process_time() - cpu
        print(
            f"sendgrid: {args.messages} e-mails, latency {args.latency * 1000:.0f} ms, concurrency "
            f"{args.concurrency}, batches of {args.batch_size}, {args.workers} batch worker(s): "
            f"{elapsed:.1f} s, {args.messages / elapsed:,.0f} e-mails/s  {counts}; "
            f"client CPU {cpu / args.messages * 1e6:.0f} µs/msg"
        )
        t0 = time.perf_counter()
        for m in _messages(2000):
            provider.payload(m)
        print(
            f"  of which the v3 payload (Mail helper): {(time.perf_counter() - t0) / 2000 * 1e6:.0f} µs/msg"
        )
        asyncio.run(provider.aclose())
    finally:
        server.terminate()
        server.wait(5)


def bench_local(args) -> None:
    from channels.null import NullProvider
    from channels.outbox import OutboxProvider
    from core.settings import get_settings

    out = Path(tempfile.mkdtemp(prefix="outbox-", dir=ROOT / "bench" / "out"))
    try:
        os.environ["RELANCE_OUTBOX_DIR"] = str(out)
        get_settings.cache_clear()
        n = args.local_messages
        for name, provider in (("null", NullProvider("email")), ("outbox", OutboxProvider("email"))):
            elapsed, _ = _run(provider, n, args.batch_size)
            print(f"{name} (email): {n} messages in {elapsed:.2f} s = {elapsed / n * 1e6:.0f} µs/msg")
        from tests.fakes import messages as msgs

        sms = OutboxProvider("sms")
        batches = [
            [msgs.sms(i + b, "+33612345678") for i in range(args.batch_size)]
            for b in range(0, n, args.batch_size)
        ]
        t0 = time.perf_counter()
        for batch in batches:
            asyncio.run(sms.send_batch(batch))
        elapsed = time.perf_counter() - t0
        print(f"outbox (sms): {n} messages in {elapsed:.2f} s = {elapsed / n * 1e6:.0f} µs/msg")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake waits per request")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="batches at once (settings.send_workers)")
    parser.add_argument(
        "--local-messages", type=int, default=20_000, help="for the outbox and null providers"
    )
    parser.add_argument("--skip-sendgrid", action="store_true")
    args = parser.parse_args()
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    if not args.skip_sendgrid:
        bench_sendgrid(args)
    bench_local(args)


if __name__ == "__main__":
    main()

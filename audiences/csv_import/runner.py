"""The import loop shared by every kind: stream, parse and validate (in worker processes), write by chunk.

Each chunk is written in its own transaction, so a crash loses at most the
chunk in flight, and rerunning the same file is a no-op upsert: imports are
resumable by running them again. Parsing and validation (e-mail and phone
checks cost ~50 microseconds a row) run in a small process pool while this
process writes, with a bounded number of chunks in flight so memory stays flat.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType

from sqlalchemy import Connection, Engine

from audiences.csv_import import customers, devices, events, orders, suppressions
from audiences.csv_import.common import Driver
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Block, blocks, open_source, parse_block
from core.settings import get_settings

KINDS: dict[str, ModuleType] = {
    "customers": customers,
    "orders": orders,
    "suppressions": suppressions,
    "devices": devices,
    "events": events,  # issue 18: customer events (a backfill of POST /events)
}
CHUNK_ROWS = 20_000  # one transaction each: large enough to amortize commits and look-ups, small in memory
PARALLEL_FROM_BYTES = 4 << 20  # below ~4 MB, starting worker processes costs more than it saves
IMPORT_CACHE_KIB = 64 << 10  # SQLite page cache during an import (the default is 2 MB)


def _ordered_map(pool: Executor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """Like pool.map, but keeps at most ``ahead`` items in flight (pool.map reads its input eagerly)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def default_workers(path: Path) -> int:
    if path.stat().st_size < PARALLEL_FROM_BYTES:
        return 0
    return max(1, min(4, (os.cpu_count() or 1)))


def validate_block(kind: str, header: list[str], ctx: dict, delimiter: str, block: Block) -> tuple:
    """Parse and validate one block of raw records (runs in a worker process)."""
    return KINDS[kind].validate(header, ctx, parse_block(block, delimiter))


@contextmanager
def bulk_mode(conn: Connection) -> Iterator[None]:
    """On SQLite, a larger page cache for this import only (the B-tree pages of the indexes stay hot).

    Why not ``synchronous=OFF`` too: in WAL mode with the usual ``synchronous=NORMAL``
    a commit does not wait for the disk already (only checkpoints do), so OFF saved
    nothing measurable (bench, 200k rows) while it lets an OS crash corrupt the file.
    The connection's own setting is restored afterwards, since it goes back to the pool.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    db = Driver(conn)
    [(cache,)] = db.all("PRAGMA cache_size")
    db.run(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        db.run(f"PRAGMA cache_size={int(cache)}")


def run_import(
    kind: str,
    path: Path | str,
    engine: Engine,
    *,
    encoding: str = "utf-8",
    workers: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import one file of ``kind``; raises FileRefused (nothing written) for an unreadable file."""
    module = KINDS[kind]
    path = Path(path)
    started = time.perf_counter()
    source = open_source(path, module.COLUMNS, encoding)
    settings = get_settings()
    ctx = {
        "default_locale": settings.default_locale,
        "default_timezone": settings.default_timezone,
        "dialect": engine.dialect.name,
    }
    report = ImportReport(kind=kind, path=str(path))
    validate = partial(validate_block, kind, source.header, ctx, source.delimiter)
    workers = default_workers(path) if workers is None else workers
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 0 else None
    )
    try:
        chunks = blocks(source.stream, chunk_rows)
        validated = _ordered_map(pool, validate, chunks, workers + 1) if pool else map(validate, chunks)
        with engine.connect() as conn, bulk_mode(conn):
            writer = module.Writer(conn, source.header, ctx, report, path.name)
            for good, bad in validated:
                report.rows += len(good) + len(bad)
                for line, key, reason in bad:
                    report.reject(line, key, reason)
                with conn.begin():
                    writer.write(good)
                if progress:
                    progress(report)
            writer.seen.drop()
    finally:
        source.stream.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    report.rejected.sort(key=lambda p: p.line)
    report.warnings.sort(key=lambda p: p.line)
    report.seconds = time.perf_counter() - started
    return report

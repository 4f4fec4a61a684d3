"""Batch scoring into ``customer_score`` so that `score`, `top`, `target` and `best` stay one SQL query.

The features of every customer as of now are computed once per scoring run
(one read of the orders, :func:`dataset.order_history`, the same definitions as
for training) and shared by all the models scored in that run
(:func:`score_many`); each model predicts in chunks of ``score_batch_size`` and
the rows are written through the driver (SQLite: ``executemany`` of tuples;
PostgreSQL: ``COPY``), because SQLAlchemy's multi-row INSERT of dicts took most
of the time on a million rows. The version's old rows are deleted first (no
upsert). The whole version is written in one transaction: a selection running
meanwhile sees all of a version's scores or none. Older versions are pruned after that commit.

Rows written per model (one per customer):
- churn: ``churn`` = P(no order within the horizon);
- uplift: ``uplift`` = P(outcome | message) - P(outcome | no message);
- response: ``response`` = the best P(response | channel) among the channels the customer has consented to
  (among all when none), which is what `top: {model: response}` ranks by; and, in the same row,
  ``score_<channel>`` = P(response | that channel) for every channel the model knows, which the `best`
  strategy compares (audiences/learning/choose.py). Why columns and not a row per channel: a million
  customers then cost a million rows instead of three million (two channels), each going through the
  table and its two indexes (migration 0007; figures in notes/7-learning.md).

Scores of versions older than the newest ``KEEP_VERSIONS`` scored ones are
deleted (a campaign may pin a recent older version; the table must not grow
by a million rows a day).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import repeat

import numpy as np
from sqlalchemy import Connection, Engine, delete, select

from audiences.learning import dataset, registry
from audiences.learning.models import cpu_threads
from relance.models import CHANNELS, Consent, CustomerScore, utcnow
from relance.settings import get_settings

SCORES = CustomerScore.__table__
CONSENT = Consent.__table__
KEEP_VERSIONS = 3


@dataclass(frozen=True)
class ScoreResult:
    model: str
    version: str
    customers: int
    rows: int
    seconds: float  # until the version's scores are committed (usable by plan and run)
    prune_seconds: float = 0.0  # then deleting versions beyond KEEP_VERSIONS, in its own transaction
    # where ``seconds`` went: shares of the features and of the commit (shared by the models scored
    # together), predict (incl. the consent read of response), write (through the driver)
    phases: dict[str, float] = field(default_factory=dict)


def channels(info: registry.ModelInfo) -> list[str]:
    """The channels whose scores a version writes in ``score_<channel>`` (response only)."""
    return [ch for ch in info.meta.get("channels", []) if ch in CHANNELS] if info.name == "response" else []


def _consented(conn: Connection) -> dict[str, np.ndarray]:
    """The sorted ids of the customers who consented to each channel (read through the driver:
    building Python sets of a million ids row by row took 4 s)."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SELECT channel, customer_id FROM consent WHERE status = 'granted'")
        rows = cursor.fetchall()
    finally:
        cursor.close()
    by_channel: dict[str, list[int]] = {}
    for channel, cid in rows:
        by_channel.setdefault(channel, []).append(cid)
    return {ch: np.unique(np.asarray(ids, dtype=np.int64)) for ch, ids in by_channel.items()}


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """``ids`` found in ``sorted_ids``, by binary search (np.isin sorts both sides every call)."""
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return sorted_ids[at] == ids


def _predict(
    info: registry.ModelInfo, model, df, consent: dict[str, np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ``score`` column and the per-channel columns (in :func:`channels` order)."""
    names = channels(info)
    if not names:
        return np.asarray(model.predict(df), dtype=float), []
    per = [np.asarray(model.predict(df.assign(channel=ch)), dtype=float) for ch in names]
    stacked = np.vstack(per)
    ids = df["customer_id"].to_numpy(dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    allowed = np.vstack([_member(ids, consent.get(ch, empty)) for ch in names])
    best_allowed = np.where(allowed, stacked, -np.inf).max(axis=0)
    best = np.where(np.isfinite(best_allowed), best_allowed, stacked.max(axis=0))
    return best, per


def prune(conn: Connection, names: list[str], keep: int = KEEP_VERSIONS) -> None:
    """Delete the scores of all but the ``keep`` most recently scored versions of each name.

    A version's rows share one scored_at, so one row per version is read (ties: the newer version
    name, registry versions sort by time). Why not GROUP BY version: it reads every row's scored_at,
    4 s per million rows on SQLite.
    """
    for name in names:
        versions = (
            conn.execute(select(SCORES.c.version).where(SCORES.c.model == name).distinct()).scalars().all()
        )
        if len(versions) <= keep:
            continue
        scored_at = {
            v: conn.execute(
                select(SCORES.c.scored_at).where(SCORES.c.model == name, SCORES.c.version == v).limit(1)
            ).scalar_one()
            for v in versions
        }
        recent = sorted(versions, key=lambda v: (scored_at[v], v), reverse=True)[:keep]
        conn.execute(delete(SCORES).where(SCORES.c.model == name, SCORES.c.version.not_in(recent)))


BASE_COLUMNS = ("model", "version", "customer_id", "score", "scored_at")


def write(conn: Connection, rows: Iterable[tuple], channel_columns: Sequence[str] = ()) -> None:
    """Append (model, version, customer_id, score, scored_at, *channel scores) rows through the driver.

    ``channel_columns`` names the ``score_<channel>`` columns the rows carry after the five base ones.
    """
    columns = ", ".join((*BASE_COLUMNS, *channel_columns))
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY customer_score ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * (len(BASE_COLUMNS) + len(channel_columns)))
            cursor.executemany(f"INSERT INTO customer_score ({columns}) VALUES ({marks})", rows)
    finally:
        cursor.close()


@contextmanager
def _large_page_cache(conn: Connection, kib: int = 256 * 1024) -> Iterator[None]:
    """SQLite: a larger page cache while writing, restored after.

    Why: the (model, version, score) index is filled in random order; with SQLite's default 2 MB
    cache its pages are read again and again (1M rows: 7.2 s -> 5.0 s with 256 MB).
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    before = int(raw.execute("PRAGMA cache_size").fetchone()[0])
    raw.execute(f"PRAGMA cache_size = {-kib}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {before}")


def _stamp(conn: Connection, now: datetime):
    """``now`` as the scored_at column stores it (the column type's own conversion)."""
    process = SCORES.c.scored_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(now) if process else now


def score_many(
    names: list[str],
    engine: Engine | None = None,
    *,
    versions: dict[str, str] | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
) -> list[ScoreResult]:
    """Score every customer (not erased) with each model: features computed once, shared by all."""
    from relance.db import get_engine

    engine = engine or get_engine()
    infos = [registry.resolve(name, (versions or {}).get(name)) for name in names]
    now = now or utcnow()
    batch_size = batch_size or get_settings().score_batch_size
    results = []
    with cpu_threads(), engine.connect() as conn, _large_page_cache(conn):
        with conn.begin():
            t0 = time.perf_counter()
            features = dataset.current_rows(conn, now)
            shared = (time.perf_counter() - t0) / len(infos)
            stamp = _stamp(conn, now)
            for info in infos:
                t1 = time.perf_counter()
                conn.execute(
                    delete(SCORES).where(SCORES.c.model == info.name, SCORES.c.version == info.version)
                )
                deleting = time.perf_counter() - t1
                model = registry.load(info)
                consent = _consented(conn) if channels(info) else {}
                columns = [registry.channel_column(ch) for ch in channels(info)]
                rows, writing = 0, 0.0
                for start in range(0, len(features), batch_size):
                    df = features.iloc[start : start + batch_size]
                    ids = df["customer_id"].tolist()
                    best, per = _predict(info, model, df, consent)
                    same = (repeat(info.name), repeat(info.version))
                    values = (ids, best.tolist(), repeat(stamp), *(p.tolist() for p in per))
                    t2 = time.perf_counter()
                    write(conn, zip(*same, *values, strict=False), columns)  # repeat() is endless
                    writing += time.perf_counter() - t2
                    rows += len(ids)
                own = time.perf_counter() - t1
                phases = {
                    "features": shared,
                    "delete": deleting,
                    "predict": own - deleting - writing,
                    "write": writing,
                }
                results.append(
                    ScoreResult(info.name, info.version, len(features), rows, shared + own, 0.0, phases)
                )
            t3 = time.perf_counter()
        commit = (time.perf_counter() - t3) / len(infos)
    for i, res in enumerate(results):
        results[i] = replace(res, seconds=res.seconds + commit, phases={**res.phases, "commit": commit})
    # Old versions go after the commit: deleting a million-row version costs as much as writing one,
    # and the new scores need not wait for it.
    for i, info in enumerate(infos):
        t4 = time.perf_counter()
        with engine.begin() as conn:
            prune(conn, [info.name])
        results[i] = replace(results[i], prune_seconds=time.perf_counter() - t4)
    return results


def score(
    name: str,
    engine: Engine | None = None,
    *,
    version: str | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
) -> ScoreResult:
    """Score every customer (not erased) with ``name`` (the pinned ``version`` or the newest passing)."""
    versions = {name: version} if version else None
    return score_many([name], engine, versions=versions, now=now, batch_size=batch_size)[0]

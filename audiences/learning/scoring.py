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

Rows written per model:
- churn: ``churn`` = P(no order within the horizon);
- uplift: ``uplift`` = P(outcome | message) - P(outcome | no message);
- response: ``response.<channel>`` = P(response | that channel) for every channel the model knows,
  and ``response`` = the best of them among the channels the customer has consented to
  (among all when none), which is what `top: {model: response}` ranks by.

Scores of versions older than the newest ``KEEP_VERSIONS`` scored ones are
deleted (a campaign may pin a recent older version; the table must not grow
by a million rows a day).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, Engine, delete, select

from audiences.learning import dataset, registry
from audiences.learning.models import cpu_threads
from relance.models import Consent, CustomerScore, utcnow
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


def score_names(info: registry.ModelInfo) -> list[str]:
    """The ``customer_score.model`` values a version writes."""
    if info.name == "response":
        return ["response", *(f"response.{ch}" for ch in info.meta.get("channels", []))]
    return [info.name]


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


def _predict(info: registry.ModelInfo, model, df, consent: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if info.name != "response":
        return {info.name: model.predict(df)}
    channels = info.meta.get("channels", [])
    per = {}
    for ch in channels:
        per[ch] = model.predict(df.assign(channel=ch))
    stacked = np.vstack([per[ch] for ch in channels])
    ids = df["customer_id"].to_numpy(dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    allowed = np.vstack([_member(ids, consent.get(ch, empty)) for ch in channels])
    best_allowed = np.where(allowed, stacked, -np.inf).max(axis=0)
    best = np.where(np.isfinite(best_allowed), best_allowed, stacked.max(axis=0))
    return {"response": best, **{f"response.{ch}": per[ch] for ch in channels}}


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


def write(conn: Connection, rows: list[tuple]) -> None:
    """Append (model, version, customer_id, score, scored_at) rows through the driver connection."""
    if not rows:
        return
    columns = "model, version, customer_id, score, scored_at"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY customer_score ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(f"INSERT INTO customer_score ({columns}) VALUES (?, ?, ?, ?, ?)", rows)
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
    with cpu_threads(), engine.begin() as conn, _large_page_cache(conn):
        t0 = time.perf_counter()
        features = dataset.current_rows(conn, now)
        shared = time.perf_counter() - t0
        stamp = _stamp(conn, now)
        for info in infos:
            t1 = time.perf_counter()
            model = registry.load(info)
            names_written = score_names(info)
            conn.execute(
                delete(SCORES).where(SCORES.c.model.in_(names_written), SCORES.c.version == info.version)
            )
            consent = _consented(conn) if info.name == "response" else {}
            rows = 0
            for start in range(0, len(features), batch_size):
                df = features.iloc[start : start + batch_size]
                ids = df["customer_id"].tolist()
                for model_name, values in _predict(info, model, df, consent).items():
                    scores = np.asarray(values, dtype=float).tolist()
                    write(
                        conn,
                        [(model_name, info.version, c, v, stamp) for c, v in zip(ids, scores, strict=True)],
                    )
                    rows += len(ids)
            seconds = time.perf_counter() - t1 + shared / len(infos)
            results.append(ScoreResult(info.name, info.version, len(features), rows, seconds))
    # Old versions go after the commit: deleting a million-row version costs as much as writing one,
    # and the new scores need not wait for it.
    for i, info in enumerate(infos):
        t2 = time.perf_counter()
        with engine.begin() as conn:
            prune(conn, score_names(info))
        results[i] = replace(results[i], prune_seconds=time.perf_counter() - t2)
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

"""Batch scoring into ``customer_score`` so that `score`, `top`, `target` and `best` stay one SQL query.

The features of every customer as of now are computed once per scoring run
(one read of the orders, :func:`dataset.order_history`, the same definitions as
for training) and shared by all the models scored in that run
(:func:`score_many`); each model predicts in chunks of ``score_batch_size`` and
the rows are written through the driver (SQLite: ``executemany`` of tuples;
PostgreSQL: ``COPY``), because SQLAlchemy's multi-row INSERT of dicts took most
of the time on a million rows. A (model, version) is a row of ``score_version``
whose integer id keys its scores (migration 0009: narrower keys, 60 % of the write
time); its old rows are deleted first (no upsert). The whole version is written
in one transaction: a selection running meanwhile sees all of a version's scores
or none. Older versions are pruned after that commit.

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
from sqlalchemy import Connection, Engine, Text, cast, delete, func, insert, select, update

from audiences.learning import dataset, registry
from audiences.learning.models import cpu_threads
from core.models import CHANNELS, Consent, CustomerScore, ScoreVersion, utcnow
from core.settings import get_settings

SCORES = CustomerScore.__table__
VERSIONS = ScoreVersion.__table__
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
    # together), delete, load (the model file), predict (incl. the consent read of response), write
    phases: dict[str, float] = field(default_factory=dict)


def channels(info: registry.ModelInfo) -> list[str]:
    """The channels whose scores a version writes in ``score_<channel>`` (response only)."""
    return [ch for ch in info.meta.get("channels", []) if ch in CHANNELS] if info.name == "response" else []


def _consented(conn: Connection, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The sorted ids of the customers who consented to each of the channels ``names``.

    Why one aggregated string per channel (SQLite ``group_concat``, PostgreSQL ``string_agg``): a
    million ``(channel, id)`` rows cost a Python tuple each (2M rows: ~5 s on the bench machine);
    integers written as text and parsed by numpy are exact and took ~0.5 s per channel.
    """
    as_text = cast(CONSENT.c.customer_id, Text)
    joined = (
        func.group_concat(as_text, ",") if conn.dialect.name == "sqlite" else func.string_agg(as_text, ",")
    )
    found = {}
    for ch in names:
        text = conn.execute(
            select(joined).where(CONSENT.c.channel == ch, CONSENT.c.status == "granted")
        ).scalar_one()
        ids = np.array(text.split(","), dtype=np.int64) if text else np.empty(0, dtype=np.int64)
        found[ch] = np.sort(ids)  # unique by the primary key; np.unique took 1 s per million here
    return found


def _member(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """``ids`` found in ``sorted_ids``, by binary search (np.isin sorts both sides every call)."""
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return sorted_ids[at] == ids


ID_COLUMNS = ("key", "customer_id")  # not model inputs


def distinct_rows(features) -> tuple[object, np.ndarray]:
    """(one row per distinct feature vector, the index of each customer's vector in it).

    Why: a prediction is a function of the row alone, and customers who never ordered differ only by
    their tenure (about 30 % of the bench base): predicting each distinct vector once and spreading
    the result gives the same scores for less work. Computed once per scoring run, shared by the
    models. The ids (key, customer_id) are not model inputs and are left out of the comparison.
    """
    inputs = [c for c in features.columns if c not in ID_COLUMNS]
    codes = features.groupby(inputs, dropna=False, sort=False).ngroup().to_numpy(np.int64)
    if not len(codes):
        return features, codes
    order = np.argsort(codes, kind="stable")  # not np.unique: 1 s per million ints with numpy 2.4 here
    ranked = codes[order]
    first = order[np.r_[True, ranked[1:] != ranked[:-1]]]  # group g's first row (groups are 0..G-1)
    return features.iloc[first].reset_index(drop=True), codes


def _predict_distinct(
    info: registry.ModelInfo, model, distinct, batch_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Predictions for the distinct rows, in chunks: (the model's scores, or empty for a model with
    channels; the per-channel scores in :func:`channels` order)."""
    names = channels(info)

    def chunked(df) -> np.ndarray:
        parts = [model.predict(df.iloc[i : i + batch_size]) for i in range(0, len(df), batch_size)]
        return np.concatenate([np.asarray(p, dtype=float) for p in parts]) if parts else np.empty(0)

    if not names:
        return chunked(distinct), []
    return np.empty(0), [chunked(distinct.assign(channel=ch)) for ch in names]


def _best_consented(ids: np.ndarray, per: list[np.ndarray], names: list[str], consent) -> np.ndarray:
    """Per customer: the best channel score among the channels consented to (among all when none)."""
    stacked = np.vstack(per)
    empty = np.empty(0, dtype=np.int64)
    allowed = np.vstack([_member(ids, consent.get(ch, empty)) for ch in names])
    best_allowed = np.where(allowed, stacked, -np.inf).max(axis=0)
    return np.where(np.isfinite(best_allowed), best_allowed, stacked.max(axis=0))


def prune(conn: Connection, names: list[str], keep: int = KEEP_VERSIONS) -> None:
    """Delete the scores of all but the ``keep`` most recently scored versions of each name
    (ties: the newer version name; registry versions sort by time)."""
    for name in names:
        versions = (
            conn.execute(
                select(VERSIONS.c.id)
                .where(VERSIONS.c.model == name)
                .order_by(VERSIONS.c.scored_at.desc(), VERSIONS.c.version.desc())
            )
            .scalars()
            .all()
        )
        old = versions[keep:]
        if old:
            conn.execute(delete(SCORES).where(SCORES.c.version_id.in_(old)))
            conn.execute(delete(VERSIONS).where(VERSIONS.c.id.in_(old)))


def fresh_version(conn: Connection, model: str, version: str, now: datetime) -> int:
    """The id of (model, version) in ``score_version``, its previous scores deleted (a rescore
    replaces them) and ``scored_at`` set to ``now``; created when new."""
    found = conn.execute(
        select(VERSIONS.c.id).where(VERSIONS.c.model == model, VERSIONS.c.version == version)
    ).scalar()
    if found is None:
        return conn.execute(
            insert(VERSIONS).values(model=model, version=version, scored_at=now).returning(VERSIONS.c.id)
        ).scalar_one()
    conn.execute(delete(SCORES).where(SCORES.c.version_id == found))
    conn.execute(update(VERSIONS).where(VERSIONS.c.id == found).values(scored_at=now))
    return found


def named_scores():
    """``customer_score`` rows with their model, version and scored_at (its rows carry a version id)."""
    return (
        select(
            VERSIONS.c.model,
            VERSIONS.c.version,
            VERSIONS.c.scored_at,
            *[c for c in SCORES.c if c.name != "version_id"],
        )
        .join_from(SCORES, VERSIONS, VERSIONS.c.id == SCORES.c.version_id)
        .subquery("scores")
    )


def insert_scores(
    conn: Connection, model: str, version: str, scores: Iterable[tuple[int, float]], scored_at: datetime
) -> int:
    """Write (customer_id, score) pairs as one version (its previous scores replaced): scores made
    elsewhere, and tests. Returns the version id."""
    vid = fresh_version(conn, model, version, scored_at)
    rows = [{"version_id": vid, "customer_id": c, "score": v} for c, v in scores]
    if rows:
        conn.execute(insert(SCORES), rows)
    return vid


BASE_COLUMNS = ("version_id", "customer_id", "score")


def write(conn: Connection, rows: Iterable[tuple], channel_columns: Sequence[str] = ()) -> None:
    """Append (version_id, customer_id, score, *channel scores) rows through the driver.

    ``channel_columns`` names the ``score_<channel>`` columns the rows carry after the three base ones.
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

    Why: the (version_id, score) index is filled in random order; with SQLite's default 2 MB
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


@contextmanager
def _foreign_keys_off(conn: Connection) -> Iterator[None]:
    """SQLite: no per-row foreign key check while the scores are written, restored after the commit.

    Why it is safe here: :func:`score_many` takes the write lock (its first write) BEFORE it reads the
    customers, so every customer id it writes is in the customer table of that same transaction and no
    other connection can delete one before the commit (SQLite has one writer; a delete committed
    before would be seen by the read). ON DELETE CASCADE of later deletes is untouched (it is the
    pragma of the deleting connection). Why: the check is a parent lookup per row (1M rows: ~1 s here).
    The pragma is a no-op inside a transaction, so it is set and restored outside one; a connection
    on which it could not be restored is discarded, never returned to the pool with the check off.
    """
    if conn.dialect.name != "sqlite" or conn.in_transaction():
        yield
        return
    raw = conn.connection.dbapi_connection
    if not int(raw.execute("PRAGMA foreign_keys").fetchone()[0]) or raw.in_transaction:
        yield
        return
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        restored = False
        if not raw.in_transaction:
            raw.execute("PRAGMA foreign_keys = ON")
            restored = int(raw.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
        if not restored:
            conn.invalidate()


def score_many(
    names: list[str],
    engine: Engine | None = None,
    *,
    versions: dict[str, str] | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
) -> list[ScoreResult]:
    """Score every customer (not erased) with each model: features computed once, shared by all."""
    from core.db import get_engine

    engine = engine or get_engine()
    infos = [registry.resolve(name, (versions or {}).get(name)) for name in names]
    now = now or utcnow()
    batch_size = batch_size or get_settings().score_batch_size
    results = []
    t_import = time.perf_counter()
    threads = cpu_threads()  # imports scikit-learn (1-4 s here): a share of it counts as each model's load
    importing = (time.perf_counter() - t_import) / len(infos)
    with threads, engine.connect() as conn, _large_page_cache(conn), _foreign_keys_off(conn):
        with conn.begin():
            # The versions' rows go first: on SQLite this write takes the write lock, so the
            # customers read next stay as read until the commit (see _foreign_keys_off).
            deleting, version_ids = [], []
            for info in infos:
                t1 = time.perf_counter()
                version_ids.append(fresh_version(conn, info.name, info.version, now))
                deleting.append(time.perf_counter() - t1)
            t0 = time.perf_counter()
            features = dataset.current_rows(conn, now)
            distinct, codes = distinct_rows(features)
            ids = features["customer_id"].to_numpy(np.int64)
            shared = (time.perf_counter() - t0) / len(infos)
            for info, deleted, vid in zip(infos, deleting, version_ids, strict=True):
                t1 = time.perf_counter()
                model = registry.load(info)
                loaded = time.perf_counter()
                names_ = channels(info)
                score_d, per_d = _predict_distinct(info, model, distinct, batch_size)
                per = [p[codes] for p in per_d]
                best = (
                    _best_consented(ids, per, names_, _consented(conn, names_)) if names_ else score_d[codes]
                )
                columns = [registry.channel_column(ch) for ch in names_]
                t2 = time.perf_counter()
                for start in range(0, len(ids), batch_size):
                    part = slice(start, start + batch_size)
                    values = (ids[part].tolist(), best[part].tolist(), *(p[part].tolist() for p in per))
                    write(conn, zip(repeat(vid), *values, strict=False), columns)  # repeat() is endless
                writing = time.perf_counter() - t2
                phases = {
                    "features": shared,
                    "delete": deleted,
                    "load": importing + loaded - t1,
                    "predict": t2 - loaded,
                    "write": writing,
                }
                seconds = importing + shared + deleted + t2 - t1 + writing
                results.append(ScoreResult(info.name, info.version, len(ids), len(ids), seconds, 0.0, phases))
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

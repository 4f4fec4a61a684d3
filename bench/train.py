"""Training and scoring at scale: synthetic history for N customers (default 1,000,000), then
`train` (churn, response, uplift) and `score` timed separately.

Data comes from audiences/learning/synthetic.py (planted effects, 3 past runs sending to 60 % of the base
with a 30 % control group); generation is not timed. The SQLite file is kept (bench/out/, git-ignored)
and reused by a second run unless --fresh.

    .venv/bin/python bench/train.py [--customers 1000000] [--db bench/out/train-1000000.db] [--threads 1]
    .venv/bin/python bench/train.py --score-only     # score again with the models trained by a previous run
    .venv/bin/python bench/train.py --score-only --diff-scores bench/out/scores-before.db
        # first time: keeps the scores written; afterwards: compares the new ones with them (same versions)

Trained models are kept in bench/out/models-<customers>/ (--models-dir), so `--score-only` can time
scoring alone, on the same database and the same model versions.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="Regenerate the data even if the file exists")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads (settings.learning_threads)")
    parser.add_argument("--models", default="churn,response,uplift")
    parser.add_argument("--models-dir", type=Path, default=None, help="default bench/out/models-<customers>")
    parser.add_argument(
        "--score-only", action="store_true", help="No training: score with the newest passing versions"
    )
    parser.add_argument(
        "--diff-scores",
        type=Path,
        default=None,
        help="SQLite file: keep the scores written (if it does not exist) or compare them with the kept ones",
    )
    args = parser.parse_args()
    db = args.db or Path("bench/out") / f"train-{args.customers}.db"
    models_dir = args.models_dir or Path("bench/out") / f"models-{args.customers}"
    db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db.resolve()}"
    os.environ["RELANCE_DATABASE_URL"] = url
    os.environ["RELANCE_LEARNING_THREADS"] = str(args.threads)
    os.environ["RELANCE_MODELS_DIR"] = str(models_dir.resolve())
    from core.db import get_engine, migrate

    if args.fresh and db.exists():
        db.unlink()
    fresh = not db.exists()
    migrate(url)
    engine = get_engine(url)
    from audiences.learning import models, registry, scoring, synthetic

    if fresh:
        t0 = time.perf_counter()
        synthetic.generate(engine, args.customers, now=NOW, seed=1)
        print(f"generated {args.customers:,} customers in {time.perf_counter() - t0:.0f} s -> {db}")
    total_train = 0.0
    versions = {}
    shared = {}
    if not args.score_only:  # the message rows of response and uplift, read once (timed with training)
        t0 = time.perf_counter()
        shared = models.shared_rows(args.models.split(","), engine, NOW)
        total_train += time.perf_counter() - t0
        if shared:
            print(f"message rows (response, uplift): {time.perf_counter() - t0:.1f} s")
    for name in args.models.split(","):
        if args.score_only:
            versions[name] = registry.resolve(name).version
            continue
        t0 = time.perf_counter()
        trained = models.train(name, engine, now=NOW, seed=0, **shared)
        train_s = time.perf_counter() - t0
        meta = trained.info.meta
        m = {k: round(v, 4) for k, v in meta["metrics"].items() if isinstance(v, float)}
        print(f"train {name}: {train_s:.1f} s, rows {meta['rows']}, passed {trained.info.passed}, {m}")
        total_train += train_s
        versions[name] = trained.info.version
    if args.score_only:  # time the scoring of a new version: the rows of these versions go first
        from sqlalchemy import delete, select

        t0 = time.perf_counter()
        with engine.begin() as conn:
            ids = select(scoring.VERSIONS.c.id).where(scoring.VERSIONS.c.version.in_(list(versions.values())))
            conn.execute(delete(scoring.SCORES).where(scoring.SCORES.c.version_id.in_(ids)))
        print(f"deleted the previous scores of {versions} in {time.perf_counter() - t0:.1f} s (not timed)")
    # One scoring run for all models: the features as of now are computed once and shared
    # (each model's figure includes its share of that).
    t0 = time.perf_counter()
    for res in scoring.score_many(list(versions), engine, versions=versions, now=NOW):
        phases = ", ".join(f"{k} {v:.1f}" for k, v in res.phases.items())
        print(
            f"score {res.model}: {res.seconds:.1f} s for {res.customers:,} customers ({res.rows:,} rows)"
            f" [{phases}]; then pruning versions beyond the newest 3: {res.prune_seconds:.1f} s"
        )
    total_score = time.perf_counter() - t0
    print(f"total: train {total_train:.1f} s, score {total_score:.1f} s (load average {os.getloadavg()})")
    if args.diff_scores:
        diff_scores(db, args.diff_scores, versions)


def diff_scores(db: Path, kept: Path, versions: dict[str, str]) -> None:
    """Keep the rows of ``versions`` in ``kept`` (first call), or compare them with the kept ones.

    Why: a faster scoring must write the same scores. Rows are matched on the primary key and every
    column is compared exactly (``IS NOT``); the largest absolute difference is printed too. The kept
    table is keyed like customer_score (an EXCEPT of 3M rows both ways took 10 minutes here).
    """
    import sqlite3

    values = ("score", "scored_at", "score_email", "score_sms", "score_push")
    cols = ", ".join(("model", "version", "customer_id", *values))
    pairs = " OR ".join("(n.model = ? AND n.version = ?)" for _ in versions)
    args = [x for pair in versions.items() for x in pair]
    named = (  # customer_score keys its rows by version id (migration 0009): named here as they were
        "(SELECT v.model, v.version, s.customer_id, s.score, v.scored_at, s.score_email, s.score_sms,"
        " s.score_push FROM customer_score s JOIN score_version v ON v.id = s.version_id)"
    )
    con = sqlite3.connect(db)
    try:
        first = not kept.exists()
        con.execute("ATTACH ? AS kept", (str(kept),))
        if first:
            con.execute(
                "CREATE TABLE kept.score (model TEXT, version TEXT, customer_id INTEGER, score REAL,"
                " scored_at TEXT, score_email REAL, score_sms REAL, score_push REAL,"
                " PRIMARY KEY (model, version, customer_id)) WITHOUT ROWID"
            )
            con.execute(
                f"INSERT INTO kept.score SELECT {cols} FROM {named} n WHERE {pairs}"
                " ORDER BY model, version, customer_id",
                args,
            )
            con.commit()
            n = con.execute("SELECT count(*) FROM kept.score").fetchone()[0]
            print(f"kept {n:,} score rows in {kept} (the next run with --diff-scores compares with them)")
            return
        differ = " OR ".join(f"n.{c} IS NOT k.{c}" for c in values)
        worst = ", ".join(
            f"max(abs(n.{c} - k.{c}))" for c in ("score", "score_email", "score_sms", "score_push")
        )
        matched, differing, *largest = con.execute(
            f"SELECT count(*), coalesce(sum({differ}), 0), {worst} FROM {named} n JOIN kept.score k"
            " ON k.model = n.model AND k.version = n.version AND k.customer_id = n.customer_id"
            f" WHERE {pairs}",
            args,
        ).fetchone()
        now = con.execute(f"SELECT count(*) FROM {named} n WHERE {pairs}", args).fetchone()[0]
        before = con.execute("SELECT count(*) FROM kept.score").fetchone()[0]
        print(
            f"scores vs {kept}: {matched:,} rows matched, {differing:,} of them differ"
            f" (max |difference| score/email/sms/push {largest}); {now - matched:,} new rows,"
            f" {before - matched:,} kept rows missing"
        )
    finally:
        con.close()


if __name__ == "__main__":
    main()

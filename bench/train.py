"""Training and scoring at scale: synthetic history for N customers (default 1,000,000), then
`train` (churn, response, uplift) and `score` timed separately.

Data comes from audiences/learning/synthetic.py (planted effects, 3 past runs sending to 60 % of the base
with a 30 % control group); generation is not timed. The SQLite file is kept (bench/out/, git-ignored)
and reused by a second run unless --fresh.

    .venv/bin/python bench/train.py [--customers 1000000] [--db bench/out/train-1000000.db] [--threads 1]
    .venv/bin/python bench/train.py --score-only     # score again with the models trained by a previous run

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
    args = parser.parse_args()
    db = args.db or Path("bench/out") / f"train-{args.customers}.db"
    models_dir = args.models_dir or Path("bench/out") / f"models-{args.customers}"
    db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db.resolve()}"
    os.environ["RELANCE_DATABASE_URL"] = url
    os.environ["RELANCE_LEARNING_THREADS"] = str(args.threads)
    os.environ["RELANCE_MODELS_DIR"] = str(models_dir.resolve())
    from relance.db import get_engine, migrate

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
    for name in args.models.split(","):
        if args.score_only:
            versions[name] = registry.resolve(name).version
            continue
        t0 = time.perf_counter()
        trained = models.train(name, engine, now=NOW, seed=0)
        train_s = time.perf_counter() - t0
        meta = trained.info.meta
        m = {k: round(v, 4) for k, v in meta["metrics"].items() if isinstance(v, float)}
        print(f"train {name}: {train_s:.1f} s, rows {meta['rows']}, passed {trained.info.passed}, {m}")
        total_train += train_s
        versions[name] = trained.info.version
    if args.score_only:  # time the scoring of a new version: the rows of these versions go first
        from sqlalchemy import delete

        t0 = time.perf_counter()
        with engine.begin() as conn:
            table = scoring.SCORES
            conn.execute(delete(table).where(table.c.version.in_(list(versions.values()))))
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


if __name__ == "__main__":
    main()

"""Uplift on real data: Kevin Hillstrom's e-mail experiment (64,000 customers), through relance's own code.

Reads /work/shared/data/hillstrom.csv (never copied into the repository), loads it as one past campaign
run with a control group (audiences/learning/hillstrom.py), trains the uplift model with relance's
dataset and training code, and prints, on the held-out 30 % of customers, the Qini coefficient and the
uplift in the top 30 % for: the uplift model, a plain response model (P(outcome | e-mail), i.e.
targeting responders) and random targeting. Outcome: conversion (relance's default: the only outcome a
control group has) and, with control visits recorded, visit.

    .venv/bin/python bench/hillstrom.py [--csv PATH] [--db bench/out/hillstrom.db] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_CSV = Path("/work/shared/data/hillstrom.csv")


def run(csv: Path, db: Path, outcome: str, seed: int) -> dict:
    from core.db import get_engine, migrate, reset_engines
    from core.settings import get_settings

    if db.exists():
        db.unlink()
    url = f"sqlite:///{db}"
    os.environ["RELANCE_DATABASE_URL"] = url
    get_settings.cache_clear()
    reset_engines()
    migrate(url)
    engine = get_engine(url)
    from audiences.learning import hillstrom, models

    sent_at = datetime(2008, 3, 4, 10, 0, tzinfo=UTC)
    t0 = time.perf_counter()
    hillstrom.load(engine, csv, sent_at=sent_at, control_visits=outcome == "responded")
    load_s = time.perf_counter() - t0
    settings = get_settings().model_copy(update={"learning_window_days": 14})
    trained = models.train(
        "uplift",
        engine,
        now=sent_at + timedelta(days=15),
        seed=seed,
        settings=settings,
        outcome=outcome,
        save=False,
    )
    return {"load_s": load_s, "train_s": trained.seconds, "meta": trained.info.meta}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.csv.is_file():
        raise SystemExit(f"{args.csv} not found: see /work/shared/data/README.md")
    os.environ.setdefault("RELANCE_MODELS_DIR", tempfile.mkdtemp(prefix="hillstrom-models-"))
    for outcome, label in (("converted", "conversion"), ("responded", "visit")):
        db = args.db or Path(tempfile.mkdtemp(prefix="hillstrom-")) / "hillstrom.db"
        res = run(args.csv, db, outcome, args.seed)
        m = res["meta"]["metrics"]
        r = m["response_targeting"]
        print(f"\n== outcome: {label} (load {res['load_s']:.1f} s, train {res['train_s']:.1f} s) ==")
        print(
            f"holdout: {res['meta']['holdout']}; rows {m['rows']:,} "
            f"(treated {m['treated']:,}, control {m['control']:,})"
        )
        print(f"{'targeting':<28}{'Qini coefficient':>18}{'uplift top 30 %':>18}")
        print(f"{'uplift model (T-learner)':<28}{m['qini']:>18.5f}{m['uplift_top30']:>18.4%}")
        print(f"{'response model':<28}{r['qini']:>18.5f}{r['uplift_top30']:>18.4%}")
        print(f"{'random':<28}{0.0:>18.5f}{m['uplift_all']:>18.4%}")


if __name__ == "__main__":
    main()

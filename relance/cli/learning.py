"""`relance train`, `relance models`, `relance score` and `relance recommend` (targeting models, issue 7).

Heavy modules (scikit-learn, pandas) are imported inside the commands so that `relance --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from relance.cli.app import app
from relance.cli.common import console, ensure_db, fail

ALL_MODELS = ("churn", "response", "uplift")
ModelArg = typer.Argument(None, help="churn, response (also chooses channels) or uplift; none = all three")
NowOpt = typer.Option(None, "--now", help="Reference time (ISO, UTC if no offset), default now; for replays")


def _now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--now {value!r} is not a date-time: write e.g. 2026-01-15 or 2026-01-15T10:00")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _names(model: str | None) -> list[str]:
    from audiences.learning.registry import canonical

    if model is None:
        return list(ALL_MODELS)
    name = canonical(model)
    if name not in ALL_MODELS:
        fail(f"unknown model `{model}`: write one of {', '.join(ALL_MODELS)}")
    return [name]


def _metric_text(meta: dict) -> str:
    m = meta.get("metrics", {})
    parts = []
    for key in ("auc", "brier", "calibration_error", "qini", "uplift_top30", "uplift_all"):
        if isinstance(m.get(key), int | float):
            parts.append(f"{key} {m[key]:.4f}")
    if isinstance(m.get("response_targeting"), dict):
        parts.append(f"(response targeting: qini {m['response_targeting']['qini']:.4f})")
    return ", ".join(parts)


def _window_text(meta: dict) -> str:
    """The training window in words: the cut-offs' span, or the train period."""
    window = meta.get("window", {})
    span = window.get("train", window.get("cutoffs"))
    if isinstance(span, list) and span and all(isinstance(s, str) for s in span):
        dates = sorted(s[:10] for s in span)
        if "cutoffs" in window:
            return f"{len(dates)} cut-off(s) from {dates[0]} to {dates[-1]}"
        return " to ".join(dates)
    return json.dumps(span, default=str)


@app.command("train")
def train_cmd(
    model: str = ModelArg,
    now: str = NowOpt,
    seed: int = typer.Option(0, "--seed", help="Random seed (same data + same seed = same model)"),
    outcome: str = typer.Option("converted", "--outcome", help="Uplift outcome: converted or responded"),
    then_score: bool = typer.Option(
        True, "--score/--no-score", help="Score every customer with a passing version"
    ),
) -> None:
    """Train models on past orders and campaigns, evaluate on a time-based holdout, store a new version.

    Exit 2 when a model asked for by name cannot be trained; with no MODEL, only when none of the three
    could be (on a fresh base churn learns from the orders while response and uplift wait for campaigns,
    and `relance train && relance models` must still go on).
    """
    from audiences.learning.models import NotEnoughData, shared_rows, train
    from audiences.learning.scoring import score
    from core.models import utcnow

    engine = ensure_db()
    at = _now(now) or utcnow()  # one instant for every model and the scores, as the train_models flow does
    if outcome not in ("converted", "responded"):
        fail(f"--outcome {outcome!r}: write converted or responded")
    skipped = 0
    names = _names(model)
    with console().status("reading the past messages ..."):
        shared = shared_rows(names, engine, at)  # response and uplift learn from the same rows
    for name in names:
        options = {**shared, **({"outcome": outcome} if name == "uplift" else {})}
        try:
            with console().status(f"training {name} ..."):
                trained = train(name, engine, now=at, seed=seed, **options)
        except NotEnoughData as exc:
            reason = str(exc).removeprefix(f"{name}: ")
            console().print(f"[yellow]{name}: not trained[/yellow]: {reason}", highlight=False)
            skipped += 1
            continue
        meta = trained.info.meta
        verdict = (
            "[green]passes[/green]" if trained.info.passed else f"[red]below the floor {meta['floors']}[/red]"
        )
        console().print(
            f"{name} {trained.info.version}: {_metric_text(meta)} on {meta['rows']['holdout']:,} holdout "
            f"rows ({meta['holdout']}); {verdict}; {trained.seconds:.1f} s -> {trained.info.path}",
            highlight=False,
        )
        if then_score and trained.info.passed:
            with console().status(f"scoring {name} ..."):
                res = score(name, engine, version=trained.info.version, now=at)
            console().print(
                f"  scored {res.customers:,} customers ({res.rows:,} rows) in {res.seconds:.1f} s"
            )
    if skipped and (model is not None or skipped == len(names)):
        raise typer.Exit(2)


@app.command("models")
def models_cmd(
    model: str = ModelArg,
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON"),
) -> None:
    """List stored model versions with their holdout metrics; the one used is marked."""
    from audiences.learning import registry

    infos = [i for name in _names(model) for i in registry.versions(name)]
    if as_json:
        console().print_json(json.dumps([i.meta for i in infos], default=str))
        return
    if not infos:
        console().print(f"no trained model in {registry.root()}: run `relance train`")
        return
    used = {}
    for name in {i.name for i in infos}:
        with contextlib.suppress(registry.ModelNotFound):
            used[name] = registry.resolve(name).version
    # What fits 80 columns stays a table; metrics and the training window follow as wrapped lines,
    # so that nothing a reader needs (a version to pin, a metric) is cut at a narrow width.
    table = Table("model", "version", "used", "passes", "holdout rows")
    table.columns[1].no_wrap = True
    for i in infos:
        table.add_row(
            i.name,
            i.version,
            "yes" if used.get(i.name) == i.version else "",
            "yes" if i.passed else "no",
            f"{i.meta.get('rows', {}).get('holdout', 0):,}",
        )
    out = console()
    out.print(table)
    for i in infos:
        metrics = _metric_text(i.meta) or "no metrics"
        out.print(f"{i.name} {i.version}: {metrics}; trained on {_window_text(i.meta)}")


@app.command("score")
def score_cmd(
    model: str = ModelArg,
    version: str = typer.Option(None, "--version", help="Score with this version (default: newest passing)"),
    now: str = NowOpt,
) -> None:
    """Score every customer into customer_score (used by `score`, `top`, `target` and `best`)."""
    from audiences.learning.registry import ModelNotFound
    from audiences.learning.scoring import score_many

    engine = ensure_db()
    names = _names(model)
    if version and len(names) > 1:
        fail("--version needs a MODEL, e.g. `relance score churn --version 20260115T103000Z`")
    try:  # one call: the customers' features are read once for every model
        results = score_many(names, engine, versions={names[0]: version} if version else None, now=_now(now))
    except ModelNotFound as exc:
        fail(str(exc))
    for name, res in zip(names, results, strict=True):
        console().print(
            f"{name} {res.version}: {res.customers:,} customers, {res.rows:,} scores in {res.seconds:.1f} s"
        )


@app.command("recommend")
def recommend_cmd(
    k: int = typer.Option(None, "--per-customer", help="Products per customer (default: settings)"),
    min_support: int = typer.Option(2, "--min-support", help="Customers buying both items, at least"),
) -> None:
    """Next best offer: products per customer from co-purchases, for templates' `recommendations`."""
    from audiences.learning.recommend import recommend

    engine = ensure_db()
    res = recommend(engine, k=k, min_support=min_support)
    console().print(
        f"recommendations {res.version}: {res.rows:,} for {res.customers:,} customers "
        f"({res.items:,} items) in {res.seconds:.1f} s"
    )

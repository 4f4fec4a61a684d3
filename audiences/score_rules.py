"""Rules on model scores (`score`, `top`, `target: uplift`) and the model version each one reads.

The version is the one pinned in the campaign's ``model_versions``, else the
newest in the model registry that passes its metric floors and has scores,
else the newest scored one; every version read is recorded in
``ctx.models_used`` (campaign_run.models, the report).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from audiences.learning import registry
from audiences.rule_context import CUSTOMER, SCORES, VERSIONS, RuleContext, RuleError, bind_connect
from core.spec import ScoreRule, TargetRule, TopRule


def model_version(model: str, ctx: RuleContext) -> str:
    """The pinned version of ``model`` (campaign ``model_versions:``) or its newest scored one."""
    with bind_connect(ctx) as conn:
        pinned = ctx.model_versions.get(model)
        q = select(VERSIONS.c.version).where(VERSIONS.c.model == model)
        if pinned is not None:
            found = conn.execute(q.where(VERSIONS.c.version == pinned)).scalar()
            if found is None:
                raise RuleError(
                    f"no scores for model {model} version {pinned} (pinned in model_versions): "
                    f"run `relance train {model}` or pin an existing version"
                )
        else:
            found = _registry_version(model, conn, q)  # helper G: newest version passing its floors
            if found is None:
                found = conn.execute(
                    q.order_by(VERSIONS.c.scored_at.desc(), VERSIONS.c.version.desc()).limit(1)
                ).scalar()
            if found is None:
                raise RuleError(f"no scores for model {model}: run `relance train {model}` first")
    ctx.models_used[model] = found
    return found


def _registry_version(model: str, conn: Connection, q: Any) -> str | None:
    """The newest version in settings.models_dir that passes its metric floors and has scores (helper G).

    None when the registry knows no version of ``model`` (scores written by other means: newest scored
    wins); a RuleError when it knows some but none passing has scores.
    """
    known = registry.versions(model)
    if not known:
        return None
    for info in known:
        if info.passed and conn.execute(q.where(VERSIONS.c.version == info.version)).scalar():
            return info.version
    passing = [i.version for i in known if i.passed]
    if not passing:
        raise RuleError(
            f"model {model}: no version passes its metric floors ({registry.summary(known[0])} for "
            f"{known[0].version}); train on more data or pin a version in model_versions"
        )
    raise RuleError(
        f"model {model}: version {passing[0]} passes but has no scores: run `relance score {model}`"
    )


def scores_of(model: str, version: str) -> ColumnElement:
    """``customer_score`` rows of one (model, version): its id, read once by the database."""
    vid = select(VERSIONS.c.id).where(VERSIONS.c.model == model, VERSIONS.c.version == version)
    return SCORES.c.version_id == vid.scalar_subquery()


def _scored(model: str, version: str, *conds: ColumnElement) -> ColumnElement:
    return CUSTOMER.c.id.in_(select(SCORES.c.customer_id).where(scores_of(model, version), *conds))


def compile_score(rule: ScoreRule, ctx: RuleContext) -> ColumnElement:
    s = rule.score
    version = model_version(s.model, ctx)
    conds = []
    if s.min is not None:
        conds.append(SCORES.c.score >= s.min)
    if s.max is not None:
        conds.append(SCORES.c.score <= s.max)
    return _scored(s.model, version, *conds)


def compile_top(rule: TopRule, ctx: RuleContext) -> ColumnElement:
    """The best ``percent`` % of scored customers; the cut score is read once (ties are all kept)."""
    t = rule.top
    version = model_version(t.model, ctx)
    scope = scores_of(t.model, version)
    with bind_connect(ctx) as conn:
        n = conn.execute(select(func.count()).where(scope)).scalar_one()
        k = max(1, math.ceil(n * t.percent / 100))
        cut = conn.execute(
            select(SCORES.c.score).where(scope).order_by(SCORES.c.score.desc()).offset(k - 1).limit(1)
        ).scalar()
    return _scored(t.model, version, SCORES.c.score >= cut)


def compile_target(rule: TargetRule, ctx: RuleContext) -> ColumnElement:
    """`target: uplift`: customers the uplift model expects to be moved by the message (score > 0)."""
    version = model_version("uplift", ctx)
    return _scored("uplift", version, SCORES.c.score > 0)

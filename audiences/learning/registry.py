"""Versioned models on disk: settings.models_dir/<model>/<version>/{model.joblib, meta.json}.

A version is the UTC training time (``20260115T103000Z``), so names sort in
time order. ``meta.json`` says when and on which window it was trained, its
holdout metrics, whether they pass the floors, its features and the
scikit-learn version. The version used is the newest that passes, unless a
campaign pins one (``model_versions: {churn: 20260115T103000Z}``).

Why files rather than a table: a joblib artifact is a file anyway, analysts can
copy or archive a version folder, and no migration is needed.

This module imports nothing of the rule compiler (audiences.score_rules asks it
for versions); which versions a campaign reads is audiences.learning.campaign_models.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.models import utcnow
from core.settings import get_settings

MODEL_NAMES: tuple[str, ...] = ("response", "churn", "uplift")
ALIASES: dict[str, str] = {"channel": "response"}  # `channels: {strategy: best, model: channel}`


class ModelNotFound(LookupError):
    """No usable version of a model; the message says which command to run."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    path: Path
    meta: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.meta.get("passed"))


def canonical(name: str) -> str:
    """The stored model name (``channel`` is the response model, which has the channel as a feature)."""
    return ALIASES.get(name, name)


def channel_column(channel: str) -> str:
    """The ``customer_score`` column holding a response version's score for ``channel``."""
    return f"score_{channel}"


def root(models_dir: Path | None = None) -> Path:
    return Path(models_dir or get_settings().models_dir)


def new_version(at: datetime | None = None) -> str:
    return (at or utcnow()).strftime("%Y%m%dT%H%M%SZ")


def save(name: str, artifact: Any, meta: dict[str, Any], models_dir: Path | None = None) -> ModelInfo:
    """Write a new version atomically (a temporary folder renamed), never overwriting one."""
    import joblib

    base = root(models_dir) / name
    base.mkdir(parents=True, exist_ok=True)
    version = meta.get("version") or new_version()
    candidate, n = version, 1
    while (base / candidate).exists():
        n += 1
        candidate = f"{version}-{n}"
    meta = {**meta, "model": name, "version": candidate}
    tmp = base / f".{candidate}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    joblib.dump(artifact, tmp / "model.joblib", compress=3)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    tmp.rename(base / candidate)
    return ModelInfo(name, candidate, base / candidate, meta)


def versions(name: str | None = None, models_dir: Path | None = None) -> list[ModelInfo]:
    """Stored versions (of one model or all), newest first within each model."""
    base = root(models_dir)
    names = (
        [canonical(name)]
        if name
        else sorted(p.name for p in base.iterdir() if p.is_dir())
        if base.is_dir()
        else []
    )
    out: list[ModelInfo] = []
    for model in names:
        folder = base / model
        if not folder.is_dir():
            continue
        for vdir in sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True
        ):
            meta_file = vdir / "meta.json"
            if meta_file.is_file():
                out.append(
                    ModelInfo(model, vdir.name, vdir, json.loads(meta_file.read_text(encoding="utf-8")))
                )
    return out


def resolve(name: str, pinned: str | None = None, models_dir: Path | None = None) -> ModelInfo:
    """The pinned version, else the newest passing one; ModelNotFound says what to do otherwise."""
    name = canonical(name)
    found = versions(name, models_dir)
    if pinned is not None:
        for info in found:
            if info.version == pinned:
                return info
        known = ", ".join(i.version for i in found) or "none"
        raise ModelNotFound(
            f"model {name} version {pinned} (pinned in model_versions) is not in {root(models_dir) / name}; "
            f"known versions: {known}"
        )
    if not found:
        raise ModelNotFound(f"no trained version of model {name}: run `relance train {name}`")
    for info in found:
        if info.passed:
            return info
    newest = found[0]
    raise ModelNotFound(
        f"no version of model {name} passes its metric floors (newest {newest.version}: "
        f"{_summary(newest.meta)}); train on more data, lower the floor in settings, "
        f"or pin a version in the campaign's model_versions"
    )


def load(info: ModelInfo) -> Any:
    import joblib

    return joblib.load(info.path / "model.joblib")


def _summary(meta: dict[str, Any]) -> str:
    m = meta.get("metrics", {})
    keys = ("auc", "brier", "qini", "uplift_top30")
    return ", ".join(f"{k} {m[k]:.4f}" for k in keys if isinstance(m.get(k), int | float)) or "no metrics"


def summary(info: ModelInfo) -> str:
    return _summary(info.meta)

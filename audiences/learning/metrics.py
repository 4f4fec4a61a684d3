"""Evaluation measures: discrimination (AUC), calibration (Brier, reliability) and uplift (Qini).

AUC, Brier and the reliability curve come from scikit-learn. The Qini curve and
uplift at k % are written here because scikit-learn has none and the uplift
libraries (scikit-uplift, causalml) pull heavy or unpinnable dependencies for
twenty lines of arithmetic.

Qini (Radcliffe 2007): customers sorted by decreasing uplift score; after the
first n, Q(n) = R_t(n) - R_c(n) * N_t(n) / N_c(n), the responders of the
treated minus those of the control rescaled to the treated count: the
incremental responders had the top n been targeted. The Qini coefficient here
is the area between that curve and the straight line of random targeting,
divided by the number of customers, so it reads "incremental responders per
customer, on average over every targeting depth" and 0 means no better than
random. Uplift at k % is the difference of response rates between treated and
control within the top k %, to compare with the overall difference (random
targeting).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """AUC, Brier score and a reliability table (mean predicted vs observed per quantile bin)."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    out: dict[str, Any] = {"rows": int(len(y)), "positives": int(y.sum()), "base_rate": float(y.mean())}
    out["auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    out["brier"] = float(brier_score_loss(y, p))
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    out["reliability"] = [
        {"predicted": round(float(a), 5), "observed": round(float(b), 5)}
        for a, b in zip(predicted, observed, strict=True)
    ]
    out["calibration_error"] = float(np.mean(np.abs(observed - predicted))) if len(observed) else None
    return out


def qini_curve(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share targeted, incremental responders) after each customer, sorted by decreasing score."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    y = np.asarray(y, dtype=float)[order]
    t = np.asarray(treated, dtype=bool)[order]
    n_t = np.cumsum(t)
    n_c = np.cumsum(~t)
    r_t = np.cumsum(y * t)
    r_c = np.cumsum(y * ~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = r_t - np.where(n_c > 0, r_c * n_t / np.maximum(n_c, 1), 0.0)
    share = np.arange(1, len(y) + 1) / len(y)
    return np.concatenate([[0.0], share]), np.concatenate([[0.0], q])


def qini_coefficient(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> float:
    """Area between the Qini curve and random targeting, per customer (0 = random, > 0 better)."""
    share, q = qini_curve(y, treated, score)
    random_line = share * q[-1]
    return float(np.trapezoid(q - random_line, share) / max(len(share) - 1, 1))


def uplift_at(y: np.ndarray, treated: np.ndarray, score: np.ndarray, percent: float) -> float:
    """Treated minus control response rate among the top ``percent`` % by score."""
    score = np.asarray(score, dtype=float)
    k = max(1, int(np.ceil(len(score) * percent / 100)))
    top = np.argsort(-score, kind="stable")[:k]
    return uplift(np.asarray(y)[top], np.asarray(treated)[top])


def uplift(y: np.ndarray, treated: np.ndarray) -> float:
    """Treated minus control response rate (nan when one group is empty)."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=bool)
    if t.sum() == 0 or (~t).sum() == 0:
        return float("nan")
    return float(y[t].mean() - y[~t].mean())


def uplift_metrics(y: np.ndarray, treated: np.ndarray, score: np.ndarray, percent: float = 30.0) -> dict:
    """Qini coefficient, uplift in the top ``percent`` % and the random-targeting baseline."""
    t = np.asarray(treated, dtype=bool)
    return {
        "rows": int(len(t)),
        "treated": int(t.sum()),
        "control": int((~t).sum()),
        "qini": qini_coefficient(y, t, score),
        f"uplift_top{int(percent)}": uplift_at(y, t, score, percent),
        "uplift_all": uplift(y, t),  # = what random targeting of any share yields on average
    }

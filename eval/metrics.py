"""Classification metrics, bootstrap intervals, McNemar tests and calibration.

Everything numeric comes from scikit-learn / scipy; this module only arranges inputs and
handles the degenerate cases (all-correct samples, empty sets) those libraries do not.
Unparseable predictions are the label :data:`INVALID` (always wrong).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

INVALID = "<invalid>"


def _labels_or_invalid(pred: Sequence[str | None]) -> list[str]:
    return [INVALID if p is None else p for p in pred]


def classification_summary(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support, confusion matrix and invalid rate for one level.

    Args:
        gold: (n,) gold labels (rows without gold must be dropped by the caller).
        pred: (n,) predicted labels, None = unparseable.
        labels: the level's label set (confusion-matrix order; :data:`INVALID` is appended as a column).
    Macro-F1 averages over the labels that occur in ``gold`` (absent classes would add 0s that
    depend on the sample, not on the model).
    """
    n = len(gold)
    if n != len(pred):
        raise ValueError(f"gold and pred differ in length: {n} != {len(pred)}")
    pred_l = _labels_or_invalid(pred)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out | {"accuracy": None, "macro_f1": None, "invalid_rate": None, "per_class": {}, "confusion": None}
    present = [lab for lab in labels if lab in set(gold)]
    p, r, f, s = precision_recall_fscore_support(gold, pred_l, labels=list(labels), zero_division=0)
    cm_labels = list(labels) + [INVALID]
    cm = confusion_matrix(gold, pred_l, labels=cm_labels)
    out["accuracy"] = float(np.mean([g == q for g, q in zip(gold, pred_l)]))
    out["macro_f1"] = float(f1_score(gold, pred_l, labels=present, average="macro", zero_division=0)) if present else None
    out["invalid_rate"] = float(np.mean([q == INVALID for q in pred_l]))
    out["per_class"] = {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }
    out["confusion"] = {"labels": cm_labels, "matrix": cm[: len(labels)].tolist()}  # rows: gold (no invalid gold)
    return out


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of the mean of ``values`` (n,), e.g. 0/1 correctness -> accuracy CI.

    BCa via :func:`scipy.stats.bootstrap`; a constant sample (all correct / all wrong), where
    BCa is undefined, gets the point interval; a NaN from BCa falls back to percentile.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    for method in ("BCa", "percentile"):
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method=method, random_state=rng, vectorized=True, axis=-1)
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return (float(lo), float(hi))
    return (math.nan, math.nan)


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_bootstrap_delta(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95,
    n_resamples: int = 2000, seed: int = 0,
) -> dict[str, float]:
    """Δ = mean(a) − mean(b) over paired rows (n,) with a paired-bootstrap CI (instances resampled jointly)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} != {y.shape}")
    if x.size == 0:
        return {"delta": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    delta = float(x.mean() - y.mean())
    if np.all(x - y == (x - y)[0]):
        return {"delta": delta, "ci_low": delta, "ci_high": delta}
    rng = np.random.default_rng(seed)
    lo = hi = math.nan
    for method in ("BCa", "percentile"):
        res = stats.bootstrap((x, y), _mean_diff, paired=True, confidence_level=confidence,
                              n_resamples=n_resamples, method=method, random_state=rng, vectorized=True, axis=-1)
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            break
    return {"delta": delta, "ci_low": float(lo), "ci_high": float(hi)}


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test on paired correctness: binomial test of the discordant pairs (two-sided).

    Returns b01 (a right, b wrong), b10 (a wrong, b right) and the p-value (1.0 with no discordant pairs).
    """
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("paired samples differ in length")
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if n01 + n10 == 0 else float(stats.binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue)
    return {"a_only": n01, "b_only": n10, "p_value": p}


def calibration(probs: np.ndarray, gold_idx: Sequence[int], n_bins: int = 10) -> dict[str, Any]:
    """ECE (equal-width confidence bins), multi-class Brier score and reliability-diagram data.

    Args:
        probs: (n, k) class probabilities (rows sum to 1).
        gold_idx: (n,) index of the gold class in each row.
    ECE = Σ_b |B_b|/n · |acc(B_b) − conf(B_b)| with confidence = max prob; Brier = mean Σ_k (p_k − y_k)².
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(gold_idx, dtype=int)
    n = p.shape[0]
    if n == 0:
        return {"n": 0, "ece": None, "brier": None, "bins": []}
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds conf in (edges[i], edges[i+1]]; conf == 0 cannot occur (max of a distribution >= 1/k)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for i in range(n_bins):
        sel = which == i
        cnt = int(sel.sum())
        acc = float(correct[sel].mean()) if cnt else None
        mconf = float(conf[sel].mean()) if cnt else None
        if cnt:
            ece += cnt / n * abs(acc - mconf)
        bins.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": cnt,
                     "accuracy": acc, "confidence": mconf})
    return {"n": n, "ece": float(ece), "brier": brier, "bins": bins}


__all__ = ["INVALID", "bootstrap_mean_ci", "calibration", "classification_summary", "mcnemar_exact",
           "paired_bootstrap_delta"]

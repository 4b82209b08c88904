"""Metrics against hand-computed values; bootstrap CI coverage on synthetic Bernoulli data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import (
    INVALID,
    bootstrap_mean_ci,
    calibration,
    classification_summary,
    mcnemar_exact,
    paired_bootstrap_delta,
)
from pipeline.models.scoring import softmax


def test_classification_summary_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", None, "c"]
    s = classification_summary(gold, pred, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["invalid_rate"] == pytest.approx(1 / 5)
    # a: P=1/1 R=1/2 F=2/3; b: P=1/2 R=1/2 F=1/2; c: P=R=F=1
    assert s["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s["confusion"]["labels"] == ["a", "b", "c", INVALID]
    assert s["confusion"]["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]


def test_macro_f1_ignores_classes_absent_from_gold():
    s = classification_summary(["a", "a"], ["a", "a"], ["a", "b", "c"])
    assert s["macro_f1"] == 1.0


def test_mcnemar_exact_by_hand():
    # 6 pairs where only a is right, 1 where only b is: two-sided binomial p = 2 * P(X <= 1 | n=7, 0.5) = 16/128
    a = [True] * 6 + [False] * 1 + [True] * 5
    b = [False] * 6 + [True] * 1 + [True] * 5
    res = mcnemar_exact(a, b)
    assert (res["a_only"], res["b_only"]) == (6, 1)
    assert res["p_value"] == pytest.approx(16 / 128)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_calibration_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    gold = [0, 1, 1, 0]
    cal = calibration(probs, gold, n_bins=10)
    # bins: 0.9 -> (0.8,0.9] acc 1; 0.8 -> (0.7,0.8] acc 0; 0.7 -> (0.6,0.7] acc 1; 0.6 -> (0.5,0.6] acc 1
    expected_ece = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert cal["ece"] == pytest.approx(expected_ece)
    brier = np.mean([(0.9 - 1) ** 2 + 0.1 ** 2, 0.8 ** 2 + (0.2 - 1) ** 2, 0.3 ** 2 + (0.7 - 1) ** 2,
                     (0.6 - 1) ** 2 + 0.4 ** 2])
    assert cal["brier"] == pytest.approx(brier)
    assert sum(b["count"] for b in cal["bins"]) == 4
    perfect = calibration(np.eye(3), [0, 1, 2])
    assert perfect["ece"] == 0.0 and perfect["brier"] == 0.0


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[-1000.0, -1001.0], [0.0, 0.0]]), axis=1)
    assert np.allclose(p.sum(1), 1.0)
    assert p[1, 0] == pytest.approx(0.5)


def test_bootstrap_degenerate_and_empty():
    assert bootstrap_mean_ci([1, 1, 1]) == (1.0, 1.0)
    lo, hi = bootstrap_mean_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    d = paired_bootstrap_delta([1, 1, 0], [1, 1, 0])
    assert d == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_bootstrap_ci_coverage_bernoulli():
    """About 95 % of 200 intervals cover the true accuracy (binomial sd of the rate ~1.5 %)."""
    rng = np.random.default_rng(12345)
    p_true, n = 0.7, 120
    cover = 0
    for rep in range(200):
        lo, hi = bootstrap_mean_ci(rng.random(n) < p_true, n_resamples=600, seed=rep)
        cover += lo <= p_true <= hi
    assert 0.90 <= cover / 200 <= 1.0


def test_paired_delta_ci_covers_true_difference():
    rng = np.random.default_rng(7)
    cover = 0
    for rep in range(100):
        base = rng.random(150) < 0.6
        better = base | (rng.random(150) < 0.25)  # true delta = 0.4 * 0.25 = 0.1
        d = paired_bootstrap_delta(better, base, n_resamples=600, seed=rep)
        cover += d["ci_low"] <= 0.1 <= d["ci_high"]
        assert d["delta"] == pytest.approx(better.mean() - base.mean())
    assert cover / 100 >= 0.88

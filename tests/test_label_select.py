"""label.select: every strategy picks its planted case; determinism; random slice; exclusions."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from label_helpers import distribution, pool_fixture, pred_row

from pipeline.core.taxonomy import LEVELS

from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.label.select import (
    STAGE,
    SelectConfig,
    allocate_quotas,
    choose_batch,
    entropy_score,
    least_confidence,
    margin_score,
    prefill,
    run_select,
    score_sample,
)


@pytest.fixture()
def pool(tmp_path):
    return pool_fixture(tmp_path)


def select(tmp_path, records, preds, *overrides, name="sel"):
    cfg = load_config(SelectConfig, None, [f"out_dir={tmp_path / name}", f"data_dir={records}",
                                           f"predictions={preds}", *overrides])
    result = run_select(cfg)
    return load_jsonl(tmp_path / name / "selection.jsonl"), result.stats


def test_uncertainty_measures_by_hand():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    assert least_confidence(p) == pytest.approx(0.5)
    assert margin_score(p) == pytest.approx(1.0)
    assert entropy_score(p) == pytest.approx(math.log(2) / math.log(4))
    q = np.array([1.0, 0.0, 0.0])
    assert (least_confidence(q), margin_score(q), entropy_score(q)) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("strategy, expected", [
    ("least_confidence", "s01"), ("margin", "s02"), ("entropy", "s03"),
    ("disagreement", "s04"), ("flip", "s05"), ("error", "s06"),
])
def test_each_strategy_picks_its_planted_case(tmp_path, pool, strategy, expected):
    rows, stats = select(tmp_path, *pool, "batch_size=1", f"mix={{{strategy}: 1.0}}")
    assert [r["sample_id"] for r in rows] == [expected]
    assert rows[0]["strategy"] == strategy and rows[0]["score"] > 0
    assert rows[0]["reasons"][strategy] == rows[0]["score"]
    assert stats["per_strategy"] == {strategy: 1}


def test_flip_ignores_label_changing_perturbations(tmp_path, pool):
    rows, _ = select(tmp_path, *pool, "batch_size=3", "mix={flip: 1.0}")
    assert rows[0]["sample_id"] == "s05"
    # s07's answer changed only under a perturbation that may change the label: not a flip
    assert all(r["strategy"] != "flip" for r in rows[1:])
    assert "s07" not in [r["sample_id"] for r in rows if r["strategy"] == "flip"]


def test_unfilled_quota_falls_back(tmp_path, pool):
    rows, stats = select(tmp_path, *pool, "batch_size=4", "mix={error: 0.5, disagreement: 0.5}")
    by = {r["sample_id"]: r["strategy"] for r in rows}
    assert by["s06"] == "error" and by["s04"] == "disagreement"
    assert Counter(by.values())["random_fill"] == 2
    assert len(rows) == 4


def test_default_mix_batch(tmp_path, pool):
    rows, stats = select(tmp_path, *pool, "batch_size=10")
    ids = [r["sample_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 10
    assert all(i.startswith("s") for i in ids)  # dev is not in the pool (splits: [train])
    assert sum(r["in_random_slice"] for r in rows) == stats["quotas"]["random"] == 2
    planted = {"s01", "s02", "s03", "s04", "s05", "s06"}
    assert planted <= set(ids)
    for r in rows:
        assert r["batch_id"] == "batch-001" and r["model_version"].startswith("tuned@")
        assert r["predicted"] == r["gold"] or r["sample_id"] == "s06"
        assert r["rationale"] == "The target closes in and then moves away."  # CoT output minus the answer line
        assert r["text"]


def test_deterministic_for_a_seed(tmp_path, pool):
    a, _ = select(tmp_path, *pool, "batch_size=8", "seed=3", name="a")
    b, _ = select(tmp_path, *pool, "batch_size=8", "seed=3", name="b")
    assert a == b
    slices = {tuple(sorted(r["sample_id"] for r in select(tmp_path, *pool, "batch_size=8", "mix={random: 1.0}",
                                                          f"seed={s}", name=f"r{s}")[0])) for s in range(4)}
    assert len(slices) > 1  # different seeds draw different random slices


def test_random_slice_is_uniform_over_the_pool():
    pool = [f"x{i:02d}" for i in range(20)]
    # heavily skewed uncertainty scores must not bias the random slice
    scores = {"entropy": {sid: (1.0 if i < 5 else 0.0) for i, sid in enumerate(pool)}}
    hits: Counter = Counter()
    n_seeds = 400
    for seed in range(n_seeds):
        for sid, strategy, _, in_slice in choose_batch(pool, scores, {"random": 0.5, "entropy": 0.5}, 8, seed):
            if in_slice:
                assert strategy == "random"
                hits[sid] += 1
    rates = np.array([hits[s] / n_seeds for s in pool])
    assert rates.mean() == pytest.approx(4 / 20)
    assert rates.min() > 0.12 and rates.max() < 0.28


def test_quotas_largest_remainder():
    q = allocate_quotas({"random": 0.2, "entropy": 0.45, "margin": 0.35}, 7)
    assert sum(q.values()) == 7 and q == {"random": 1, "entropy": 3, "margin": 3}


def test_exclusions_and_reviewed_records(tmp_path, pool):
    records, preds = pool
    write_jsonl(tmp_path / "old_selection.jsonl", [{"sample_id": "s01"}, {"sample_id": "s02"}])
    lines = (records / "train.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    assert rec["sample_id"] == "s03"
    rec["provenance"] = [{"reviewer": "alice"}]
    lines[3] = json.dumps(rec)
    (records / "train.jsonl").write_text("\n".join(lines) + "\n")
    rows, stats = select(tmp_path, records, preds, "batch_size=20", f"exclude=[{tmp_path / 'old_selection.jsonl'}]")
    ids = {r["sample_id"] for r in rows}
    assert not ids & {"s01", "s02", "s03"} and stats["pool"] == 17 and len(rows) == 17


def test_bad_mix_and_bad_predictions(tmp_path, pool):
    records, preds = pool
    with pytest.raises(ConfigError, match="unknown strategy"):
        select(tmp_path, records, preds, "mix={cleverness: 1.0}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "s00", "model_tag": "tuned", "parsed": "flyby"}\n')
    with pytest.raises(DataError, match="bad.jsonl, line 1, field 'parsed'"):
        select(tmp_path, records, bad)
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"sample_id": "zzz", "model_tag": "tuned", "parsed": {}}])
    with pytest.raises(DataError, match="no pool"):
        select(tmp_path, records, other)


def test_stage_manifest_and_skip(tmp_path, pool):
    records, preds = pool
    cfg = load_config(SelectConfig, None, [f"out_dir={tmp_path / 'st'}", f"data_dir={records}",
                                           f"predictions={preds}", "batch_size=5"])
    m1 = run_stage(STAGE, cfg)
    assert m1["stats"]["selected"] == 5 and "selection.jsonl" in m1["outputs"]
    m2 = run_stage(STAGE, cfg)
    assert m2["timings"] == m1["timings"]  # skipped: up to date


GOLD = {"motion": "flyby", "operation": "photographing", "task": "observation"}
NONE = {lev: None for lev in LEVELS}


def test_prefill_takes_labels_and_confidence_from_the_probs():
    """The CoT answer did not parse, the label scores did: the task is still pre-filled, from the scores."""
    probs = {lev: distribution(lev, [0.6], GOLD) for lev in LEVELS}
    rows = [pred_row("s", "train", "cot", "generate", NONE, GOLD, output="The range keeps shrinking, so"),
            pred_row("s", "train", "cot", "score", GOLD, GOLD, probs=probs)]
    pre = prefill(score_sample(rows, "cot", "mean"))
    assert pre["predicted"] == GOLD and pre["predicted_source"] == "probs"
    assert pre["confidence"] == pytest.approx(0.6)
    assert pre["rationale"] is None  # it argued for no answer at all
    # the generated answer agrees with the scores: its rationale is shown
    rows[0] = pred_row("s", "train", "cot", "generate", GOLD, GOLD)
    assert prefill(score_sample(rows, "cot", "mean"))["rationale"] == "The target closes in and then moves away."
    # it disagrees: labels still from the scores, the rationale (arguing for other labels) is dropped
    rows[0] = pred_row("s", "train", "cot", "generate", {**GOLD, "motion": "hovering"}, GOLD)
    pre = prefill(score_sample(rows, "cot", "mean"))
    assert pre["predicted"] == GOLD and pre["rationale"] is None


def test_prefill_without_probs_uses_the_generated_answer():
    rows = [pred_row("s", "train", "cot", "generate", {**GOLD, "task": "surveillance"}, GOLD)]
    pre = prefill(score_sample(rows, "cot", "mean"))
    assert pre["predicted"] == {**GOLD, "task": "surveillance"} and pre["predicted_source"] == "generate"
    assert pre["confidence"] is None and pre["rationale"] == "The target closes in and then moves away."
    rows = [pred_row("s", "train", "cot", "generate", NONE, GOLD)]
    pre = prefill(score_sample(rows, "cot", "mean"))
    assert pre["predicted"] == NONE and pre["predicted_source"] is None


def test_selection_rows_prefill_from_probs(tmp_path, pool):
    rows, stats = select(tmp_path, *pool, "batch_size=6")
    assert stats["prefilled_from"] == {"probs": 6} and stats["with_rationale"] == 6
    for r in rows:
        best = {lev: max(r["probs"][lev], key=r["probs"][lev].get) for lev in LEVELS}
        assert r["predicted"] == best and r["predicted_source"] == "probs"
        assert r["confidence"] == pytest.approx(np.mean([max(r["probs"][lev].values()) for lev in LEVELS]), abs=1e-6)

"""The methods table: the methods_tiny profile end to end, std ratios across reports, missing measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval.method_table import (
    MethodTableConfig,
    TableRow,
    add_std_ratios,
    check_config,
    folder_bytes,
    table_cells,
    table_line,
    train_facts,
)
from pipeline.core.profile import load_profile, run_profile

SMALL = ["data_prep.n_samples=48", "prompts.limit=6", "train_ptuning_v2.optim.max_steps=2",
         "evaluate_base.limit=3", "evaluate_ptuning_v2.limit=3"]


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("methods") / "run"
    manifests = run_profile(load_profile("methods_tiny", root), overrides=SMALL)
    return root, manifests


def test_methods_tiny_profile_writes_one_table(tiny_table):
    root, manifests = tiny_table
    assert [m["stage"] for m in manifests][-1] == "method_table"
    table = json.loads((root / "table/method_table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == ["base", "pet-0shot", "pet-2shot", "ptuning_v2"]
    train = json.loads((root / "train_ptuning_v2/manifest.json").read_text())["stats"]
    tuned = rows["ptuning_v2"]
    assert tuned["trainable_params"] == train["trainable_params"] > 0 and tuned["steps"] == 2
    assert tuned["train_tokens_per_s"] == train["tokens_per_s"] and tuned["peak_rss_mb"] == train["peak_rss_mb"]
    files = [f for f in (root / "train_ptuning_v2/final").rglob("*") if f.is_file()]
    assert tuned["checkpoint_bytes"] == sum(f.stat().st_size for f in files) > 0
    assert tuned["method"] == "ptuning_v2" and tuned["n"] == 3
    for name in ("base", "pet-0shot", "pet-2shot"):  # untrained: no parameters, no checkpoint, no train cost
        assert (rows[name]["trainable_params"], rows[name]["checkpoint_bytes"], rows[name]["steps"]) == (0, 0, None)
        assert rows[name]["eval_examples_per_s"] > 0
        assert set(rows[name]["levels"]) == {"motion", "operation", "task"}
    assert rows["base"]["std_ratio"] is None and rows["base"]["std_ratio_reason"] is None
    assert all(rows[n]["std_ratio_reason"] for n in ("pet-0shot", "ptuning_v2"))  # 3 prompts: cells too small
    md = (root / "table/method_table.md").read_text()
    assert md.count("\n| ") == 1 + 4 and "| ptuning_v2 | ptuning_v2 | 3 |" in md
    if not torch.cuda.is_available():
        assert tuned["cuda_peak_mb"] is None  # shown as –
    again = run_profile(load_profile("methods_tiny", root), overrides=SMALL)  # up to date: nothing reruns
    assert [m["timings"] for m in again] == [m["timings"] for m in manifests]


def _report(std: float | None, seeds: list[int], n_cells: int = 3) -> dict:
    agg = {"std_accuracy": std, "n_cells": n_cells, "min_cell_n": 24, "n_cells_too_small": 0}
    clean = {"n": 72, "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "examples_per_s": 2.0,
             "levels": {lvl: {"accuracy": 0.7, "ci_low": 0.6, "ci_high": 0.8} for lvl in ("motion", "operation", "task")}}
    return {"manifest": {"perturbations": {"typos": {}}, "seeds": seeds, "perturbed_fraction": 0.33, "split": "test",
                         "examples": {"plain": {"clean": 72, "perturbed": 96}}},
            "group": {"clean": clean, "aggregates": agg}}


def test_std_ratio_is_formed_across_reports_only_when_they_perturbed_alike():
    reps = {"b": _report(0.04, [0]), "x": _report(0.05, [0]), "y": _report(0.02, [1]), "z": _report(None, [0], 1)}
    rows = [TableRow("base", "b", "base"), TableRow("m1", "x", "tuned", "m1"), TableRow("m2", "y", "tuned"),
            TableRow("m3", "z", "tuned")]
    groups = {r.name: reps[r.report]["group"] for r in rows}
    lines = [table_line(r, groups[r.name], {"method": "lora", "trainable_params": 7} if r.train else None) for r in rows]
    add_std_ratios(lines, groups, {k: {"manifest": v["manifest"]} for k, v in reps.items()}, "base", "plain")
    by = {ln["name"]: ln for ln in lines}
    assert by["m1"]["std_ratio"] == pytest.approx(1.25) and by["m1"]["std_ratio_reason"] is None
    assert by["m2"]["std_ratio"] is None and "perturbed other" in by["m2"]["std_ratio_reason"]
    assert by["m3"]["std_ratio"] is None and "invariant cell" in by["m3"]["std_ratio_reason"]
    assert by["m1"]["method"] == "lora" and by["m1"]["trainable_params"] == 7
    cells = dict(zip(["system", "method"], table_cells([by["m1"]])[0][:2]))
    assert cells == {"system": "m1", "method": "lora"}
    assert table_cells([by["m1"]])[0].count("–") == 6  # bytes, steps, tok/s, seconds, RSS, CUDA: not in the facts


def test_missing_train_measurements_read_as_none(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final/a.bin").write_bytes(b"x" * 10)
    (tmp_path / "manifest.json").write_text(json.dumps({"outputs": {}, "stats": {"steps": 5},
                                                        "config": {"method": {"name": "lora"}}}))
    facts = train_facts(tmp_path, "final")
    assert facts == {"method": "lora", "trainable_params": None, "checkpoint_bytes": 10, "steps": 5,
                     "train_tokens_per_s": None, "train_seconds": None, "peak_rss_mb": None, "cuda_peak_mb": None}
    assert folder_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize(("change", "match"), [
    ({"rows": (TableRow("base", "nope", "base"),)}, "not in reports"),
    ({"rows": (TableRow("base", "r", "base", train="t"),)}, "not in train_runs"),
    ({"baseline": "other"}, "not a row"),
    ({"rows": (TableRow("base", "r", "base"), TableRow("base", "r", "x"))}, "distinct"),
])
def test_bad_table_configs_are_refused(change, match):
    cfg = MethodTableConfig(out_dir=Path("o"), reports={"r": Path("r")}, rows=(TableRow("base", "r", "base"),))
    with pytest.raises(ValueError, match=match):
        check_config(MethodTableConfig(**{**cfg.__dict__, **change}))

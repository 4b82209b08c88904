"""The methods table: the methods_tiny profile end to end, std ratios across reports, missing measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval.method_table import (
    README_END,
    README_START,
    MethodTableConfig,
    TableRow,
    add_std_ratios,
    check_config,
    dev_curve,
    first_reaching,
    folder_bytes,
    paired_test,
    readme_section,
    replace_readme_section,
    table_cells,
    table_line,
    train_facts,
)
from pipeline.core.profile import load_profile, run_profile
from pipeline.train.sweep import better

METHODS = ["ptuning_v2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora"]
SMALL = ["data_prep.n_samples=48", "prompts.limit=6", "evaluate_base.limit=3",
         *[f"evaluate_{m}.limit=3" for m in METHODS]]


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("methods") / "run"
    manifests = run_profile(load_profile("methods_tiny", root), overrides=SMALL)
    return root, manifests


def test_methods_tiny_profile_writes_one_table(tiny_table):
    root, manifests = tiny_table
    assert [m["stage"] for m in manifests][-1] == "method_table"
    assert [m["stage"] for m in manifests].count("train_sweep") == len(METHODS)
    table = json.loads((root / "table/method_table.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert list(rows) == ["base", "pet-0shot", "pet-2shot", *METHODS]
    for m in METHODS:
        train = json.loads((root / f"train_{m}/manifest.json").read_text())["stats"]
        tuned = rows[m]
        assert tuned["method"] == m and tuned["n"] == 3 and tuned["steps"] == 4  # the same budget for every method
        assert tuned["trainable_params"] == train["trainable_params"] > 0
        assert tuned["train_tokens_per_s"] == train["tokens_per_s"] and tuned["peak_rss_mb"] == train["peak_rss_mb"]
        files = [f for f in (root / f"train_{m}/final").rglob("*") if f.is_file()]
        assert tuned["checkpoint_bytes"] == sum(f.stat().st_size for f in files) > 0
        # the sweep: every candidate scored on dev, the chosen one's setting is the one trained
        sweep = tuned["sweep"]
        assert sweep == json.loads((root / f"train_{m}/sweep.json").read_text())
        assert len(sweep["candidates"]) >= 2 and all(c["dev_acc"] is not None for c in sweep["candidates"])
        chosen = next(c for c in sweep["candidates"] if c["name"] == sweep["chosen"])
        assert tuned["chosen"] == chosen["name"] and tuned["learning_rate"] == chosen["learning_rate"]
        assert tuned["cls_head"] == chosen["cls_head"] and not (root / f"train_{m}/sweep").exists()
        # dev checks every 2 of 4 steps -> the learning curve; train seconds exclude the checks and increase
        assert [c["step"] for c in tuned["dev_curve"]] == [2, 4]
        assert 0 < tuned["dev_curve"][0]["train_seconds"] <= tuned["dev_curve"][1]["train_seconds"]
        reach = next((c for c in tuned["dev_curve"] if c["dev_acc"] >= 0.9), None)
        assert tuned["time_to_target"] == (reach and {"step": reach["step"], "train_seconds": reach["train_seconds"]})
        # PEFT's implementation timed beside ours
        assert tuned["peft"]["peft"] and tuned["peft_step_ratio"] > 0
        assert len(tuned["peft"]["all_seconds_per_step"]["peft"]) == 2
        # paired with P-Tuning v2 on the same 3 prompts
        if m != "ptuning_v2":
            assert tuned["paired_vs_reference"]["n_paired"] == 3
        assert set(tuned["cells"]) and all(c["n"] >= 1 for c in tuned["cells"].values())
    assert rows["ptuning_v2"]["paired_vs_reference"] is None and rows["base"]["paired_vs_reference"]["n_paired"] == 3
    for name in ("base", "pet-0shot", "pet-2shot"):  # untrained: no parameters, no checkpoint, no train cost
        assert (rows[name]["trainable_params"], rows[name]["checkpoint_bytes"], rows[name]["steps"]) == (0, 0, None)
        assert rows[name]["eval_examples_per_s"] > 0 and rows[name]["sweep"] is None
        assert set(rows[name]["levels"]) == {"motion", "operation", "task"}
    assert rows["ptuning_v2"]["std_ratio"] is None and rows["ptuning_v2"]["std_ratio_reason"] is None  # baseline
    md = (root / "table/method_table.md").read_text()
    main = md.split("\n\n")[1]
    assert main.count("\n| ") == 8 and "| ptuning_v2 | ptuning_v2 |" in main
    for section in ("## Robustness cells", "## Sweep (dev)", "## Ours vs PEFT", "## Learning curve"):
        assert section in md
    assert md.count("**chosen**") == len(METHODS)
    assert (root / "table/dev_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if not torch.cuda.is_available():
        assert rows["ptuning_v2"]["cuda_peak_mb"] is None  # shown as –
    again = run_profile(load_profile("methods_tiny", root), overrides=SMALL)  # up to date: nothing reruns
    assert [m["timings"] for m in again] == [m["timings"] for m in manifests]


def test_readme_section_renders_from_the_table(tiny_table):
    root, _ = tiny_table
    data = json.loads((root / "table/method_table.json").read_text())
    run = {"command": "python -m pipeline run methods_tiny", "machine": "test box", "date": "2026-12-07",
           "wall": "1 min"}
    section = readme_section(data, run)
    assert section.startswith(README_START) and section.rstrip().endswith(README_END)
    assert "## Choosing a tuning method" in section and "test box" in section
    assert all(f"`{m}` (" in section for m in METHODS)
    text = "# Title\n\nintro\n"
    once = replace_readme_section(text, section)
    assert once.startswith(text.rstrip("\n")) and once.count(README_START) == 1
    assert replace_readme_section(once, section) == once  # replacing again changes nothing
    assert replace_readme_section(once + "tail\n", readme_section(data)).endswith("tail\n")


def test_dev_curve_takes_the_dev_checks_out_of_the_clock(tmp_path):
    rows = [{"kind": "train", "step": 1, "elapsed": 2.0}, {"kind": "train", "step": 2, "elapsed": 4.0},
            {"kind": "eval", "step": 2, "dev_acc": 0.5, "dev_loss": 1.0, "elapsed": 10.0},
            {"kind": "train", "step": 3, "elapsed": 12.0}, {"kind": "train", "step": 4, "elapsed": 14.0},
            {"kind": "eval", "step": 4, "dev_acc": 0.95, "dev_loss": 0.5, "elapsed": 20.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = dev_curve(tmp_path)
    assert [(c["step"], c["train_seconds"]) for c in curve] == [(2, 4.0), (4, 8.0)]
    assert first_reaching(curve, 0.9) == {"step": 4, "train_seconds": 8.0}
    assert first_reaching(curve, 0.99) is None


def test_paired_test_uses_shared_prompts_only():
    a = {"x": True, "y": True, "z": False, "only_a": True}
    b = {"x": False, "y": True, "z": False}
    assert paired_test(a, b) == {"n_paired": 3, "a_only": 1, "b_only": 0, "p_value": 1.0}
    assert paired_test(a, {})["p_value"] is None


def test_sweep_choice_rule():
    def pt(acc, levels, loss, cls=False):
        return {"dev_acc": acc, "dev_loss": loss, "cls_head": cls,
                **{f"dev_acc_{lvl}": v for lvl, v in zip(("motion", "operation", "task"), levels)}}
    assert better(pt(0.1, (0, 0, 0), 9.0), pt(0.0, (1, 1, 1), 1.0))  # joint first
    assert better(pt(0.0, (0.5, 0, 0), 9.0), pt(0.0, (0.2, 0, 0), 1.0))  # then mean per level
    assert better(pt(0.0, (0, 0, 0), 1.0), pt(0.0, (0, 0, 0), 2.0))  # then loss, same loss kind
    assert not better(pt(0.0, (0, 0, 0), 1.0, cls=True), pt(0.0, (0, 0, 0), 9.0))  # losses of other kinds: first stays


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
    # setting, paired test, bytes, steps, tok/s, seconds, time to target, PEFT ratio, RSS, CUDA: not in the facts
    assert table_cells([by["m1"]])[0].count("–") == 10


def test_missing_train_measurements_read_as_none(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final/a.bin").write_bytes(b"x" * 10)
    (tmp_path / "manifest.json").write_text(json.dumps({"outputs": {}, "stats": {"steps": 5},
                                                        "config": {"method": {"name": "lora"}}}))
    facts = train_facts(tmp_path, "final")
    assert {k: facts[k] for k in ("method", "trainable_params", "checkpoint_bytes", "steps", "train_tokens_per_s",
                                  "train_seconds", "peak_rss_mb", "cuda_peak_mb", "sweep", "peft", "peft_step_ratio")} == {
        "method": "lora", "trainable_params": None, "checkpoint_bytes": 10, "steps": 5, "train_tokens_per_s": None,
        "train_seconds": None, "peak_rss_mb": None, "cuda_peak_mb": None, "sweep": None, "peft": None,
        "peft_step_ratio": None}
    assert facts["dev_curve"] == []  # no metrics.jsonl
    assert folder_bytes(tmp_path / "missing") is None


@pytest.mark.parametrize(("change", "match"), [
    ({"rows": (TableRow("base", "nope", "base"),)}, "not in reports"),
    ({"rows": (TableRow("base", "r", "base", train="t"),)}, "not in train_runs"),
    ({"baseline": "other"}, "not a row"),
    ({"reference": "other"}, "not a row"),
    ({"rows": (TableRow("base", "r", "base"), TableRow("base", "r", "x"))}, "distinct"),
])
def test_bad_table_configs_are_refused(change, match):
    cfg = MethodTableConfig(out_dir=Path("o"), reports={"r": Path("r")}, rows=(TableRow("base", "r", "base"),))
    with pytest.raises(ValueError, match=match):
        check_config(MethodTableConfig(**{**cfg.__dict__, **change}))


@pytest.mark.slow
def test_train_sweep_on_the_embedded_model(tmp_path):
    """The CPU profile's train_sweep step on SmolLM2 (bf16, DeepSpeed), a few steps: sweep, dev checks, PEFT."""
    root = tmp_path / "run"
    tiny = ["data_prep.n_samples=64", "prompts.limit=8", "train_ptuning_v2.optim.max_steps=2",
            "train_ptuning_v2.eval.steps=1", "train_ptuning_v2.eval.accuracy_rows=2", "train_ptuning_v2.eval.loss_rows=2",
            "train_ptuning_v2.sweep.steps=1", "train_ptuning_v2.sweep.dev_rows=2", "train_ptuning_v2.sweep.loss_rows=2",
            "train_ptuning_v2.peft.rounds=1", "train_ptuning_v2.data.max_train_rows=16",
            "train_ptuning_v2.data.max_dev_rows=4"]
    run_profile(load_profile("methods", root), steps=["data_prep", "prompts", "train_ptuning_v2"], overrides=tiny)
    stats = json.loads((root / "train_ptuning_v2/manifest.json").read_text())["stats"]
    assert stats["steps"] == 2 and stats["engine"] == "deepspeed" and stats["dtype"] == "bfloat16"
    assert [c["name"] for c in stats["sweep"]["candidates"]] == ["lr0.01", "lr0.03", "lr0.03-cls"]
    assert stats["peft"]["peft"] == "PrefixTuning", stats["peft"]  # PEFT built and timed on the real model
    assert stats["peft"]["step_time_ratio_peft_over_ours"] > 0
    assert any("top 15 layers" in d for d in stats["peft"]["differences"])
    assert [c["step"] for c in dev_curve(root / "train_ptuning_v2")] == [1, 2]

"""The demo_cot profile's wiring end to end at tiny scale (pipeline/profiles/tiny_cot.yaml): a plain prefix and a CoT
prefix trained, the CoT one evaluated by generation (faithfulness marked, new tokens counted, perturbation cells),
both side by side in one compare report with a paired test."""

from __future__ import annotations

import json

import torch

from pipeline.core.config import load_config
from pipeline.core.profile import load_profile, run_profile
from pipeline.core.taxonomy import LEVELS


def test_tiny_cot_profile_end_to_end(tmp_path):
    torch.set_num_threads(1)
    profile = load_profile("tiny_cot", tmp_path / "run")
    overrides = ["data_prep.n_samples=48", "prompts.limit=6", "train.optim.max_steps=2", "train_cot.optim.max_steps=2",
                 "evaluate.limit=3", "evaluate_cot.limit=3", "evaluate.perturbations=[]",
                 "evaluate_cot.perturbations=[{name: noise, severities: [1]}]", "evaluate_cot.max_new_tokens_cot=12",
                 "evaluate_cot.min_cell_n=1"]
    manifests = run_profile(profile, overrides=overrides)
    assert [m["stage"] for m in manifests] == ["data_prep", "prompts", "train", "evaluate", "train", "evaluate",
                                               "compare"]
    cot_dir = tmp_path / "run/evaluate_cot"
    rows = [json.loads(x) for x in (cot_dir / "predictions.jsonl").read_text().splitlines()]
    assert {(r["model_tag"], r["variant"], r["mode"]) for r in rows} == {("tuned_cot", "cot", "generate")}
    assert {r["perturbation"] for r in rows} == {"clean", "noise"}
    for r in rows:  # every generated CoT reply marked, its new tokens counted (at most the budget)
        assert set(r["faithfulness"]) >= {"faithful", "consistent", "claims", "errors", "notes"}
        assert 0 <= r["new_tokens"] <= 12
    report = json.loads((cot_dir / "report.json").read_text())
    (group,) = report["groups"]
    faith = group["faithfulness"]
    assert faith["clean"]["n"] == 3 and faith["perturbed"]["n"] >= 1
    assert faith["clean"]["faithful_rate"] == sum(r["faithfulness"]["faithful"] for r in rows
                                                  if r["perturbation"] == "clean") / 3
    assert group["clean"]["new_tokens_per_s"] > 0
    assert "Rationale faithfulness" in (cot_dir / "report.md").read_text()
    assert "Rationale faithfulness" in (cot_dir / "report.html").read_text()
    compare = json.loads((tmp_path / "run/compare_cot/compare.json").read_text())
    lines = {(ln["report"], ln["model_tag"]): ln for ln in compare["lines"]}
    assert set(lines) == {("plain", "tuned"), ("cot", "tuned_cot")}
    cot = lines[("cot", "tuned_cot")]
    assert cot["faithful_rate"] == faith["clean"]["faithful_rate"] and cot["parse_rate"] is not None
    assert all(set(cot["levels"][lvl]) == {"accuracy", "ci_low", "ci_high"} for lvl in LEVELS)
    (pair,) = compare["pairs"]
    assert pair["a"] == "cot/tuned_cot/cot/generate" and pair["b"] == "plain/tuned/plain/score"
    assert pair["n"] == 3 and "mcnemar_p" in pair
    assert "Paired tests" in (tmp_path / "run/compare_cot/compare.md").read_text()


def test_shipped_demo_cot_configs_use_the_demo_levers():
    from pipeline.train.config import TrainConfig

    plain = load_config(TrainConfig, "pipeline/configs/train_demo.yaml")
    cot = load_config(TrainConfig, "pipeline/configs/train_demo_cot.yaml")
    assert cot.data.variant == "cot" and plain.data.variant == "plain"
    assert cot.model == plain.model and cot.model.dtype == "bfloat16" and cot.model.system_prompt == ""
    assert cot.method == plain.method  # text init from the same rule text, top-15-layer prefix
    profile = load_profile("demo_cot")
    steps = {s.name: s for s in profile.steps}
    assert str(steps["train_cot"].config).endswith("train_demo_cot.yaml")
    assert steps["compare_cot"].inputs == {"reports.plain": "evaluate", "reports.cot": "evaluate_cot"}

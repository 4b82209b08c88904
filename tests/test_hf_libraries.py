"""The brief's Hugging Face libraries where they serve: records / prompt splits as a ``DatasetDict`` and the intent
metrics as a local ``evaluate`` module, both offline (local files only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from record_fixtures import write_fixture_dirs

    root = tmp_path_factory.mktemp("hf")
    for split in ("train", "dev", "test"):
        records, prompts = write_fixture_dirs(root / "d", n=6, variants=("plain",), split=split)
    return records, prompts, root


def test_records_and_prompts_load_as_a_dataset_dict(dirs, monkeypatch, tmp_path):
    from prompts_cot.hf_datasets import prompts_dataset, records_dataset
    from pipeline.core.io import DataError, load_jsonl

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    records, prompts, _ = dirs
    rec = records_dataset(records)
    assert set(rec) == {"train", "dev", "test"}
    for split in rec:
        want = load_jsonl(records / f"{split}.jsonl")
        assert rec[split]["sample_id"] == [r["sample_id"] for r in want]
        assert rec[split][0]["labels"] == want[0]["labels"]
    rows = prompts_dataset(prompts, "plain")
    assert rows["test"]["prompt"] == [r["prompt"] for r in load_jsonl(prompts / "plain" / "test.jsonl")]
    with pytest.raises(DataError, match="no train/dev/test.jsonl"):
        prompts_dataset(prompts, "cot")


def test_the_intent_metric_loads_offline_and_gives_the_report_numbers(dirs):
    import evaluate

    from eval.config import EvalConfig
    from eval.stage import STAGE
    from pipeline.core.answer import format_answer
    from pipeline.core.config import load_config
    import json

    from pipeline.core.io import load_jsonl
    from pipeline.core.stage import run_stage

    records, prompts, root = dirs
    metric = evaluate.load(str(ROOT / "eval" / "intent_metric.py"))
    cfg = load_config(EvalConfig, "eval/configs/tiny.yaml", [
        f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={root / 'eval'}", "variants=[plain]",
        "perturbations=[]", "perturbed_fraction=0.0", "limit=6", "modes=[score]"])
    run_stage(STAGE, cfg)
    rows = load_jsonl(root / "eval" / "predictions.jsonl")
    got = metric.compute(predictions=[r["output"] for r in rows],
                         references=[format_answer(r["gold"], r["lang"]) for r in rows])
    clean = json.loads((root / "eval" / "report.json").read_text())["groups"][0]["clean"]
    assert got["n"] == clean["n"] == 6
    assert (got["joint_accuracy"], got["joint_ci_low"], got["joint_ci_high"], got["invalid_rate"]) == (
        clean["accuracy"], clean["ci_low"], clean["ci_high"], clean["invalid_rate"])
    for lvl in ("motion", "operation", "task"):
        assert got[f"{lvl}_accuracy"] == clean["levels"][lvl]["accuracy"]
        assert got[f"{lvl}_macro_f1"] == clean["levels"][lvl]["macro_f1"]


def test_the_intent_metric_counts_right_wrong_and_unparsable_replies():
    import evaluate

    metric = evaluate.load(str(ROOT / "eval" / "intent_metric.py"))
    gold = "Answer: motion=hovering; operation=photographing; task=detection"
    out = metric.compute(predictions=[gold, "Answer: motion=flyby; operation=photographing; task=detection",
                                      "I cannot tell.", "Reasoning first.\n" + gold],
                         references=[gold] * 4, n_resamples=200)
    assert out["joint_accuracy"] == 0.5 and out["motion_accuracy"] == 0.5 and out["operation_accuracy"] == 0.75
    assert out["invalid_rate"] == 0.25

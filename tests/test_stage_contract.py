"""The stage contract through pipeline.core.stage.run_stage, exercised with the data_prep stage."""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.stage import STAGE, DataPrepConfig
from pipeline.core.config import load_config
from pipeline.core.stage import MANIFEST, run_stage

ROOT = Path(__file__).resolve().parent.parent


def make_cfg(out_dir: Path, *overrides: str) -> DataPrepConfig:
    return load_config(DataPrepConfig, ROOT / "data_prep/configs/tiny.yaml",
                       [f"out_dir={out_dir}", "n_samples=16", "variants_per_scenario=1", *overrides])


def started(out_dir: Path) -> float:
    return json.loads((out_dir / MANIFEST).read_text())["timings"]["started_unix"]


def test_manifest_records_config_inputs_outputs_and_stats(tmp_path):
    data = tmp_path / "user.jsonl"
    data.write_text(json.dumps({"text": "t", "motion": "flyby"}) + "\n", encoding="utf-8")
    cfg = make_cfg(tmp_path / "out", "mode=both", f"imports=[{{path: {data}}}]")
    manifest = run_stage(STAGE, cfg)
    assert manifest["stage"] == "data_prep" and manifest["config"]["n_samples"] == 16
    assert set(manifest["inputs"]) == {str(data)}
    assert {"train.jsonl", "dev.jsonl", "test.jsonl", "trajectories/train.npz"} <= set(manifest["outputs"])
    assert manifest["stats"]["imported"] == {str(data): 1}
    assert sum(manifest["stats"]["rows"].values()) == 17


def test_second_run_is_skipped_force_reruns(tmp_path):
    cfg = make_cfg(tmp_path / "out")
    run_stage(STAGE, cfg)
    first = started(tmp_path / "out")
    run_stage(STAGE, cfg)
    assert started(tmp_path / "out") == first
    run_stage(STAGE, cfg, force=True)
    assert started(tmp_path / "out") != first


def test_changed_config_reruns(tmp_path):
    run_stage(STAGE, make_cfg(tmp_path / "out"))
    first = started(tmp_path / "out")
    run_stage(STAGE, make_cfg(tmp_path / "out", "seed=3"))
    assert started(tmp_path / "out") != first


def test_changed_input_reruns(tmp_path):
    data = tmp_path / "user.jsonl"
    data.write_text(json.dumps({"text": "t", "motion": "flyby"}) + "\n", encoding="utf-8")
    cfg = make_cfg(tmp_path / "out", "mode=import", f"imports=[{{path: {data}}}]")
    run_stage(STAGE, cfg)
    first = started(tmp_path / "out")
    run_stage(STAGE, cfg)
    assert started(tmp_path / "out") == first
    data.write_text(json.dumps({"text": "t2", "motion": "hovering"}) + "\n", encoding="utf-8")
    run_stage(STAGE, cfg)
    assert started(tmp_path / "out") != first


def test_tampered_or_missing_output_reruns(tmp_path):
    out = tmp_path / "out"
    cfg = make_cfg(out)
    run_stage(STAGE, cfg)
    first = started(out)
    original = (out / "train.jsonl").read_bytes()
    (out / "train.jsonl").write_text("tampered\n", encoding="utf-8")
    run_stage(STAGE, cfg)
    second = started(out)
    assert second != first and (out / "train.jsonl").read_bytes() == original
    (out / "trajectories" / "dev.npz").unlink()
    run_stage(STAGE, cfg)
    assert started(out) != second and (out / "trajectories" / "dev.npz").exists()

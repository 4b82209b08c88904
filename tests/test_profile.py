"""Run profiles: wiring, validation and the runner end to end on the tiny profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.core.config import ConfigError
from pipeline.core.profile import Profile, Step, check_profile, load_profile, run_profile, step_command

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_prints_the_wired_stage_commands(capsys):
    assert main(["run", "demo", "--dry-run", "--run-root", "/tmp/r", "train.optim.max_steps=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[3] for ln in lines] == ["data_prep", "prompts", "train", "evaluate", "data_prep", "prompts",
                                               "evaluate", "compare"]
    assert lines[2].endswith("out_dir=/tmp/r/train prompts_dir=/tmp/r/prompts optim.max_steps=3")
    assert "data_dir=/tmp/r/data_prep prompts_dir=/tmp/r/prompts train_dir=/tmp/r/train" in lines[3]
    assert "reports.generalisation=/tmp/r/evaluate_general reports.in_distribution=/tmp/r/evaluate" in lines[7]


@pytest.mark.parametrize(("steps", "match"), [
    ((Step("a", Path("x.yaml"), stage="teleport"),), "unknown stage"),
    ((Step("prompts", Path("x.yaml"), inputs={"data_dir": "data_prep"}),), "earlier step"),
    ((Step("data_prep", Path("x.yaml")), Step("data_prep", Path("y.yaml"))), "unique"),
])
def test_bad_profiles_are_config_errors(steps, match):
    with pytest.raises(ConfigError, match=match):
        check_profile(Profile(Path("runs/x"), steps))


def test_unknown_step_in_an_override_is_an_exit_2_error(capsys):
    assert main(["run", "demo", "--dry-run", "trian.optim.max_steps=3"]) == 2
    assert "must start with a step name" in capsys.readouterr().err


def test_step_command_names_the_stage_group():
    profile = Profile(Path("r"), (Step("select", Path("pipeline/label/configs/select_demo.yaml"), stage="label.select"),))
    assert step_command(profile, profile.steps[0]).startswith("python -m pipeline label select --config ")


def test_tiny_profile_runs_end_to_end_and_is_then_up_to_date(tmp_path):
    torch.set_num_threads(1)
    profile = load_profile("tiny", tmp_path / "run")
    overrides = ["data_prep.n_samples=48", "prompts.limit=6", "train.optim.max_steps=2", "evaluate.limit=2",
                 "evaluate.modes=[score]", "evaluate.perturbations=[{name: typos, severities: [1]}]"]
    manifests = run_profile(profile, overrides=overrides)
    assert [m["stage"] for m in manifests] == ["data_prep", "prompts", "train", "evaluate"]
    evaluate = manifests[-1]
    assert str(tmp_path / "run/train/best/prefix.safetensors") in evaluate["inputs"]
    rows = [json.loads(x) for x in (tmp_path / "run/evaluate/predictions.jsonl").read_text().splitlines()]
    assert {r["model_tag"] for r in rows} == {"base", "tuned"}
    again = run_profile(profile, overrides=overrides)  # every step is up to date: skipped, same manifests
    assert [m["timings"] for m in again] == [m["timings"] for m in manifests]

"""Fault injection: kill -9 every stage at chosen points, corrupt each kind of output, then rerun.

A killed run is a forked child that SIGKILLs itself when it passes a named point
(``PIPELINE_FAULT=<point>[#k]``, :func:`pipeline.core.io.fault_point`): no cleanup handler runs, as
in a real crash. Points: ``io.before_replace`` (a finished temp file not yet renamed: the k-th
file a stage writes), ``stage.before_commit`` / ``stage.mid_commit`` / ``stage.before_manifest`` /
``stage.after_manifest`` (the swap of the staged set), ``train.step`` (after an optimizer step and
its checkpoint) and ``evaluate.chunk`` (after answers were appended to the resume cache).

After each fault: the next stage either refuses the folder (exit-2 DataError) or reads a complete
set, never a mix; the rerun of the killed stage recovers to exactly what an uninterrupted run writes.
Everything is tiny (32 records, tiny:llama, 4 train steps) so the module stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import TINY_YAML, train_losses

import pipeline.models.scoring as scoring
from data_prep.stage import STAGE as DATA_PREP
from data_prep.stage import DataPrepConfig
from eval.compare import STAGE as COMPARE
from eval.compare import CompareConfig
from eval.config import EvalConfig
from eval.stage import STAGE as EVALUATE
from pipeline.core.config import load_config
from pipeline.core.io import FAULT_ENV, DataError, load_jsonl
from pipeline.core.stage import MANIFEST, STAGING, TRASH, Stage, check_inputs, expand_files, run_stage
from pipeline.predict import STAGE as PREDICT
from pipeline.predict import PredictConfig
from pipeline.train import STAGE as TRAIN
from pipeline.train.config import TrainConfig
from prompts_cot.stage import STAGE as PROMPTS
from prompts_cot.stage import PromptsConfig

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ helpers
def run_killed(stage: Stage, cfg: Any, point: str, force: bool = False) -> None:
    """Run ``stage`` in a forked child that is SIGKILLed at ``point``; fail if it never got there."""
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, just the stage until the kill
        code = 0
        try:
            os.environ[FAULT_ENV] = point
            logging.disable(logging.CRITICAL)
            run_stage(stage, cfg, force=force)
        except BaseException:  # noqa: BLE001 - report "did not die at the point" to the parent
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"{stage.name} was not killed at {point} (exit status {status})"


def data_cfg(out: Path, *extra: str) -> DataPrepConfig:
    return load_config(DataPrepConfig, ROOT / "data_prep/configs/tiny.yaml",
                       [f"out_dir={out}", "n_samples=32", "variants_per_scenario=1", *extra])


def prompts_cfg(data: Path, out: Path) -> PromptsConfig:
    return load_config(PromptsConfig, ROOT / "prompts_cot/configs/tiny.yaml",
                       [f"data_dir={data}", f"out_dir={out}", "limit=4", "variants=[{name: plain, cot: false}]"])


def train_cfg(prompts: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, TINY_YAML, [f"prompts_dir={prompts}", f"out_dir={out}", "optim.max_steps=4",
                                                "checkpoint.save_steps=2", "eval.steps=2", "eval.accuracy_rows=0",
                                                "checkpoint.resume=auto", *extra])


def eval_cfg(data: Path, prompts: Path, train: Path, out: Path, *extra: str) -> EvalConfig:
    return load_config(EvalConfig, ROOT / "eval/configs/tiny.yaml",
                       [f"data_dir={data}", f"prompts_dir={prompts}", f"train_dir={train}", f"out_dir={out}",
                        "variants=[plain]", "modes=[score]", "perturbations=[]", "chunk_size=2", "limit=4",
                        "bootstrap_resamples=20", "models=[{tag: tuned, spec: 'tiny:llama', checkpoint: final}]",
                        "baseline_tag=tuned", *extra])


def contents(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (the manifest, with its timings, and bookkeeping left out)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in expand_files([out])
            if p.name != ".lock" and not str(p.relative_to(out)).startswith(".")}


def no_leftovers(out: Path) -> None:
    assert not (out / STAGING).exists() and not (out / TRASH).exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "stale temp files left"


def downstream_accepts(stage: Stage, cfg: Any) -> bool:
    """True when ``stage`` would read its inputs as they are; False when it refuses them with a DataError."""
    try:
        check_inputs(stage, cfg, expand_files(stage.inputs(cfg)))
    except DataError:
        return False
    return True


def without_latency(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted data_prep -> prompts -> train -> evaluate outputs to compare every recovery with."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reference")
    run_stage(DATA_PREP, data_cfg(root / "data"))
    run_stage(PROMPTS, prompts_cfg(root / "data", root / "prompts"))
    run_stage(TRAIN, train_cfg(root / "prompts", root / "train"))
    run_stage(EVALUATE, eval_cfg(root / "data", root / "prompts", root / "train", root / "eval"))
    return {name: root / name for name in ("data", "prompts", "train", "eval")}


# ---------------------------------------------------------------------------------------- data_prep
FIRST_RUN_POINTS = ["io.before_replace#1", "io.before_replace#4", "stage.before_commit", "stage.mid_commit#2",
                    "stage.before_manifest"]


@pytest.mark.parametrize("point", FIRST_RUN_POINTS)
def test_data_prep_killed_on_a_first_run_is_refused_then_recovered(reference, tmp_path, point):
    out = tmp_path / "data"
    run_killed(DATA_PREP, data_cfg(out), point)
    assert not downstream_accepts(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))
    run_stage(DATA_PREP, data_cfg(out))
    assert contents(out) == contents(reference["data"])
    no_leftovers(out)
    assert downstream_accepts(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))


def seeds_seen(out: Path) -> set[str]:
    """The seeds in the sample ids of every records file (one seed = one consistent set)."""
    return {r["sample_id"].split("-")[1] for split in ("train", "dev", "test") for r in load_jsonl(out / f"{split}.jsonl")}


@pytest.mark.parametrize("point, outcome", [
    ("io.before_replace#2", "old"), ("stage.before_commit", "old"), ("stage.mid_commit#1", "refused"),
    ("stage.mid_commit#3", "refused"), ("stage.before_manifest", "refused"), ("stage.after_manifest", "new"),
])
def test_data_prep_rerun_killed_leaves_the_old_set_the_new_set_or_a_refused_folder(reference, tmp_path, point,
                                                                                   outcome):
    out = tmp_path / "data"
    shutil.copytree(reference["data"], out)
    run_killed(DATA_PREP, data_cfg(out, "seed=1"), point)
    accepted = downstream_accepts(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))
    assert accepted == (outcome != "refused")
    if accepted:  # never a mix: the records, the trajectories and the manifest are of one run
        manifest = json.loads((out / MANIFEST).read_text())
        assert seeds_seen(out) == {f"s{manifest['config']['seed']}"} == {"s0" if outcome == "old" else "s1"}
        if outcome == "old":
            assert contents(out) == contents(reference["data"])
    run_stage(DATA_PREP, data_cfg(out, "seed=1"))
    assert seeds_seen(out) == {"s1"}
    no_leftovers(out)


@pytest.mark.parametrize("damage", ["truncate_records", "truncate_npz", "delete_npz", "garble_manifest"])
def test_data_prep_corrupted_output_is_refused_downstream_and_repaired(reference, tmp_path, damage):
    out = tmp_path / "data"
    shutil.copytree(reference["data"], out)
    target = {"truncate_records": out / "train.jsonl", "truncate_npz": out / "trajectories/train.npz",
              "delete_npz": out / "trajectories/dev.npz", "garble_manifest": out / MANIFEST}[damage]
    if damage == "delete_npz":
        target.unlink()
    elif damage == "garble_manifest":
        target.write_text('{"stage": "data_prep", "outp')
    elif damage == "truncate_records":  # torn in its second line
        data = target.read_bytes()
        target.write_bytes(data[: data.index(b"\n") + 40])
    else:
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2 + 7])
    with pytest.raises(DataError):  # prompts reads train.jsonl itself; the others are caught by the input check
        run_stage(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))
    assert not (tmp_path / "prompts").exists()
    run_stage(DATA_PREP, data_cfg(out))
    assert contents(out) == contents(reference["data"])


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("point", ["io.before_replace#2", "stage.mid_commit#1"])
def test_prompts_killed_is_refused_by_train_then_recovered(reference, tmp_path, point):
    out = tmp_path / "prompts"
    run_killed(PROMPTS, prompts_cfg(reference["data"], out), point)
    assert not downstream_accepts(TRAIN, train_cfg(out, tmp_path / "train"))
    run_stage(PROMPTS, prompts_cfg(reference["data"], out))
    assert contents(out) == contents(reference["prompts"])
    no_leftovers(out)


# -------------------------------------------------------------------------------------------- train
def test_train_killed_mid_run_resumes_exactly(reference, tmp_path):
    out = tmp_path / "train"
    run_killed(TRAIN, train_cfg(reference["prompts"], out), "train.step#3")  # after step 3: step-2 checkpoint saved
    assert (out / STAGING / "checkpoints/step-2/checkpoint.json").exists()
    assert not downstream_accepts(EVALUATE, eval_cfg(reference["data"], reference["prompts"], out, tmp_path / "e"))
    manifest = run_stage(TRAIN, train_cfg(reference["prompts"], out))
    assert manifest["stats"]["resumed_from"].endswith("step-2")
    assert train_losses(out) == train_losses(reference["train"])
    assert (out / "final/prefix.safetensors").read_bytes() == (reference["train"] / "final/prefix.safetensors").read_bytes()
    no_leftovers(out)


def test_train_killed_while_writing_a_checkpoint_never_serves_it(reference, tmp_path):
    out = tmp_path / "train"
    # atomic writes up to step 2: metrics (step 1), best/ (4 files), metrics, then the step-2 checkpoint: prefix,
    # prefix config, trainer state (the 9th write) ... -> killed with the checkpoint half written
    run_killed(TRAIN, train_cfg(reference["prompts"], out), "io.before_replace#9")
    assert (out / STAGING / "checkpoints/.step-2.tmp").is_dir()
    assert not list((out / STAGING / "checkpoints").glob("step-*"))
    manifest = run_stage(TRAIN, train_cfg(reference["prompts"], out))
    assert manifest["stats"]["resumed_from"] is None and manifest["stats"]["steps"] == 4
    assert train_losses(out) == train_losses(reference["train"])
    no_leftovers(out)


@pytest.mark.parametrize("point", ["stage.mid_commit#2", "stage.before_manifest"])
def test_train_killed_mid_commit_is_refused_by_evaluate_then_recovered(reference, tmp_path, point):
    out = tmp_path / "train"
    run_killed(TRAIN, train_cfg(reference["prompts"], out), point)
    assert not downstream_accepts(EVALUATE, eval_cfg(reference["data"], reference["prompts"], out, tmp_path / "e"))
    run_stage(TRAIN, train_cfg(reference["prompts"], out))
    assert train_losses(out) == train_losses(reference["train"])
    assert (out / "final/prefix.safetensors").read_bytes() == (reference["train"] / "final/prefix.safetensors").read_bytes()
    assert downstream_accepts(EVALUATE, eval_cfg(reference["data"], reference["prompts"], out, tmp_path / "e"))
    no_leftovers(out)


def test_train_corrupted_prefix_is_refused_by_evaluate_and_repaired(reference, tmp_path):
    out = tmp_path / "train"
    shutil.copytree(reference["train"], out)
    weights = out / "final/prefix.safetensors"
    weights.write_bytes(weights.read_bytes()[:-9])
    with pytest.raises(DataError, match="truncated or corrupt"):
        run_stage(EVALUATE, eval_cfg(reference["data"], reference["prompts"], out, tmp_path / "e"))
    manifest = run_stage(TRAIN, train_cfg(reference["prompts"], out))  # continues the same run: 0 steps to go
    assert manifest["stats"]["resumed_from"].endswith("step-4")
    assert weights.read_bytes() == (reference["train"] / "final/prefix.safetensors").read_bytes()


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_killed_resumes_from_its_cache_and_compare_refuses_a_torn_report(reference, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    cfg = eval_cfg(reference["data"], reference["prompts"], reference["train"], out)
    run_killed(EVALUATE, cfg, "evaluate.chunk#1")  # 2 of 4 rows answered and cached
    compare = load_config(CompareConfig, None, [f"out_dir={tmp_path / 'cmp'}",
                                                f"reports={{a: {out / 'report.json'}}}"])
    with pytest.raises(DataError):
        run_stage(COMPARE, compare)
    answered: list[str] = []
    real = scoring.answer_rows

    def counting(lm, tok, mode, prompts, *args):
        answered.extend(prompts)
        return real(lm, tok, mode, prompts, *args)

    monkeypatch.setattr(scoring, "answer_rows", counting)
    run_killed(EVALUATE, cfg, "stage.mid_commit#1")
    assert not downstream_accepts(COMPARE, compare)
    run_stage(EVALUATE, cfg)
    assert len(answered) == 0  # the parent never answered: the killed children cached all 4 rows between them
    assert without_latency(load_jsonl(out / "predictions.jsonl")) == \
        without_latency(load_jsonl(reference["eval"] / "predictions.jsonl"))
    run_stage(COMPARE, compare)
    no_leftovers(out)


def test_evaluate_rebuilds_a_deleted_prediction_file_from_its_cache(reference, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    shutil.copytree(reference["eval"], out)
    (out / "predictions.jsonl").unlink()
    monkeypatch.setattr(scoring, "answer_rows", lambda *a: pytest.fail("the cache should answer every row"))
    run_stage(EVALUATE, eval_cfg(reference["data"], reference["prompts"], reference["train"], out))
    assert without_latency(load_jsonl(out / "predictions.jsonl")) == \
        without_latency(load_jsonl(reference["eval"] / "predictions.jsonl"))


# ------------------------------------------------------------------------------------------ predict
def test_predict_killed_before_its_output_is_renamed_recovers(reference, tmp_path):
    out = tmp_path / "predict"
    cfg = load_config(PredictConfig, None, [f"out_dir={out}", f"prompts_dir={reference['prompts']}",
                                            f"train_dir={reference['train']}", "checkpoint=final", "model=tiny:llama",
                                            "max_new_tokens=4", "limit=2", "batch_size=2"])
    run_killed(PREDICT, cfg, "io.before_replace#1")
    assert (out / STAGING).exists() and not (out / MANIFEST).exists()
    run_stage(PREDICT, cfg)
    assert len(load_jsonl(out / "predictions.jsonl")) == 2
    no_leftovers(out)

"""Helpers shared by the train-stage tests (test_train, test_methods, test_method_registry, test_reliability,
test_fault_injection): tiny prompt rows, the tiny train config, the metrics rows, the train CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TINY_YAML = ROOT / "pipeline" / "configs" / "train_tiny.yaml"
LABELS = [("flyby", "none", "observation"), ("hovering", "docking", "assistance"),
          ("collision", "none", "attack"), ("approach", "photographing", "surveillance")]


def write_prompts(root: Path, n_train: int = 8, n_dev: int = 4, repeat_one: bool = False) -> Path:
    """A prompts-stage folder ``root/plain/{train,dev}.jsonl`` with tiny answer-only rows."""
    (root / "plain").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for i in range(n):
            m, o, t = LABELS[0 if repeat_one else i % len(LABELS)]
            rows.append({"sample_id": f"{split}-{i}", "split": split, "variant": "plain",
                         "prompt": f"Range {'falls then rises' if i % 2 else 'stays at'} {10 * i} m. Intent?",
                         "response": f"Answer: motion={m}; operation={o}; task={t}",
                         "label": {"motion": m, "operation": o, "task": t}})
        (root / "plain" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def tiny_cfg(tmp_path: Path, prompts: Path, **overrides) -> TrainConfig:
    args = [f"prompts_dir={prompts}", f"out_dir={tmp_path / 'run'}"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(TrainConfig, TINY_YAML, args)


def train_losses(out_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss"), r.get("dev_loss"), r.get("grad_norm")) for r in rows]


def run_cli(args: list[str], timeout: int = 600, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "pipeline", "train", "--config", str(TINY_YAML), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def evaluate_final(tmp_path: Path, records: Path, prompts: Path, train_dir: Path, tag: str) -> list[dict]:
    """The real evaluate stage (``eval/configs/tiny.yaml``, clean ``plain`` prompts, both modes) on
    ``<train_dir>/final`` as model ``tag``; returns its prediction rows."""
    from eval.config import EvalConfig
    from eval.stage import STAGE as EVAL_STAGE
    from pipeline.core.io import load_jsonl
    from pipeline.core.stage import run_stage

    cfg = load_config(EvalConfig, ROOT / "eval/configs/tiny.yaml", [
        f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={tmp_path / 'eval'}", "variants=[plain]",
        f"train_dir={train_dir}", "perturbations=[]", "perturbed_fraction=0.0",
        f"models=[{{tag: {tag}, spec: 'tiny:llama', checkpoint: final}}]", f"baseline_tag={tag}"])
    run_stage(EVAL_STAGE, cfg)
    return load_jsonl(tmp_path / "eval" / "predictions.jsonl")

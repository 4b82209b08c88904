"""Checkpoint folders of the train stage: write atomically, verify, find, resume from (same run only), prune.

A folder (``checkpoints/step-N``, ``best``, ``final``) holds the method's files (``prefix.safetensors``
+ ``prefix_config.json`` for ptuning_v2, ``adapter.safetensors`` + ``adapter_config.json`` for the other
methods, ``cls_head.safetensors`` with the heads), ``train_config.json`` and, for step checkpoints, ``trainer_state.pt``
(step, data position, RNG states, best-so-far, engine state) plus the engine's own files
(DeepSpeed: ``deepspeed/``). ``checkpoint.json`` is written last: the run's fingerprint, the facts
it hashes, and the sha256 of every other file of the folder.

**The run fingerprint** (:func:`run_facts`) hashes everything that shapes the run: the model spec
and resolved dtype, the selected method and its settings, the prompt variant, token budgets, row
limits and the sha256 of the train/dev files, every ``optim`` setting (``max_steps`` too: the linear
schedule depends on it), the engine and its DeepSpeed JSON's content, the dev-eval and logging
schedule (they write ``metrics.jsonl`` and pick ``best/``) and the seed. Left out: where things are
written or read from (``out_dir``, ``prompts_dir``; the data is hashed instead), how often and how
many step checkpoints are kept, the static export, device, gradient checkpointing and threads.

**Resume** (:func:`plan_resume`): ``never`` (alias ``none``) starts from scratch and drops the step
checkpoints already there; ``auto`` takes the newest *intact* step checkpoint (damaged ones are
skipped with a warning) of the interrupted run in ``out_dir/.staging`` or else of the last finished
run in ``out_dir``; a ``<path>`` takes that one. A checkpoint of another fingerprint is never
served: it is a :class:`~pipeline.core.io.DataError` (exit 2) naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.core.binary import read_torch
from pipeline.core.config import config_to_dict
from pipeline.core.io import DataError, atomic_path, read_json_object, sha256_file, write_json
from pipeline.core.stage import committed_dir
from pipeline.models.checkpoint import INDEX_FILE, STATE_FILE, STEP_DIR, folder_files, index_problem
from pipeline.models.engines import Engine
from pipeline.train.config import TrainConfig, split_file
from pipeline.train.runtime import barrier, resolve_repo_path

log = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
FRESH = ("never", "none")

#: dotted config keys that do not change what a run computes (see the module docstring)
NOT_FINGERPRINTED = ("out_dir", "prompts_dir", "checkpoint", "model.device", "model.gradient_checkpointing",
                     "num_threads", "engine.deepspeed_config", "method")


# ------------------------------------------------------------------------------------- fingerprint
def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def run_facts(cfg: TrainConfig, dtype: str) -> dict[str, Any]:
    """The flat ``key -> value`` facts that identify a run (``dtype``: the resolved model dtype)."""
    facts = {k: v for k, v in _flatten(config_to_dict(cfg)).items()
             if not any(k == n or k.startswith(n + ".") for n in NOT_FINGERPRINTED)}
    facts["model.dtype"] = dtype
    facts["method.name"] = cfg.method.name
    facts["method.cls_head"] = cfg.method.cls_head
    facts.update(_flatten(config_to_dict(cfg.method.settings), f"method.{cfg.method.name}"))
    for split in ("train", "dev"):
        path = split_file(cfg, split)
        facts[f"data.{split}_sha256"] = sha256_file(path) if path.is_file() else None
    if cfg.engine.name == "deepspeed":
        ds_path = resolve_repo_path(cfg.engine.deepspeed_config)
        ds = read_json_object(ds_path) if ds_path.is_file() else None
        facts["engine.deepspeed_config_sha256"] = (
            hashlib.sha256(json.dumps(ds, sort_keys=True).encode()).hexdigest() if ds is not None else None)
    return facts


def fingerprint(facts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the facts."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def describe_differences(saved: dict[str, Any], current: dict[str, Any], limit: int = 8) -> str:
    """``key old -> new`` for every fact that differs (the first ``limit``)."""
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k} {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
             for k in keys if saved.get(k, "<unset>") != current.get(k, "<unset>")]
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more if diffs else "the fingerprint (no fact differs: a different version?)"


# ------------------------------------------------------------------------------------- the folders
def step_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoints/step-N`` with a trainer state, oldest first (not yet verified)."""
    root = Path(out_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).exists():
                found.append((int(m.group(1)), p))
    return sorted(found)


def write_index(folder: Path, facts: dict[str, Any], step: int) -> None:
    """``checkpoint.json``: fingerprint, facts, step and the sha256 of every other file (written last)."""
    files = {str(f.relative_to(folder)): sha256_file(f) for f in folder_files(folder)}
    write_json(folder / INDEX_FILE, {"fingerprint": fingerprint(facts), "step": step, "facts": facts, "files": files})


def check_same_run(folder: Path, facts: dict[str, Any]) -> None:
    """DataError (exit 2) naming what differs when ``folder`` is a checkpoint of another run."""
    index = read_json_object(folder / INDEX_FILE)
    if index.get("fingerprint") == fingerprint(facts):
        return
    raise DataError(folder / INDEX_FILE, None, "checkpoint.resume",
                    f"checkpoint of a different run: {describe_differences(index.get('facts') or {}, facts)}. "
                    "A resume only continues the same run; start fresh with checkpoint.resume=never "
                    "(or --force), or choose another out_dir")


# ------------------------------------------------------------------------------------------ resume
@dataclass(frozen=True)
class ResumePlan:
    """Where a run starts: ``source`` (None = from scratch) copied to ``target`` under out_dir when needed."""

    source: Path | None = None
    target: Path | None = None
    discard: bool = False  # drop the step checkpoints already in out_dir (a fresh start)


def newest_intact(found: list[tuple[int, Path]]) -> Path | None:
    """The newest folder of ``found`` that :func:`~pipeline.models.checkpoint.index_problem` accepts (others are
    skipped with a warning)."""
    for _, path in reversed(found):
        problem = index_problem(path)
        if problem is None:
            return path
        log.warning("skipping damaged checkpoint %s: %s", path, problem)
    return None


def plan_resume(cfg: TrainConfig, facts: dict[str, Any]) -> ResumePlan:
    """Decide (read-only) where the run resumes from; DataError for a damaged or foreign checkpoint."""
    resume, out_dir = cfg.checkpoint.resume, Path(cfg.out_dir)
    if resume in FRESH:
        return ResumePlan(discard=True)
    if resume == "auto":
        root = committed_dir(out_dir)
        groups = [("interrupted", out_dir)] + ([("finished", root)] if root != out_dir else [])
        for kind, folder in groups:
            found = step_checkpoints(folder)
            if not found:
                continue
            chosen = newest_intact(found)
            if chosen is None:
                log.warning("no intact checkpoint among %d in %s", len(found), folder / "checkpoints")
                continue
            check_same_run(chosen, facts)
            log.info("resume=auto: newest intact checkpoint of the %s run: %s", kind, chosen)
            target = chosen if folder == out_dir else out_dir / "checkpoints" / chosen.name
            return ResumePlan(source=chosen, target=target)
        return ResumePlan(discard=True)
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise DataError(path / STATE_FILE, None, "checkpoint.resume", "not a train checkpoint (no trainer_state.pt)")
    problem = index_problem(path)
    if problem is not None:
        raise DataError(path, None, "checkpoint.resume", f"damaged checkpoint: {problem}")
    check_same_run(path, facts)
    return ResumePlan(source=path, target=path)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file (cheap; every writer here replaces files, never edits them in place), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


#: what a run leaves in out_dir besides the manifest (a fresh start clears them first)
RUN_ENTRIES = ("checkpoints", "best", "final", "metrics.jsonl", CONFIG_FILE)


def clear_run_state(out_dir: Path) -> None:
    """Remove an earlier run's checkpoints, best/, final/, metrics and config from ``out_dir``."""
    for name in RUN_ENTRIES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def apply_resume_plan(plan: ResumePlan, cfg: TrainConfig) -> Path | None:
    """Carry out a plan (rank 0): start clean, or adopt a finished run's checkpoint; returns the folder to load."""
    out_dir = Path(cfg.out_dir)
    if plan.discard:
        clear_run_state(out_dir)
        return None
    if plan.source is not None and plan.target is not None and plan.source != plan.target:
        # continue the finished run in out_dir (its staging); only checkpoints of this attempt are kept and counted
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        shutil.copytree(plan.source, plan.target, copy_function=_link_or_copy)
    return plan.target


def is_best_of(folder: Path, facts: dict[str, Any], step: int) -> bool:
    """True when ``folder`` is an intact ``best/`` of this run (same fingerprint) saved at ``step``."""
    if index_problem(folder, need_state=False) is not None:
        return False
    index = read_json_object(folder / INDEX_FILE)
    return index.get("fingerprint") == fingerprint(facts) and index.get("step") == step


def restore_best(out_dir: Path, facts: dict[str, Any], step: int) -> None:
    """Make ``out_dir/best`` the best-so-far folder of the resumed run (rank 0), from the finished run if needed."""
    best = out_dir / "best"
    if is_best_of(best, facts, step):
        return
    shutil.rmtree(best, ignore_errors=True)
    committed = committed_dir(out_dir) / "best"
    if committed != best and is_best_of(committed, facts, step):
        shutil.copytree(committed, best, copy_function=_link_or_copy)


def load_trainer_state(ckpt_dir: Path, engine: Engine) -> dict[str, Any]:
    """``trainer_state.pt`` of ``ckpt_dir`` after restoring the engine (prefix, optimizer, scheduler) from it."""
    path = ckpt_dir / STATE_FILE
    state = read_torch(path, weights_only=False)
    if not isinstance(state, dict) or not {"engine", "step", "epoch", "position", "rng"} <= set(state):
        raise DataError(path, None, None, "not a trainer state (missing step/position/rng entries)")
    if state["engine"] != engine.name:
        raise DataError(path, None, "engine",
                        f"checkpoint was written by the {state['engine']} engine, this run uses {engine.name}")
    engine.load_state(ckpt_dir, state)
    return state


# ------------------------------------------------------------------------------------------ writing
def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder over ``final`` (the old one is removed only after the swap)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def public_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as written into outputs: ``out_dir`` is the stage's folder, not the staging one it ran in."""
    data = config_to_dict(cfg)
    data["out_dir"] = str(committed_dir(cfg.out_dir))
    return data


def save_checkpoint(lm: Any, engine: Engine, final: Path, cfg: TrainConfig, extra: dict[str, Any],
                    facts: dict[str, Any], state: dict[str, Any] | None = None, static: bool = False) -> Path:
    """Write a checkpoint folder atomically: prefix files + config (+ trainer/engine state), ``checkpoint.json`` last.

    Every rank calls this (DeepSpeed's save and the ZeRO-3 gather are collective); rank 0 writes.
    """
    tmp = final.with_name(f".{final.name}.tmp")
    rank = engine.rank
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    with engine.gathered_prefix():
        if rank == 0:
            lm.save_adapter(tmp, extra=extra)
            if static:
                lm.export_static_prefix(tmp / "static", extra=extra)
    if state is not None:
        state = {**state, **engine.save_state(tmp)}
        if rank == 0:
            with atomic_path(tmp / STATE_FILE) as p:
                torch.save(state, p)
    barrier()  # every rank's engine files are in tmp before rank 0 hashes them
    if rank == 0:
        write_json(tmp / CONFIG_FILE, public_config(cfg))
        write_index(tmp, facts, int(extra.get("step", 0)))
        replace_dir(tmp, final)
    barrier()
    return final


def prune_checkpoints(out_dir: Path, keep: int | None, protect: Path | None = None) -> None:
    """Delete the oldest step checkpoints beyond ``keep`` (never the one being resumed from)."""
    if keep is None:
        return
    found = step_checkpoints(out_dir)
    for _, path in found[: max(len(found) - keep, 0)]:
        if protect is None or path.resolve() != protect.resolve():
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["CONFIG_FILE", "INDEX_FILE", "STATE_FILE", "ResumePlan", "apply_resume_plan", "check_same_run",
           "clear_run_state", "describe_differences", "fingerprint", "is_best_of",
           "load_trainer_state", "plan_resume", "prune_checkpoints", "public_config", "replace_dir", "restore_best",
           "run_facts", "save_checkpoint", "step_checkpoints"]

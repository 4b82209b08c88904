"""Checkpoint folders of the train stage: write atomically, find, resume from, prune.

A folder (``checkpoints/step-N``, ``best``, ``final``) holds the method's files (``prefix.safetensors``
+ ``prefix_config.json``), ``train_config.json`` and, for step checkpoints, ``trainer_state.pt``
(step, data position, RNG states, best-so-far, engine state) plus the engine's own files
(DeepSpeed: ``deepspeed/``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.core.config import config_to_dict
from pipeline.core.io import DataError, atomic_path, write_json
from pipeline.models.engines import Engine
from pipeline.train.config import TrainConfig
from pipeline.train.runtime import barrier

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``checkpoints/step-N`` (has a trainer state), oldest first."""
    root = Path(out_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and (p / STATE_FILE).exists():
                found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint folder to resume from, or None."""
    resume = cfg.checkpoint.resume
    if resume == "none":
        return None
    if resume == "auto":
        found = step_checkpoints(cfg.out_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise DataError(path / STATE_FILE, None, "checkpoint.resume", "not a train checkpoint (no trainer_state.pt)")
    return path


def load_trainer_state(ckpt_dir: Path, engine: Engine) -> dict[str, Any]:
    """``trainer_state.pt`` of ``ckpt_dir`` after restoring the engine (prefix, optimizer, scheduler) from it."""
    state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=False)
    if state["engine"] != engine.name:
        raise DataError(ckpt_dir / STATE_FILE, None, "engine",
                        f"checkpoint was written by the {state['engine']} engine, this run uses {engine.name}")
    engine.load_state(ckpt_dir, state)
    return state


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder over ``final`` (the old one is removed only after the swap)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(lm: Any, engine: Engine, final: Path, cfg: TrainConfig, extra: dict[str, Any],
                    state: dict[str, Any] | None = None, static: bool = False) -> Path:
    """Write a checkpoint folder atomically: prefix files + config (+ trainer/engine state).

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
            lm.save_prefix(tmp, extra=extra)
            if static:
                lm.export_static_prefix(tmp / "static", extra=extra)
    if state is not None:
        state = {**state, **engine.save_state(tmp)}
        if rank == 0:
            with atomic_path(tmp / STATE_FILE) as p:
                torch.save(state, p)
    if rank == 0:
        write_json(tmp / CONFIG_FILE, config_to_dict(cfg))
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


__all__ = ["CONFIG_FILE", "STATE_FILE", "load_trainer_state", "prune_checkpoints", "replace_dir", "resolve_resume",
           "save_checkpoint", "step_checkpoints"]

"""Stage ``train_sweep``: a short setting sweep on dev, then the train stage's run at the chosen setting.

    python -m pipeline train_sweep --config pipeline/configs/train_methods.yaml [key=value ...]

The config is the train stage's (:class:`pipeline.train.config.TrainConfig`, every field) plus two sections:

* ``sweep``: ``candidates`` (each a ``name`` and dotted ``overrides`` of the train config, e.g.
  ``optim.learning_rate=0.01``, ``method.lora.r=16``, ``method.cls_head=true``); each candidate trains
  ``steps`` optimiser steps from the same fresh start on the same first rows in the same order (its own
  short schedule: warm-up capped at a quarter of the steps), then the first ``dev_rows`` dev rows are
  label-scored. The highest dev joint accuracy wins; ties go to the higher mean per-level dev accuracy, then
  (only between candidates with the same loss, i.e. the same ``cls_head``) to the lower dev loss; otherwise the
  first listed stays. No candidates: no sweep, the config trains as written.
* ``peft``: after training, PEFT's implementation of the same method at the same settings is timed beside
  ours in ``rounds`` alternating rounds of ``steps`` steps each on the run's first training batches, in this
  one process (:mod:`pipeline.train.peft_beside`); 0 rounds = off.

The chosen setting then trains exactly like ``python -m pipeline train`` with those overrides applied
(same outputs: ``final/``, ``best/``, ``checkpoints/``, ``metrics.jsonl``, ``train_config.json``), plus
``sweep.json`` (every candidate: overrides, dev joint and per-level accuracy, dev loss, seconds; the chosen
one) and ``peft.json``. The manifest's stats are the train stage's plus ``sweep`` (chosen name and overrides,
the candidates' numbers, ``sweep_seconds``) and ``peft`` (s/step ours and PEFT's, their ratio).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, apply_overrides, build_dataclass, config_to_dict
from pipeline.core.io import write_json
from pipeline.core.stage import Stage, StageResult
from pipeline.train.config import TrainConfig, check_config, train_inputs
from pipeline.core.taxonomy import LEVELS
from pipeline.train.recipe import TrainRecipe

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
PEFT_FILE = "peft.json"


@dataclasses.dataclass(frozen=True)
class SweepCandidate:
    """One setting the sweep tries."""

    # short name shown in the table (e.g. lr0.01, r16-lr2e-3)
    name: str
    # dotted overrides of the train config (key=value, the value parsed as YAML), applied in order
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SweepSection:
    """The short dev sweep before the run (no candidates = off)."""

    # the settings tried, in order (an exact tie goes to the first)
    candidates: tuple[SweepCandidate, ...] = ()
    # optimiser steps per candidate (the same first rows in the same order for every candidate)
    steps: int = 8
    # first N dev rows label-scored after those steps (dev joint accuracy picks the setting)
    dev_rows: int = 32
    # first N dev rows of the dev loss (the tie-break)
    loss_rows: int = 16


@dataclasses.dataclass(frozen=True)
class PeftSection:
    """PEFT's implementation of the same method timed beside ours after the run (0 rounds = off)."""

    # alternating rounds (who goes first alternates too)
    rounds: int = 0
    # timed steps per implementation per round
    steps: int = 2
    # untimed warm-up steps per implementation
    warmup: int = 1


@dataclasses.dataclass(frozen=True)
class SweepTrainConfig(TrainConfig):
    """Config of the ``train_sweep`` stage: the train config plus ``sweep`` and ``peft``."""

    sweep: SweepSection = SweepSection()
    peft: PeftSection = PeftSection()


def check_sweep_config(cfg: SweepTrainConfig) -> None:
    """The train checks, distinct candidate names, overrides that build a valid train config."""
    check_config(cfg)
    names = [c.name for c in cfg.sweep.candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep.candidates need distinct names; got {names}", key="sweep.candidates")
    if cfg.sweep.candidates and (cfg.sweep.steps < 1 or cfg.sweep.dev_rows < 1):
        raise ConfigError("sweep.steps and sweep.dev_rows must be >= 1 when there are candidates", key="sweep.steps")
    for c in cfg.sweep.candidates:
        try:
            check_config(train_config(cfg, c.overrides))
        except ConfigError as exc:
            raise ConfigError(f"sweep candidate {c.name}: {exc}", key="sweep.candidates") from None
    if cfg.peft.rounds < 0 or cfg.peft.steps < 1:
        raise ConfigError("peft.rounds must be >= 0 and peft.steps >= 1", key="peft.rounds")


def train_config(cfg: SweepTrainConfig, overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """The plain train config of ``cfg`` with ``overrides`` applied (no sweep/peft sections)."""
    data = config_to_dict(cfg)
    data.pop("sweep", None)
    data.pop("peft", None)
    return build_dataclass(TrainConfig, apply_overrides(data, list(overrides)))


def candidate_config(cfg: SweepTrainConfig, cand: SweepCandidate, out_dir: Path) -> TrainConfig:
    """A candidate's short run: its overrides, ``sweep.steps`` steps, dev scoring at the end only, no step saves."""
    sw = cfg.sweep
    warmup = min(cfg.optim.warmup_steps, sw.steps // 4)
    return train_config(cfg, [*cand.overrides, f"out_dir={out_dir}", f"optim.max_steps={sw.steps}",
                              f"optim.warmup_steps={warmup}", "eval.steps=0", f"eval.accuracy_rows={sw.dev_rows}",
                              f"eval.loss_rows={sw.loss_rows}", "eval.mode=score", "checkpoint.save_steps=0",
                              "checkpoint.resume=never", "checkpoint.export_static_prefix=false"])


def level_mean(point: dict[str, Any]) -> float:
    """Mean of the per-level dev accuracies (comparable across losses, unlike the dev loss)."""
    return sum(point.get(f"dev_acc_{lvl}") or 0.0 for lvl in LEVELS) / len(LEVELS)


def better(point: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Dev joint accuracy, then mean per-level accuracy, then (same loss kind only) the lower dev loss."""
    if best is None:
        return True
    a, b = (point.get("dev_acc") or 0.0, level_mean(point)), (best.get("dev_acc") or 0.0, level_mean(best))
    if a != b:
        return a > b
    return point["cls_head"] == best["cls_head"] and point["dev_loss"] < best["dev_loss"]


def run_sweep(cfg: SweepTrainConfig) -> tuple[SweepCandidate | None, dict[str, Any]]:
    """Train and dev-score every candidate; return the chosen one and the record written to ``sweep.json``."""
    t0 = time.perf_counter()
    points, best, chosen = [], None, None
    root = Path(cfg.out_dir) / "sweep"
    for cand in cfg.sweep.candidates:
        t = time.perf_counter()
        cand_cfg = candidate_config(cfg, cand, root / cand.name)
        recipe = TrainRecipe(cand_cfg)
        recipe.setup()
        recipe.train()
        row = next(r for r in reversed(recipe.metrics) if r["kind"] == "eval")
        point = {"name": cand.name, "overrides": list(cand.overrides), "steps": recipe.step,
                 "learning_rate": cand_cfg.optim.learning_rate, "cls_head": cand_cfg.method.cls_head,
                 **{k: v for k, v in row.items() if k.startswith("dev_")},
                 "train_seconds": round(recipe.train_seconds, 2), "seconds": round(time.perf_counter() - t, 2)}
        points.append(point)
        log.info("sweep %s: dev_acc %s dev_loss %.4f", cand.name, point.get("dev_acc"), point["dev_loss"])
        if better(point, best):
            best, chosen = point, cand
        del recipe
        gc.collect()
    shutil.rmtree(root, ignore_errors=True)  # the candidates' checkpoints are not outputs
    record = {"steps": cfg.sweep.steps, "dev_rows": cfg.sweep.dev_rows, "loss_rows": cfg.sweep.loss_rows,
              "rule": "highest dev joint accuracy; ties: higher mean per-level dev accuracy, then (same cls_head "
                      "only) lower dev loss; else the first listed",
              "candidates": points, "chosen": chosen.name if chosen else None,
              "chosen_overrides": list(chosen.overrides) if chosen else [],
              "sweep_seconds": round(time.perf_counter() - t0, 2)}
    return chosen, record


def run_train_sweep(cfg: SweepTrainConfig) -> StageResult:
    """Sweep (when there are candidates), train the chosen setting, time PEFT beside (when asked)."""
    check_sweep_config(cfg)
    out_dir = Path(cfg.out_dir)
    chosen, sweep = run_sweep(cfg) if cfg.sweep.candidates else (None, None)
    final_cfg = train_config(cfg, chosen.overrides if chosen else ())
    recipe = TrainRecipe(final_cfg)
    recipe.setup()
    recipe.train()
    result = recipe.cleanup()
    stats, outputs = dict(result.stats), list(result.outputs)
    stats["method"] = final_cfg.method.name
    stats["learning_rate"] = final_cfg.optim.learning_rate
    stats["cls_head"] = final_cfg.method.cls_head
    if sweep is not None:
        stats["sweep"] = sweep
        outputs.append(write_json(out_dir / SWEEP_FILE, sweep))
    if cfg.peft.rounds > 0:
        from pipeline.train.peft_beside import time_beside_peft

        try:  # a side measurement: PEFT failing (a version without a feature, a dtype it refuses) never fails the run
            peft = time_beside_peft(recipe, final_cfg, cfg.peft.rounds, cfg.peft.steps, cfg.peft.warmup)
        except Exception as exc:  # noqa: BLE001
            log.warning("PEFT beside %s failed: %s", final_cfg.method.name, exc)
            peft = {"method": final_cfg.method.name, "peft": None,
                    "reason": f"PEFT timing failed: {type(exc).__name__}: {str(exc)[:300]}"}
        stats["peft"] = peft
        outputs.append(write_json(out_dir / PEFT_FILE, peft))
    return StageResult(outputs=outputs, stats=stats)


STAGE = Stage(
    name="train_sweep",
    config_cls=SweepTrainConfig,
    inputs=train_inputs,
    run=run_train_sweep,
    default_config="pipeline/configs/train_methods.yaml",
    help="a short dev sweep of settings (lr, length, rank, cls head), then train the chosen one; PEFT timed beside",
    check=check_sweep_config,
)

__all__ = ["PeftSection", "STAGE", "SweepCandidate", "SweepSection", "SweepTrainConfig", "candidate_config",
           "run_sweep", "run_train_sweep", "train_config"]

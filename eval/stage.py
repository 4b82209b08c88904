"""Stage ``evaluate``: accuracy of base vs tuned models (and PET-style cloze), plain vs CoT, clean and perturbed.

``python -m pipeline evaluate --config eval/configs/demo.yaml``

For every model (``models``: tag, spec, checkpoint under ``train_dir``), variant (``plain``/``cot`` prompts-stage
output) and mode (``score``: label scoring, ``generate``: greedy generation + parsing) the stage
answers the clean split and, on a deterministic subset (``perturbed_fraction`` of it, chosen by a
hash of the sample id), every configured perturbation x severity x seed (re-rendered from the
record, see :mod:`eval.perturb`). With a ``pet`` section the base model also answers as PET-style cloze
systems (``pet-0shot``, ``pet-<k>shot``: a manual pattern + verbalizer, k labelled examples of ``pet.pool_split``
in context; :mod:`pipeline.methods.pet`), label-scored on the same examples. Outputs under ``out_dir``: ``predictions.jsonl`` (schema in
docs/CONTRACT.md), ``report.json``, ``report.md``, ``report.html``.

Resumable: every model answer is appended to ``out_dir/.partial/rows.jsonl`` as it is produced,
keyed by everything that can change it -- the model fingerprint (spec, local model config, every
checkpoint file's sha256), dtype, variant, mode, perturbation, severity, seed, sample_id, the prompt's
hash and the decoding budget; a restarted run skips those keys. Only the model's answer is cached:
gold labels, correctness and the other row fields are rebuilt from the current inputs, so a
corrected gold label is picked up without answering again. Every checkpoint is checked against its
base model before any model answers. The final files are written atomically.

The stage is this module (its inputs, its run, ``STAGE``); the jobs live beside it: :mod:`eval.config`
(the config and its checks), :mod:`eval.expand` (clean and perturbed examples), :mod:`eval.pet_systems`
(models and PET systems), :mod:`eval.cache` (fingerprints and the resume cache), :mod:`eval.preflight`
(checkpoint preflight), :mod:`eval.answering` (answering and prediction rows) and :mod:`eval.provenance`
(the report's input manifest and learning curves).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from eval.answering import answer_examples, collect_rows
from eval.cache import PARTIAL, PartialCache
from eval.config import EvalConfig, check_config, metrics_path, pet_pool_path, prefix_dir, prompts_path, records_path
from eval.expand import build_examples, load_records
from eval.pet_systems import build_systems
from eval.preflight import preflight_checkpoints
from eval.provenance import input_manifest, learning_curves
from eval.report import build_report, write_reports
from pipeline.core.io import write_jsonl
from pipeline.core.stage import Stage, StageResult, committed_dir

log = logging.getLogger(__name__)


def evaluate_inputs(cfg: EvalConfig) -> list[Path]:
    """Records, prompt files, PET example pools, checkpoint folders and the train stage's metrics."""
    paths = [records_path(cfg)] + [prompts_path(cfg, v) for v in cfg.variants]
    paths += sorted({p for p in (pet_pool_path(cfg, v) for v in cfg.variants) if p is not None} - set(paths))
    paths += [p for p in (prefix_dir(cfg, m) for m in cfg.models) if p is not None]
    metrics = metrics_path(cfg)
    return paths + ([metrics] if metrics is not None else [])


def run_evaluate(cfg: EvalConfig) -> StageResult:
    """Answer, score and report (see module docstring)."""
    check_config(cfg)
    if cfg.num_threads > 0:
        import torch

        torch.set_num_threads(cfg.num_threads)
    out_dir = Path(cfg.out_dir)
    # perturbations re-render records; CoT rationales are checked against them
    records = load_records(records_path(cfg))
    examples = {v: build_examples(cfg, v, records) for v in cfg.variants}
    checkpoints = preflight_checkpoints(cfg)
    systems = build_systems(cfg, examples)
    # the cache lives in the stage's own folder (not the staging one a run writes into) and outlives a failed run
    cache = PartialCache(committed_dir(out_dir) / PARTIAL)
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    for system in systems:
        timings.update(answer_examples(cfg, system, examples, cache, checkpoints.get(system.entry.tag)))
    answer_secs = time.perf_counter() - t0
    rows = collect_rows(cfg, systems, examples, cache)
    report = build_report(rows, input_manifest(cfg, systems, examples, checkpoints), baseline_tag=cfg.baseline_tag,
                          seed=cfg.bootstrap_seed, n_resamples=cfg.bootstrap_resamples, min_cell_n=cfg.min_cell_n,
                          learning_curves=learning_curves(cfg))
    report["timings"] = timings
    pred_path = out_dir / "predictions.jsonl"
    write_jsonl(pred_path, rows)
    outputs = [pred_path] + write_reports(out_dir, report)
    stats = {"rows": len(rows), "answer_seconds": round(answer_secs, 3), "timings": timings,
             "clean_accuracy": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": g["clean"]["accuracy"]
                                for g in report["groups"]},
             "perturbed_std": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": g["aggregates"]["std_accuracy"]
                               for g in report["groups"]},
             # per group: std over the invariant cells and the worst cell, all / seen / unseen in training
             "cells": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": {k: v for k, v in g["cells"].items()
                                                                         if k != "cells"}
                       for g in report["groups"] if (g.get("cells") or {}).get("all", {}).get("n_cells")}}
    log.info("evaluated %d rows -> %s", len(rows), out_dir)
    return StageResult(outputs=outputs, stats=stats)


STAGE = Stage(
    name="evaluate",
    config_cls=EvalConfig,
    inputs=evaluate_inputs,
    run=run_evaluate,
    default_config="eval/configs/demo.yaml",
    help="accuracy and robustness of base vs tuned models, plain vs CoT prompts",
    check=check_config,
)

"""What the ``evaluate`` report records about its inputs: models and checkpoint hashes, data and template
hashes, seeds, perturbation specs (:func:`input_manifest`) and the tuned models' learning curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval import perturb
from eval.cache import system_fingerprint
from eval.config import EvalConfig, metrics_path, pet_pool_path, prefix_dir, prompts_path, records_path
from eval.expand import Example
from eval.pet_systems import System
from eval.preflight import trained_families
from eval.robustness import CLEAN
from pipeline.core.config import config_to_dict
from pipeline.core.io import read_jsonl, sha256_file
from pipeline.core.stage import committed_dir, expand_files
from prompts_cot.rows import read_prompt_rows


def checkpoint_step(folder: Path) -> int | None:
    """The training step a checkpoint folder was saved at (its ``*config.json`` records it), if known."""
    for path in sorted(Path(folder).glob("*config.json")):
        try:
            step = json.loads(path.read_text(encoding="utf-8")).get("step")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def learning_curves(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Per tuned model tag: the train stage's dev evaluations (``kind: eval`` rows) and the evaluated step."""
    metrics = metrics_path(cfg)
    if metrics is None:
        return {}
    points = [{k: v for k, v in row.items() if k != "kind"} for _, row in read_jsonl(metrics)
              if row.get("kind") == "eval"]
    return {m.tag: {"points": points, "checkpoint": m.checkpoint, "evaluated_step": checkpoint_step(prefix_dir(cfg, m))}
            for m in cfg.models if m.checkpoint is not None}


def input_manifest(cfg: EvalConfig, systems: list[System], examples: dict[str, list[Example]],
                   checkpoints: dict[str, Any]) -> dict[str, Any]:
    """Models (and PET systems), checkpoint/data/template hashes, seeds and perturbation specs for the report;
    ``checkpoints``: :func:`preflight_checkpoints`' ``{model tag: Checkpoint}``."""
    models = []
    for system in systems:
        m = system.entry
        prefix = prefix_dir(cfg, m)
        files = expand_files([prefix]) if prefix is not None else []
        row = {"tag": m.tag, "spec": m.spec, "prefix_dir": str(prefix) if prefix else None,
               "fingerprint": system_fingerprint(cfg, system),
               "checkpoint_sha256": {str(f.relative_to(prefix)): sha256_file(f) for f in files},
               "trained_families": trained_families(checkpoints.get(m.tag))}
        if system.pet_demos is not None:
            row["pet"] = system.pet_facts()
        models.append(row)
    pools = [p for p in dict.fromkeys(pet_pool_path(cfg, v) for v in cfg.variants) if p is not None]
    data = {str(p): sha256_file(p)
            for p in [records_path(cfg)] + [prompts_path(cfg, v) for v in cfg.variants] + pools}
    templates: dict[str, list[str]] = {}
    for v in cfg.variants:
        hashes = {row.get("template_hash") for _, row in read_prompt_rows(prompts_path(cfg, v), limit=cfg.limit)}
        templates[v] = sorted(h for h in hashes if h)
    counts = {v: {"clean": sum(e.perturbation == CLEAN for e in exs),
                  "perturbed": sum(e.perturbation != CLEAN for e in exs)} for v, exs in examples.items()}
    specs = {p.name: {"severities": list(p.severities or sorted(perturb.get_spec(p.name).levels)),
                      "levels": {str(k): str(v) for k, v in perturb.get_spec(p.name).levels.items()},
                      "label_may_change": sorted(perturb.get_spec(p.name).label_may_change),
                      "description": perturb.get_spec(p.name).description} for p in cfg.perturbations}
    return {"split": cfg.split, "models": models, "data_sha256": data, "template_hashes": templates,
            "seeds": list(cfg.seeds), "perturbed_fraction": cfg.perturbed_fraction, "examples": counts,
            "perturbations": specs, "config": {**config_to_dict(cfg), "out_dir": str(committed_dir(cfg.out_dir))}}

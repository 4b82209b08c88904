"""Checkpoint preflight of the ``evaluate`` stage: every checkpoint is read and checked before any model answers."""

from __future__ import annotations

from typing import Any

from eval.config import EvalConfig, prefix_dir


def preflight_checkpoints(cfg: EvalConfig) -> dict[str, Any]:
    """Before any model answers: every checkpoint is intact (:func:`pipeline.models.checkpoint.read_checkpoint`),
    of a registered method and made for its base model (DataError); returns ``{model tag: Checkpoint}``."""
    from transformers import AutoConfig

    from pipeline.methods.base import arch_facts
    from pipeline.models.checkpoint import read_checkpoint
    from pipeline.models.store import resolve_model_dir

    found = {}
    for entry in cfg.models:
        folder = prefix_dir(cfg, entry)
        if folder is None:
            continue
        ckpt = read_checkpoint(folder)
        facts = arch_facts(AutoConfig.from_pretrained(str(resolve_model_dir(entry.spec))))
        ckpt.check_base_model(facts, spec=f"model {entry.tag!r}, {entry.spec}")
        found[entry.tag] = ckpt
    return found


def trained_families(checkpoint: Any) -> list[str] | None:
    """The training-time variation families a checkpoint's training rows were rendered under (``[]``: none;
    None: a base model), from the method JSON :func:`preflight_checkpoints` already read. The report marks
    robustness cells of those families as seen in training."""
    if checkpoint is None:
        return None
    facts = checkpoint.meta.get("prompts") or {}
    return sorted((facts.get("variation") or {}).get("families") or {})

"""Dev-set metrics during training: token loss, answer accuracy (greedy generation or label scoring), and
which checkpoint is best."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.core.answer import parse_answer
from pipeline.core.taxonomy import LEVELS
from pipeline.methods.base import eval_mode
from pipeline.models.data import IGNORE_INDEX, Example, collate
from pipeline.models.generation import generate
from pipeline.models.scoring import score_rows


@torch.no_grad()
def dev_loss(lm: torch.nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over ``examples`` (response tokens only; cls_head examples: row-weighted
    cross-entropy of the heads)."""
    total, count = 0.0, 0
    with eval_mode(lm):
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(lm.device) for k, v in collate(examples[i: i + batch_size], pad_id).items()}
            if "class_labels" in batch:
                n = batch["class_labels"].shape[0]
            else:
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # HF shifts labels by one
            total += float(lm(**batch).loss) * n
            count += n
    return total / max(count, 1)


def dev_answers(lm: torch.nn.Module, tokenizer: Any, rows: Sequence[dict[str, Any]], mode: str, max_new_tokens: int,
                batch_size: int) -> list[dict[str, str | None]]:
    """Each row's labels per level: greedy generation parsed (``generate``) or label scoring (``score``)."""
    prompts = [r["prompt"] for r in rows]
    if mode == "score" or getattr(lm, "cls_head", None) is not None:  # heads answer in either mode
        with eval_mode(lm):
            scored = score_rows(lm, tokenizer, prompts, [r.get("lang") or "en" for r in rows], batch_size=batch_size)
        return [s["parsed"] for s in scored]
    return [parse_answer(reply) for reply in generate(lm, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                      batch_size=batch_size)]


def dev_accuracy(lm: torch.nn.Module, tokenizer: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int,
                 batch_size: int, mode: str = "generate") -> dict[str, float]:
    """Answer ``rows`` (``mode``: generate | score); exact-match accuracy of all three levels (``dev_acc``) and
    per level."""
    answers = dev_answers(lm, tokenizer, rows, mode, max_new_tokens, batch_size)
    hits: dict[str, list[bool]] = {lvl: [] for lvl in LEVELS}
    for row, parsed in zip(rows, answers):
        gold = row.get("label") or {}
        for lvl in LEVELS:
            hits[lvl].append(parsed[lvl] is not None and parsed[lvl] == gold.get(lvl))
    all_ok = [all(hits[lvl][i] for lvl in LEVELS) for i in range(len(rows))]
    out = {"dev_acc": float(np.mean(all_ok))}
    out.update({f"dev_acc_{lvl}": float(np.mean(hits[lvl])) for lvl in LEVELS})
    return out


def is_better(metrics: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Higher dev accuracy wins; ties (or accuracy off) go to the lower dev loss."""
    if best is None:
        return True
    acc, best_acc = metrics.get("dev_acc"), best.get("dev_acc")
    if acc is not None and best_acc is not None and acc != best_acc:
        return acc > best_acc
    return metrics["dev_loss"] < best["dev_loss"]


__all__ = ["dev_accuracy", "dev_answers", "dev_loss", "is_better"]

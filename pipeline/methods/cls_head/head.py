"""Classification heads: one linear layer per intent level over the last token's hidden state.

``method.cls_head: true`` (any method) trains, instead of the language-model answer, a
``Linear(hidden, n_labels)`` per level of :data:`pipeline.core.taxonomy.LEVELS` (zero-initialised) over the
L2-normalised final hidden state of the prompt's last token, with cross-entropy on the gold labels -- the route the original
P-tuning-v2 code takes for classification (a head on the pooled output). At inference the softmax of
each head gives the per-level probabilities that label scoring would otherwise compute.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.core.taxonomy import LABELS, LEVELS
from pipeline.methods.base import ArchFacts

#: the heads' weights in a checkpoint folder
CLS_HEAD_WEIGHTS = "cls_head.safetensors"
#: ignored class label (a level without gold)
IGNORE_CLASS = -100


class ClsHead(nn.Module):
    """``forward(hidden (B, hidden))`` -> ``{level: logits (B, n_labels(level))}`` for every intent level."""

    def __init__(self, facts: ArchFacts):
        super().__init__()
        self.heads = nn.ModuleDict({lvl: nn.Linear(facts.hidden_size, len(LABELS[lvl])) for lvl in LEVELS})
        # zero init: every head starts at the uniform distribution (loss ln n)
        for head in self.heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """``hidden`` ``(B, hidden)`` -> logits per level. The state is L2-normalised first: a decoder's final
        state is unbounded (norm ~50 for SmolLM2), and an Adam step of the prompt methods' learning rate (2e-2)
        on a head over it would move the logits by ~lr * |h|_1 (~17), overshooting; over a unit vector a step
        moves them by at most ~lr * sqrt(hidden)."""
        hidden = nn.functional.normalize(hidden.to(self.heads[LEVELS[0]].weight.dtype), dim=-1)
        return {lvl: head(hidden) for lvl, head in self.heads.items()}

    def loss(self, logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Mean over levels of the cross-entropy; ``labels`` ``(B, levels)`` label indices, -100 = no gold."""
        losses = [nn.functional.cross_entropy(logits[lvl].float(), labels[:, i], ignore_index=IGNORE_CLASS)
                  for i, lvl in enumerate(LEVELS) if bool((labels[:, i] != IGNORE_CLASS).any())]
        if not losses:
            return sum(v.sum() for v in logits.values()) * 0.0  # keeps the graph; nothing to learn from this batch
        return torch.stack(losses).mean()


def class_label_ids(label: dict[str, Any] | None) -> list[int]:
    """Gold labels of a row (``{level: label}``) as indices per level, -100 where missing or unknown."""
    label = label or {}
    return [LABELS[lvl].index(label[lvl]) if label.get(lvl) in LABELS[lvl] else IGNORE_CLASS for lvl in LEVELS]


def head_labels() -> dict[str, list[str]]:
    """The label order of every head (recorded in checkpoints: a changed taxonomy cannot load old heads)."""
    return {lvl: list(LABELS[lvl]) for lvl in LEVELS}


def probabilities(logits: dict[str, torch.Tensor]) -> list[dict[str, dict[str, float]]]:
    """Per row ``{level: {label: p}}`` from the heads' logits."""
    per_level = {lvl: torch.softmax(v.float(), dim=-1).cpu() for lvl, v in logits.items()}
    n = next(iter(per_level.values())).shape[0]
    return [{lvl: {lab: float(p[r, j]) for j, lab in enumerate(LABELS[lvl])} for lvl, p in per_level.items()}
            for r in range(n)]


def count_cls_head_parameters(facts: ArchFacts) -> int:
    """``(hidden + 1) * n_labels`` summed over the levels."""
    return sum((facts.hidden_size + 1) * len(LABELS[lvl]) for lvl in LEVELS)

"""Prompt tuning (Lester et al. 2021): ``pre_seq_len`` trained input embeddings in front of every row.

The soft prompt is an ``(P, hidden)`` table of virtual-token embeddings that the frozen model reads
at positions ``0..P-1`` before the real tokens (PEFT's ``PromptTuning``; ``pre_seq_len`` is PEFT's
``num_virtual_tokens``). Only the input layer is tuned: every layer's key/values of the virtual tokens
follow from the frozen weights (:class:`pipeline.models.lm.AdaptedLM` computes them once per forward).

``init: text`` starts the table as the base model's word embeddings of ``init_text`` (its tokens cycled
or cut to ``P``, PEFT's ``PromptTuningInit.TEXT``); ``init: random`` draws N(0, std) with std = the
vocabulary embeddings' own std (or ``init_std``), so the prompt starts at the scale of real tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from pipeline.methods.base import ArchFacts
from pipeline.methods.ptuning_v2 import repeat_to_length


@dataclasses.dataclass(frozen=True)
class PromptTuningConfig:
    """Settings of prompt tuning (the ``method.prompt_tuning`` section)."""

    # number of virtual tokens (PEFT's num_virtual_tokens); Lester et al. use 5-150 (100 as their default)
    pre_seq_len: int = 100
    # random (N(0, std)) | text (the base model's word embeddings of init_text, cycled to pre_seq_len)
    init: Literal["random", "text"] = "random"
    # the text whose token embeddings start the prompt for init=text (e.g. the task description)
    init_text: str = ""
    # std of the random init; None = the std of the base model's vocabulary embeddings
    init_std: float | None = None

    def __post_init__(self) -> None:
        if self.pre_seq_len < 1:
            raise ValueError(f"pre_seq_len must be >= 1, got {self.pre_seq_len}")
        if self.init not in ("random", "text"):
            raise ValueError(f"init must be random or text, got {self.init!r}")
        if self.init == "text" and not self.init_text.strip():
            raise ValueError("init=text needs a non-empty init_text")
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)


class SoftPrompt(nn.Module):
    """The trained virtual-token embeddings; ``forward()`` returns ``(pre_seq_len, hidden)``."""

    def __init__(self, config: PromptTuningConfig, facts: ArchFacts, init_std: float = 1.0):
        super().__init__()
        self.config, self.facts = config, facts
        self.embedding = nn.Embedding(config.pre_seq_len, facts.hidden_size)
        nn.init.normal_(self.embedding.weight, std=config.init_std or init_std)

    @property
    def pre_seq_len(self) -> int:
        return self.config.pre_seq_len

    def forward(self) -> torch.Tensor:
        """Virtual-token embeddings ``(P, hidden)`` (the whole table: the lookup of 0..P-1)."""
        return self.embedding.weight


@torch.no_grad()
def init_prompt_from_text(prompt: SoftPrompt, word_embeddings: torch.Tensor, token_ids: list[int]) -> None:
    """Copy the word embeddings ``(vocab, hidden)`` of ``token_ids`` (cycled/cut to ``P``) into the prompt."""
    ids = torch.tensor(repeat_to_length(list(token_ids), prompt.pre_seq_len), device=word_embeddings.device)
    prompt.embedding.weight.copy_(word_embeddings[ids].to(prompt.embedding.weight))


def count_prompt_tuning_parameters(config: PromptTuningConfig, facts: ArchFacts) -> int:
    """Trainable parameters: ``pre_seq_len * hidden``."""
    return config.pre_seq_len * facts.hidden_size

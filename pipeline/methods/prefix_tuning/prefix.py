"""Prefix tuning (Li & Liang 2021): deep key/value prefixes produced by a reparameterisation MLP.

``pre_seq_len`` free embeddings (width ``embedding_dim``) go through
``Linear(embedding_dim, prefix_hidden_size) -> Tanh -> Linear(prefix_hidden_size, L*2*kv_heads*head_dim)``
and the output is every layer's prefix key/values, in the flat layout of
:mod:`pipeline.methods.ptuning_v2` (so the same cache path, static export and helpers apply). Li & Liang
found the MLP necessary for stable training; after training only its output matters, which
``checkpoint.export_static_prefix`` writes as a P-Tuning v2 static prefix.

The layout is PEFT's ``PrefixTuning`` with ``prefix_projection=True`` (``pre_seq_len`` is its
``num_virtual_tokens``, ``prefix_hidden_size`` its ``encoder_hidden_size``); like PEFT, the embedding
width defaults to one layer's key/value width (``kv_heads * head_dim``, the hidden size without GQA).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pipeline.methods.base import ArchFacts
from pipeline.methods.ptuning_v2 import KeyValues, PrefixConfig, PrefixFacts, expand_key_values, split_key_values


@dataclasses.dataclass(frozen=True)
class PrefixTuningConfig:
    """Settings of prefix tuning (the ``method.prefix_tuning`` section)."""

    # number of virtual tokens per layer (PEFT's num_virtual_tokens); Li & Liang: 10 (table-to-text) to 200
    pre_seq_len: int = 16
    # width of the reparameterisation MLP's hidden layer (Li & Liang: 512; PEFT's encoder_hidden_size)
    prefix_hidden_size: int = 512
    # width of the free embeddings fed to the MLP; None = kv_heads * head_dim (PEFT's token_dim)
    embedding_dim: int | None = None
    # dropout on the prefix key/values during training
    prefix_dropout: float = 0.0
    # True: real tokens take positions pre_seq_len, ... (PEFT's semantics); False: they start at 0
    positions_after_prefix: bool = True

    def __post_init__(self) -> None:
        if self.pre_seq_len < 1:
            raise ValueError(f"pre_seq_len must be >= 1, got {self.pre_seq_len}")
        if self.prefix_hidden_size < 1:
            raise ValueError(f"prefix_hidden_size must be positive, got {self.prefix_hidden_size}")
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise ValueError(f"prefix_dropout must be in [0, 1), got {self.prefix_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)

    def prefix_view(self) -> PrefixConfig:
        """The P-Tuning v2 settings with the same key/values semantics (projection on): used by the cache path and
        the static export."""
        return PrefixConfig(pre_seq_len=self.pre_seq_len, prefix_projection=True,
                            prefix_hidden_size=self.prefix_hidden_size, prefix_dropout=self.prefix_dropout,
                            positions_after_prefix=self.positions_after_prefix)


class PrefixTuningEncoder(PrefixFacts, nn.Module):
    """Embedding ``(P, embedding_dim)`` -> MLP -> flat prefix ``(P, L*2*kv_dim)``; the PrefixEncoder API."""

    def __init__(self, settings: PrefixTuningConfig, facts: ArchFacts):
        super().__init__()
        self.settings, self.facts = settings, facts
        self.config = settings.prefix_view()  # what AdaptedLM and the static export read (P, dropout, positions)
        width = settings.embedding_dim or facts.kv_dim
        self.embedding = nn.Embedding(settings.pre_seq_len, width)
        self.trans = nn.Sequential(nn.Linear(width, settings.prefix_hidden_size), nn.Tanh(),
                                   nn.Linear(settings.prefix_hidden_size, facts.row_dim))
        self.dropout = nn.Dropout(settings.prefix_dropout)

    def forward(self) -> torch.Tensor:
        """Flat prefix ``(P, L*2*kv_heads*head_dim)`` (no dropout here)."""
        return self.trans(self.embedding.weight)

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> KeyValues:
        """Per-layer ``(key, value)``, each ``(batch_size, kv_heads, P, head_dim)`` (expand views without dropout)."""
        flat = self()
        if dtype is not None and flat.dtype != dtype:
            flat = flat.to(dtype)
        if self.training and self.settings.prefix_dropout > 0:
            return split_key_values(self.dropout(flat.unsqueeze(0).expand(batch_size, -1, -1)), self.facts)
        return expand_key_values(split_key_values(flat, self.facts), batch_size)


def count_prefix_tuning_parameters(settings: PrefixTuningConfig, facts: ArchFacts) -> int:
    """Trainable parameters: embedding table + the two MLP layers."""
    w, h = settings.embedding_dim or facts.kv_dim, settings.prefix_hidden_size
    return settings.pre_seq_len * w + (w + 1) * h + (h + 1) * facts.row_dim

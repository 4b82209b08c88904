"""P-Tuning v1 (Liu et al. 2021, "GPT Understands, Too"): virtual-token embeddings from a prompt encoder.

A table of ``pre_seq_len`` free embeddings goes through a small encoder -- an MLP
(``Linear(h, e) ReLU Linear(e, e) ReLU Linear(e, h)``) or a 2-layer bidirectional LSTM followed by
``Linear(2e, 2e) ReLU Linear(2e, h)`` -- and the result is read by the frozen model at the input layer,
in front of the real tokens (the layout of PEFT's ``PromptEncoder``; ``pre_seq_len`` is PEFT's
``num_virtual_tokens``, ``encoder_hidden_size`` its ``encoder_hidden_size``). The encoder couples the
virtual tokens, which the paper found to train more stably than independent embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from pipeline.methods.base import ArchFacts


@dataclasses.dataclass(frozen=True)
class PTuningV1Config:
    """Settings of P-Tuning v1 (the ``method.ptuning_v1`` section)."""

    # number of virtual tokens (PEFT's num_virtual_tokens)
    pre_seq_len: int = 20
    # prompt encoder: mlp (3 linear layers) | lstm (2-layer bidirectional LSTM + 2-layer MLP head)
    encoder: Literal["mlp", "lstm"] = "mlp"
    # width of the encoder; None = the base model's hidden size (PEFT's default)
    encoder_hidden_size: int | None = None
    # dropout between the LSTM layers (lstm only)
    encoder_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.pre_seq_len < 1:
            raise ValueError(f"pre_seq_len must be >= 1, got {self.pre_seq_len}")
        if self.encoder not in ("mlp", "lstm"):
            raise ValueError(f"encoder must be mlp or lstm, got {self.encoder!r}")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise ValueError(f"encoder_hidden_size must be positive, got {self.encoder_hidden_size}")
        if not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must be in [0, 1), got {self.encoder_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)


class PromptEncoderV1(nn.Module):
    """``forward()`` -> virtual-token embeddings ``(pre_seq_len, hidden)`` from the encoder."""

    def __init__(self, config: PTuningV1Config, facts: ArchFacts):
        super().__init__()
        self.config, self.facts = config, facts
        h, e = facts.hidden_size, config.encoder_hidden_size or facts.hidden_size
        self.embedding = nn.Embedding(config.pre_seq_len, h)
        if config.encoder == "lstm":
            self.lstm_head = nn.LSTM(input_size=h, hidden_size=e, num_layers=2, dropout=config.encoder_dropout,
                                     bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * e, 2 * e), nn.ReLU(), nn.Linear(2 * e, h))
        else:
            self.lstm_head = None
            self.mlp_head = nn.Sequential(nn.Linear(h, e), nn.ReLU(), nn.Linear(e, e), nn.ReLU(), nn.Linear(e, h))

    @property
    def pre_seq_len(self) -> int:
        return self.config.pre_seq_len

    def forward(self) -> torch.Tensor:
        """``(P, hidden)``: the encoder over the whole table (one sequence; the same for every row)."""
        x = self.embedding.weight
        if self.lstm_head is not None:
            x = self.lstm_head(x.unsqueeze(0))[0].squeeze(0)  # (P, 2e): both directions see the whole prompt
        return self.mlp_head(x)


def count_ptuning_v1_parameters(config: PTuningV1Config, facts: ArchFacts) -> int:
    """Trainable parameters of the embedding table and its encoder."""
    h, e = facts.hidden_size, config.encoder_hidden_size or facts.hidden_size
    table = config.pre_seq_len * h
    if config.encoder == "mlp":
        return table + (h * e + e) + (e * e + e) + (e * h + h)
    lstm = 2 * 4 * (h * e + e * e + 2 * e) + 2 * 4 * (2 * e * e + e * e + 2 * e)  # layer 1 and layer 2, both dirs
    return table + lstm + (2 * e * 2 * e + 2 * e) + (2 * e * h + h)

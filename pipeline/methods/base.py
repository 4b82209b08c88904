"""What every tuning method shares: the shape facts of the frozen base model, and eval mode.

A method (``pipeline/methods/<name>/``) adapts a frozen causal LM; whatever it adds (prefix
key/values, virtual-token embeddings, low-rank adapters) is sized from :class:`ArchFacts`,
which :func:`arch_facts` reads from any Hugging Face config.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from torch import nn


@dataclasses.dataclass(frozen=True)
class ArchFacts:
    """Shape facts of a decoder-only model that a prefix must match."""

    num_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    model_type: str = ""

    @property
    def kv_dim(self) -> int:
        """Width of one layer's key (or value) for one token: ``kv_heads * head_dim``."""
        return self.kv_heads * self.head_dim

    @property
    def row_dim(self) -> int:
        """Width of one virtual token's encoder output: ``num_layers * 2 * kv_dim``."""
        return self.num_layers * 2 * self.kv_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)


def _first_attr(config: Any, names: tuple[str, ...]) -> Any:
    """First non-None attribute of ``config`` among ``names`` (None if none)."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def arch_facts(config: Any) -> ArchFacts:
    """Derive layers / kv heads / head dim from any HF config (Llama, Qwen2, GLM, GLM-4, GPT-2, ChatGLM).

    kv heads: ``num_key_value_heads``, else ChatGLM's ``multi_query_group_num`` (when
    ``multi_query_attention``), else the attention heads. head dim: ``head_dim`` / ``kv_channels``,
    else hidden / heads.
    """
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    layers = _first_attr(config, ("num_hidden_layers", "n_layer", "num_layers"))
    heads = _first_attr(config, ("num_attention_heads", "n_head", "num_heads"))
    hidden = _first_attr(config, ("hidden_size", "n_embd", "d_model"))
    if layers is None or heads is None or hidden is None:
        raise ValueError(f"cannot read layers/heads/hidden size from config of type {type(config).__name__}")
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads is None and getattr(config, "multi_query_attention", False):
        kv_heads = getattr(config, "multi_query_group_num", None)
    kv_heads = kv_heads or heads
    head_dim = _first_attr(config, ("head_dim", "kv_channels")) or hidden // heads
    return ArchFacts(int(layers), int(kv_heads), int(head_dim), int(hidden), str(getattr(config, "model_type", "")))


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore its previous train/eval mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


__all__ = ["ArchFacts", "arch_facts", "eval_mode"]

"""What every tuning method shares: the shape facts of the frozen base model, and eval mode.

A method (``pipeline/methods/<name>/``) adapts a frozen causal LM; whatever it adds (prefix
key/values, virtual-token embeddings, low-rank adapters) is sized from :class:`ArchFacts`,
which :func:`arch_facts` reads from any Hugging Face config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.core.binary import check_shapes, read_safetensors
from pipeline.core.io import DataError, atomic_path, write_json

#: method JSON of every method but ptuning_v2 (which keeps its historical ``prefix_config.json``)
ADAPTER_CONFIG = "adapter_config.json"
#: trainable weights of every method but ptuning_v2 (``prefix.safetensors``)
ADAPTER_WEIGHTS = "adapter.safetensors"
#: version of the adapter JSON layout
ADAPTER_FORMAT_VERSION = 1

#: every layer's ``(key, value)`` prefix, each ``(B, kv_heads, P, head_dim)``
KeyValues = list[tuple[torch.Tensor, torch.Tensor]]


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


def settings_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a method's settings dataclass from a method JSON, ignoring keys that are not its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return cls(**kwargs)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``tensors`` (float32, CPU, contiguous) atomically as safetensors."""
    clean = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={"format": "pt"})
    return path


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (DataError when missing or unreadable)."""
    if not path.exists():
        raise DataError(path, None, None, "adapter weights file is missing")
    return read_safetensors(path)


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict`` that turns a mismatch (other shapes or names) into a DataError naming ``path`` and the tensor."""
    check_shapes(path, {k: tuple(v.shape) for k, v in tensors.items()},
                 {k: tuple(v.shape) for k, v in module.state_dict().items()})
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # size mismatch
        raise DataError(path, None, None, f"weights do not fit the model: {str(exc).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise DataError(path, None, None, f"weights do not match the config (missing {missing}, unexpected {unexpected})")


def write_adapter_config(out_dir: Path, method: str, settings: dict[str, Any], facts: ArchFacts,
                         extra: dict[str, Any] | None = None) -> Path:
    """``adapter_config.json``: the method name, its settings, the base model's :class:`ArchFacts` and ``extra``."""
    payload = {"format_version": ADAPTER_FORMAT_VERSION, "method": method, "kind": "adapter", **settings,
               "arch": facts.to_dict(), **(extra or {})}
    return write_json(Path(out_dir) / ADAPTER_CONFIG, payload)


def read_json_config(path: Path) -> dict[str, Any]:
    """A method JSON with its ``arch`` facts (DataError when missing, invalid or without them)."""
    if not path.exists():
        raise DataError(path, None, None, "checkpoint has no method config JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or "arch" not in data:
        raise DataError(path, None, "arch", "missing the base-model shape facts")
    return data


def check_arch(saved: dict[str, Any], facts: ArchFacts, path: Path, what: str = "adapter") -> None:
    """Refuse an adapter made for another base model: model type or layer / head / width facts differ (exit 2)."""
    saved_type = saved.get("model_type") or ""
    if saved_type and facts.model_type and saved_type != facts.model_type:
        raise DataError(path, None, "arch.model_type",
                        f"{what} was made for a {saved_type!r} model, the model is {facts.model_type!r}")
    for key in ("num_layers", "kv_heads", "head_dim", "hidden_size"):
        if key in saved and int(saved[key]) != getattr(facts, key):
            raise DataError(path, None, f"arch.{key}",
                            f"{what} was saved for {key}={saved[key]}, the model has {getattr(facts, key)}")


__all__ = ["ADAPTER_CONFIG", "ADAPTER_FORMAT_VERSION", "ADAPTER_WEIGHTS", "ArchFacts", "KeyValues", "arch_facts", "check_arch",
           "eval_mode", "load_into", "load_tensors", "read_json_config", "save_tensors", "settings_from_dict",
           "write_adapter_config"]

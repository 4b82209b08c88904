"""The method registry: every tuning method is one :class:`Method` object, registered by its own folder.

A method folder (``pipeline/methods/<name>/``) ends its ``__init__.py`` with one call::

    register_method(Method(name="prompt_tuning", settings_class=PromptTuningConfig,
                           kind=MethodKind.INPUT_EMBEDDINGS, build=build_soft_prompt,
                           text_init=init_soft_prompt_from_text))

and from then on the train config accepts ``method.name: prompt_tuning`` with a ``method.prompt_tuning``
section (:class:`pipeline.methods.MethodConfig` asks the registry), :func:`pipeline.methods.build_adapters`
builds it, checkpoints save and load it, and :class:`pipeline.models.lm.AdaptedLM` runs it through the path of
its :class:`MethodKind`. Nothing central lists the methods (PEFT's ``register_peft_method`` is the model).

What a method's module must offer is fixed by its kind (the interfaces below are ``typing.Protocol`` s, so a
module satisfies one by having the attributes, and :func:`check_module` verifies it when it is built):

* :attr:`MethodKind.KEY_VALUES` -- :class:`KeyValueModule`: ``key_values(batch, dtype)`` gives every layer's
  ``(B, kv_heads, P, head_dim)`` key/value pair, put into the base model's cache;
* :attr:`MethodKind.INPUT_EMBEDDINGS` -- :class:`InputEmbeddingModule`: ``forward()`` gives ``(P, hidden)``
  virtual-token embeddings, read by the frozen model in front of the real tokens;
* :attr:`MethodKind.WEIGHT_DELTA` -- any ``nn.Module`` whose ``state_dict`` is the trained weights; ``build``
  injects it into the base model (LoRA);
* :attr:`MethodKind.HEAD` -- a head over the final hidden state (the ``cls_head`` option; not a selectable
  ``method.name``, it combines with any method).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from pipeline.methods.base import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ArchFacts,
    KeyValues,
    load_into,
    load_tensors,
    save_tensors,
    write_adapter_config,
)


class MethodKind(str, enum.Enum):
    """Where a method's trained part enters the frozen model."""

    KEY_VALUES = "key_values"  # every decoder layer's prefix key/values (ptuning_v2, prefix_tuning)
    INPUT_EMBEDDINGS = "input_embeddings"  # virtual-token embeddings at the input layer (prompt_tuning, ptuning_v1)
    WEIGHT_DELTA = "weight_delta"  # updates of the base model's own weights, injected into it (lora)
    HEAD = "head"  # a head over the final hidden state (cls_head)


@runtime_checkable
class KeyValueModule(Protocol):
    """A key/value method's module: ``pre_seq_len`` virtual tokens at every layer."""

    @property
    def pre_seq_len(self) -> int:
        """Number of virtual tokens ``P``."""

    @property
    def positions_after_prefix(self) -> bool:
        """True: the first real token takes position ``P`` (PEFT); False: position 0 (ChatGLM2's ptuning)."""

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> KeyValues:
        """Every layer's ``(key, value)``, each ``(batch_size, kv_heads, P, head_dim)``."""


@runtime_checkable
class InputEmbeddingModule(Protocol):
    """An input-layer method's module: ``pre_seq_len`` virtual-token embeddings."""

    @property
    def pre_seq_len(self) -> int:
        """Number of virtual tokens ``P``."""

    def forward(self) -> torch.Tensor:
        """The virtual-token embeddings ``(P, hidden)`` (the same for every row)."""


#: ``build(settings, base_model, facts)`` -> the method's fresh module (a weight delta injects itself here)
BuildFn = Callable[[Any, nn.Module, ArchFacts], nn.Module]
#: ``text_init(module, base_model, token_ids)``: start the module from the base model's reading of a text
TextInitFn = Callable[[nn.Module, nn.Module, list[int]], None]
#: ``save(method, module, settings, out_dir, facts, meta)`` -> the written paths
SaveFn = Callable[["Method", nn.Module, Any, Path, ArchFacts, dict[str, Any]], list[Path]]
#: ``load(method, folder, data, settings, base_model, facts)`` -> the module with the saved weights
LoadFn = Callable[["Method", Path, dict[str, Any], Any, nn.Module, ArchFacts], nn.Module]


def build_from(module_class: type[nn.Module]) -> BuildFn:
    """The ``build`` of a method whose module is ``module_class(settings, facts)`` (most are)."""

    def build(settings: Any, model: nn.Module, facts: ArchFacts) -> nn.Module:
        return module_class(settings, facts)

    build.__doc__ = f"A fresh {module_class.__name__}(settings, facts)."
    return build


def save_adapter_files(method: Method, module: nn.Module, settings: Any, out_dir: Path, facts: ArchFacts,
                       meta: dict[str, Any]) -> list[Path]:
    """The default on-disk form: ``adapter.safetensors`` (the module's ``state_dict``) + ``adapter_config.json``."""
    return [save_tensors(module.state_dict(), out_dir / method.weights_file),
            write_adapter_config(out_dir, method.name, method.settings_to_dict(settings), facts, meta)]


def load_adapter_files(method: Method, folder: Path, data: dict[str, Any], settings: Any, model: nn.Module,
                       facts: ArchFacts) -> nn.Module:
    """The default load: a fresh module from ``build``, then the saved weights (DataError naming the tensor)."""
    weights = folder / method.weights_file
    tensors = load_tensors(weights)
    module = method.build(settings, model, facts)
    load_into(module, tensors, weights)
    return module


@dataclasses.dataclass(frozen=True)
class Method:
    """One tuning method, as its folder registers it.

    Attributes:
        name: the ``method.name`` of a train config and the ``method`` of a checkpoint's method JSON.
        settings_class: the frozen dataclass of its ``method.<name>`` config section (``to_dict()`` optional).
        kind: where the trained part enters the model (:class:`MethodKind`).
        build: a fresh module (randomly initialised; the RNG is the caller's).
        summary: one line for listings and docs.
        text_init: the ``init: text`` start, or None when the method has none.
        save / load: the on-disk form (default: ``adapter.safetensors`` + ``adapter_config.json``).
        config_file / weights_file: the method JSON and weights file names that ``save`` writes.
        peft_mapping: how the method maps onto a PEFT config (None: not mapped; filled in by the PEFT export).
    """

    name: str
    settings_class: type
    kind: MethodKind
    build: BuildFn
    summary: str = ""
    text_init: TextInitFn | None = None
    save: SaveFn = save_adapter_files
    load: LoadFn = load_adapter_files
    config_file: str = ADAPTER_CONFIG
    weights_file: str = ADAPTER_WEIGHTS
    peft_mapping: Any = None

    @property
    def has_virtual_tokens(self) -> bool:
        """Key/value and input-layer methods have ``pre_seq_len`` virtual tokens."""
        return self.kind in (MethodKind.KEY_VALUES, MethodKind.INPUT_EMBEDDINGS)

    @staticmethod
    def settings_to_dict(settings: Any) -> dict[str, Any]:
        """Plain-JSON view of a settings object (its ``to_dict()``, else the dataclass fields)."""
        if hasattr(settings, "to_dict"):
            return settings.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, replace: bool = False) -> Method:
    """Make ``method`` known by its name (ValueError if the name is taken, unless ``replace``); returns it."""
    if not method.name.isidentifier():
        raise ValueError(f"a method name must be an identifier (it is a config key), got {method.name!r}")
    if method.name in ("name", "cls_head"):
        raise ValueError(f"{method.name!r} is a key of the method section itself")
    if not dataclasses.is_dataclass(method.settings_class):
        raise ValueError(f"method {method.name}: settings_class must be a dataclass")
    if method.name in _REGISTRY and not replace and _REGISTRY[method.name] is not method:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Forget a method (tests that register a toy method clean up with this)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered method ``name`` (KeyError naming the known ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


def names_of_kind(*kinds: MethodKind) -> tuple[str, ...]:
    """The registered methods of the given kinds."""
    return tuple(n for n, m in _REGISTRY.items() if m.kind in kinds)


def check_module(method: Method, module: nn.Module) -> nn.Module:
    """``module`` if it offers what ``method.kind`` needs (TypeError naming what is missing)."""
    need = {MethodKind.KEY_VALUES: KeyValueModule, MethodKind.INPUT_EMBEDDINGS: InputEmbeddingModule}.get(method.kind)
    if not isinstance(module, nn.Module) or (need is not None and not isinstance(module, need)):
        raise TypeError(f"method {method.name}: build gave {type(module).__name__}, which is not a "
                        f"{need.__name__ if need else 'torch module'}")
    return module


__all__ = ["BuildFn", "build_from", "InputEmbeddingModule", "KeyValueModule", "LoadFn", "Method", "MethodKind", "SaveFn",
           "TextInitFn", "check_module", "get_method", "load_adapter_files", "method_names", "names_of_kind",
           "register_method", "save_adapter_files", "unregister_method"]

"""Tuning methods as peers, one folder each: ``pipeline/methods/<name>/`` holds its config, module, weights and
its registration (:mod:`pipeline.methods.registry`).

=================  ======================================================================================
``ptuning_v2``     P-Tuning v2 (ChatGLM ``ptuning``): trained key/values at every layer, no MLP by default
``prefix_tuning``  prefix tuning (Li & Liang): every layer's key/values from a reparameterisation MLP
``prompt_tuning``  prompt tuning (Lester et al.): trained input embeddings (soft prompt), random or text init
``ptuning_v1``     P-Tuning v1: input embeddings from an MLP or LSTM prompt encoder
``lora``           LoRA: low-rank updates of chosen linear layers
=================  ======================================================================================

plus the ``cls_head`` option (:mod:`pipeline.methods.cls_head`): a linear head per intent level over the
last token, trained with cross-entropy, for any method. The train config selects one::

    method:
      name: lora
      cls_head: false
      lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}

The section accepts ``name``, ``cls_head`` and one sub-section per *registered* method: this module lists
no method; it asks the registry (a method registered later, e.g. by a test, is accepted the same way).
Every prompt method calls its number of virtual tokens ``pre_seq_len`` (PEFT's ``num_virtual_tokens``).

On disk a checkpoint folder records its method in its method JSON: ``prefix_config.json`` for
``ptuning_v2`` (the historical name; older folders without a ``method`` key are ptuning_v2) and
``adapter_config.json`` + ``adapter.safetensors`` for the others (each method's ``save`` / ``load``);
``cls_head.safetensors`` holds the heads. :func:`read_method_config` reads either; :func:`load_adapters`
rebuilds any method on a base model and refuses one made for another model (exit-2 DataError). Methods sit
below the model library (:mod:`pipeline.models`), which wires :class:`Adapters` into the forward pass.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.core.config import ConfigError, build_dataclass
from pipeline.core.io import DataError
from pipeline.methods.base import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ArchFacts,
    check_arch,
    load_into,
    load_tensors,
    read_json_config,
    save_tensors,
    settings_from_dict,
)
from pipeline.methods.cls_head import CLS_HEAD_WEIGHTS, ClsHead, head_labels
from pipeline.methods.registry import (
    InputEmbeddingModule,
    KeyValueModule,
    Method,
    MethodKind,
    check_module,
    get_method,
    method_names,
    names_of_kind,
    register_method,
)

# the shipped methods register themselves on import (registration order = the order of listings and configs)
from pipeline.methods import ptuning_v2 as _ptuning_v2  # noqa: E402,F401,I001
from pipeline.methods import prefix_tuning as _prefix_tuning  # noqa: E402,F401
from pipeline.methods import prompt_tuning as _prompt_tuning  # noqa: E402,F401
from pipeline.methods import ptuning_v1 as _ptuning_v1  # noqa: E402,F401
from pipeline.methods import lora as _lora  # noqa: E402,F401
from pipeline.methods.ptuning_v2 import PREFIX_CONFIG, export_static_prefix  # noqa: E402

log = logging.getLogger(__name__)


def key_value_methods() -> tuple[str, ...]:
    """Methods whose trained part is every layer's prefix key/values."""
    return names_of_kind(MethodKind.KEY_VALUES)


def input_methods() -> tuple[str, ...]:
    """Methods whose trained part is input-layer virtual-token embeddings."""
    return names_of_kind(MethodKind.INPUT_EMBEDDINGS)


def prompt_methods() -> tuple[str, ...]:
    """Methods with virtual tokens (a ``pre_seq_len``)."""
    return names_of_kind(MethodKind.KEY_VALUES, MethodKind.INPUT_EMBEDDINGS)


def text_init_methods() -> tuple[str, ...]:
    """Methods with a text init (``init: text`` + ``init_text``)."""
    return tuple(n for n in method_names() if get_method(n).text_init is not None)


# ------------------------------------------------------------------------------------- the config section
class MethodConfig:
    """The ``method`` section of a train config: which method, the cls_head option, and each method's settings.

    Keys: ``name`` (a registered method; default ``ptuning_v2``), ``cls_head`` (also train a linear head per
    intent level over the prompt's last token, cross-entropy; evaluate/predict then answer from the heads'
    probabilities) and one sub-section per registered method, named like it, of its ``settings_class``
    (defaults where omitted). Frozen; ``config.method.<name>`` reads a sub-section. The typed config loader
    builds it through :meth:`from_mapping` (unknown keys are errors naming the accepted ones) and writes it
    through :meth:`to_mapping`.
    """

    __slots__ = ("name", "cls_head", "_sections")

    def __init__(self, name: str = "ptuning_v2", cls_head: bool = False, **sections: Any):
        if name not in method_names():
            raise ConfigError(f"method.name: {name!r} is not one of {list(method_names())}", key="method.name")
        unknown = sorted(set(sections) - set(method_names()))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join('method.' + k for k in unknown)}; MethodConfig accepts: "
                              f"{', '.join(sorted(['name', 'cls_head', *method_names()]))}", key=f"method.{unknown[0]}")
        filled: dict[str, Any] = {}
        for method in map(get_method, method_names()):
            value = sections.get(method.name, None)
            if value is None:
                value = method.settings_class()
            elif not isinstance(value, method.settings_class):
                raise TypeError(f"method.{method.name} must be a {method.settings_class.__name__}, got {value!r}")
            filled[method.name] = value
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "cls_head", bool(cls_head))
        object.__setattr__(self, "_sections", filled)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], prefix: str = "method.") -> MethodConfig:
        """Build from a YAML mapping: every sub-section typed by its method's settings class (ConfigError naming keys)."""
        allowed = ["name", "cls_head", *method_names()]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; MethodConfig accepts: "
                              f"{', '.join(sorted(allowed))}", key=prefix + unknown[0])
        name = data.get("name", "ptuning_v2")
        if name not in method_names():
            raise ConfigError(f"{prefix}name: {name!r} is not one of {list(method_names())}", key=prefix + "name")
        cls_head = data.get("cls_head", False)
        if not isinstance(cls_head, bool):
            raise ConfigError(f"{prefix}cls_head: expected true/false, got {cls_head!r}", key=prefix + "cls_head")
        sections = {}
        for key in method_names():
            value = data.get(key)
            if value is None:
                continue
            method = get_method(key)
            if isinstance(value, method.settings_class):
                sections[key] = value
            elif not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}: expected a mapping for {method.settings_class.__name__}, got "
                                  f"{value!r}", key=prefix + key)
            else:
                sections[key] = build_dataclass(method.settings_class, value, prefix=f"{prefix}{key}.")
        return cls(name=name, cls_head=cls_head, **sections)

    def to_mapping(self) -> dict[str, Any]:
        """``{"name", "cls_head", <method>: settings, ...}`` in registration order (what ``config_to_dict`` writes)."""
        return {"name": self.name, "cls_head": self.cls_head, **self._sections}

    def __getattr__(self, key: str) -> Any:
        sections = object.__getattribute__(self, "_sections")
        if key in sections:
            return sections[key]
        raise AttributeError(f"MethodConfig has no section {key!r}; registered methods: {', '.join(sections)}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {key!r}")

    def __reduce__(self) -> tuple[Any, ...]:  # pickle / deepcopy rebuild through __init__ (the object is frozen)
        return (_method_config, (self.name, self.cls_head, dict(self._sections)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodConfig) and self.to_mapping() == other.to_mapping()

    def __hash__(self) -> int:
        return hash((self.name, self.cls_head, tuple(self._sections.items())))

    def __repr__(self) -> str:
        return f"MethodConfig(name={self.name!r}, cls_head={self.cls_head}, {self.name}={self.settings!r})"

    @property
    def method(self) -> Method:
        """The selected method's registry entry."""
        return get_method(self.name)

    @property
    def settings(self) -> Any:
        """The sub-section of the selected method."""
        return self._sections[self.name]

    @property
    def pre_seq_len(self) -> int:
        """Virtual tokens of the selected method (0 for a method without, e.g. LoRA)."""
        return int(getattr(self.settings, "pre_seq_len", 0)) if self.method.has_virtual_tokens else 0


def _method_config(name: str, cls_head: bool, sections: dict[str, Any]) -> MethodConfig:
    """Rebuild a pickled :class:`MethodConfig`."""
    return MethodConfig(name, cls_head, **sections)


# ------------------------------------------------------------------------------------------ the bundle
@dataclasses.dataclass
class Adapters:
    """What a method adds to a frozen model: its module (by the method's kind) and the optional heads.

    * ``module``: a :class:`~pipeline.methods.registry.KeyValueModule` (key/value methods), an
      :class:`~pipeline.methods.registry.InputEmbeddingModule` (input-layer methods), a weight delta already
      injected into the base model (LoRA), or None (the bare base model);
    * ``cls_head``: the per-level :class:`ClsHead`, or None.

    ``method`` / ``settings`` are None for the bare base model (:func:`no_adapters`).
    """

    method: str | None
    settings: Any
    module: nn.Module | None = None
    cls_head: ClsHead | None = None

    @property
    def kind(self) -> MethodKind | None:
        """The method's kind (None for the bare base model)."""
        return get_method(self.method).kind if self.method is not None else None

    @property
    def prefix(self) -> KeyValueModule | None:
        """The key/value module, if the method is a key/value one."""
        return self.module if self.kind is MethodKind.KEY_VALUES else None

    @property
    def prompt(self) -> InputEmbeddingModule | None:
        """The virtual-token embedding module, if the method is an input-layer one."""
        return self.module if self.kind is MethodKind.INPUT_EMBEDDINGS else None

    @property
    def lora(self) -> nn.Module | None:
        """The injected weight delta, if the method is one (LoRA)."""
        return self.module if self.kind is MethodKind.WEIGHT_DELTA else None

    @property
    def pre_seq_len(self) -> int:
        """Virtual tokens in use: the one source of the prefix length (0 without virtual tokens)."""
        module = self.prefix if self.prefix is not None else self.prompt
        return int(module.pre_seq_len) if module is not None else 0

    @property
    def positions_after_prefix(self) -> bool:
        """Whether real tokens are numbered after the virtual tokens (always, for input-layer methods)."""
        return True if self.prefix is None else bool(self.prefix.positions_after_prefix)

    def modules(self) -> list[nn.Module]:
        """Every module present (method + heads)."""
        return [m for m in (self.module, self.cls_head) if m is not None]


def no_adapters() -> Adapters:
    """The bare base model: no method, no heads."""
    return Adapters(None, None)


def _built(method: Method, settings: Any, model: nn.Module, facts: ArchFacts) -> nn.Module | None:
    """``method.build`` checked against the method's interface (None only for a method's 'no tokens' setting)."""
    module = method.build(settings, model, facts)
    return None if module is None else check_module(method, module)


def build_adapters(method: MethodConfig, model: nn.Module, facts: ArchFacts) -> Adapters:
    """Fresh, randomly initialised adapters for ``method`` (a weight delta is injected into ``model`` here)."""
    entry = get_method(method.name)
    try:
        module = _built(entry, method.settings, model, facts)
    except ConfigError:
        raise
    except ValueError as exc:
        if entry.kind is MethodKind.WEIGHT_DELTA:  # e.g. LoRA targets that name no layer of this model: exit 2
            raise ConfigError(str(exc), key=f"method.{entry.name}.target_modules") from None
        raise
    out = Adapters(entry.name, method.settings, module)
    if method.cls_head:
        out.cls_head = ClsHead(facts)
    return out


def init_adapters_from_text(adapters: Adapters, model: nn.Module, token_ids: list[int]) -> None:
    """``init: text``: the method's own text init (P-Tuning v2: the model's key/values, prompt tuning: embeddings)."""
    entry = get_method(adapters.method) if adapters.method is not None else None
    if entry is None or entry.text_init is None:
        raise ValueError(f"method {adapters.method} has no text init")
    entry.text_init(adapters.module, model, token_ids)


# ----------------------------------------------------------------------------------------- save / load
def save_adapters(adapters: Adapters, out_dir: str | Path, facts: ArchFacts,
                  extra: dict[str, Any] | None = None) -> list[Path]:
    """Write the method's trained weights + method JSON (and the heads) into ``out_dir``; returns the paths.

    ``extra`` (model spec, step, prompts, ...) is merged into the JSON.
    """
    out_dir = Path(out_dir)
    if adapters.method is None or adapters.module is None:
        raise ValueError("nothing to save: the model has no adapter")
    meta = {"method": adapters.method, "cls_head": adapters.cls_head is not None, **(extra or {})}
    if adapters.cls_head is not None:
        meta["cls_labels"] = head_labels()
    entry = get_method(adapters.method)
    paths = entry.save(entry, adapters.module, adapters.settings, out_dir, facts, meta)
    if adapters.cls_head is not None:
        paths.append(save_tensors(adapters.cls_head.state_dict(), out_dir / CLS_HEAD_WEIGHTS))
    return paths


def export_static(adapters: Adapters, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write a key/value method's computed prefix as a P-Tuning v2 static export (encoder-free inference)."""
    if adapters.prefix is None:
        raise ValueError(f"a static prefix export needs one of {', '.join(key_value_methods())}, "
                         f"not {adapters.method}")
    return export_static_prefix(adapters.prefix, out_dir, {"source_method": adapters.method, **(extra or {})})


def method_config_path(folder: str | Path) -> Path:
    """The method JSON of a checkpoint folder: ``adapter_config.json``, else ``prefix_config.json``."""
    folder = Path(folder)
    adapter = folder / ADAPTER_CONFIG
    return adapter if adapter.exists() else folder / PREFIX_CONFIG


def read_method_config(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's method JSON with ``method`` filled in (``ptuning_v2`` for older folders).

    DataError (exit 2) when the folder holds no method JSON, it is invalid, or names an unknown method.
    A Hugging Face PEFT adapter folder and a THUDM ``ptuning/main.py`` checkpoint read as the JSON they amount to.
    """
    from pipeline.methods.peft_format import is_peft_folder, peft_method_config
    from pipeline.methods.ptuning_v2 import thudm

    if is_peft_folder(folder):  # a Hugging Face PEFT adapter (pipeline.methods.peft_format)
        return peft_method_config(folder)
    if thudm.is_thudm_prefix_dir(folder):  # THUDM's own prefix layout
        return thudm.thudm_method_config(folder)
    path = method_config_path(folder)
    if not path.exists():
        raise DataError(path, None, None, f"not a checkpoint folder: neither {ADAPTER_CONFIG} nor {PREFIX_CONFIG}")
    data = read_json_config(path)
    data.setdefault("method", "ptuning_v2")
    data.setdefault("cls_head", False)
    if data["method"] not in method_names():
        raise DataError(path, None, "method", f"unknown method {data['method']!r}; known: {', '.join(method_names())}")
    return data


def _settings(data: dict[str, Any], path: Path) -> Any:
    try:
        return settings_from_dict(get_method(data["method"]).settings_class, data)
    except (TypeError, ValueError) as exc:
        raise DataError(path, None, data["method"], f"bad method settings: {exc}") from None


def load_adapters(folder: str | Path, model: nn.Module, facts: ArchFacts,
                  data: dict[str, Any] | None = None) -> Adapters:
    """Rebuild the adapters saved in ``folder`` on ``model`` (a weight delta is injected into it).

    ``data``: the folder's method JSON when the caller has read it already (:func:`read_method_config`).
    Refuses (DataError, exit 2) a checkpoint made for another base model: model type or shape facts differ.
    """
    from pipeline.methods.peft_format import is_peft_folder, peft_adapter_parts
    from pipeline.methods.ptuning_v2 import thudm

    folder = Path(folder)
    if is_peft_folder(folder):  # a Hugging Face PEFT adapter (pipeline.methods.peft_format)
        parts = peft_adapter_parts(folder, model, facts)
        module = next(parts[k] for k in ("lora", "prefix", "prompt") if parts.get(k) is not None)
        return Adapters(parts["method"], parts["settings"], module)
    if thudm.is_thudm_prefix_dir(folder):  # THUDM's own prefix layout (positions from 0 after the prefix)
        prefix = thudm.load_thudm_prefix(folder, facts)
        return Adapters("ptuning_v2", prefix.config, prefix)
    data = read_method_config(folder) if data is None else data
    path = method_config_path(folder)
    check_arch(data["arch"], facts, path, what=f"{data['method']} checkpoint")
    entry = get_method(data["method"])
    settings = _settings(data, path)
    try:
        module = check_module(entry, entry.load(entry, folder, data, settings, model, facts))
    except ConfigError as exc:
        raise DataError(path, None, (exc.key or entry.name).rsplit(".", 1)[-1], str(exc)) from None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        field = "target_modules" if entry.kind is MethodKind.WEIGHT_DELTA else entry.name
        raise DataError(path, None, field, str(exc)) from None
    out = Adapters(entry.name, settings, module)
    if data.get("cls_head"):
        if data.get("cls_labels") != head_labels():
            raise DataError(path, None, "cls_labels", "the heads were trained on another label set than the "
                            "current taxonomy (pipeline/core/taxonomy.py)")
        out.cls_head = ClsHead(facts)
        load_into(out.cls_head, load_tensors(folder / CLS_HEAD_WEIGHTS), folder / CLS_HEAD_WEIGHTS)
    return out


def load_adapter_weights(adapters: Adapters, folder: str | Path) -> None:
    """Reload the trained weights of ``folder`` into existing adapters (a resume of the same run)."""
    folder = Path(folder)
    weights = folder / get_method(adapters.method).weights_file
    load_into(adapters.module, load_tensors(weights), weights)
    if adapters.cls_head is not None:
        load_into(adapters.cls_head, load_tensors(folder / CLS_HEAD_WEIGHTS), folder / CLS_HEAD_WEIGHTS)


def trainable_count(adapters: Adapters) -> int:
    """Trainable parameters of the adapters (method + heads)."""
    return sum(p.numel() for m in adapters.modules() for p in m.parameters())


__all__ = ["ADAPTER_WEIGHTS", "Adapters", "InputEmbeddingModule", "KeyValueModule", "Method", "MethodConfig",
           "MethodKind", "build_adapters", "export_static", "get_method", "init_adapters_from_text",
           "input_methods", "key_value_methods", "load_adapter_weights", "load_adapters", "method_config_path",
           "method_names", "no_adapters", "prompt_methods", "read_method_config", "register_method", "save_adapters",
           "text_init_methods", "trainable_count"]

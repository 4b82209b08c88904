"""Tuning methods as peers, one folder each: ``pipeline/methods/<name>/`` holds its config, module and weights.

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

Every prompt method calls its number of virtual tokens ``pre_seq_len`` (PEFT's ``num_virtual_tokens``).

On disk a checkpoint folder records its method in its method JSON: ``prefix_config.json`` for
``ptuning_v2`` (the historical name; older folders without a ``method`` key are ptuning_v2) and
``adapter_config.json`` + ``adapter.safetensors`` for the others; ``cls_head.safetensors`` holds the
heads. :func:`read_method_config` reads either; :func:`load_adapters` rebuilds any method on a base
model and refuses one made for another model (exit-2 DataError). Methods sit below the model library
(:mod:`pipeline.models`), which wires :class:`Adapters` into the forward pass.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

from torch import nn

from pipeline.core.config import ConfigError
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
    write_adapter_config,
)
from pipeline.methods.cls_head import CLS_HEAD_WEIGHTS, ClsHead, head_labels
from pipeline.methods.lora import LoraAdapter, LoraConfig, inject_lora
from pipeline.methods.peft_format import is_peft_folder, peft_adapter_parts, peft_method_config
from pipeline.methods.prefix_tuning import PrefixTuningConfig, PrefixTuningEncoder
from pipeline.methods.prompt_tuning import PromptTuningConfig, SoftPrompt, init_prompt_from_text
from pipeline.methods.ptuning_v1 import PromptEncoderV1, PTuningV1Config
from pipeline.methods.ptuning_v2 import (
    PREFIX_CONFIG,
    PREFIX_WEIGHTS,
    PrefixConfig,
    PrefixEncoder,
    export_static_prefix,
    init_prefix_from_text,
    load_prefix,
    save_prefix,
)
from pipeline.methods.ptuning_v2 import thudm

log = logging.getLogger(__name__)

#: Known method names (one folder each).
METHODS: tuple[str, ...] = ("ptuning_v2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora")
#: methods whose trained part is every layer's prefix key/values
KEY_VALUE_METHODS: tuple[str, ...] = ("ptuning_v2", "prefix_tuning")
#: methods whose trained part is input-layer virtual-token embeddings
INPUT_METHODS: tuple[str, ...] = ("prompt_tuning", "ptuning_v1")
#: methods with virtual tokens (a ``pre_seq_len``)
PROMPT_METHODS: tuple[str, ...] = KEY_VALUE_METHODS + INPUT_METHODS
#: methods with a text init (``init: text`` + ``init_text``)
TEXT_INIT_METHODS: tuple[str, ...] = ("ptuning_v2", "prompt_tuning")

SETTINGS_CLASSES: dict[str, type] = {"ptuning_v2": PrefixConfig, "prefix_tuning": PrefixTuningConfig,
                                     "prompt_tuning": PromptTuningConfig, "ptuning_v1": PTuningV1Config,
                                     "lora": LoraConfig}


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The ``method`` section of a train config: which method, the cls_head option, and each method's settings."""

    # the tuning method to train: ptuning_v2 | prefix_tuning | prompt_tuning | ptuning_v1 | lora
    name: Literal["ptuning_v2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora"] = "ptuning_v2"
    # also train a linear head per intent level over the prompt's last token (cross-entropy); evaluate/predict then
    # answer from the heads' probabilities
    cls_head: bool = False
    # P-Tuning v2 prefix settings (pre_seq_len 128, no projection, as in the paper)
    ptuning_v2: PrefixConfig = PrefixConfig()
    # prefix tuning settings (pre_seq_len, prefix_hidden_size of the reparameterisation MLP)
    prefix_tuning: PrefixTuningConfig = PrefixTuningConfig()
    # prompt tuning settings (pre_seq_len, init random | text, init_text)
    prompt_tuning: PromptTuningConfig = PromptTuningConfig()
    # P-Tuning v1 settings (pre_seq_len, encoder mlp | lstm, encoder_hidden_size)
    ptuning_v1: PTuningV1Config = PTuningV1Config()
    # LoRA settings (r, alpha, dropout, target_modules)
    lora: LoraConfig = LoraConfig()

    @property
    def settings(self) -> Any:
        """The sub-section of the selected method."""
        return getattr(self, self.name)

    @property
    def pre_seq_len(self) -> int:
        """Virtual tokens of the selected method (0 for LoRA)."""
        return int(getattr(self.settings, "pre_seq_len", 0))


# ------------------------------------------------------------------------------------------ the bundle
@dataclasses.dataclass
class Adapters:
    """What a method adds to a frozen model (at most one of ``prefix`` / ``prompt`` / ``lora``, plus heads).

    * ``prefix``: ``key_values(batch, dtype)`` -> every layer's ``(B, kv_heads, P, head_dim)`` pair
      (:class:`PrefixEncoder`, :class:`StaticPrefix`, :class:`PrefixTuningEncoder`);
    * ``prompt``: ``forward()`` -> input embeddings ``(P, hidden)`` (:class:`SoftPrompt`, :class:`PromptEncoderV1`);
    * ``lora``: the :class:`LoraAdapter` already injected into the base model;
    * ``cls_head``: the per-level :class:`ClsHead`, or None.
    """

    method: str
    settings: Any
    prefix: nn.Module | None = None
    prompt: nn.Module | None = None
    lora: LoraAdapter | None = None
    cls_head: ClsHead | None = None

    @property
    def main(self) -> nn.Module | None:
        """The method's own trained module (None for a base model)."""
        return self.prefix if self.prefix is not None else self.prompt if self.prompt is not None else self.lora

    def modules(self) -> list[nn.Module]:
        """Every module present (method + heads)."""
        return [m for m in (self.main, self.cls_head) if m is not None]


def none_adapters() -> Adapters:
    """The bare base model (P-Tuning v2 with no prefix: the historical 'no method' value)."""
    return Adapters("ptuning_v2", PrefixConfig(pre_seq_len=0))


def embedding_std(model: nn.Module) -> float:
    """Std of the model's vocabulary embeddings (the scale a random soft prompt starts at)."""
    return float(model.get_input_embeddings().weight.detach().float().std())


def build_adapters(method: MethodConfig, model: nn.Module, facts: ArchFacts) -> Adapters:
    """Fresh, randomly initialised adapters for ``method`` (LoRA is injected into ``model`` here)."""
    name, settings = method.name, method.settings
    out = Adapters(name, settings)
    if name == "ptuning_v2":
        out.prefix = PrefixEncoder(settings, facts) if settings.pre_seq_len > 0 else None
    elif name == "prefix_tuning":
        out.prefix = PrefixTuningEncoder(settings, facts)
    elif name == "prompt_tuning":
        out.prompt = SoftPrompt(settings, facts, init_std=embedding_std(model))
    elif name == "ptuning_v1":
        out.prompt = PromptEncoderV1(settings, facts)
    elif name == "lora":
        try:
            out.lora = inject_lora(model, settings)
        except ValueError as exc:  # a config naming no layer of this model: exit 2 naming the key
            raise ConfigError(str(exc), key="method.lora.target_modules") from None
    else:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    if method.cls_head:
        out.cls_head = ClsHead(facts)
    return out


def init_adapters_from_text(adapters: Adapters, model: nn.Module, token_ids: list[int]) -> None:
    """``init: text``: P-Tuning v2 gets the model's key/values of the tokens, prompt tuning their embeddings."""
    if adapters.method == "ptuning_v2":
        init_prefix_from_text(adapters.prefix, model, token_ids)
    elif adapters.method == "prompt_tuning":
        init_prompt_from_text(adapters.prompt, model.get_input_embeddings().weight, token_ids)
    else:
        raise ValueError(f"method {adapters.method} has no text init")


# ----------------------------------------------------------------------------------------- save / load
def save_adapters(adapters: Adapters, out_dir: str | Path, facts: ArchFacts,
                  extra: dict[str, Any] | None = None) -> list[Path]:
    """Write the method's trained weights + method JSON (and the heads) into ``out_dir``; returns the paths.

    ``extra`` (model spec, step, prompts, ...) is merged into the JSON.
    """
    out_dir = Path(out_dir)
    meta = {"method": adapters.method, "cls_head": adapters.cls_head is not None, **(extra or {})}
    if adapters.cls_head is not None:
        meta["cls_labels"] = head_labels()
    main = adapters.main
    if main is None:
        raise ValueError("nothing to save: the model has no adapter")
    if adapters.method == "ptuning_v2":
        if not isinstance(main, PrefixEncoder):
            raise ValueError("only a trainable PrefixEncoder can be saved (a static prefix is an export)")
        paths = save_prefix(main, out_dir, meta)
    else:
        paths = [save_tensors(main.state_dict(), out_dir / ADAPTER_WEIGHTS),
                 write_adapter_config(out_dir, adapters.method, adapters.settings.to_dict(), facts, meta)]
    if adapters.cls_head is not None:
        paths.append(save_tensors(adapters.cls_head.state_dict(), out_dir / CLS_HEAD_WEIGHTS))
    return paths


def export_static(adapters: Adapters, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write a key/value method's computed prefix as a P-Tuning v2 static export (encoder-free inference)."""
    if adapters.method not in KEY_VALUE_METHODS or adapters.prefix is None:
        raise ValueError(f"a static prefix export needs one of {', '.join(KEY_VALUE_METHODS)}, not {adapters.method}")
    return export_static_prefix(adapters.prefix, out_dir, {"source_method": adapters.method, **(extra or {})})


def method_config_path(folder: str | Path) -> Path:
    """The method JSON of a checkpoint folder: ``adapter_config.json``, else ``prefix_config.json``."""
    folder = Path(folder)
    adapter = folder / ADAPTER_CONFIG
    return adapter if adapter.exists() else folder / PREFIX_CONFIG


def read_method_config(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's method JSON with ``method`` filled in (``ptuning_v2`` for older folders).

    DataError (exit 2) when the folder holds no method JSON, it is invalid, or names an unknown method.
    A THUDM ``ptuning/main.py`` checkpoint reads as the ``ptuning_v2`` JSON it amounts to.
    """
    if is_peft_folder(folder):  # a Hugging Face PEFT adapter (pipeline.methods.peft_format)
        return peft_method_config(folder)
    if thudm.is_thudm_prefix_dir(folder):  # hook: THUDM's own prefix layout
        return thudm.thudm_method_config(folder)
    path = method_config_path(folder)
    if not path.exists():
        raise DataError(path, None, None, f"not a checkpoint folder: neither {ADAPTER_CONFIG} nor {PREFIX_CONFIG}")
    data = read_json_config(path)
    data.setdefault("method", "ptuning_v2")
    data.setdefault("cls_head", False)
    if data["method"] not in METHODS:
        raise DataError(path, None, "method", f"unknown method {data['method']!r}; known: {', '.join(METHODS)}")
    return data


def _settings(data: dict[str, Any], path: Path) -> Any:
    try:
        return settings_from_dict(SETTINGS_CLASSES[data["method"]], data)
    except (TypeError, ValueError) as exc:
        raise DataError(path, None, data["method"], f"bad method settings: {exc}") from None


def load_adapters(folder: str | Path, model: nn.Module, facts: ArchFacts) -> Adapters:
    """Rebuild the adapters saved in ``folder`` on ``model`` (LoRA is injected into it).

    Refuses (DataError, exit 2) a checkpoint made for another base model: model type or shape facts differ.
    """
    folder = Path(folder)
    if is_peft_folder(folder):  # a Hugging Face PEFT adapter (pipeline.methods.peft_format)
        return Adapters(**peft_adapter_parts(folder, model, facts))
    if thudm.is_thudm_prefix_dir(folder):  # hook: THUDM's own prefix layout (positions from 0 after the prefix)
        prefix = thudm.load_thudm_prefix(folder, facts)
        return Adapters("ptuning_v2", prefix.config, prefix=prefix)
    data = read_method_config(folder)
    path = method_config_path(folder)
    check_arch(data["arch"], facts, path, what=f"{data['method']} checkpoint")
    method = data["method"]
    out = Adapters(method, _settings(data, path))
    if method == "ptuning_v2":
        out.prefix = load_prefix(folder, facts)
    else:
        weights = folder / ADAPTER_WEIGHTS
        tensors = load_tensors(weights)
        if method == "prefix_tuning":
            out.prefix = PrefixTuningEncoder(out.settings, facts)
        elif method == "prompt_tuning":
            out.prompt = SoftPrompt(out.settings, facts)
        elif method == "ptuning_v1":
            out.prompt = PromptEncoderV1(out.settings, facts)
        else:
            try:
                out.lora = inject_lora(model, out.settings)
            except ValueError as exc:
                raise DataError(path, None, "target_modules", str(exc)) from None
        load_into(out.main, tensors, weights)
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
    weights = folder / (PREFIX_WEIGHTS if adapters.method == "ptuning_v2" else ADAPTER_WEIGHTS)
    load_into(adapters.main, load_tensors(weights), weights)
    if adapters.cls_head is not None:
        load_into(adapters.cls_head, load_tensors(folder / CLS_HEAD_WEIGHTS), folder / CLS_HEAD_WEIGHTS)


def trainable_count(adapters: Adapters) -> int:
    """Trainable parameters of the adapters (method + heads)."""
    return sum(p.numel() for m in adapters.modules() for p in m.parameters())


__all__ = ["INPUT_METHODS", "KEY_VALUE_METHODS", "METHODS", "PROMPT_METHODS", "SETTINGS_CLASSES",
           "TEXT_INIT_METHODS", "Adapters", "MethodConfig", "build_adapters", "embedding_std", "export_static",
           "init_adapters_from_text", "load_adapter_weights", "load_adapters", "method_config_path", "none_adapters",
           "read_method_config", "save_adapters", "trainable_count"]

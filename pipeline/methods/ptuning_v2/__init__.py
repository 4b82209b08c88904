"""P-Tuning v2 (ChatGLM ``ptuning``): a trained key/value prefix for every decoder layer.

* :class:`PrefixConfig` -- the method's settings (the ``method.ptuning_v2`` section of a train config);
* :class:`PrefixEncoder` / :class:`StaticPrefix` -- the module (trainable / exported key/values);
* :func:`save_prefix` / :func:`export_static_prefix` / :func:`load_prefix` -- the on-disk format.

:class:`pipeline.models.lm.AdaptedLM` puts the key/values into the base model's cache. The folder registers
the method :data:`PTUNING_V2` (:mod:`pipeline.methods.registry`).
"""

from pathlib import Path
from typing import Any

from torch import nn

from pipeline.methods.base import ArchFacts
from pipeline.methods.ptuning_v2.prefix import (
    FORMAT_VERSION,
    PREFIX_CONFIG,
    PREFIX_STATIC,
    PREFIX_WEIGHTS,
    STATIC_KEY,
    KeyValues,
    PrefixConfig,
    PrefixEncoder,
    PrefixFacts,
    StaticPrefix,
    build_prefix_encoder,
    check_facts,
    count_prefix_parameters,
    expand_key_values,
    init_prefix_from_text,
    repeat_to_length,
    text_key_values,
    export_static_prefix,
    load_prefix,
    output_cache,
    read_prefix_config,
    save_prefix,
    split_key_values,
)
from pipeline.methods.registry import Method, MethodKind, register_method



def build(settings: PrefixConfig, model: nn.Module, facts: ArchFacts) -> PrefixEncoder | None:
    """A fresh encoder (None for ``pre_seq_len: 0``: the bare base model)."""
    return PrefixEncoder(settings, facts) if settings.pre_seq_len > 0 else None


def text_init(encoder: PrefixEncoder, model: nn.Module, token_ids: list[int]) -> None:
    """``init: text``: the base model's own key/values of the tokens."""
    init_prefix_from_text(encoder, model, token_ids)


def save(method: Method, encoder: nn.Module, settings: PrefixConfig, out_dir: Path, facts: ArchFacts,
         meta: dict[str, Any]) -> list[Path]:
    """``prefix.safetensors`` + ``prefix_config.json`` (the historical layout)."""
    if not isinstance(encoder, PrefixEncoder):
        raise ValueError("only a trainable PrefixEncoder can be saved (a static prefix is an export)")
    return save_prefix(encoder, out_dir, meta)


def load(method: Method, folder: Path, data: dict[str, Any], settings: PrefixConfig, model: nn.Module,
         facts: ArchFacts) -> PrefixEncoder | StaticPrefix:
    """An encoder checkpoint or a static export (``kind`` of the JSON, read once by the caller)."""
    return load_prefix(folder, facts, data)


#: P-Tuning v2 in the method registry
PTUNING_V2 = register_method(Method(
    name="ptuning_v2", settings_class=PrefixConfig, kind=MethodKind.KEY_VALUES, build=build,
    summary="P-Tuning v2 (ChatGLM ptuning): trained key/values at every layer, no MLP by default",
    text_init=text_init, save=save, load=load, config_file=PREFIX_CONFIG, weights_file=PREFIX_WEIGHTS))

__all__ = [
    "PTUNING_V2", "FORMAT_VERSION", "PREFIX_CONFIG", "PREFIX_STATIC", "PREFIX_WEIGHTS", "STATIC_KEY", "KeyValues",
    "PrefixConfig", "PrefixEncoder", "PrefixFacts", "StaticPrefix", "build_prefix_encoder", "check_facts",
    "count_prefix_parameters", "expand_key_values", "export_static_prefix", "init_prefix_from_text", "load_prefix",
    "output_cache", "read_prefix_config", "repeat_to_length", "save_prefix", "split_key_values", "text_key_values",
]

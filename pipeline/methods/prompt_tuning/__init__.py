"""Prompt tuning (Lester et al.): an input-layer soft prompt. Config, module and text init; saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from torch import nn

from pipeline.methods.base import ArchFacts
from pipeline.methods.prompt_tuning.prompt import (
    PromptTuningConfig,
    SoftPrompt,
    count_prompt_tuning_parameters,
    init_prompt_from_text,
)
from pipeline.methods.registry import Method, MethodKind, register_method


def embedding_std(model: nn.Module) -> float:
    """Std of the model's vocabulary embeddings (the scale a random soft prompt starts at)."""
    return float(model.get_input_embeddings().weight.detach().float().std())


def build(settings: PromptTuningConfig, model: nn.Module, facts: ArchFacts) -> SoftPrompt:
    """A fresh soft prompt drawn at the scale of the model's own word embeddings."""
    return SoftPrompt(settings, facts, init_std=embedding_std(model))


def text_init(prompt: SoftPrompt, model: nn.Module, token_ids: list[int]) -> None:
    """``init: text``: the base model's word embeddings of the tokens."""
    init_prompt_from_text(prompt, model.get_input_embeddings().weight, token_ids)


#: prompt tuning in the method registry
PROMPT_TUNING = register_method(Method(
    name="prompt_tuning", settings_class=PromptTuningConfig, kind=MethodKind.INPUT_EMBEDDINGS, build=build,
    summary="prompt tuning (Lester et al.): trained input embeddings (soft prompt), random or text init",
    text_init=text_init))

__all__ = ["PROMPT_TUNING", "embedding_std", "PromptTuningConfig", "SoftPrompt", "count_prompt_tuning_parameters", "init_prompt_from_text"]

"""Prompt tuning (Lester et al.): an input-layer soft prompt. Config, module and text init; saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from pipeline.methods.prompt_tuning.prompt import (
    PromptTuningConfig,
    SoftPrompt,
    count_prompt_tuning_parameters,
    init_prompt_from_text,
)

__all__ = ["PromptTuningConfig", "SoftPrompt", "count_prompt_tuning_parameters", "init_prompt_from_text"]

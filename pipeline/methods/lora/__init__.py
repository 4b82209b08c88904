"""LoRA: low-rank updates on chosen linear layers of the frozen model. Saved by :mod:`pipeline.methods` as
``adapter.safetensors`` (LoRA weights only) + ``adapter_config.json``."""

from pipeline.methods.lora.lora import (
    LoraAdapter,
    LoraBranch,
    LoraConfig,
    LoraLinear,
    count_lora_parameters,
    count_lora_parameters_from_facts,
    inject_lora,
    matches,
)

__all__ = ["LoraAdapter", "LoraBranch", "LoraConfig", "LoraLinear", "count_lora_parameters",
           "count_lora_parameters_from_facts", "inject_lora", "matches"]

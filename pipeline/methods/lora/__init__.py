"""LoRA: low-rank updates on chosen linear layers of the frozen model. Saved by :mod:`pipeline.methods` as
``adapter.safetensors`` (LoRA weights only) + ``adapter_config.json``."""

from torch import nn

from pipeline.methods.base import ArchFacts
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
from pipeline.methods.registry import Method, MethodKind, register_method


def build(settings: LoraConfig, model: nn.Module, facts: ArchFacts) -> LoraAdapter:
    """Inject fresh LoRA branches into ``model`` (ValueError naming its linears when no target matches)."""
    return inject_lora(model, settings)


#: LoRA in the method registry
LORA = register_method(Method(
    name="lora", settings_class=LoraConfig, kind=MethodKind.WEIGHT_DELTA, build=build,
    summary="LoRA: low-rank updates of chosen linear layers"))

__all__ = ["LORA", "LoraAdapter", "LoraBranch", "LoraConfig", "LoraLinear", "count_lora_parameters",
           "count_lora_parameters_from_facts", "inject_lora", "matches"]

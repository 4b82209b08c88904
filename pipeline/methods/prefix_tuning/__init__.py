"""Prefix tuning (Li & Liang): per-layer key/value prefixes through a reparameterisation MLP. Saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from pipeline.methods.prefix_tuning.prefix import (
    PrefixTuningConfig,
    PrefixTuningEncoder,
    count_prefix_tuning_parameters,
)
from pipeline.methods.registry import Method, MethodKind, build_from, register_method

#: prefix tuning in the method registry
PREFIX_TUNING = register_method(Method(
    name="prefix_tuning", settings_class=PrefixTuningConfig, kind=MethodKind.KEY_VALUES,
    build=build_from(PrefixTuningEncoder),
    summary="prefix tuning (Li & Liang): every layer's key/values from a reparameterisation MLP"))

__all__ = ["PREFIX_TUNING", "PrefixTuningConfig", "PrefixTuningEncoder", "count_prefix_tuning_parameters"]

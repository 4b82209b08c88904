"""Prefix tuning (Li & Liang): per-layer key/value prefixes through a reparameterisation MLP. Saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from pipeline.methods.prefix_tuning.prefix import (
    PrefixTuningConfig,
    PrefixTuningEncoder,
    count_prefix_tuning_parameters,
)

__all__ = ["PrefixTuningConfig", "PrefixTuningEncoder", "count_prefix_tuning_parameters"]

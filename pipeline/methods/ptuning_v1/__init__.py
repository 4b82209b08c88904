"""P-Tuning v1: virtual-token embeddings from an MLP or LSTM prompt encoder, read at the input layer. Saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from pipeline.methods.ptuning_v1.encoder import PromptEncoderV1, PTuningV1Config, count_ptuning_v1_parameters
from pipeline.methods.registry import Method, MethodKind, build_from, register_method

#: P-Tuning v1 in the method registry
PTUNING_V1 = register_method(Method(
    name="ptuning_v1", settings_class=PTuningV1Config, kind=MethodKind.INPUT_EMBEDDINGS,
    build=build_from(PromptEncoderV1),
    summary="P-Tuning v1: input embeddings from an MLP or LSTM prompt encoder"))

__all__ = ["PTUNING_V1", "PTuningV1Config", "PromptEncoderV1", "count_ptuning_v1_parameters"]

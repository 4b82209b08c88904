"""P-Tuning v1: virtual-token embeddings from an MLP or LSTM prompt encoder, read at the input layer. Saved by
:mod:`pipeline.methods` as ``adapter.safetensors`` + ``adapter_config.json``."""

from pipeline.methods.ptuning_v1.encoder import PromptEncoderV1, PTuningV1Config, count_ptuning_v1_parameters

__all__ = ["PTuningV1Config", "PromptEncoderV1", "count_ptuning_v1_parameters"]

"""Tokenizers: the ONE loader of a model's tokenizer, and its pad id.

* :func:`load_tokenizer` -- a model folder's tokenizer with a pad token (EOS when missing); a
  converted ChatGLM folder gets ChatGLM's chat hook (``build_glm_prompt``);
* :func:`load_spec_tokenizer` -- the tokenizer of a model spec without loading (or converting)
  weights where possible (``smollm2``: the cached tokenizer alone), for token budgets;
* :func:`pad_token_id` -- the id batches are padded with (pad, else EOS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import chatglm
from pipeline.models.store import EMBEDDED_DEFAULT, load_smollm2_tokenizer, resolve_model_dir


def load_tokenizer(model_dir: str | Path) -> Any:
    """The model's tokenizer with a pad token (eos when missing). Padding side is set per use."""
    from transformers import AutoTokenizer

    if chatglm.is_converted_dir(Path(model_dir)):  # ChatGLM's own chat format (build_glm_prompt hook)
        tokenizer = chatglm.load_tokenizer(model_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_spec_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec: ``smollm2`` (the cached tokenizer, no weights), ``tiny:<name>`` or a folder."""
    if spec == EMBEDDED_DEFAULT:
        return load_smollm2_tokenizer()
    return load_tokenizer(resolve_model_dir(spec, weights=False))


def pad_token_id(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else its EOS (ValueError when it has neither)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad nor an EOS token")
    return int(pad)


__all__ = ["load_spec_tokenizer", "load_tokenizer", "pad_token_id"]

"""Load ChatGLM2-6B / ChatGLM3-6B checkpoints without ``trust_remote_code``.

THUDM ship ChatGLM2/3 with their own ``modeling_chatglm.py`` / ``tokenization_chatglm.py``,
which no longer run on current transformers. The architecture itself is exactly what
transformers' native :class:`~transformers.GlmForCausalLM` (``model_type: glm``) implements,
so we convert the folder once into a plain GLM folder and load that with the ordinary Auto
classes:

=====================================================  =============================================
ChatGLM2/3 tensor (``transformer.`` prefix)             GlmForCausalLM tensor
=====================================================  =============================================
``embedding.word_embeddings.weight``                   ``model.embed_tokens.weight``
``encoder.layers.N.input_layernorm.weight``            ``model.layers.N.input_layernorm.weight``
``encoder.layers.N.self_attention.query_key_value.*``  ``model.layers.N.self_attn.{q,k,v}_proj.*``
``encoder.layers.N.self_attention.dense.weight``       ``model.layers.N.self_attn.o_proj.weight``
``encoder.layers.N.post_attention_layernorm.weight``   ``model.layers.N.post_attention_layernorm.weight``
``encoder.layers.N.mlp.dense_h_to_4h.weight``          ``model.layers.N.mlp.gate_up_proj.weight``
``encoder.layers.N.mlp.dense_4h_to_h.weight``          ``model.layers.N.mlp.down_proj.weight``
``encoder.final_layernorm.weight``                     ``model.norm.weight``
``output_layer.weight``                                ``lm_head.weight``
``rotary_pos_emb.inv_freq``                            (dropped: recomputed from the config)
=====================================================  =============================================

* Fused QKV with multi-query attention: rows ``[q (heads*d) | k (groups*d) | v (groups*d)]``;
  without it, per head ``[q_h | k_h | v_h]``. Head ``h`` uses KV group ``h // (heads/groups)`` in
  both models (``repeat_kv`` is the same contiguous grouping).
* ``dense_h_to_4h`` emits ``[gate | up]`` and ChatGLM applies ``silu(gate) * up``: that is
  ``GlmMLP.gate_up_proj`` unchanged.
* RoPE on the first half of each head (``partial_rotary_factor 0.5``), rotating interleaved pairs
  ``(x[2i], x[2i+1])``: GLM's ``rotate_half`` / ``repeat_interleave`` does the same.
  ``rope_ratio`` (the 32k models) means two different things: ChatGLM3 (and GLM-4) scale the base
  (``rope_theta = 10000 * rope_ratio``), ChatGLM2-6B-32k divides the positions (linear
  interpolation, ``rope_type: linear, factor: rope_ratio``). We read which from the shipped
  ``modeling_chatglm.py`` when present, else from the variant.

The tokenizer is rebuilt from ``tokenizer.model`` (sentencepiece) as a ``tokenizers`` fast
tokenizer that encodes exactly like ``SentencePieceProcessor.encode``, with the ChatGLM special
tokens appended at ids ``sp_vocab + i`` (``[MASK] [gMASK] [sMASK] sop eop`` and, for ChatGLM3,
``<|system|> <|user|> <|assistant|> <|observation|>``). ``sop``/``eop`` are spelled ``<sop>`` /
``<eop>`` in the converted tokenizer (same ids) so that the plain words "sop"/"eop" in a
prompt are never swallowed as special tokens. With ``add_special_tokens=True`` it prepends
``[gMASK] <sop>`` like ChatGLM's own tokenizer; the chat format (ChatGLM2
``[Round 1]\\n\\n问：…\\n\\n答：``, ChatGLM3 ``<|user|>\\n…<|assistant|>``) is stored as a Jinja
``chat_template`` and offered as ``tokenizer.build_glm_prompt`` by :func:`load_tokenizer`.

GLM-4-9b-chat in the old ``chatglm`` layout converts the same way for the weights, but its
tokenizer is tiktoken, not sentencepiece: use the ``-hf`` release, which transformers loads
natively.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from pipeline.core.binary import read_torch, safetensors_header
from pipeline.core.io import DataError, read_json_object, write_json

log = logging.getLogger(__name__)

#: Bump when the converted layout changes: every cached conversion is then redone.
CONVERTER_VERSION = 1
#: Written into every converted folder; its presence marks a finished conversion.
MARKER_FILE = "chatglm_conversion.json"

Variant = Literal["chatglm", "chatglm2", "chatglm3"]
RopeScaling = Literal["theta", "linear", "none"]

#: ChatGLM2 special tokens, in id order after the sentencepiece vocabulary ("sop"/"eop" renamed).
GLM2_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>")
#: ChatGLM3 adds the role tokens after the ChatGLM2 ones.
GLM3_ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
#: Prompt prefix every ChatGLM input starts with.
GLM_PREFIX = "[gMASK]<sop>"

#: Single-turn chat formats (what ChatGLM's ``build_prompt`` / ``build_chat_input`` produce).
CHAT_FORMATS: dict[str, str] = {
    "chatglm": "{prompt}[gMASK]<sop>",
    "chatglm2": GLM_PREFIX + "[Round 1]\n\n问：{prompt}\n\n答：",
    "chatglm3": GLM_PREFIX + "<|user|>\n{prompt}<|assistant|>",
}

#: Jinja versions of the formats for ``apply_chat_template`` (multi-turn; ChatGLM2 has no system role).
CHAT_TEMPLATES: dict[str, str] = {
    # ChatGLM-6B's chat(): the bare query for a first turn, "[Round i]\n问：…\n答：…\n" rounds after it
    "chatglm": (
        "{% if messages | length == 1 %}{{ messages[0]['content'] }}{% else %}"
        "{% set ns = namespace(round=0) %}{% for message in messages %}"
        "{% if message['role'] == 'user' %}[Round {{ ns.round }}]\n问：{{ message['content'] }}\n答："
        "{% set ns.round = ns.round + 1 %}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] }}\n"
        "{% else %}{{ raise_exception('ChatGLM-6B has no ' + message['role'] + ' role') }}{% endif %}"
        "{% endfor %}{% endif %}[gMASK]<sop>"
    ),
    "chatglm2": (
        GLM_PREFIX + "{% set ns = namespace(round=0) %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}{% set ns.round = ns.round + 1 %}"
        "[Round {{ ns.round }}]\n\n问：{{ message['content'] }}\n\n答："
        "{% elif message['role'] == 'assistant' %}{{ message['content'] }}\n\n"
        "{% else %}{{ raise_exception('ChatGLM2 has no ' + message['role'] + ' role') }}{% endif %}"
        "{% endfor %}"
    ),
    "chatglm3": (
        GLM_PREFIX + "{% for message in messages %}"
        "{% if message['role'] in ['system', 'user', 'assistant', 'observation'] %}"
        "<|{{ message['role'] }}|>\n{{ message['content'] }}"
        "{% else %}{{ raise_exception('ChatGLM3 has no ' + message['role'] + ' role') }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    ),
}

#: The ChatGLM2-6B ``config.json`` (hyper-parameters only), for :func:`chatglm2_6b_glm_config`.
CHATGLM2_6B_CONFIG: dict[str, Any] = {
    "model_type": "chatglm", "num_layers": 28, "hidden_size": 4096, "ffn_hidden_size": 13696,
    "kv_channels": 128, "num_attention_heads": 32, "multi_query_attention": True,
    "multi_query_group_num": 2, "padded_vocab_size": 65024, "seq_length": 32768,
    "layernorm_epsilon": 1e-5, "rmsnorm": True, "add_bias_linear": False, "add_qkv_bias": True,
    "apply_residual_connection_post_layernorm": False, "post_layer_norm": True,
    "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float16",
}

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Source files whose size/mtime enter the cache key besides the weights.
TOKENIZER_FILES = ("tokenizer.model", "ice_text.model", "tokenizer_config.json", "tokenization_chatglm.py",
                   "modeling_chatglm.py")
#: ChatGLM-6B's special pieces (in ice_text.model itself) and the ones the tokenizer treats as control tokens
GLM6B_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>")
GLM6B_CONTROL_TOKENS = ("[MASK]", "<sop>", "<eop>")
#: ChatGLM-6B's whitespace pieces: "\n" -> <n>, "\t" -> <|tab|>, k >= 2 spaces -> <|blank_k|> (k <= 80)
GLM6B_MAX_BLANK = 80


# ------------------------------------------------------------------------------------ detection
def is_chatglm_dir(path: str | Path) -> bool:
    """True when ``path/config.json`` describes a THUDM ChatGLM checkpoint (remote-code layout), not a conversion."""
    if is_converted_dir(path):
        return False
    try:
        raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(raw, dict):
        return False
    archs = raw.get("architectures") or []
    auto_map = raw.get("auto_map") or {}
    return (
        raw.get("model_type") == "chatglm"
        or any(str(a).startswith("ChatGLM") for a in archs)
        or any("modeling_chatglm" in str(v) for v in auto_map.values())
    )


def is_converted_dir(path: str | Path) -> bool:
    """True for a folder written by :func:`convert_chatglm_to_glm` (it holds :data:`MARKER_FILE`)."""
    return (Path(path) / MARKER_FILE).is_file()


def _read_text_if_exists(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def is_chatglm6b(src: Path, raw: dict[str, Any]) -> bool:
    """True for a ChatGLM-6B (v1) folder: 2-D positions / ``inner_hidden_size`` in config.json, or ``ice_text.model``."""
    return ("position_encoding_2d" in raw or "inner_hidden_size" in raw or "gmask_token_id" in raw
            or (src / "ice_text.model").is_file())


def detect_variant(src: Path, raw: dict[str, Any]) -> Variant:
    """ChatGLM-6B for a v1 folder; ChatGLM3 when the tokenizer knows the role tokens (or the name says so);
    else ChatGLM2."""
    if is_chatglm6b(src, raw):
        return "chatglm"
    texts = [_read_text_if_exists(src / name) for name in ("tokenizer_config.json", "tokenization_chatglm.py")]
    if any("<|user|>" in t or "role_special_tokens" in t for t in texts):
        return "chatglm3"
    if "chatglm3" in str(raw.get("_name_or_path", "")).lower():
        return "chatglm3"
    return "chatglm2"


def detect_rope_scaling(src: Path, variant: Variant) -> RopeScaling:
    """How ``rope_ratio`` acts: ``linear`` (positions / ratio, ChatGLM2-32k), ``theta`` (base * ratio) or
    ``none`` (ignored).

    The shipped ``modeling_chatglm.py`` is authoritative (read as text, never executed): a file that
    never mentions ``rope_ratio`` (THUDM's chatglm2-6b / chatglm3-6b 8k releases) ignores a
    ``rope_ratio`` that a config.json may carry, so THUDM's code computes plain RoPE for that folder.
    Without a modeling file the variant's convention applies.
    """
    code = _read_text_if_exists(src / "modeling_chatglm.py")
    if re.search(r"arange\(\s*seq_len[^\n]*\)\s*/\s*self\.rope_ratio", code):
        return "linear"
    if re.search(r"base\s*=\s*base\s*\*\s*self\.rope_ratio|10000\s*\*\s*self\.rope_ratio", code):
        return "theta"
    if code and "rope_ratio" not in code:
        return "none"
    return "linear" if variant == "chatglm2" else "theta"


# --------------------------------------------------------------------------------------- config
def _check_supported(raw: dict[str, Any], config_path: Path) -> None:
    """Refuse ChatGLM options that :class:`GlmForCausalLM` cannot express, naming the field."""
    unsupported = {
        "rmsnorm": (True, "LayerNorm variants are not supported (GLM uses RMSNorm)"),
        "apply_residual_connection_post_layernorm": (False, "post-layernorm residuals are not supported"),
        "add_bias_linear": (False, "biases on the dense/MLP layers are not supported"),
        "post_layer_norm": (True, "a model without the final layer norm is not supported"),
        "quantization_bit": (0, "quantized checkpoints are not supported; use the float16 release"),
    }
    for field, (wanted, message) in unsupported.items():
        value = raw.get(field, wanted)
        if value not in (wanted, None):
            raise DataError(config_path, None, field, f"{message} (got {value!r})")
    for field in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads"):
        if not isinstance(raw.get(field), int) or raw[field] <= 0:
            raise DataError(config_path, None, field, f"expected a positive integer, got {raw.get(field)!r}")


def kv_layout(raw: dict[str, Any]) -> tuple[int, int, int, bool]:
    """``(heads, kv_groups, head_dim, multi_query)`` of a ChatGLM config."""
    heads = int(raw["num_attention_heads"])
    head_dim = int(raw.get("kv_channels") or raw["hidden_size"] // heads)
    mqa = bool(raw.get("multi_query_attention", False))
    groups = int(raw.get("multi_query_group_num", 1)) if mqa else heads
    return heads, groups, head_dim, mqa


def glm_config_from_chatglm(
    raw: dict[str, Any],
    variant: Variant = "chatglm2",
    rope_scaling: RopeScaling | None = None,
    config_path: Path = Path("config.json"),
):
    """Map a ChatGLM2/3 ``config.json`` dict to the equivalent :class:`transformers.GlmConfig`."""
    from transformers import GlmConfig

    _check_supported(raw, config_path)
    heads, groups, head_dim, _ = kv_layout(raw)
    if heads % groups:
        raise DataError(config_path, None, "multi_query_group_num", f"{groups} does not divide {heads} heads")
    ratio = float(raw.get("rope_ratio", 1.0) or 1.0)
    scaling = rope_scaling or ("linear" if variant == "chatglm2" else "theta")
    if scaling == "none":
        ratio = 1.0
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    if ratio != 1.0 and scaling == "theta":
        rope["rope_theta"] = 10000.0 * ratio
    elif ratio != 1.0:
        rope.update(rope_type="linear", factor=ratio)
    vocab = int(raw.get("padded_vocab_size") or raw.get("vocab_size"))
    eos = raw.get("eos_token_id", 2)
    config = GlmConfig(
        vocab_size=vocab,
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["ffn_hidden_size"]),
        num_hidden_layers=int(raw["num_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=head_dim,
        hidden_act="silu",
        attention_dropout=float(raw.get("attention_dropout", 0.0) or 0.0),
        max_position_embeddings=int(raw.get("seq_length", 2048)),
        rms_norm_eps=float(raw.get("layernorm_epsilon", 1e-5)),
        tie_word_embeddings=False,
        rope_parameters=rope,
        pad_token_id=int(raw.get("pad_token_id", 0) or 0),
        eos_token_id=eos,
        bos_token_id=None,
        attention_bias=bool(raw.get("add_qkv_bias", False) or raw.get("add_bias_linear", False)),
    )
    config.architectures = ["GlmForCausalLM"]
    return config


def chatglm2_6b_glm_config():
    """The :class:`~transformers.GlmConfig` of the real ChatGLM2-6B shape (for random-weight benchmarks).

    28 layers, hidden 4096, 32 heads over 2 KV groups, head_dim 128, SwiGLU ffn 13696,
    vocab 65024, RoPE on half of each head.
    """
    return glm_config_from_chatglm(dict(CHATGLM2_6B_CONFIG), "chatglm2")


# -------------------------------------------------------------------------------------- weights
def list_weight_files(src: Path) -> tuple[list[Path], Path | None]:
    """The checkpoint's weight files in order, plus the index file that listed them (if any).

    A shard named by an index but missing is a :class:`DataError` naming the index and the shard.
    """
    for index_name in WEIGHT_INDEXES:
        index_path = src / index_name
        if index_path.exists():
            weight_map = read_json_object(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise DataError(index_path, None, "weight_map", "missing or empty")
            names = list(dict.fromkeys(weight_map.values()))
            for name in names:
                if not (src / name).is_file():
                    raise DataError(index_path, None, "weight_map", f"shard {name} is missing from {src}")
            return [src / n for n in names], index_path
    for name in SINGLE_WEIGHTS:
        if (src / name).is_file():
            return [src / name], None
    shards = sorted(src.glob("model-*.safetensors")) or sorted(src.glob("pytorch_model-*.bin"))
    if not shards:
        raise DataError(src, None, None, "no weights found (model*.safetensors or pytorch_model*.bin)")
    return shards, None


def iter_shard_tensors(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor)`` from one shard, lazily (mmap/safe_open) so a 6B model never sits in RAM.

    An unreadable shard is a :class:`DataError` naming it.
    """
    if path.suffix == ".safetensors":
        safetensors_header(path)  # empty, truncated or not safetensors: DataError before any tensor
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                for name in fh.keys():
                    yield name, fh.get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a bad file
            raise DataError(path, None, None, f"cannot read weights: {type(exc).__name__}: {exc}") from None
        return
    state = read_torch(path, weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise DataError(path, None, None, f"expected a state dict, got {type(state).__name__}")
    yield from state.items()


_LAYER_RE = re.compile(r"^(?:transformer\.)?encoder\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP_MAP = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "encoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}


def split_qkv(tensor: Any, heads: int, groups: int, head_dim: int, multi_query: bool) -> tuple[Any, Any, Any]:
    """Split a fused ``query_key_value`` weight ``(qkv, hidden)`` or bias ``(qkv,)`` into q, k, v.

    Returns fresh (cloned) tensors shaped ``(heads*d, ...)``, ``(groups*d, ...)``, ``(groups*d, ...)``;
    cloning keeps safetensors from refusing tensors that share one storage.
    """
    tail = tuple(tensor.shape[1:])
    if multi_query:
        q, k, v = tensor.split([heads * head_dim, groups * head_dim, groups * head_dim], dim=0)
    else:  # per head [q_h | k_h | v_h]
        per_head = tensor.reshape(heads, 3, head_dim, *tail)
        q, k, v = (per_head[:, i].reshape(heads * head_dim, *tail) for i in range(3))
    return q.clone(), k.clone(), v.clone()


def rename_tensor(name: str, tensor: Any, raw: dict[str, Any]) -> list[tuple[str, Any]]:
    """GLM name(s) and tensor(s) for one ChatGLM tensor; ``[]`` for tensors GLM recomputes or lacks."""
    bare = name.removeprefix("transformer.")
    if bare in _TOP_MAP:
        return [(_TOP_MAP[bare], tensor)]
    if bare.endswith("rotary_pos_emb.inv_freq"):
        return []  # recomputed from rope_parameters
    if bare.startswith("prefix_encoder."):
        log.warning("dropping %s: a ChatGLM ptuning prefix is not part of the base model", name)
        return []
    match = _LAYER_RE.match(name)
    if match is None:
        raise KeyError(name)
    layer, rest = match.groups()
    base = f"model.layers.{layer}."
    if rest in _LAYER_MAP:
        return [(base + _LAYER_MAP[rest], tensor)]
    if rest.startswith("self_attention.query_key_value."):
        kind = rest.rsplit(".", 1)[1]  # weight | bias
        parts = split_qkv(tensor, *kv_layout(raw))
        return [(f"{base}self_attn.{p}_proj.{kind}", t) for p, t in zip("qkv", parts)]
    raise KeyError(name)


def expected_tensors(config: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a ``GlmForCausalLM(config)`` holds (built on the meta device)."""
    import torch
    from transformers import GlmForCausalLM

    with torch.device("meta"):
        model = GlmForCausalLM(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_weights(src: Path, out: Path, raw: dict[str, Any], config: Any, rename: Any = None,
                    expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Stream every source shard into a safetensors shard under ``out``; return stats.

    ``rename(name, tensor, raw)`` gives the target name(s) (default :func:`rename_tensor`, ChatGLM2/3 -> GLM);
    ``expected`` the target names and shapes (default: those of ``GlmForCausalLM(config)``).
    One output shard per input shard, so peak memory is one shard. Unknown, missing or
    mis-shaped tensors are a :class:`DataError` naming the shard (or the config).
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    files, index_path = list_weight_files(src)
    rename = rename or rename_tensor
    expected = expected if expected is not None else expected_tensors(config)
    n = len(files)
    weight_map: dict[str, str] = {}
    total_bytes = 0
    dtypes: set[str] = set()
    for i, path in enumerate(tqdm(files, desc="convert chatglm shards", unit="shard", disable=n < 2)):
        out_name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        converted: dict[str, Any] = {}
        for name, tensor in iter_shard_tensors(path):
            try:
                pairs = rename(name, tensor, raw)
            except KeyError:
                raise DataError(path, None, name, "unknown ChatGLM tensor name") from None
            for new_name, new_tensor in pairs:
                want = expected.get(new_name)
                if want is None:
                    raise DataError(path, None, name, f"maps to {new_name}, which the GLM config does not have")
                if tuple(new_tensor.shape) != want:
                    raise DataError(path, None, name,
                                    f"shape {tuple(new_tensor.shape)} for {new_name}, config implies {want}")
                if new_name in weight_map or new_name in converted:
                    raise DataError(path, None, name, f"{new_name} appears twice")
                converted[new_name] = new_tensor.contiguous()
                dtypes.add(str(new_tensor.dtype).removeprefix("torch."))
        if converted:
            save_file(converted, str(out / out_name), metadata={"format": "pt"})
            total_bytes += sum(t.numel() * t.element_size() for t in converted.values())
            weight_map.update(dict.fromkeys(converted, out_name))
        del converted
    missing = sorted(set(expected) - set(weight_map))
    if missing:
        where = index_path or (src / "config.json")
        raise DataError(where, None, missing[0],
                        f"{len(missing)} tensor(s) missing from the checkpoint, e.g. {', '.join(missing[:3])}")
    if n > 1:
        write_json(out / "model.safetensors.index.json",
                   {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))})
    return {"shards": n, "tensors": len(weight_map), "bytes": total_bytes, "dtypes": sorted(dtypes)}


# ------------------------------------------------------------------------------------ ChatGLM-6B
def chatglm6b_config(raw: dict[str, Any], config_path: Path = Path("config.json")):
    """The native :class:`~pipeline.models.chatglm6b.ChatGLM6BConfig` of a THUDM ChatGLM-6B ``config.json``."""
    from pipeline.models.chatglm6b import ChatGLM6BConfig

    if raw.get("position_encoding_2d", True) is not True:
        raise DataError(config_path, None, "position_encoding_2d", "only ChatGLM-6B's 2-D positions are supported")
    if raw.get("quantization_bit", 0) not in (0, None):
        raise DataError(config_path, None, "quantization_bit", "quantized checkpoints are not supported")
    for field in ("num_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        if not isinstance(raw.get(field), int) or raw[field] <= 0:
            raise DataError(config_path, None, field, f"expected a positive integer, got {raw.get(field)!r}")
    keys = ("vocab_size", "hidden_size", "num_layers", "num_attention_heads", "layernorm_epsilon",
            "max_sequence_length", "bos_token_id", "eos_token_id", "mask_token_id", "gmask_token_id", "pad_token_id")
    kwargs = {k: raw[k] for k in keys if raw.get(k) is not None}
    kwargs["inner_hidden_size"] = int(raw.get("inner_hidden_size") or 4 * raw["hidden_size"])
    kwargs["tie_word_embeddings"] = bool(raw.get("tie_word_embeddings", True))  # transformers' default
    config = ChatGLM6BConfig(**kwargs)
    config.architectures = ["ChatGLM6BForCausalLM"]
    return config


def checkpoint_tensor_names(src: Path) -> set[str]:
    """Every tensor name of a checkpoint (from the index, else from the shards' keys)."""
    files, index_path = list_weight_files(src)
    if index_path is not None:
        return set(read_json_object(index_path)["weight_map"])
    return {name for path in files for name, _ in iter_shard_tensors(path)}


def chatglm6b_renamer(src: Path, tied: bool):
    """``rename(name, tensor, raw)`` for ChatGLM-6B: THUDM's names are kept; rotary buffers and a ptuning prefix
    are dropped; with tied embeddings the one matrix is ``lm_head.weight`` when the checkpoint has it (THUDM's
    loader ties the two and the output embedding, loaded last, is what both ends use)."""
    has_head = tied and "lm_head.weight" in checkpoint_tensor_names(src)
    embed = "transformer.word_embeddings.weight"

    def rename(name: str, tensor: Any, raw: dict[str, Any]) -> list[tuple[str, Any]]:
        if name.endswith("rotary_emb.inv_freq"):
            return []
        if name.startswith("transformer.prefix_encoder."):
            log.warning("dropping %s: a ChatGLM ptuning prefix is not part of the base model", name)
            return []
        if tied and name == "lm_head.weight":
            return [(embed, tensor)]
        if has_head and name == embed:
            return []
        return [(name, tensor)]

    return rename


def chatglm6b_expected_tensors(config: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a ``ChatGLM6BForCausalLM(config)`` stores (the tied head left out)."""
    import torch

    from pipeline.models.chatglm6b import ChatGLM6BForCausalLM

    with torch.device("meta"):
        model = ChatGLM6BForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def build_chatglm6b_tokenizer(sp_model: str | Path, num_image_tokens: int = 20000, model_max_length: int = 2048):
    """A fast tokenizer equivalent to ChatGLM-6B's ``ChatGLMTokenizer`` (no remote code).

    ``ice_text.model`` pieces get ids ``num_image_tokens + sentencepiece id`` (ids below are ``<image_i>``);
    before sentencepiece, ``"\\n"`` becomes ``<n>``, ``"\\t"`` ``<|tab|>`` and a run of k >= 2 spaces
    ``<|blank_k|>`` (longest first, k <= 80), as THUDM's ``SPTokenizer._preprocess`` does, and decoding
    undoes it. ``add_special_tokens=True`` appends ``[gMASK] <sop>``; eos ``<eop>``, pad ``<pad>``, left padding.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, decoders, normalizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    sp_model = Path(sp_model)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(sp_model))
        proto = read_sentencepiece_proto(sp_model)
    except Exception as exc:  # noqa: BLE001 - sentencepiece raises OSError/RuntimeError for a bad file
        raise DataError(sp_model, None, None, f"not a sentencepiece model ({exc})") from None
    images = [SimpleNamespace(piece=f"<image_{i}>", score=0.0, type=5) for i in range(num_image_tokens)]
    shifted = SimpleNamespace(pieces=images + proto.pieces, trainer_spec=proto.trainer_spec,
                              normalizer_spec=proto.normalizer_spec)
    vocab = {p.piece: i for i, p in enumerate(shifted.pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(shifted, vocab)
    if backend is None:
        raise DataError(sp_model, None, None, "unsupported sentencepiece model type")
    blanks = [(" " * k, f"<|blank_{k}|>") for k in range(GLM6B_MAX_BLANK, 1, -1)]
    ws = [("\n", "<n>"), ("\t", "<|tab|>"), *blanks]
    backend.normalizer = normalizers.Sequence([*(normalizers.Replace(a, b) for a, b in ws), backend.normalizer])
    backend.decoder = decoders.Sequence([*(decoders.Replace(b, a) for a, b in ws), backend.decoder])
    missing = [t for t in (*GLM6B_SPECIAL_TOKENS, "<pad>", "<unk>") if t not in vocab]
    if missing:
        raise DataError(sp_model, None, None, f"not a ChatGLM-6B ice_text.model: no piece {missing[0]!r}")
    # THUDM's (slow) tokenizer registers bos/eos/mask as special tokens, matched in text with the spaces around
    # them stripped; [gMASK] / [sMASK] are plain user-defined pieces of ice_text.model (sentencepiece's rules)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=True, rstrip=True)
                                for t in GLM6B_CONTROL_TOKENS])
    backend.post_processor = TemplateProcessing(
        single="$A [gMASK] <sop>", pair="$A [gMASK] <sop> $B <eop>",
        special_tokens=[(t, vocab[t]) for t in ("[gMASK]", "<sop>", "<eop>")])
    if len(vocab) != num_image_tokens + sp.vocab_size():
        raise DataError(sp_model, None, None, "duplicate pieces in the sentencepiece model")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<eop>", bos_token="<sop>", pad_token="<pad>",
        mask_token="[MASK]", padding_side="left", model_max_length=model_max_length,
        extra_special_tokens=list(GLM6B_CONTROL_TOKENS), chat_template=CHAT_TEMPLATES["chatglm"],
    )


def prepare_chatglm6b(src: Path, raw: dict[str, Any], config_path: Path) -> tuple[Any, Any, Any, Any]:
    """``(config, tokenizer, rename, expected)`` for converting the ChatGLM-6B folder ``src``."""
    config = chatglm6b_config(raw, config_path)
    sp_path = src / "ice_text.model"
    if not sp_path.is_file():
        raise DataError(sp_path, None, None, "file does not exist (ChatGLM-6B's sentencepiece tokenizer is needed)")
    tok_cfg_path = src / "tokenizer_config.json"
    tok_cfg = read_json_object(tok_cfg_path) if tok_cfg_path.is_file() else {}
    images = int(tok_cfg.get("num_image_tokens", 20000) or 0)
    tokenizer = build_chatglm6b_tokenizer(sp_path, images, model_max_length=config.max_sequence_length)
    if len(tokenizer) > config.vocab_size:
        raise DataError(config_path, None, "vocab_size", f"{config.vocab_size} rows but the tokenizer has {len(tokenizer)}")
    for field, token in (("bos_token_id", "<sop>"), ("eos_token_id", "<eop>"), ("gmask_token_id", "[gMASK]"),
                         ("mask_token_id", "[MASK]")):
        if getattr(config, field) != tokenizer.convert_tokens_to_ids(token):
            raise DataError(config_path, None, field, f"{getattr(config, field)} is not the tokenizer's {token} "
                            f"({tokenizer.convert_tokens_to_ids(token)}; num_image_tokens {images})")
    return config, tokenizer, chatglm6b_renamer(src, config.tie_word_embeddings), chatglm6b_expected_tensors(config)


# ------------------------------------------------------------------------------------ tokenizer
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """Yield ``(field_number, raw value)`` of a protobuf message (varint, fixed32/64, bytes)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield field, value


def read_sentencepiece_proto(path: Path) -> SimpleNamespace:
    """The parts of a sentencepiece ``ModelProto`` the tokenizer conversion needs.

    ``protobuf`` is not a dependency, so the few fields are read off the wire format
    (field numbers from sentencepiece_model.proto: pieces=1 {piece=1, score=2, type=3},
    trainer_spec=2 {model_type=3, byte_fallback=35, unk_id=40, unk_piece=45},
    normalizer_spec=3 {name=1, precompiled_charsmap=2, add_dummy_prefix=3,
    remove_extra_whitespaces=4, escape_whitespaces=5}); defaults as in the proto.
    """
    data = path.read_bytes()
    pieces: list[SimpleNamespace] = []
    trainer = SimpleNamespace(model_type=1, byte_fallback=False, unk_id=0, unk_piece="<unk>")
    norm = SimpleNamespace(name="", precompiled_charsmap=b"", add_dummy_prefix=True,
                           remove_extra_whitespaces=True, escape_whitespaces=True)
    for field, value in _proto_fields(data):
        if field == 1:
            piece = SimpleNamespace(piece="", score=0.0, type=1)
            for f, v in _proto_fields(value):
                if f == 1:
                    piece.piece = bytes(v).decode("utf-8")
                elif f == 2:
                    piece.score = struct.unpack("<f", v)[0]
                elif f == 3:
                    piece.type = v
            pieces.append(piece)
        elif field == 2:
            for f, v in _proto_fields(value):
                if f == 3:
                    trainer.model_type = v
                elif f == 35:
                    trainer.byte_fallback = bool(v)
                elif f == 40:
                    trainer.unk_id = v
                elif f == 45:
                    trainer.unk_piece = bytes(v).decode("utf-8")
        elif field == 3:
            for f, v in _proto_fields(value):
                if f == 1:
                    norm.name = bytes(v).decode("utf-8")
                elif f == 2:
                    norm.precompiled_charsmap = bytes(v)
                elif f in (3, 4, 5):
                    setattr(norm, {3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                                   5: "escape_whitespaces"}[f], bool(v))
    return SimpleNamespace(pieces=pieces, trainer_spec=trainer, normalizer_spec=norm)


def special_tokens_for(variant: Variant) -> tuple[str, ...]:
    """Special tokens in id order after the sentencepiece vocabulary."""
    return GLM2_SPECIAL_TOKENS + (GLM3_ROLE_TOKENS if variant == "chatglm3" else ())


def build_chatglm_tokenizer(sp_model: str | Path, variant: Variant = "chatglm2", model_max_length: int = 32768):
    """A fast tokenizer equivalent to ChatGLM2/3's sentencepiece tokenizer (no remote code).

    Plain text encodes exactly like ``SentencePieceProcessor.encode``; special tokens get ids
    ``sp_vocab_size + i``; ``add_special_tokens=True`` prepends ``[gMASK] <sop>`` (pairs end with
    ``</s>``); eos ``</s>``, pad ``<unk>`` (id 0, ChatGLM's pad id), left padding by default.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    sp_model = Path(sp_model)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(sp_model))
        proto = read_sentencepiece_proto(sp_model)
    except Exception as exc:  # noqa: BLE001 - sentencepiece raises OSError/RuntimeError for a bad file
        raise DataError(sp_model, None, None,
                        f"not a sentencepiece model ({exc}); GLM-4's tiktoken tokenizer is not supported, "
                        "use the -hf release") from None
    if len(proto.pieces) != sp.vocab_size():
        raise DataError(sp_model, None, None, f"parsed {len(proto.pieces)} pieces, sentencepiece has {sp.vocab_size()}")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise DataError(sp_model, None, None, "unsupported sentencepiece model type")
    specials = special_tokens_for(variant)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    ids = {t: backend.token_to_id(t) for t in specials}
    if list(ids.values()) != list(range(sp.vocab_size(), sp.vocab_size() + len(specials))):
        raise DataError(sp_model, None, None, f"special tokens collide with the vocabulary: {ids}")
    eos_id = sp.eos_id()
    eos = proto.pieces[eos_id].piece
    backend.post_processor = TemplateProcessing(
        single="[gMASK] <sop> $A",
        pair=f"[gMASK] <sop> $A $B {eos}",
        special_tokens=[("[gMASK]", ids["[gMASK]"]), ("<sop>", ids["<sop>"]), (eos, eos_id)],
    )
    unk = proto.pieces[sp.unk_id()].piece
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk,
        eos_token=eos,
        pad_token=unk,
        padding_side="left",
        model_max_length=model_max_length,
        extra_special_tokens=list(specials),
        chat_template=CHAT_TEMPLATES[variant],
    )


def format_glm_prompt(prompt: str, variant: Variant = "chatglm2") -> str:
    """ChatGLM's single-turn chat string, prefix tokens included (for display; ids: :func:`encode_glm_prompt`)."""
    return CHAT_FORMATS[variant].format(prompt=prompt)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain ``text``: special-token spellings typed in it (``<|user|>``, ``[gMASK]``, ``</s>``)
    stay text, as in THUDM's tokenizers, so user input can never forge a turn or a mask."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_glm_prompt(tokenizer: Any, prompt: str, variant: Variant = "chatglm2") -> list[int]:
    """The ids THUDM's chat code feeds the model for one user turn, built from pieces (never by parsing text).

    * ChatGLM2 (``build_prompt`` then the tokenizer): ``[gMASK] <sop>`` + ``"[Round 1]\\n\\n问：{prompt}\\n\\n答："``;
    * ChatGLM3 (``build_chat_input``): ``[gMASK] <sop> <|user|>`` + ``encode("\\n")`` + ``encode(prompt)`` +
      ``<|assistant|>`` -- header and message are encoded apart, so the message starts with its own "▁";
    * ChatGLM-6B: ``encode(prompt)`` + ``[gMASK] <sop>`` (its ``build_inputs_with_special_tokens``).
    """
    ids = tokenizer.convert_tokens_to_ids
    if variant == "chatglm":
        return encode_text(tokenizer, prompt) + [ids("[gMASK]"), ids("<sop>")]
    head = [ids("[gMASK]"), ids("<sop>")]
    if variant == "chatglm3":
        return [*head, ids("<|user|>"), *encode_text(tokenizer, "\n"), *encode_text(tokenizer, prompt),
                ids("<|assistant|>")]
    return head + encode_text(tokenizer, CHAT_FORMATS[variant].removeprefix(GLM_PREFIX).format(prompt=prompt))


def load_tokenizer(model_dir: str | Path):
    """The converted folder's tokenizer with ``build_glm_prompt(prompt)`` / ``encode_glm_prompt(tokenizer, prompt)``
    hooks for :mod:`pipeline.models.lm`."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    marker = read_json_object(model_dir / MARKER_FILE) if is_converted_dir(model_dir) else {}
    variant = marker.get("variant", "chatglm2")
    # partials of module-level functions keep the tokenizer picklable (datasets.map workers)
    tokenizer.build_glm_prompt = functools.partial(format_glm_prompt, variant=variant)
    tokenizer.encode_glm_prompt = functools.partial(encode_glm_prompt, variant=variant)
    return tokenizer


# ------------------------------------------------------------------------------------ conversion
def convert_chatglm_to_glm(src_dir: str | Path, dst_dir: str | Path, variant: Variant | None = None) -> Path:
    """Convert a ChatGLM2/3 folder into a native GLM folder at ``dst_dir`` (must not exist yet); a ChatGLM-6B
    folder into a native ``chatglm6b`` folder (:mod:`pipeline.models.chatglm6b`).

    Writes ``config.json``, ``generation_config.json``, safetensors shards (+ index), the
    tokenizer and :data:`MARKER_FILE` into a temp folder next to ``dst_dir``, then renames it,
    so a crash never leaves a half-converted folder. Returns ``dst_dir``.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    config_path = src / "config.json"
    raw = read_json_object(config_path)
    if not is_chatglm_dir(src):
        raise DataError(config_path, None, "model_type", f"not a ChatGLM checkpoint ({raw.get('model_type')!r})")
    variant = variant or detect_variant(src, raw)
    rename = expected = None
    if variant == "chatglm":  # ChatGLM-6B: its own native architecture, THUDM's tensor names
        scaling = "none"
        config, tokenizer, rename, expected = prepare_chatglm6b(src, raw, config_path)
        return _write_converted(src, dst, raw, variant, scaling, config, tokenizer, rename, expected)
    scaling = detect_rope_scaling(src, variant)
    config = glm_config_from_chatglm(raw, variant, scaling, config_path)
    sp_path = src / "tokenizer.model"
    if not sp_path.is_file():
        raise DataError(sp_path, None, None, "file does not exist (the sentencepiece tokenizer is needed)")
    tokenizer = build_chatglm_tokenizer(sp_path, variant, model_max_length=config.max_position_embeddings)
    if variant == "chatglm3":  # ChatGLM3's chat() also stops at the next user / observation turn
        eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        extra = [tokenizer.convert_tokens_to_ids(t) for t in ("<|user|>", "<|observation|>")]
        config.eos_token_id = list(dict.fromkeys([*eos, *extra]))
    if len(tokenizer) > config.vocab_size:
        raise DataError(config_path, None, "padded_vocab_size",
                        f"{config.vocab_size} rows but the tokenizer has {len(tokenizer)} tokens")
    return _write_converted(src, dst, raw, variant, scaling, config, tokenizer, rename, expected)


def _write_converted(src: Path, dst: Path, raw: dict[str, Any], variant: Variant, scaling: RopeScaling, config: Any,
                     tokenizer: Any, rename: Any, expected: Any) -> Path:
    """Write the converted folder into a temp folder next to ``dst``, then rename it into place."""
    from transformers import GenerationConfig

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        log.info("converting ChatGLM checkpoint %s (%s, rope %s) to GLM at %s", src, variant, scaling, dst)
        stats = convert_weights(src, tmp, raw, config, rename, expected)
        if len(stats["dtypes"]) == 1:  # record the stored dtype, as from_pretrained(dtype="auto") reads it
            config.dtype = stats["dtypes"][0]
        config.save_pretrained(tmp)
        GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MARKER_FILE, {
            "converter_version": CONVERTER_VERSION, "source": str(src.resolve()), "variant": variant,
            "rope_scaling": scaling, "rope_ratio": raw.get("rope_ratio", 1), "fingerprint": source_fingerprint(src),
            "chat_format": CHAT_FORMATS[variant], **stats,
        })
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def source_fingerprint(src: str | Path) -> str:
    """Hash of the converter version, ``config.json`` bytes and the (name, size, mtime) of weights/tokenizer."""
    src = Path(src)
    h = hashlib.sha256(f"v{CONVERTER_VERSION}\n".encode())
    h.update((src / "config.json").read_bytes())
    try:
        weights, index = list_weight_files(src)
    except DataError:
        weights, index = [], None  # the conversion itself reports the problem
    extra = [src / n for n in TOKENIZER_FILES if (src / n).exists()]
    for path in [*weights, *([index] if index else []), *extra]:
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def ensure_converted(src: str | Path, cache_dir: str | Path) -> Path:
    """The converted GLM folder for ChatGLM folder ``src`` under ``cache_dir/chatglm/``; converts once.

    The folder name carries :func:`source_fingerprint`, so a changed source converts afresh and an
    unchanged one is reused without touching it. A concurrent converter that finishes first wins.
    """
    src = Path(src)
    fingerprint = source_fingerprint(src)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", src.resolve().name) or "chatglm"
    final = Path(cache_dir) / "chatglm" / f"{safe}-{fingerprint[:16]}"
    if is_converted_dir(final):
        log.debug("using cached conversion %s", final)
        return final
    if final.exists():  # a folder without the marker is not ours to trust
        raise FileExistsError(f"{final} exists but is not a finished conversion; remove it")
    try:
        return convert_chatglm_to_glm(src, final)
    except (FileExistsError, OSError):
        if is_converted_dir(final):  # another process published it first
            return final
        raise


def export_prefix(checkpoint: str | Path, out_dir: str | Path) -> list[Path]:
    """Write a project P-Tuning v2 checkpoint (encoder or static export) in THUDM's ptuning layout."""
    from pipeline.methods.base import ArchFacts
    from pipeline.methods.ptuning_v2 import load_prefix, read_prefix_config
    from pipeline.methods.ptuning_v2.thudm import export_thudm_prefix

    data = read_prefix_config(checkpoint)
    if data.get("method", "ptuning_v2") != "ptuning_v2":
        raise DataError(Path(checkpoint), None, "method", f"{data['method']} checkpoints have no THUDM layout")
    facts = ArchFacts(**data["arch"])
    return export_thudm_prefix(load_prefix(checkpoint, facts), out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.models.chatglm SRC [DST]``: convert SRC to DST (default: the model cache); print the folder.

    ``python -m pipeline.models.chatglm export-prefix CHECKPOINT OUT``: write a P-Tuning v2 checkpoint in
    THUDM's ``ptuning/main.py`` layout (``OUT/pytorch_model.bin``) for their cli/web demo.
    """
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["export-prefix"]:
        parser = argparse.ArgumentParser(prog="python -m pipeline.models.chatglm export-prefix",
                                         description="write a P-Tuning v2 checkpoint in THUDM's ptuning layout")
        parser.add_argument("checkpoint", help="a train checkpoint folder (prefix_config.json)")
        parser.add_argument("out", help="output folder (pytorch_model.bin + config.json)")
        args = parser.parse_args(argv[1:])
        for path in export_prefix(args.checkpoint, args.out):
            print(path)
        return 0
    parser = argparse.ArgumentParser(prog="python -m pipeline.models.chatglm", description=main.__doc__)
    parser.add_argument("src", help="ChatGLM-6B / ChatGLM2 / ChatGLM3 folder (config.json, tokenizer, weights)")
    parser.add_argument("dst", nargs="?", help="output folder (default: $GLM_PIPELINE_CACHE/chatglm/<name>-<hash>)")
    args = parser.parse_args(argv)
    if args.dst:
        out = convert_chatglm_to_glm(args.src, args.dst)
    else:
        from pipeline.models.cache import cache_dir

        out = ensure_converted(args.src, cache_dir())
    print(out)
    return 0


__all__ = [
    "CHAT_FORMATS",
    "CHAT_TEMPLATES",
    "MARKER_FILE",
    "build_chatglm6b_tokenizer",
    "build_chatglm_tokenizer",
    "chatglm6b_config",
    "chatglm2_6b_glm_config",
    "convert_chatglm_to_glm",
    "convert_weights",
    "detect_rope_scaling",
    "detect_variant",
    "encode_glm_prompt",
    "encode_text",
    "ensure_converted",
    "export_prefix",
    "format_glm_prompt",
    "glm_config_from_chatglm",
    "is_chatglm_dir",
    "is_converted_dir",
    "list_weight_files",
    "load_tokenizer",
    "main",
    "read_sentencepiece_proto",
    "rename_tensor",
    "source_fingerprint",
    "split_qkv",
]


def cli(argv: list[str] | None = None) -> int:
    """:func:`main` with a bad input (a :class:`DataError`) reported as one ``error:`` line and exit 2."""
    import sys

    try:
        return main(argv)
    except (DataError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())

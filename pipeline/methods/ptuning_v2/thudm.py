"""P-Tuning v2 prefixes in THUDM's own layout: read a ``ptuning/main.py`` checkpoint, write one for their demos.

THUDM's ``ptuning/main.py`` (ChatGLM-6B, ChatGLM2-6B, ChatGLM3-6B) saves only the prefix encoder:
``checkpoint-N/pytorch_model.bin`` holding ``transformer.prefix_encoder.embedding.weight``
``(PRE_SEQ_LEN, layers * 2 * kv_heads * head_dim)`` (with ``--prefix_projection`` also
``transformer.prefix_encoder.trans.{0,2}.{weight,bias}``), next to a ``config.json`` carrying
``pre_seq_len``. Their cli/web demos load it with ``pre_seq_len`` set on the base config and
``model.transformer.prefix_encoder.load_state_dict(...)``.

The row layout ``[layer0.key, layer0.value, layer1.key, ...]`` of ``(kv_heads, head_dim)`` blocks is
the project's own (:func:`pipeline.methods.ptuning_v2.split_key_values`), so the table is read as is.
Position convention: THUDM's code numbers the real tokens from 0 after the prefix (ChatGLM-6B,
ChatGLM2 and ChatGLM3 alike), so a THUDM prefix always loads with ``positions_after_prefix=False``.
A ``--prefix_projection`` checkpoint is evaluated once through its MLP (``Linear -> Tanh -> Linear``,
whatever its widths) into a :class:`StaticPrefix`: inference needs no encoder.

Hook: :func:`is_thudm_prefix_dir` decides, :func:`thudm_method_config` / :func:`load_thudm_prefix` stand in
for the project's method JSON / prefix loader where a checkpoint folder is read
(``pipeline.methods.read_method_config`` / ``load_adapters``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.core.io import DataError, atomic_path, read_json_object, write_json
from pipeline.methods.base import ArchFacts
from pipeline.methods.ptuning_v2.prefix import PrefixConfig, PrefixEncoder, StaticPrefix, split_key_values

log = logging.getLogger(__name__)

THUDM_PREFIX_KEY = "transformer.prefix_encoder."
THUDM_WEIGHTS = ("pytorch_model.bin", "model.safetensors")
OWN_CONFIGS = ("prefix_config.json", "adapter_config.json")


def _weights_file(folder: Path) -> Path | None:
    return next((folder / n for n in THUDM_WEIGHTS if (folder / n).is_file()), None)


def read_thudm_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The ``prefix_encoder.*`` tensors of a THUDM checkpoint file, prefix stripped (DataError when none)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types for a bad file
        raise DataError(path, None, None, f"cannot read weights: {type(exc).__name__}: {exc}") from None
    found = {k[len(THUDM_PREFIX_KEY):]: v for k, v in state.items() if k.startswith(THUDM_PREFIX_KEY)}
    if "embedding.weight" not in found:
        raise DataError(path, None, THUDM_PREFIX_KEY + "embedding.weight", "not a THUDM ptuning checkpoint")
    return found


def is_thudm_prefix_dir(folder: str | Path) -> bool:
    """True for a THUDM ``ptuning/main.py`` checkpoint folder (prefix weights, none of the project's JSON)."""
    folder = Path(folder)
    if any((folder / n).exists() for n in OWN_CONFIGS):
        return False
    path = _weights_file(folder)
    if path is None or path.stat().st_size > 2**31:  # a full model, not a prefix checkpoint
        return False
    try:
        read_thudm_tensors(path)
    except DataError:
        return False
    return True


def thudm_method_config(folder: str | Path) -> dict[str, Any]:
    """The method JSON the project would have written for this THUDM checkpoint (``ptuning_v2``, positions from 0)."""
    folder = Path(folder)
    path = _weights_file(folder)
    tensors = read_thudm_tensors(path)
    pre_seq_len = int(tensors["embedding.weight"].shape[0])
    cfg_path = folder / "config.json"
    raw = read_json_object(cfg_path) if cfg_path.is_file() else {}
    if raw.get("pre_seq_len") not in (None, pre_seq_len):
        raise DataError(cfg_path, None, "pre_seq_len", f"{raw['pre_seq_len']} but the prefix has {pre_seq_len} rows")
    return {"method": "ptuning_v2", "cls_head": False, "kind": "thudm", "pre_seq_len": pre_seq_len,
            "prefix_projection": "trans.0.weight" in tensors, "positions_after_prefix": False,
            "system_prompt": None, "source": str(path)}


def load_thudm_prefix(folder: str | Path, facts: ArchFacts) -> PrefixEncoder | StaticPrefix:
    """A THUDM checkpoint as the project's prefix module (shape-checked against the base model ``facts``)."""
    folder = Path(folder)
    path = _weights_file(folder)
    tensors = read_thudm_tensors(path)
    table = tensors["embedding.weight"].float()
    config = PrefixConfig(pre_seq_len=int(table.shape[0]), positions_after_prefix=False)
    if "trans.0.weight" in tensors:  # --prefix_projection: evaluate the MLP once
        with torch.no_grad():
            hidden = torch.tanh(table @ tensors["trans.0.weight"].float().T + tensors["trans.0.bias"].float())
            table = hidden @ tensors["trans.2.weight"].float().T + tensors["trans.2.bias"].float()
    if table.shape[1] != facts.row_dim:
        raise DataError(path, None, THUDM_PREFIX_KEY + "embedding.weight",
                        f"rows of width {table.shape[1]}, the model needs {facts.row_dim} "
                        f"({facts.num_layers} layers x 2 x {facts.kv_heads} kv heads x {facts.head_dim})")
    if "trans.0.weight" in tensors:
        pairs = split_key_values(table, facts)
        kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in pairs]).contiguous()
        return StaticPrefix(config, facts, kv)
    encoder = PrefixEncoder(config, facts)
    with torch.no_grad():
        encoder.embedding.weight.copy_(table)
    return encoder


def prefix_rows(prefix: PrefixEncoder | StaticPrefix) -> torch.Tensor:
    """The prefix as THUDM's no-projection table ``(P, layers * 2 * kv_heads * head_dim)`` (float32, CPU)."""
    with torch.no_grad():
        if isinstance(prefix, PrefixEncoder):
            return prefix().detach().to("cpu", torch.float32).contiguous()
        kv = prefix.key_values(1)  # L pairs of (1, H, P, D)
        stacked = torch.stack([torch.stack([k[0], v[0]]) for k, v in kv])  # (L, 2, H, P, D)
        p = stacked.shape[3]
        return stacked.permute(3, 0, 1, 2, 4).reshape(p, -1).to("cpu", torch.float32).contiguous()


def export_thudm_prefix(prefix: PrefixEncoder | StaticPrefix, out_dir: str | Path) -> list[Path]:
    """Write ``pytorch_model.bin`` (``transformer.prefix_encoder.embedding.weight``) + ``config.json``
    (``pre_seq_len``, ``prefix_projection: false``) as THUDM's ptuning checkpoints hold them.

    A projection encoder is exported as its computed table (THUDM's demo then runs with
    ``prefix_projection`` false). A prefix trained with ``positions_after_prefix`` true will be run with
    positions from 0 by THUDM's code: that is warned about, since its outputs will differ.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if prefix.config.positions_after_prefix:
        log.warning("this prefix was trained with positions after the prefix; THUDM's code numbers real tokens "
                    "from 0, so their demo will not reproduce the project's outputs exactly")
    rows = prefix_rows(prefix)
    weights = out_dir / "pytorch_model.bin"
    with atomic_path(weights) as tmp:
        torch.save({THUDM_PREFIX_KEY + "embedding.weight": rows}, tmp)
    cfg = write_json(out_dir / "config.json", {"pre_seq_len": int(rows.shape[0]), "prefix_projection": False})
    return [weights, cfg]


__all__ = ["export_thudm_prefix", "is_thudm_prefix_dir", "load_thudm_prefix", "prefix_rows", "read_thudm_tensors",
           "thudm_method_config"]

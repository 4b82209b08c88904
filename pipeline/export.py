"""Stage ``export``: a train checkpoint as a Hugging Face PEFT adapter folder.

    python -m pipeline export --format peft train_dir=runs/demo/train checkpoint=best out_dir=runs/demo/peft

Reads ``<train_dir>/<checkpoint>`` (any method; see :mod:`pipeline.methods.peft_format` for the mapping) and writes
``adapter_config.json`` + ``adapter_model.safetensors`` (+ ``pipeline_meta.json``) under ``out_dir``, which
``PeftModel.from_pretrained(base_model, out_dir)`` loads. The folder is also a checkpoint for every stage here:
``train_dir=runs/demo/peft checkpoint=.``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pipeline.core.config import ConfigError
from pipeline.core.stage import Stage, StageResult
from pipeline.methods import read_method_config
from pipeline.methods.peft_format import save_peft
from pipeline.models.lm import load_model
from pipeline.models.store import resolve_model_dir


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Config of the ``export`` stage."""

    # where the adapter folder's files (and manifest.json) go
    out_dir: Path
    # train stage output folder holding the checkpoint
    train_dir: Path
    # checkpoint folder under train_dir: best | final | checkpoints/step-N
    checkpoint: str = "best"
    # target format: peft (Hugging Face PEFT's adapter_config.json + adapter_model.safetensors)
    format: Literal["peft"] = "peft"
    # base model spec; null = the one the checkpoint records (smollm2 | tiny:<name> | local HF folder)
    model: str | None = None


def checkpoint_folder(cfg: ExportConfig) -> Path:
    """``<train_dir>/<checkpoint>``."""
    return Path(cfg.train_dir) / cfg.checkpoint


def export_inputs(cfg: ExportConfig) -> list[Path]:
    """The checkpoint folder."""
    return [checkpoint_folder(cfg)]


def run_export(cfg: ExportConfig) -> StageResult:
    """Load the checkpoint on its base model and write it in the chosen format."""
    if cfg.format != "peft":
        raise ConfigError(f"format must be peft, got {cfg.format!r}", key="format")
    ckpt = checkpoint_folder(cfg)
    meta = read_method_config(ckpt)
    spec = cfg.model or meta.get("model_spec")
    if not spec:
        raise ConfigError(f"{ckpt} records no model spec: set model=<spec>", key="model")
    lm, _ = load_model(spec, checkpoint=ckpt)
    outputs = save_peft(lm.adapters, cfg.out_dir, lm.facts, str(resolve_model_dir(spec)),
                        {**meta, "model_spec": spec})
    return StageResult(outputs, {"method": lm.method, "format": cfg.format, "model": spec})


STAGE = Stage(
    name="export",
    config_cls=ExportConfig,
    inputs=export_inputs,
    run=run_export,
    default_config="pipeline/configs/export_demo.yaml",
    help="a train checkpoint as a Hugging Face PEFT adapter folder (PeftModel.from_pretrained loads it)",
)

__all__ = ["STAGE", "ExportConfig", "run_export"]

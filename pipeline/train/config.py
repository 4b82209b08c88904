"""Config of the ``train`` stage: one frozen dataclass with nested sections.

    out_dir, prompts_dir          where to write / the prompts stage output to read
    model:      spec, dtype, device, gradient_checkpointing
    method:     name + one sub-section per tuning method (pipeline/methods/<name>/)
    data:       variant, token budgets, truncation, row limits, length grouping
    optim:      the optimisation settings every engine takes (pipeline.models.engines.OptimConfig)
    engine:     name (deepspeed | torch) and the DeepSpeed JSON
    eval:       dev loss / dev accuracy every N steps
    checkpoint: save every N steps, how many to keep, resume, static export
    seed, logging_steps, num_threads

Defaults are the reference ChatGLM2 ``ptuning/train.sh`` recipe.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pipeline.core.config import ConfigError
from pipeline.methods import MethodConfig, key_value_methods, prompt_methods
from pipeline.models.engines import OptimConfig
from pipeline.models.lm import SYSTEM_PROMPT


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Which frozen base model, in which dtype, on which device."""

    # model spec: smollm2 | tiny:<name> | local HF / ChatGLM2 folder
    spec: str = "smollm2"
    # base-model weights dtype: auto (bfloat16 on a bf16-capable GPU, else float32) | float32 | bfloat16 | float16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # torch device: auto (cuda:LOCAL_RANK when a GPU exists, else cpu) | cpu | cuda
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # recompute decoder layers in backward (less memory, ~30 % slower)
    gradient_checkpointing: bool = False
    # system turn of the chat template (recorded in the checkpoint; predict/evaluate/classify reuse it):
    # a text | "" (an empty turn: the shortest prompt, 24 tokens fewer than the default on SmolLM2) |
    # null (no turn: the template's own default). Templates without a system turn (ChatGLM) ignore it.
    system_prompt: str | None = SYSTEM_PROMPT


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Which prompts-stage rows, tokenised how, batched how."""

    # prompt variant to train on: plain (answer only) | cot (rationale + answer, the paper's best)
    variant: str = "cot"
    # prompt budget in tokens, chat wrapper included (reference: 256)
    max_source_len: int = 256
    # response budget in tokens, EOS included (reference: 128)
    max_target_len: int = 128
    # which end of an over-long prompt body is cut: left keeps the end (the case and the question)
    truncation_side: Literal["left", "right"] = "left"
    # batch rows of similar length together (less padding)
    group_by_length: bool = False
    # use only the first N train / dev rows; null = all
    max_train_rows: int | None = None
    max_dev_rows: int | None = None


@dataclasses.dataclass(frozen=True)
class EngineSection:
    """The training engine (same math either way)."""

    # deepspeed (default) | torch (single process)
    name: Literal["deepspeed", "torch"] = "deepspeed"
    # DeepSpeed JSON ("auto" values are filled from the optim section); the torch engine has no JSON config
    deepspeed_config: Path = Path("pipeline/configs/deepspeed/zero0.json")


@dataclasses.dataclass(frozen=True)
class EvalSection:
    """Dev-set evaluation during training (picks best/)."""

    # evaluate on dev every N steps (and at the end); 0 = only at the end
    steps: int = 100
    # dev rows used for the dev loss
    loss_rows: int = 64
    # dev rows answered for the dev accuracy; 0 = accuracy off (best by loss)
    accuracy_rows: int = 16
    # how they are answered: generate (greedy decoding, the answer line parsed) | score (label scoring, as the
    # evaluate stage's score mode: the answer line's candidates ranked level by level; never unparseable)
    mode: Literal["generate", "score"] = "generate"
    # generation budget for the dev accuracy in generate mode (CoT answers come after the rationale)
    max_new_tokens: int = 128
    # rows per dev batch
    batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    """Step checkpoints, resume and the exported prefix."""

    # save checkpoints/step-N every N steps (and at the end); 0 = only at the end
    save_steps: int = 500
    # keep only the newest N step checkpoints; null = keep all
    save_total_limit: int | None = 2
    # never (from scratch; alias none) | auto (the newest intact checkpoints/step-N of this same run under out_dir,
    # else from scratch; a checkpoint of another config is an error) | path of a step-N folder (same run only)
    resume: str = "none"
    # also write final/static/ with the computed per-layer key/values (encoder-free inference)
    export_static_prefix: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Config of the ``train`` stage (defaults = the reference ChatGLM2 ``ptuning/train.sh`` recipe)."""

    # where checkpoints/, best/, final/, metrics.jsonl and manifest.json go
    out_dir: Path
    # prompts stage output folder; rows are read from <prompts_dir>/<data.variant>/{train,dev}.jsonl
    prompts_dir: Path
    model: ModelSection = ModelSection()
    method: MethodConfig = MethodConfig()
    data: DataSection = DataSection()
    optim: OptimConfig = OptimConfig()
    engine: EngineSection = EngineSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()
    # seed of the prefix init, the data order and dropout
    seed: int = 42
    # log a train row to metrics.jsonl every N steps
    logging_steps: int = 10
    # torch CPU threads; 0 = torch's default
    num_threads: int = 0


def split_file(cfg: TrainConfig, split: str) -> Path:
    """``<prompts_dir>/<variant>/<split>.jsonl``."""
    return Path(cfg.prompts_dir) / cfg.data.variant / f"{split}.jsonl"


def train_inputs(cfg: TrainConfig) -> list[Path]:
    """The train and dev prompt files (plus an explicit resume checkpoint)."""
    paths = [split_file(cfg, "train"), split_file(cfg, "dev")]
    if cfg.checkpoint.resume not in ("never", "none", "auto"):
        paths.append(Path(cfg.checkpoint.resume))
    return paths


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot train (ConfigError naming the key: exit 2)."""
    positive = {"data.max_source_len": cfg.data.max_source_len, "data.max_target_len": cfg.data.max_target_len,
                "optim.max_steps": cfg.optim.max_steps, "optim.per_device_batch_size": cfg.optim.per_device_batch_size,
                "optim.gradient_accumulation_steps": cfg.optim.gradient_accumulation_steps,
                "logging_steps": cfg.logging_steps, "eval.batch_size": cfg.eval.batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}", key=key)
    if cfg.method.name in prompt_methods() and cfg.method.pre_seq_len < 1:
        raise ConfigError(f"method.{cfg.method.name}.pre_seq_len must be >= 1 to train a prefix",
                          key=f"method.{cfg.method.name}.pre_seq_len")
    if cfg.checkpoint.export_static_prefix and cfg.method.name not in key_value_methods():
        raise ConfigError(f"checkpoint.export_static_prefix needs a key/value method "
                          f"({', '.join(key_value_methods())}), not {cfg.method.name}", key="checkpoint.export_static_prefix")
    if cfg.optim.learning_rate <= 0:
        raise ConfigError("optim.learning_rate must be > 0", key="optim.learning_rate")


__all__ = ["CheckpointSection", "DataSection", "EngineSection", "EvalSection", "ModelSection", "TrainConfig",
           "check_config", "split_file", "train_inputs"]

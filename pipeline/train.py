"""Stage ``train``: P-Tuning v2 of a frozen causal LM on prompts-stage rows (DeepSpeed by default).

    python -m pipeline train --config pipeline/configs/train_demo.yaml [key=value ...]
    deepspeed --num_gpus 8 --no_local_rank --module pipeline train --config pipeline/configs/train_paper.yaml   # multi-GPU

Reads ``<prompts_dir>/<variant>/{train,dev}.jsonl`` and writes under ``out_dir``:

* ``checkpoints/step-N/``: ``prefix.safetensors`` + ``prefix_config.json`` + ``train_config.json`` +
  ``trainer_state.pt`` (step, data position, RNG states, best-so-far, torch optimizer/scheduler) and,
  for the DeepSpeed engine, ``deepspeed/`` (its optimizer/scheduler checkpoint, frozen base excluded);
* ``best/`` (highest dev accuracy, then lowest dev loss) and ``final/``: prefix files only
  (``final/static/`` holds the static key/value export when ``export_static_prefix``);
* ``metrics.jsonl``: one ``kind: train`` row per ``logging_steps`` (step, loss, lr, grad_norm,
  tokens_per_s, elapsed) and one ``kind: eval`` row per ``eval_steps`` (dev_loss, dev_acc, ...).

``resume: auto`` continues from the newest ``checkpoints/step-N`` and reproduces the losses of an
uninterrupted run exactly (same batches, RNG streams, optimizer and scheduler state).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.config import config_to_dict
from pipeline.data import BatchSampler, Example, collate, encode_rows, read_prompt_rows
from pipeline.io import DataError, atomic_path, load_jsonl, write_json, write_jsonl
from pipeline.prefix import PrefixConfig
from pipeline.stage import Stage, StageResult

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
STEP_DIR = re.compile(r"^step-(\d+)$")
LEVELS = ("motion", "operation", "task")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Config of the ``train`` stage (defaults = the reference ChatGLM2 ``ptuning/train.sh`` recipe)."""

    # where checkpoints/, best/, final/, metrics.jsonl and manifest.json go
    out_dir: Path = Path("runs/demo/train")
    # prompts stage output folder; rows are read from <prompts_dir>/<variant>/{train,dev}.jsonl
    prompts_dir: Path = Path("runs/demo/prompts")
    # prompt variant to train on: plain (answer only) | cot (rationale + answer, the paper's best)
    variant: str = "cot"
    # model spec: smollm2 | tiny:<name> | local HF / ChatGLM2 folder
    model: str = "smollm2"
    # base-model weights dtype: auto (bfloat16 on a bf16-capable GPU, else float32) | float32 | bfloat16 | float16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # torch device: auto (cuda:LOCAL_RANK when a GPU exists, else cpu) | cpu | cuda
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # the P-Tuning v2 prefix (pre_seq_len 128, no projection, as in the paper)
    prefix: PrefixConfig = PrefixConfig()
    # prompt budget in tokens, chat wrapper included (reference: 256)
    max_source_len: int = 256
    # response budget in tokens, EOS included (reference: 128)
    max_target_len: int = 128
    # which end of an over-long prompt body is cut: left keeps the end (the case and the question)
    truncation_side: Literal["left", "right"] = "left"
    # train engine: deepspeed (default) | torch (same math, single process)
    engine: Literal["deepspeed", "torch"] = "deepspeed"
    # DeepSpeed JSON ("auto" values are filled from this config); ignored by the torch engine
    deepspeed_config: Path = Path("pipeline/configs/deepspeed/zero0.json")
    # peak learning rate (reference: 2e-2; prefix tuning needs a large lr)
    learning_rate: float = 2e-2
    # AdamW weight decay (reference: 0)
    weight_decay: float = 0.0
    # AdamW betas and epsilon (HF Trainer defaults)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # linear warmup steps from 0 to the peak lr, then linear decay to 0 at max_steps
    warmup_steps: int = 0
    # optimizer steps (reference: 3000)
    max_steps: int = 3000
    # rows per micro-batch per device (reference: 1)
    per_device_batch_size: int = 1
    # micro-batches per optimizer step (reference: 16)
    gradient_accumulation_steps: int = 16
    # clip the gradient L2 norm to this value; 0 = no clipping (reference: 1.0)
    max_grad_norm: float = 1.0
    # seed of the prefix init, the data order and dropout
    seed: int = 42
    # recompute decoder layers in backward (less memory, ~30 % slower)
    gradient_checkpointing: bool = False
    # batch rows of similar length together (less padding)
    group_by_length: bool = False
    # use only the first N train / dev rows; null = all
    max_train_rows: int | None = None
    max_dev_rows: int | None = None
    # log a train row to metrics.jsonl every N steps
    logging_steps: int = 10
    # evaluate on dev every N steps (and at the end); 0 = only at the end
    eval_steps: int = 100
    # dev rows used for the dev loss
    eval_loss_rows: int = 64
    # dev rows answered by greedy generation for the dev accuracy; 0 = accuracy off (best by loss)
    eval_generate_rows: int = 16
    # generation budget for the dev accuracy (CoT answers come after the rationale)
    eval_max_new_tokens: int = 128
    # rows per dev batch
    eval_batch_size: int = 8
    # save checkpoints/step-N every N steps (and at the end); 0 = only at the end
    save_steps: int = 500
    # keep only the newest N step checkpoints; null = keep all
    save_total_limit: int | None = 2
    # none | auto (newest checkpoints/step-N under out_dir) | path of a step-N folder
    resume: str = "none"
    # also write final/static/ with the computed per-layer key/values (encoder-free inference)
    export_static_prefix: bool = False
    # torch CPU threads; 0 = torch's default
    num_threads: int = 0


# --------------------------------------------------------------------------------------------- inputs
def split_file(cfg: TrainConfig, split: str) -> Path:
    """``<prompts_dir>/<variant>/<split>.jsonl``."""
    return Path(cfg.prompts_dir) / cfg.variant / f"{split}.jsonl"


def train_inputs(cfg: TrainConfig) -> list[Path]:
    """The train and dev prompt files (plus an explicit resume checkpoint)."""
    paths = [split_file(cfg, "train"), split_file(cfg, "dev")]
    if cfg.resume not in ("none", "auto"):
        paths.append(Path(cfg.resume))
    return paths


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot train (ValueError naming the key)."""
    positive = ("max_source_len", "max_target_len", "max_steps", "per_device_batch_size",
                "gradient_accumulation_steps", "logging_steps", "eval_batch_size")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.prefix.pre_seq_len < 1:
        raise ValueError("prefix.pre_seq_len must be >= 1 to train a prefix")
    if cfg.learning_rate <= 0:
        raise ValueError("learning_rate must be > 0")


# ------------------------------------------------------------------------------------ RNG and devices
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Current python / numpy / torch (and CUDA) RNG states, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(choice: str) -> str:
    """``cuda:LOCAL_RANK`` for auto/cuda when a GPU exists, else ``cpu``."""
    if choice == "cpu" or not torch.cuda.is_available():
        if choice == "cuda":
            raise ValueError("device=cuda but no CUDA device is available")
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def pick_dtype(choice: str, device: str) -> str:
    """Resolve ``auto``: bfloat16 on a GPU that supports it, else float32 (CPU trains in float32)."""
    if choice != "auto":
        return choice
    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"


def peak_memory_mb() -> dict[str, float]:
    """Peak resident set size of this process and, on GPU, the CUDA peak allocation (MiB)."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# ------------------------------------------------------------------------------------------ answers
def parse_answer(text: str) -> dict[str, str | None]:
    """Canonical labels from the reply's answer line (eval.parsing when present, else a local regex).

    Accepts ``Answer: motion=flyby; operation=none; task=observation`` and
    ``答案：运动=飞越；操作=无；任务=观测``; a missing level is None.
    """
    try:
        from eval.parsing import parse_answer as shared_parse  # the evaluation stage's parser, when present
    except ImportError:
        return parse_answer_line(text)
    parsed = shared_parse(text)
    return {lvl: parsed.get(lvl) for lvl in LEVELS}


def parse_answer_line(text: str) -> dict[str, str | None]:
    """Local fallback parser of the last ``Answer:`` / ``答案：`` line (``key=value`` pairs, taxonomy aliases)."""
    from data_prep.taxonomy import LEVEL_DISPLAY, canonical_label

    names = {name: lvl for lang in LEVEL_DISPLAY.values() for lvl, name in lang.items()}
    out: dict[str, str | None] = {lvl: None for lvl in LEVELS}
    lines = [ln for ln in text.splitlines() if re.search(r"(answer|答案)\s*[:：]", ln, re.I)]
    body = re.split(r"[:：]", lines[-1], maxsplit=1)[1] if lines else text
    for key, value in re.findall(r"([A-Za-z\u4e00-\u9fff]+)\s*[=＝]\s*([^;；,，\n]+)", body):
        level = names.get(key.strip().lower())
        if level is not None and out[level] is None:
            out[level] = canonical_label(value.strip().rstrip("。."), level)
    return out


# ------------------------------------------------------------------------------------------ evaluate
@torch.no_grad()
def dev_loss(lm: torch.nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over ``examples`` (response tokens only)."""
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(lm.device) for k, v in collate(examples[i: i + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())  # HF shifts labels by one
            total += float(lm(**batch).loss) * n
            count += n
    finally:
        lm.train(was_training)
    return total / max(count, 1)


def dev_accuracy(lm: torch.nn.Module, tokenizer: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int,
                 batch_size: int) -> dict[str, float]:
    """Greedy-answer ``rows``; exact-match accuracy of all three levels (``dev_acc``) and per level."""
    from pipeline.predict import generate

    replies = generate(lm, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    hits = {lvl: [] for lvl in LEVELS}
    for row, reply in zip(rows, replies):
        parsed, gold = parse_answer(reply), row.get("label") or {}
        for lvl in LEVELS:
            hits[lvl].append(parsed[lvl] is not None and parsed[lvl] == gold.get(lvl))
    all_ok = [all(hits[lvl][i] for lvl in LEVELS) for i in range(len(rows))]
    out = {"dev_acc": float(np.mean(all_ok))}
    out.update({f"dev_acc_{lvl}": float(np.mean(hits[lvl])) for lvl in LEVELS})
    return out


def is_better(metrics: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Higher dev accuracy wins; ties (or accuracy off) go to the lower dev loss."""
    if best is None:
        return True
    acc, best_acc = metrics.get("dev_acc"), best.get("dev_acc")
    if acc is not None and best_acc is not None and acc != best_acc:
        return acc > best_acc
    return metrics["dev_loss"] < best["dev_loss"]


# --------------------------------------------------------------------------------------- checkpoints
def step_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``checkpoints/step-N`` (has a trainer state), oldest first."""
    root = Path(out_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and (p / STATE_FILE).exists():
                found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint folder to resume from, or None."""
    if cfg.resume == "none":
        return None
    if cfg.resume == "auto":
        found = step_checkpoints(cfg.out_dir)
        return found[-1][1] if found else None
    path = Path(cfg.resume)
    if not (path / STATE_FILE).exists():
        raise DataError(path / STATE_FILE, None, "resume", "not a train checkpoint (no trainer_state.pt)")
    return path


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder over ``final`` (the old one is removed only after the swap)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_prefix_dir(lm: Any, engine: Any, final: Path, cfg: TrainConfig, extra: dict[str, Any],
                    state: dict[str, Any] | None = None, static: bool = False) -> Path:
    """Write a checkpoint folder atomically: prefix files + config (+ trainer/engine state).

    Every rank calls this (DeepSpeed's save and the ZeRO-3 gather are collective); rank 0 writes.
    """
    tmp = final.with_name(f".{final.name}.tmp")
    rank = engine.rank
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    with engine.gathered_prefix():
        if rank == 0:
            lm.save_prefix(tmp, extra=extra)
            if static:
                lm.export_static_prefix(tmp / "static", extra=extra)
    if state is not None:
        state = {**state, **engine.save_state(tmp)}
        if rank == 0:
            with atomic_path(tmp / STATE_FILE) as p:
                torch.save(state, p)
    if rank == 0:
        write_json(tmp / CONFIG_FILE, config_to_dict(cfg))
        replace_dir(tmp, final)
    barrier()
    return final


def prune_checkpoints(out_dir: Path, keep: int | None, protect: Path | None = None) -> None:
    """Delete the oldest step checkpoints beyond ``keep`` (never the one being resumed from)."""
    if keep is None:
        return
    found = step_checkpoints(out_dir)
    for _, path in found[: max(len(found) - keep, 0)]:
        if protect is None or path.resolve() != protect.resolve():
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- run
def resolve_repo_path(path: Path) -> Path:
    """``path`` as given when it exists, else relative to the repository root (shipped configs)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    return Path(__file__).resolve().parent.parent / path


def load_examples(cfg: TrainConfig, tokenizer: Any) -> tuple[list[Example], list[dict], list[Example], list[dict]]:
    """Read and tokenise the train and dev rows."""
    train_rows = read_prompt_rows(split_file(cfg, "train"), cfg.max_train_rows)
    dev_rows = read_prompt_rows(split_file(cfg, "dev"), cfg.max_dev_rows)
    enc = dict(max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len,
               truncation_side=cfg.truncation_side)
    return encode_rows(tokenizer, train_rows, **enc), train_rows, encode_rows(tokenizer, dev_rows, **enc), dev_rows


def run_train(cfg: TrainConfig) -> StageResult:
    """Train the prefix; see the module docstring for what is written."""
    from pipeline.engine import build_engine
    from pipeline.modeling import load_model

    check_config(cfg)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out_dir = Path(cfg.out_dir)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    seed_everything(cfg.seed)  # the fresh prefix init is seeded too
    lm, tokenizer = load_model(cfg.model, prefix_config=cfg.prefix, dtype=dtype, device=device)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
    pad_id = tokenizer.pad_token_id
    train_ex, _, dev_ex, dev_rows = load_examples(cfg, tokenizer)
    engine = build_engine(
        cfg.engine, lm, config_path=resolve_repo_path(cfg.deepspeed_config), lr=cfg.learning_rate, betas=cfg.adam_betas,
        eps=cfg.adam_eps, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
        grad_accum=cfg.gradient_accumulation_steps, clip=cfg.max_grad_norm, micro_batch=cfg.per_device_batch_size,
        dtype=dtype)
    lm = engine.module
    main = engine.rank == 0
    sampler = BatchSampler([len(e) for e in train_ex], cfg.per_device_batch_size, cfg.seed, cfg.group_by_length,
                           engine.rank, engine.world_size)

    # ---- resume
    step, epoch, position, elapsed0, best = 0, 0, 0, 0.0, None
    resume_dir = resolve_resume(cfg)
    metrics: list[dict[str, Any]] = []
    if resume_dir is not None:
        state = torch.load(resume_dir / STATE_FILE, map_location="cpu", weights_only=False)
        if state["engine"] != engine.name:
            raise DataError(resume_dir / STATE_FILE, None, "engine",
                            f"checkpoint was written by the {state['engine']} engine, this run uses {engine.name}")
        if engine.name == "torch":
            from safetensors.torch import load_file

            lm.prefix.load_state_dict(load_file(str(resume_dir / "prefix.safetensors")))
        engine.load_state(resume_dir, state)
        now = {"rows": len(train_ex), "batch_size": cfg.per_device_batch_size, "seed": cfg.seed,
               "group_by_length": cfg.group_by_length, "world_size": engine.world_size}
        if state.get("sampler") != now:
            log.warning("resuming with a different data order (%s -> %s): the run will not replay the "
                        "uninterrupted one exactly", state.get("sampler"), now)
        step, epoch, position = state["step"], state["epoch"], state["position"]
        elapsed0, best = state["elapsed"], state["best"]
        restore_rng_states(state["rng"])
        if (out_dir / METRICS_FILE).exists():
            metrics = [r for r in load_jsonl(out_dir / METRICS_FILE) if r["step"] <= step]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, step, epoch, position)

    def evaluate() -> dict[str, Any]:
        row: dict[str, Any] = {"kind": "eval", "step": step,
                               "dev_loss": dev_loss(lm, dev_ex[: cfg.eval_loss_rows], pad_id, cfg.eval_batch_size)}
        if cfg.eval_generate_rows > 0:
            row.update(dev_accuracy(lm, tokenizer, dev_rows[: cfg.eval_generate_rows], cfg.eval_max_new_tokens,
                                    cfg.eval_batch_size))
        return row

    extra = {"model_spec": cfg.model, "variant": cfg.variant}
    t_start = time.perf_counter()
    tokens_total = 0
    last_loss = next((r["loss"] for r in reversed(metrics) if r["kind"] == "train"), None)
    stream = sampler.iterate(epoch, position)
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not main)
    lm.train()
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        micro, n_tokens = [], 0
        for _ in range(cfg.gradient_accumulation_steps):
            epoch, position, idx = next(stream)
            batch = collate([train_ex[i] for i in idx], pad_id)
            n_tokens += int(batch["attention_mask"].sum())
            micro.append({k: v.to(device) for k, v in batch.items()})
        loss, gnorm, lr = engine.train_step(micro)
        step += 1
        dt = time.perf_counter() - t0
        n_tokens *= engine.world_size
        tokens_total += n_tokens
        last_loss = loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{n_tokens / dt:.0f}")
        elapsed = elapsed0 + time.perf_counter() - t_start
        if step % cfg.logging_steps == 0 or step == cfg.max_steps:
            metrics.append({"kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": lr,
                            "grad_norm": gnorm, "tokens_per_s": round(n_tokens / dt, 1), "elapsed": round(elapsed, 2)})
        is_eval = (cfg.eval_steps > 0 and step % cfg.eval_steps == 0) or step == cfg.max_steps
        if is_eval:
            row = evaluate()
            row["elapsed"] = round(elapsed0 + time.perf_counter() - t_start, 2)
            metrics.append(row)
            log.info("step %d: %s", step, {k: v for k, v in row.items() if k.startswith("dev_")})
            if is_better(row, best):
                best = row
                save_prefix_dir(lm, engine, out_dir / "best", cfg, {**extra, "step": step, "dev": row})
        if main and (step % cfg.logging_steps == 0 or is_eval or step == cfg.max_steps):
            write_jsonl(out_dir / METRICS_FILE, metrics)
        if (cfg.save_steps > 0 and step % cfg.save_steps == 0) or step == cfg.max_steps:
            state = {"engine": engine.name, "step": step, "epoch": epoch, "position": position,
                     "elapsed": elapsed0 + time.perf_counter() - t_start, "best": best, "rng": rng_states(),
                     "sampler": {"rows": len(train_ex), "batch_size": cfg.per_device_batch_size, "seed": cfg.seed,
                                 "group_by_length": cfg.group_by_length, "world_size": engine.world_size}}
            save_prefix_dir(lm, engine, out_dir / "checkpoints" / f"step-{step}", cfg, {**extra, "step": step}, state)
            if main:
                prune_checkpoints(out_dir, cfg.save_total_limit, protect=resume_dir)
    bar.close()
    train_seconds = time.perf_counter() - t_start
    save_prefix_dir(lm, engine, out_dir / "final", cfg, {**extra, "step": step}, static=cfg.export_static_prefix)
    if main:
        write_jsonl(out_dir / METRICS_FILE, metrics)
        write_json(out_dir / CONFIG_FILE, config_to_dict(cfg))
    barrier()  # other ranks hash the outputs for their manifest only once rank 0 has finished writing
    stats = {
        "steps": step,
        "final_loss": last_loss,
        "best_step": best["step"] if best else None,
        "best_dev_acc": best.get("dev_acc") if best else None,
        "best_dev_loss": best["dev_loss"] if best else None,
        "tokens_per_s": round(tokens_total / train_seconds, 1) if tokens_total and train_seconds > 0 else None,
        "seconds": round(train_seconds, 2),
        "train_rows": len(train_ex),
        "dev_rows": len(dev_ex),
        "truncated_prompts": sum(e.truncated_source for e in train_ex),
        "truncated_responses": sum(e.truncated_target for e in train_ex),
        "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in lm.trainable_parameters()),
        "engine": engine.name,
        "dtype": dtype,
        "device": device,
        "zero_stage": getattr(engine, "zero_stage", None),
        "world_size": engine.world_size,
        "resumed_from": str(resume_dir) if resume_dir else None,
        **peak_memory_mb(),
    }
    outputs = [out_dir / METRICS_FILE, out_dir / CONFIG_FILE, out_dir / "final", out_dir / "checkpoints"]
    if best is not None:
        outputs.append(out_dir / "best")
    return StageResult(outputs=outputs, stats=stats)


STAGE = Stage(
    name="train",
    config_cls=TrainConfig,
    inputs=train_inputs,
    run=run_train,
    default_config="pipeline/configs/train_demo.yaml",
    help="P-Tuning v2 training of a prefix on prompts-stage rows (DeepSpeed or torch engine)",
)

__all__ = ["STAGE", "TrainConfig", "parse_answer", "parse_answer_line", "resolve_resume", "run_train", "step_checkpoints"]

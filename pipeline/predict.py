"""Stage ``predict``: greedy replies of a (prefix-tuned) model to prompts-stage rows.

    python -m pipeline predict --config pipeline/configs/predict_demo.yaml [key=value ...]

Reads ``<prompts_dir>/<variant>/<split>.jsonl`` (and the checkpoint ``<train_dir>/<checkpoint>``
when ``train_dir`` is set) and writes ``predictions.jsonl`` (sample_id, split, variant, model_tag,
prompt, output, latency_s) under ``out_dir``. The evaluation stage adds parsed answers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from pipeline.core.io import write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.models.checkpoint import checkpoint_path, read_checkpoint
from pipeline.models.generation import generate_timed
from pipeline.models.lm import build_chat_prompt, load_model
from pipeline.models.scoring import answer_rows
from prompts_cot.rows import read_prompt_rows

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Config of the ``predict`` stage."""

    # where predictions.jsonl (and manifest.json) go
    out_dir: Path
    # prompts stage output folder; rows are read from <prompts_dir>/<variant>/<split>.jsonl (need sample_id, prompt)
    prompts_dir: Path
    # prompt variant (sub-folder of prompts_dir) and split to answer
    variant: str = "plain"
    split: str = "test"
    # train stage output folder holding the checkpoint; null = the base model (no prefix)
    train_dir: Path | None = None
    # checkpoint folder under train_dir: best | final | checkpoints/step-N
    checkpoint: str = "best"
    # model spec: smollm2 | tiny:<name> | local HF (or ChatGLM2/3) folder
    model: str = "smollm2"
    # rows per generation batch (left-padded, grouped by length)
    batch_size: int = 8
    # greedy decoding budget per reply (the reference study used 128)
    max_new_tokens: int = 128
    # answer only the first N input rows; null = all
    limit: int | None = None
    # base-model weights dtype: float32 | bfloat16 | float16 (the prefix stays float32)
    dtype: str = "float32"
    # torch device, e.g. cpu or cuda
    device: str = "cpu"
    # torch threads for CPU runs; 0 = torch's default
    num_threads: int = 0


def prompts_file(cfg: PredictConfig) -> Path:
    """``<prompts_dir>/<variant>/<split>.jsonl``."""
    return Path(cfg.prompts_dir) / cfg.variant / f"{cfg.split}.jsonl"


def predict_inputs(cfg: PredictConfig) -> list[Path]:
    """The prompts file, plus the checkpoint folder when given."""
    ckpt = checkpoint_path(cfg.train_dir, cfg.checkpoint)
    return [prompts_file(cfg)] + ([ckpt] if ckpt is not None else [])


def run_predict(cfg: PredictConfig) -> StageResult:
    """Generate a greedy reply for every input row; write ``predictions.jsonl``."""
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    rows = [row for _, row in read_prompt_rows(prompts_file(cfg), limit=cfg.limit)]
    folder = checkpoint_path(cfg.train_dir, cfg.checkpoint)
    ckpt = read_checkpoint(folder) if folder is not None else None
    if ckpt is not None and ckpt.model_spec is not None and ckpt.model_spec != cfg.model:
        log.warning("prefix in %s was trained on model %r, predicting with %r", ckpt.folder, ckpt.model_spec, cfg.model)
    lm, tokenizer = load_model(cfg.model, checkpoint=ckpt, dtype=cfg.dtype, device=cfg.device)
    t0 = time.perf_counter()
    if lm.cls_head is not None:  # a cls_head checkpoint answers from its heads (the answer line of their argmax)
        answers = answer_rows(lm, tokenizer, "score", [r["prompt"] for r in rows], [r.get("lang") or "en" for r in rows],
                              cfg.batch_size, cfg.max_new_tokens)
        replies = [(a["output"], a["latency_s"]) for a in answers]
    else:
        replies = generate_timed(lm, tokenizer, [r["prompt"] for r in rows], cfg.max_new_tokens, cfg.batch_size,
                                 progress=True)
    elapsed = time.perf_counter() - t0
    out_rows = [
        {"sample_id": r["sample_id"], "split": r.get("split"), "variant": r.get("variant"),
         "model_tag": "tuned" if ckpt is not None else "base",
         "prompt": r["prompt"], "output": text, "latency_s": round(latency, 4)}
        for r, (text, latency) in zip(rows, replies)
    ]
    out = Path(cfg.out_dir) / "predictions.jsonl"
    n = write_jsonl(out, out_rows)
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t, _ in replies)
    stats = {"rows": n, "seconds": round(elapsed, 3), "generated_tokens": n_tokens,
             "tokens_per_s": round(n_tokens / elapsed, 2) if elapsed > 0 else None,
             "pre_seq_len": lm.pre_seq_len, "chat_format_example": build_chat_prompt(tokenizer, "{prompt}")}
    log.info("predicted %d rows in %.1fs", n, elapsed)
    return StageResult(outputs=[out], stats=stats)


STAGE = Stage(
    name="predict",
    config_cls=PredictConfig,
    inputs=predict_inputs,
    run=run_predict,
    default_config="pipeline/configs/predict_demo.yaml",
    help="greedy replies of a (prefix-tuned) model to prompts-stage rows",
)

__all__ = ["STAGE", "PredictConfig", "run_predict"]

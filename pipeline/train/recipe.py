"""The train recipe: setup -> train loop (evaluate, save) -> cleanup, for one tuning method on a frozen LM.

Reads ``<prompts_dir>/<data.variant>/{train,dev}.jsonl`` and writes under ``out_dir``:

* ``checkpoints/step-N/``: the method's files + ``train_config.json`` + ``trainer_state.pt`` (step, data
  position, RNG states, best-so-far, torch optimizer/scheduler) and, for the DeepSpeed engine, ``deepspeed/``;
* ``best/`` (highest dev accuracy, then lowest dev loss) and ``final/``: the method's files only
  (``final/static/`` holds the static key/value export when ``checkpoint.export_static_prefix``);
* ``metrics.jsonl``: one ``kind: train`` row per ``logging_steps`` (step, loss, lr, grad_norm,
  tokens_per_s, elapsed) and one ``kind: eval`` row per ``eval.steps`` (dev_loss, dev_acc, ...).

Every checkpoint's method JSON records ``model_spec``, ``variant``, ``step`` and ``prompts``
(:func:`prompts_cot.rows.training_prompts`: the render options and languages of the training rows).

Run through the stage runner, all of this is written into ``out_dir/.staging`` and committed as a set at
the end; a killed run's step checkpoints stay there. ``checkpoint.resume: auto`` continues from the newest
intact ``checkpoints/step-N`` *of the same run* (same fingerprint, :mod:`pipeline.train.checkpoint`) and
reproduces the losses of an uninterrupted run exactly (same batches, RNG streams, optimizer and scheduler
state); a checkpoint of another config is an exit-2 error, never a silent resume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline.core.config import ConfigError
from pipeline.core.io import fault_point, load_jsonl, write_json, write_jsonl
from pipeline.core.stage import StageResult
from pipeline.methods import init_adapters_from_text, text_init_methods
from pipeline.models.data import BatchSampler, Example, collate, encode_rows
from pipeline.models.engines import build_engine
from pipeline.models.lm import load_model
from pipeline.models.tokenizer import pad_token_id
from pipeline.train import checkpoint as ckpt
from pipeline.train.config import TrainConfig, check_config, split_file
from pipeline.train.dev_eval import dev_accuracy, dev_loss, is_better
from pipeline.train.runtime import (
    barrier,
    peak_memory_mb,
    pick_device,
    pick_dtype,
    resolve_repo_path,
    restore_rng_states,
    rng_states,
    seed_everything,
)
from prompts_cot.rows import read_prompt_rows, training_prompts

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def load_examples(cfg: TrainConfig, tokenizer: Any) -> tuple[list[Example], list[dict], list[Example], list[dict]]:
    """Read and tokenise the train and dev rows."""
    train_rows, dev_rows = ([row for _, row in read_prompt_rows(split_file(cfg, split), ("prompt", "response"), limit,
                                                                 allow_empty=False)]
                            for split, limit in (("train", cfg.data.max_train_rows), ("dev", cfg.data.max_dev_rows)))
    enc = dict(max_source_len=cfg.data.max_source_len, max_target_len=cfg.data.max_target_len,
               truncation_side=cfg.data.truncation_side, classify=cfg.method.cls_head)
    return encode_rows(tokenizer, train_rows, **enc), train_rows, encode_rows(tokenizer, dev_rows, **enc), dev_rows


def init_prefix(lm: Any, tokenizer: Any, cfg: TrainConfig) -> None:
    """Apply a text init (``method.<ptuning_v2|prompt_tuning>.init: text``) to the fresh adapters; a resume
    overwrites it later."""
    settings = cfg.method.settings
    if cfg.method.name not in text_init_methods() or getattr(settings, "init", "random") != "text":
        return
    ids = tokenizer(settings.init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"method.{cfg.method.name}.init_text encodes to no tokens",
                          key=f"method.{cfg.method.name}.init_text")
    init_adapters_from_text(lm.adapters, lm.model, ids)
    log.info("%s initialised from %d text tokens (cycled to %d)", cfg.method.name, len(ids), settings.pre_seq_len)


class TrainRecipe:
    """One training run: ``setup()``, ``train()`` (which calls ``evaluate()`` and ``save()``), ``cleanup()``."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.out_dir = cfg, Path(cfg.out_dir)
        self.step, self.epoch, self.position, self.elapsed0, self.best = 0, 0, 0, 0.0, None
        self.metrics: list[dict[str, Any]] = []
        self.tokens_total, self.train_seconds = 0, 0.0

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Model + method, data, engine, sampler; then the resume state when there is one."""
        cfg = self.cfg
        check_config(cfg)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.device = pick_device(cfg.model.device)
        self.dtype = pick_dtype(cfg.model.dtype, self.device)
        # before any work: a checkpoint of another run (or a damaged explicit one) is an exit-2 error here
        self.facts = ckpt.run_facts(cfg, self.dtype)
        plan = ckpt.plan_resume(cfg, self.facts)
        seed_everything(cfg.seed)  # the fresh prefix init is seeded too
        lm, self.tokenizer = load_model(cfg.model.spec, method=cfg.method, dtype=self.dtype, device=self.device,
                                     system_prompt=cfg.model.system_prompt)
        init_prefix(lm, self.tokenizer, cfg)
        if cfg.model.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        self.pad_id = pad_token_id(self.tokenizer)
        self.train_ex, train_rows, self.dev_ex, self.dev_rows = load_examples(cfg, self.tokenizer)
        self.engine = build_engine(cfg.engine.name, lm, cfg.optim, dtype=self.dtype,
                                   deepspeed_config=resolve_repo_path(cfg.engine.deepspeed_config))
        self.lm, self.main = self.engine.module, self.engine.rank == 0
        self.sampler = BatchSampler([len(e) for e in self.train_ex], cfg.optim.per_device_batch_size, cfg.seed,
                                    cfg.data.group_by_length, self.engine.rank, self.engine.world_size)
        # how the training prompts were rendered: classify (or anyone) re-renders new records exactly alike
        prompts = training_prompts(train_rows)
        self.extra = {"model_spec": cfg.model.spec, "variant": cfg.data.variant,
                      "system_prompt": cfg.model.system_prompt,
                      **({"prompts": prompts} if prompts else {})}
        if self.main:
            self.resume_dir = ckpt.apply_resume_plan(plan, cfg)
        self.resumed_from = plan.source
        barrier()  # rank 0 has cleared or adopted the checkpoints before the others read them
        if not self.main:  # decide again on what rank 0 left (an adopted checkpoint is now in out_dir)
            plan = ckpt.plan_resume(cfg, self.facts)
            self.resume_dir = plan.target if plan.source is not None else None
        if self.resume_dir is not None:
            self.resume(self.resume_dir)

    def sampler_facts(self) -> dict[str, Any]:
        """What fixes the data order (a resume with other facts cannot replay the run exactly)."""
        return {"rows": len(self.train_ex), "batch_size": self.cfg.optim.per_device_batch_size, "seed": self.cfg.seed,
                "group_by_length": self.cfg.data.group_by_length, "world_size": self.engine.world_size}

    def resume(self, resume_dir: Path) -> None:
        """Restore engine, progress, best-so-far, RNG streams and the metrics rows up to the checkpoint."""
        state = ckpt.load_trainer_state(resume_dir, self.engine)
        if state.get("sampler") != self.sampler_facts():
            log.warning("resuming with a different data order (%s -> %s): the run will not replay the "
                        "uninterrupted one exactly", state.get("sampler"), self.sampler_facts())
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.elapsed0, self.best = state["elapsed"], state["best"]
        restore_rng_states(state["rng"])
        if "metrics" in state:  # the rows up to the checkpoint travel with it
            self.metrics = list(state["metrics"])
        elif (self.out_dir / METRICS_FILE).exists():
            self.metrics = [r for r in load_jsonl(self.out_dir / METRICS_FILE, allow_nonfinite=True)
                            if r["step"] <= self.step]
        if self.best is not None:
            if self.main:
                ckpt.restore_best(self.out_dir, self.facts, self.best["step"])
            barrier()
            if not ckpt.is_best_of(self.out_dir / "best", self.facts, self.best["step"]):
                log.warning("best/ of step %d is not in %s: best/ is chosen among the evaluations after step %d",
                            self.best["step"], self.out_dir, self.step)
                self.best = None
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_dir, self.step, self.epoch, self.position)

    # ------------------------------------------------------------------------------------- train loop
    def train(self) -> None:
        """Optimizer steps until ``optim.max_steps``; log, evaluate and save on their schedules."""
        cfg, optim = self.cfg, self.cfg.optim
        t_start = time.perf_counter()
        self.last_loss = next((r["loss"] for r in reversed(self.metrics) if r["kind"] == "train"), None)
        stream = self.sampler.iterate(self.epoch, self.position)
        bar = tqdm(total=optim.max_steps, initial=self.step, desc="train", disable=not self.main)
        self.lm.train()
        while self.step < optim.max_steps:
            t0 = time.perf_counter()
            micro, n_tokens = [], 0
            for _ in range(optim.gradient_accumulation_steps):
                self.epoch, self.position, idx = next(stream)
                batch = collate([self.train_ex[i] for i in idx], self.pad_id)
                n_tokens += int(batch["attention_mask"].sum())
                micro.append({k: v.to(self.device) for k, v in batch.items()})
            # the step: forward and backward per micro-batch, then one optimizer step (the engine hides DeepSpeed)
            lr, total = self.engine.current_lr(), 0.0
            for mb in micro:
                loss_t = self.engine.forward(mb).loss
                self.engine.backward(loss_t)
                total += float(loss_t.detach())
            gnorm = self.engine.step()
            loss = self.engine.mean_loss(total, len(micro))
            self.step += 1
            dt = time.perf_counter() - t0
            n_tokens *= self.engine.world_size
            self.tokens_total += n_tokens
            self.last_loss = loss
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{n_tokens / dt:.0f}")
            elapsed = self.elapsed0 + time.perf_counter() - t_start
            last = self.step == optim.max_steps
            if self.step % cfg.logging_steps == 0 or last:
                self.metrics.append({"kind": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr,
                                     "grad_norm": gnorm, "tokens_per_s": round(n_tokens / dt, 1),
                                     "elapsed": round(elapsed, 2)})
            is_eval = (cfg.eval.steps > 0 and self.step % cfg.eval.steps == 0) or last
            if is_eval:
                row = self.evaluate()
                row["elapsed"] = round(self.elapsed0 + time.perf_counter() - t_start, 2)
                self.metrics.append(row)
                log.info("step %d: %s", self.step, {k: v for k, v in row.items() if k.startswith("dev_")})
                if is_better(row, self.best):
                    self.best = row
                    self.save("best", {"dev": row})
            if self.main and (self.step % cfg.logging_steps == 0 or is_eval or last):
                write_jsonl(self.out_dir / METRICS_FILE, self.metrics)
            if (cfg.checkpoint.save_steps > 0 and self.step % cfg.checkpoint.save_steps == 0) or last:
                self.save(f"checkpoints/step-{self.step}", state={
                    "engine": self.engine.name, "step": self.step, "epoch": self.epoch, "position": self.position,
                    "elapsed": self.elapsed0 + time.perf_counter() - t_start, "best": self.best,
                    "rng": rng_states(), "sampler": self.sampler_facts(), "metrics": list(self.metrics)})
                if self.main:
                    ckpt.prune_checkpoints(self.out_dir, cfg.checkpoint.save_total_limit, protect=self.resume_dir)
            fault_point("train.step")
        bar.close()
        self.train_seconds = time.perf_counter() - t_start

    # --------------------------------------------------------------------------------------- evaluate
    def evaluate(self) -> dict[str, Any]:
        """Dev loss (and dev accuracy when ``eval.accuracy_rows`` > 0) at the current step."""
        ev = self.cfg.eval
        row: dict[str, Any] = {"kind": "eval", "step": self.step,
                               "dev_loss": dev_loss(self.lm, self.dev_ex[: ev.loss_rows], self.pad_id, ev.batch_size)}
        if ev.accuracy_rows > 0:
            rows = self.dev_rows[: ev.accuracy_rows]
            row.update(dev_accuracy(self.lm, self.tokenizer, rows, ev.max_new_tokens, ev.batch_size, ev.mode))
            row.update(dev_mode=ev.mode, dev_rows=len(rows))
        return row

    # ------------------------------------------------------------------------------------------- save
    def save(self, name: str, extra: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
             static: bool = False) -> Path:
        """Write checkpoint folder ``out_dir/<name>`` (collective: every rank calls it)."""
        return ckpt.save_checkpoint(self.lm, self.engine, self.out_dir / name, self.cfg,
                                    {**self.extra, "step": self.step, **(extra or {})}, self.facts, state, static)

    # ---------------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> StageResult:
        """Write ``final/``, the metrics and the config; return the outputs and run statistics."""
        cfg, out_dir, best, engine = self.cfg, self.out_dir, self.best, self.engine
        self.save("final", static=cfg.checkpoint.export_static_prefix)
        if self.main:
            write_jsonl(out_dir / METRICS_FILE, self.metrics)
            write_json(out_dir / ckpt.CONFIG_FILE, ckpt.public_config(cfg))
        barrier()  # other ranks hash the outputs for their manifest only once rank 0 has finished writing
        seconds = self.train_seconds
        stats = {
            "steps": self.step, "final_loss": self.last_loss,
            "best_step": best["step"] if best else None,
            "best_dev_acc": best.get("dev_acc") if best else None,
            "best_dev_loss": best["dev_loss"] if best else None,
            "tokens_per_s": round(self.tokens_total / seconds, 1) if self.tokens_total and seconds > 0 else None,
            "seconds": round(seconds, 2), "train_rows": len(self.train_ex), "dev_rows": len(self.dev_ex),
            "truncated_prompts": sum(e.truncated_source for e in self.train_ex),
            "truncated_responses": sum(e.truncated_target for e in self.train_ex),
            "trainable_params": sum(getattr(p, "ds_numel", p.numel()) for p in self.lm.trainable_parameters()),
            "engine": engine.name, "dtype": self.dtype, "device": self.device, "zero_stage": engine.zero_stage,
            "world_size": engine.world_size, "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            **peak_memory_mb(),
        }
        outputs = [out_dir / METRICS_FILE, out_dir / ckpt.CONFIG_FILE, out_dir / "final", out_dir / "checkpoints"]
        if best is not None:
            outputs.append(out_dir / "best")
        return StageResult(outputs=outputs, stats=stats)


def run_train(cfg: TrainConfig) -> StageResult:
    """Train the method's parameters; see the module docstring for what is written."""
    recipe = TrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    return recipe.cleanup()


__all__ = ["METRICS_FILE", "TrainRecipe", "load_examples", "run_train"]

"""PEFT's implementation of a trained method, timed beside ours on the same batches in one process.

After a run, :func:`time_beside_peft` builds PEFT's counterpart of the run's method at the run's settings
(``ptuning_v2`` -> ``PrefixTuning`` without projection; ``prefix_tuning`` -> ``PrefixTuning`` with
projection, the same MLP width; ``prompt_tuning`` -> ``PromptTuning``; ``ptuning_v1`` -> ``PromptEncoder``
MLP or LSTM of the same width; ``lora`` -> ``LoraModel`` with the same r, alpha, dropout and targets) around
a fresh copy of the same base model, and times training steps (forward, backward, clip, AdamW) of ours and
PEFT's on the run's first training batches in alternating rounds (who goes first alternates), so machine
load hits both alike. Ours is the trained :class:`~pipeline.models.lm.AdaptedLM` itself (its checkpoint is
already written; these extra steps change nothing that was saved).

What PEFT has no counterpart for is stated in ``differences``: our ``train_layers`` (PEFT trains every
layer's prefix), a text init (PEFT's prefix has none; timing does not depend on the init), ``cls_head``
(PEFT has no cls head: it is timed without one). The forward maths of each pair agree for the same weights
(``tests/test_methods_peft.py``), so the accuracy of PEFT's implementation trained the same way differs only
by numerics; training PEFT's model for the whole budget as well is left to the GPU profile.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Any

import torch

from pipeline.models.data import collate
from pipeline.models.lm import load_base_model
from pipeline.models.store import resolve_model_dir

log = logging.getLogger(__name__)

PEFT_NAMES = {"ptuning_v2": "PrefixTuning", "prefix_tuning": "PrefixTuning (prefix_projection)",
              "prompt_tuning": "PromptTuning", "ptuning_v1": "PromptEncoder", "lora": "LoraModel"}


def peft_config(method: str, settings: Any, hidden_size: int) -> tuple[Any, list[str]]:
    """PEFT's config for our ``method`` at ``settings`` and the differences PEFT cannot express."""
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType

    common = {"task_type": TaskType.CAUSAL_LM}
    diffs: list[str] = []
    if method == "ptuning_v2":
        if settings.train_layers is not None:
            diffs.append(f"ours trains the top {settings.train_layers} layers' prefix, PEFT every layer's")
        if settings.init == "text":
            diffs.append("ours starts from the text's key/values, PEFT at random")
        return PrefixTuningConfig(**common, num_virtual_tokens=settings.pre_seq_len,
                                  prefix_projection=settings.prefix_projection,
                                  encoder_hidden_size=settings.prefix_hidden_size or hidden_size), diffs
    if method == "prefix_tuning":
        return PrefixTuningConfig(**common, num_virtual_tokens=settings.pre_seq_len, prefix_projection=True,
                                  encoder_hidden_size=settings.prefix_hidden_size), diffs
    if method == "prompt_tuning":
        if settings.init == "text":
            diffs.append("ours starts from the text's embeddings, PEFT at random (timing only)")
        return PromptTuningConfig(**common, num_virtual_tokens=settings.pre_seq_len), diffs
    if method == "ptuning_v1":
        return PromptEncoderConfig(**common, num_virtual_tokens=settings.pre_seq_len,
                                   encoder_reparameterization_type=settings.encoder.upper(),
                                   encoder_hidden_size=settings.encoder_hidden_size or hidden_size,
                                   encoder_dropout=settings.encoder_dropout), diffs
    if method == "lora":
        return LoraConfig(**common, r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=list(settings.target_modules)), diffs
    raise ValueError(f"no PEFT counterpart known for method {method!r}")


def make_step(model: torch.nn.Module):
    """forward + backward + clip + AdamW on ``model``'s trainable parameters (the same for both)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)

    def step(batch: dict[str, torch.Tensor]) -> None:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


def time_beside_peft(recipe: Any, cfg: Any, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    """Seconds per step of ours and PEFT's implementation, alternating; the ratio PEFT / ours."""
    method = cfg.method.name
    if method not in PEFT_NAMES:
        return {"method": method, "peft": None, "reason": f"no PEFT counterpart for {method}"}
    base = load_base_model(resolve_model_dir(cfg.model.spec), dtype=recipe.dtype, device=recipe.device)
    peft_cfg, diffs = peft_config(method, cfg.method.settings, base.config.hidden_size)
    if cfg.method.cls_head:
        diffs.append("ours trains cls heads, PEFT has none: PEFT is timed with the language-model loss")
    from peft import get_peft_model

    theirs = get_peft_model(copy.deepcopy(base), peft_cfg).train()
    ours = recipe.lm
    ours.train()
    n_batches = max(1, warmup + steps)
    order = recipe.sampler.iterate(0, 0)
    batches = []
    for _ in range(n_batches):
        _, _, idx = next(order)
        b = collate([recipe.train_ex[i] for i in idx], recipe.pad_id)
        batches.append({k: v.to(recipe.device) for k, v in b.items()})
    lm_batches = [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "labels")} for b in batches]
    step_ours, n_ours = make_step(ours)
    step_peft, n_peft = make_step(theirs)
    variants = {"ours": (step_ours, batches if cfg.method.cls_head else lm_batches), "peft": (step_peft, lm_batches)}
    for step, data in variants.values():
        for i in range(warmup):
            step(data[i % len(data)])
    times: dict[str, list[float]] = {"ours": [], "peft": []}
    for r in range(rounds):
        for name in (["ours", "peft"] if r % 2 == 0 else ["peft", "ours"]):
            step, data = variants[name]
            t0 = time.perf_counter()
            for i in range(steps):
                step(data[(warmup + i) % len(data)])
            times[name].append((time.perf_counter() - t0) / steps)
        log.info("peft beside %s round %d: %s", method, r, {k: round(v[-1], 3) for k, v in times.items()})
    s = {k: statistics.median(v) for k, v in times.items()}
    return {"method": method, "peft": PEFT_NAMES[method], "rounds": rounds, "steps_per_round": steps,
            "seconds_per_step": s, "all_seconds_per_step": times,
            "step_time_ratio_peft_over_ours": s["peft"] / s["ours"] if s["ours"] > 0 else None,
            "trainable_params": {"ours": n_ours, "peft": n_peft}, "differences": diffs,
            "accuracy": "not trained here: same weights give the same logits (tests/test_methods_peft.py)"}


__all__ = ["PEFT_NAMES", "make_step", "peft_config", "time_beside_peft"]

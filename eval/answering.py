"""Answering in the ``evaluate`` stage: each system answers the examples the resume cache lacks; rows are built.

:func:`answer_examples` loads a system's model only when something is pending and appends every chunk of answers
to the cache; :func:`collect_rows` builds the predictions rows (docs/CONTRACT.md) from the cached answers and
the *current* examples, so a corrected gold label is picked up without answering again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from tqdm.auto import tqdm

from eval.cache import PartialCache, cached_answer, row_key, system_fingerprint
from eval.config import EvalConfig, budget_of, prefix_dir
from eval.expand import Example
from eval.faithfulness import check_rationale
from eval.pet_systems import System, system_examples
from pipeline.core.taxonomy import LEVELS

log = logging.getLogger(__name__)


def prediction_row(ex: Example, tag: str, mode: str, answer: dict[str, Any], split: str) -> dict[str, Any]:
    """A predictions.jsonl row (docs/CONTRACT.md schema, plus lang and oracle_motion; a generated CoT reply also
    gets its rationale's ``faithfulness`` verdict, :mod:`eval.faithfulness`)."""
    parsed = {lvl: answer["parsed"].get(lvl) for lvl in LEVELS}
    correct = {lvl: (parsed[lvl] == ex.gold[lvl]) if ex.gold[lvl] is not None else None for lvl in LEVELS}
    row = {"sample_id": ex.sample_id, "split": split, "model_tag": tag, "variant": ex.variant, "mode": mode,
           "perturbation": ex.perturbation, "severity": ex.severity, "seed": ex.seed, "lang": ex.lang,
           "prompt": ex.prompt, "output": answer["output"], "parsed": parsed, "gold": ex.gold, "correct": correct,
           "label_may_change": ex.label_may_change, "oracle_motion": ex.oracle_motion,
           "latency_s": round(float(answer.get("latency_s") or 0.0), 5)}
    if "probs" in answer:
        row["probs"] = answer["probs"]
    if answer.get("new_tokens") is not None:
        row["new_tokens"] = int(answer["new_tokens"])
    if mode == "generate" and ex.record is not None and ex.options is not None:
        row["faithfulness"] = check_rationale(answer["output"], ex.record, ex.options).to_dict()
    return row


def answer_pet(lm: Any, tokenizer: Any, system: System, variant: str, exs: list[Example],
               batch_size: int) -> list[dict[str, Any]]:
    """Label-score PET cloze prompts ``P(x)`` (k filled examples, then x) through the verbalizer candidates."""
    from pipeline.methods.pet import cloze_candidate, filled_reply, render_cloze_prompt
    from pipeline.models.scoring import score_rows

    demos = (system.pet_demos or {}).get(variant, {})
    prompts = [render_cloze_prompt(ex.prompt, ex.lang, [(d.text, d.labels) for d in demos.get(ex.lang, [])])
               for ex in exs]
    t0 = time.perf_counter()
    rows = score_rows(lm, tokenizer, prompts, [ex.lang for ex in exs], batch_size, candidate=cloze_candidate)
    lat = (time.perf_counter() - t0) / max(len(rows), 1)
    for r, ex in zip(rows, exs):
        r["output"] = filled_reply(r["parsed"], ex.lang)
        r["latency_s"] = lat
    return rows


def answer_examples(cfg: EvalConfig, system: System, examples: dict[str, list[Example]],
                    cache: PartialCache, checkpoint: Any = None) -> dict[str, Any]:
    """Answer every not-yet-cached example with one system (its model loaded only if something is pending).

    ``checkpoint``: the system's :class:`~pipeline.models.checkpoint.Checkpoint` as the preflight read it (None:
    the base model, or read here from the system's folder)."""
    from pipeline.models.scoring import answer_rows

    entry = system.entry
    prefix = prefix_dir(cfg, entry)
    fp = system_fingerprint(cfg, system)
    pending: dict[tuple[str, str], list[tuple[str, Example]]] = defaultdict(list)
    for variant, exs in examples.items():
        for mode in system.modes or cfg.modes:
            for ex in system_examples(system, exs):
                key = row_key(fp, cfg.dtype, mode, ex, budget_of(cfg, variant))
                if key not in cache:
                    pending[(variant, mode)].append((key, ex))
    total = sum(len(v) for v in pending.values())
    timings: dict[str, Any] = {}
    if total == 0:
        log.info("model %s: every row already answered (resume cache)", entry.tag)
        return timings
    from pipeline.models.lm import load_model

    lm, tokenizer = load_model(entry.spec, checkpoint=checkpoint if checkpoint is not None else prefix,
                               dtype=cfg.dtype, device=cfg.device)
    bar = tqdm(total=total, desc=f"evaluate {entry.tag}")
    for (variant, mode), items in pending.items():
        budget = budget_of(cfg, variant)
        t0 = time.perf_counter()
        for start in range(0, len(items), cfg.chunk_size):
            chunk = items[start: start + cfg.chunk_size]
            if system.pet_demos is not None:
                answers = answer_pet(lm, tokenizer, system, variant, [ex for _, ex in chunk], cfg.batch_size)
            else:
                answers = answer_rows(lm, tokenizer, mode, [ex.prompt for _, ex in chunk],
                                      [ex.lang for _, ex in chunk], cfg.batch_size, budget)
            cache.add([(key, cached_answer(ans)) for (key, _), ans in zip(chunk, answers)])
            bar.update(len(chunk))
        secs = time.perf_counter() - t0
        timings[f"{entry.tag}/{variant}/{mode}"] = {"rows": len(items), "seconds": round(secs, 3),
                                                    "examples_per_s": round(len(items) / secs, 3) if secs else None}
    bar.close()
    return timings


def collect_rows(cfg: EvalConfig, systems: list[System], examples: dict[str, list[Example]],
                 cache: PartialCache) -> list[dict[str, Any]]:
    """Prediction rows of exactly this config's keys, in (system, variant, mode, example) order.

    Built from the cached answers and the *current* examples (gold labels, language, perturbation facts).
    """
    rows = []
    for system in systems:
        fp = system_fingerprint(cfg, system)
        for variant, exs in examples.items():
            for mode in system.modes or cfg.modes:
                rows.extend(prediction_row(ex, system.entry.tag, mode,
                                           cache.answers[row_key(fp, cfg.dtype, mode, ex, budget_of(cfg, variant))],
                                           cfg.split) for ex in system_examples(system, exs))
    return rows

"""Answer a batch of prompts in the two scoring modes, and measure their throughput.

* **generate**: greedy batched decoding (:func:`pipeline.models.generation.generate_timed`), then
  :func:`pipeline.core.answer.parse_answer`.
* **score** (label scoring): for each level, the candidates are the level's labels in display form
  for the row's language, written as the *answer line the trained model emits*, cut right after
  the candidate and its separator: ``Answer: motion=flyby;`` then
  ``Answer: motion=<argmax motion>; operation=docking;`` then ``...; task=observation``. Levels are
  scored in answer-line order, each conditioned on the previous levels' argmax (what greedy decoding
  of the answer line would condition on), so the tuned model's ranking is the one it learnt. The
  shared prefix adds the same log-probability to every candidate of a row, so it cancels in the
  softmax that turns the summed log-probs into probabilities. The separator after a candidate
  closes the value (``fly`` cannot win by being a prefix of ``flyby``).
  For the **CoT** variant the answer line is scored directly after the prompt, skipping the
  rationale the model would first write: score mode then measures the model's answer prior
  without its own reasoning (generation mode measures the full CoT behaviour).
* **cls heads** (a model trained with ``method.cls_head: true``): both modes answer from the heads'
  per-level probabilities over the prompt's last token (:func:`head_rows`); the language model itself
  was not trained to write the answer, so its generation would say nothing about the method.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.core.answer import format_answer, parse_answer
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS, display
from pipeline.methods.base import eval_mode
from pipeline.models.generation import (
    generate_timed,
    head_probabilities,
    length_sorted_batches,
    pad_left,
    pad_right,
    score_ids,
)
from pipeline.models.lm import encode_chat_prompt, positions_from_mask
from pipeline.models.tokenizer import pad_token_id

log = logging.getLogger(__name__)


def softmax(logp: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of log-scores ``(..., k)``."""
    from scipy.special import logsumexp

    return np.exp(logp - logsumexp(logp, axis=axis, keepdims=True))


def answer_candidate(prior: dict[str, str], level: str, label: str, lang: str) -> str:
    """The answer-line text up to and including ``label`` at ``level`` (plus its separator).

    ``prior`` holds the labels of the levels before ``level``. Built from
    :func:`pipeline.core.answer.format_answer` so the text matches the trained response exactly.
    """
    filled = {lvl: prior.get(lvl) or LABELS[lvl][0] for lvl in LEVELS}
    filled[level] = label
    line = format_answer(filled, lang)
    pair = f"{LEVEL_DISPLAY[lang][level]}={display(label, lang)}"
    idx = line.find(pair)
    if idx < 0:
        raise ValueError(f"format_answer output {line!r} has no {pair!r}; cannot build score candidates")
    end = idx + len(pair)
    pos = LEVELS.index(level)
    if pos + 1 < len(LEVELS):
        nxt = line.find(f"{LEVEL_DISPLAY[lang][LEVELS[pos + 1]]}=", end)
        if nxt > end:
            end = end + len(line[end:nxt].rstrip())  # the separator, without the space before the next key
    return line[:end]


def shared_token_prefix(cand_ids: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every candidate shares, leaving each at least one token of its own."""
    n = min(len(c) for c in cand_ids) - 1
    k = 0
    while k < n and all(c[k] == cand_ids[0][k] for c in cand_ids):
        k += 1
    return max(k, 0)


def score_group(lm: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[str],
                batch_size: int = 8) -> np.ndarray:
    """Summed log-probs ``(n, k)`` of candidate replies; equal to :func:`pipeline.models.generation.score_candidates`
    up to a per-row constant.

    Each candidate is tokenized whole (as training tokenizes the response); the token prefix all
    candidates share (``Answer: motion=flyby; operation=``) is appended to the prompt ids and only
    the differing suffixes run through the vocabulary softmax. The shared part's log-probability
    is the same for every candidate of a row, so the softmax over candidates is unchanged, and the
    (b·k, Tc, vocab) log-softmax stays a few tokens long.
    """
    import torch

    cand_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates]
    if any(not c for c in cand_ids):
        raise ValueError(f"a candidate tokenizes to nothing: {list(candidates)!r}")
    common = shared_token_prefix(cand_ids)
    suffixes = [c[common:] for c in cand_ids]
    encoded = [encode_chat_prompt(tokenizer, p) + list(cand_ids[0][:common]) for p in prompts]
    pad = pad_token_id(tokenizer)
    scores = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
    with eval_mode(lm), torch.no_grad():
        for batch in length_sorted_batches([len(e) for e in encoded], batch_size):
            scores[batch] = score_ids(lm, [encoded[i] for i in batch], suffixes, pad).double().cpu().numpy()
    return scores


def _score_levels_batch(lm: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], lang: str,
                        pad_id: int) -> list[tuple[dict[str, str], dict[str, dict[str, float]]]]:
    """Label-score one batch of same-language prompts, running each prompt through the model **once**.

    The prompt batch ``(b, T)`` (with the prefix) fills a cache; for each level a copy of it is
    extended with the row's shared answer-line prefix (``Answer: motion=`` then
    ``Answer: motion=<argmax>; operation=`` ...; right-padded, masked), and the ``k`` candidate
    suffixes run as one ``(b·k, Tc)`` batch on top. Same log-probs as :func:`score_group` up to a
    per-row constant (tested), at about a third of the prompt cost.
    """
    import copy

    import torch

    device = lm.device
    b = len(prompt_ids)
    ids, mask = pad_left(prompt_ids, pad_id, device)
    cache0 = lm.new_cache(b, read_only=False)
    positions = positions_from_mask(mask, lm.position_offset)
    prompt_mask = lm.extend_mask(mask)
    lm.call_base(ids, prompt_mask, positions, cache0, use_cache=True, logits_to_keep=1)
    next_pos = positions[:, -1] + 1  # (b,)
    parsed: list[dict[str, str]] = [{} for _ in range(b)]
    probs: list[dict[str, dict[str, float]]] = [{} for _ in range(b)]
    for level in LEVELS:
        labels = LABELS[level]
        k = len(labels)
        cand_ids = [[tokenizer(answer_candidate(parsed[r], level, lab, lang), add_special_tokens=False)["input_ids"]
                     for lab in labels] for r in range(b)]
        commons = [shared_token_prefix(c) for c in cand_ids]
        if min(commons) < 1:  # no shared prefix to feed: fall back to the prompt-per-level path
            raise ValueError("candidates share no token prefix")
        shared, smask = pad_right([c[0][:n] for c, n in zip(cand_ids, commons)], pad_id, device)  # (b, S)
        cache = copy.deepcopy(cache0)
        spos = next_pos.unsqueeze(1) + (smask.cumsum(1) - 1).clamp(min=0)
        ctx_mask = torch.cat([prompt_mask, smask], dim=1)
        out = lm.call_base(shared, ctx_mask, spos, cache, use_cache=True)
        last = smask.sum(1) - 1  # (b,) index of each row's last shared token
        first = torch.log_softmax(out.logits[torch.arange(b, device=device), last].float(), dim=-1)  # (b, V)
        suffixes = [cid[n:] for c, n in zip(cand_ids, commons) for cid in c]  # b*k lists
        cand, cmask = pad_right(suffixes, pad_id, device)  # (b*k, Tc)
        total = first.repeat_interleave(k, 0).gather(1, cand[:, :1]).squeeze(1)  # (b*k,)
        if cand.shape[1] > 1:
            cache.batch_repeat_interleave(k)
            rows_mask = torch.cat([ctx_mask.repeat_interleave(k, 0), cmask], dim=1)
            start = (next_pos + smask.sum(1)).repeat_interleave(k, 0).unsqueeze(1)
            cpos = start + torch.arange(cand.shape[1], device=device).unsqueeze(0)
            out = lm.call_base(cand, rows_mask, cpos, cache, use_cache=True)
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            tok_lp = logp.gather(-1, cand[:, 1:].unsqueeze(-1)).squeeze(-1) * cmask[:, 1:]
            total = total + tok_lp.sum(-1)
        p = softmax(total.view(b, k).double().cpu().numpy(), axis=1)
        for r in range(b):
            probs[r][level] = {lab: float(p[r, j]) for j, lab in enumerate(labels)}
            parsed[r][level] = labels[int(np.argmax(p[r]))]
    return list(zip(parsed, probs))


def has_cls_head(lm: Any) -> bool:
    """Whether ``lm`` answers from trained classification heads."""
    return getattr(lm, "cls_head", None) is not None


def head_rows(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str],
              batch_size: int = 8) -> list[dict[str, Any]]:
    """The cls heads' answers: per row ``{"parsed", "probs", "output"}`` as :func:`score_rows` returns them."""
    rows = []
    for probs, lang in zip(head_probabilities(lm, tokenizer, prompts, batch_size), langs):
        parsed = {lvl: max(p, key=p.get) for lvl, p in probs.items()}
        rows.append({"parsed": parsed, "probs": probs, "output": format_scored(parsed, lang)})
    return rows


def score_rows(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str],
               batch_size: int = 8) -> list[dict[str, Any]]:
    """Label-score every prompt; returns per row ``{"parsed": {level: label}, "probs": {level: {label: p}}, "output"}``.

    Rows are batched by language and length; each prompt runs through the model once and its cache
    is reused for the three levels (:func:`_score_levels_batch`). A model with cls heads answers from them.
    """
    import torch

    if has_cls_head(lm):
        return head_rows(lm, tokenizer, prompts, langs, batch_size)

    n = len(prompts)
    results: list[tuple[dict[str, str], dict[str, dict[str, float]]] | None] = [None] * n
    encoded = [encode_chat_prompt(tokenizer, p) for p in prompts]
    pad = pad_token_id(tokenizer)
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        by_lang[langs[i]].append(i)
    with eval_mode(lm), torch.no_grad():
        for lang, idx in by_lang.items():
            for batch in length_sorted_batches([len(encoded[i]) for i in idx], batch_size):
                rows = [idx[j] for j in batch]
                for i, res in zip(rows, _score_levels_batch(lm, tokenizer, [encoded[i] for i in rows], lang, pad)):
                    results[i] = res
    return [{"parsed": parsed, "probs": probs, "output": format_scored(parsed, langs[i])}
            for i, (parsed, probs) in enumerate(results)]  # type: ignore[misc]


def score_rows_per_level(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str],
                         batch_size: int = 8) -> list[dict[str, Any]]:
    """Reference implementation of :func:`score_rows`: one prompt pass per level (3x the prompt cost).

    Rows are grouped by (language, previous levels' argmax) so each group shares one candidate list.
    Kept for tests (the cached path must agree with it) and as a fallback.
    """
    n = len(prompts)
    parsed: list[dict[str, str]] = [{} for _ in range(n)]
    probs: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
    for level in LEVELS:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in range(n):
            groups[(langs[i], tuple(parsed[i].get(lvl) for lvl in LEVELS[: LEVELS.index(level)]))].append(i)
        for (lang, _), idx in groups.items():
            cands = [answer_candidate(parsed[idx[0]], level, lab, lang) for lab in LABELS[level]]
            logp = score_group(lm, tokenizer, [prompts[i] for i in idx], cands, batch_size=batch_size)
            p = softmax(logp, axis=1)  # (len(idx), k)
            for row, i in enumerate(idx):
                probs[i][level] = {lab: float(p[row, j]) for j, lab in enumerate(LABELS[level])}
                parsed[i][level] = LABELS[level][int(np.argmax(p[row]))]
    return [{"parsed": parsed[i], "probs": probs[i], "output": format_scored(parsed[i], langs[i])} for i in range(n)]


def format_scored(parsed: dict[str, str], lang: str) -> str:
    """The answer line the scored labels correspond to (the ``output`` field of score-mode rows)."""
    return format_answer(parsed, lang)


def generate_rows(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str],
                  batch_size: int = 8, max_new_tokens: int = 128) -> list[dict[str, Any]]:
    """Greedy replies, parsed; per row ``{"output", "parsed", "latency_s"}`` (cls heads: their answer line)."""
    if has_cls_head(lm):
        t0 = time.perf_counter()
        rows = head_rows(lm, tokenizer, prompts, langs, batch_size)
        lat = (time.perf_counter() - t0) / max(len(rows), 1)
        return [{**r, "latency_s": lat} for r in rows]
    replies = generate_timed(lm, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [{"output": text, "parsed": parse_answer(text, lang), "latency_s": lat}
            for (text, lat), lang in zip(replies, langs)]


def answer_rows(lm: Any, tokenizer: Any, mode: str, prompts: Sequence[str], langs: Sequence[str],
                batch_size: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """Dispatch to :func:`score_rows` or :func:`generate_rows`; score rows get their mean latency."""
    if mode == "generate":
        return generate_rows(lm, tokenizer, prompts, langs, batch_size, max_new_tokens)
    if mode == "score":
        t0 = time.perf_counter()
        rows = score_rows(lm, tokenizer, prompts, langs, batch_size)
        lat = (time.perf_counter() - t0) / max(len(rows), 1)
        for r in rows:
            r["latency_s"] = lat
        return rows
    raise ValueError(f"unknown mode {mode!r}; use 'score' or 'generate'")


def benchmark_throughput(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str] | None = None,
                         batch_size: int = 8, max_new_tokens: int = 64, n_single: int | None = None) -> dict[str, Any]:
    """Examples per second of label scoring, batched generation and one-at-a-time generation.

    ``n_single`` limits the (slow) one-at-a-time run to the first prompts (default all). Used by
    ``scripts/bench_eval.py``; numbers depend on the machine, so report it with them.
    """
    langs = list(langs) if langs is not None else ["en"] * len(prompts)
    out: dict[str, Any] = {"n": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    t0 = time.perf_counter()
    score_rows(lm, tokenizer, prompts, langs, batch_size)
    out["score_examples_per_s"] = len(prompts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    generate_rows(lm, tokenizer, prompts, langs, batch_size, max_new_tokens)
    out["generate_batched_examples_per_s"] = len(prompts) / (time.perf_counter() - t0)
    single = list(prompts[: n_single or len(prompts)])
    t0 = time.perf_counter()
    for p, lang in zip(single, langs):
        generate_rows(lm, tokenizer, [p], [lang], 1, max_new_tokens)
    out["generate_single_examples_per_s"] = len(single) / (time.perf_counter() - t0)
    out["n_single"] = len(single)
    return out


__all__ = ["answer_candidate", "softmax", "answer_rows", "benchmark_throughput", "format_scored", "generate_rows",
           "has_cls_head", "head_rows", "score_group",
           "score_rows", "score_rows_per_level", "shared_token_prefix"]

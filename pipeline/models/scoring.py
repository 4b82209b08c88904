"""Answer a batch of prompts in the two scoring modes, and measure their throughput.

* **generate**: greedy batched decoding (:func:`pipeline.models.generation.generate_replies`), then
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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from pipeline.core.answer import format_answer, parse_answer
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS, display
from pipeline.methods.base import eval_mode
from pipeline.models.generation import (
    generate_replies,
    head_probabilities,
    length_sorted_batches,
    pad_left,
    pad_right,
    score_ids,
)
from pipeline.models.lm import encode_chat_prompt
from pipeline.models.tokenizer import pad_token_id

log = logging.getLogger(__name__)

#: ``(prior argmax labels, level, label, lang) -> reply text`` up to the label and its closing separator
CandidateFn = Callable[[Mapping[str, str], str, str, str], str]


def softmax(logp: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of log-scores ``(..., k)``."""
    from scipy.special import logsumexp

    return np.exp(logp - logsumexp(logp, axis=axis, keepdims=True))


def answer_candidate(prior: Mapping[str, str], level: str, label: str, lang: str) -> str:
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


def candidate_block(shared: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]], start: torch.Tensor,
                    pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[list[int]]]]:
    """Lay out each row's shared answer-line tokens and all its ``k`` candidate suffixes as one sequence.

    Row ``r`` becomes ``shared[r]`` followed by its ``k`` candidate suffixes back to back (a "tree": every
    candidate branches off the shared tokens), right-padded to the longest row. Each candidate token sees the
    cached context, the row's shared tokens and its own earlier tokens only, at the positions it would have if
    it followed the shared tokens alone, so one ``(b, Q)`` forward gives every candidate's log-probs with no
    copy of the cache per candidate.

    Args:
        shared: ``b`` lists of shared token ids; suffixes: ``b`` x ``k`` candidate suffixes (>= 1 token each);
        start: ``(b,)`` position of each row's first shared token.
    Returns:
        ids ``(b, Q)``, positions ``(b, Q)``, visibility ``(b, Q, Q)`` (True = query may attend to key), and per
        row / candidate the column whose logits predict each of the candidate's tokens.
    """
    import torch

    b = len(shared)
    q = max(len(shared[r]) + sum(len(x) for x in suffixes[r]) for r in range(b))
    ids = torch.full((b, q), pad_id, dtype=torch.long)
    pos = torch.zeros((b, q), dtype=torch.long)
    vis = torch.zeros((b, q, q), dtype=torch.bool)
    vis[:, torch.arange(q), torch.arange(q)] = True  # padding queries see themselves (no empty softmax rows)
    reads: list[list[list[int]]] = []
    for r in range(b):
        s = len(shared[r])
        ids[r, :s] = torch.tensor(shared[r], dtype=torch.long)
        pos[r, :s] = start[r] + torch.arange(s)
        vis[r, :s, :s] = torch.ones(s, s, dtype=torch.bool).tril()
        row_reads, o = [], s
        for suf in suffixes[r]:
            n = len(suf)
            ids[r, o:o + n] = torch.tensor(suf, dtype=torch.long)
            pos[r, o:o + n] = start[r] + s + torch.arange(n)
            vis[r, o:o + n, :s] = True
            vis[r, o:o + n, o:o + n] = torch.ones(n, n, dtype=torch.bool).tril()
            row_reads.append([s - 1] + [o + i for i in range(n - 1)])  # column predicting token i of the suffix
            o += n
        reads.append(row_reads)
    return ids, pos, vis, reads


def _score_levels_batch(lm: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], lang: str,
                        pad_id: int, candidate: CandidateFn = answer_candidate
                        ) -> list[tuple[dict[str, str], dict[str, dict[str, float]]]]:
    """Label-score one batch of same-language prompts, running each prompt through the model **once**.

    The prompt batch ``(b, T)`` (with the prefix) fills a cache once. For each level, the row's shared
    answer-line prefix (``Answer: motion=`` then ``Answer: motion=<argmax>; operation=`` ...) and all ``k``
    candidate suffixes run as one ``(b, S + k*Lmax)`` sequence on top of that cache, read-only, with a 4-D
    attention mask that keeps the candidates apart (:func:`candidate_block`). Same log-probs as
    :func:`score_group` up to a per-row constant (tested on every tiny architecture); the cache is never
    copied or repeated per candidate. ``candidate`` builds the reply
    texts (default: the answer line; PET passes its cloze sentences).
    """
    import torch

    from pipeline.models.lm import PrefixCache

    device = lm.device
    b = len(prompt_ids)
    ids, mask = pad_left(prompt_ids, pad_id, device)
    grown = lm.new_cache(b, read_only=False)
    positions = lm.position_ids(ids, mask)
    prompt_mask = lm.extend_mask(mask)  # (b, C): C = prefix + prompt columns
    lm.call_base(ids, prompt_mask, positions, grown, use_cache=True, logits_to_keep=1)
    context = PrefixCache([(layer.keys, layer.values) for layer in grown.layers], read_only=True)
    next_pos = (positions[:, -1] + 1).cpu()  # (b,)
    blocked = torch.finfo(lm.dtype).min
    parsed: list[dict[str, str]] = [{} for _ in range(b)]
    probs: list[dict[str, dict[str, float]]] = [{} for _ in range(b)]
    for level in LEVELS:
        labels = LABELS[level]
        k = len(labels)
        cand_ids = [[tokenizer(candidate(parsed[r], level, lab, lang), add_special_tokens=False)["input_ids"]
                     for lab in labels] for r in range(b)]
        commons = [shared_token_prefix(c) for c in cand_ids]
        if min(commons) < 1:
            raise ValueError("candidates share no token prefix")
        shared = [c[0][:n] for c, n in zip(cand_ids, commons)]
        suffixes = [[cid[n:] for cid in c] for c, n in zip(cand_ids, commons)]
        qids, qpos, vis, reads = candidate_block(shared, suffixes, next_pos, pad_id)
        q = qids.shape[1]
        visible = torch.cat([prompt_mask.bool().cpu()[:, None, :].expand(b, q, -1), vis], dim=2)  # (b, Q, C+Q)
        mask4 = torch.zeros(visible.shape, dtype=lm.dtype).masked_fill_(~visible, blocked)[:, None].to(device)
        # only the columns that predict a candidate token reach the vocabulary projection: (N, V), row-major
        keep = torch.zeros((b, q), dtype=torch.bool)
        for r in range(b):
            keep[r, sorted({c for cols in reads[r] for c in cols})] = True
        row_of = torch.full((b, q), -1, dtype=torch.long)
        row_of[keep] = torch.arange(int(keep.sum()))
        logits = lm.call_base(qids.to(device), mask4, qpos.to(device), context, use_cache=True,
                              logits_to_keep=keep.to(device)).logits
        logp = torch.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=-1).cpu()  # (N, V)
        total = torch.zeros(b, k, dtype=torch.float64)
        for r in range(b):
            for j, suf in enumerate(suffixes[r]):
                total[r, j] = logp[row_of[r, reads[r][j]], torch.tensor(suf)].sum().double()
        p = softmax(total.numpy(), axis=1)
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
               batch_size: int = 8, candidate: CandidateFn = answer_candidate) -> list[dict[str, Any]]:
    """Label-score every prompt; returns per row ``{"parsed": {level: label}, "probs": {level: {label: p}}, "output"}``.

    Rows are batched by language and length; each prompt runs through the model once and its cache
    is reused for the three levels (:func:`_score_levels_batch`). ``candidate`` builds each level's
    reply texts (default :func:`answer_candidate`; PET-style cloze passes
    :func:`pipeline.methods.pet.cloze_candidate`). ``output`` is always the answer line of the labels.
    A model with cls heads answers from them.
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
                scored = _score_levels_batch(lm, tokenizer, [encoded[i] for i in rows], lang, pad, candidate)
                for i, res in zip(rows, scored):
                    results[i] = res
    return [{"parsed": parsed, "probs": probs, "output": format_scored(parsed, langs[i])}
            for i, (parsed, probs) in enumerate(results)]  # type: ignore[misc]


def score_rows_per_level(lm: Any, tokenizer: Any, prompts: Sequence[str], langs: Sequence[str],
                         batch_size: int = 8, candidate: CandidateFn = answer_candidate) -> list[dict[str, Any]]:
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
            cands = [candidate(parsed[idx[0]], level, lab, lang) for lab in LABELS[level]]
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
    """Greedy replies (each ending at its answer line), parsed; per row ``{"output", "parsed", "latency_s",
    "new_tokens"}`` (cls heads: their answer line)."""
    if has_cls_head(lm):
        t0 = time.perf_counter()
        rows = head_rows(lm, tokenizer, prompts, langs, batch_size)
        lat = (time.perf_counter() - t0) / max(len(rows), 1)
        return [{**r, "latency_s": lat} for r in rows]
    replies = generate_replies(lm, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [{"output": r.text, "parsed": parse_answer(r.text, lang), "latency_s": r.latency_s,
             "new_tokens": r.new_tokens} for r, lang in zip(replies, langs)]


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


__all__ = ["CandidateFn", "answer_candidate", "candidate_block", "softmax", "answer_rows", "benchmark_throughput",
           "format_scored", "generate_rows", "has_cls_head", "head_rows", "score_group",
           "score_rows", "score_rows_per_level", "shared_token_prefix"]

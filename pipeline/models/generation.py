"""Greedy generation and candidate scoring with a :class:`~pipeline.models.lm.AdaptedLM`.

* :func:`generate` -- batched greedy decoding over the KV cache: prompts left-padded, the prefix
  computed once per batch and shared by its rows, each row stops at its own EOS or at the end of its
  answer line (:func:`pipeline.core.answer.answer_line_done`); :func:`generate_replies` adds latency and
  new-token counts.
* :func:`score_candidates` -- summed log-probability of every candidate continuation after each
  chat-formatted prompt; the prompt (with the prefix) is encoded once and its KV cache reused for
  all ``k`` candidates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.core.answer import answer_line_done
from pipeline.methods.base import eval_mode
from pipeline.models.lm import AdaptedLM, encode_chat_prompt
from pipeline.models.tokenizer import pad_token_id

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- helpers
def eos_token_ids(lm: AdaptedLM, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)):
        if source is None:
            continue
        ids.update([source] if isinstance(source, int) else list(source))
    if not ids:
        raise ValueError("tokenizer and model define no EOS token; cannot stop generation")
    return sorted(ids)


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to ``(B, T)`` ids and mask (1 = real)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to ``(B, T)`` ids and mask (1 = real)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first) so little padding is computed."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


# ------------------------------------------------------------------------------------------- generate
#: ``row's new ids so far -> True`` when the row is done (it keeps the token that completed it)
StopFn = Callable[[list[int]], bool]


class Reply(NamedTuple):
    """One greedy reply: its text, its latency (its batch's wall time / batch rows) and its new token count."""

    text: str
    latency_s: float
    new_tokens: int


@torch.no_grad()
def generate_ids(
    lm: AdaptedLM, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos_ids: Sequence[int], pad_id: int,
    stop: StopFn | None = None,
) -> list[list[int]]:
    """Greedy-decode one batch of token-id prompts; returns the new ids per row, EOS excluded.

    A row ends at its first EOS, or (``stop``) at the first token after which ``stop(row_ids)`` is true, or at
    ``max_new_tokens``; the batch ends when every row has. Shapes: prompts left-padded to ``(B, T)``; the cache
    holds ``(B, kv_heads, P+T+t, head_dim)`` per layer at step ``t``; only the last position's logits ``(B, vocab)``
    are computed.
    """
    device = lm.device
    ids, mask = pad_left(prompt_ids, pad_id, device)
    b = ids.shape[0]
    cache = lm.new_cache(b, read_only=False)  # the prefix, computed once for the whole batch
    positions = lm.position_ids(ids, mask)
    full_mask = lm.extend_mask(mask)
    eos_set = {int(e) for e in eos_ids}
    finished = [False] * b
    rows: list[list[int]] = [[] for _ in range(b)]
    out = lm.call_base(ids, full_mask, positions, cache, use_cache=True, logits_to_keep=1)
    next_pos = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        for i, tok in enumerate(nxt.tolist()):
            if finished[i]:
                continue
            if tok in eos_set:
                finished[i] = True
                continue
            rows[i].append(tok)
            if stop is not None and stop(rows[i]):
                finished[i] = True
        if all(finished) or step == max_new_tokens - 1:
            break
        # finished rows keep decoding a pad token (their output is already cut); the batch shape stays fixed
        nxt = torch.where(torch.tensor(finished, device=device), torch.full_like(nxt, pad_id), nxt)
        full_mask = torch.cat([full_mask, full_mask.new_ones(b, 1)], dim=1)
        out = lm.call_base(nxt[:, None], full_mask, next_pos, cache, use_cache=True, logits_to_keep=1)
        next_pos = next_pos + 1
    return rows


def answer_stop(tokenizer: Any) -> StopFn:
    """Stop a row once its decoded reply has finished its answer line (:func:`pipeline.core.answer.answer_line_done`)."""
    return lambda ids: answer_line_done(tokenizer.decode(ids, skip_special_tokens=True))


def generate(lm: AdaptedLM, tokenizer: Any, prompts: list[str], *args: Any, **kwargs: Any) -> list[str]:
    """Greedy replies to raw ``prompts`` (the chat format is applied here via ``build_chat_prompt``); the other
    arguments are :func:`generate_replies`'."""
    return [r.text for r in generate_replies(lm, tokenizer, prompts, *args, **kwargs)]


def generate_timed(lm: AdaptedLM, tokenizer: Any, prompts: list[str], *args: Any,
                   **kwargs: Any) -> list[tuple[str, float]]:
    """Like :func:`generate` but also returns each row's latency (its batch's wall time / batch rows)."""
    return [(r.text, r.latency_s) for r in generate_replies(lm, tokenizer, prompts, *args, **kwargs)]


def generate_replies(
    lm: AdaptedLM,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = False,
    stop_at_answer: bool = True,
) -> list[Reply]:
    """Greedy :class:`Reply` per prompt, in length-sorted batches; ``stop_at_answer``: a row ends at the end of its
    answer line (:func:`answer_stop`) as well as at EOS, so a CoT reply costs its rationale and answer, no more."""
    if not prompts:
        return []
    encoded = [encode_chat_prompt(tokenizer, p) for p in prompts]
    eos_ids, pad_id = eos_token_ids(lm, tokenizer), pad_token_id(tokenizer)
    stop = answer_stop(tokenizer) if stop_at_answer else None
    results: list[Reply | None] = [None] * len(prompts)
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    with eval_mode(lm):
        for batch in tqdm(batches, desc="generate", disable=not progress):
            t0 = time.perf_counter()
            new_ids = generate_ids(lm, [encoded[i] for i in batch], max_new_tokens, eos_ids, pad_id, stop)
            latency = (time.perf_counter() - t0) / len(batch)
            for i, ids in zip(batch, new_ids):
                results[i] = Reply(tokenizer.decode(ids, skip_special_tokens=True).rstrip("\n"), latency, len(ids))
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ cls heads
@torch.no_grad()
def head_probabilities(lm: AdaptedLM, tokenizer: Any, prompts: Sequence[str],
                       batch_size: int = 8) -> list[dict[str, dict[str, float]]]:
    """Per prompt ``{level: {label: p}}`` from the cls heads over the chat-formatted prompt's last token."""
    from pipeline.methods.cls_head import probabilities

    encoded = [encode_chat_prompt(tokenizer, p) for p in prompts]
    pad_id = pad_token_id(tokenizer)
    out: list[dict[str, dict[str, float]] | None] = [None] * len(prompts)
    with eval_mode(lm):
        for batch in length_sorted_batches([len(e) for e in encoded], batch_size):
            ids, mask = pad_left([encoded[i] for i in batch], pad_id, lm.device)
            for i, probs in zip(batch, probabilities(lm.head_logits(ids, mask))):
                out[i] = probs
    return out  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_ids(
    lm: AdaptedLM, prompt_ids: Sequence[Sequence[int]], cand_ids: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Summed log-probs ``(b, k)`` of each candidate-id list after each prompt-id list.

    The prompt batch ``(b, T)`` runs once (with the prefix); its cache is repeated ``k`` times
    and the candidates run as one ``(b*k, Tc)`` right-padded batch on top of it.
    """
    device = lm.device
    b, k = len(prompt_ids), len(cand_ids)
    ids, mask = pad_left(prompt_ids, pad_id, device)
    cache = lm.new_cache(b, read_only=False)
    positions = lm.position_ids(ids, mask)
    full_mask = lm.extend_mask(mask)
    out = lm.call_base(ids, full_mask, positions, cache, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (b, V): the first candidate token
    cand, cmask = pad_right(cand_ids, pad_id, device)  # (k, Tc)
    tc = cand.shape[1]
    lp_first = first.gather(1, cand[:, 0].unsqueeze(0).expand(b, -1))  # (b, k)
    total = lp_first
    if tc > 1:
        cache.batch_repeat_interleave(k)  # (b*k, H, P+T, D): row r*k+j = prompt r, candidate j
        rows_mask = torch.cat([full_mask.repeat_interleave(k, 0), cmask.repeat(b, 1)], dim=1)
        start = positions[:, -1:].repeat_interleave(k, 0) + 1
        cpos = start + torch.arange(tc, device=device).unsqueeze(0)
        out = lm.call_base(cand.repeat(b, 1), rows_mask, cpos, cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # (b*k, Tc-1, V) predicts tokens 1..Tc-1
        targets = cand[:, 1:].repeat(b, 1)
        tok_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * cmask[:, 1:].repeat(b, 1)
        total = total + tok_lp.sum(-1).view(b, k)
    return total


def score_candidates(
    lm: AdaptedLM,
    tokenizer: Any,
    prompts: list[str],
    candidates: list[str],
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Summed log-probability ``(n, k)`` of each candidate continuation after each chat-formatted prompt.

    A candidate is tokenized on its own (``add_special_tokens=False``) and appended after the
    generation prompt, i.e. it is scored as the beginning of the assistant reply.
    """
    if not candidates:
        raise ValueError("score_candidates needs at least one candidate")
    cand_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates]
    for c, ids in zip(candidates, cand_ids):
        if not ids:
            raise ValueError(f"candidate {c!r} tokenizes to nothing")
    scores = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
    if not prompts:
        return scores
    encoded = [encode_chat_prompt(tokenizer, p) for p in prompts]
    pad_id = pad_token_id(tokenizer)
    with eval_mode(lm):
        for batch in tqdm(length_sorted_batches([len(e) for e in encoded], batch_size), desc="score",
                          disable=not progress):
            lp = score_ids(lm, [encoded[i] for i in batch], cand_ids, pad_id)
            scores[batch] = lp.double().cpu().numpy()
    return scores


__all__ = ["Reply", "StopFn", "answer_stop", "eos_token_ids", "generate", "generate_ids", "generate_replies",
           "generate_timed", "head_probabilities",
           "length_sorted_batches", "pad_left",
           "pad_right", "score_candidates", "score_ids"]

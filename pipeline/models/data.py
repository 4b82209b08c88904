"""Tokenisation, collation and resumable batching for P-Tuning v2 training.

One training example is ``source + target``:

* **source** = ``build_chat_prompt(tokenizer, prompt)`` tokenised exactly as inference does
  (:func:`pipeline.models.lm.encode_chat_prompt`), at most ``max_source_len`` tokens. When it is
  too long the *prompt body* is cut (``truncation_side``: ``left`` drops its beginning, ``right``
  its end) and the chat wrapper is re-applied, so the template head and the assistant-turn suffix
  (e.g. ``<|im_start|>assistant\\n`` / ChatGLM's ``答：``) always survive.
* **target** = ``response`` tokens (no special tokens) cut to ``max_target_len - 1`` + EOS
  (the ChatGLM ptuning recipe: ``b_ids[: max_target_length - 1] + [eos]``).
* **labels** = -100 on the source and on padding; the loss is on response tokens and EOS only.

With the ``cls_head`` option (``classify=True``) an example is the **source only** plus
``class_labels``: the gold label index per intent level (from the row's ``label``; -100 when missing),
which the heads learn from the prompt's last token.

Batches are right-padded to the longest row (dynamic padding). :class:`BatchSampler` fixes
the micro-batch order of every epoch from ``(seed, epoch)`` alone, so a resumed run replays
exactly the same batches from the saved ``(epoch, position)``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.methods.cls_head import class_label_ids
from pipeline.models.lm import encode_chat_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclasses.dataclass
class Example:
    """One tokenised training row. ``input_ids = source + target``; ``labels`` masks the source."""

    input_ids: list[int]
    labels: list[int]
    sample_id: str
    truncated_source: bool = False
    truncated_target: bool = False
    # cls_head training: gold label index per intent level (-100 = none); None for language-model examples
    class_labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_source(tokenizer: Any, prompt: str, max_len: int, side: str = "left") -> tuple[list[int], bool]:
    """Chat-formatted prompt ids (at most ``max_len``) and whether the body was cut.

    The untruncated case is byte-identical to inference (``encode_chat_prompt``). When cutting,
    the body is shortened at token level, decoded and re-wrapped; re-tokenising can move a token
    across the cut, so we shrink by the remaining excess until it fits (two rounds in practice).
    """
    ids = encode_chat_prompt(tokenizer, prompt)
    if len(ids) <= max_len:
        return ids, False
    body = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    overhead = len(encode_chat_prompt(tokenizer, "x")) - 1  # template tokens around a 1-token body
    keep = max(max_len - overhead, 1)
    for _ in range(8):
        cut = body[-keep:] if side == "left" else body[:keep]
        ids = encode_chat_prompt(tokenizer, tokenizer.decode(cut, skip_special_tokens=True))
        if len(ids) <= max_len or keep <= 1:
            break
        keep = max(keep - (len(ids) - max_len), 1)
    if len(ids) > max_len:
        raise ValueError(f"max_source_len={max_len} is shorter than the chat template itself ({len(ids)} tokens)")
    return ids, True


def encode_target(tokenizer: Any, response: str, max_len: int) -> tuple[list[int], bool]:
    """Response ids cut to ``max_len - 1`` plus EOS, and whether they were cut."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the model could never learn to stop")
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids[: max_len - 1] + [tokenizer.eos_token_id], len(ids) > max_len - 1


def encode_example(
    tokenizer: Any,
    row: dict[str, Any],
    max_source_len: int = 256,
    max_target_len: int = 128,
    truncation_side: str = "left",
    classify: bool = False,
) -> Example:
    """Tokenise one prompts-stage row into ``input_ids`` / ``labels`` (labels -100 on the source).

    ``classify``: the source only, with the row's gold labels as ``class_labels`` (cls_head training).
    """
    src, cut_src = encode_source(tokenizer, row["prompt"], max_source_len, truncation_side)
    if classify:
        return Example(src, [IGNORE_INDEX] * len(src), str(row.get("sample_id", "")), cut_src, False,
                       class_label_ids(row.get("label")))
    tgt, cut_tgt = encode_target(tokenizer, row["response"], max_target_len)
    return Example(src + tgt, [IGNORE_INDEX] * len(src) + tgt, str(row.get("sample_id", "")), cut_src, cut_tgt)


def encode_rows(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    max_source_len: int = 256,
    max_target_len: int = 128,
    truncation_side: str = "left",
    classify: bool = False,
) -> list[Example]:
    """Tokenise every row (``classify``: cls_head examples); logs how many sources / targets were truncated."""
    if truncation_side not in ("left", "right"):
        raise ValueError(f"truncation_side must be left or right, got {truncation_side!r}")
    examples = [encode_example(tokenizer, r, max_source_len, max_target_len, truncation_side, classify)
                for r in rows]
    n_src = sum(e.truncated_source for e in examples)
    n_tgt = sum(e.truncated_target for e in examples)
    if n_src or n_tgt:
        log.warning("truncated %d/%d prompts to %d tokens and %d/%d responses to %d tokens",
                    n_src, len(examples), max_source_len, n_tgt, len(examples), max_target_len)
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row.

    Returns ``input_ids`` ``(B, T)`` (pad = ``pad_id``), ``attention_mask`` ``(B, T)`` (1 = real) and
    ``labels`` ``(B, T)`` (-100 on the prompt and on padding); for cls_head examples also
    ``class_labels`` ``(B, levels)``.
    """
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if examples[0].class_labels is not None:
        batch["class_labels"] = torch.tensor([e.class_labels for e in examples], dtype=torch.long)
    return batch


class BatchSampler:
    """Deterministic, resumable micro-batch order.

    Epoch ``e``'s order is a pure function of ``(seed, e)``: a permutation of the rows, or with
    ``group_by_length`` a permutation whose mega-batches (``50 * batch_size`` rows) are sorted by
    length and whose batches are then shuffled (less padding, still random). The last incomplete
    batch is dropped so every optimizer step sees the same number of rows. With several data-parallel
    ranks each rank takes every ``world_size``-th batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = False,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if len(lengths) < batch_size * world_size:
            raise ValueError(f"{len(lengths)} rows cannot fill one batch of {batch_size} on {world_size} rank(s)")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.group_by_length, self.rank, self.world_size = group_by_length, rank, world_size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All micro-batches of ``epoch`` for this rank, as lists of row indices."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        b = self.batch_size
        n_batches = len(order) // (b * self.world_size) * self.world_size
        if self.group_by_length:
            mega = 50 * b
            chunks = [sorted(order[i: i + mega], key=lambda j: -self.lengths[j]) for i in range(0, len(order), mega)]
            flat = [j for c in chunks for j in c]
            batches = [flat[i: i + b] for i in range(0, len(flat) - b + 1, b)]
            batches = [batches[k] for k in rng.permutation(len(batches))][:n_batches]
        else:
            batches = [order[i * b: (i + 1) * b].tolist() for i in range(n_batches)]
        return [[int(j) for j in batch] for batch in batches[self.rank:: self.world_size]]

    def __len__(self) -> int:
        return len(self.lengths) // (self.batch_size * self.world_size)

    def iterate(self, epoch: int = 0, position: int = 0) -> Iterator[tuple[int, int, list[int]]]:
        """Endless ``(epoch, position_after, batch)`` stream starting at ``(epoch, position)``."""
        while True:
            batches = self.epoch_batches(epoch)
            for i in range(position, len(batches)):
                yield epoch, i + 1, batches[i]
            epoch, position = epoch + 1, 0


__all__ = [
    "IGNORE_INDEX",
    "BatchSampler",
    "Example",
    "collate",
    "encode_example",
    "encode_rows",
    "encode_source",
    "encode_target",
]

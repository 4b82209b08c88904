"""Tokenisation, truncation, collation masks and the resumable batch sampler (pipeline/data.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.core.io import DataError
from pipeline.models.data import IGNORE_INDEX, BatchSampler, collate, encode_example, encode_rows
from pipeline.models.lm import build_chat_prompt, encode_chat_prompt
from pipeline.models.store import load_smollm2_tokenizer
from prompts_cot.rows import read_prompt_rows


@pytest.fixture(scope="module")
def tok():
    t = load_smollm2_tokenizer()
    if t.pad_token is None:
        t.pad_token = t.eos_token
    return t


def test_short_example_matches_inference_encoding(tok):
    row = {"prompt": "The target hovers at 200 m. Which intent?", "response": "Answer: motion=hovering"}
    ex = encode_example(tok, row, max_source_len=256, max_target_len=128)
    src = encode_chat_prompt(tok, row["prompt"])
    tgt = tok(row["response"], add_special_tokens=False)["input_ids"]
    assert ex.input_ids == src + tgt + [tok.eos_token_id]
    assert ex.labels[: len(src)] == [IGNORE_INDEX] * len(src)  # no loss on the prompt
    assert ex.labels[len(src):] == tgt + [tok.eos_token_id]  # loss on the response and EOS
    assert not ex.truncated_source and not ex.truncated_target


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_keeps_chat_suffix_and_limits(tok, side):
    body = " ".join(f"word{i}" for i in range(400))
    row = {"prompt": body, "response": " ".join(["reason"] * 300)}
    ex = encode_example(tok, row, max_source_len=64, max_target_len=16, truncation_side=side)
    n_src = sum(1 for x in ex.labels if x == IGNORE_INDEX)
    assert n_src <= 64 and ex.truncated_source and ex.truncated_target
    assert len(ex.input_ids) - n_src == 16 and ex.input_ids[-1] == tok.eos_token_id
    # the generation suffix of the chat template (e.g. "<|im_start|>assistant\n") survives the cut
    suffix = build_chat_prompt(tok, "x").split("x")[-1]
    assert tok.decode(ex.input_ids[:n_src]).endswith(suffix)
    kept = tok.decode(ex.input_ids[:n_src])
    assert ("word399" in kept) == (side == "left") and ("word0 " in kept) == (side == "right")


def test_collate_right_pads_and_masks(tok):
    rows = [{"prompt": "short", "response": "Answer: a"},
            {"prompt": "a much longer prompt with many more words in it", "response": "Answer: motion=flyby; task=attack"}]
    exs = encode_rows(tok, rows, 256, 128)
    batch = collate(exs, pad_id=tok.pad_token_id)
    width = max(len(e) for e in exs)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, width)
    short = 0 if len(exs[0]) < len(exs[1]) else 1
    n = len(exs[short])
    assert batch["attention_mask"][short, :n].all() and not batch["attention_mask"][short, n:].any()
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()  # padding carries no loss
    assert (batch["input_ids"][short, n:] == tok.pad_token_id).all()
    n_loss = int((batch["labels"] != IGNORE_INDEX).sum())
    assert n_loss == sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in exs)


def test_bad_rows_raise_data_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(DataError) as err:
        read_prompt_rows(path, ("prompt", "response"))
    assert err.value.line == 2 and err.value.field == "response"


@pytest.mark.parametrize("group", [False, True])
def test_sampler_is_deterministic_and_resumable(group):
    lengths = [(i * 37) % 50 + 5 for i in range(103)]
    s = BatchSampler(lengths, batch_size=4, seed=7, group_by_length=group)
    e0, e1 = s.epoch_batches(0), s.epoch_batches(1)
    assert e0 == BatchSampler(lengths, 4, 7, group).epoch_batches(0)
    assert e0 != e1 and len(e0) == len(s) == 25 and all(len(b) == 4 for b in e0)
    assert len({i for b in e0 for i in b}) == 100  # no row twice within an epoch
    stream = s.iterate()
    full = [next(stream) for _ in range(40)]
    epoch, pos, _ = full[29]
    resumed = s.iterate(epoch, pos)
    assert [next(resumed) for _ in range(10)] == full[30:]
    if group:  # length grouping: batches are far more uniform than random ones
        spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in e0)
        rand = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                   for b in BatchSampler(lengths, 4, 7, False).epoch_batches(0))
        assert spread < rand / 2


def test_sampler_shards_ranks():
    lengths = [10] * 20
    r0 = BatchSampler(lengths, 2, 0, rank=0, world_size=2).epoch_batches(0)
    r1 = BatchSampler(lengths, 2, 0, rank=1, world_size=2).epoch_batches(0)
    assert len(r0) == len(r1) == 5
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}

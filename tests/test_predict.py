"""Greedy generation, candidate scoring and the predict stage on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lm_helpers import PROMPTS, sharp_lm

from pipeline.core.config import load_config
from pipeline.core.io import DataError, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.generation import eos_token_ids, generate, generate_ids, pad_left, score_candidates
from pipeline.models.lm import AdaptedLM, encode_chat_prompt, load_base_model
from pipeline.models.store import resolve_model_dir
from pipeline.predict import STAGE, PredictConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def greedy_without_cache(lm: AdaptedLM, ids: list[int], n: int) -> list[int]:
    """Reference: re-run the full-sequence forward (read-only prefix) for every new token."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(lm(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


@pytest.mark.parametrize("name", ["llama", "glm", "gpt2"])
def test_batched_generation_equals_single_rows_and_a_cache_free_reference(name, tok):
    lm = sharp_lm(name)
    batched = generate(lm, tok, PROMPTS, max_new_tokens=6, batch_size=3)
    single = [generate(lm, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) == 3 and all(batched)
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS]
    got = generate_ids(lm, enc, 6, eos_ids=[-1], pad_id=tok.pad_token_id)  # -1: never stop
    for row, ids in zip(got, enc):
        assert row == greedy_without_cache(lm, ids, 6)


def test_base_model_generation_equals_hf_generate(tok):
    lm = sharp_lm("llama", pre_seq_len=0)
    assert lm.pre_seq_len == 0
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS]
    ids, mask = pad_left(enc, tok.pad_token_id, torch.device("cpu"))
    hf = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False,
                           pad_token_id=tok.pad_token_id)
    ours = generate_ids(lm, enc, 7, eos_token_ids(lm, tok), tok.pad_token_id)
    eos = set(eos_token_ids(lm, tok))
    assert len({tuple(r) for r in ours}) == 3  # rows differ: the comparison has teeth
    for row, mine in zip(hf[:, ids.shape[1]:].tolist(), ours):
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        assert mine == row[:cut]


def test_each_row_stops_at_its_own_eos(tok):
    lm = sharp_lm("qwen2")
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS]
    free = generate_ids(lm, enc, 6, eos_ids=[-1], pad_id=tok.pad_token_id)
    stop = free[0][2]  # make row 0's third token an EOS
    got = generate_ids(lm, enc, 6, eos_ids=[stop], pad_id=tok.pad_token_id)
    for full, cut in zip(free, got):
        expect = full[: full.index(stop)] if stop in full else full
        assert cut == expect
    assert len(got[0]) == 2


@pytest.mark.parametrize("name, pre_seq_len", [("llama", 3), ("glm4", 3), ("qwen2", 0)])
def test_score_candidates_matches_manual_log_probs(name, pre_seq_len, tok):
    lm = sharp_lm(name, pre_seq_len)
    candidates = ["flyby", "fly-around and hover", "x"]
    scores = score_candidates(lm, tok, PROMPTS, candidates, batch_size=2)
    assert scores.shape == (3, 3)
    manual = np.zeros_like(scores)
    for i, p in enumerate(PROMPTS):
        prompt_ids = encode_chat_prompt(tok, p)
        for j, c in enumerate(candidates):
            cand = tok(c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = lm(torch.tensor([prompt_ids + cand])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            manual[i, j] = sum(float(logp[len(prompt_ids) - 1 + t, tok_id]) for t, tok_id in enumerate(cand))
    np.testing.assert_allclose(scores, manual, atol=1e-3, rtol=0)
    assert (np.argsort(scores, 1) == np.argsort(manual, 1)).all()  # the ranking evaluation relies on
    assert not np.allclose(scores[0], scores[0, 0])  # candidates are told apart


def test_score_candidates_rejects_empty_candidates(tok):
    lm = sharp_lm("llama")
    with pytest.raises(ValueError):
        score_candidates(lm, tok, PROMPTS, [])
    with pytest.raises(ValueError):
        score_candidates(lm, tok, PROMPTS, [""])


def test_generation_keeps_training_mode_and_grad_state(tok):
    lm = sharp_lm("llama").train()
    generate(lm, tok, ["hi"], max_new_tokens=2)
    assert lm.training and not lm.model.training and torch.is_grad_enabled()


def _prompt_rows(n: int) -> list[dict]:
    return [{"sample_id": f"s{i}", "split": "test", "variant": "plain", "prompt": PROMPTS[i % 3],
             "response": "Answer: motion=flyby; operation=none; task=unclear"} for i in range(n)]


def test_predict_stage_end_to_end(tmp_path):
    write_jsonl(tmp_path / "prompts" / "plain" / "test.jsonl", _prompt_rows(3))
    lm = AdaptedLM(load_base_model(resolve_model_dir("tiny:llama")), MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=2)))
    lm.save_adapter(tmp_path / "train" / "best")
    cfg = load_config(PredictConfig, None, [f"out_dir={tmp_path / 'out'}", f"prompts_dir={tmp_path / 'prompts'}",
                                            "model=tiny:llama", f"train_dir={tmp_path / 'train'}", "limit=2",
                                            "max_new_tokens=3", "batch_size=2"])
    manifest = run_stage(STAGE, cfg)
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == ["s0", "s1"]
    assert all(set(r) >= {"sample_id", "prompt", "output", "latency_s"} and r["model_tag"] == "tuned" for r in rows)
    assert rows[1]["prompt"] == PROMPTS[1]
    assert manifest["stats"]["rows"] == 2 and manifest["stats"]["pre_seq_len"] == 2
    assert str(tmp_path / "train" / "best" / "prefix.safetensors") in manifest["inputs"]
    again = run_stage(STAGE, cfg)  # up to date: skipped, same manifest
    assert again["timings"] == manifest["timings"]


def test_predict_stage_names_bad_rows(tmp_path):
    write_jsonl(tmp_path / "p" / "plain" / "test.jsonl", [{"sample_id": "a", "prompt": "ok"}, {"sample_id": "b"}])
    cfg = PredictConfig(out_dir=tmp_path / "out", prompts_dir=tmp_path / "p", model="tiny:llama")
    with pytest.raises(DataError, match=r"line 2.*'prompt'"):
        STAGE.run(cfg)
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_generation_matches_greedy_decoding_with_peft_forward(tok):
    """Same tokens as a greedy loop over PEFT PrefixTuning's forward with the same prefix weights.

    (PEFT 0.21's own ``generate`` with transformers 5.2x silently drops the prefix -- it returns the
    base model's tokens -- so its forward is the reference here.)
    """
    import copy

    from peft import PrefixTuningConfig, get_peft_model

    lm = sharp_lm("llama")
    peft_model = get_peft_model(copy.deepcopy(lm.model), PrefixTuningConfig(task_type="CAUSAL_LM",
                                                                            num_virtual_tokens=lm.pre_seq_len))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(lm.prefix.embedding.weight)
    peft_model.eval()
    enc = [encode_chat_prompt(tok, p) for p in PROMPTS[:2]]
    ours = generate_ids(lm, enc, 5, eos_ids=[-1], pad_id=tok.pad_token_id)
    for ids, mine in zip(enc, ours):
        out = list(ids)
        with torch.no_grad():
            for _ in range(5):
                out.append(int(peft_model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
        assert mine == out[len(ids):]

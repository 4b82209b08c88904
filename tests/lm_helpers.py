"""Tiny random models and inputs shared by the generation, predict, classify and PEFT tests (plain functions;
the shared pytest fixtures are in tests/conftest.py)."""

from __future__ import annotations

import torch

from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.lm import AdaptedLM, load_base_model
from pipeline.models.store import resolve_model_dir

PROMPTS = ["What is the target doing?", "hi", "The target approaches the station, then hovers at 200 m. Why?"]


def sharp_base(name: str):
    """The tiny base model ``tiny:<name>`` with larger random weights (seeded), so greedy outputs vary from
    token to token; the global torch seed is reset to 0 afterwards (adapters built next are reproducible)."""
    model = load_base_model(resolve_model_dir(f"tiny:{name}"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    torch.manual_seed(0)
    return model


def sharp_lm(name: str, pre_seq_len: int = 3) -> AdaptedLM:
    """A tiny model with larger random weights, so greedy outputs vary from token to token."""
    model = sharp_base(name)
    method = MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=pre_seq_len, init_std=0.5)) if pre_seq_len else None
    return AdaptedLM(model, method).eval()


def scripted(lm, tok, scripts: list[str]):
    """Make ``lm`` emit ``scripts[row]``'s tokens (then EOS-free filler) whatever it computes: the real forward
    (prefix, cache, positions) still runs, only the logits are replaced by the script's next token."""
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in scripts]
    filler = tok(" x", add_special_tokens=False)["input_ids"][0]
    real = lm.call_base
    state = {"step": 0, "rows": None}

    def call_base(input_ids, *args, **kwargs):
        out = real(input_ids, *args, **kwargs)
        step = state["step"]
        logits = torch.full_like(out.logits[:, -1:], -1e4)
        for r in range(input_ids.shape[0]):
            row = state["rows"][r]
            logits[r, 0, ids[row][step] if step < len(ids[row]) else filler] = 0.0
        state["step"] += 1
        out.logits = logits
        return out

    lm.call_base = call_base
    return state


def padded_batch():
    """Three rows of random token ids, two of them right-padded (ids, attention mask)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 2000, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return ids, mask

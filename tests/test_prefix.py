"""PrefixEncoder shapes/layout, arch facts, save/load and static export (no base model forward needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from pipeline.core.io import DataError
from pipeline.methods.base import ArchFacts, arch_facts
from pipeline.methods.ptuning_v2 import (
    PREFIX_CONFIG,
    PREFIX_STATIC,
    PREFIX_WEIGHTS,
    PrefixConfig,
    PrefixEncoder,
    StaticPrefix,
    build_prefix_encoder,
    count_prefix_parameters,
    export_static_prefix,
    load_prefix,
    save_prefix,
    split_key_values,
)

FACTS = ArchFacts(num_layers=3, kv_heads=2, head_dim=4, hidden_size=16, model_type="test")


@pytest.mark.parametrize(
    "cfg, expect",
    [
        (dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64), (2, 2, 16, 64)),
        (dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64, head_dim=32),
         (2, 2, 32, 64)),
        (dict(n_layer=5, n_head=4, n_embd=64), (5, 4, 16, 64)),  # GPT-2
        # ChatGLM2/3: multi-query groups and kv_channels
        (dict(num_layers=28, num_attention_heads=32, hidden_size=4096, multi_query_attention=True,
              multi_query_group_num=2, kv_channels=128), (28, 2, 128, 4096)),
        (dict(num_layers=4, num_attention_heads=8, hidden_size=64, multi_query_attention=False,
              multi_query_group_num=2), (4, 8, 8, 64)),
    ],
)
def test_arch_facts_reads_every_config_family(cfg, expect):
    f = arch_facts(SimpleNamespace(**cfg))
    assert (f.num_layers, f.kv_heads, f.head_dim, f.hidden_size) == expect


@pytest.mark.parametrize("name, expect", [("llama", (2, 2, 16)), ("qwen2", (2, 1, 16)), ("glm", (2, 2, 16)),
                                          ("glm4", (2, 2, 16)), ("gpt2", (2, 4, 16))])
def test_arch_facts_of_tiny_configs(name, expect):
    from transformers import AutoConfig

    from pipeline.models.store import tiny_config_path

    raw = json.loads(tiny_config_path(name).read_text())
    f = arch_facts(AutoConfig.for_model(raw.pop("model_type"), **raw))
    assert (f.num_layers, f.kv_heads, f.head_dim) == expect


def test_layout_matches_chatglm_and_peft_permutation():
    """Row layout [l0.key, l0.value, l1.key, ...], each (kv_heads, head_dim)."""
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=5), FACTS)
    w = enc.embedding.weight
    pairs = enc.key_values(batch_size=2)
    assert len(pairs) == FACTS.num_layers
    kv = FACTS.kv_dim
    for layer, (k, v) in enumerate(pairs):
        assert k.shape == v.shape == (2, FACTS.kv_heads, 5, FACTS.head_dim)
        # token 3, head 1 of layer `layer`
        want_k = w[3, (2 * layer) * kv + 1 * FACTS.head_dim:(2 * layer) * kv + 2 * FACTS.head_dim]
        want_v = w[3, (2 * layer + 1) * kv + 1 * FACTS.head_dim:(2 * layer + 1) * kv + 2 * FACTS.head_dim]
        assert torch.equal(k[1, 1, 3], want_k) and torch.equal(v[0, 1, 3], want_v)


def test_key_values_are_views_not_copies():
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=5), FACTS)
    k, v = enc.key_values(batch_size=8)[1]
    assert k.stride(0) == 0 and v.stride(0) == 0  # expanded over the batch
    assert k.untyped_storage().data_ptr() == enc.embedding.weight.untyped_storage().data_ptr()


def test_dropout_gives_each_row_its_own_mask_in_training_only():
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=5, prefix_dropout=0.5), FACTS)
    enc.train()
    k, _ = enc.key_values(batch_size=2)[0]
    assert not torch.equal(k[0], k[1])
    enc.eval()
    k, _ = enc.key_values(batch_size=2)[0]
    assert torch.equal(k[0], k[1])


def test_projection_shapes_param_count_and_grads():
    cfg = PrefixConfig(pre_seq_len=4, prefix_projection=True, prefix_hidden_size=8)
    enc = PrefixEncoder(cfg, FACTS)
    assert sum(p.numel() for p in enc.parameters()) == count_prefix_parameters(cfg, FACTS)
    assert enc().shape == (4, FACTS.row_dim)
    loss = sum((k.sum() + v.pow(2).sum()) for k, v in enc.key_values(3))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert count_prefix_parameters(PrefixConfig(pre_seq_len=4), FACTS) == 4 * FACTS.row_dim


def test_config_validation():
    with pytest.raises(ValueError):
        PrefixConfig(pre_seq_len=-1)
    with pytest.raises(ValueError):
        PrefixConfig(prefix_dropout=1.0)
    with pytest.raises(ValueError):
        PrefixEncoder(PrefixConfig(pre_seq_len=0), FACTS)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    a = build_prefix_encoder(PrefixConfig(pre_seq_len=3, init_std=0.02), FACTS, seed=7)
    after = torch.rand(1)
    b = build_prefix_encoder(PrefixConfig(pre_seq_len=3, init_std=0.02), FACTS, seed=7)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    assert torch.equal(before, after)
    assert a.embedding.weight.std() < 0.05  # init_std honoured


@pytest.mark.parametrize("projection", [False, True])
def test_save_load_and_static_export_roundtrip(tmp_path, projection):
    cfg = PrefixConfig(pre_seq_len=4, prefix_projection=projection, init_std=0.3)
    enc = PrefixEncoder(cfg, FACTS)
    written = save_prefix(enc, tmp_path / "ck", extra={"model_spec": "tiny:test", "step": 3})
    assert {p.name for p in written} == {PREFIX_WEIGHTS, PREFIX_CONFIG}
    meta = json.loads((tmp_path / "ck" / PREFIX_CONFIG).read_text())
    assert meta["kind"] == "encoder" and meta["step"] == 3 and meta["arch"]["kv_heads"] == FACTS.kv_heads
    loaded = load_prefix(tmp_path / "ck", FACTS)
    assert isinstance(loaded, PrefixEncoder) and loaded.config == cfg
    for (k0, v0), (k1, v1) in zip(enc.key_values(2), loaded.key_values(2)):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)

    export_static_prefix(enc, tmp_path / "static")
    assert (tmp_path / "static" / PREFIX_STATIC).exists()
    static = load_prefix(tmp_path / "static", FACTS)
    assert isinstance(static, StaticPrefix) and not list(static.parameters())
    for (k0, v0), (k1, v1) in zip(enc.key_values(2), static.key_values(2)):
        assert torch.allclose(k0, k1, atol=1e-6) and torch.allclose(v0, v1, atol=1e-6)
        assert k1.stride(0) == 0


def test_load_refuses_mismatched_model_and_missing_files(tmp_path):
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=2), FACTS)
    save_prefix(enc, tmp_path)
    other = ArchFacts(num_layers=4, kv_heads=2, head_dim=4, hidden_size=16)
    with pytest.raises(DataError, match="arch.num_layers"):
        load_prefix(tmp_path, other)
    (tmp_path / PREFIX_WEIGHTS).unlink()
    with pytest.raises(DataError, match="missing"):
        load_prefix(tmp_path, FACTS)
    with pytest.raises(DataError, match="prefix_config.json"):
        load_prefix(tmp_path / "nowhere", FACTS)


def test_split_key_values_accepts_batched_rows():
    flat = torch.randn(2, 5, FACTS.row_dim)
    pairs = split_key_values(flat, FACTS)
    assert pairs[2][1].shape == (2, FACTS.kv_heads, 5, FACTS.head_dim)
    assert torch.equal(pairs[0][0][1, 0, 4], flat[1, 4, : FACTS.head_dim])

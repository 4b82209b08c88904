"""ChatGLM2/3 -> native GLM conversion (pipeline.models.chatglm) against an independent reference forward.

Every checkpoint here is tiny and random, written in THUDM's ChatGLM2 layout by the test itself,
with a sentencepiece model trained on a few lines. No network, no remote code.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.io import DataError
from pipeline.models import chatglm

torch.set_num_threads(1)

TEXT = [
    "The target continuously approaches our space station, reaches the closest distance, then moves away.",
    "目标持续接近我方空间站，到达最近距离后逐渐远离。",
    "Lighting: full sunlight; electromagnetic: optimal. Equipment: robotic arm.",
    "Answer: motion=flyby; operation=photographing; task=observation",
    "答案：运动=飞越；操作=拍照；任务=观测",
]
SAMPLES = [
    "Hello world  spacing\n\nnew line 你好 ☃ 🚀",
    "The target approaches; 答案：运动=飞越",
    "sop and eop are plain words, isopropyl too",
]
SP_VOCAB = 400


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> bytes:
    """A tiny BPE sentencepiece model with byte fallback, like ChatGLM's tokenizer.model."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=buf, vocab_size=SP_VOCAB, model_type="bpe",
        byte_fallback=True, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    return buf.getvalue()


def chatglm_raw_config(variant="chatglm2", mqa=True, rope_ratio=None, n_special=5) -> dict:
    raw = {
        "_name_or_path": f"THUDM/{variant}-6b", "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {"AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "kv_channels": 16,
        "num_attention_heads": 4, "multi_query_attention": mqa, "multi_query_group_num": 2,
        "padded_vocab_size": SP_VOCAB + 16, "seq_length": 256, "layernorm_epsilon": 1e-5,
        "rmsnorm": True, "add_bias_linear": False, "add_qkv_bias": True,
        "apply_residual_connection_post_layernorm": False, "post_layer_norm": True,
        "original_rope": True, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
        "quantization_bit": 0, "pre_seq_len": None,
    }
    if rope_ratio is not None:
        raw["rope_ratio"] = rope_ratio
    return raw


def random_chatglm_state(raw: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with ChatGLM2's tensor names and shapes."""
    g = torch.Generator().manual_seed(seed)
    heads, groups, d, _ = chatglm.kv_layout(raw)
    h, ffn, vocab = raw["hidden_size"], raw["ffn_hidden_size"], raw["padded_vocab_size"]
    qkv = heads * d + 2 * groups * d

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {"transformer.embedding.word_embeddings.weight": rnd(vocab, h, scale=1.0),
          "transformer.rotary_pos_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, d // 2, 2).float() / (d // 2))}
    for i in range(raw["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + rnd(h)
        sd[p + "self_attention.query_key_value.weight"] = rnd(qkv, h, scale=0.3)
        sd[p + "self_attention.query_key_value.bias"] = rnd(qkv, scale=0.3)
        sd[p + "self_attention.dense.weight"] = rnd(h, heads * d)
        sd[p + "post_attention_layernorm.weight"] = 1 + rnd(h)
        sd[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * ffn, h, scale=0.2)
        sd[p + "mlp.dense_4h_to_h.weight"] = rnd(h, ffn)
    sd["transformer.encoder.final_layernorm.weight"] = 1 + rnd(h)
    sd["transformer.output_layer.weight"] = rnd(vocab, h, scale=0.3)
    return sd


def write_chatglm_dir(root, sp_model: bytes, raw: dict, sd: dict, fmt="bin", shards=2, glm3_tokenizer=False,
                      modeling_code: str | None = None):
    """Write config.json, tokenizer.model and weights (sharded .bin + index, or one safetensors file)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw))
    (root / "tokenizer.model").write_bytes(sp_model)
    tok_cfg = {"tokenizer_class": "ChatGLMTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}}
    if glm3_tokenizer:
        tok_cfg["added_tokens_decoder"] = {str(SP_VOCAB + 6): {"content": "<|user|>"}}
    (root / "tokenizer_config.json").write_text(json.dumps(tok_cfg, ensure_ascii=False))
    if modeling_code is not None:
        (root / "modeling_chatglm.py").write_text(modeling_code)
    names = list(sd)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(root / "model.safetensors"))
        return root
    chunks = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, chunk in enumerate(chunks):
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        torch.save({k: sd[k] for k in chunk}, root / fname)
        weight_map.update(dict.fromkeys(chunk, fname))
    (root / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


def reference_chatglm_logits(sd: dict, raw: dict, input_ids: torch.Tensor, linear_rope: bool) -> torch.Tensor:
    """ChatGLM2/3 forward from the published architecture, written independently of transformers.

    input_ids (b, s) -> logits (b, s, padded_vocab). RMSNorm, fused QKV (MQA groups), RoPE on the
    first half of each head rotating interleaved pairs, causal softmax attention, SwiGLU, residuals.
    """
    heads, groups, d, mqa = chatglm.kv_layout(raw)
    eps, ratio = raw["layernorm_epsilon"], float(raw.get("rope_ratio", 1))
    b, s = input_ids.shape
    rot = d // 2
    base = 10000.0 if linear_rope else 10000.0 * ratio
    pos = torch.arange(s, dtype=torch.float32) / (ratio if linear_rope else 1.0)
    theta = 1.0 / base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)  # (rot/2,)
    ang = pos[:, None] * theta[None, :]  # (s, rot/2)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

    def rope(t):  # (b, s, n, d)
        pairs = t[..., :rot].reshape(*t.shape[:-1], rot // 2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2)
        return torch.cat([out, t[..., rot:]], dim=-1)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    x = sd["transformer.embedding.word_embeddings.weight"][input_ids]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for i in range(raw["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        qkv = h @ sd[p + "self_attention.query_key_value.weight"].T + sd[p + "self_attention.query_key_value.bias"]
        if mqa:
            q, k, v = qkv.split([heads * d, groups * d, groups * d], dim=-1)
            q, k, v = q.view(b, s, heads, d), k.view(b, s, groups, d), v.view(b, s, groups, d)
        else:
            q, k, v = qkv.view(b, s, heads, 3 * d).split(d, dim=-1)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(heads // groups, dim=2), v.repeat_interleave(heads // groups, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        att = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, heads * d)
        x = x + att @ sd[p + "self_attention.dense.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate, up = (h @ sd[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ sd[p + "mlp.dense_4h_to_h.weight"].T
    x = rms(x, sd["transformer.encoder.final_layernorm.weight"])
    return x @ sd["transformer.output_layer.weight"].T


def glm_logits(model_dir, input_ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    assert type(model).__name__ == "GlmForCausalLM"
    with torch.no_grad():
        return model(input_ids=input_ids).logits


IDS = torch.tensor([[5, 17, 230, 99, 3, 401, 42, 7, 311, 64, 12, 250], [9, 8, 7, 6, 5, 4, 3, 2, 100, 200, 300, 399]])


# ------------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize(
    ("variant", "mqa", "rope_ratio", "fmt", "linear"),
    [
        ("chatglm2", True, None, "bin", False),          # ChatGLM2-6B: MQA, sharded .bin
        ("chatglm3", True, 50, "safetensors", False),    # ChatGLM3-6B-32k: rope_theta = 10000 * ratio
        ("chatglm2", True, 16, "bin", True),             # ChatGLM2-6B-32k: positions / ratio
        ("chatglm2", False, None, "safetensors", False),  # no MQA: per-head [q|k|v] layout
    ],
)
def test_converted_glm_matches_reference_forward(tmp_path, sp_model, variant, mqa, rope_ratio, fmt, linear):
    raw = chatglm_raw_config(variant, mqa=mqa, rope_ratio=rope_ratio)
    sd = random_chatglm_state(raw)
    src = write_chatglm_dir(tmp_path / "src", sp_model, raw, sd, fmt=fmt, glm3_tokenizer=variant == "chatglm3")
    dst = chatglm.convert_chatglm_to_glm(src, tmp_path / "glm")

    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["model_type"] == "glm"
    assert cfg["num_key_value_heads"] == (2 if mqa else 4) and cfg["head_dim"] == 16
    rope = cfg["rope_parameters"]
    assert rope["partial_rotary_factor"] == 0.5
    if linear:
        assert rope["rope_type"] == "linear" and rope["factor"] == 16 and rope["rope_theta"] == 10000
    else:
        assert rope["rope_theta"] == 10000.0 * (rope_ratio or 1)
    expected = reference_chatglm_logits(sd, raw, IDS, linear_rope=linear)
    got = glm_logits(dst, IDS)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the reference is sensitive to the layout: a wrong rope convention must not also pass
    wrong = reference_chatglm_logits(sd, raw, IDS, linear_rope=not linear) if rope_ratio else None
    if wrong is not None:
        assert (wrong - expected).abs().max() > 1e-3


def test_reference_detects_swapped_qkv(tmp_path, sp_model):
    """Sanity check of the oracle: swapping k and v rows in the checkpoint changes the logits."""
    raw = chatglm_raw_config()
    sd = random_chatglm_state(raw)
    key = "transformer.encoder.layers.0.self_attention.query_key_value.weight"
    swapped = dict(sd)
    w = sd[key]
    swapped[key] = torch.cat([w[:64], w[96:128], w[64:96]])
    assert (reference_chatglm_logits(swapped, raw, IDS, False) - reference_chatglm_logits(sd, raw, IDS, False)).abs().max() > 1e-3


def test_split_qkv_layouts():
    heads, groups, d = 4, 2, 3
    fused = torch.arange((heads + 2 * groups) * d * 2, dtype=torch.float32).view(-1, 2)
    q, k, v = chatglm.split_qkv(fused, heads, groups, d, multi_query=True)
    assert q.shape == (12, 2) and k.shape == (6, 2) and v.shape == (6, 2)
    assert torch.equal(torch.cat([q, k, v]), fused)
    assert q.untyped_storage().data_ptr() != fused.untyped_storage().data_ptr()
    per_head = torch.arange(heads * 3 * d, dtype=torch.float32)  # [q_h | k_h | v_h] per head (bias)
    q, k, v = chatglm.split_qkv(per_head, heads, heads, d, multi_query=False)
    assert torch.equal(q[:d], per_head[:d]) and torch.equal(k[:d], per_head[d:2 * d])
    assert torch.equal(v[d:2 * d], per_head[3 * d + 2 * d:3 * d + 3 * d])  # head 1's v


def test_rope_scaling_detection_reads_modeling_code(tmp_path):
    tmp_path.joinpath("modeling_chatglm.py").write_text(
        "        base = base * self.rope_ratio\n        theta = 1.0 / (base ** (torch.arange(0, n_elem, 2) / n_elem))\n")
    assert chatglm.detect_rope_scaling(tmp_path, "chatglm2") == "theta"
    tmp_path.joinpath("modeling_chatglm.py").write_text(
        "        seq_idx = torch.arange(seq_len, dtype=torch.float, device=device) / self.rope_ratio\n")
    assert chatglm.detect_rope_scaling(tmp_path, "chatglm3") == "linear"
    tmp_path.joinpath("modeling_chatglm.py").unlink()
    assert chatglm.detect_rope_scaling(tmp_path, "chatglm2") == "linear"
    assert chatglm.detect_rope_scaling(tmp_path, "chatglm3") == "theta"


def test_chatglm2_6b_shape():
    from transformers import GlmForCausalLM

    cfg = chatglm.chatglm2_6b_glm_config()
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (28, 4096, 32, 2)
    assert (cfg.head_dim, cfg.intermediate_size, cfg.vocab_size) == (128, 13696, 65024)
    assert cfg.rope_parameters["partial_rotary_factor"] == 0.5 and cfg.rope_parameters["rope_theta"] == 10000.0
    assert cfg.attention_bias and not cfg.tie_word_embeddings and cfg.rms_norm_eps == 1e-5
    with torch.device("meta"):
        n = sum(p.numel() for p in GlmForCausalLM(cfg).parameters())
    assert 6.2e9 < n < 6.3e9  # ChatGLM2-6B has 6.24B parameters


# ------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def converted(tmp_path_factory, sp_model):
    """One converted ChatGLM2 and one ChatGLM3 folder, shared by the tokenizer tests."""
    out = {}
    for variant in ("chatglm2", "chatglm3"):
        root = tmp_path_factory.mktemp(variant)
        raw = chatglm_raw_config(variant)
        src = write_chatglm_dir(root / "src", sp_model, raw, random_chatglm_state(raw), fmt="safetensors",
                                glm3_tokenizer=variant == "chatglm3")
        out[variant] = chatglm.convert_chatglm_to_glm(src, root / "glm")
    return out


def test_tokenizer_matches_sentencepiece_and_round_trips(converted, sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    tok = chatglm.load_tokenizer(converted["chatglm2"])
    for text in SAMPLES + TEXT:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(text)
        assert tok.decode(ids) == sp.decode(ids)
    assert "sop" in tok.decode(tok("sop eop", add_special_tokens=False)["input_ids"])  # not special
    assert tok("hi")["input_ids"][:2] == [SP_VOCAB + 1, SP_VOCAB + 3]  # [gMASK] <sop> prefix
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0 and tok.padding_side == "left"


@pytest.mark.parametrize("variant", ["chatglm2", "chatglm3"])
def test_special_token_ids(converted, variant):
    tok = chatglm.load_tokenizer(converted[variant])
    specials = chatglm.special_tokens_for(variant)
    assert [tok.convert_tokens_to_ids(t) for t in specials] == list(range(SP_VOCAB, SP_VOCAB + len(specials)))
    assert len(tok) == SP_VOCAB + (9 if variant == "chatglm3" else 5)
    ids = tok("[gMASK]<sop><|user|>\nhello", add_special_tokens=False)["input_ids"]
    if variant == "chatglm3":
        assert ids[:3] == [SP_VOCAB + 1, SP_VOCAB + 3, SP_VOCAB + 6]
        gen = json.loads((converted[variant] / "generation_config.json").read_text())
        assert gen["eos_token_id"] == [2, SP_VOCAB + 6, SP_VOCAB + 8]  # eos, <|user|>, <|observation|>
    assert tok.decode(ids, skip_special_tokens=True).strip().endswith("hello")


def test_chat_prompt_format(converted):
    from pipeline.models.lm import build_chat_prompt, encode_chat_prompt

    tok2 = chatglm.load_tokenizer(converted["chatglm2"])
    tok3 = chatglm.load_tokenizer(converted["chatglm3"])
    assert tok2.build_glm_prompt("Q?") == "[gMASK]<sop>[Round 1]\n\n问：Q?\n\n答："
    assert tok3.build_glm_prompt("Q?") == "[gMASK]<sop><|user|>\nQ?<|assistant|>"
    for tok in (tok2, tok3):
        assert build_chat_prompt(tok, "Q?") == tok.build_glm_prompt("Q?")
        user = [{"role": "user", "content": "Q?"}]
        assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == tok.build_glm_prompt("Q?")
        ids = encode_chat_prompt(tok, "Q?")
        assert ids[:2] == [SP_VOCAB + 1, SP_VOCAB + 3] and ids.count(SP_VOCAB + 1) == 1
    # a plain AutoTokenizer (no hook) falls back to the stored chat template and gives the same string
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(converted["chatglm2"]))
    assert build_chat_prompt(plain, "Q?") == "[gMASK]<sop>[Round 1]\n\n问：Q?\n\n答："  # ChatGLM2 refuses a system turn
    multi = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert plain.apply_chat_template(multi, tokenize=False) == "[gMASK]<sop>[Round 1]\n\n问：a\n\n答：b\n\n[Round 2]\n\n问：c\n\n答："


def test_tokenizer_batch_save_and_pickle(converted, tmp_path):
    tok = chatglm.load_tokenizer(converted["chatglm3"])
    batch = tok(["a b c target", "hi"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1, 0] == 0 and batch["input_ids"][1, 0] == tok.pad_token_id  # left padded
    assert tok.batch_decode(batch["input_ids"], skip_special_tokens=True)[1].strip() == "hi"
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.build_glm_prompt("x") == tok.build_glm_prompt("x")
    tok.save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again(SAMPLES[0])["input_ids"] == tok(SAMPLES[0])["input_ids"]


def test_sentencepiece_proto_reader(tmp_path):
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=buf, vocab_size=350, model_type="bpe", minloglevel=2,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        user_defined_symbols=["<udef>"], num_threads=1, hard_vocab_limit=False, character_coverage=1.0,
    )
    path = tmp_path / "t.model"
    path.write_bytes(buf.getvalue())
    proto = chatglm.read_sentencepiece_proto(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert len(proto.pieces) == sp.vocab_size()
    assert all(p.piece == sp.id_to_piece(i) and abs(p.score - sp.get_score(i)) < 1e-6 for i, p in enumerate(proto.pieces))
    assert proto.normalizer_spec.name == "identity"
    assert not proto.normalizer_spec.add_dummy_prefix and not proto.normalizer_spec.remove_extra_whitespaces
    assert proto.trainer_spec.model_type == 2 and not proto.trainer_spec.byte_fallback
    assert [p.piece for p in proto.pieces if p.type == 4] == ["<udef>"]
    tok = chatglm.build_chatglm_tokenizer(path)
    for text in SAMPLES + ["x <udef>y  z "]:
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)


# ------------------------------------------------------------------------------ cache & resolve
def test_ensure_converted_caches_and_resolve_model_dir(tmp_path, sp_model, monkeypatch):
    raw = chatglm_raw_config()
    src = write_chatglm_dir(tmp_path / "chatglm2-6b", sp_model, raw, random_chatglm_state(raw))
    cache = tmp_path / "cache"
    first = chatglm.ensure_converted(src, cache)
    assert chatglm.is_converted_dir(first) and first.parent == cache / "chatglm"
    stamp = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    calls = []
    monkeypatch.setattr(chatglm, "convert_chatglm_to_glm", lambda *a, **k: calls.append(a))
    assert chatglm.ensure_converted(src, cache) == first and not calls  # no rewrite
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamp
    monkeypatch.undo()
    assert not list((cache / "chatglm").glob(".*"))  # no temp folders left behind

    from pipeline.models.store import resolve_model_dir

    monkeypatch.setenv("GLM_PIPELINE_CACHE", str(cache))
    assert resolve_model_dir(str(src)) == first
    assert chatglm.is_chatglm_dir(src) and not chatglm.is_chatglm_dir(first)

    # a changed source (new mtime) gets a fresh conversion
    shard = src / "pytorch_model-00001-of-00002.bin"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    second = chatglm.ensure_converted(src, cache)
    assert second != first and chatglm.is_converted_dir(second)


def test_load_model_end_to_end(tmp_path, sp_model, monkeypatch):
    """pipeline.models.lm.load_model on a ChatGLM folder: converted model + hooked tokenizer + prefix."""
    from pipeline.methods import MethodConfig
    from pipeline.methods.ptuning_v2 import PrefixConfig
    from pipeline.models.lm import encode_chat_prompt, load_model

    monkeypatch.setenv("GLM_PIPELINE_CACHE", str(tmp_path / "cache"))
    raw = chatglm_raw_config()
    sd = random_chatglm_state(raw)
    src = write_chatglm_dir(tmp_path / "src", sp_model, raw, sd)
    lm, tok = load_model(str(src))
    assert callable(getattr(tok, "build_glm_prompt", None))
    ids = torch.tensor([encode_chat_prompt(tok, "The target approaches.")])
    with torch.no_grad():
        out = lm(ids, torch.ones_like(ids))
    logits = out.logits if hasattr(out, "logits") else out[0]
    torch.testing.assert_close(logits, reference_chatglm_logits(sd, raw, ids, False), atol=1e-4, rtol=1e-4)
    lm2, _ = load_model(str(src), method=MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=4)))
    assert lm2.pre_seq_len == 4


# --------------------------------------------------------------------------------------- errors
def test_missing_shard_names_the_file(tmp_path, sp_model):
    raw = chatglm_raw_config()
    src = write_chatglm_dir(tmp_path / "src", sp_model, raw, random_chatglm_state(raw))
    (src / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(DataError, match=r"pytorch_model-00002-of-00002\.bin is missing") as info:
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    assert info.value.path.endswith("pytorch_model.bin.index.json")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_corrupt_shard_names_the_file(tmp_path, sp_model):
    raw = chatglm_raw_config()
    src = write_chatglm_dir(tmp_path / "src", sp_model, raw, random_chatglm_state(raw))
    (src / "pytorch_model-00002-of-00002.bin").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a torch file: it looks like text") as info:
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    assert info.value.path.endswith("pytorch_model-00002-of-00002.bin")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_missing_or_misshaped_tensor(tmp_path, sp_model):
    raw = chatglm_raw_config()
    sd = random_chatglm_state(raw)
    del sd["transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"]
    src = write_chatglm_dir(tmp_path / "a", sp_model, raw, sd, fmt="safetensors")
    with pytest.raises(DataError, match="missing from the checkpoint") as info:
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    assert info.value.field == "model.layers.1.mlp.down_proj.weight"
    sd = random_chatglm_state(raw)
    sd["transformer.output_layer.weight"] = sd["transformer.output_layer.weight"][:, :32]
    src = write_chatglm_dir(tmp_path / "b", sp_model, raw, sd, fmt="safetensors")
    with pytest.raises(DataError, match="shape") as info:
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    assert info.value.path.endswith("model.safetensors") and info.value.field == "transformer.output_layer.weight"


def test_unsupported_config_and_missing_tokenizer(tmp_path, sp_model):
    raw = chatglm_raw_config()
    sd = random_chatglm_state(raw)
    bad = dict(raw, rmsnorm=False)
    src = write_chatglm_dir(tmp_path / "a", sp_model, bad, sd, fmt="safetensors")
    with pytest.raises(DataError, match="RMSNorm") as info:
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    assert info.value.field == "rmsnorm" and info.value.path.endswith("config.json")
    src = write_chatglm_dir(tmp_path / "b", sp_model, dict(raw, quantization_bit=4), sd, fmt="safetensors")
    with pytest.raises(DataError, match="quantized"):
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    src = write_chatglm_dir(tmp_path / "c", sp_model, raw, sd, fmt="safetensors")
    (src / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")  # GLM-4's tiktoken file
    with pytest.raises(DataError, match="not a sentencepiece model"):
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")
    (src / "tokenizer.model").unlink()
    with pytest.raises(DataError, match="tokenizer.model"):
        chatglm.convert_chatglm_to_glm(src, tmp_path / "out")

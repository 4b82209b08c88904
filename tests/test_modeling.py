"""AdaptedLM on tiny random models: PEFT equivalence, freezing, padding, checkpointing, persistence, chat format."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig, PrefixEncoder, StaticPrefix, init_prefix_from_text, repeat_to_length
from pipeline.models.lm import (
    SYSTEM_PROMPT,
    AdaptedLM,
    build_chat_prompt,
    set_system_prompt,
    system_prompt_of,
    encode_chat_prompt,
    load_base_model,
    load_model,
    positions_from_mask,
)
from pipeline.models.store import resolve_model_dir

P = 3
ALL = ["llama", "glm", "glm4", "qwen2", "gpt2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bases():
    """One tiny base model per architecture, loaded once (copied per test when mutated)."""
    return {name: load_base_model(resolve_model_dir(f"tiny:{name}")) for name in ALL}


def make_lm(bases, name: str, **cfg) -> AdaptedLM:
    torch.manual_seed(0)
    cfg.setdefault("pre_seq_len", P)
    cfg.setdefault("init_std", 0.5)  # large enough that the prefix visibly changes the logits
    return AdaptedLM(copy.deepcopy(bases[name]), MethodConfig(ptuning_v2=PrefixConfig(**cfg)))


def batch(pad: str = "right"):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 2000, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    if pad == "right":
        mask[1, 6:] = 0
        mask[2, 4:] = 0
    else:
        mask[1, :3] = 0
        mask[2, :5] = 0
    return ids, mask


@pytest.mark.parametrize("name", ALL)
def test_logits_equal_peft_prefix_tuning(bases, name):
    """Our prefix reproduces PEFT PrefixTuning exactly when given the same weights (right padding)."""
    from peft import PrefixTuningConfig, get_peft_model

    lm = make_lm(bases, name)
    peft_model = get_peft_model(copy.deepcopy(bases[name]),
                                PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    emb = peft_model.prompt_encoder["default"].embedding.weight
    assert emb.shape == lm.prefix.embedding.weight.shape  # same flat layout, directly comparable
    with torch.no_grad():
        emb.copy_(lm.prefix.embedding.weight)
    peft_model.eval()
    ids, mask = batch("right")
    with torch.no_grad():
        ours = lm(ids, mask).logits
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
        plain = lm.model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert ours.shape == theirs.shape == (3, 9, lm.config.vocab_size)
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    assert (ours[real] - plain[real]).abs().max() > 1e-3  # the prefix really acts


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_left_padding_gives_the_unpadded_logits(bases, name):
    lm = make_lm(bases, name).eval()
    ids, mask = batch("left")
    with torch.no_grad():
        padded = lm(ids, mask).logits
        for row in range(3):
            real = mask[row].bool()
            alone = lm(ids[row, real][None]).logits[0]
            torch.testing.assert_close(padded[row, real], alone, atol=1e-5, rtol=0)


def test_positions_follow_the_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert positions_from_mask(mask, 4).tolist() == [[4, 4, 4, 5, 6], [4, 5, 6, 6, 6]]


def test_positions_after_prefix_false_numbers_real_tokens_from_zero(bases):
    """ChatGLM2-style numbering: same logits as handing the prefix cache to the model with positions 0.."""
    lm = make_lm(bases, "llama", positions_after_prefix=False).eval()
    assert lm.position_offset == 0
    ids = batch()[0][:1]
    with torch.no_grad():
        ours = lm(ids).logits
        cache = lm.new_cache(1, read_only=True)
        manual = lm.model(input_ids=ids, attention_mask=torch.ones(1, P + 9, dtype=torch.long),
                          position_ids=torch.arange(9)[None], cache=cache).logits
        peft_style = make_lm(bases, "llama").eval()(ids).logits
    torch.testing.assert_close(ours, manual, atol=1e-6, rtol=0)
    assert (ours - peft_style).abs().max() > 1e-4


def test_only_prefix_trains_and_base_is_bit_identical(bases):
    lm = make_lm(bases, "glm")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    names = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert names == ["prefix.embedding.weight"]
    opt = torch.optim.AdamW(lm.trainable_parameters(), lr=1e-2)
    start = lm.prefix.embedding.weight.detach().clone()
    lm.train()
    assert not lm.model.training and lm.prefix.training  # base dropout stays off
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    losses = []
    for _ in range(3):
        out = lm(ids, mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert not torch.equal(start, lm.prefix.embedding.weight)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_gradient_checkpointing_recomputes_and_keeps_prefix_grads(bases, name):
    lm = make_lm(bases, name)
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    lm.train()
    lm(ids, mask, labels=labels).loss.backward()
    want = lm.prefix.embedding.weight.grad.clone()
    lm.zero_grad()

    lm.gradient_checkpointing_enable()
    lm.train()
    attn_calls = []
    first_layer = next(m for m in lm.model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block")))
    attn = getattr(first_layer, "self_attn", None) or first_layer.attn
    hook = attn.register_forward_pre_hook(lambda *a: attn_calls.append(1))
    lm(ids, mask, labels=labels).loss.backward()
    hook.remove()
    got = lm.prefix.embedding.weight.grad
    assert len(attn_calls) == 2  # forward + recompute in backward: checkpointing really ran
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_projection_variant_runs_and_grads_flow(bases):
    lm = make_lm(bases, "qwen2", prefix_projection=True, prefix_hidden_size=32, init_std=None)
    ids, mask = batch()
    lm.train()
    lm(ids, mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    grads = {n: p.grad for n, p in lm.named_parameters() if p.requires_grad}
    assert set(grads) == {"prefix.embedding.weight", "prefix.trans.0.weight", "prefix.trans.0.bias",
                          "prefix.trans.2.weight", "prefix.trans.2.bias"}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("projection", [False, True])
def test_save_load_and_static_export_keep_logits(tmp_path, projection):
    lm, _ = load_model("tiny:glm4", method=MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=P, init_std=0.5,
                                                                                prefix_projection=projection)))
    lm.eval()
    ids, mask = batch()
    with torch.no_grad():
        want = lm(ids, mask).logits
    lm.save_adapter(tmp_path / "ck", extra={"model_spec": "tiny:glm4"})
    lm.export_static_prefix(tmp_path / "static")
    again, _ = load_model("tiny:glm4", checkpoint=tmp_path / "ck")
    static, _ = load_model("tiny:glm4", checkpoint=tmp_path / "static")
    assert isinstance(again.prefix, PrefixEncoder) and isinstance(static.prefix, StaticPrefix)
    assert not static.trainable_parameters()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask).logits, want, atol=0, rtol=0)
        torch.testing.assert_close(static(ids, mask).logits, want, atol=1e-5, rtol=0)


def test_load_model_without_prefix_is_the_plain_model():
    lm, tok = load_model("tiny:llama")
    assert lm.pre_seq_len == 0 and lm.prefix is None and not lm.trainable_parameters()
    assert tok.pad_token is not None
    ids, mask = batch()
    real = mask.bool()  # HF numbers right-pad positions on; we hold them (they are masked anyway)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids, mask).logits[real], lm.model(input_ids=ids, attention_mask=mask).logits[real])
    assert lm.model.config._attn_implementation == "sdpa"


def test_bfloat16_base_keeps_float32_prefix(bases):
    lm, _ = load_model("tiny:llama", method=MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=P)), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.prefix.embedding.weight.dtype == torch.float32
    ids, mask = batch()
    lm.train()
    lm(ids, mask, labels=ids).loss.backward()
    assert lm.prefix.embedding.weight.grad.dtype == torch.float32


class _Tok:
    """Minimal tokenizer stand-ins for the chat-format branches."""

    chat_template = None


def test_chat_prompt_uses_template_with_domain_system_prompt():
    _, tok = load_model("tiny:llama")
    text = build_chat_prompt(tok, "Where is the target?")
    assert SYSTEM_PROMPT in text and "Where is the target?" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = encode_chat_prompt(tok, "Where is the target?")
    assert ids == tok(text, add_special_tokens=False)["input_ids"]


def test_system_prompt_travels_with_the_tokenizer():
    """``""`` = an empty system turn (shortest), ``None`` = the template's own default; encode agrees."""
    _, tok = load_model("tiny:llama", system_prompt="")
    empty = build_chat_prompt(tok, "Q?")
    assert SYSTEM_PROMPT not in empty and "<|im_start|>system\n<|im_end|>" in empty
    set_system_prompt(tok, None)
    default = build_chat_prompt(tok, "Q?")
    assert "<|im_start|>system\n<|im_end|>" not in default and default.count("<|im_start|>system") == 1
    assert system_prompt_of(tok) is None
    set_system_prompt(tok, SYSTEM_PROMPT)
    assert len(encode_chat_prompt(tok, "Q?")) > len(tok(empty, add_special_tokens=False)["input_ids"])


def test_chat_prompt_glm_hook_and_plain_fallback():
    glm = _Tok()
    glm.build_glm_prompt = lambda p: f"[Round 1]\n\n问：{p}\n\n答："
    assert build_chat_prompt(glm, "目标?") == "[Round 1]\n\n问：目标?\n\n答："
    assert build_chat_prompt(_Tok(), "hello") == "hello\n"


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_supervised_logits_only_gives_the_same_loss_and_grads(bases, name):
    lm = make_lm(bases, name)
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # the "prompt" part is not supervised
    lm.train()
    full = lm(ids, mask, labels=labels, supervised_logits_only=False)
    assert full.logits.shape == (3, 9, lm.config.vocab_size)
    full.loss.backward()
    want = lm.prefix.embedding.weight.grad.clone()
    lm.zero_grad()
    fast = lm(ids, mask, labels=labels)  # the default
    fast.loss.backward()
    n_supervised = int((labels[:, 1:] != -100).sum())
    assert fast.logits.shape == (n_supervised, lm.config.vocab_size)
    torch.testing.assert_close(fast.loss, full.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(lm.prefix.embedding.weight.grad, want, atol=1e-6, rtol=1e-4)
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    torch.testing.assert_close(fast.logits, full.logits[keep], atol=1e-5, rtol=0)
    with torch.no_grad():  # gradient-accumulation normalisation is honoured the same way
        a = lm(ids, mask, labels=labels, num_items_in_batch=7).loss
        b = lm(ids, mask, labels=labels, num_items_in_batch=7, supervised_logits_only=False).loss
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_text_init_prefix_is_the_model_having_read_the_text(bases, name):
    """init=text: prefix(text) + prompt gives the base model's logits for text + prompt (same positions)."""
    text_ids, prompt_ids = [5, 9, 14, 3, 7], [11, 4, 8]
    cfg = PrefixConfig(pre_seq_len=len(text_ids), init="text", init_text="rules")
    lm = AdaptedLM(copy.deepcopy(bases[name]), MethodConfig(ptuning_v2=cfg))
    init_prefix_from_text(lm.prefix, lm.model, text_ids)
    with torch.no_grad():
        tuned = lm(torch.tensor([prompt_ids])).logits[0]
        whole = bases[name](input_ids=torch.tensor([text_ids + prompt_ids])).logits[0, len(text_ids):]
    torch.testing.assert_close(tuned, whole, atol=1e-5, rtol=1e-5)


def test_text_init_cycles_tokens_and_checks_its_settings():
    assert repeat_to_length([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert repeat_to_length([1, 2, 3], 2) == [1, 2]
    with pytest.raises(ValueError, match="init_text"):
        PrefixConfig(pre_seq_len=4, init="text")
    with pytest.raises(ValueError, match="prefix_projection"):
        PrefixConfig(pre_seq_len=4, init="text", init_text="x", prefix_projection=True)


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_train_layers_trains_the_top_layers_and_stops_the_backward_there(bases, name):
    """``train_layers: N``: same forward; only the top N layers' rows get gradients (equal to the full
    prefix's), and no gradient is carried back through the layers below."""
    full, top = make_lm(bases, name), make_lm(bases, name, train_layers=1)
    n_layers = top.prefix.facts.num_layers
    assert n_layers >= 2
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    assert torch.equal(full(ids, mask).logits, top(ids, mask).logits)
    reached: list[int] = []
    for i, layer in enumerate(top.model.model.layers):
        layer.register_full_backward_hook(lambda *_, i=i: reached.append(i))
    top(ids, mask, labels=labels).loss.backward()
    assert reached == [n_layers - 1]
    full(ids, mask, labels=labels).loss.backward()
    g_top = top.prefix.embedding.weight.grad.view(P, n_layers, -1)
    g_full = full.prefix.embedding.weight.grad.view(P, n_layers, -1)
    assert g_top[:, : n_layers - 1].abs().sum() == 0 and g_top[:, -1].abs().sum() > 0
    torch.testing.assert_close(g_top[:, -1], g_full[:, -1])
    with pytest.raises(ValueError, match="train_layers"):
        PrefixConfig(pre_seq_len=2, train_layers=0)
    with pytest.raises(ValueError, match="exceeds"):
        make_lm(bases, name, train_layers=n_layers + 1)

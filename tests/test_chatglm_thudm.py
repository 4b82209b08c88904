"""The project's ChatGLM support against tensors recorded from THUDM's own code (tests/fixtures/thudm/).

Each fixture case is a tiny seeded checkpoint in THUDM's layout plus what THUDM's
``modeling_chatglm.py`` / ``tokenization_chatglm.py`` computed from it (see
``tests/record_thudm_fixtures.py`` and ``tests/fixtures/README.md``). Here the project converts or
loads the same checkpoint with no remote code and must give the same token ids, logits and greedy
tokens. No network, no THUDM code at test time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.methods.ptuning_v2 import PrefixConfig, PrefixEncoder
from pipeline.models import chatglm
from pipeline.models.generation import generate_ids
from pipeline.methods import Adapters, MethodConfig
from pipeline.models.lm import AdaptedLM, encode_chat_prompt, load_base_model
from pipeline.models.tokenizer import load_tokenizer

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "thudm"
PREFIX_KEY = "transformer.prefix_encoder.embedding.weight"
#: the fixture cases of ChatGLM2/3 and the variant each one is
GLM23_CASES = {"v2_mqa": "chatglm2", "v2_mha_prefix": "chatglm2", "v3_mqa_rope_ratio": "chatglm3",
               "v3_mqa_prefix": "chatglm3"}
#: a stand-in for the modeling file THUDM shipped with the recorded folder: the converter only reads
#: whether (and how) it uses rope_ratio, so the fact is all the stand-in reproduces
MODELING_STANDIN = "# stand-in for THUDM's chatglm3-6b modeling_chatglm.py: RotaryEmbedding(dim, original_impl, device, dtype)\n"


def expected(case: str) -> tuple[dict, dict[str, torch.Tensor]]:
    return (json.loads((FIXTURES / case / "expected.json").read_text(encoding="utf-8")),
            load_file(str(FIXTURES / case / "expected.safetensors")))


def thudm_folder(case: str, dst: Path, with_modeling: bool = True) -> tuple[Path, torch.Tensor | None]:
    """The case's checkpoint as a THUDM base-model folder (prefix weights split off); returns it and the prefix."""
    dst.mkdir(parents=True)
    for f in (FIXTURES / case).iterdir():
        if f.name not in ("expected.json", "expected.safetensors", "model.safetensors"):
            shutil.copy(f, dst / f.name)
    from safetensors.torch import save_file

    sd = load_file(str(FIXTURES / case / "model.safetensors"))
    prefix = sd.pop(PREFIX_KEY, None)
    save_file(sd, str(dst / "model.safetensors"))
    if with_modeling and case.startswith("v3"):
        (dst / "modeling_chatglm.py").write_text(MODELING_STANDIN)
    return dst, prefix


def batch_mask(meta: dict, pad_id: int = 0) -> list[list[int]]:
    """The recorded batch's 2-D padding mask (ChatGLM-6B's tokenizer records 2-D positions instead: its
    left padding is the run of ``pad_id`` in front)."""
    if "attention_mask" in meta:
        return meta["attention_mask"]
    out = []
    for ids in meta["input_ids"]:
        n = next((i for i, t in enumerate(ids) if t != pad_id), len(ids))
        out.append([0] * n + [1] * (len(ids) - n))
    return out


def real_rows(meta: dict, pad_id: int = 0) -> list[list[int]]:
    """The unpadded token rows of a recorded left-padded batch."""
    return [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(meta["input_ids"], batch_mask(meta, pad_id))]


@pytest.fixture(scope="module")
def glm23(tmp_path_factory) -> dict[str, tuple[AdaptedLM, object]]:
    """Every ChatGLM2/3 case converted with the project's converter and wrapped as THUDM runs it."""
    out = {}
    for case, variant in GLM23_CASES.items():
        root = tmp_path_factory.mktemp(case)
        src, prefix = thudm_folder(case, root / "src")
        dst = chatglm.convert_chatglm_to_glm(src, root / "glm", variant=variant)
        model = load_base_model(dst, dtype="float32")
        lm = AdaptedLM(model)
        if prefix is not None:  # THUDM numbers real tokens from 0 after the prefix
            config = PrefixConfig(pre_seq_len=prefix.shape[0], positions_after_prefix=False)
            encoder = PrefixEncoder(config, lm.facts)
            with torch.no_grad():
                encoder.embedding.weight.copy_(prefix.float())
            lm = AdaptedLM(model, Adapters("ptuning_v2", encoder.config, encoder))
        out[case] = (lm, load_tokenizer(dst))
    return out


def cached_step_logits(lm: AdaptedLM, rows: list[list[int]], forced: list[list[int]], pad_id: int) -> torch.Tensor:
    """Logits ``(B, n, V)`` of each decoding step over the KV cache, feeding ``forced`` tokens (teacher forcing)."""
    from pipeline.models.generation import pad_left

    ids, mask = pad_left(rows, pad_id, lm.device)
    b, n = len(rows), len(forced[0])
    cache = lm.new_cache(b, read_only=False)
    positions = lm.position_ids(ids, mask)
    full = lm.extend_mask(mask)
    steps = [lm.call_base(ids, full, positions, cache, use_cache=True).logits[:, -1]]
    nxt_pos = positions[:, -1:] + 1
    for t in range(n - 1):
        full = torch.cat([full, full.new_ones(b, 1)], dim=1)
        tok = torch.tensor([[f[t]] for f in forced])
        steps.append(lm.call_base(tok, full, nxt_pos, cache, use_cache=True).logits[:, -1])
        nxt_pos = nxt_pos + 1
    return torch.stack(steps, dim=1)


# ------------------------------------------------------------------------------------ ChatGLM2/3
@pytest.mark.parametrize("case", list(GLM23_CASES))
def test_glm23_logits_match_thudm(glm23, case):
    """Full forward of a left-padded batch (MQA and not, with and without a prefix, rope_ratio ignored)."""
    meta, want = expected(case)
    lm, _ = glm23[case]
    ids, mask = torch.tensor(meta["input_ids"]), torch.tensor(meta["attention_mask"])
    with torch.no_grad():
        got = lm(ids, mask).logits
    real = mask.bool()
    assert got.shape == want["logits"].shape
    torch.testing.assert_close(got[real], want["logits"][real], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("case", list(GLM23_CASES))
def test_glm23_cached_generation_matches_thudm(glm23, case):
    """THUDM's greedy ``generate`` (their cache) against the project's: same tokens, same step logits."""
    meta, want = expected(case)
    lm, tok = glm23[case]
    rows = real_rows(meta)
    eos = sorted({2, *chatglm_eos(tok)})
    got_ids = generate_ids(lm, rows, max_new_tokens=len(meta["generated_ids"][0]), eos_ids=eos, pad_id=0)
    for got, ref in zip(got_ids, meta["generated_ids"]):
        cut = next((i for i, t in enumerate(ref) if t in eos), len(ref))
        assert got == ref[:cut]
    with torch.no_grad():
        steps = cached_step_logits(lm, rows, meta["generated_ids"], 0)
    for r, ref in enumerate(meta["generated_ids"]):
        n = next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))  # up to the row's EOS step
        torch.testing.assert_close(steps[r, :n], want["generate_scores"][r, :n], atol=2e-4, rtol=1e-4)


def chatglm_eos(tok) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in ("<|user|>", "<|observation|>") if t in tok.get_vocab()]


@pytest.mark.parametrize("case", ["v2_mqa", "v3_mqa_rope_ratio"])
def test_glm23_plain_text_ids_match_thudm(glm23, case):
    meta, _ = expected(case)
    _, tok = glm23[case]
    for text, ref in zip(meta["samples"], meta["sample_ids"]):
        assert chatglm.encode_text(tok, text) == ref, text  # typed special-token text stays text
        if "[gMASK]" not in text:
            assert tok(text, add_special_tokens=False)["input_ids"] == ref, text


def test_chatglm2_chat_ids_match_thudm(glm23):
    """``build_prompt`` + tokenizer (ChatGLM2's ``chat``) against ``encode_chat_prompt``."""
    meta, _ = expected("v2_mqa")
    _, tok = glm23["v2_mqa"]
    for prompt, ref in zip(meta["prompts"], real_rows(meta)):
        assert encode_chat_prompt(tok, prompt) == ref
    assert encode_chat_prompt(tok, meta["forged"]) == meta["forged_ids"]


def test_chatglm3_chat_ids_match_build_chat_input(glm23):
    """ChatGLM3's ``build_chat_input``: role header and message encoded apart (each message starts with "▁")."""
    meta, _ = expected("v3_mqa_rope_ratio")
    _, tok = glm23["v3_mqa_rope_ratio"]
    for prompt, ref in zip(meta["prompts"], meta["chat_ids"]):
        assert encode_chat_prompt(tok, prompt) == ref


def test_chatglm3_typed_special_text_cannot_forge_a_turn(glm23):
    """``<|user|>``, ``[gMASK]``, ``</s>`` typed in a prompt stay text, as in THUDM's ``build_chat_input``."""
    meta, _ = expected("v3_mqa_rope_ratio")
    _, tok = glm23["v3_mqa_rope_ratio"]
    ids = encode_chat_prompt(tok, meta["forged"])
    assert ids == meta["forged_ids"]
    user, assistant = tok.convert_tokens_to_ids("<|user|>"), tok.convert_tokens_to_ids("<|assistant|>")
    assert ids.count(user) == 1 and ids.count(assistant) == 1 and ids.count(2) == 0


def test_chatglm3_rope_ratio_follows_the_shipped_modeling_file(tmp_path):
    """config.json says rope_ratio 4, THUDM's chatglm3-6b modeling file ignores it: so must the conversion."""
    meta, want = expected("v3_mqa_rope_ratio")
    assert json.loads((FIXTURES / "v3_mqa_rope_ratio" / "config.json").read_text())["rope_ratio"] == 4.0
    src, _ = thudm_folder("v3_mqa_rope_ratio", tmp_path / "src")
    assert chatglm.detect_rope_scaling(src, "chatglm3") == "none"
    dst = chatglm.convert_chatglm_to_glm(src, tmp_path / "glm", variant="chatglm3")
    assert json.loads((dst / "config.json").read_text())["rope_parameters"]["rope_theta"] == 10000.0
    # without a modeling file the variant's convention applies (ChatGLM3-32k scales the base)
    bare, _ = thudm_folder("v3_mqa_rope_ratio", tmp_path / "bare", with_modeling=False)
    assert chatglm.detect_rope_scaling(bare, "chatglm3") == "theta"


# ------------------------------------------------------------------------------------ ChatGLM-6B
V1_CASES = ("v1", "v1_prefix")


def v1_pad() -> int:
    return json.loads((FIXTURES / "v1" / "config.json").read_text())["pad_token_id"]


@pytest.fixture(scope="module")
def glm6b(tmp_path_factory) -> dict[str, tuple[AdaptedLM, object, Path]]:
    """ChatGLM-6B cases converted natively (no remote code), wrapped as THUDM runs them (positions from 0)."""
    out = {}
    for case in V1_CASES:
        root = tmp_path_factory.mktemp(case)
        src, prefix = thudm_folder(case, root / "src")
        dst = chatglm.convert_chatglm_to_glm(src, root / "native")
        model = load_base_model(dst, dtype="float32")
        lm = AdaptedLM(model)
        if prefix is not None:
            encoder = PrefixEncoder(PrefixConfig(pre_seq_len=prefix.shape[0], positions_after_prefix=False), lm.facts)
            with torch.no_grad():
                encoder.embedding.weight.copy_(prefix.float())
            lm = AdaptedLM(model, Adapters("ptuning_v2", encoder.config, encoder))
        out[case] = (lm, load_tokenizer(dst), dst)
    return out


@pytest.mark.parametrize("case", V1_CASES)
def test_chatglm6b_logits_match_thudm(glm6b, case):
    """A left-padded batch: 2-D positions frozen at [gMASK], the prefix-LM mask, alpha residual, prefix."""
    meta, want = expected(case)
    lm, _, _ = glm6b[case]
    ids, mask = torch.tensor(meta["input_ids"]), torch.tensor(batch_mask(meta, v1_pad()))
    with torch.no_grad():
        got = lm(ids, mask).logits
    real = mask.bool()
    assert want["logits"][real].std() > 0.5  # the reference is not degenerate
    torch.testing.assert_close(got[real], want["logits"][real], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("case", V1_CASES)
def test_chatglm6b_cached_generation_matches_thudm(glm6b, case):
    """THUDM's greedy ``generate`` (block positions counting up over their cache) against the project's."""
    meta, want = expected(case)
    lm, tok, _ = glm6b[case]
    rows = real_rows(meta, v1_pad())
    n = len(meta["generated_ids"][0])
    got = generate_ids(lm, rows, max_new_tokens=n, eos_ids=[tok.eos_token_id], pad_id=v1_pad())
    assert got == [r[: next((i for i, t in enumerate(r) if t == tok.eos_token_id), n)] for r in meta["generated_ids"]]
    with torch.no_grad():
        steps = cached_step_logits(lm, rows, meta["generated_ids"], v1_pad())
    torch.testing.assert_close(steps, want["generate_scores"], atol=2e-4, rtol=1e-4)


def test_chatglm6b_tokenizer_matches_thudm(glm6b):
    """ice_text.model with the image-token id offset, <n>, <|blank_k|>, <|tab|>; the chat input; decoding."""
    meta, _ = expected("v1")
    _, tok, _ = glm6b["v1"]
    offset = json.loads((FIXTURES / "v1" / "tokenizer_config.json").read_text())["num_image_tokens"]
    assert tok.convert_tokens_to_ids("<unk>") == offset and tok.convert_ids_to_tokens(0) == "<image_0>"
    for text, ref in zip(meta["samples"], meta["sample_ids"]):
        assert tok(text, add_special_tokens=False)["input_ids"] == ref, text
    assert tok.decode(meta["sample_ids"][0]) == meta["samples"][0]  # <n>, <|blank_2|> undone
    assert tok.convert_tokens_to_ids("<|tab|>") in meta["sample_ids"][2]
    for prompt, ref in zip(meta["prompts"], real_rows(meta, v1_pad())):
        assert encode_chat_prompt(tok, prompt) == ref  # prompt + [gMASK] <sop>, as THUDM's chat() builds it
        assert tok(prompt)["input_ids"] == ref


def test_chatglm6b_folder_loads_with_auto_classes_and_cli(tmp_path, glm6b):
    """``python -m pipeline.models.chatglm <v1 folder> <out>`` writes a folder AutoModelForCausalLM loads."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import pipeline.models  # noqa: F401 - registers model_type chatglm6b

    src, _ = thudm_folder("v1", tmp_path / "src")
    assert chatglm.main([str(src), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert AutoConfig.from_pretrained(str(out)).model_type == "chatglm6b"
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert type(model).__name__ == "ChatGLM6BForCausalLM"
    assert AutoTokenizer.from_pretrained(str(out)).eos_token == "<eop>"
    meta, want = expected("v1")
    ids = torch.tensor(real_rows(meta, v1_pad())[1:])
    with torch.no_grad():  # THUDM's own defaults (positions and mask from <sop>) without the project's wrapper
        logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits[0], want["logits"][1], atol=2e-4, rtol=1e-4)


def test_chatglm6b_trains_scores_and_generates_through_the_project(glm6b, tmp_path):
    """One P-Tuning v2 step, label scoring (tree mask over the cache) and generation on the native v1 model."""
    from pipeline.models.generation import generate, score_candidates
    from pipeline.models.lm import load_model
    from pipeline.models.scoring import score_rows

    _, _, dst = glm6b["v1"]
    lm, tok = load_model(str(dst), method=MethodConfig(name="ptuning_v2", ptuning_v2=PrefixConfig(pre_seq_len=3, positions_after_prefix=False)))
    prompt_ids = encode_chat_prompt(tok, "The target approaches.")
    answer = tok("Answer: motion=flyby", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt_ids + answer])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer])
    lm.train()
    out = lm(ids, torch.ones_like(ids), labels=labels)
    out.loss.backward()
    assert lm.prefix.embedding.weight.grad.abs().sum() > 0
    lm.eval()
    # the prompt is bidirectional, the reply causal: scoring over the prompt's cache = scoring the full rows
    cands = ["Answer: motion=flyby", "Answer: motion=hovering"]
    fast = score_candidates(lm, tok, ["The target approaches."], cands)
    with torch.no_grad():
        full = []
        for c in cands:
            cid = tok(c, add_special_tokens=False)["input_ids"]
            row = torch.tensor([prompt_ids + cid])
            logp = torch.log_softmax(lm(row, torch.ones_like(row)).logits[0].float(), -1)
            full.append(sum(float(logp[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(cid)))
    assert fast[0].tolist() == pytest.approx(full, abs=1e-3)
    rows = score_rows(lm, tok, ["The target approaches.", "目标持续接近我方空间站。"], ["en", "zh"])
    assert all(set(r["parsed"]) == {"motion", "operation", "task"} for r in rows)
    assert len(generate(lm, tok, ["The target approaches."], max_new_tokens=3)) == 1


# ------------------------------------------------------------------------------ THUDM prefixes
def write_thudm_checkpoint(folder: Path, prefix: torch.Tensor) -> Path:
    """What THUDM's ptuning/main.py leaves in checkpoint-N/: the prefix encoder only, and the config."""
    folder.mkdir(parents=True)
    torch.save({PREFIX_KEY: prefix.float()}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "chatglm", "pre_seq_len": prefix.shape[0],
                                                    "prefix_projection": False}))
    return folder


@pytest.mark.parametrize("case", ["v2_mha_prefix", "v3_mqa_prefix", "v1_prefix"])
def test_thudm_ptuning_checkpoint_loads_with_their_positions(tmp_path, case, monkeypatch):
    """load_model(checkpoint=<THUDM checkpoint-N>) reads PRE_SEQ_LEN and numbers positions from 0: THUDM's logits."""
    from pipeline.methods import read_method_config
    from pipeline.models.lm import load_model

    monkeypatch.setenv("GLM_PIPELINE_CACHE", str(tmp_path / "cache"))
    meta, want = expected(case)
    src, prefix = thudm_folder(case, tmp_path / "src")
    ckpt = write_thudm_checkpoint(tmp_path / "checkpoint-10", prefix)
    assert read_method_config(ckpt)["pre_seq_len"] == 4
    lm, _ = load_model(str(src), checkpoint=ckpt)
    assert lm.pre_seq_len == 4 and lm.position_offset == 0
    pad = v1_pad() if case.startswith("v1") else 0
    ids, mask = torch.tensor(meta["input_ids"]), torch.tensor(batch_mask(meta, pad))
    with torch.no_grad():
        got = lm(ids, mask).logits
    torch.testing.assert_close(got[mask.bool()], want["logits"][mask.bool()], atol=2e-4, rtol=1e-4)


def test_thudm_prefix_round_trip_and_errors(tmp_path, glm23, monkeypatch):
    """Ours -> THUDM layout (export-prefix) -> ours: the same table; a prefix for another shape is exit 2."""
    from pipeline.core.io import DataError
    from pipeline.methods.ptuning_v2.thudm import load_thudm_prefix

    lm, _ = glm23["v2_mha_prefix"]
    ours = tmp_path / "ours"
    lm.save_adapter(ours)
    assert chatglm.main(["export-prefix", str(ours), str(tmp_path / "thudm")]) == 0
    state = torch.load(tmp_path / "thudm" / "pytorch_model.bin", weights_only=True)
    assert list(state) == [PREFIX_KEY]
    torch.testing.assert_close(state[PREFIX_KEY], lm.prefix.embedding.weight.detach())
    assert json.loads((tmp_path / "thudm" / "config.json").read_text())["pre_seq_len"] == 4
    back = load_thudm_prefix(tmp_path / "thudm", lm.facts)
    torch.testing.assert_close(back.embedding.weight, lm.prefix.embedding.weight)
    assert back.config.positions_after_prefix is False
    other, _ = glm23["v2_mqa"]  # 2 kv groups instead of 4
    with pytest.raises(DataError, match="rows of width"):
        load_thudm_prefix(tmp_path / "thudm", other.facts)
    assert chatglm.cli(["export-prefix", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2


def test_thudm_projection_checkpoint_becomes_a_static_prefix(tmp_path, glm23):
    """--prefix_projection: Embedding -> Linear -> Tanh -> Linear evaluated once (THUDM's PrefixEncoder.forward)."""
    from pipeline.methods.ptuning_v2 import StaticPrefix
    from pipeline.methods.ptuning_v2.thudm import load_thudm_prefix, prefix_rows

    lm, _ = glm23["v2_mqa"]
    ENC = "transformer.prefix_encoder."  # noqa: N806
    g = torch.Generator().manual_seed(0)
    kv, hidden = lm.facts.row_dim, lm.facts.hidden_size
    state = {ENC + "embedding.weight": torch.randn(3, kv, generator=g),
             ENC + "trans.0.weight": torch.randn(hidden, kv, generator=g) * 0.1,
             ENC + "trans.0.bias": torch.randn(hidden, generator=g),
             ENC + "trans.2.weight": torch.randn(kv, hidden, generator=g) * 0.1,
             ENC + "trans.2.bias": torch.randn(kv, generator=g)}
    (tmp_path / "ckpt").mkdir()
    torch.save(state, tmp_path / "ckpt" / "pytorch_model.bin")
    prefix = load_thudm_prefix(tmp_path / "ckpt", lm.facts)
    assert isinstance(prefix, StaticPrefix) and prefix.config.pre_seq_len == 3
    mlp = torch.nn.Sequential(torch.nn.Linear(kv, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, kv))
    mlp.load_state_dict({k.removeprefix(ENC + "trans."): v for k, v in state.items() if ".trans." in k})
    with torch.no_grad():
        torch.testing.assert_close(prefix_rows(prefix), mlp(state[ENC + "embedding.weight"]))

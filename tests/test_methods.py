"""Every tuning method through the real train stage, save/load, exact resume, generation and label scoring.

Tiny random models; both engines (DeepSpeed through the CLI, in a subprocess). The PEFT logit equivalence
of each method is in ``tests/test_methods_peft.py``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.core.io import DataError
from pipeline.methods import (
    MethodConfig,
    build_adapters,
    load_adapters,
    method_config_path,
    read_method_config,
)
from pipeline.methods.base import arch_facts
from pipeline.methods.lora import LoraConfig
from pipeline.methods.prompt_tuning import PromptTuningConfig
from pipeline.methods.ptuning_v1 import PTuningV1Config
from pipeline.methods.ptuning_v2 import PrefixConfig, save_prefix
from pipeline.models.generation import generate_ids, pad_left
from pipeline.models.lm import AdaptedLM, load_base_model, load_model
from pipeline.models.scoring import answer_rows, score_rows, score_rows_per_level
from pipeline.models.store import resolve_model_dir
from pipeline.train import run_train
from lm_helpers import sharp_base
from train_helpers import evaluate_final, run_cli, tiny_cfg, train_losses, write_prompts

#: per method: overrides giving a tiny, fast setting (dropouts on where the method has one: resume must replay them)
SETTINGS = {
    "ptuning_v2": {"method.ptuning_v2.pre_seq_len": 4},
    "prefix_tuning": {"method.prefix_tuning.pre_seq_len": 4, "method.prefix_tuning.prefix_hidden_size": 16,
                      "method.prefix_tuning.prefix_dropout": 0.1},
    "prompt_tuning": {"method.prompt_tuning.pre_seq_len": 4},
    "ptuning_v1": {"method.ptuning_v1.pre_seq_len": 4, "method.ptuning_v1.encoder": "lstm",
                   "method.ptuning_v1.encoder_hidden_size": 8},
    "lora": {"method.lora.r": 2, "method.lora.dropout": 0.1, "optim.learning_rate": 0.01},
}
#: tensors each method's checkpoint holds (nothing of the base model)
TENSORS = {
    "prefix_tuning": {"embedding.weight", "trans.0.weight", "trans.0.bias", "trans.2.weight", "trans.2.bias"},
    "prompt_tuning": {"embedding.weight"},
    "ptuning_v1": {"embedding.weight", "mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.2.weight",
                   "mlp_head.2.bias"} | {f"lstm_head.{k}_l{i}{r}" for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                               "bias_hh") for i in (0, 1)
                                          for r in ("", "_reverse")},
    "lora": {f"branches.model__layers__{i}__self_attn__{m}.lora_{ab}.weight" for i in (0, 1)
             for m in ("q_proj", "v_proj") for ab in ("A", "B")},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def method_overrides(name: str, **more) -> dict:
    return {"method.name": name, **SETTINGS[name], **more}


@pytest.mark.parametrize("name", ["prefix_tuning", "prompt_tuning", "ptuning_v1", "lora"])
def test_train_saves_only_the_method_and_loads_for_inference(tmp_path, name):
    prompts = write_prompts(tmp_path / "p")
    cfg = tiny_cfg(tmp_path, prompts, **method_overrides(name, **{"optim.max_steps": 3, "checkpoint.save_steps": 3,
                                                                   "eval.steps": 3, "eval.mode": "score"}))
    stats = run_train(cfg).stats
    out = Path(cfg.out_dir)
    for d in ("checkpoints/step-3", "best", "final"):
        assert (out / d / "adapter.safetensors").exists() and not (out / d / "prefix.safetensors").exists(), d
        meta = read_method_config(out / d)
        assert meta["method"] == name and meta["model_spec"] == "tiny:llama" and meta["arch"]["model_type"] == "llama"
    tensors = load_file(str(out / "final" / "adapter.safetensors"))
    assert set(tensors) == TENSORS[name]
    assert stats["trainable_params"] == sum(t.numel() for t in tensors.values())
    losses = [r[2] for r in train_losses(out) if r[0] == "train"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    lm, tok = load_model("tiny:llama", checkpoint=out / "final")
    assert lm.method == name and (lm.pre_seq_len == 4) == (name != "lora")
    base, _ = load_model("tiny:llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert (lm(ids).logits - base(ids).logits).abs().max() > 0  # the trained method acts
    rows = answer_rows(lm, tok, "score", ["Range stays at 10 m. Intent?"], ["en"], 4, 8)
    assert abs(sum(rows[0]["probs"]["motion"].values()) - 1) < 1e-6


def trained_weights(out: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / ("prefix.safetensors" if name == "ptuning_v2" else "adapter.safetensors")))


@pytest.mark.parametrize("name, cls_head", [("prompt_tuning", False), ("lora", False), ("ptuning_v1", False),
                                            ("prefix_tuning", False), ("prompt_tuning", True)])
def test_resume_reproduces_losses_exactly(tmp_path, name, cls_head):
    prompts = write_prompts(tmp_path / "p")
    common = method_overrides(name, **{"optim.max_steps": 6, "checkpoint.save_steps": 3,
                                       "method.cls_head": cls_head})
    full = tiny_cfg(tmp_path / "a", prompts, **common)
    run_train(full)
    part = tmp_path / "b" / "run"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.out_dir / "checkpoints" / "step-3", part / "checkpoints" / "step-3")
    resumed = tiny_cfg(tmp_path / "b", prompts, **common, **{"checkpoint.resume": "auto"})
    stats = run_train(resumed).stats
    assert stats["resumed_from"].endswith("step-3")
    assert train_losses(full.out_dir) == train_losses(resumed.out_dir)
    a, b = trained_weights(full.out_dir, name), trained_weights(resumed.out_dir, name)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p")
    run_train(tiny_cfg(tmp_path, prompts, **method_overrides("lora", **{"optim.max_steps": 3,
                                                                        "checkpoint.save_steps": 3})))
    other = tiny_cfg(tmp_path, prompts, **method_overrides("prompt_tuning", **{
        "optim.max_steps": 3, "checkpoint.resume": str(tmp_path / "run" / "checkpoints" / "step-3")}))
    with pytest.raises(DataError, match="method.name 'lora' -> 'prompt_tuning'"):
        run_train(other)


@pytest.mark.parametrize("name", ["prompt_tuning", "lora"])
def test_deepspeed_engine_trains_the_method_like_torch(tmp_path, name):
    prompts = write_prompts(tmp_path / "p")
    over = method_overrides(name, **{"optim.max_steps": 3, "checkpoint.save_steps": 3, "eval.steps": 0,
                                     "eval.accuracy_rows": 0})
    ds = run_cli([f"prompts_dir={prompts}", f"out_dir={tmp_path / 'ds'}", "engine.name=deepspeed",
                  "engine.deepspeed_config=pipeline/configs/deepspeed/zero2.json"]
                 + [f"{k}={v}" for k, v in over.items()])
    assert ds.returncode == 0, ds.stderr[-3000:]
    cfg = tiny_cfg(tmp_path / "t", prompts, **over)
    run_train(cfg)
    assert [r[:3] for r in train_losses(tmp_path / "ds")] == [r[:3] for r in train_losses(cfg.out_dir)]
    a, b = trained_weights(tmp_path / "ds", name), trained_weights(cfg.out_dir, name)
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    size = sum(f.stat().st_size for f in (tmp_path / "ds/checkpoints/step-3").rglob("*.pt"))
    assert size < 1_000_000  # optimizer + method weights only, never the frozen base


# ------------------------------------------------------------------------------- cache paths (no training)
def sharp(name: str, method: MethodConfig) -> AdaptedLM:
    """A tiny model with larger random weights (greedy outputs vary) and non-trivial adapters."""
    model = sharp_base(name)
    lm = AdaptedLM(model, build_adapters(method, model, arch_facts(model.config)))
    if lm.lora is not None:
        with torch.no_grad():
            for b in lm.lora.branches.values():
                b.lora_B.weight.normal_(std=0.3)
    return lm.eval()


CACHE_METHODS = {
    "prompt_tuning": MethodConfig(name="prompt_tuning", prompt_tuning=PromptTuningConfig(pre_seq_len=3, init_std=0.5)),
    "ptuning_v1": MethodConfig(name="ptuning_v1", ptuning_v1=PTuningV1Config(pre_seq_len=3, encoder="mlp")),
    "lora": MethodConfig(name="lora", lora=LoraConfig(r=2, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj"))),
}


@pytest.mark.parametrize("method", sorted(CACHE_METHODS))
@pytest.mark.parametrize("arch", ["llama", "glm4"])
def test_generation_over_the_cache_equals_full_recompute(arch, method):
    """Batched (left-padded) cached greedy decoding == re-running the full sequence for every token."""
    lm = sharp(arch, CACHE_METHODS[method])
    prompts = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33]]
    got = generate_ids(lm, prompts, 5, eos_ids=[10**6], pad_id=0)
    for row, ids in zip(got, prompts):
        ref = list(ids)
        with torch.no_grad():
            for _ in range(5):
                ref.append(int(lm(torch.tensor([ref])).logits[0, -1].argmax()))
        assert row == ref[len(ids):]


@pytest.mark.parametrize("method", sorted(CACHE_METHODS))
def test_left_padding_gives_the_unpadded_logits(method):
    lm = sharp("llama", CACHE_METHODS[method])
    rows = [[11, 12, 13, 14, 15], [21, 22]]
    ids, mask = pad_left(rows, 0, lm.device)
    with torch.no_grad():
        padded = lm(ids, mask).logits
        for r, seq in enumerate(rows):
            alone = lm(torch.tensor([seq])).logits[0]
            torch.testing.assert_close(padded[r, -len(seq):], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", sorted(CACHE_METHODS))
def test_cached_label_scoring_equals_the_per_level_reference(method):
    from pipeline.models.tokenizer import load_tokenizer

    lm = sharp("llama", CACHE_METHODS[method])
    tok = load_tokenizer(resolve_model_dir("tiny:llama"))
    prompts, langs = ["Range stays at 10 m. Intent?", "Range falls then rises. Intent?"], ["en", "zh"]
    fast, ref = score_rows(lm, tok, prompts, langs, 2), score_rows_per_level(lm, tok, prompts, langs, 2)
    for a, b in zip(fast, ref):
        assert a["parsed"] == b["parsed"]
        for lvl in a["probs"]:
            for lab in a["probs"][lvl]:
                assert abs(a["probs"][lvl][lab] - b["probs"][lvl][lab]) < 1e-4


def test_gradients_reach_input_layer_prompts_and_lora_with_checkpointing():
    for method in ("prompt_tuning", "lora"):
        lm = sharp("llama", CACHE_METHODS[method]).train()
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        lm(ids, labels=ids).loss.backward()
        want = [p.grad.clone() for p in lm.trainable_parameters()]
        assert all(w.abs().sum() > 0 for w in want), method
        lm.zero_grad()
        lm.gradient_checkpointing_enable()
        lm.train()
        lm(ids, labels=ids).loss.backward()
        for p, w in zip(lm.trainable_parameters(), want):
            torch.testing.assert_close(p.grad, w, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- cls_head
def test_cls_head_trains_and_answers_from_its_heads(tmp_path):
    prompts = write_prompts(tmp_path / "p", n_train=4, repeat_one=True)
    cfg = tiny_cfg(tmp_path, prompts, **method_overrides("ptuning_v2", **{
        "method.cls_head": True, "optim.max_steps": 12, "optim.learning_rate": 0.05, "eval.steps": 0,
        "checkpoint.save_steps": 0, "eval.mode": "generate"}))
    stats = run_train(cfg).stats
    losses = [r[2] for r in train_losses(cfg.out_dir) if r[0] == "train"]
    assert losses[-1] < losses[0] - 0.5, losses  # cross-entropy over ~8-11 labels starts near ln(10)
    assert stats["best_dev_acc"] is not None
    final = Path(cfg.out_dir) / "final"
    meta = read_method_config(final)
    assert meta["cls_head"] and meta["method"] == "ptuning_v2" and (final / "cls_head.safetensors").exists()
    lm, tok = load_model("tiny:llama", checkpoint=final)
    assert lm.cls_head is not None
    prompt = json.loads((prompts / "plain" / "train.jsonl").read_text().splitlines()[0])["prompt"]
    for mode in ("score", "generate"):
        row = answer_rows(lm, tok, mode, [prompt], ["en"], 4, 8)[0]
        assert row["parsed"] == {"motion": "flyby", "operation": "none", "task": "observation"}, mode
        assert row["probs"]["motion"]["flyby"] > 0.5 and row["output"].startswith("Answer: motion=flyby")


# ---------------------------------------------------------------------------------------- loading checks
def test_an_adapter_for_another_base_model_is_a_data_error(tmp_path):
    model = load_base_model(resolve_model_dir("tiny:llama"))
    lm = AdaptedLM(model, build_adapters(MethodConfig(name="lora"), model, arch_facts(model.config)))
    lm.save_adapter(tmp_path / "ck", extra={"model_spec": "tiny:llama"})
    with pytest.raises(DataError, match="arch.model_type.*'llama' model.*'glm4'"):
        load_model("tiny:glm4", checkpoint=tmp_path / "ck")
    meta = json.loads(method_config_path(tmp_path / "ck").read_text())
    meta["arch"]["num_layers"] = 7
    (tmp_path / "ck" / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="arch.num_layers"):
        load_model("tiny:llama", checkpoint=tmp_path / "ck")
    with pytest.raises(DataError, match="neither adapter_config.json nor prefix_config.json"):
        read_method_config(tmp_path / "nowhere")


def test_a_ptuning_v2_checkpoint_from_before_methods_still_loads(tmp_path):
    """Older folders: prefix_config.json without a ``method`` key."""
    from pipeline.methods.base import ArchFacts
    from pipeline.methods.ptuning_v2 import PrefixEncoder

    model = load_base_model(resolve_model_dir("tiny:llama"))
    facts: ArchFacts = arch_facts(model.config)
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=2, init_std=0.3), facts)
    save_prefix(enc, tmp_path, extra={"model_spec": "tiny:llama"})
    assert "method" not in json.loads((tmp_path / "prefix_config.json").read_text())
    assert read_method_config(tmp_path)["method"] == "ptuning_v2"
    adapters = load_adapters(tmp_path, copy.deepcopy(model), facts)
    assert adapters.method == "ptuning_v2" and torch.equal(adapters.prefix.embedding.weight, enc.embedding.weight)
    lm, _ = load_model("tiny:llama", checkpoint=tmp_path)
    assert lm.pre_seq_len == 2 and lm.method == "ptuning_v2"


def test_prompt_tuning_text_init_copies_the_word_embeddings(tmp_path):
    prompts = write_prompts(tmp_path / "p")
    cfg = tiny_cfg(tmp_path, prompts, **method_overrides("prompt_tuning", **{
        "method.prompt_tuning.init": "text", "method.prompt_tuning.init_text": "classify the intent",
        "optim.max_steps": 1, "optim.learning_rate": "0.000000001", "checkpoint.save_steps": 0, "eval.accuracy_rows": 0}))
    run_train(cfg)
    lm, tok = load_model("tiny:llama")
    ids = tok("classify the intent", add_special_tokens=False)["input_ids"]
    want = lm.model.get_input_embeddings().weight[(ids * 4)[:4]]
    got = load_file(str(Path(cfg.out_dir) / "final" / "adapter.safetensors"))["embedding.weight"]
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ evaluate end to end
@pytest.mark.parametrize("name, cls_head", [("lora", False), ("prompt_tuning", True)])
def test_evaluate_stage_answers_with_any_method(tmp_path, name, cls_head):
    """A LoRA / prompt-tuning(+heads) checkpoint through the real evaluate stage (preflight, loader, both modes)."""
    from record_fixtures import write_fixture_dirs

    for split in ("train", "dev", "test"):
        records, prompts = write_fixture_dirs(tmp_path / "d", n=4, variants=("plain",), split=split)
    train = tiny_cfg(tmp_path, prompts, **method_overrides(name, **{
        "method.cls_head": cls_head, "optim.max_steps": 2, "checkpoint.save_steps": 0, "eval.accuracy_rows": 0,
        "data.max_source_len": 512}))
    run_train(train)
    rows = evaluate_final(tmp_path, records, prompts, train.out_dir, "tuned")
    assert {r["mode"] for r in rows} == {"score", "generate"} and len(rows) == 8
    for r in rows:
        if r["mode"] == "score" or cls_head:
            assert abs(sum(r["probs"]["task"].values()) - 1) < 1e-6


def test_parameter_count_helpers_match_the_modules():
    from pipeline.methods.base import ArchFacts
    from pipeline.methods.cls_head import ClsHead, count_cls_head_parameters
    from pipeline.methods.prefix_tuning import PrefixTuningConfig, PrefixTuningEncoder, count_prefix_tuning_parameters
    from pipeline.methods.prompt_tuning import SoftPrompt, count_prompt_tuning_parameters
    from pipeline.methods.ptuning_v1 import PromptEncoderV1, count_ptuning_v1_parameters

    facts = ArchFacts(num_layers=3, kv_heads=2, head_dim=4, hidden_size=16)

    def n(module):
        return sum(p.numel() for p in module.parameters())

    pt = PrefixTuningConfig(pre_seq_len=5, prefix_hidden_size=7)
    assert n(PrefixTuningEncoder(pt, facts)) == count_prefix_tuning_parameters(pt, facts)
    pr = PromptTuningConfig(pre_seq_len=5)
    assert n(SoftPrompt(pr, facts)) == count_prompt_tuning_parameters(pr, facts)
    for enc in ("mlp", "lstm"):
        v1 = PTuningV1Config(pre_seq_len=5, encoder=enc, encoder_hidden_size=6)
        assert n(PromptEncoderV1(v1, facts)) == count_ptuning_v1_parameters(v1, facts)
    assert n(ClsHead(facts)) == count_cls_head_parameters(facts)
    model = load_base_model(resolve_model_dir("tiny:llama"))
    from pipeline.methods.lora import count_lora_parameters, count_lora_parameters_from_facts, inject_lora

    cfg = LoraConfig(r=3, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    expect = count_lora_parameters(cfg, model)
    assert expect == count_lora_parameters_from_facts(cfg, arch_facts(model.config))
    assert n(inject_lora(model, cfg)) == expect
    with pytest.raises(ValueError, match="match no linear layer.*q_proj"):
        inject_lora(load_base_model(resolve_model_dir("tiny:llama")), LoraConfig(target_modules=("nope",)))


@pytest.mark.parametrize("override, match", [
    ("method.lora.r=0", "method.lora: r must be >= 1"),
    ("method.lora.rank=4", "unknown key.*method.lora.rank"),
    ("method.prompt_tuning.init=text", "method.prompt_tuning: init=text needs a non-empty init_text"),
    ("method.ptuning_v1.encoder=gru", "method.ptuning_v1"),
])
def test_bad_method_settings_are_config_errors(tmp_path, override, match):
    from pipeline.core.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        tiny_cfg(tmp_path, tmp_path, **dict([override.split("=")]))


def test_predict_stage_with_lora_and_with_cls_heads(tmp_path):
    from pipeline.core.config import load_config
    from pipeline.core.io import write_jsonl
    from pipeline.core.stage import run_stage
    from pipeline.predict import STAGE as PREDICT, PredictConfig

    write_jsonl(tmp_path / "prompts" / "plain" / "test.jsonl",
                [{"sample_id": f"s{i}", "prompt": f"Range stays at {i} m. Intent?", "lang": "en"} for i in range(2)])
    for tag, method in (("lora", MethodConfig(name="lora")), ("heads", MethodConfig(
            name="prompt_tuning", cls_head=True, prompt_tuning=PromptTuningConfig(pre_seq_len=2)))):
        model = load_base_model(resolve_model_dir("tiny:llama"))
        lm = AdaptedLM(model, build_adapters(method, model, arch_facts(model.config)))
        lm.save_adapter(tmp_path / tag / "best", extra={"model_spec": "tiny:llama"})
        cfg = load_config(PredictConfig, None, [f"out_dir={tmp_path / 'out' / tag}", f"prompts_dir={tmp_path / 'prompts'}",
                                                "model=tiny:llama", f"train_dir={tmp_path / tag}", "max_new_tokens=3"])
        manifest = run_stage(PREDICT, cfg)
        rows = [json.loads(line) for line in (tmp_path / "out" / tag / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and str(tmp_path / tag / "best" / "adapter.safetensors") in manifest["inputs"]
        if tag == "heads":  # zero-initialised heads: uniform, argmax = each level's first label
            assert all(r["output"] == "Answer: motion=hovering; operation=docking; task=detection" for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name, zero", [("lora", "zero2"), ("prompt_tuning", "zero3"), ("lora", "zero3")])
def test_deepspeed_resume_reproduces_losses_exactly(tmp_path, name, zero):
    prompts = write_prompts(tmp_path / "p")
    over = [f"{k}={v}" for k, v in method_overrides(name).items()]
    common = [f"prompts_dir={prompts}", "optim.max_steps=6", "checkpoint.save_steps=3", "engine.name=deepspeed",
              f"engine.deepspeed_config=pipeline/configs/deepspeed/{zero}.json", *over]
    full = run_cli(common + [f"out_dir={tmp_path / 'a'}"])
    assert full.returncode == 0, full.stderr[-3000:]
    (tmp_path / "b/checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a/checkpoints/step-3", tmp_path / "b/checkpoints/step-3")
    part = run_cli(common + [f"out_dir={tmp_path / 'b'}", "checkpoint.resume=auto"])
    assert part.returncode == 0, part.stderr[-3000:]
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert [r for r in a if r[1] > 3] == [r for r in b if r[1] > 3]
    assert set(trained_weights(tmp_path / "a", name)) == TENSORS[name]

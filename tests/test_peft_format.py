"""The PEFT adapter format both ways, every method, on tiny random models.

* export: our checkpoint -> ``python -m pipeline export --format peft`` -> ``PeftModel.from_pretrained(base, dir)``
  gives our logits (fp32, 1e-5, padded batches; input-layer methods' PEFT logits start with the P virtual
  positions), and the folder read back here gives them too;
* import: an adapter PEFT itself trained and saved (``save_pretrained``) loads as a checkpoint with PEFT's logits;
* stages: predict and evaluate answer the same from a checkpoint and from its PEFT export;
* what does not map is an exit-2 DataError naming the field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from lm_helpers import padded_batch

from pipeline.core.io import DataError, load_jsonl
from pipeline.methods import MethodConfig, build_adapters, save_adapters
from pipeline.methods.base import arch_facts
from pipeline.methods.lora import LoraConfig
from pipeline.methods.prefix_tuning import PrefixTuningConfig
from pipeline.methods.prompt_tuning import PromptTuningConfig
from pipeline.methods.ptuning_v1 import PTuningV1Config
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.lm import AdaptedLM, load_base_model, load_model
from pipeline.models.store import resolve_model_dir

P = 3
METHODS = {
    "ptuning_v2": MethodConfig(name="ptuning_v2", ptuning_v2=PrefixConfig(pre_seq_len=P, init_std=0.5)),
    "ptuning_v2_projection": MethodConfig(name="ptuning_v2", ptuning_v2=PrefixConfig(
        pre_seq_len=P, prefix_projection=True, prefix_hidden_size=24)),
    "prefix_tuning": MethodConfig(name="prefix_tuning", prefix_tuning=PrefixTuningConfig(pre_seq_len=P,
                                                                                         prefix_hidden_size=24)),
    "prompt_tuning": MethodConfig(name="prompt_tuning", prompt_tuning=PromptTuningConfig(pre_seq_len=P, init_std=1.0)),
    "ptuning_v1_mlp": MethodConfig(name="ptuning_v1", ptuning_v1=PTuningV1Config(pre_seq_len=P, encoder="mlp",
                                                                                 encoder_hidden_size=24)),
    "ptuning_v1_lstm": MethodConfig(name="ptuning_v1", ptuning_v1=PTuningV1Config(pre_seq_len=P, encoder="lstm",
                                                                                  encoder_hidden_size=24)),
    "lora": MethodConfig(name="lora", lora=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))),
}
#: PEFT's logits of input-layer methods start with the virtual positions
VIRTUAL = {"prompt_tuning": P, "ptuning_v1_mlp": P, "ptuning_v1_lstm": P}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_checkpoint(folder: Path, arch: str, key: str, system_prompt: str | None = "") -> AdaptedLM:
    """Our checkpoint folder with random (non-trivial) weights of method ``key``; returns the model it came from."""
    torch.manual_seed(0)
    model = load_base_model(resolve_model_dir(f"tiny:{arch}"))
    adapters = build_adapters(METHODS[key], model, arch_facts(model.config))
    if adapters.lora is not None:  # B starts at zero: give it weights so the comparison means something
        with torch.no_grad():
            for branch in adapters.lora.branches.values():
                branch.lora_B.weight.normal_(std=0.5)
    save_adapters(adapters, folder, arch_facts(model.config),
                  {"model_spec": f"tiny:{arch}", "system_prompt": system_prompt, "step": 7})
    return AdaptedLM(model, adapters).eval()


def export(ckpt: Path, out: Path) -> None:
    """The CLI as a user types it."""
    from pipeline.cli import main

    assert main(["export", "--format", "peft", f"train_dir={ckpt.parent}", f"checkpoint={ckpt.name}",
                 f"out_dir={out}"]) == 0


def real_logits(lm, ids, mask, virtual: int = 0, peft: bool = False) -> torch.Tensor:
    with torch.no_grad():
        out = (lm(input_ids=ids, attention_mask=mask) if peft else lm(ids, mask)).logits[:, virtual:]
    return out[mask.bool()]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("key", list(METHODS))
def test_export_loads_in_peft_with_equal_logits_and_reads_back(tmp_path, arch, key):
    from peft import PeftModel

    ours = write_checkpoint(tmp_path / "train" / "final", arch, key)
    export(tmp_path / "train" / "final", tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == {"ptuning_v2": "PREFIX_TUNING", "prefix_tuning": "PREFIX_TUNING", "lora": "LORA",
                                "prompt_tuning": "PROMPT_TUNING"}.get(ours.method, "P_TUNING")
    ids, mask = padded_batch()
    mine = real_logits(ours, ids, mask)
    peft_model = PeftModel.from_pretrained(load_base_model(resolve_model_dir(f"tiny:{arch}")), str(tmp_path / "peft"))
    theirs = real_logits(peft_model.eval(), ids, mask, VIRTUAL.get(key, 0), peft=True)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    plain = real_logits(load_base_model(resolve_model_dir(f"tiny:{arch}")), ids, mask, peft=True)
    assert (mine - plain).abs().max() > 1e-3  # the adapter acts
    back, tok = load_model(f"tiny:{arch}", checkpoint=tmp_path / "peft")  # a PEFT folder is a checkpoint here
    torch.testing.assert_close(real_logits(back, ids, mask), mine, atol=1e-5, rtol=0)
    from pipeline.models.lm import system_prompt_of

    assert system_prompt_of(tok) == ""  # our metadata (system prompt) survives the round trip


def peft_trained(arch: str, kind: str):
    """A PEFT model of ``kind`` with non-trivial weights, as a user of PEFT would have it."""
    from peft import LoraConfig as PeftLora
    from peft import PrefixTuningConfig, PromptEncoderConfig, get_peft_model
    from peft import PromptTuningConfig as PeftPrompt

    config = {"prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P),
              "prefix_projection": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P,
                                                      prefix_projection=True, encoder_hidden_size=16),
              "prompt": PeftPrompt(task_type="CAUSAL_LM", num_virtual_tokens=P),
              "p_tuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, encoder_hidden_size=16),
              "lora": PeftLora(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
                               target_modules=["q_proj", "v_proj"])}[kind]
    torch.manual_seed(1)
    model = get_peft_model(load_base_model(resolve_model_dir(f"tiny:{arch}")), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "lora_B" in name:
                p.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("kind", ["prefix", "prefix_projection", "prompt", "p_tuning", "lora"])
def test_an_adapter_saved_by_peft_is_a_checkpoint_with_peft_logits(tmp_path, arch, kind):
    model = peft_trained(arch, kind)
    model.save_pretrained(str(tmp_path / "adapter"))
    ids, mask = padded_batch()
    virtual = P if kind in ("prompt", "p_tuning") else 0
    theirs = real_logits(model, ids, mask, virtual, peft=True)
    lm, _ = load_model(f"tiny:{arch}", checkpoint=tmp_path / "adapter")
    assert lm.method == {"lora": "lora", "prompt": "prompt_tuning", "p_tuning": "prompt_tuning"}.get(kind, "ptuning_v2")
    torch.testing.assert_close(real_logits(lm.eval(), ids, mask), theirs, atol=1e-5, rtol=0)


def test_what_does_not_map_is_refused_naming_the_field(tmp_path):
    from peft import IA3Config
    from peft import LoraConfig as PeftLora
    from peft import PrefixTuningConfig, get_peft_model

    from pipeline.methods.peft_format import save_peft

    model = load_base_model(resolve_model_dir("tiny:llama"))
    facts = arch_facts(model.config)
    heads = build_adapters(MethodConfig(name="lora", cls_head=True), copy.deepcopy(model), facts)
    with pytest.raises(DataError, match="field 'cls_head'.*no PEFT equivalent"):
        save_peft(heads, tmp_path / "x", facts, "tiny")
    shifted = build_adapters(MethodConfig(name="ptuning_v2", ptuning_v2=PrefixConfig(
        pre_seq_len=2, positions_after_prefix=False)), model, facts)
    with pytest.raises(DataError, match="field 'positions_after_prefix'"):
        save_peft(shifted, tmp_path / "x", facts, "tiny")
    assert not (tmp_path / "x" / "adapter_config.json").exists()  # nothing half-written
    for name, config, field in [
        ("dora", PeftLora(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"], use_dora=True), "use_dora"),
        ("ia3", IA3Config(task_type="CAUSAL_LM", target_modules=["q_proj", "down_proj"],
                          feedforward_modules=["down_proj"]), "peft_type")]:
        get_peft_model(load_base_model(resolve_model_dir("tiny:llama")), config).save_pretrained(str(tmp_path / name))
        with pytest.raises(DataError, match=f"adapter_config.json, field '{field}'"):
            load_model("tiny:llama", checkpoint=tmp_path / name)
    # a prefix for another model shape (tiny:qwen2 has 1 kv head, tiny:llama 2): the field and both sizes named
    get_peft_model(load_base_model(resolve_model_dir("tiny:qwen2")),
                   PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)).save_pretrained(str(tmp_path / "q"))
    with pytest.raises(DataError, match="adapter_config.json, field 'kv_heads': adapter was made for kv_heads=1, "
                                        "the model has 2"):
        load_model("tiny:llama", checkpoint=tmp_path / "q")


# ------------------------------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory):
    """Records, prompts, a LoRA checkpoint and its PEFT export (one tiny setup for the stage tests)."""
    from record_fixtures import write_fixture_dirs

    root = tmp_path_factory.mktemp("peft_stages")
    records, prompts = write_fixture_dirs(root / "d", n=4, variants=("plain",), split="test")
    write_checkpoint(root / "train" / "final", "llama", "prefix_tuning", system_prompt=None)
    export(root / "train" / "final", root / "peft")
    return records, prompts, root


def test_predict_answers_the_same_from_the_peft_export(stage_dirs, tmp_path):
    from pipeline.core.config import load_config
    from pipeline.core.stage import run_stage
    from pipeline.predict import STAGE, PredictConfig

    _, prompts, root = stage_dirs
    outputs = []
    for name, train_dir, ckpt in [("ours", root / "train", "final"), ("peft", root / "peft", ".")]:
        cfg = load_config(PredictConfig, None, [f"out_dir={tmp_path / name}", f"prompts_dir={prompts}",
                                                f"train_dir={train_dir}", f"checkpoint={ckpt}", "model=tiny:llama",
                                                "max_new_tokens=6", "batch_size=2", "num_threads=1"])
        run_stage(STAGE, cfg)
        outputs.append([r["output"] for r in load_jsonl(tmp_path / name / "predictions.jsonl")])
    assert len(outputs[0]) == 4 and outputs[0] == outputs[1]


def test_evaluate_answers_the_same_from_the_peft_export(stage_dirs, tmp_path):
    from eval.config import EvalConfig
    from eval.stage import STAGE
    from pipeline.core.config import load_config
    from pipeline.core.stage import run_stage

    records, prompts, root = stage_dirs
    rows = []
    for name, train_dir, ckpt in [("ours", root / "train", "final"), ("peft", root / "peft", ".")]:
        cfg = load_config(EvalConfig, "eval/configs/tiny.yaml", [
            f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={tmp_path / name}", "variants=[plain]",
            f"train_dir={train_dir}", "perturbations=[]", "perturbed_fraction=0.0",
            f"models=[{{tag: tuned, spec: 'tiny:llama', checkpoint: '{ckpt}'}}]", "baseline_tag=tuned"])
        run_stage(STAGE, cfg)
        rows.append([(r["mode"], r["output"], r.get("probs")) for r in load_jsonl(tmp_path / name / "predictions.jsonl")])
    assert len(rows[0]) == 8 and rows[0] == rows[1]


def test_classify_answers_the_same_from_the_peft_export(stage_dirs):
    from pipeline.classify import TrackClassifier

    _, _, root = stage_dirs
    rows = []
    for train_dir, ckpt in [(root / "train", "final"), (root / "peft", ".")]:
        clf = TrackClassifier("tiny:llama", train_dir=train_dir, checkpoint=ckpt, render={"prompt_type": "compact"},
                              batch_size=4)
        rows.append([(r["track_id"], r["probs"]) for r in clf.classify("data_prep/examples/tracks_example.csv")])
    assert rows[0] and rows[0] == rows[1]

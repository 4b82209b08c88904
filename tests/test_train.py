"""The train stage: learning, frozen base, prefix-only checkpoints, exact resume, DeepSpeed engine, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.core.config import load_config
from pipeline.core.stage import is_up_to_date, run_stage
from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.data import collate, encode_rows
from pipeline.models.engines import DeepSpeedEngine, Engine, OptimConfig, TorchEngine, fill_deepspeed_config
from pipeline.models.lm import load_model
from pipeline.train import STAGE, TrainConfig, run_train
from train_helpers import ROOT, TINY_YAML, run_cli, tiny_cfg, train_losses, write_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_decreases_on_repeated_example(tmp_path):
    prompts = write_prompts(tmp_path / "p", n_train=4, repeat_one=True)
    cfg = tiny_cfg(tmp_path, prompts, logging_steps=1, **{"optim.max_steps": 20, "optim.learning_rate": 0.1,
                   "eval.steps": 0, "checkpoint.save_steps": 0, "eval.accuracy_rows": 0,
                   "method.ptuning_v2.pre_seq_len": 8})
    stats = run_train(cfg).stats
    losses = [r[2] for r in train_losses(cfg.out_dir) if r[0] == "train"]
    assert len(losses) == 20 and stats["steps"] == 20
    # a random tiny model's logits are near uniform (ln 49152 = 10.8); the prefix alone must still pull the
    # repeated answer's loss down steadily (deterministic: same batch every step)
    assert losses[-1] < losses[0] - 0.15 and losses[-1] < min(losses[:10]), losses
    assert stats["best_dev_loss"] is not None and stats["engine"] == "torch"


def test_base_frozen_and_only_prefix_trained(tmp_path):
    lm, tok = load_model("tiny:llama", method=MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=4)))
    base_before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    prefix_before = lm.prefix.embedding.weight.detach().clone()
    rows = [{"prompt": f"prompt {i}", "response": "Answer: motion=flyby"} for i in range(4)]
    batch = collate(encode_rows(tok, rows, 64, 16), tok.pad_token_id)
    engine = TorchEngine(lm, OptimConfig(learning_rate=0.05, max_steps=5, gradient_accumulation_steps=2))
    for _ in range(3):
        lr = engine.current_lr()
        for mb in (batch, batch):
            engine.backward(engine.forward(mb).loss)
        norm = engine.step()
        assert norm is not None and norm > 0 and lr > 0
    after = lm.model.state_dict()
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)  # bit-identical base
    assert not torch.equal(prefix_before, lm.prefix.embedding.weight)
    assert [n for n, p in lm.named_parameters() if p.requires_grad] == ["prefix.embedding.weight"]


def test_resume_reproduces_losses_exactly_torch(tmp_path):
    prompts = write_prompts(tmp_path / "p")
    full = tiny_cfg(tmp_path / "a", prompts, **{"optim.max_steps": 6, "checkpoint.save_steps": 3,
                                                "method.ptuning_v2.prefix_dropout": 0.1})
    run_train(full)
    # interrupted run: only the step-3 checkpoint and the metrics up to it survive
    part_dir = tmp_path / "b" / "run"
    (part_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.out_dir / "checkpoints" / "step-3", part_dir / "checkpoints" / "step-3")
    shutil.copy(full.out_dir / "metrics.jsonl", part_dir / "metrics.jsonl")  # rows past step 3 must be dropped
    resumed = tiny_cfg(tmp_path / "b", prompts, **{"optim.max_steps": 6, "checkpoint.save_steps": 3,
                                                   "checkpoint.resume": "auto", "method.ptuning_v2.prefix_dropout": 0.1})
    stats = run_train(resumed).stats
    assert stats["resumed_from"].endswith("step-3")
    a, b = train_losses(full.out_dir), train_losses(resumed.out_dir)
    assert a == b  # every train/eval row after the resume point is reproduced bit for bit
    pa, pb = (load_file(str(d / "final" / "prefix.safetensors")) for d in (full.out_dir, resumed.out_dir))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_stage_end_to_end_checkpoints_metrics_manifest(tmp_path):
    prompts = write_prompts(tmp_path / "p", n_train=6, n_dev=4)
    cfg = tiny_cfg(tmp_path, prompts, **{"optim.max_steps": 4, "checkpoint.save_steps": 2, "eval.steps": 2,
                                         "checkpoint.export_static_prefix": True})
    manifest = run_stage(STAGE, cfg)
    out = Path(cfg.out_dir)
    for d in ("checkpoints/step-2", "checkpoints/step-4", "best", "final"):
        assert (out / d / "prefix.safetensors").exists() and (out / d / "prefix_config.json").exists(), d
    assert (out / "checkpoints/step-4/trainer_state.pt").exists() and not (out / "final/trainer_state.pt").exists()
    assert (out / "final/static/prefix_static.safetensors").exists()
    # checkpoints hold the prefix only: no base-model tensor sneaks in
    tensors = load_file(str(out / "checkpoints/step-4/prefix.safetensors"))
    assert set(tensors) == {"embedding.weight"} and tensors["embedding.weight"].shape == (4, 2 * 2 * 2 * 16)
    kinds = [r[0] for r in train_losses(out)]
    assert kinds.count("train") == 4 and kinds.count("eval") == 2
    stats = manifest["stats"]
    assert stats["steps"] == 4 and stats["peak_rss_mb"] > 0 and stats["tokens_per_s"] > 0
    assert 0.0 <= stats["best_dev_acc"] <= 1.0
    assert "metrics.jsonl" in manifest["outputs"] and "final/prefix.safetensors" in manifest["outputs"]
    assert set(manifest["inputs"]) == {str(prompts / "plain/train.jsonl"), str(prompts / "plain/dev.jsonl")}
    assert is_up_to_date(STAGE, cfg)  # a re-run would be skipped
    # the trained prefix loads back for inference
    lm, _ = load_model("tiny:llama", checkpoint=out / "best")
    assert lm.pre_seq_len == 4


def test_system_prompt_is_recorded_and_reused_at_load(tmp_path):
    """``model.system_prompt`` shapes the training rows and is stored with the adapter, so predict/evaluate
    format prompts as training did; a checkpoint without the record gets the default it was trained with."""
    from pipeline.models.lm import SYSTEM_PROMPT, build_chat_prompt, system_prompt_of

    prompts = write_prompts(tmp_path / "p", n_train=4, n_dev=2)
    cfg = tiny_cfg(tmp_path, prompts, **{"optim.max_steps": 1, "checkpoint.save_steps": 0, "eval.steps": 0,
                                         "model.system_prompt": ""})
    run_stage(STAGE, cfg)
    best = Path(cfg.out_dir) / "best"
    assert json.loads((best / "prefix_config.json").read_text())["system_prompt"] == ""
    _, tok = load_model("tiny:llama", checkpoint=best)
    assert system_prompt_of(tok) == "" and SYSTEM_PROMPT not in build_chat_prompt(tok, "Q?")
    data = json.loads((best / "prefix_config.json").read_text())
    del data["system_prompt"]  # a checkpoint from before the record
    (best / "prefix_config.json").write_text(json.dumps(data))
    (best / "checkpoint.json").unlink()  # the edit no longer matches its sha256: the folder is an unindexed old one
    assert system_prompt_of(load_model("tiny:llama", checkpoint=best)[1]) == SYSTEM_PROMPT


def test_dev_accuracy_by_label_scoring_matches_the_scorer(tmp_path):
    """``eval.mode: score`` ranks the answer line's candidates like the evaluate stage: the dev accuracy logged
    for best/ is what label scoring of best/ on the same rows gives."""
    from pipeline.models.scoring import score_rows

    prompts = write_prompts(tmp_path / "p", n_train=6, n_dev=5)
    cfg = tiny_cfg(tmp_path, prompts, **{"optim.max_steps": 2, "checkpoint.save_steps": 0, "eval.steps": 1,
                                         "eval.mode": "score", "eval.accuracy_rows": 5})
    run_stage(STAGE, cfg)
    evals = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    assert [(r["dev_mode"], r["dev_rows"]) for r in evals] == [("score", 5), ("score", 5)]
    best = json.loads((Path(cfg.out_dir) / "best/prefix_config.json").read_text())
    lm, tok = load_model("tiny:llama", checkpoint=Path(cfg.out_dir) / "best")
    rows = [json.loads(line) for line in (prompts / "plain/dev.jsonl").read_text().splitlines()]
    scored = score_rows(lm, tok, [r["prompt"] for r in rows], [r.get("lang", "en") for r in rows])
    motion = sum(s["parsed"]["motion"] == r["label"]["motion"] for s, r in zip(scored, rows)) / len(rows)
    assert best["dev"]["dev_acc_motion"] == pytest.approx(motion)


def test_fill_deepspeed_config_resolves_auto():
    raw = json.loads((ROOT / "pipeline/configs/deepspeed/zero2_offload.json").read_text())
    optim = OptimConfig(learning_rate=0.02, warmup_steps=10, max_steps=3000, per_device_batch_size=2,
                        gradient_accumulation_steps=8, max_grad_norm=1.0)
    cfg = fill_deepspeed_config(raw, optim, dtype="bfloat16", on_gpu=False, world_size=4)
    assert cfg["train_batch_size"] == 64 and cfg["gradient_accumulation_steps"] == 8
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False  # CPU trains in fp32
    assert cfg["optimizer"]["params"]["lr"] == 0.02 and cfg["scheduler"]["params"]["total_num_steps"] == 3000
    gpu = fill_deepspeed_config(raw, OptimConfig(learning_rate=0.02, max_steps=3000), dtype="bfloat16", on_gpu=True,
                                world_size=1)
    assert gpu["bf16"]["enabled"] is True and gpu["fp16"]["enabled"] is False
    with pytest.raises(ValueError, match="auto"):
        fill_deepspeed_config({"zero_optimization": {"stage": "auto"}}, OptimConfig(max_steps=1), dtype="float32",
                              on_gpu=False, world_size=1)


def test_both_engines_implement_the_whole_engine_interface():
    """One interface: the abstract base lists it, both engines implement every method (nothing left abstract)."""
    assert Engine.__abstractmethods__ == {"module", "current_lr", "forward", "backward", "step", "save_state",
                                       "load_state", "gathered_prefix"}
    for cls in (TorchEngine, DeepSpeedEngine):
        assert issubclass(cls, Engine) and not cls.__abstractmethods__, cls


def test_nested_config_sections_and_method_name_are_validated(tmp_path):
    from pipeline.core.config import ConfigError

    cfg = load_config(TrainConfig, TINY_YAML, ["optim.max_steps=7", "method.ptuning_v2.pre_seq_len=3"])
    assert cfg.optim.max_steps == 7 and cfg.method.settings.pre_seq_len == 3 and cfg.engine.name == "torch"
    with pytest.raises(ConfigError, match="method.name"):
        load_config(TrainConfig, TINY_YAML, ["method.name=adapter_x"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(TrainConfig, TINY_YAML, ["max_steps=7"])  # the old flat key is an unknown key now


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_deepspeed_engine_smoke_matches_torch(tmp_path, dtype):
    """DeepSpeed (ZeRO-2, CPU, gloo) through the real CLI gives the torch engine's losses.

    Runs in a subprocess so the process group does not leak into other tests. ``bfloat16``: a bf16 frozen
    base on CPU with the float32 prefix (DeepSpeed's float32 path). A single-process CPU run never builds
    DeepSpeed's shared-memory comm op (checked with an empty extensions folder).
    """
    prompts = write_prompts(tmp_path / "p")
    common = [f"prompts_dir={prompts}", "optim.max_steps=3", "checkpoint.save_steps=0", "eval.steps=0",
              "eval.accuracy_rows=0", f"model.dtype={dtype}"]
    ds = run_cli(common + [f"out_dir={tmp_path / 'ds'}", "engine.name=deepspeed",
                           "engine.deepspeed_config=pipeline/configs/deepspeed/zero2.json"],
                 extra_env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")})
    assert ds.returncode == 0, ds.stderr[-3000:]
    assert not (tmp_path / "ext").exists() or not any((tmp_path / "ext").rglob("*.so"))
    cfg = tiny_cfg(tmp_path / "t", prompts, **{"optim.max_steps": 3, "checkpoint.save_steps": 0, "eval.steps": 0,
                                               "eval.accuracy_rows": 0, "model.dtype": dtype})
    run_train(cfg)
    ds_rows, torch_rows = train_losses(tmp_path / "ds"), train_losses(cfg.out_dir)
    assert [r[:3] for r in ds_rows] == [r[:3] for r in torch_rows]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["stats"]["engine"] == "deepspeed" and manifest["stats"]["zero_stage"] == 2
    assert (tmp_path / "ds/checkpoints/step-3/deepspeed").is_dir()
    size = sum(f.stat().st_size for f in (tmp_path / "ds/checkpoints/step-3").rglob("*.pt"))
    assert size < 1_000_000  # optimizer + prefix only, never the frozen (tied) embedding


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero0", "zero2", "zero3"])
def test_resume_reproduces_losses_exactly_deepspeed(tmp_path, zero):
    prompts = write_prompts(tmp_path / "p")
    common = [f"prompts_dir={prompts}", "optim.max_steps=6", "checkpoint.save_steps=3", "engine.name=deepspeed",
              f"engine.deepspeed_config=pipeline/configs/deepspeed/{zero}.json"]
    full = run_cli(common + [f"out_dir={tmp_path / 'a'}"])
    assert full.returncode == 0, full.stderr[-3000:]
    (tmp_path / "b/checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a/checkpoints/step-3", tmp_path / "b/checkpoints/step-3")
    part = run_cli(common + [f"out_dir={tmp_path / 'b'}", "checkpoint.resume=auto"])
    assert part.returncode == 0, part.stderr[-3000:]
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert [r for r in a if r[1] > 3] == [r for r in b if r[1] > 3]


@pytest.mark.slow
def test_smollm2_twenty_steps_cpu(tmp_path):
    """20 steps on the embedded SmolLM2-135M-Instruct (CPU, DeepSpeed ZeRO-0): the answer loss falls."""
    prompts = write_prompts(tmp_path / "p", n_train=8, n_dev=4)
    res = run_cli([f"prompts_dir={prompts}", f"out_dir={tmp_path / 'run'}", "model.spec=smollm2",
                   "engine.name=deepspeed", "engine.deepspeed_config=pipeline/configs/deepspeed/zero0.json",
                   "method.ptuning_v2.pre_seq_len=16", "optim.max_steps=20", "optim.per_device_batch_size=4",
                   "eval.steps=0", "checkpoint.save_steps=0", "eval.accuracy_rows=4", "eval.max_new_tokens=24",
                   "num_threads=2"], timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    losses = [r[2] for r in train_losses(tmp_path / "run") if r[0] == "train"]
    assert losses[-1] < 0.5 * losses[0], losses

"""The classify stage: raw tracks in, intents out, with the prompt the checkpoint was trained on (tiny models)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import make_records

from data_prep import cw
from data_prep.features import compute_features
from data_prep.oracle import relabel_motion
from data_prep.rules import CONTEXT_VALUES, determined_intents, intents
from data_prep.tracks import EXAMPLE_PATH, observation_from_states, read_tracks
from pipeline.classify import (STAGE, ClassifyConfig, classify_tracks, prompt_options, render_prompts,
                               summarise)
from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import LABELS, LEVELS
from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.lm import AdaptedLM, load_base_model
from pipeline.models.store import resolve_model_dir
from pipeline.train import STAGE as TRAIN_STAGE
from pipeline.train import TrainConfig
from prompts_cot.render import RenderOptions, render_prompt
from prompts_cot.rows import training_prompts
from prompts_cot.stage import STAGE as PROMPTS_STAGE
from prompts_cot.stage import PromptsConfig, VariantConfig

ROOT = Path(__file__).resolve().parent.parent
#: a variant far from RenderOptions' defaults, in two languages: reproducing its prompts needs the record
VARIANT = VariantConfig(name="compact", prompt_type="compact", cot=False, lang="auto", motion_style="compact",
                        units="km", decimals=1, max_obs_points=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Records -> prompts stage (compact, en+zh) -> train stage (tiny:llama, 2 steps): the real chain."""
    root = tmp_path_factory.mktemp("classify")
    for split, n in (("train", 8), ("dev", 3), ("test", 1)):
        write_jsonl(root / "data" / f"{split}.jsonl", make_records(n, split))
    prompts = PromptsConfig(out_dir=root / "prompts", data_dir=root / "data", variants=(VARIANT,),
                            languages=("en", "zh"), tokenizer="tiny:llama", max_source_tokens=1024)
    run_stage(PROMPTS_STAGE, prompts)
    train = load_config(TrainConfig, ROOT / "pipeline/configs/train_tiny.yaml", [
        f"out_dir={root / 'train'}", f"prompts_dir={root / 'prompts'}", "data.variant=compact",
        "data.max_source_len=160", "optim.max_steps=2", "eval.steps=0", "eval.accuracy_rows=0",
        "checkpoint.save_steps=0"])
    run_stage(TRAIN_STAGE, train)
    return {"root": root, "data": root / "data", "prompts": root / "prompts", "train": root / "train"}


def _run(trained: dict[str, Path], out: Path, *overrides: str) -> dict:
    cfg = load_config(ClassifyConfig, ROOT / "pipeline/configs/classify_demo.yaml",
                      [f"out_dir={out}", "model=tiny:llama", f"train_dir={trained['train']}", "batch_size=4",
                       f"tracks={EXAMPLE_PATH}", *overrides])
    return run_stage(STAGE, cfg)


# ------------------------------------------------------------------------------- the training prompt
def test_checkpoint_records_the_training_prompts_and_reproduces_them_exactly(trained):
    meta = json.loads((trained["train"] / "best" / "prefix_config.json").read_text())
    facts = meta["prompts"]
    rows = load_jsonl(trained["prompts"] / "compact" / "train.jsonl")
    assert facts["rows"] == len(rows) == 8 and not facts["cot"]
    assert set(facts["langs"]) == {"en", "zh"} and sum(facts["langs"].values()) == 8  # both languages trained
    assert facts["render"]["prompt_type"] == "compact" and facts["render"]["units"] == "km"
    records = {r["sample_id"]: r for r in load_jsonl(trained["data"] / "train.jsonl")}
    opts, source = prompt_options(trained["train"] / "best")
    assert source == "checkpoint" and opts.lang == facts["render"]["lang"]
    for lang in ("en", "zh"):
        lang_opts, _ = prompt_options(trained["train"] / "best", {"lang": lang})
        same = [r for r in rows if r["lang"] == lang]
        assert same
        for row in same:
            assert render_prompt(records[row["sample_id"]], lang_opts) == row["prompt"]
            # teeth: the default options would render another prompt
            assert render_prompt(records[row["sample_id"]], RenderOptions(lang=lang)) != row["prompt"]


def test_training_prompts_summary():
    base = {"prompt_type": "cot", "lang": "en", "max_obs_points": 4}
    rows = [{"lang": "en", "render": base, "response": "step 1\nAnswer: ..."},
            {"lang": "zh", "render": {**base, "lang": "zh"}, "response": "Answer: ..."},
            {"lang": "en", "render": {**base, "max_obs_points": 2}, "truncated": True, "response": "x"},
            {"lang": "en", "render": {**base, "max_obs_points": 2}, "truncated": True, "response": "x"}]
    facts = training_prompts(rows)
    assert facts == {"render": base, "langs": {"en": 3, "zh": 1}, "cot": True, "rows": 4}  # truncated rows don't vote
    assert training_prompts([{"prompt": "p", "response": "r"}]) is None  # hand-made rows: nothing recorded


def test_old_checkpoint_and_base_model_options(tmp_path):
    lm = AdaptedLM(load_base_model(resolve_model_dir("tiny:llama")), MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=2)))
    lm.save_adapter(tmp_path / "best", extra={"model_spec": "tiny:llama"})  # no "prompts" record
    with pytest.raises(DataError, match=r"prefix_config\.json, field 'prompts'.*render\.prompt_type"):
        prompt_options(tmp_path / "best")
    opts, source = prompt_options(tmp_path / "best", {"prompt_type": "cot", "lang": "zh"})
    assert source == "config" and opts == RenderOptions(prompt_type="cot", lang="zh")
    assert prompt_options(None) == (RenderOptions(), "defaults")
    with pytest.raises(DataError, match=r"nope.*no such checkpoint folder.*has: best"):
        prompt_options(tmp_path / "nope")
    with pytest.raises(ConfigError, match="render: instruction_variant"):
        prompt_options(None, {"instruction_variant": 99})


# ---------------------------------------------------------------------------------------- end to end
def test_stage_end_to_end_on_the_example_file(trained, tmp_path):
    manifest = _run(trained, tmp_path / "out")
    rows = list(load_jsonl(tmp_path / "out" / "predictions.jsonl"))
    records = read_tracks(EXAMPLE_PATH)
    with open(EXAMPLE_PATH, encoding="utf-8") as fh:
        track_ids = list(dict.fromkeys(r["track_id"] for r in csv.DictReader(fh)))
    assert [r["track_id"] for r in rows] == track_ids and len(rows) == 6
    opts, _ = prompt_options(trained["train"] / "best")
    for row, rec in zip(rows, records):
        for level in LEVELS:
            probs = row["probs"][level]
            assert list(probs) == list(LABELS[level]) and abs(sum(probs.values()) - 1.0) < 1e-6
            assert row[level] == max(probs, key=probs.get)
        assert row["features"] == rec["features"] and row["context"] == rec["context"]
        assert row["prompt"] == render_prompt(rec, opts)  # the checkpoint's compact prompt, not the defaults'
        motion = relabel_motion(rec["features"])
        assert row["oracle"]["motion"] == motion is not None
        assert row["oracle"] == determined_intents(rec["context"], motion)
        if "unknown" not in rec["context"].values():
            assert row["oracle"] == intents(rec["context"], motion)
        assert row["gold"] == rec["labels"]
        assert row["agrees_with_oracle"] == {lvl: None if row["oracle"][lvl] is None
                                             else row[lvl] == row["oracle"][lvl] for lvl in LEVELS}
        assert row["mode"] == "score" and row["output"].startswith("Answer") and row["rationale"] is None
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tracks"] == 6 and summary["render_source"] == "checkpoint" and summary["mode"] == "score"
    assert summary["vs_oracle"]["motion"]["n"] == 6 and summary["oracle_vs_gold"]["motion"] == {"n": 6,
                                                                                               "agreement": 1.0}
    acc = sum(r["motion"] == r["oracle"]["motion"] for r in rows) / 6
    assert summary["vs_oracle"]["motion"]["accuracy"] == round(acc, 4)
    assert str(EXAMPLE_PATH) in manifest["inputs"]
    assert str(trained["train"] / "best" / "prefix.safetensors") in manifest["inputs"]
    again = _run(trained, tmp_path / "out")  # up to date: skipped
    assert again["timings"] == manifest["timings"]


def _lvlh_tracks(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A JSONL file of two LVLH-state tracks (one per line, lists, km and km/s declared), uneven times, a gap."""
    n = cw.LEO_MEAN_MOTION
    rng = np.random.default_rng(3)
    times, states = [], []
    lines = [{"units": {"time": "s", "distance": "km", "speed": "kmps"}}]
    for k, s0 in enumerate(([1200.0, 300.0, 100.0, 0.0, -2 * n * 1200.0, 0.0],
                            [-2000.0, -6000.0, 0.0, 0.0, 3000.0 * n, 0.0])):
        t = np.cumsum(np.r_[0.0, rng.uniform(15.0, 45.0, 59)])
        t[40:] += 500.0
        s = np.einsum("tij,j->ti", cw.stm(n, t), np.array(s0))
        times.append(t)
        states.append(s)
        lines.append({"track_id": f"lv{k}", "t": t.tolist(), **{q: (s[:, i] / 1000.0).tolist()
                                                                 for i, q in enumerate(("x", "y", "z", "vx", "vy", "vz"))},
                      "cooperative": "yes", "equipment": "camera"})
    write_jsonl(path, lines)
    return times, states


def test_lvlh_jsonl_in_generate_mode(trained, tmp_path):
    times, states = _lvlh_tracks(tmp_path / "lvlh.jsonl")
    rows = classify_tracks(tmp_path / "lvlh.jsonl", model="tiny:llama", train_dir=trained["train"], mode="generate",
                           max_new_tokens=4, batch_size=2)
    assert [r["track_id"] for r in rows] == ["lv0", "lv1"]
    for row, t, s in zip(rows, times, states):
        expected = compute_features(observation_from_states(t, s, "LEO"))
        for key in ("initial_range_m", "min_range_m", "final_range_m", "n_samples", "window_s"):
            assert row["features"][key] == pytest.approx(expected[key], rel=1e-4, abs=1e-3), key
        assert row["mode"] == "generate" and "probs" not in row and isinstance(row["output"], str)
        assert all(row[lvl] is None or row[lvl] in LABELS[lvl] for lvl in LEVELS)
        assert row["context"]["cooperative"] is True and row["context"]["size"] == "unknown"
        assert "unknown" in row["prompt"]  # the sizes, lighting, ... the file does not give
        assert row["oracle"]["motion"] == relabel_motion(row["features"]) and row["gold"] is None


# -------------------------------------------------------------------------------------------- bad input
def _cli(tmp_path: Path, trained: dict[str, Path], *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", "classify", "--config",
                           str(ROOT / "pipeline/configs/classify_demo.yaml"), f"out_dir={tmp_path / 'out'}",
                           "model=tiny:llama", f"train_dir={trained['train']}", *overrides],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def test_bad_inputs_exit_2_naming_file_line_and_field(trained, tmp_path):
    lines = EXAMPLE_PATH.read_text().splitlines()
    bad_row = lines[4].split(",")
    bad_row[2] = "far"  # range_km
    (tmp_path / "bad.csv").write_text("\n".join([*lines[:4], ",".join(bad_row), *lines[5:20]]) + "\n")
    (tmp_path / "empty.csv").write_text(lines[0] + "\n")
    cases = [
        ([f"tracks={tmp_path / 'bad.csv'}"], [str(tmp_path / "bad.csv"), "line 5", "field 'range_km'", "far"]),
        ([f"tracks={tmp_path / 'empty.csv'}"], [str(tmp_path / "empty.csv"), "no samples"]),
        ([f"tracks={EXAMPLE_PATH}", "checkpoint=step-9"], [str(trained["train"] / "step-9"), "does not exist"]),
        ([f"tracks={EXAMPLE_PATH}", "render.instruction_variant=99"], ["render", "instruction_variant"]),
        ([f"tracks={EXAMPLE_PATH}", "render.colour=red"], ["render.colour"]),
    ]
    for overrides, needles in cases:
        proc = _cli(tmp_path, trained, *overrides)
        assert proc.returncode == 2, (overrides, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and all(n in proc.stderr for n in needles), (needles, proc.stderr)
        assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_records_the_options_cannot_render_name_track_and_field():
    rec = make_records(1)[0]
    del rec["context"]["size"]
    with pytest.raises(DataError, match=r"<records>, field 'context.size': track 'fx-flyby-0000'"):
        render_prompts([rec], RenderOptions(), "<records>")
    with pytest.raises(DataError, match="no tracks"):
        classify_tracks([], model="tiny:llama")


# ---------------------------------------------------------------------------------------------- oracle
def test_determined_intents_with_unknown_context():
    unknown = dict.fromkeys(CONTEXT_VALUES, "unknown")
    assert determined_intents(unknown, "collision") == {"motion": "collision", "operation": "none", "task": None}
    assert determined_intents({**unknown, "cooperative": False}, "collision")["task"] == "attack"
    assert determined_intents(unknown, "approach") == {"motion": "approach", "operation": None, "task": None}
    ctx = {"size": "large", "cooperative": True, "equipment": "robotic_arm", "lighting": "partial",
           "electromagnetic": "normal"}
    assert determined_intents(ctx, "rendezvous") == intents(ctx, "rendezvous")
    # lighting only matters for a camera: unknown lighting still decides a robotic arm's rendezvous
    assert determined_intents({**ctx, "lighting": "unknown"}, "rendezvous") == intents(ctx, "rendezvous")
    assert determined_intents({**ctx, "size": "unknown"}, "rendezvous")["operation"] is None  # refuel vs repair


def test_summary_counts_and_accuracies():
    def row(pred, oracle, gold):
        return {**dict(zip(LEVELS, pred)), "oracle": dict(zip(LEVELS, oracle)),
                "gold": None if gold is None else dict(zip(LEVELS, gold))}

    rows = [row(("flyby", "none", "unclear"), ("flyby", None, None), None),
            row(("approach", None, "unclear"), ("hovering", "none", None), ("hovering", "none", "unclear"))]
    s = summarise(rows)
    assert s["tracks"] == 2 and s["unanswered"] == {"motion": 0, "operation": 1, "task": 0}
    assert s["vs_oracle"]["motion"] == {"n": 2, "accuracy": 0.5} and s["vs_oracle"]["task"]["n"] == 0
    assert s["vs_gold"]["task"] == {"n": 1, "accuracy": 1.0} and s["oracle_vs_gold"]["operation"]["agreement"] == 1.0


@pytest.mark.slow
def test_smollm2_base_model_on_the_example_file(tmp_path):
    rows = classify_tracks(EXAMPLE_PATH, model="smollm2", batch_size=6)
    assert len(rows) == 6
    assert all(abs(sum(r["probs"]["motion"].values()) - 1.0) < 1e-6 for r in rows)

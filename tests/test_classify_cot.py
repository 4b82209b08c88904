"""`classify mode=generate` with a CoT prefix (tiny:llama trained on the compact `cot` variant): the reply's
rationale is shown and marked by the faithfulness checker, and generation ends at the answer line."""

from __future__ import annotations

from pathlib import Path

import torch
from lm_helpers import scripted
from record_fixtures import make_records

from pipeline.classify import TrackClassifier, classify_records, render_prompts
from pipeline.core.config import load_config
from pipeline.core.io import write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import LEVELS
from pipeline.train import STAGE as TRAIN_STAGE
from pipeline.train import TrainConfig
from prompts_cot.render import render_response
from prompts_cot.stage import STAGE as PROMPTS_STAGE
from prompts_cot.stage import PromptsConfig, VariantConfig

ROOT = Path(__file__).resolve().parent.parent
COT = VariantConfig(name="cot", prompt_type="compact", cot=True, lang="en", motion_style="compact")


def test_generate_mode_with_a_cot_prefix_shows_and_checks_the_rationale(tmp_path):
    torch.set_num_threads(1)
    for split, n in (("train", 6), ("dev", 2), ("test", 1)):
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", make_records(n, split))
    run_stage(PROMPTS_STAGE, PromptsConfig(out_dir=tmp_path / "prompts", data_dir=tmp_path / "data", variants=(COT,),
                                           languages=("en",), tokenizer="tiny:llama", max_source_tokens=1024,
                                           max_target_tokens=256))
    train = load_config(TrainConfig, ROOT / "pipeline/configs/train_tiny.yaml", [
        f"out_dir={tmp_path / 'train'}", f"prompts_dir={tmp_path / 'prompts'}", "data.variant=cot",
        "data.max_source_len=160", "data.max_target_len=200", "optim.max_steps=1", "eval.steps=0",
        "eval.accuracy_rows=0", "checkpoint.save_steps=0"])
    run_stage(TRAIN_STAGE, train)
    clf = TrackClassifier("tiny:llama", train_dir=tmp_path / "train", mode="generate", max_new_tokens=160)
    assert clf.render_source == "checkpoint" and clf.options.prompt_type == "compact"
    records = make_records(3, "test")
    clf.load()
    # the tiny random model cannot write a rationale: make it write the one the prompts stage renders for track 0,
    # a broken one for track 1 (min range misquoted) and words without an answer line for track 2
    good = render_response(records[0], clf.options, cot=True)
    bad = render_response(records[1], clf.options, cot=True)
    bad_text = bad.replace("min ", "min 9", 1) if "min " in bad.splitlines()[1] else bad.replace("Trend: ", "Trend: x", 1)
    clf.max_new_tokens = max(len(clf.tokenizer(t)["input_ids"]) for t in (good, bad_text)) + 4
    state = scripted(clf.lm, clf.tokenizer, [good + "\nTrend: more", bad_text + "\n", "words " * 100])
    # rows are batched longest-prompt first; map each batch row back to its record by the prompt length
    prompts = [clf.tokenizer(p)["input_ids"] for p in render_prompts(records, clf.options, "records")]
    order = sorted(range(3), key=lambda i: -len(prompts[i]))
    state["rows"] = order
    rows = classify_records(clf, records, "records")
    assert rows[0]["output"] == good  # generation ended at the answer line, "Trend: more" never written
    assert rows[0]["rationale"] == good.rsplit("\n", 1)[0]
    assert rows[0]["faithfulness"]["faithful"] and rows[0]["faithfulness"]["consistent"]
    assert [rows[0][lvl] for lvl in LEVELS] == [records[0]["labels"][lvl] for lvl in LEVELS]
    assert rows[1]["rationale"] and not rows[1]["faithfulness"]["faithful"]
    assert rows[2]["rationale"] is None and "faithfulness" not in rows[2]

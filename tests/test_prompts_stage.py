"""The prompts stage end to end on hand-made records in a tmp dir (SmolLM2 tokenizer, cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from record_fixtures import make_record, make_text_record

from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import MOTION_LABELS
from prompts_cot.render import options_from_dict, render_prompt, render_response
from prompts_cot.stage import STAGE, PromptsConfig, VariantConfig, choose_lang

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {
    "sample_id",
    "split",
    "variant",
    "prompt_type",
    "lang",
    "prompt",
    "response",
    "label",
    "template_hash",
    "render",
}


def write_records(root: Path) -> Path:
    """8 classes spread over 3 splits, a text-only record and an unlabelled one."""
    data = root / "records"
    splits = {"train": [], "dev": [], "test": []}
    for i, motion in enumerate(MOTION_LABELS):
        split = ("train", "dev", "test")[i % 3]
        splits[split].append(make_record(motion, sample_id=f"fx-{i}", split=split, scale=1 + 0.3 * i))
    splits["train"].append(make_text_record("imp-1", "train"))
    unlabelled = make_text_record("imp-2", "train")
    unlabelled["labels"]["task"] = None
    splits["train"].append(unlabelled)
    for split, rows in splits.items():
        write_jsonl(data / f"{split}.jsonl", rows)
    return data


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("prompts"))


def cfg_for(records_dir: Path, out: Path, **kw) -> PromptsConfig:
    return PromptsConfig(data_dir=records_dir, out_dir=out, **kw)


def test_stage_end_to_end(records_dir, tmp_path):
    cfg = cfg_for(records_dir, tmp_path / "out", export_chatglm=True)
    manifest = run_stage(STAGE, cfg)
    out = tmp_path / "out"
    assert (out / "manifest.json").exists() and (out / "token_lengths.json").exists()
    stats = manifest["stats"]
    assert stats["rows"] == {"plain": {"train": 4, "dev": 3, "test": 2}, "cot": {"train": 4, "dev": 3, "test": 2}}
    assert stats["skipped_unlabelled"] == {"train": 1, "dev": 0, "test": 0}
    records = {
        r["sample_id"]: r for split in ("train", "dev", "test") for r in load_jsonl(records_dir / f"{split}.jsonl")
    }
    for variant, prompt_type, cot in (("plain", "instruction", False), ("cot", "cot", True)):
        for split in ("train", "dev", "test"):
            rows = load_jsonl(out / variant / f"{split}.jsonl")
            chatglm = load_jsonl(out / variant / "chatglm" / f"{split}.json")
            assert [{"content": r["prompt"], "summary": r["response"]} for r in rows] == chatglm
            for row in rows:
                assert set(row) == ROW_KEYS
                rec = records[row["sample_id"]]
                assert (row["split"], row["variant"], row["prompt_type"], row["lang"]) == (
                    split,
                    variant,
                    prompt_type,
                    "en",
                )
                assert row["label"] == rec["labels"]
                assert len(row["template_hash"]) == 64
                # the row can be re-rendered exactly from the record and its render options
                opts = options_from_dict(row["render"])
                assert render_prompt(rec, opts) == row["prompt"]
                assert render_response(rec, opts, cot) == row["response"]
    lengths = json.loads((out / "token_lengths.json").read_text())
    src = lengths["variants"]["cot"]["train"]["source_tokens"]
    assert set(src) == {"min", "mean", "p50", "p95", "max"}
    assert 40 < src["min"] <= src["p50"] <= src["max"] <= 256
    assert (
        lengths["variants"]["plain"]["dev"]["target_tokens"]["max"]
        < lengths["variants"]["cot"]["dev"]["target_tokens"]["min"]
    )
    assert manifest["outputs"]["plain/train.jsonl"]["rows"] == 4
    # unchanged config and inputs: skipped (same manifest back, outputs untouched)
    again = run_stage(STAGE, cfg)
    assert again["timings"] == manifest["timings"]


def test_source_budget_error_names_sample_split_and_budget(records_dir, tmp_path):
    cfg = cfg_for(records_dir, tmp_path / "out", max_source_tokens=150, splits=("dev",))
    with pytest.raises(DataError) as err:
        run_stage(STAGE, cfg)
    msg = str(err.value)
    assert "fx-1" in msg and "split dev" in msg and "max_source_tokens 150" in msg and "dev.jsonl" in msg
    assert err.value.field == "prompt" and err.value.line == 1
    assert not (tmp_path / "out" / "plain").exists()  # nothing half-written


def test_target_budget_error(records_dir, tmp_path):
    cfg = cfg_for(records_dir, tmp_path / "out", max_target_tokens=40, splits=("test",))
    with pytest.raises(DataError, match=r"variant cot\): target tokens \d+ > max_target_tokens 40") as err:
        run_stage(STAGE, cfg)
    assert err.value.field == "response"


def test_drop_and_truncate(records_dir, tmp_path):
    drop = run_stage(STAGE, cfg_for(records_dir, tmp_path / "drop", max_target_tokens=40, on_overflow="drop"))
    assert drop["stats"]["rows"]["plain"] == {"train": 4, "dev": 3, "test": 2}
    assert drop["stats"]["rows"]["cot"]["train"] < 4 and sum(drop["stats"]["dropped"]["cot"].values()) > 0
    variants = (VariantConfig(name="num", prompt_type="cot", cot=True, max_obs_points=8),)
    trunc = run_stage(
        STAGE,
        cfg_for(
            records_dir,
            tmp_path / "trunc",
            variants=variants,
            max_source_tokens=240,
            max_target_tokens=60,
            on_overflow="truncate",
        ),
    )
    assert trunc["stats"]["rows"]["num"] == {"train": 4, "dev": 3, "test": 2}
    rows = [r for s in ("train", "dev", "test") for r in load_jsonl(tmp_path / "trunc" / "num" / f"{s}.jsonl")]
    shortened = [r for r in rows if r.get("truncated")]
    assert shortened and sum(trunc["stats"]["truncated"]["num"].values()) == len(shortened)
    assert all(r["response"].splitlines()[-1].startswith("Answer: ") for r in rows)
    assert any(r["render"]["max_obs_points"] < 8 for r in shortened)  # re-rendered with fewer points
    lengths = trunc["stats"]["token_lengths"]["num"]
    assert all(st["source_tokens"]["max"] <= 240 and st["target_tokens"]["max"] <= 60 for st in lengths.values())


def test_bad_record_is_a_data_error_naming_file_line_field(tmp_path):
    data = tmp_path / "records"
    good, bad = make_record("flyby", sample_id="a"), make_record("hovering", sample_id="b")
    bad["labels"]["motion"] = "teleport"
    for split in ("train", "dev", "test"):
        write_jsonl(data / f"{split}.jsonl", [good, bad] if split == "dev" else [good])
    with pytest.raises(DataError) as err:
        run_stage(STAGE, cfg_for(data, tmp_path / "out"))
    assert (err.value.path.endswith("dev.jsonl"), err.value.line, err.value.field) == (True, 2, "labels.motion")
    no_context = make_record("flyby", sample_id="c")
    del no_context["context"]["lighting"]
    write_jsonl(data / "dev.jsonl", [no_context])
    with pytest.raises(DataError, match="context.lighting"):
        run_stage(STAGE, cfg_for(data, tmp_path / "out"))
    assert not (tmp_path / "out" / "plain").exists()


def test_config_errors_name_the_key(tmp_path):
    demo = load_config(
        PromptsConfig, ROOT / "prompts_cot/configs/demo.yaml", ["on_overflow=drop", "languages=[en, zh]"]
    )
    assert demo.on_overflow == "drop" and demo.languages == ("en", "zh")
    with pytest.raises(ConfigError, match="max_source_token"):
        load_config(PromptsConfig, None, ["max_source_token=3"])
    with pytest.raises(ConfigError, match=r"variants\[0\]\.motion_style"):
        load_config(PromptsConfig, None, ["variants=[{name: x, motion_style: loud}]"])
    with pytest.raises(ConfigError, match="instruction_variant"):
        STAGE.run(PromptsConfig(out_dir=tmp_path, data_dir=tmp_path, variants=(VariantConfig(name="x", instruction_variant=99),)))


def test_auto_language_is_deterministic_and_mixes(records_dir, tmp_path):
    variant = VariantConfig(name="v")
    langs = [choose_lang(variant, ("en", "zh"), 0, f"s{i}") for i in range(200)]
    assert langs == [choose_lang(variant, ("en", "zh"), 0, f"s{i}") for i in range(200)]
    assert 60 < langs.count("zh") < 140
    assert choose_lang(VariantConfig(name="v", lang="zh"), ("en",), 0, "s0") == "zh"
    variants = (VariantConfig(name="basic_zh", prompt_type="basic", lang="zh", motion_style="qualitative"),)
    result = run_stage(STAGE, cfg_for(records_dir, tmp_path / "zh", variants=variants, splits=("dev",)))
    rows = load_jsonl(tmp_path / "zh" / "basic_zh" / "dev.jsonl")
    assert result["stats"]["rows"]["basic_zh"]["dev"] == 3
    assert all(r["lang"] == "zh" and r["response"].startswith("答案：") for r in rows)

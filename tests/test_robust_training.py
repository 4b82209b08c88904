"""Robustness by training: the new surface families, training-time variation in the prompts stage, the mixed
simulator, and the report's seen/unseen cells."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from record_fixtures import make_record, make_records, make_text_record

from eval import perturb
from eval.report import build_report, render_markdown
from eval.robustness import cell_summary
from pipeline.core.config import ConfigError
from pipeline.core.io import load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import MOTION_LABELS
from prompts_cot import variation
from prompts_cot.render import RenderOptions, render_prompt
from prompts_cot.rows import training_prompts
from prompts_cot.stage import STAGE, AugmentConfig, PromptsConfig, VariantConfig, draw_variation

COMPACT = RenderOptions(prompt_type="compact", motion_style="compact", decimals=0, max_obs_points=0)
# the measured values (decimals or several digits); a burn count may be written as a word ("one burn")
NUMBER = re.compile(r"(?<![A-Za-z])(?:\d+\.\d+|\d{2,})")
TEXT_FAMILIES = ("casing", "key_alias", "synonyms", "synonyms_unseen", "prose")


def numbers(text: str) -> list[str]:
    return sorted(NUMBER.findall(text))


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_families_rewrite_words_and_keep_every_number(family, lang):
    opts = dataclasses.replace(COMPACT, lang=lang)
    changed = 0
    for i, motion in enumerate(MOTION_LABELS):
        rec = make_record(motion, sample_id=f"v-{i}", scale=1 + 0.2 * i)
        clean = render_prompt(rec, opts)
        p = perturb.perturb_example(rec, opts, family, 1, seed=0)
        assert p is not None and not p.label_may_change
        assert numbers(p.prompt) == numbers(clean), (family, p.prompt)
        changed += p.prompt != clean
        # deterministic in (family, severity, seed, sample id)
        assert perturb.perturb_example(rec, opts, family, 1, seed=0).prompt == p.prompt
    assert changed >= 6, f"{family}/{lang} left most prompts unchanged"


def test_synonym_pools_are_disjoint_and_cover_the_compact_vocabulary():
    for lang in ("en", "zh"):
        train = {alt for alts in variation.SYNONYMS["train"][lang].values() for alt in alts}
        held = {alt for alts in variation.SYNONYMS["heldout"][lang].values() for alt in alts}
        assert not train & held
        assert set(variation.SYNONYMS["heldout"][lang]) <= set(variation.SYNONYMS["train"][lang])
    rec = make_record("flyby", sample_id="s-1")
    clean = render_prompt(rec, COMPACT)
    varied = variation.swap_synonyms(clean, "en", np.random.default_rng(0))
    for word in ("closing, then opening", "passing by", "no burns", "start/min", "speed"):
        assert word in clean and word not in varied


def test_prose_states_every_context_value_in_one_sentence():
    rec = make_record("approach", sample_id="p-1")
    for lang in ("en", "zh"):
        p = perturb.perturb_example(rec, dataclasses.replace(COMPACT, lang=lang), "prose", 1, seed=3)
        assert "\n" not in p.prompt
        for field in ("size", "equipment", "lighting", "electromagnetic"):
            assert variation_value(field, rec, lang) in p.prompt


def variation_value(field: str, rec: dict, lang: str) -> str:
    from prompts_cot.render import value_text

    return value_text(field, rec["context"][field], lang, compact=True)


def test_mixed_units_render_km_with_m_per_s_and_keep_precision():
    rec = make_record("flyby", sample_id="u-1")
    p = perturb.perturb_example(rec, COMPACT, "mixed_units", 1, seed=0)
    assert " km;" in p.prompt and " m/s" in p.prompt and "km/s" not in p.prompt
    p2 = perturb.perturb_example(rec, COMPACT, "mixed_units", 2, seed=0)
    assert " m;" in p2.prompt and "km/s" in p2.prompt
    with pytest.raises(ValueError, match="speed_units"):
        render_prompt(rec, dataclasses.replace(COMPACT, speed_units="mph"))


def test_language_family_renders_the_other_language_and_compact_prompts_skip_instruction():
    rec = make_record("hovering", sample_id="l-1")
    zh = perturb.perturb_example(rec, COMPACT, "language", 1, seed=0)
    assert zh.options.lang == "zh" and "运动" in zh.prompt
    assert perturb.perturb_example(rec, COMPACT, "instruction", 1, seed=0) is None
    assert perturb.perturb_example(rec, COMPACT, "option_order", 1, seed=0) is None


def test_training_draws_never_equal_evaluation_draws():
    a = perturb.train_rng("casing", 1, 0, "x").integers(1 << 62)
    b = perturb.rng_for("casing", 1, 0, "x").integers(1 << 62)
    assert a != b


def test_vary_example_composes_families_and_refuses_a_label_changing_level():
    rec = make_records(1)[0]
    opts = COMPACT
    steps = [("noise", 1), ("synonyms", 1), ("casing", 1), ("language", 1)]
    v = perturb.vary_example(rec, opts, steps, seed=5)
    assert v is not None and v.options.lang == "zh"
    assert v.record["observation"] != rec["observation"]  # noise re-drawn, features recomputed
    assert perturb.vary_example(rec, opts, steps, seed=5).prompt == v.prompt
    assert perturb.vary_example(rec, opts, [("noise", 4)], seed=5) is None  # 5x noise may change the label


def write_split_records(root: Path) -> Path:
    data = root / "records"
    splits = {"train": [], "dev": [], "test": []}
    for i in range(48):
        motion = MOTION_LABELS[i % len(MOTION_LABELS)]
        split = "train" if i < 32 else ("dev" if i < 40 else "test")
        splits[split].append(make_record(motion, sample_id=f"a-{i}", split=split, scale=1 + 0.05 * i))
    splits["train"].append(make_text_record("imp-9", "train"))
    for split, rows in splits.items():
        write_jsonl(data / f"{split}.jsonl", rows)
    return data


def test_prompts_stage_varies_a_share_of_train_rows_and_records_the_draws(tmp_path):
    data = write_split_records(tmp_path)
    variant = VariantConfig(name="plain", prompt_type="compact", motion_style="compact")
    aug = AugmentConfig(share=0.5, lang_share=0.3, seed=7)
    cfg = PromptsConfig(out_dir=tmp_path / "out", data_dir=data, variants=(variant,), augment=aug)
    run_stage(STAGE, cfg)
    train = load_jsonl(tmp_path / "out" / "plain" / "train.jsonl")
    varied = [r for r in train if r.get("variation")]
    assert 8 <= len(varied) <= 28
    assert any(r["lang"] == "zh" for r in varied) and any(r["lang"] == "en" for r in train)
    for r in varied:
        steps = [tuple(s) for s in r["variation"]["steps"]]
        assert r["variation"]["seed"] == 7 and steps
        assert all(not perturb.label_may_change(n, s) for n, s in steps)
        # the answer line follows the row's language, labels unchanged
        assert r["response"].startswith("答案" if r["lang"] == "zh" else "Answer")
    for split in ("dev", "test"):
        rows = load_jsonl(tmp_path / "out" / "plain" / f"{split}.jsonl")
        assert not any(r.get("variation") for r in rows) and {r["lang"] for r in rows} == {"en"}
    summary = training_prompts(train)
    assert summary["render"]["lang"] == "en" and summary["variation"]["rows"] == len(varied)
    assert summary["variation"]["seeds"] == [7]
    assert set(summary["variation"]["families"]) <= set(aug.families) | {"language"}
    # the draws are a pure function of (seed, sample id)
    assert draw_variation(aug, "a-3") == draw_variation(aug, "a-3")


def test_counterfactual_twins_flip_the_cooperative_flag_and_rederive_the_task(tmp_path):
    from data_prep import rules
    from prompts_cot.stage import TWIN_SUFFIX

    data = write_split_records(tmp_path)
    variant = VariantConfig(name="plain", prompt_type="compact", motion_style="compact")
    aug = AugmentConfig(share=0.0, lang_share=0.0, counterfactual=1.0, seed=3)
    cfg = PromptsConfig(out_dir=tmp_path / "out", data_dir=data, variants=(variant,), augment=aug)
    result = run_stage(STAGE, cfg)
    train = load_jsonl(tmp_path / "out" / "plain" / "train.jsonl")
    by_id = {r["sample_id"]: r for r in train}
    twins = [r for r in train if r.get("counterfactual")]
    # every simulator-like record (labels follow the rules) gets its twin; the text record (user labels) does not
    assert len(twins) == 32 and not any(r["sample_id"].startswith("imp-9" + TWIN_SUFFIX) for r in train)
    records = {r["sample_id"]: r for r in load_jsonl(data / "train.jsonl")}
    changed_task = 0
    for twin in twins:
        src = by_id[twin["counterfactual"]["of"]]
        assert twin["sample_id"] == src["sample_id"] + TWIN_SUFFIX
        # one prompt line differs: the flag
        diff = [(a, b) for a, b in zip(src["prompt"].splitlines(), twin["prompt"].splitlines()) if a != b]
        assert len(diff) == 1 and diff[0][0].startswith("Cooperative:") and diff[0][1].startswith("Cooperative:")
        context = dict(records[src["sample_id"]]["context"])
        context["cooperative"] = not context["cooperative"]
        assert twin["label"] == rules.intents(context, src["label"]["motion"])
        changed_task += twin["label"]["task"] != src["label"]["task"]
    assert changed_task >= 20
    assert result["stats"]["counterfactual_twins"] == {"train": 32}
    for split in ("dev", "test"):
        assert not any(r.get("counterfactual") for r in load_jsonl(tmp_path / "out" / "plain" / f"{split}.jsonl"))
    assert training_prompts(train)["counterfactual"] == {"rows": 32, "flipped": ["cooperative"], "seeds": [3]}


@pytest.mark.parametrize("bad, match", [
    (AugmentConfig(families=("nonsense",)), "augment.families"),
    (AugmentConfig(families=("language",)), "lang_share"),
    (AugmentConfig(share=1.5), "augment.share"),
    (AugmentConfig(counterfactual=-0.1), "augment.counterfactual"),
])
def test_augment_section_errors_name_the_key(tmp_path, bad, match):
    from prompts_cot.stage import check_config

    with pytest.raises(ConfigError, match=match):
        check_config(PromptsConfig(out_dir=tmp_path, data_dir=tmp_path, augment=bad))


def test_mixed_simulator_draws_both_simulators_into_one_set(tmp_path):
    from data_prep.stage import STAGE as DATA_STAGE
    from data_prep.stage import DataPrepConfig

    cfg = DataPrepConfig(out_dir=tmp_path / "d", n_samples=64, variants_per_scenario=2, simulator="mixed",
                         wide_share=0.5, window_orbits=(0.5, 1.0), cadence_range_s=(30.0, 60.0))
    run_stage(DATA_STAGE, cfg)
    recs = [r for s in ("train", "dev", "test") for r in load_jsonl(tmp_path / "d" / f"{s}.jsonl")]
    assert len(recs) == 64 and len({r["sample_id"] for r in recs}) == 64
    wide = [r for r in recs if "orbit" in r["observation"]]
    assert 24 <= len(wide) <= 40  # half of every class from the wide simulator (it names its orbit)
    lengths = Counter(len(r["observation"]["t_s"]) for r in recs if "orbit" not in r["observation"])
    assert len(lengths) == 1  # the classic part keeps its fixed window
    npz = np.load(tmp_path / "d" / "trajectories" / "train.npz")
    assert "lengths" in npz.files
    with pytest.raises(ConfigError, match="wide_share"):
        from data_prep.stage import validate_config

        validate_config(DataPrepConfig(out_dir=tmp_path, wide_share=0.3))


def test_report_marks_cells_seen_or_unseen_and_names_the_worst():
    rows = []
    for i in range(60):
        gold = {"motion": "flyby", "operation": "none", "task": "unclear"}
        base = {"sample_id": f"s{i}", "split": "test", "model_tag": "tuned", "variant": "plain", "mode": "score",
                "seed": 0, "lang": "en", "prompt": "p", "output": "o", "gold": gold, "label_may_change": False,
                "oracle_motion": None, "latency_s": 0.0}
        for pert, ok in (("clean", True), ("casing", i % 10 != 0), ("typos", i % 2 == 0)):
            parsed = gold if ok else {**gold, "motion": "approach"}
            rows.append({**base, "perturbation": pert, "severity": 0 if pert == "clean" else 1, "parsed": parsed,
                         "correct": {k: parsed[k] == gold[k] for k in gold}})
    cells = cell_summary(rows, ["casing"], min_n=50)
    assert cells["seen"]["worst_cell"] == "casing-1" and cells["unseen"]["worst_cell"] == "typos-1"
    assert cells["all"]["worst_accuracy"] == pytest.approx(0.5) and cells["all"]["n_cells"] == 2
    report = build_report(rows, {"models": [{"tag": "tuned", "trained_families": ["casing"]}]}, baseline_tag="tuned",
                          n_resamples=50)
    md = render_markdown(report)
    assert "| typos | 1 | unseen |" in md and "| casing | 1 | seen |" in md and "typos-1 0.500" in md


def test_diag_task_flag_finds_a_model_that_ignores_the_cooperative_flag(load_script):
    """scripts/diag_task_flag.py: a 'model' that always answers the non-cooperative task is caught — half its task
    answers wrong, every error the other flag's task, the cooperative cells at 0."""
    from data_prep.rules import intents

    diag = load_script("diag_task_flag")
    records, rows = {}, []
    for i, (motion, coop) in enumerate([(m, c) for m in ("collision", "retreat", "random") for c in (False, True)]):
        context = {"size": "small", "cooperative": coop, "equipment": "none", "lighting": "partial",
                   "electromagnetic": "normal"}
        records[f"s{i}"] = {"context": context}
        rows.append({"sample_id": f"s{i}", "gold": intents(context, motion),
                     "parsed": intents({**context, "cooperative": False}, motion)})
    table = diag.flag_table(rows, records)
    assert table["task_acc"] == pytest.approx(0.5)
    assert table["task_errors"] == table["other_flag_errors"] == 3
    assert table["cells"]["collision/cooperative"] == [0, 1]
    assert table["cells"]["collision/non-cooperative"] == [1, 1]


def test_diag_task_flag_names_the_prediction_without_its_record(tmp_path, load_script, capsys):
    """A prediction whose sample is not in the records file is exit 2 naming file, line and field, no traceback."""
    diag = load_script("diag_task_flag")
    predictions, records = tmp_path / "predictions.jsonl", tmp_path / "test.jsonl"
    predictions.write_text('{"sample_id": "x", "perturbation": "clean", "model_tag": "tuned", "gold": {}}\n')
    records.write_text('{"sample_id": "y", "context": {"cooperative": true}}\n')
    assert diag.main([str(predictions), str(records)]) == 2
    assert f"{predictions}, line 1, field 'sample_id': 'x' is not in {records}" in capsys.readouterr().err

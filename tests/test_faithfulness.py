"""The rationale faithfulness checker on hand-made faithful and unfaithful rationales, and on every rationale the
prompts stage renders (en and zh, m and km) -- those must all be faithful."""

from __future__ import annotations

from pathlib import Path

import pytest
from record_fixtures import make_context, make_record, make_records

from data_prep.rules import intents
from eval.faithfulness import check_rationale, split_clauses, summarise
from pipeline.core.io import load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import MOTION_LABELS
from prompts_cot.render import RenderOptions, options_from_dict, render_response
from prompts_cot.stage import STAGE, PromptsConfig, VariantConfig

COMPACT = RenderOptions(prompt_type="compact", motion_style="compact", decimals=0, max_obs_points=0)


def record_for(motion: str, cooperative: bool = False, equipment: str = "camera") -> dict:
    rec = make_record(motion)
    rec["context"] = make_context(cooperative, equipment)
    rec["labels"] = intents(rec["context"], motion)
    return rec


def reply(rec: dict, opts: RenderOptions = COMPACT) -> str:
    return render_response(rec, opts, cot=True)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("motion", MOTION_LABELS)
def test_rendered_rationales_are_faithful_in_every_class_context_and_unit(motion, lang):
    for coop in (False, True):
        for equipment in ("robotic_arm", "antenna", "camera", "none"):
            for units in ("m", "km"):
                rec = record_for(motion, coop, equipment)
                opts = RenderOptions(**{**COMPACT.__dict__, "lang": lang, "units": units})
                v = check_rationale(reply(rec, opts), rec, opts)
                assert v.faithful and v.consistent, (v.notes, reply(rec, opts))
                assert v.claims >= 5  # trend, definition, checks, rule, answer: the claims really were read
                assert v.conclusion == rec["labels"]


def test_flyby_example_is_read_as_the_renderer_wrote_it():
    rec = record_for("flyby")
    text = reply(rec)
    assert "start/min, final/min 3.16/3.16 >= 1.3" in text
    checks = text.splitlines()[1][len("Check: "):-1]
    assert split_clauses(checks, "en") == ["no burns", "min 1500 m > keep-out 200 m",
                                           "start/min, final/min 3.16/3.16 >= 1.3", "radial 150 m <= 0.35x min"]


# Each break changes one claim of a rendered rationale; the checker must name exactly that claim type.
BREAKS = [
    ("flyby", "Trend: closing, then opening.", "Trend: closing.", "trend"),
    ("flyby", "min 1500 m >", "min 1600 m >", "number.min"),
    ("flyby", "3.16/3.16 >= 1.3", "3.16/2.16 >= 1.3", "number.ratios"),
    ("flyby", "keep-out 200 m", "keep-out 300 m", "threshold.keepout"),
    ("flyby", "1500 m > keep-out", "1500 m <= keep-out", "comparison.keepout"),
    ("flyby", "3.16/3.16 >= 1.3", "3.16/3.16 < 1.3", "comparison.flyby_ratios"),
    ("flyby", "radial 150 m <= 0.35x min", "radial 150 m >= 0.35x min", "comparison.flyby_radial"),
    ("flyby", ", radial 150 m <= 0.35x min", "", "checks.missing"),
    ("flyby", "Check: no burns,", "Check: no burns, speed 2.84 m/s > 0.08 m/s,", "checks.unknown"),
    ("flyby", "distance falls then rises, never near zero", "distance falls then rises", "definition"),
    ("retreat", "burns 1 >= 1", "burns 2 >= 1", "number.burns"),
    ("approach", "speed 1.20 m/s", "speed 2.20 m/s", "number.speed"),
    ("approach", "final 1400 m", "final 1800 m", "number.final"),
    ("hovering", "speed 0.00 m/s <= 0.08 m/s", "speed 0.00 m/s > 0.08 m/s", "comparison.hover_speed"),
    ("rendezvous", "start 3000 m >= 300 m", "start 3000 m >= 200 m", "threshold.rendezvous_start"),
    ("flyby", "Rule: non-cooperative,", "Rule: cooperative,", "rule.facts"),
]


@pytest.mark.parametrize("motion,old,new,kind", BREAKS, ids=[b[3] for b in BREAKS])
def test_each_broken_claim_is_named(motion, old, new, kind):
    rec = record_for(motion)
    text = reply(rec)
    assert old in text, text
    v = check_rationale(text.replace(old, new, 1), rec, COMPACT)
    assert not v.faithful
    assert dict(v.errors) == {kind: 1}, v.notes
    assert v.consistent


def test_wrong_rule_operation_and_task_and_inconsistent_answer():
    rec = record_for("flyby")  # non-cooperative camera flyby: photographing -> observation
    text = reply(rec)
    assert "operation photographing -> task observation" in text
    # a wrong operation, the answer line following the rationale: only the rule step is wrong
    bad_op = text.replace("operation photographing ->", "operation communication ->").replace(
        "operation=photographing", "operation=communication")
    assert dict(check_rationale(bad_op, rec, COMPACT).errors) == {"rule.operation": 1, "rule.task": 1}
    # the task claimed is checked against the stated operation (flyby/communication/non-coop -> surveillance)
    bad_op = bad_op.replace("task observation", "task surveillance").replace("task=observation", "task=surveillance")
    assert dict(check_rationale(bad_op, rec, COMPACT).errors) == {"rule.operation": 1}
    bad_task = text.replace("task observation.", "task detection.").replace("task=observation", "task=detection")
    assert dict(check_rationale(bad_task, rec, COMPACT).errors) == {"rule.task": 1}
    # the answer line disagrees with the rationale's own conclusion
    v = check_rationale(text.replace("motion=flyby", "motion=fly-around"), rec, COMPACT)
    assert dict(v.errors) == {"consistency": 1} and not v.consistent and not v.faithful


def test_a_rationale_for_the_wrong_class_writes_a_false_comparison():
    rec = record_for("flyby")
    wrong = dict(rec, labels=intents(rec["context"], "fly_around"))
    text = reply(wrong)  # the fly-around rationale, relations flipped where they fail for this record
    v = check_rationale(text, rec, COMPACT)
    assert v.faithful  # the renderer keeps every stated relation true ...
    # ... so a model arguing fly-around writes the fly-around rule's relations, which are false here
    lied = text.replace("3.16/3.16 > 2.6", "3.16/3.16 <= 2.6").replace("radial 150 m < 0.6x min",
                                                                      "radial 150 m >= 0.6x min")
    assert lied != text
    errors = check_rationale(lied, rec, COMPACT).errors
    assert errors == {"comparison.fly_around_ratios": 1, "comparison.fly_around_radial": 1}


def test_missing_steps_and_extra_lines():
    rec = record_for("approach")
    lines = reply(rec).splitlines()
    v = check_rationale("\n".join(lines[1:]), rec, COMPACT)
    assert dict(v.errors) == {"missing.trend": 1}
    v = check_rationale("\n".join(lines[:-1]), rec, COMPACT)
    assert dict(v.errors) == {"missing.answer": 1} and not v.consistent
    v = check_rationale("\n".join([*lines[:2], lines[1], *lines[2:]]), rec, COMPACT)
    assert dict(v.errors) == {"unknown_line": 1}
    v = check_rationale("Answer: motion=approach; operation=photographing; task=detection", rec, COMPACT)
    assert set(v.errors) == {"missing.trend", "missing.checks", "missing.definition", "missing.rule"}


def test_numbers_within_the_rendered_precision_or_one_percent_pass():
    rec = record_for("approach")
    text = reply(rec)
    assert check_rationale(text.replace("final 1400 m", "final 1410 m"), rec, COMPACT).faithful  # 0.7 %
    assert not check_rationale(text.replace("final 1400 m", "final 1420 m"), rec, COMPACT).faithful


def test_summary_counts_rows_and_keeps_examples():
    rec = record_for("flyby")
    good = check_rationale(reply(rec), rec, COMPACT).to_dict()
    bad = check_rationale(reply(rec).replace("min 1500 m >", "min 1600 m >"), rec, COMPACT).to_dict()
    s = summarise([good, bad, bad], [{"sample_id": "a"}, {"sample_id": "b"}, {"sample_id": "c"}], n_examples=1)
    assert s["n"] == 3 and s["faithful"] == 1 and s["faithful_rate"] == pytest.approx(1 / 3)
    assert s["errors"] == {"number.min": 2} and s["rows_with_error"] == {"number.min": 2}
    assert [e["sample_id"] for e in s["examples"]] == ["b"] and s["examples"][0]["notes"]


def test_every_rationale_the_prompts_stage_writes_is_faithful(tmp_path: Path):
    """Simulated records (CW tracks through the sensor model, features from data_prep) through the real prompts
    stage, in both languages and two renderings; each cot row checked against its record and its render."""
    records = make_records(24, split="test")
    data = tmp_path / "records"
    for split in ("train", "dev", "test"):
        write_jsonl(data / f"{split}.jsonl", [dict(r, split=split, sample_id=f"{split}-{r['sample_id']}")
                                              for r in records])
    variants = (VariantConfig(name="cot", prompt_type="compact", cot=True, lang="auto", motion_style="compact"),
                VariantConfig(name="cot_km", prompt_type="cot", cot=True, lang="auto", motion_style="numeric",
                              units="km", decimals=1))
    cfg = PromptsConfig(data_dir=data, out_dir=tmp_path / "prompts", splits=("test",), languages=("en", "zh"),
                        variants=variants, max_source_tokens=512, max_target_tokens=256)
    run_stage(STAGE, cfg)
    by_id = {f"test-{r['sample_id']}": r for r in records}
    checked, langs = 0, set()
    for variant in ("cot", "cot_km"):
        for row in load_jsonl(tmp_path / "prompts" / variant / "test.jsonl"):
            v = check_rationale(row["response"], by_id[row["sample_id"]], options_from_dict(row["render"]))
            assert v.faithful, (v.notes, row["response"])
            checked += 1
            langs.add(row["lang"])
    assert checked >= 40 and langs == {"en", "zh"}


def test_numbers_are_compared_in_base_units():
    rec = record_for("flyby")
    text = reply(rec)
    assert check_rationale(text.replace("min 1500 m >", "min 1.500 km >"), rec, COMPACT).faithful
    assert check_rationale(text.replace("keep-out 200 m", "keep-out 0.2 km"), rec, COMPACT).faithful
    assert not check_rationale(text.replace("min 1500 m >", "min 1.6 km >"), rec, COMPACT).faithful
    km = RenderOptions(**{**COMPACT.__dict__, "units": "km"})
    assert "min 1.500 km > keep-out 0.200 km" in reply(rec, km)
    assert check_rationale(text, rec, km).faithful  # a reply in m to a prompt in km: the same claims

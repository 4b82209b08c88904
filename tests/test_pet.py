"""PET-style cloze: pattern and verbalizer rendering, scoring through the verbalizer, k-shot examples, evaluate."""

from __future__ import annotations

import json

import pytest
import torch
from record_fixtures import write_fixture_dirs

from eval.config import EvalConfig, check_config
from eval.stage import STAGE
from pipeline.core.config import load_config
from pipeline.core.io import load_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import LABELS, LEVELS, MOTION_LABELS
from pipeline.methods.pet import (
    PATTERNS,
    VERBALIZER,
    Demo,
    cloze_candidate,
    filled_reply,
    render_cloze_prompt,
    select_demos,
    select_demos_by_lang,
    verbalize,
)
from pipeline.models.scoring import score_rows, score_rows_per_level

GOLD = {"motion": "fly_around", "operation": "none", "task": "unclear"}


# ------------------------------------------------------------------------------------- pattern
def test_verbalizer_covers_every_label_with_distinct_words_per_level():
    for lang in PATTERNS:
        for level in LEVELS:
            words = [verbalize(lab, lang) for lab in LABELS[level]]
            assert len(set(words)) == len(words), (lang, level)
        assert set(VERBALIZER[lang]) == {lab for labs in LABELS.values() for lab in labs}


@pytest.mark.parametrize(("lang", "reply"), [
    ("en", "The satellite's motion is fly-around. Its operation is none. Its task is unclear."),
    ("zh", "该卫星的运动是绕飞。它的操作是无操作。它的任务是不明确。"),
])
def test_filled_reply_and_cloze_candidates(lang, reply):
    assert filled_reply(GOLD, lang) == reply
    # level by level the candidate is the reply cut right after the label word and its closing stop
    for i, level in enumerate(LEVELS):
        cand = cloze_candidate({lvl: GOLD[lvl] for lvl in LEVELS[:i]}, level, GOLD[level], lang)
        assert reply.startswith(cand) and cand.endswith(verbalize(GOLD[level], lang) + (". " if lang == "en" else "。")[0])
    # the candidates of a level differ only after the shared stem
    stems = {cloze_candidate({"motion": "flyby"}, "operation", lab, lang).rsplit(verbalize(lab, lang), 1)[0]
             for lab in LABELS["operation"]}
    assert len(stems) == 1


def test_prompt_holds_instruction_options_examples_then_the_case():
    examples = [("Station: GEO\nMotion: closing", GOLD), ("Station: LEO\nMotion: opening", {**GOLD, "motion": "retreat"})]
    text = render_cloze_prompt("Station: MEO\nMotion: steady", "en", examples)
    assert text.startswith(PATTERNS["en"].instruction)
    for level in LEVELS:  # every option word is offered
        line = next(ln for ln in text.splitlines() if ln.lower().startswith(level))
        assert all(verbalize(lab, "en") in line for lab in LABELS[level])
    first, second, case = text.index("Example 1:"), text.index("Example 2:"), text.index("Case:")
    assert first < text.index(filled_reply(GOLD, "en")) < second < case < text.index("Station: MEO")
    assert text.rstrip().endswith("Motion: steady")
    zero = render_cloze_prompt("Station: MEO", "zh")
    assert "示例" not in zero and zero.endswith("Station: MEO") and zero.startswith(PATTERNS["zh"].instruction)


# ----------------------------------------------------------------------------------- examples
def _pool(n_per_class: int = 3, lang: str = "en") -> list[Demo]:
    return [Demo(f"{lang}-{m}-{i}", f"x {m} {i}", {"motion": m, "operation": "none", "task": "unclear"}, lang)
            for m in MOTION_LABELS for i in range(n_per_class)]


def test_examples_are_deterministic_balanced_and_exclude_scored_rows():
    pool = _pool()
    a, b = select_demos(pool, 4, seed=0), select_demos(list(reversed(pool)), 4, seed=0)
    assert [d.sample_id for d in a] == [d.sample_id for d in b]  # pool order does not matter
    assert len({d.labels["motion"] for d in a}) == 4  # one per motion class while classes last
    assert [d.sample_id for d in select_demos(pool, 4, seed=1)] != [d.sample_id for d in a]
    eleven = select_demos(pool, 11, seed=0)  # 8 classes, then a second round
    assert len({d.sample_id for d in eleven}) == 11 and len({d.labels["motion"] for d in eleven[:8]}) == 8
    banned = {d.sample_id for d in a}
    assert not banned & {d.sample_id for d in select_demos(pool, 24, seed=0, exclude=banned)}
    assert len(select_demos(pool, 100, seed=0)) == len(pool) and select_demos(pool, 0, seed=0) == []
    unlabelled = [Demo("u", "x", {"motion": "flyby", "operation": None, "task": "unclear"}, "en")]  # type: ignore[dict-item]
    assert select_demos(unlabelled, 1, seed=0) == []
    by_lang = select_demos_by_lang(_pool(lang="en") + _pool(lang="zh"), 2, 0, {"zh", "en"})
    assert {lang: {d.lang for d in ds} for lang, ds in by_lang.items()} == {"en": {"en"}, "zh": {"zh"}}


# ------------------------------------------------------------------------------------ scoring
@pytest.fixture(scope="module")
def tiny():
    from pipeline.models.lm import load_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    return load_model("tiny:llama", dtype="float32", device="cpu")


def test_scoring_ranks_the_verbalizer_words(tiny):
    lm, tok = tiny
    prompts = [render_cloze_prompt("Station: LEO\nMotion: closing", "en"), render_cloze_prompt("站点：LEO", "zh"),
               render_cloze_prompt("Station: GEO\nMotion: steady, no burns", "en")]
    langs = ["en", "zh", "en"]
    cached = score_rows(lm, tok, prompts, langs, batch_size=2, candidate=cloze_candidate)
    # the reference path scores each level's full cloze candidates (one prompt pass per level)
    ref = score_rows_per_level(lm, tok, prompts, langs, batch_size=2, candidate=cloze_candidate)
    answer_line = score_rows(lm, tok, prompts, langs, batch_size=2)
    for c, r, a in zip(cached, ref, answer_line):
        assert c["parsed"] == r["parsed"]
        for lvl in LEVELS:
            assert list(c["probs"][lvl].values()) == pytest.approx(list(r["probs"][lvl].values()), abs=1e-4)
            assert c["parsed"][lvl] == max(c["probs"][lvl], key=c["probs"][lvl].get)
    # a different reply text is a different score: the cloze words, not the answer line, were scored
    assert any(c["probs"]["motion"] != pytest.approx(a["probs"]["motion"], abs=1e-4)
               for c, a in zip(cached, answer_line))


# ----------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def pet_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("petdata")
    records, prompts = write_fixture_dirs(root, n=4, langs=("en", "zh"))
    write_fixture_dirs(root, n=16, split="train", langs=("en", "zh"))  # its first ids repeat the test ids
    out = root / "out"
    cfg = load_config(EvalConfig, "eval/configs/tiny.yaml",
                      [f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={out}", "variants=[plain]",
                       "pet={k: [0, 8], seed: 3}"])
    return cfg, run_stage(STAGE, cfg)


def test_evaluate_reports_base_and_pet_systems(pet_run):
    cfg, manifest = pet_run
    rows = load_jsonl(cfg.out_dir / "predictions.jsonl")
    tags = {(r["model_tag"], r["mode"]) for r in rows}
    assert tags == {("base", "score"), ("base", "generate"), ("pet-0shot", "score"), ("pet-8shot", "score")}
    base = [r for r in rows if r["model_tag"] == "base" and r["mode"] == "score"]
    for tag in ("pet-0shot", "pet-8shot"):
        pet = [r for r in rows if r["model_tag"] == tag]
        # the same examples (clean and perturbed) as the base model, label-scored
        assert [(r["sample_id"], r["perturbation"], r["severity"]) for r in pet] == \
            [(r["sample_id"], r["perturbation"], r["severity"]) for r in base]
        for r in pet:
            assert r["output"] == filled_reply(r["parsed"], r["lang"])
            assert all(sum(r["probs"][lvl].values()) == pytest.approx(1.0) for lvl in LEVELS)
    report = json.loads((cfg.out_dir / "report.json").read_text())
    assert {g["model_tag"] for g in report["groups"]} == {"base", "pet-0shot", "pet-8shot"}
    assert {r["model_tag"] for r in report["std_ratios"]} >= {"pet-0shot", "pet-8shot"}
    facts = {m["tag"]: m.get("pet") for m in report["manifest"]["models"]}
    scored = {r["sample_id"] for r in rows}
    pool = {r["sample_id"] for r in load_jsonl(cfg.prompts_dir / "plain" / "train.jsonl")}
    assert scored < pool  # the fixture's train ids repeat the scored ones: exclusion is what keeps them out
    shown = facts["pet-8shot"]["examples"]["plain"]
    # 8 train rows per language, 2 of them scored: only the other 6 can be shown
    assert {lang: len(ids) for lang, ids in shown.items()} == {"en": 6, "zh": 6}
    assert not scored & {i for ids in shown.values() for i in ids}
    assert facts["pet-0shot"]["examples"]["plain"] == {"en": [], "zh": []} and facts["base"] is None
    assert str(cfg.prompts_dir / "plain" / "train.jsonl") in manifest["inputs"]


def test_evaluate_with_pet_resumes_and_examples_are_deterministic(pet_run):
    cfg, manifest = pet_run
    again = run_stage(STAGE, cfg, force=True)  # every answer comes from the resume cache: same systems, same keys
    assert again["stats"]["timings"] == {}
    assert again["stats"]["clean_accuracy"] == manifest["stats"]["clean_accuracy"]


@pytest.mark.parametrize(("override", "match"), [
    ("pet={k: [-1]}", "pet.k"),
    ("pet={k: [0, 0]}", "pet.k"),
    ("models=[{tag: pet-0shot, spec: 'tiny:llama'}]", "already use"),
])
def test_bad_pet_sections_are_refused(override, match):
    cfg = load_config(EvalConfig, "eval/configs/tiny.yaml", ["pet={k: [0]}", override])
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


def test_pet_needs_score_mode():
    cfg = load_config(EvalConfig, "eval/configs/tiny.yaml", ["pet={k: [0]}", "modes=[generate]"])
    with pytest.raises(ValueError, match="score"):
        check_config(cfg)

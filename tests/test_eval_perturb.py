"""Perturbations: determinism, label preservation, the relabelling oracle, typo safety."""

from __future__ import annotations

import re

import numpy as np
import pytest
from record_fixtures import make_records, make_text_record

from data_prep.oracle import relabel_motion
from eval.perturb import (
    DISTRACTORS,
    SPECS,
    add_typos,
    is_applicable,
    perturb_example,
    protected_spans,
    rng_for,
)
from pipeline.core.answer import find_label_mentions
from prompts_cot.render import RenderOptions, render_prompt

CASES = [(name, sev) for name, spec in SPECS.items() for sev in spec.levels]


@pytest.fixture(scope="module")
def records():
    return make_records(6) + [make_text_record()]


@pytest.mark.parametrize(("name", "sev"), CASES)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_deterministic_and_seed_dependent(records, name, sev, lang):
    opts = RenderOptions(prompt_type="instruction", lang=lang)
    changed_by_seed = 0
    applied = 0
    for rec in records:
        a = perturb_example(rec, opts, name, sev, seed=0)
        b = perturb_example(rec, opts, name, sev, seed=0)
        if a is None:
            assert b is None and not is_applicable(name, rec, opts)
            continue
        applied += 1
        assert a.prompt == b.prompt and a.record == b.record  # same key -> same text
        assert a.prompt != render_prompt(rec, opts)             # it does perturb
        c = perturb_example(rec, opts, name, sev, seed=1)
        changed_by_seed += c.prompt != a.prompt
        assert a.record["labels"] == rec["labels"]              # labels are never edited
    assert applied >= 6
    deterministic = name in {"units", "mixed_units", "precision", "truncate", "instruction", "language"}  # no randomness
    if deterministic:
        assert changed_by_seed == 0
    elif not (name == "dropout" and sev == 1):                  # decimation is deterministic too
        assert changed_by_seed >= applied // 2, f"{name}:{sev} barely depends on the seed"


def test_text_only_records_get_only_text_perturbations():
    rec = make_text_record()
    opts = RenderOptions()
    for name in ("noise", "dropout", "truncate", "units", "precision", "field_order"):
        assert perturb_example(rec, opts, name, min(SPECS[name].levels), 0) is None
    for name in ("distractors", "typos", "instruction", "option_order"):
        assert perturb_example(rec, opts, name, 1, 0) is not None
    assert perturb_example(rec, RenderOptions(prompt_type="basic"), "option_order", 1, 0) is None


def test_record_is_not_mutated(records):
    rec = records[0]
    before = repr(rec)
    perturb_example(rec, RenderOptions(), "noise", 4, 0)
    perturb_example(rec, RenderOptions(), "truncate", 3, 0)
    assert repr(rec) == before


@pytest.mark.parametrize(("name", "sev"), [("noise", 1), ("noise", 2), ("dropout", 1), ("truncate", 1)])
def test_relabel_of_perturbed_features_unchanged_at_low_severity(name, sev):
    """The simulator's physics oracle still gives the gold motion after a mild record perturbation."""
    recs = make_records(9)
    for seed in range(2):
        for rec in recs:
            p = perturb_example(rec, RenderOptions(), name, sev, seed)
            assert relabel_motion(p.record["features"]) == rec["labels"]["motion"]
            assert p.oracle_motion == rec["labels"]["motion"]
            assert p.label_may_change is False


def test_heavy_severities_are_flagged(records):
    for name in ("noise", "truncate"):
        top = max(SPECS[name].levels)
        p = perturb_example(records[0], RenderOptions(), name, top, 0)
        assert p.label_may_change is True
    # a text-level perturbation never flags a label change
    assert perturb_example(records[0], RenderOptions(), "typos", 3, 0).label_may_change is False


def _digits(text):
    return re.findall(r"\d+(?:\.\d+)?", text)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_typos_never_touch_digits_or_label_words(records, lang):
    opts = RenderOptions(lang=lang)
    for rec in records:
        clean = render_prompt(rec, opts)
        for seed in range(3):
            typo = perturb_example(rec, opts, "typos", 3, seed).prompt
            assert typo != clean
            assert _digits(typo) == _digits(clean)
            assert [m[2] for m in find_label_mentions(typo)] == [m[2] for m in find_label_mentions(clean)]
            for word in ("Answer", "motion", "operation", "task") if lang == "en" else ("答案", "运动", "操作", "任务"):
                assert typo.count(word) == clean.count(word)


def test_add_typos_respects_protected_spans():
    text = "The flyby target hovering near 1234.5 m performs docking"
    rng = np.random.default_rng(0)
    out = add_typos(text, 1.0, rng)
    assert "flyby" in out and "hovering" in out and "docking" in out and "1234.5" in out
    assert out != text
    assert any(s <= text.index("flyby") < e for s, e in protected_spans(text))


def test_rng_key_is_stable():
    a = rng_for("noise", 1, 0, "x").random(3)
    b = rng_for("noise", 1, 0, "x").random(3)
    c = rng_for("noise", 1, 1, "x").random(3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_distractor_lists_and_instruction_variants():
    from prompts_cot.render import N_INSTRUCTION_VARIANTS

    assert all(len(v) >= 8 for v in DISTRACTORS.values())
    assert all(n >= 5 for n in N_INSTRUCTION_VARIANTS.values())
    # distractors mention no label (they must be irrelevant)
    for lang, sentences in DISTRACTORS.items():
        for s in sentences:
            assert find_label_mentions(s, fallback_only=True) == [], (lang, s)

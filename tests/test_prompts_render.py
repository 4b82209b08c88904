"""Rendering of prompts and responses (prompts_cot.render) on hand-made records."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from record_fixtures import make_record, make_text_record

from data_prep.oracle import DEFAULT_THRESHOLDS as TH
from data_prep.oracle import relabel_motion
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS, MOTION_LABELS, canonical_label, display
from prompts_cot import templates
from prompts_cot.render import (
    FIELD_ORDER,
    N_INSTRUCTION_VARIANTS,
    RenderOptions,
    format_answer,
    format_number,
    options_from_dict,
    options_to_dict,
    rationale_steps,
    render_prompt,
    render_response,
)

ROOT = Path(__file__).resolve().parent.parent
# The real parser lives in eval/; this is a deliberately tiny independent check.
ANSWER_RE = re.compile(r"^(?:Answer|答案)[:：]\s*(.+)$")
PAIR_RE = re.compile(r"([^=;；\s]+)=([^;；]+)")


def parse_answer(text: str) -> dict[str, str | None]:
    """Canonical labels from the last line of a response."""
    last = text.strip().splitlines()[-1]
    m = ANSWER_RE.match(last)
    assert m, f"last line is not an answer line: {last!r}"
    out: dict[str, str | None] = {}
    for key, value in PAIR_RE.findall(m.group(1)):
        level = next(lv for lang in ("en", "zh") for lv in LEVELS if LEVEL_DISPLAY[lang][lv] == key.strip())
        out[level] = canonical_label(value.strip(), level)
    return out


def numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?", text)


@pytest.fixture(params=MOTION_LABELS)
def record(request):
    return make_record(request.param)


def test_fixtures_relabel_to_their_class():
    for motion in MOTION_LABELS:
        for scale in (0.5, 1.0, 4.0):
            assert relabel_motion(make_record(motion, scale=scale)["features"]) == motion


@pytest.mark.parametrize("prompt_type", ["basic", "instruction", "cot"])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_prompt_type_and_language_renders(prompt_type, lang):
    rec = make_record("flyby")
    text = render_prompt(rec, RenderOptions(prompt_type=prompt_type, lang=lang))
    t = templates.TEMPLATES[lang]
    assert t["known_header"] in text
    assert t["values"]["size"]["large"] in text
    has_options = t["options"].split("{")[0] in text
    assert has_options == (prompt_type != "basic")
    assert (t["cot"]["steps"] in text) == (prompt_type == "cot")
    if prompt_type == "basic":
        assert text.endswith(t["basic"]["question"][0])
    # the text-only record renders in every type as well, with its text as known information
    text_rec = make_text_record()
    assert text_rec["text"] in render_prompt(text_rec, RenderOptions(prompt_type=prompt_type, lang=lang))


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("prompt_type", ["instruction", "cot"])
def test_instruction_prompt_lists_every_candidate_of_each_level(lang, prompt_type):
    text = render_prompt(make_record("hovering"), RenderOptions(prompt_type=prompt_type, lang=lang))
    t = templates.TEMPLATES[lang]
    for level in LEVELS:
        prefix = t["option_line"].format(level=LEVEL_DISPLAY[lang][level], labels="")
        line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
        listed = line[len(prefix) :].split(t["option_sep"])
        assert listed == [display(lab, lang) for lab in LABELS[level]]


def test_option_order_changes_text_deterministically_and_keeps_labels():
    rec = make_record("approach")
    order = (("motion", tuple(reversed(LABELS["motion"]))), ("task", tuple(sorted(LABELS["task"]))))
    base = RenderOptions()
    shuffled = RenderOptions(option_order=order)
    a, b = render_prompt(rec, shuffled), render_prompt(rec, shuffled)
    assert a == b != render_prompt(rec, base)
    motion_line = next(ln for ln in a.splitlines() if ln.startswith("motion:"))
    assert motion_line == "motion: " + " ".join(display(x, "en") for x in reversed(LABELS["motion"]))
    op_line = next(ln for ln in a.splitlines() if ln.startswith("operation:"))
    assert op_line == "operation: " + " ".join(display(x, "en") for x in LABELS["operation"])  # untouched level
    for cot in (False, True):
        assert render_response(rec, shuffled, cot) == render_response(rec, base, cot)
    with pytest.raises(ValueError):
        render_prompt(rec, RenderOptions(option_order=(("motion", ("flyby", "hovering")),)))


def test_field_order_moves_lines_only():
    rec = make_record("fly_around")
    base = render_prompt(rec, RenderOptions())
    order = ("motion", "lighting", "cooperative")
    moved = render_prompt(rec, RenderOptions(field_order=order))
    assert moved != base and sorted(moved.splitlines()) == sorted(base.splitlines())
    lines = moved.splitlines()
    i = lines.index("Known information:")
    assert lines[i + 1].startswith("Orbital motion:")
    assert lines[i + 2].startswith("Lighting:") and lines[i + 3].startswith("Cooperative:")
    assert lines[i + 4].startswith("Own spacecraft:")  # the rest follow in canonical order
    assert set(FIELD_ORDER) == {"orbit", "size", "cooperative", "equipment", "lighting", "electromagnetic", "motion"}
    with pytest.raises(ValueError):
        render_prompt(rec, RenderOptions(field_order=("speed",)))


def test_units_decimals_and_scientific_re_render_the_same_values():
    rec = make_record("approach", scale=1.3)
    f = rec["features"]
    m0 = render_prompt(rec, RenderOptions(decimals=0, motion_style="numeric", max_obs_points=0))
    assert f"Range {f['initial_range_m']:.0f}->{f['final_range_m']:.0f} m" in m0
    m2 = render_prompt(rec, RenderOptions(decimals=2, motion_style="numeric", max_obs_points=0))
    assert f"min {f['min_range_m']:.2f} at" in m2 and f"speed {f['final_speed_mps']:.2f} m/s" in m2
    km = render_prompt(rec, RenderOptions(decimals=0, units="km", motion_style="numeric", max_obs_points=0))
    # km keeps the metre precision: 3 more digits
    assert f"Range {f['initial_range_m'] / 1000:.3f}->{f['final_range_m'] / 1000:.3f} km" in km
    assert f"speed {f['final_speed_mps'] / 1000:.5f} km/s" in km
    sci = render_prompt(rec, RenderOptions(decimals=1, scientific=True, motion_style="numeric", max_obs_points=0))
    values = [float(x) for x in numbers(sci.split("Range ")[1].split(",")[0])]
    assert values == pytest.approx([f["initial_range_m"], f["final_range_m"]], abs=0.051)
    assert "e+03" in sci
    # re-rendering never changes the label or the answer line
    for opts in (RenderOptions(units="km"), RenderOptions(scientific=True), RenderOptions(decimals=3)):
        assert render_response(rec, opts, False) == format_answer(rec["labels"], "en")


def test_format_number_edge_cases():
    assert format_number(-0.04, 1, False) == "0.0"  # no negative zero
    assert format_number(5230.14, 1, True) == "5.2301e+03"
    assert format_number(0.0, 2, True) == "0.00e+00"
    assert format_number(float("nan"), 1, False) == "nan"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_instruction_paraphrases(lang):
    assert N_INSTRUCTION_VARIANTS[lang] >= 5
    rec = make_record("collision")
    for prompt_type in ("basic", "instruction", "cot"):
        texts = [
            render_prompt(rec, RenderOptions(prompt_type=prompt_type, lang=lang, instruction_variant=i))
            for i in range(N_INSTRUCTION_VARIANTS[lang])
        ]
        assert len(set(texts)) == len(texts)
    with pytest.raises(ValueError):
        render_prompt(rec, RenderOptions(lang=lang, instruction_variant=N_INSTRUCTION_VARIANTS[lang]))


def test_distractors_are_appended_to_known_information():
    rec = make_record("retreat")
    noise = ("The station's crew is asleep.", "A meteor shower is forecast for tomorrow.")
    text = render_prompt(rec, RenderOptions(distractors=noise))
    lines = text.splitlines()
    i = lines.index("Note: " + noise[0])
    assert lines[i - 1].startswith("Orbital motion:") and lines[i + 1] == "Note: " + noise[1]
    assert lines[i + 2] == "Options:"
    assert render_prompt(rec, RenderOptions(distractors=noise)) == text
    assert noise[0] in render_prompt(make_text_record(), RenderOptions(distractors=noise))


def test_max_obs_points_samples_evenly():
    rec = make_record("flyby", n_points=51)
    for k, expected in ((0, 0), (1, 1), (4, 4), (8, 8), (100, 51)):
        text = render_prompt(rec, RenderOptions(motion_style="numeric", max_obs_points=k, decimals=0))
        if expected == 0:
            assert "Samples" not in text
            continue
        points = text.split("): ")[1].split(". Range")[0].split(", ")
        assert len(points) == expected
        if expected > 1:  # first and last observation included
            assert points[0].startswith("0/") and points[-1].startswith("3000/")


def test_qualitative_sentence_follows_the_trend():
    flyby = render_prompt(make_record("flyby"), RenderOptions(motion_style="qualitative"))
    assert "reaches the closest distance, then gradually moves away, without visible manoeuvres." in flyby
    assert not numbers(flyby.split("Orbital motion:")[1].split("\n")[0])
    rdv = render_prompt(make_record("rendezvous"), RenderOptions(motion_style="qualitative"))
    assert "comes to rest beside it" in rdv and "1 velocity jump(s)" in rdv and "keep-out sphere" in rdv
    assert "reaches it while still moving" in render_prompt(
        make_record("collision"), RenderOptions(motion_style="qualitative")
    )


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_responses_end_in_a_parseable_answer_line(record, lang):
    for prompt_type in ("instruction", "cot"):
        opts = RenderOptions(prompt_type=prompt_type, lang=lang)
        for cot in (False, True):
            response = render_response(record, opts, cot)
            assert parse_answer(response) == record["labels"]
            assert (len(response.splitlines()) > 1) == cot


def test_answer_line_format():
    labels = {"motion": "flyby", "operation": "photographing", "task": "observation"}
    assert format_answer(labels, "en") == "Answer: motion=flyby; operation=photographing; task=observation"
    assert format_answer(labels, "zh") == "答案：运动=飞越；操作=拍照；任务=观测"


def _allowed_numbers(f: dict, decimals: int) -> set[str]:
    """Every number a rationale may quote: features, thresholds and their derived values."""
    d = lambda x: format_number(x, decimals, False)  # noqa: E731
    s = lambda x: format_number(x, max(decimals, 2), False)  # noqa: E731
    r0, rmin, rf = f["initial_range_m"], f["min_range_m"], f["final_range_m"]
    norm = math.sqrt(sum(e * e for e in f["extent_m"]))
    allowed = {
        d(r0),
        d(rmin),
        d(rf),
        d(f["extent_m"][0]),
        d(norm),
        s(f["final_speed_mps"]),
        str(f["n_burns"]),
        f"{r0 / rmin:.2f}",
        f"{rf / rmin:.2f}",
    }
    allowed |= {
        d(TH.keepout_radius_m),
        d(TH.contact_range_m),
        d(TH.rendezvous_range_m),
        d(TH.rendezvous_min_start_factor * TH.rendezvous_range_m),
        s(TH.rendezvous_speed_mps),
        s(TH.hover_speed_mps),
        str(TH.random_min_burns),
        "1",
        "0",
    }
    for x in (
        100 * TH.hover_range_tolerance,
        100 * (1 - TH.retreat_min_closing_frac),
        100 * (1 - TH.approach_min_closing_frac),
        1 + TH.retreat_min_opening_frac,
        1 + TH.approach_end_tolerance,
        TH.flyby_min_range_ratio,
        TH.flyby_max_radial_frac,
        TH.fly_around_max_range_ratio,
        TH.fly_around_min_radial_frac,
    ):
        allowed.add(f"{x:g}")
    return allowed


@pytest.mark.parametrize("decimals", [0, 1])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_rationale_numbers_match_features_and_thresholds(record, decimals, lang):
    opts = RenderOptions(prompt_type="cot", lang=lang, decimals=decimals)
    steps = rationale_steps(record, opts)
    assert len(steps) == 4  # trend, check, definition, rule
    check = steps[1]
    found = numbers(check)
    assert found, check
    assert set(found) <= _allowed_numbers(record["features"], decimals), check
    f = record["features"]
    key_value = {
        "hovering": f["final_speed_mps"],
        "rendezvous": f["final_range_m"],
        "collision": f["final_range_m"],
        "approach": f["final_range_m"],
        "retreat": f["min_range_m"],
        "flyby": f["min_range_m"],
        "fly_around": f["min_range_m"],
        "random": f["n_burns"],
    }[record["labels"]["motion"]]
    assert any(float(x) == pytest.approx(key_value, abs=10**-decimals) for x in found)
    # relations are written as they hold; the relabeller agrees, so they are exactly the rule's relations
    motion = record["labels"]["motion"]
    expected = {
        "hovering": ["<=", "<="],
        "rendezvous": ["<=", "<=", ">="],
        "collision": ["<=", ">"],
        "random": [">="],
        "retreat": [">=", "<=", ">="],
        "flyby": [">", ">=", "<="],
        "fly_around": [">", "<=", ">="],
        "approach": ["<=", "<=", ">", ">"],
    }[motion]
    assert re.findall(r" (<=|>=|<|>) ", check) == expected
    assert display(motion, lang) in steps[2]
    assert display(record["labels"]["task"], lang) in steps[3]


def test_rationale_relation_flips_when_false():
    rec = make_record("approach")
    rec["labels"] = {"motion": "collision", "operation": "none", "task": "attack"}  # wrong on purpose
    check = rationale_steps(rec, RenderOptions(prompt_type="cot"))[1]
    assert f"final {rec['features']['final_range_m']:.1f} m > 60.0 m" in check


def test_rule_step_names_the_deciding_context():
    rec = make_record("rendezvous", cooperative=True, equipment="robotic_arm")
    assert "size large" in rationale_steps(rec, RenderOptions())[3]
    rec = make_record("flyby", equipment="camera")
    assert "lighting full sunlight" in rationale_steps(rec, RenderOptions())[3]


def test_human_rationale_is_used_verbatim_with_our_answer_line():
    rec = make_text_record(rationale="The range dips then grows.\nIt never gets close.\nAnswer: motion=hovering")
    out = render_response(rec, RenderOptions(prompt_type="cot"), cot=True)
    assert out.splitlines() == [
        "The range dips then grows.",
        "It never gets close.",
        format_answer(rec["labels"], "en"),
    ]
    # without a human rationale a text-only record gets the definition step and the answer
    out = render_response(make_text_record(), RenderOptions(prompt_type="cot"), cot=True)
    assert out.splitlines()[0].startswith("flyby:") and parse_answer(out) == make_text_record()["labels"]


def test_rendering_is_deterministic_and_options_round_trip():
    rec = make_record("random")
    opts = RenderOptions(
        prompt_type="cot",
        lang="zh",
        units="km",
        decimals=2,
        scientific=True,
        field_order=("motion", "size"),
        option_order=(("operation", tuple(reversed(LABELS["operation"]))),),
        instruction_variant=3,
        distractors=("x",),
        max_obs_points=5,
    )
    assert render_prompt(rec, opts) == render_prompt(json.loads(json.dumps(rec)), opts)
    d = options_to_dict(opts)
    assert json.loads(json.dumps(d)) == d
    assert options_from_dict(json.loads(json.dumps(d))) == opts
    # every field, except speed_units at its default (left out so rows written before it existed stay identical)
    assert set(d) == {f.name for f in dataclasses.fields(RenderOptions)} - {"speed_units"}
    mixed = dataclasses.replace(opts, speed_units="m/s")
    assert options_from_dict(json.loads(json.dumps(options_to_dict(mixed)))) == mixed


def test_template_hash_is_stable_and_tracks_template_edits(monkeypatch):
    h = templates.template_hash("cot", "en", 0, True)
    code = "from prompts_cot.templates import template_hash; print(template_hash('cot', 'en', 0, True))"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == h
    assert templates.template_hash("cot", "en", 1, True) != h
    assert templates.template_hash("instruction", "en", 0, False) != h
    monkeypatch.setitem(templates.TEMPLATES["en"]["cot"], "steps", "Think harder.")
    assert templates.template_hash("cot", "en", 0, True) != h


# --------------------------------------------------------------------------- compact prompt (the demo's)
COMPACT = RenderOptions(prompt_type="compact", motion_style="compact", decimals=0)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_compact_prompt_is_the_known_information_only(lang):
    rec = make_record("flyby")
    text = render_prompt(rec, dataclasses.replace(COMPACT, lang=lang))
    t = templates.TEMPLATES[lang]
    lines = text.splitlines()
    # one short "field: value" line per element, in canonical order, and nothing else (no header,
    # instruction, options or format hint: label scoring / the answer line is the question)
    assert len(lines) == len(FIELD_ORDER)
    assert lines[0] == t["line"].format(field=t["compact"]["fields"]["orbit"], value=t["compact"]["values"]["orbit"]["LEO"])
    assert t["known_header"] not in text and t["format_hint"] not in text and t["options"].split("{")[0] not in text
    assert lines[-1].startswith(t["line"].format(field=t["compact"]["fields"]["motion"], value=""))
    # a text-only record renders as its text
    text_rec = make_text_record()
    assert render_prompt(text_rec, dataclasses.replace(COMPACT, lang=lang)) == text_rec["text"].strip()


def test_compact_motion_quotes_the_ratios_the_rules_compare():
    rec = make_record("flyby")
    f = rec["features"]
    line = render_prompt(rec, COMPACT).splitlines()[-1]
    rmin = f["min_range_m"]
    assert f"start/min {f['initial_range_m'] / rmin:.2f}" in line
    assert f"end/min {f['final_range_m'] / rmin:.2f}" in line
    assert f"radial/min {f['extent_m'][0] / rmin:.2f}" in line
    assert "closing, then opening, passing by, no burns;" in line  # a flyby's small radial extent, in words
    assert f"min {rmin:.0f} m" in line and f"speed {f['final_speed_mps']:.2f} m/s" in line
    assert "no burns" in line and "closing, then opening" in line
    around = make_record("fly_around")
    radial = around["features"]["extent_m"][0] / around["features"]["min_range_m"]
    assert radial >= 0.6 and ", around the station, no burns;" in render_prompt(around, COMPACT)
    burns = render_prompt(make_record("random"), COMPACT).splitlines()[-1]
    assert f"{make_record('random')['features']['n_burns']} burns" in burns


def test_compact_motion_says_how_a_track_ends_whatever_its_trend():
    """A rendezvous or collision reached after an opening arc says so in the trend clause (the relabeller
    decides them by the end state alone); a closing-and-opening arc otherwise names its path."""
    rec = make_record("rendezvous")
    rec["features"]["range_trend"] = "increasing_then_decreasing"
    assert "Motion: opening, then closing, ending at rest, " in render_prompt(rec, COMPACT)
    rec = make_record("collision")
    rec["features"]["range_trend"] = "increasing_then_decreasing"
    assert "Motion: opening, then closing, ending at contact, " in render_prompt(rec, COMPACT)
    assert "passing by" not in render_prompt(make_record("approach"), COMPACT)  # a one-way trend has no path
    zh = render_prompt(make_record("flyby"), dataclasses.replace(COMPACT, lang="zh"))
    assert "先接近后远离，从旁掠过，无机动" in zh


def test_compact_perturbations_re_render_units_order_and_distractors():
    rec = make_record("approach")
    base = render_prompt(rec, COMPACT)
    km = render_prompt(rec, dataclasses.replace(COMPACT, units="km"))
    # units change distances and speeds, never the unitless ratios
    ratios = re.findall(r"(?:start|end|radial)/min [0-9.]+", base)
    assert ratios and ratios == re.findall(r"(?:start|end|radial)/min [0-9.]+", km)
    assert " km" in km and " km/s" in km and " m/s" not in km
    moved = render_prompt(rec, dataclasses.replace(COMPACT, field_order=("motion", "size")))
    assert sorted(moved.splitlines()) == sorted(base.splitlines()) and moved != base
    noted = render_prompt(rec, dataclasses.replace(COMPACT, distractors=("The crew is asleep.",)))
    assert noted.startswith(base) and noted.endswith("The crew is asleep.")


def test_compact_template_hash_only_counts_for_compact_rows(monkeypatch):
    before = templates.template_hash("instruction", "en", 0, False, "numeric")
    compact = templates.template_hash("compact", "en", 0, False, "compact")
    monkeypatch.setitem(templates.TEMPLATES["en"]["compact"], "keepout", "; inside the keep-out sphere")
    assert templates.template_hash("instruction", "en", 0, False, "numeric") == before
    assert templates.template_hash("compact", "en", 0, False, "compact") != compact

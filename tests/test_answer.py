"""Answer parsing: both languages, aliases, markdown, malformed replies, multiple answer lines."""

from __future__ import annotations

import pytest

from data_prep.imports import parse_answer as parse_import_answer
from pipeline.core.answer import (
    find_label_mentions,
    format_answer,
    is_answer_line,
    is_invalid,
    level_of_key,
    parse_answer,
    parse_reply,
    strip_answer_lines,
)
from pipeline.core.taxonomy import LABELS, LEVELS, display

NONE = {"motion": None, "operation": None, "task": None}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_label_round_trips_through_format_answer(lang):
    for i in range(max(len(v) for v in LABELS.values())):
        labels = {lvl: LABELS[lvl][i % len(LABELS[lvl])] for lvl in LEVELS}
        assert parse_answer(format_answer(labels, lang), lang) == labels


@pytest.mark.parametrize(("text", "expected"), [
    ("Answer: motion=flyby; operation=photographing; task=observation",
     {"motion": "flyby", "operation": "photographing", "task": "observation"}),
    ("答案：运动=飞越；操作=拍照；任务=观测", {"motion": "flyby", "operation": "photographing", "task": "observation"}),
    ("**Answer**: Motion: Fly-around, Operation: refueling, Task: unknown",
     {"motion": "fly_around", "operation": "refuelling", "task": "unclear"}),
    ("ANSWER ： MOTION = RENDEZVOUS ； OPERATION = DOCKING ； TASK = SUPPORT",
     {"motion": "rendezvous", "operation": "docking", "task": "support"}),
    ("答案: 运动意图是交会; 操作=对接; 任务=协助", {"motion": "rendezvous", "operation": "docking", "task": "assistance"}),
    ("Answer: flyby, photographing, observation", {"motion": "flyby", "operation": "photographing", "task": "observation"}),
    ("`Answer: motion=hover; operation=no operation; task=jamming`",
     {"motion": "hovering", "operation": "none", "task": "interference"}),
])
def test_answer_line_forms(text, expected):
    assert parse_answer(text) == expected


def test_paper_sentence_form_and_chinese_sentences():
    text = "Reasoning first. Movement intention is flyby. Operation intention is refuel. Task intention is unclear."
    assert parse_answer(text) == {"motion": "flyby", "operation": "refuelling", "task": "unclear"}
    assert parse_answer("运动意图是绕飞，操作意图为加注，任务意图为不明确") == {
        "motion": "fly_around", "operation": "refuelling", "task": "unclear"}


def test_last_answer_line_wins_and_earlier_fill_gaps():
    text = ("1) Trend... Answer: motion=hovering; operation=none; task=detection\n"
            "Answer: motion=approach; operation=docking; task=support")
    assert parse_answer(text) == {"motion": "approach", "operation": "docking", "task": "support"}
    partial = "Answer: motion=hovering; operation=none; task=detection\nAnswer: motion=approach"
    assert parse_answer(partial) == {"motion": "approach", "operation": "none", "task": "detection"}


def test_single_mention_fallback_and_ambiguity():
    assert parse_answer("The target seems to do a flyby.") == {"motion": "flyby", "operation": None, "task": None}
    # two motion labels and no answer line: ambiguous -> None
    assert parse_answer("Either hovering or flyby, hard to say.")["motion"] is None
    # an answer value naming two labels is not a guess
    assert parse_answer("Answer: motion=flyby or hovering; operation=none; task=attack")["motion"] is None


@pytest.mark.parametrize("text", ["", None, "garbage", "Answer: motion=?; operation=?; task=?", "12345",
                                  "Answer:", "答案：运动=？；操作=？；任务=？"])
def test_malformed_is_none(text):
    parsed = parse_answer(text)
    assert parsed == NONE
    assert is_invalid(parsed)


def test_option_list_echo_is_not_an_answer():
    echo = ("Options:\nmotion: hovering, flyby, fly-around, approach\nAnswer: motion=?; operation=?; task=?")
    assert parse_answer(echo)["motion"] is None


def test_longest_match_and_word_boundaries():
    # "不明确" (unclear) must not be read as "不明" and then leave "确"; "flyby" inside "flybys" is not a mention
    assert [m[2] for m in find_label_mentions("任务不明确")] == ["unclear"]
    assert find_label_mentions("xflybyx") == []


def test_level_keys():
    assert level_of_key("Movement intention") == "motion"
    assert level_of_key("运动意图") == "motion"
    assert level_of_key("Task") == "task"
    assert level_of_key("colour") is None


def test_display_names_of_both_languages_accepted_regardless_of_lang():
    zh = format_answer({"motion": "retreat", "operation": "repair", "task": "deterrence"}, "zh")
    assert parse_answer(zh, lang="en")["motion"] == "retreat"
    assert display("retreat", "zh") in zh
    with pytest.raises(ValueError):
        parse_answer("x", lang="fr")


def test_training_answer_lines_both_languages():
    """What the train stage's dev accuracy parses (it uses this module's parser, no local copy)."""
    assert parse_answer("reasoning...\nAnswer: motion=fly-around; operation=none; task=observation") == \
        {"motion": "fly_around", "operation": "none", "task": "observation"}
    assert parse_answer("答案：运动=飞越；操作=拍照；任务=观测") == \
        {"motion": "flyby", "operation": "photographing", "task": "observation"}
    assert parse_answer("no idea") == {"motion": None, "operation": None, "task": None}


def test_reply_rationale_and_answer_line_helpers():
    text = "Range falls then rises.\nNever near zero.\nAnswer: motion=flyby; operation=none; task=unclear"
    labels, rationale = parse_reply(text)
    assert labels == {"motion": "flyby", "operation": "none", "task": "unclear"}
    assert rationale == "Range falls then rises.\nNever near zero."
    assert strip_answer_lines(text) == ["Range falls then rises.", "Never near zero."]
    assert is_answer_line("答案：运动=飞越") and is_answer_line("  answer: x") and not is_answer_line("The answer is")
    assert parse_reply("no answer line")[1] is None


def test_import_parser_ignores_labels_merely_mentioned_in_the_rationale():
    """Data import uses the same parser without the bare-mention fallback."""
    text = "It is not docking.\nAnswer: motion=approach"
    labels, rationale = parse_import_answer(text)
    assert labels == {"motion": "approach", "operation": None, "task": None} and rationale == "It is not docking."
    assert parse_answer(text)["operation"] == "docking"  # evaluation's fallback does read the mention

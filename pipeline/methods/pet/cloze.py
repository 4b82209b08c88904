"""PET-style cloze for a frozen causal LM: a manual pattern per intent level and a verbalizer.

PET (Schick & Schütze 2021) turns a classification input ``x`` into a cloze question ``P(x)``
with a blank, and maps every label to a word (the *verbalizer* ``v(label)``); the label whose
word the LM finds most likely in the blank wins. Here the LM is causal, so the blank sits at the
end of the model's reply and each level's pattern is one sentence of that reply::

    user:       <instruction + options>  [k filled examples]  <x>
    assistant:  The satellite's motion is ____. Its operation is ____. Its task is ____.

Level by level, the candidates are the reply cut right after ``v(label)`` and the sentence's
closing stop (``... motion is flyby.``): the stop closes the word, so ``fly`` cannot win by being a
prefix of a longer word. Later levels are conditioned on the earlier levels' argmax, exactly
like label scoring of the answer line (:mod:`pipeline.models.scoring`), which scores these
candidates through :func:`cloze_candidate`. English and Chinese patterns; ``x`` is whatever the
prompts stage rendered (clean or perturbed), so the robustness cells apply to PET unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence

from pipeline.core.taxonomy import DISPLAY, LABELS, LEVELS

#: bump when a pattern or the verbalizer changes (part of the evaluate cache key via :func:`template_hash`)
PET_VERSION = "pet-cloze-v1"

#: placeholder of the blank in a pattern sentence
BLANK = "{}"


@dataclasses.dataclass(frozen=True)
class ClozePattern:
    """The manual pattern of one language."""

    # first line of the user message: what the cases are and what to do
    instruction: str
    # one line per level listing its verbalizer words: format(words=...)
    options: Mapping[str, str]
    # separator between option words
    word_sep: str
    # header before each in-context example: format(i=1..k)
    example_header: str
    # header before the case to answer (only when examples precede it)
    query_header: str
    # the reply's cloze sentence per level; BLANK is the label word, the character after it closes the value
    sentences: Mapping[str, str]
    # joins the level sentences of the reply
    joiner: str


PATTERNS: dict[str, ClozePattern] = {
    "en": ClozePattern(
        instruction="Each case describes a satellite observed near ours. Complete the sentences about its intentions.",
        options={"motion": "Motion: one of {words}.", "operation": "Operation: one of {words}.",
                 "task": "Task: one of {words}."},
        word_sep=", ",
        example_header="Example {i}:",
        query_header="Case:",
        sentences={"motion": "The satellite's motion is {}.", "operation": "Its operation is {}.",
                   "task": "Its task is {}."},
        joiner=" ",
    ),
    "zh": ClozePattern(
        instruction="每个案例描述了我方附近观测到的一颗卫星。请补全关于其意图的句子。",
        options={"motion": "运动：{words}之一。", "operation": "操作：{words}之一。", "task": "任务：{words}之一。"},
        word_sep="、",
        example_header="示例{i}：",
        query_header="案例：",
        sentences={"motion": "该卫星的运动是{}。", "operation": "它的操作是{}。", "task": "它的任务是{}。"},
        joiner="",
    ),
}

#: label -> the word the LM should put in the blank, per language. Mostly the display names (the
#: words the prompts already use); a few are changed to the word a sentence would use (PET picks
#: verbalizer words the LM knows in that position).
VERBALIZER: dict[str, dict[str, str]] = {
    lang: {**DISPLAY[lang], **changed}
    for lang, changed in {"en": {}, "zh": {"none": "无操作"}}.items()  # "no operation": 无 alone reads as "nothing"
}


def pattern(lang: str) -> ClozePattern:
    """The pattern of ``lang`` (ValueError for a language without one)."""
    if lang not in PATTERNS:
        raise ValueError(f"no PET cloze pattern for language {lang!r}; have {sorted(PATTERNS)}")
    return PATTERNS[lang]


def verbalize(label: str, lang: str) -> str:
    """The verbalizer word of a canonical label."""
    return VERBALIZER[lang][label]


def sentence(level: str, label: str, lang: str) -> str:
    """One level's cloze sentence with the blank filled."""
    return pattern(lang).sentences[level].replace(BLANK, verbalize(label, lang))


def filled_reply(labels: Mapping[str, str], lang: str) -> str:
    """The whole reply with every level's blank filled (in-context examples; the ``output`` of a PET row)."""
    return pattern(lang).joiner.join(sentence(lvl, labels[lvl], lang) for lvl in LEVELS)


def cloze_candidate(prior: Mapping[str, str], level: str, label: str, lang: str) -> str:
    """The reply up to and including ``v(label)`` at ``level`` and the character that closes the blank.

    ``prior`` holds the argmax labels of the levels before ``level`` (their sentences precede it).
    Same signature as :func:`pipeline.models.scoring.answer_candidate`, so label scoring takes either.
    """
    pat = pattern(lang)
    done = [sentence(lvl, prior[lvl], lang) for lvl in LEVELS[: LEVELS.index(level)]]
    text = pat.sentences[level]
    cut = text.index(BLANK) + len(BLANK) + 1  # keep the closing stop right after the blank
    done.append(text[:cut].replace(BLANK, verbalize(label, lang)))
    return pat.joiner.join(done)


def option_lines(lang: str) -> list[str]:
    """The per-level option lines (verbalizer words in taxonomy order)."""
    pat = pattern(lang)
    return [pat.options[lvl].format(words=pat.word_sep.join(verbalize(lab, lang) for lab in LABELS[lvl]))
            for lvl in LEVELS]


def render_cloze_prompt(x: str, lang: str, examples: Sequence[tuple[str, Mapping[str, str]]] = ()) -> str:
    """The user message ``P(x)``: instruction, options, the k filled ``(text, labels)`` examples, then ``x``.

    The reply (the cloze sentences) is what label scoring appends after the chat template.
    """
    pat = pattern(lang)
    parts = ["\n".join([pat.instruction, *option_lines(lang)])]
    for i, (text, labels) in enumerate(examples, start=1):
        parts.append("\n".join([pat.example_header.format(i=i), text.strip(), filled_reply(labels, lang)]))
    parts.append("\n".join([pat.query_header, x.strip()]) if examples else x.strip())
    return "\n\n".join(parts)


def template_hash() -> str:
    """sha256 of the patterns, the verbalizer and :data:`PET_VERSION` (a changed template is a new model)."""
    blob = json.dumps({"version": PET_VERSION, "patterns": {k: dataclasses.asdict(v) for k, v in PATTERNS.items()},
                       "verbalizer": VERBALIZER}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = ["BLANK", "PATTERNS", "PET_VERSION", "VERBALIZER", "ClozePattern", "cloze_candidate", "filled_reply",
           "option_lines", "pattern", "render_cloze_prompt", "sentence", "template_hash", "verbalize"]

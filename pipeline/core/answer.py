"""The answer line: the ONE module that writes and parses it.

The answer line is the contract between the prompts stage (training targets), training (dev
accuracy), evaluation (parsing replies, label-scoring candidates), data import (ChatGLM-format
responses) and the labelling loop (a model rationale without its answer line)::

    Answer: motion=flyby; operation=none; task=unclear        (en)
    答案：运动=飞越；操作=无；任务=不明确                         (zh)

Writing: :data:`ANSWER_FORMAT` (the template strings, also part of the prompts' template hash)
and :func:`format_answer`. Recognising a line we wrote: :func:`is_answer_line`.

Parsing (:func:`parse_answer`), most to least trusted (each level is filled by the first step that finds it):

1. the **last** answer line (``Answer: motion=flyby; ...`` / ``答案：运动=飞越；...``), tolerant of case,
   full-width punctuation (NFKC), markdown emphasis, ``motion: x`` / ``运动意图是x`` key forms and
   answer lines without keys (``Answer: flyby, photographing, observation``: labels are unique
   across levels, so a bare label names its level);
2. sentence forms anywhere in the reply, last one wins (the reference study's
   "Movement intention is flyby … Task intention is unclear", ``运动意图为飞越``);
3. a single unambiguous label mention for the level anywhere in the reply (several distinct
   labels of the level -> ambiguous -> None); ``mentions=False`` skips this step (data import,
   where a rationale that merely names a label must not become the label).

A level that none of these fill is ``None`` (scored wrong; counted in the invalid-output rate).
Both languages are always accepted whatever ``lang`` says, because models switch languages.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pipeline.core.taxonomy import ALIASES, DISPLAY, LABELS, LEVEL_DISPLAY, LEVELS, canonical_label, display

# ---------------------------------------------------------------------------------------------- writing
#: The answer line's template strings per language (the prompts stage hashes them with its templates).
ANSWER_FORMAT: dict[str, dict[str, str]] = {
    "en": {"answer": "Answer: {pairs}", "answer_pair": "{level}={label}", "answer_sep": "; "},
    "zh": {"answer": "答案：{pairs}", "answer_pair": "{level}={label}", "answer_sep": "；"},
}

# A line that starts with "Answer:" / "答案：" (what format_answer writes; a reviewer may write one too)
_ANSWER_LINE_START = re.compile(r"^\s*(answer|答案)\s*[:：]", re.IGNORECASE)


def format_answer(labels: dict[str, str], lang: str) -> str:
    """The fixed, parseable answer line, e.g. ``Answer: motion=flyby; operation=none; task=unclear``."""
    t = ANSWER_FORMAT[lang]
    pairs = t["answer_sep"].join(
        t["answer_pair"].format(level=LEVEL_DISPLAY[lang][level], label=display(labels[level], lang))
        for level in LEVELS
    )
    return t["answer"].format(pairs=pairs)


def is_answer_line(line: str) -> bool:
    """True for a line that starts with ``Answer:`` / ``答案：`` (any case, either colon)."""
    return bool(_ANSWER_LINE_START.match(line))


@lru_cache(maxsize=None)
def _extended_last_labels(lang: str) -> frozenset[str]:
    """Display names of the last level's labels that are a proper prefix of another one (in ``lang``): an
    answer line ending in one of them may still be growing."""
    names = [display(lab, lang) for lab in LABELS[LEVELS[-1]]]
    return frozenset(a for a in names if any(b != a and b.startswith(a) for b in names))


def answer_line_done(text: str) -> bool:
    """True when a reply being generated has finished its answer line (generation may stop there).

    Either an answer line is followed by a line break, or the reply's last line already is a whole answer line
    as :func:`format_answer` writes it (every level, the last label complete: no other label of the last level
    extends it), so the model need not spend a step on the line break or EOS.
    """
    lines = str(text).split("\n")
    if any(is_answer_line(ln) for ln in lines[:-1]):
        return True
    last = lines[-1].strip()
    if not is_answer_line(last):
        return False
    parsed = parse_answer(last, mentions=False)
    if any(parsed[level] is None for level in LEVELS):
        return False
    return any(format_answer(parsed, lang) == last  # type: ignore[arg-type]
               and display(parsed[LEVELS[-1]], lang) not in _extended_last_labels(lang) for lang in ANSWER_FORMAT)


def strip_answer_lines(text: str) -> list[str]:
    """The lines of ``text`` that are not answer lines (the rationale part of a CoT reply)."""
    return [ln for ln in str(text).splitlines() if not is_answer_line(ln)]


# ---------------------------------------------------------------------------------------------- parsing

#: Words that name a level in keys (after normalisation, "intention"/"意图" etc. stripped); includes
#: the taxonomy's LEVEL_DISPLAY names of both languages.
LEVEL_KEYS: dict[str, str] = {
    "motion": "motion", "movement": "motion", "move": "motion", "maneuver": "motion", "manoeuvre": "motion",
    "运动": "motion", "机动": "motion", "运动类型": "motion",
    "operation": "operation", "operations": "operation", "op": "operation", "操作": "operation", "作业": "operation",
    "task": "task", "mission": "task", "任务": "task",
}

# "Answer" keywords (English variants and Chinese); full-width forms are folded by NFKC first.
_ANSWER_LINE = re.compile(
    r"(?:final\s+answer|answer|prediction|答案|最终答案|回答|结论)\s*(?:is\s*)?[:=]\s*(?P<body>.*)$",
    re.IGNORECASE,
)
_MARKDOWN = re.compile(r"[*_`#>]+")
_SEGMENT_SPLIT = re.compile(r"[;,|/\n、]+|\s{2,}")
_KEY_VALUE = re.compile(r"^(?P<key>[^=:]+?)\s*(?:=|:|\bis\b|\bwas\b|是|为|:)\s*(?P<val>.+)$", re.IGNORECASE)
_KEY_NOISE = re.compile(r"\b(?:intentions?|intents?|type|class|label|level|category)\b|意图|类型|类别", re.IGNORECASE)
# Sentence form: "<level word> [intention] is/was/: <value>" / "<level>意图是/为<value>".
_SENTENCE = re.compile(
    r"(?P<key>motion|movement|operation|task|mission|运动|操作|任务)\s*"
    r"(?:intentions?|intents?|意图)?\s*(?:type\s*)?(?:\bis\b|\bwas\b|=|:|是|为)\s*"
    # the value runs to the end of the clause (commas kept): an option list "motion: a, b, c" then names
    # several labels of the level and is rejected as ambiguous instead of read as its first option
    r"(?=(?P<val>[^\n.;。；]+))",  # lookahead: the next level's sentence inside this clause is still found
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalise_text(text: str) -> str:
    """NFKC (full-width -> ASCII punctuation), drop markdown emphasis, unify line breaks."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _MARKDOWN.sub("", text)


def level_of_key(key: str) -> str | None:
    """Map an answer-line key (``motion``, ``Movement intention``, ``运动意图``) to a level, or None."""
    k = _KEY_NOISE.sub(" ", key.lower())
    k = re.sub(r"[\s\-_]+", " ", k).strip(" .:-")
    if k in LEVEL_KEYS:
        return LEVEL_KEYS[k]
    for zh, level in (("运动", "motion"), ("操作", "operation"), ("任务", "task")):
        if k.startswith(zh):
            return level
    words = k.split()
    return LEVEL_KEYS.get(words[-1]) if words else None


@lru_cache(maxsize=1)
def label_vocabulary() -> tuple[tuple[str, str, str], ...]:
    """Every surface form (display names both languages, canonical, aliases) -> (form, label, level).

    Sorted longest first so ``不明确`` wins over ``不明`` and ``fly-around`` over ``fly``.
    """
    level_of = {lab: lvl for lvl, labs in LABELS.items() for lab in labs}
    forms: dict[str, str] = {}
    for label in level_of:
        for form in (label, label.replace("_", " "), DISPLAY["en"][label], DISPLAY["zh"][label]):
            forms[form.lower()] = label
    for alias, label in ALIASES.items():
        forms.setdefault(alias.lower(), label)
    return tuple(sorted(((f, lab, level_of[lab]) for f, lab in forms.items()), key=lambda x: -len(x[0])))


def find_label_mentions(text: str, fallback_only: bool = False) -> list[tuple[int, int, str, str]]:
    """Non-overlapping label mentions ``(start, end, label, level)`` in ``text`` (longest match first).

    English forms must sit on word boundaries; Chinese forms match anywhere. With
    ``fallback_only`` single-character Chinese aliases (``无``, common inside other words) are skipped.
    """
    low = text.lower()
    taken = [False] * len(low)
    found = []
    for form, label, level in label_vocabulary():
        if fallback_only and _CJK.search(form) and len(form) < 2:
            continue
        pattern = re.escape(form) if _CJK.search(form) else r"(?<![a-z])" + re.escape(form) + r"(?![a-z])"
        for m in re.finditer(pattern, low):
            if any(taken[m.start():m.end()]):
                continue
            for i in range(m.start(), m.end()):
                taken[i] = True
            found.append((m.start(), m.end(), label, level))
    return sorted(found)


def value_to_label(value: str, level: str | None) -> str | None:
    """A value string -> canonical label of ``level`` (exact/alias, else one unambiguous mention)."""
    value = value.strip().strip("()[]{}\"'").strip()
    if not value:
        return None
    exact = canonical_label(value, level)
    if exact is not None:
        return exact
    labels = {lab for _, _, lab, lvl in find_label_mentions(value) if level is None or lvl == level}
    return labels.pop() if len(labels) == 1 else None


def parse_answer_body(body: str) -> dict[str, str | None]:
    """Parse the part after ``Answer:`` into level -> label (missing levels None)."""
    out: dict[str, str | None] = dict.fromkeys(LEVELS)
    bare: dict[str, set[str]] = {}
    for seg in _SEGMENT_SPLIT.split(body):
        seg = seg.strip().strip(".。")
        if not seg:
            continue
        m = _KEY_VALUE.match(seg)
        level = level_of_key(m.group("key")) if m else None
        if m and level is not None:
            label = value_to_label(m.group("val"), level)
            if label is not None:
                out[level] = label
            continue
        # no recognised key: a bare label names its own level (labels are unique across levels)
        for _, _, label, lvl in find_label_mentions(seg):
            bare.setdefault(lvl, set()).add(label)
    for lvl, labels in bare.items():
        if out[lvl] is None and len(labels) == 1:  # an option list ("hovering / flyby / ...") stays None
            out[lvl] = next(iter(labels))
    return out


def answer_lines(text: str) -> list[str]:
    """Bodies of every answer line in (normalised) ``text``, in order."""
    bodies = []
    for line in text.split("\n"):
        m = _ANSWER_LINE.search(line.strip())
        if m and m.group("body").strip():
            bodies.append(m.group("body"))
    return bodies


def parse_sentences(text: str) -> dict[str, str | None]:
    """Sentence forms ("Movement intention is flyby", "运动意图为飞越"); the last one per level wins."""
    out: dict[str, str | None] = dict.fromkeys(LEVELS)
    for m in _SENTENCE.finditer(text):
        level = level_of_key(m.group("key"))
        if level is None:
            continue
        label = value_to_label(m.group("val"), level)
        if label is not None:
            out[level] = label
    return out


def parse_answer(text: str | None, lang: str | None = None, mentions: bool = True) -> dict[str, str | None]:
    """Parse a reply into ``{"motion": label|None, "operation": ..., "task": ...}`` (canonical labels).

    ``lang`` ("en"/"zh") is accepted for symmetry with the renderer; both languages are parsed
    regardless. ``mentions=False`` skips the last strategy (bare label mentions anywhere in the text).
    See the module docstring for the order of strategies.
    """
    if lang not in (None, "en", "zh"):
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}")
    out: dict[str, str | None] = dict.fromkeys(LEVELS)
    if not text:
        return out
    norm = normalise_text(text)
    bodies = answer_lines(norm)
    if bodies:
        # later answer lines overwrite earlier ones (the last wins); an earlier line only fills
        # a level the later ones leave out
        for body in bodies:
            parsed = parse_answer_body(body)
            for level in LEVELS:
                if parsed[level] is not None:
                    out[level] = parsed[level]
    if all(out[level] is not None for level in LEVELS):
        return out
    sentences = parse_sentences(norm)
    for level in LEVELS:
        if out[level] is None:
            out[level] = sentences[level]
    if not mentions:
        return out
    found = find_label_mentions(norm, fallback_only=True)
    for level in LEVELS:
        if out[level] is None:
            labels = {lab for _, _, lab, lvl in found if lvl == level}
            if len(labels) == 1:
                out[level] = labels.pop()
    return out


def parse_reply(text: str, mentions: bool = True) -> tuple[dict[str, str | None], str | None]:
    """Labels (:func:`parse_answer`) and the rationale: the text before the last answer line (None without one)."""
    lines = str(text).split("\n")
    last = None
    for i, line in enumerate(lines):
        m = _ANSWER_LINE.search(normalise_text(line).strip())
        if m and m.group("body").strip():
            last = i
    rationale = "\n".join(lines[:last]).strip() or None if last is not None else None
    return parse_answer(text, mentions=mentions), rationale


def unrecognised_values(text: str) -> dict[str, str]:
    """Levels that an answer line names with a value that is no label of that level (``operation=dancing``).

    For strict readers (data import): :func:`parse_answer` leaves such a level ``None``, exactly as
    if it were not mentioned; this tells the two apart. Returns ``level -> raw value``.
    """
    out: dict[str, str] = {}
    for body in answer_lines(normalise_text(str(text))):
        for seg in _SEGMENT_SPLIT.split(body):
            m = _KEY_VALUE.match(seg.strip().strip(".。"))
            level = level_of_key(m.group("key")) if m else None
            if level is not None and value_to_label(m.group("val"), level) is None:
                out[level] = m.group("val").strip()
    return out


def is_invalid(parsed: dict[str, str | None], levels: tuple[str, ...] = LEVELS) -> bool:
    """True when any of ``levels`` could not be parsed."""
    return any(parsed.get(level) is None for level in levels)


__all__ = ["ANSWER_FORMAT", "LEVEL_KEYS", "answer_line_done", "answer_lines", "find_label_mentions", "format_answer", "is_answer_line",
           "is_invalid", "level_of_key", "normalise_text", "parse_answer", "parse_answer_body", "parse_reply",
           "parse_sentences", "strip_answer_lines", "unrecognised_values", "value_to_label"]


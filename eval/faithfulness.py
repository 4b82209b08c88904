"""Rationale faithfulness: is every claim of a generated CoT rationale true of its record and the rule tables?

A CoT reply in the prompts stage's format (:func:`prompts_cot.render.rationale_steps`, English or Chinese)::

    Trend: closing, then opening.
    Check: no burns, min 1500 m > keep-out 200 m, start/min, final/min 3.16/3.16 >= 1.3, radial 150 m <= 0.35x min.
    flyby: distance falls then rises, never near zero.
    Rule: non-cooperative, camera, lighting full sunlight -> operation photographing -> task observation.
    Answer: motion=flyby; operation=photographing; task=observation

:func:`check_rationale` marks every claim against the true values, computed by the same functions that render
the training rationales (nothing is re-derived here):

* ``trend`` -- the trend words vs :func:`prompts_cot.render.motion_trend` of the record's features;
* ``number.<quantity>`` -- every number quoted on the left of a check (min range, start/final range, ratios,
  burn count, speed, extent, radial extent) vs the value the renderer writes for the record;
* ``threshold.<check>`` -- the numbers on the right (the rule's threshold, the start range inside ``80% of
  start 5000 m``);
* ``comparison.<check>`` -- the stated relation (``<=``, ``>`` ...) vs the one that holds for the record
  (keep-out, flyby / fly-around ratios, hover / rendezvous / contact speeds, ...). The checks are those of
  the motion class the rationale itself concludes (its definition line), from
  :func:`prompts_cot.render.threshold_checks`, so a rationale that argues for the wrong class writes a
  relation that does not hold;
* ``definition`` -- the definition text is the concluded class's definition;
* ``rule.facts`` / ``rule.operation`` / ``rule.task`` -- the rule line's facts (:func:`prompts_cot.render.rule_facts`),
  its operation (``data_prep.rules.operation_intent`` of the context and the concluded motion) and its task
  (``data_prep.rules.task_intent`` of cooperativeness, the concluded motion and the *stated* operation, so one
  wrong step is counted once);
* ``consistency`` -- the answer line (parsed by :func:`pipeline.core.answer.parse_answer`) names the motion of the
  definition line and the operation and task of the rule line;
* structure: ``missing.<step>`` (trend, checks, definition, rule, answer), ``checks.missing`` (a check of the
  concluded class left out), ``checks.unknown`` (a check clause that is none of them), ``unknown_line``.

A row is **faithful** when its rationale is complete (every step there) and no claim is wrong. Numbers match
when they differ by at most ``rel_tol`` (default 1 %) of the true value or half a unit of the rendered precision,
compared in base units (``1.5 km`` where the rendering says ``1500 m`` is the same claim).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from data_prep.rules import CONTEXT_VALUES, operation_intent, task_intent
from pipeline.core.answer import is_answer_line, parse_answer, value_to_label
from pipeline.core.taxonomy import LEVELS
from prompts_cot.render import (
    Check,
    RenderOptions,
    motion_trend,
    rule_facts,
    threshold_checks,
)
from prompts_cot.templates import TEMPLATES

#: A number as the renderer writes it (fixed or scientific), with the unit after it if any
_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUM_UNIT = re.compile(r"(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:\s*(?P<unit>km/s|m/s|km|m)(?![A-Za-z]))?")
#: factor to base units (m, m/s): a reply may write km where the record's rendering wrote m, or the reverse
_TO_BASE = {"km": 1e3, "km/s": 1e3, "m": 1.0, "m/s": 1.0, None: 1.0}
_REL = re.compile(r"\s*(<=|>=|<|>)\s*")
_UNITS = {"m", "km", "m/s", "km/s"}


@dataclass
class Verdict:
    """One rationale's marks: claims checked, errors by claim type, and a note per error."""

    claims: int = 0
    errors: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    # the rationale's own conclusion (definition line motion, rule line operation and task); None where absent
    conclusion: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(LEVELS))

    def claim(self, ok: bool, kind: str, note: str) -> None:
        """Count one claim; an error of ``kind`` with ``note`` when it is wrong."""
        self.claims += 1
        if not ok:
            self.error(kind, note)

    def error(self, kind: str, note: str) -> None:
        self.errors[kind] += 1
        self.notes.append(f"{kind}: {note}")

    @property
    def faithful(self) -> bool:
        return not self.errors

    @property
    def consistent(self) -> bool:
        return not any(k == "consistency" or k == "missing.answer" for k in self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"faithful": self.faithful, "consistent": self.consistent, "claims": self.claims,
                "errors": dict(sorted(self.errors.items())), "notes": self.notes, "conclusion": self.conclusion}


# ------------------------------------------------------------------------------------------- parsing
def template_regex(template: str) -> re.Pattern[str]:
    """A ``str.format`` template as an anchored regex, each ``{name}`` a lazy named group."""
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>.+?)" if i % 2 else re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@lru_cache(maxsize=None)
def step_patterns(lang: str) -> dict[str, re.Pattern[str]]:
    """The rationale step templates of ``lang`` as regexes (trend, checks, rule, definition)."""
    r = TEMPLATES[lang]["rationale"]
    return {"trend": template_regex(r["trend"]), "checks": template_regex(r["numbers"]),
            "rule": template_regex(r["rule"]), "definition": template_regex(r["definition"])}


def split_steps(text: str, lang: str) -> tuple[dict[str, re.Match[str]], str | None, list[str]]:
    """The reply's steps (first match of each), its last answer line and the lines that are no step."""
    pats = step_patterns(lang)
    steps: dict[str, re.Match[str]] = {}
    answer, unknown = None, []
    for line in (ln.strip() for ln in str(text).splitlines()):
        if not line:
            continue
        if is_answer_line(line):
            answer = line
            continue
        for name in ("trend", "checks", "rule", "definition"):  # definition last: "{motion}: ..." matches anything
            m = pats[name].match(line)
            if m and (name != "definition" or value_to_label(m.group("motion"), "motion")):
                if name in steps:
                    unknown.append(line)  # a repeated step is no claim of its own
                steps.setdefault(name, m)
                break
        else:
            unknown.append(line)
    return steps, answer, unknown


def split_clauses(checks: str, lang: str) -> list[str]:
    """Check clauses of a ``Check:`` step: split on the separator, re-joining pieces without a relation
    (``start/min, final/min 3.16/3.16 >= 1.3`` holds the separator itself); ``no burns`` stands alone."""
    r = TEMPLATES[lang]["rationale"]
    pieces = [p.strip() for p in checks.split(r["check_sep"].strip()) if p.strip()]
    out, pending = [], ""
    for p in pieces:
        joined = f"{pending}{r['check_sep']}{p}" if pending else p
        if _REL.search(joined) or joined == r["terms"]["no_burns"]:
            out.append(joined)
            pending = ""
        else:
            pending = joined
    if pending:
        out.append(pending)
    return out


@dataclass(frozen=True)
class Clause:
    """A check clause split into its term, numbers and relation."""

    term: str
    lhs_numbers: tuple[tuple[str, str | None], ...]  # (number as written, unit or None)
    rel: str | None
    rhs_shape: str
    rhs_numbers: tuple[tuple[str, str | None], ...]


def _numbers(text: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((m.group("num"), m.group("unit")) for m in _NUM_UNIT.finditer(text))


def _shape(text: str) -> str:
    """The text with every number (and its unit) as ``#``: ``80% of start 5000 m`` -> ``#% of start #``."""
    return _NUM_UNIT.sub("#", text).strip()


def _term(text: str) -> str:
    """The words of a check's left side without numbers and units (``final 2550 m`` -> ``final``)."""
    words = [w for w in _NUM.sub(" ", text).split() if w not in _UNITS and re.search(r"\w", w)]
    return " ".join(words)


def parse_clause(text: str, lang: str) -> Clause:
    """``"final 2550 m >= 1.2x min"`` -> term ``final``, numbers, relation, right-side shape and numbers.
    ``no burns`` (the bare fact) is read as ``burns 0 <= 0``, the way a track with burns is written."""
    w = TEMPLATES[lang]["rationale"]["terms"]
    if text.strip() == w["no_burns"]:
        return Clause(w["burns"], (("0", None),), "<=", "#", (("0", None),))
    m = _REL.search(text)
    lhs, rel, rhs = (text[: m.start()], m.group(1), text[m.end():]) if m else (text, None, "")
    return Clause(_term(lhs), _numbers(lhs), rel, _shape(rhs), _numbers(rhs))


def clause_of_check(check: Check, lang: str) -> Clause:
    """The :class:`Clause` the renderer's ``check`` writes (the true claim)."""
    return parse_clause(check.text(), lang)


def _step(number: str) -> float:
    """The rendered precision of a number: one unit of its last digit (``1.50`` -> 0.01, ``1.5e+03`` -> 100)."""
    mant, _, exp = number.lower().partition("e")
    digits = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** (int(exp or 0) - digits)


def numbers_match(got: tuple[tuple[str, str | None], ...], want: tuple[tuple[str, str | None], ...],
                  rel_tol: float) -> bool:
    """Same count and each, in base units (a unit written with the number converts it), within ``rel_tol`` of the
    true value or half a unit of the true value's rendered precision."""
    if len(got) != len(want):
        return False
    for (g, gu), (t, tu) in zip(got, want):
        gv, tv = float(g) * _TO_BASE[gu or tu], float(t) * _TO_BASE[tu]
        tol = max(rel_tol * abs(tv), 0.5 * _step(t) * _TO_BASE[tu]) + 1e-12
        if not math.isfinite(gv) or abs(gv - tv) > tol:
            return False
    return True


# ------------------------------------------------------------------------------------------- marking
def check_checks(v: Verdict, text: str, features: dict[str, Any], motion: str, opts: RenderOptions,
                 rel_tol: float) -> None:
    """Mark each clause of the ``Check:`` step against ``motion``'s threshold checks for the record."""
    lang = opts.lang
    expected = {}
    for chk in threshold_checks(features, motion, opts):
        c = clause_of_check(chk, lang)
        expected[(c.term, c.rhs_shape)] = (chk, c)
    seen = set()
    for raw in split_clauses(text, lang):
        got = parse_clause(raw, lang)
        key = (got.term, got.rhs_shape)
        if key not in expected or key in seen:
            v.error("checks.unknown", f"{raw!r} is no check of {motion}")
            continue
        seen.add(key)
        chk, want = expected[key]
        if want.lhs_numbers:
            v.claim(numbers_match(got.lhs_numbers, want.lhs_numbers, rel_tol), f"number.{chk.quantity}",
                    f"{raw!r}: the record gives {chk.text()!r}")
        if want.rhs_numbers:
            v.claim(numbers_match(got.rhs_numbers, want.rhs_numbers, rel_tol), f"threshold.{chk.name}",
                    f"{raw!r}: the rule gives {chk.text()!r}")
        v.claim(got.rel == want.rel, f"comparison.{chk.name}", f"{raw!r} is false: {chk.text()!r}")
    for key, (chk, _) in expected.items():
        if key not in seen:
            v.error("checks.missing", f"{chk.text()!r} ({chk.name}) left out")


def check_rule(v: Verdict, m: re.Match[str], record: dict[str, Any], motion: str | None, lang: str) -> None:
    """Mark the rule line: facts, operation (rule table 1) and task (rule table 2, given the stated operation)."""
    context = record.get("context") or {}
    op = value_to_label(m.group("operation"), "operation")
    task = value_to_label(m.group("task"), "task")
    v.conclusion.update(operation=op, task=task)
    if motion is None or any(context.get(f) in (None, "unknown") for f in CONTEXT_VALUES):
        return  # a track with unknown context (classify): the rule's claims cannot be checked
    r = TEMPLATES[lang]["rationale"]
    want_facts = r["fact_sep"].join(rule_facts(context, motion, lang))
    v.claim(m.group("facts").strip() == want_facts, "rule.facts", f"{m.group('facts')!r}, the record gives "
            f"{want_facts!r}")
    want_op = operation_intent(context, motion)
    v.claim(op == want_op, "rule.operation", f"operation {op} for {motion}, the rule gives {want_op}")
    if op is not None:
        want_task = task_intent(bool(context["cooperative"]), motion, op)
        v.claim(task == want_task, "rule.task", f"task {task} for {motion}/{op}, the rule gives {want_task}")


def check_rationale(text: str, record: dict[str, Any], opts: RenderOptions, rel_tol: float = 0.01) -> Verdict:
    """Mark every claim of one generated reply (rationale + answer line) against ``record``.

    ``opts``: the render options the prompt was rendered with (units, precision, language): the true values are
    rendered with them, exactly as the prompts stage renders the training rationales.
    """
    lang = opts.lang
    r = TEMPLATES[lang]["rationale"]
    v = Verdict()
    steps, answer, unknown = split_steps(text, lang)
    features = record.get("features")
    needed = ("trend", "checks", "definition", "rule", "answer") if features is not None else ("definition", "rule",
                                                                                                 "answer")
    for step in needed:
        if step not in steps and not (step == "answer" and answer):
            v.error(f"missing.{step}", "no such line")
    for line in unknown:
        v.error("unknown_line", repr(line))
    motion = None
    if "definition" in steps:
        d = steps["definition"]
        motion = value_to_label(d.group("motion"), "motion")
        v.conclusion["motion"] = motion
        v.claim(d.group("definition").strip() == r["definitions"][motion], "definition",
                f"{d.group('definition')!r} is not the definition of {motion}")
    if features is not None and "trend" in steps:
        want = r["trend_short"][motion_trend(features)]
        got = steps["trend"].group("trend").strip()
        v.claim(got == want, "trend", f"{got!r}, the record's trend is {want!r}")
    if features is not None and "checks" in steps and motion is not None:
        check_checks(v, steps["checks"].group("checks"), features, motion, opts, rel_tol)
    if "rule" in steps:
        check_rule(v, steps["rule"], record, motion, lang)
    if answer is not None:
        parsed = parse_answer(answer, lang)
        for level in LEVELS:
            own = v.conclusion[level]
            if own is not None:
                v.claim(parsed[level] == own, "consistency", f"answer {level}={parsed[level]}, the rationale "
                        f"concludes {own}")
    return v


# ------------------------------------------------------------------------------------------- summary
def summarise(verdicts: list[dict[str, Any]], examples: list[dict[str, Any]] | None = None,
              n_examples: int = 3) -> dict[str, Any]:
    """Faithful and consistent rates, errors per claim type (count, rows) over :meth:`Verdict.to_dict` rows.

    ``examples``: per verdict, what to show of an unfaithful row (sample id, output); the first ``n_examples``
    unfaithful ones are kept with their notes.
    """
    n = len(verdicts)
    errors: Counter = Counter()
    rows_with: Counter = Counter()
    for d in verdicts:
        errors.update(d["errors"])
        rows_with.update(d["errors"].keys())
    shown = []
    for i, d in enumerate(verdicts):
        if not d["faithful"] and len(shown) < n_examples:
            shown.append({**((examples or [{}] * n)[i]), "errors": d["errors"], "notes": d["notes"][:8]})
    return {"n": n, "faithful": sum(d["faithful"] for d in verdicts),
            "faithful_rate": (sum(d["faithful"] for d in verdicts) / n) if n else None,
            "consistent_rate": (sum(d["consistent"] for d in verdicts) / n) if n else None,
            "claims": sum(d["claims"] for d in verdicts), "errors": dict(errors.most_common()),
            "rows_with_error": dict(rows_with.most_common()), "examples": shown}


__all__ = ["Clause", "Verdict", "check_rationale", "parse_clause", "split_clauses", "split_steps", "summarise",
           "template_regex"]

"""Render records (docs/CONTRACT.md) into prompts and responses; deterministic, pure functions.

Every perturbation the evaluation stage needs is a :class:`RenderOptions` field and is applied
by *re-rendering* the structured record (units, precision, notation, field order, option order,
instruction paraphrase, distractors, number of observation points), never by editing digits in
already rendered text.

Known information has 4 categories / 7 elements: own spacecraft (``orbit``), target (``size``,
``cooperative``, ``equipment``), environment (``lighting``, ``electromagnetic``) and orbital
motion (``motion``). Motion is a qualitative sentence derived from the features, a compact
numeric block, or both. Text-only records (``text`` set, no features) use their text instead.

Numbers: ``decimals`` is the precision of distances in metres; speeds get
``max(decimals, 2)`` digits in m/s (the speed thresholds are a few cm/s). In km (km/s) the same
absolute precision is kept (3 more digits), so a unit change never loses information; scientific
notation likewise keeps the absolute precision (mantissa digits = exponent + decimals). Times are
whole seconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from data_prep.oracle import DEFAULT_THRESHOLDS, Thresholds
from pipeline.core.answer import format_answer, is_answer_line
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS, display
from prompts_cot.templates import N_INSTRUCTION_VARIANTS, TEMPLATES

__all__ = [
    "CONTEXT_FIELDS",
    "Check",
    "FIELD_ORDER",
    "N_INSTRUCTION_VARIANTS",
    "RenderOptions",
    "assemble_prompt",
    "check_options",
    "human_rationale",
    "format_number",
    "known_information",
    "motion_trend",
    "options_from_dict",
    "options_to_dict",
    "rationale_steps",
    "render_prompt",
    "render_response",
    "rule_facts",
    "threshold_checks",
    "thresholds",
    "value_text",
]

#: Context keys of a record, in canonical order (own spacecraft, target x3, environment x2).
CONTEXT_FIELDS: tuple[str, ...] = ("orbit", "size", "cooperative", "equipment", "lighting", "electromagnetic")
#: Canonical order of the 7 known-information elements (``RenderOptions.field_order`` names).
FIELD_ORDER: tuple[str, ...] = CONTEXT_FIELDS + ("motion",)

PromptType = Literal["basic", "instruction", "cot", "compact"]


@dataclass(frozen=True)
class RenderOptions:
    """How to render one record. Defaults are the canonical (unperturbed) rendering."""

    # basic: question + known information; instruction: + every candidate per level; cot: + reasoning steps;
    # compact: only the known information with short field names (the answer line is the question)
    prompt_type: PromptType = "instruction"
    # language of prompt and response
    lang: Literal["en", "zh"] = "en"
    # orbital motion as a qualitative sentence, compact numbers, both, or compact (trend words, manoeuvres and
    # the unitless ratios the relabelling rules compare: model-friendly and short)
    motion_style: Literal["qualitative", "numeric", "both", "compact"] = "both"
    # distances in m|km and speeds in m/s|km/s (same absolute precision either way)
    units: Literal["m", "km"] = "m"
    # speeds in their own unit (null: follow ``units``); mixed units within one prompt, e.g. km with m/s
    speed_units: Literal["m/s", "km/s"] | None = None
    # digits after the point in base units (m, m/s)
    decimals: int = 1
    # write distances and speeds in scientific notation (absolute precision kept)
    scientific: bool = False
    # order of the known-information elements (names from FIELD_ORDER; omitted ones follow canonically)
    field_order: tuple[str, ...] | None = None
    # per level, the order in which candidates are listed (instruction/cot); a permutation of LABELS[level]
    option_order: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    # which paraphrase of the instruction/question (0 <= i < N_INSTRUCTION_VARIANTS[lang])
    instruction_variant: int = 0
    # extra irrelevant sentences appended to the known information
    distractors: tuple[str, ...] = ()
    # sampled observation points in the numeric motion block (0 = summary numbers only)
    max_obs_points: int = 8


def check_options(opts: RenderOptions) -> None:
    """Raise ValueError for options that cannot be rendered."""
    if opts.prompt_type not in ("basic", "instruction", "cot", "compact"):
        raise ValueError(f"prompt_type {opts.prompt_type!r} is not basic|instruction|cot|compact")
    if opts.lang not in TEMPLATES:
        raise ValueError(f"lang {opts.lang!r} is not one of {sorted(TEMPLATES)}")
    if opts.motion_style not in ("qualitative", "numeric", "both", "compact"):
        raise ValueError(f"motion_style {opts.motion_style!r} is not qualitative|numeric|both|compact")
    if opts.units not in ("m", "km"):
        raise ValueError(f"units {opts.units!r} is not m|km")
    if opts.speed_units not in (None, "m/s", "km/s"):
        raise ValueError(f"speed_units {opts.speed_units!r} is not m/s|km/s|null")
    if opts.decimals < 0 or opts.max_obs_points < 0:
        raise ValueError("decimals and max_obs_points must be >= 0")
    if not 0 <= opts.instruction_variant < N_INSTRUCTION_VARIANTS[opts.lang]:
        raise ValueError(
            f"instruction_variant {opts.instruction_variant} outside "
            f"0..{N_INSTRUCTION_VARIANTS[opts.lang] - 1} for lang {opts.lang}"
        )
    if opts.field_order is not None:
        unknown = [f for f in opts.field_order if f not in FIELD_ORDER]
        if unknown or len(set(opts.field_order)) != len(opts.field_order):
            raise ValueError(f"field_order {opts.field_order!r}: names must be distinct, from {FIELD_ORDER}")
    for level, labels in opts.option_order or ():
        if level not in LABELS or sorted(labels) != sorted(LABELS[level]):
            raise ValueError(f"option_order for {level!r} must be a permutation of {LABELS.get(level)}")


def options_to_dict(opts: RenderOptions) -> dict[str, Any]:
    """JSON-able dict of the options (tuples become lists), as stored in a row's ``render``."""
    d = dataclasses.asdict(opts)
    if d["speed_units"] is None:
        del d["speed_units"]  # the default: rows rendered before the key existed stay byte-identical
    d["field_order"] = list(opts.field_order) if opts.field_order is not None else None
    d["option_order"] = [[lvl, list(labs)] for lvl, labs in opts.option_order] if opts.option_order else None
    d["distractors"] = list(opts.distractors)
    return d


def options_from_dict(d: dict[str, Any]) -> RenderOptions:
    """Inverse of :func:`options_to_dict` (lists back to tuples)."""
    d = dict(d)
    if d.get("field_order") is not None:
        d["field_order"] = tuple(d["field_order"])
    if d.get("option_order"):
        d["option_order"] = tuple((lvl, tuple(labs)) for lvl, labs in d["option_order"])
    d["distractors"] = tuple(d.get("distractors") or ())
    return RenderOptions(**d)


# --------------------------------------------------------------------------- thresholds


def thresholds() -> Thresholds:
    """The motion relabelling thresholds, so that the numbers quoted in rationales and the
    qualitative clauses are exactly the ones ``data_prep.oracle.relabel_motion`` applies."""
    return DEFAULT_THRESHOLDS


# --------------------------------------------------------------------------- numbers


def format_number(value: float, decimals: int, scientific: bool) -> str:
    """Fixed or scientific rendering with ``decimals`` digits after the point in the value's unit.

    Scientific notation keeps the same absolute precision: mantissa digits = exponent + decimals.
    Negative zero is written as zero.
    """
    if value is None or not math.isfinite(float(value)):
        return "nan"
    value = float(value)
    if scientific:
        exp = 0 if value == 0 else math.floor(math.log10(abs(value)))
        text = f"{value:.{max(0, exp + decimals)}e}"
    else:
        text = f"{value:.{decimals}f}"
    if float(text) == 0 and text.startswith("-"):
        text = text[1:]
    return text


#: Speeds never get fewer digits than this (in m/s): the rendezvous / hovering speed thresholds
#: are a few cm/s, and a coarser rendering would hide the number that decides the class.
MIN_SPEED_DECIMALS = 2


def _speed_unit(opts: RenderOptions) -> str:
    """The speed unit shown: ``speed_units``, else the one that goes with ``units``."""
    return opts.speed_units or ("km/s" if opts.units == "km" else "m/s")


def _unit_scale(opts: RenderOptions) -> tuple[float, int, str, str]:
    """(factor from metres, distance decimals in the shown unit, distance unit, speed unit)."""
    if opts.units == "km":
        return 1e-3, opts.decimals + 3, "km", _speed_unit(opts)
    return 1.0, opts.decimals, "m", _speed_unit(opts)


def _dist(value_m: float | None, opts: RenderOptions) -> str:
    factor, dec, _, _ = _unit_scale(opts)
    return format_number(None if value_m is None else float(value_m) * factor, dec, opts.scientific)


def _speed(value_mps: float | None, opts: RenderOptions) -> str:
    km = _speed_unit(opts) == "km/s"
    dec = max(opts.decimals, MIN_SPEED_DECIMALS) + (3 if km else 0)
    return format_number(None if value_mps is None else float(value_mps) * (1e-3 if km else 1.0), dec, opts.scientific)


def _time(value_s: float) -> str:
    return "nan" if value_s is None or not math.isfinite(float(value_s)) else f"{float(value_s):.0f}"


# --------------------------------------------------------------------------- motion

#: ``features.range_trend`` values (data_prep.features.RANGE_TRENDS) -> trend-clause keys.
_TREND_KEYS: dict[str, str] = {
    "constant": "constant",
    "decreasing": "approaching",
    "increasing": "receding",
    "decreasing_then_increasing": "approach_then_recede",
    "increasing_then_decreasing": "recede_then_approach",
}


def _trend_from_numbers(f: dict[str, Any]) -> str:
    """Trend key from the range numbers alone, for an unknown ``range_trend`` value."""
    r0, rmin, rf = float(f["initial_range_m"]), float(f["min_range_m"]), float(f["final_range_m"])
    tol = 0.05 * max(r0, rf, 1e-9)
    if max(r0, rf) - rmin <= tol:
        return "constant"
    if rf <= rmin + tol:
        return "approaching"
    if r0 <= rmin + tol:
        return "receding"
    return "approach_then_recede"


def motion_trend(features: dict[str, Any], th: Thresholds | None = None) -> str:
    """Key of the qualitative trend clause (``TEMPLATES[lang]["motion"]["trend"]``).

    ``range_trend`` decides the shape; a closing track that ends inside the contact range while
    still moving, or inside the rendezvous range at rest, gets the more specific clause (the
    relabeller's thresholds).
    """
    key = _TREND_KEYS.get(str(features.get("range_trend"))) or _trend_from_numbers(features)
    if key in ("approaching", "constant"):
        end = end_state(features, th)
        if end == "rest":
            return "approaching_stops" if key == "approaching" else key
        if end == "contact":
            return "approaching_contact"
    return key


def end_state(features: dict[str, Any], th: Thresholds | None = None) -> str | None:
    """How the track ends by the relabeller's thresholds: ``rest`` (within the rendezvous range, at most the
    rendezvous speed), ``contact`` (within the contact range, faster), or None."""
    th = th or thresholds()
    rf, vf = float(features["final_range_m"]), float(features["final_speed_mps"])
    if rf <= th.rendezvous_range_m and vf <= th.rendezvous_speed_mps:
        return "rest"
    if rf <= th.contact_range_m and vf > th.rendezvous_speed_mps:
        return "contact"
    return None


def qualitative_motion(features: dict[str, Any], lang: str, clauses: bool = True) -> str:
    """The paper-style sentence, no numbers: trend, then (``clauses``) manoeuvres and keep-out entry.

    With the numeric block alongside (style ``both``) the clauses are left out: the numbers say it.
    """
    m = TEMPLATES[lang]["motion"]
    text = m["trend"][motion_trend(features)]
    if clauses:
        n = int(features.get("n_burns") or 0)
        text += m["burns"].format(n=n) if n > 0 else m["no_burns"]
        if features.get("entered_keepout"):
            text += m["keepout"]
    return text + m["end"]


def _sample_indices(n: int, k: int) -> list[int]:
    """Up to ``k`` evenly spaced indices of ``n`` samples, first and last included."""
    if k <= 0 or n <= 0:
        return []
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def numeric_motion(record: dict[str, Any], opts: RenderOptions) -> str:
    """Compact numbers: sampled (t, range, range-rate) points and the feature summary."""
    m = TEMPLATES[opts.lang]["motion"]
    _, _, du, vu = _unit_scale(opts)
    f = record["features"]
    obs = record.get("observation") or {}
    text = ""
    t, r = obs.get("t_s") or [], obs.get("range_m") or []
    rr = obs.get("range_rate_mps") or [None] * len(r)
    idx = _sample_indices(min(len(t), len(r)), opts.max_obs_points)
    if idx:
        points = m["point_sep"].join(
            m["point"].format(t=_time(t[i]), r=_dist(r[i], opts), rr=_speed(rr[i] if i < len(rr) else None, opts))
            for i in idx
        )
        text += m["samples"].format(t_unit="s", d_unit=du, v_unit=vu, points=points)
    ext = list(f.get("extent_m") or [float("nan")] * 3)
    nb = int(f.get("n_burns") or 0)
    text += m["summary"].format(
        r0=_dist(f["initial_range_m"], opts),
        rmin=_dist(f["min_range_m"], opts),
        tmin=_time(f["t_min_range_s"]),
        t_unit="s",
        rf=_dist(f["final_range_m"], opts),
        vf=_speed(f["final_speed_mps"], opts),
        ex=_dist(ext[0], opts),
        ey=_dist(ext[1], opts),
        ez=_dist(ext[2], opts),
        jumps=m["jumps"].format(nb=nb, dv=_speed(f.get("max_dv_mps", 0.0), opts)) if nb else m["no_jumps"],
        keepout=m["keepout_in"] if f.get("entered_keepout") else "",
        d_unit=du,
        v_unit=vu,
    )
    return text.strip()


def _ratio_value(num: float, den: float) -> str:
    """``num / den`` with two decimals (a zero denominator is guarded, as in the relabelling rules)."""
    return _ratio_text(float(num) / max(float(den), 1e-9))


def radial_grade(radial_frac: float, th: Thresholds | None = None) -> str:
    """``small`` / ``medium`` / ``large``: radial extent / closest range against the relabelling rules' flyby
    (at most ``flyby_max_radial_frac``) and fly-around (at least ``fly_around_min_radial_frac``) bounds."""
    th = th or thresholds()
    if radial_frac <= th.flyby_max_radial_frac:
        return "small"
    return "large" if radial_frac >= th.fly_around_min_radial_frac else "medium"


def compact_motion(features: dict[str, Any], opts: RenderOptions) -> str:
    """The model-friendly motion line: trend words (with how the track ends, whatever the trend; for a
    closing-and-opening arc that does not end at rest or contact, its path: passing by / around the station
    by the radial ratio), manoeuvre count, then the closest range, the three unitless ratios the relabelling
    rules compare (start/closest, end/closest, radial extent/closest) and the final speed, e.g. ``closing,
    then opening, passing by, no burns; min 3025 m; start/min 2.75; end/min 2.71; radial/min 0.02; speed
    1.60 m/s``.

    The ratios are unitless (units and notation perturbations leave them as they are); distances and speeds
    follow ``units``/``decimals``/``scientific`` like every other rendering.
    """
    t = TEMPLATES[opts.lang]
    c = t["compact"]
    _, _, du, vu = _unit_scale(opts)
    rmin = float(features["min_range_m"])
    n = int(features.get("n_burns") or 0)
    burns = c["burns"][str(n)] if str(n) in c["burns"] else c["burns"]["n"].format(n=n)
    ext = list(features.get("extent_m") or [float("nan")] * 3)
    key = motion_trend(features)
    trend = t["rationale"]["trend_short"][key]
    end = end_state(features)
    if end is not None and key not in ("approaching_stops", "approaching_contact"):
        trend += c["ends"][end]
    elif key in ("approach_then_recede", "recede_then_approach"):
        trend += c["path"][radial_grade(float(ext[0]) / max(rmin, 1e-9))]
    return c["motion"].format(
        trend=trend,
        burns=burns,
        rmin=_dist(rmin, opts),
        a=_ratio_value(features["initial_range_m"], rmin),
        b=_ratio_value(features["final_range_m"], rmin),
        x=_ratio_value(ext[0], rmin),
        vf=_speed(features["final_speed_mps"], opts),
        d_unit=du,
        v_unit=vu,
        keepout=c["keepout"] if features.get("entered_keepout") else "",
    )


def motion_text(record: dict[str, Any], opts: RenderOptions) -> str:
    """The orbital-motion element in the chosen style."""
    if opts.motion_style == "compact":
        return compact_motion(record["features"], opts)
    parts = []
    if opts.motion_style in ("qualitative", "both"):
        parts.append(qualitative_motion(record["features"], opts.lang, clauses=opts.motion_style == "qualitative"))
    if opts.motion_style in ("numeric", "both"):
        parts.append(numeric_motion(record, opts))
    return (" " if opts.lang == "en" else "").join(parts)


# --------------------------------------------------------------------------- prompt


def value_text(field: str, value: Any, lang: str, compact: bool = False) -> str:
    """Display text of a context value (the compact prompt's short form where it has one); unknown values
    fall back to the raw value."""
    short = TEMPLATES[lang]["compact"]["values"].get(field, {}) if compact else {}
    if str(value) in short:
        return short[str(value)]
    table = TEMPLATES[lang]["values"][field]
    key = str(value).lower() if isinstance(value, bool) else str(value)
    if key in table:
        return table[key]
    return table.get("_default", "{value}").format(value=str(value).replace("_", " "))


def _ordered_fields(opts: RenderOptions) -> list[str]:
    first = list(opts.field_order or ())
    return first + [f for f in FIELD_ORDER if f not in first]


def known_information(record: dict[str, Any], opts: RenderOptions) -> str:
    """The known-information block (header, 7 element lines or the record's text, distractors).

    Raises KeyError naming the missing context key / feature for incomplete simulated records.
    """
    t = TEMPLATES[opts.lang]
    compact = opts.prompt_type == "compact"
    fields = t["compact"]["fields"] if compact else t["fields"]
    lines = [] if compact else [t["known_header"]]
    if record.get("features") is None:
        lines.append(str(record["text"]).strip())
    else:
        context = record.get("context") or {}
        for field in _ordered_fields(opts):
            if field == "motion":
                value = motion_text(record, opts)
            else:
                if field not in context:
                    raise KeyError(f"context.{field}")
                value = value_text(field, context[field], opts.lang, compact)
            lines.append(t["line"].format(field=fields[field], value=value))
    lines.extend(t["distractor_line"].format(text=d) for d in opts.distractors)
    return "\n".join(lines)


def _option_labels(level: str, opts: RenderOptions) -> tuple[str, ...]:
    return dict(opts.option_order or ()).get(level, LABELS[level])


def options_block(opts: RenderOptions) -> str:
    """Every candidate of every level, in display form and the requested order."""
    t = TEMPLATES[opts.lang]
    lines = [
        t["option_line"].format(
            level=LEVEL_DISPLAY[opts.lang][level],
            labels=t["option_sep"].join(display(lab, opts.lang) for lab in _option_labels(level, opts)),
        )
        for level in LEVELS
    ]
    return t["options"].format(lines="\n".join(lines))


def assemble_prompt(known: str, opts: RenderOptions) -> str:
    """Wrap a known-information block into the full prompt of ``opts.prompt_type``."""
    t = TEMPLATES[opts.lang]
    i = opts.instruction_variant
    if opts.prompt_type == "compact":
        return known
    if opts.prompt_type == "basic":
        return f"{known}\n{t['basic']['question'][i]}"
    parts = [t["instruction"]["instruction"][i], known, options_block(opts)]
    if opts.prompt_type == "cot":
        parts.append(t["cot"]["steps"])
    parts.append(t["format_hint"])
    return "\n".join(parts)


def render_prompt(record: dict[str, Any], opts: RenderOptions) -> str:
    """The prompt for ``record`` (deterministic in record and options)."""
    check_options(opts)
    return assemble_prompt(known_information(record, opts), opts)


# --------------------------------------------------------------------------- response


_NEGATE = {"<=": ">", ">": "<=", ">=": "<", "<": ">="}
_HOLDS = {"<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Check:
    """One threshold check of a CoT rationale's ``Check:`` step, as the relabelling rule states it.

    ``text()`` is what the rationale writes: ``"{lhs} {relation} {rhs}"`` with the rule's relation flipped when it
    does not hold for the record (rationales stay true). ``rel`` None is a bare fact (``no burns``).
    """

    # which rule threshold: hover_extent, keepout, flyby_ratios, approach_end, ... (per-claim error counts)
    name: str
    # the terms key of the quantity on the left: final, speed, start, min, burns, extent, radial, ratios
    quantity: str
    lhs: str
    rel: str | None
    rhs: str
    holds: bool = True

    @property
    def relation(self) -> str | None:
        """The relation the rationale writes: the rule's when it holds, else its negation."""
        if self.rel is None:
            return None
        return self.rel if self.holds else _NEGATE[self.rel]

    def text(self) -> str:
        return self.lhs if self.rel is None else f"{self.lhs} {self.relation} {self.rhs}"


def _check(name: str, quantity: str, lhs: str, lval: float, rel: str, rhs: str, rval: float) -> Check:
    """A :class:`Check` of ``lval rel rval`` (whether it holds decides the written relation)."""
    return Check(name, quantity, lhs, rel, rhs, bool(_HOLDS[rel](lval, rval)))


def _ratio_text(x: float) -> str:
    return f"{x:.2f}"


def threshold_checks(f: dict[str, Any], motion: str, opts: RenderOptions, th: Thresholds | None = None) -> list[Check]:
    """The key numbers of ``motion``'s relabelling rule (data_prep.oracle) against its thresholds.

    The ``Check:`` step of the rationale is ``check_sep.join(c.text() for c in threshold_checks(...))``; the
    faithfulness checker (eval.faithfulness) compares a generated step with these claims.
    """
    th = th or thresholds()
    w = TEMPLATES[opts.lang]["rationale"]["terms"]
    _, _, du, vu = _unit_scale(opts)
    r0, rmin, rf = float(f["initial_range_m"]), float(f["min_range_m"]), float(f["final_range_m"])
    vf, nb = float(f["final_speed_mps"]), int(f.get("n_burns") or 0)
    ext = [float(e) for e in (f.get("extent_m") or [0.0, 0.0, 0.0])]

    def dist(term: str, v: float | None = None) -> str:
        """``"final 2550 m"``; the bare term when ``v`` is None (its number was already quoted)."""
        if v is None:
            return w[term]
        return f"{w[term]} {_dist(v, opts)} {du}" if term else f"{_dist(v, opts)} {du}"

    def speed(v: float) -> str:
        return f"{_speed(v, opts)} {vu}"

    def pct(frac: float) -> str:
        return w["pct_of_start"].format(pct=f"{100 * frac:g}", r0=_dist(r0, opts), d_unit=du)

    burns = f"{w['burns']} {nb}"
    no_burns = (_check("no_burns", "burns", burns, nb, "<=", "0", 0) if nb
                else Check("no_burns", "burns", w["no_burns"], None, ""))
    speed_lhs = f"{w['speed']} {_speed(vf, opts)} {vu}"
    if motion == "hovering":
        norm = math.sqrt(sum(e * e for e in ext))
        return [
            _check("hover_extent", "extent", dist("extent", norm), norm, "<=", pct(th.hover_range_tolerance),
                   th.hover_range_tolerance * r0),
            _check("hover_speed", "speed", speed_lhs, vf, "<=", speed(th.hover_speed_mps), th.hover_speed_mps),
        ]
    if motion == "rendezvous":
        start_min = th.rendezvous_min_start_factor * th.rendezvous_range_m
        return [
            _check("rendezvous_final", "final", dist("final", rf), rf, "<=", dist("", th.rendezvous_range_m),
                   th.rendezvous_range_m),
            _check("rendezvous_speed", "speed", speed_lhs, vf, "<=", speed(th.rendezvous_speed_mps),
                   th.rendezvous_speed_mps),
            _check("rendezvous_start", "start", dist("start", r0), r0, ">=", dist("", start_min), start_min),
        ]
    if motion == "collision":
        return [
            _check("contact_final", "final", dist("final", rf), rf, "<=", dist("", th.contact_range_m),
                   th.contact_range_m),
            _check("contact_speed", "speed", speed_lhs, vf, ">", speed(th.rendezvous_speed_mps),
                   th.rendezvous_speed_mps),
        ]
    if motion == "random":
        return [_check("random_burns", "burns", burns, nb, ">=", str(th.random_min_burns), th.random_min_burns)]
    if motion == "retreat":
        closing = 1.0 - th.retreat_min_closing_frac
        opening = 1.0 + th.retreat_min_opening_frac
        return [
            _check("retreat_burns", "burns", burns, nb, ">=", "1", 1),
            _check("retreat_closing", "min", dist("min", rmin), rmin, "<=", pct(closing), closing * r0),
            _check("retreat_opening", "final", dist("final", rf), rf, ">=", f"{opening:g}{w['x_min']}",
                   opening * rmin),
        ]
    if motion in ("flyby", "fly_around"):
        a, b = r0 / max(rmin, 1e-9), rf / max(rmin, 1e-9)
        ratios = f"{w['ratios']} {_ratio_text(a)}/{_ratio_text(b)}"
        if motion == "flyby":  # both ratios at least the threshold, nearly straight pass
            ratio_check = _check("flyby_ratios", "ratios", ratios, min(a, b), ">=", f"{th.flyby_min_range_ratio:g}",
                                 th.flyby_min_range_ratio)
            xrel, xfrac = "<=", th.flyby_max_radial_frac
        else:  # both ratios within the band, swings round radially
            ratio_check = _check("fly_around_ratios", "ratios", ratios, max(a, b), "<=",
                                 f"{th.fly_around_max_range_ratio:g}", th.fly_around_max_range_ratio)
            xrel, xfrac = ">=", th.fly_around_min_radial_frac
        return [
            no_burns,
            _check("keepout", "min", dist("min", rmin), rmin, ">",
                   f"{w['keepout']} {_dist(th.keepout_radius_m, opts)} {du}", th.keepout_radius_m),
            ratio_check,
            _check(f"{motion}_radial", "radial", dist("radial", ext[0]), ext[0], xrel, f"{xfrac:g}{w['x_min']}",
                   xfrac * rmin),
        ]
    if motion == "approach":
        closing = 1.0 - th.approach_min_closing_frac
        end_tol = 1.0 + th.approach_end_tolerance
        return [
            no_burns,
            _check("approach_closing", "final", dist("final", rf), rf, "<=", pct(closing), closing * r0),
            _check("approach_end", "final", dist("final"), rf, "<=", f"{end_tol:g}{w['x_min']}", end_tol * rmin),
            _check("approach_speed", "speed", speed_lhs, vf, ">", speed(th.hover_speed_mps), th.hover_speed_mps),
            _check("approach_not_arrived", "final", dist("final"), rf, ">", dist("", th.rendezvous_range_m),
                   th.rendezvous_range_m),
        ]
    return [Check("burns", "burns", burns, None, "")]


def rule_facts(context: dict[str, Any], motion: str, lang: str) -> list[str]:
    """Cooperativeness and equipment, plus the one context element a rule row may hinge on
    (camera -> lighting, antenna -> electromagnetic, arm at rendezvous -> size; data_prep.rules)."""
    r = TEMPLATES[lang]["rationale"]
    equipment = context.get("equipment")
    facts = [
        r["coop"][str(bool(context.get("cooperative"))).lower()],
        r["equipment_none"] if equipment == "none" else value_text("equipment", equipment, lang),
    ]
    extra = {"camera": "lighting", "antenna": "electromagnetic"}.get(str(equipment))
    if equipment == "robotic_arm" and motion == "rendezvous":
        extra = "size"
    if extra and extra in context:
        facts.append(r["fact"].format(field=r["fact_fields"][extra], value=value_text(extra, context[extra], lang)))
    return facts


def rationale_steps(record: dict[str, Any], opts: RenderOptions) -> list[str]:
    """The CoT rationale derived from the record: trend -> key numbers vs thresholds ->
    definition of the chosen motion class -> operation/task by the rule. No answer line.

    Text-only records (no features) get the definition and rule steps only.
    """
    lang = opts.lang
    r = TEMPLATES[lang]["rationale"]
    labels = record["labels"]
    motion = labels["motion"]
    f = record.get("features")
    steps = []
    if f is not None:
        th = thresholds()
        steps.append(r["trend"].format(trend=r["trend_short"][motion_trend(f, th)]))
        checks = threshold_checks(f, motion, opts, th)
        steps.append(r["numbers"].format(checks=r["check_sep"].join(c.text() for c in checks)))
    steps.append(r["definition"].format(motion=display(motion, lang), definition=r["definitions"][motion]))
    context = record.get("context") or {}
    if context.get("cooperative") is not None and context.get("equipment") is not None:
        m, op, task = (display(labels[k], lang) for k in LEVELS)
        steps.append(
            r["rule"].format(
                facts=r["fact_sep"].join(rule_facts(context, motion, lang)), motion=m, operation=op, task=task
            )
        )
    return steps


def human_rationale(text: str) -> list[str]:
    """A reviewer's rationale as lines, minus any answer line they wrote (ours is appended)."""
    return [ln.rstrip() for ln in str(text).strip().splitlines() if ln.strip() and not is_answer_line(ln)]


def render_response(record: dict[str, Any], opts: RenderOptions, cot: bool) -> str:
    """The target text: the answer line, preceded by the rationale when ``cot``.

    A human ``rationale`` on the record is used verbatim instead of the derived one.
    """
    answer = format_answer(record["labels"], opts.lang)
    if not cot:
        return answer
    steps = human_rationale(record["rationale"]) if record.get("rationale") else rationale_steps(record, opts)
    return "\n".join([*steps, answer])

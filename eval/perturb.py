"""Deterministic input perturbations for robustness evaluation.

Perturbations act on the **structured record** or on the :class:`prompts_cot.render.RenderOptions`,
and the prompt is then re-rendered by ``prompts_cot.render.render_prompt`` -- digit strings are
never edited in text. Only ``typos`` edits the rendered text, and it touches letters only (never
digits, label names, level names or the answer keyword: HELM's convention).

Every perturbation is a pure function of ``(record, options, name, severity, seed)``: its random
generator is seeded from a hash of ``(name, severity, seed, sample_id)``, so the same key always
gives the same text and a different seed a different one.

Severities are integer levels (0 = clean). Each perturbation declares, per level, whether the gold
label may legitimately change (``label_may_change``: e.g. 30x sensor noise or keeping half of the
observation window); those levels are excluded from invariance statistics. Records without an
``observation`` (imported free-text data) get only the text-level perturbations.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS

# ------------------------------------------------------------------------------------ distractors
#: Plausible but irrelevant sentences (nothing in them bears on the target's intent).
DISTRACTORS: dict[str, tuple[str, ...]] = {
    "en": (
        "The station's crew completed a routine inventory of the galley this morning.",
        "Ground control scheduled a software update for the onboard laptops next week.",
        "A solar array on the far side of the station is being inspected for surface scratches.",
        "The station's water recycling system is operating at nominal efficiency.",
        "A cargo manifest for the next resupply flight was uplinked yesterday.",
        "Telemetry from the exercise treadmill shows normal vibration levels.",
        "The crew's sleep schedule was shifted by one hour for a public outreach event.",
        "Cabin air temperature has been stable within the comfort band all day.",
        "A plant-growth study in the laboratory module reached its second phase.",
        "The station's amateur radio contact with a school is planned for tomorrow.",
    ),
    "zh": (
        "今天上午，空间站乘组完成了厨房物资的例行清点。",
        "地面控制中心安排下周为舱内笔记本电脑升级软件。",
        "空间站另一侧的一块太阳翼正在检查表面划痕。",
        "空间站水循环系统运行效率正常。",
        "下一次货运补给飞行的货物清单已于昨天上传。",
        "跑步机遥测数据显示振动水平正常。",
        "为配合科普活动，乘组作息时间调整了一小时。",
        "舱内空气温度全天稳定在舒适范围内。",
        "生物舱中的植物生长研究进入第二阶段。",
        "空间站与一所学校的业余无线电通联计划于明天进行。",
    ),
}

# Nominal sensor noise = the simulator's defaults (data_prep.sensor.SensorNoise), times the severity factor.
RANGE_SIGMA_FLOOR_M = 0.1
RANGE_SIGMA_FRACTION = 0.005
ANGLE_SIGMA_DEG = 0.02
RANGE_RATE_SIGMA_MPS = 0.003

_KEYBOARD = {
    "a": "qwsz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm",
    "o": "iklp", "p": "ol", "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji",
    "v": "cfgb", "w": "qase", "x": "zsdc", "y": "tghu", "z": "asx",
}


@dataclasses.dataclass(frozen=True)
class PerturbSpec:
    """One perturbation family.

    Attributes:
        name: config/report name.
        levels: severity level (1..K) -> the parameter that level uses (noise multiple, fraction, ...).
        label_may_change: levels at which the gold label may legitimately change.
        needs_observation: only applicable to records with an ``observation`` (numbers to perturb).
        description: one line for reports.
    """

    name: str
    levels: dict[int, Any]
    label_may_change: frozenset[int]
    needs_observation: bool
    description: str


@dataclasses.dataclass
class Perturbed:
    """A perturbed example: the edited record and options, and the re-rendered (or edited) prompt."""

    record: dict[str, Any]
    options: Any
    prompt: str
    label_may_change: bool
    # motion label the physics oracle (data_prep.oracle.relabel_motion) gives the perturbed features;
    # None when not checked (text-level perturbation, or no features)
    oracle_motion: str | None = None


SPECS: dict[str, PerturbSpec] = {
    s.name: s
    for s in (
        PerturbSpec("noise", {1: 0.5, 2: 1.0, 3: 2.0, 4: 5.0}, frozenset({4}), True,
                    "extra Gaussian sensor noise (0.5/1/2/5 x nominal sigma on range, angles, range-rate); "
                    "features recomputed"),
        PerturbSpec("dropout", {1: ("decimate", 2), 2: ("random", 0.1), 3: ("gap", 0.3)}, frozenset({3}), True,
                    "every 2nd sample dropped, 10% random samples dropped, or one contiguous 30% gap; "
                    "features recomputed"),
        PerturbSpec("truncate", {1: 0.9, 2: 0.75, 3: 0.5}, frozenset({3}), True,
                    "keep only the first fraction of the observation window; features recomputed"),
        PerturbSpec("units", {1: "km"}, frozenset(), True, "distances in km and speeds in km/s"),
        PerturbSpec("precision", {1: {"decimals": 0}, 2: {"decimals": 3}, 3: {"scientific": True}}, frozenset(), True,
                    "0 / 3 decimals, or scientific notation"),
        PerturbSpec("field_order", {1: "shuffle"}, frozenset(), False, "context fields in a shuffled order"),
        PerturbSpec("distractors", {1: 1, 2: 2, 3: 4}, frozenset(), False, "1/2/4 irrelevant sentences added"),
        PerturbSpec("typos", {1: 0.02, 2: 0.05, 3: 0.1}, frozenset(), False,
                    "letter typos in 2/5/10% of words (never digits, labels, level names)"),
        PerturbSpec("instruction", {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, frozenset(), False,
                    "paraphrased instruction (variant offset 1..5)"),
        PerturbSpec("option_order", {1: "shuffle"}, frozenset(), False,
                    "answer options shuffled per level (instruction/CoT prompts)"),
        PerturbSpec("mixed_units", {1: ("km", "m/s"), 2: ("m", "km/s")}, frozenset(), True,
                    "mixed units in one prompt: distances in km with speeds in m/s, or metres with km/s"),
        PerturbSpec("casing", {1: "random"}, frozenset(), False,
                    "keys and values lower/upper/title-cased, another key-value separator, uneven spacing"),
        PerturbSpec("key_alias", {1: "train"}, frozenset(), False,
                    "field names replaced by aliases (EM -> RF environment, Motion -> Trajectory, ...)"),
        PerturbSpec("synonyms", {1: "train"}, frozenset(), False,
                    "trend words, manoeuvre and number names, values replaced by everyday synonyms "
                    "(closing -> converging, burns -> thruster firings)"),
        PerturbSpec("synonyms_unseen", {1: "heldout"}, frozenset(), False,
                    "the same, from a held-out word list no training row ever uses"),
        PerturbSpec("prose", {1: "sentence"}, frozenset(), False,
                    "the known information written as one sentence instead of key: value lines"),
        PerturbSpec("language", {1: "other"}, frozenset(), False,
                    "the prompt in the other language (en <-> zh), labels unchanged"),
    )
}


#: Perturbations that edit the observation (features recomputed, label checked by the physics oracle).
RECORD_LEVEL = frozenset({"noise", "dropout", "truncate"})
#: Perturbations that rewrite the rendered text, in the order they compose (prose first: it replaces the
#: key: value lines, which the others then rewrite; typos last, on the final words).
TEXT_LEVEL = ("prose", "synonyms", "synonyms_unseen", "key_alias", "casing", "typos")


# ------------------------------------------------------------------------------------------ helpers
def keyed_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded from sha256 of ``"|".join(parts)`` (stable across runs and machines)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def rng_for(name: str, severity: int, seed: int, sample_id: str) -> np.random.Generator:
    """The Generator of one perturbation draw: :func:`keyed_rng` of ``(name, severity, seed, sample_id)``."""
    return keyed_rng(name, severity, seed, sample_id)


def label_may_change(name: str, severity: int) -> bool:
    """Whether ``name`` at ``severity`` may legitimately change the gold label."""
    return severity in get_spec(name).label_may_change


def get_spec(name: str) -> PerturbSpec:
    """The :class:`PerturbSpec` called ``name`` (ValueError listing the known ones)."""
    if name not in SPECS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def is_applicable(name: str, record: dict[str, Any], options: Any) -> bool:
    """Whether the perturbation can act on this record/prompt type."""
    spec = get_spec(name)
    if spec.needs_observation and not record.get("observation"):
        return False
    if name == "option_order" and getattr(options, "prompt_type", "instruction") in ("basic", "compact"):
        return False  # basic and compact prompts list no options
    if name == "instruction" and getattr(options, "prompt_type", "instruction") == "compact":
        return False  # compact prompts have no instruction to paraphrase
    if name in ("field_order", "prose", "key_alias") and not record.get("features"):
        return False  # text-only records render their free text, which has no fields to reorder or rename
    return True


def recompute_features(record: dict[str, Any]) -> dict[str, Any]:
    """Recompute ``features`` from the (perturbed) ``observation`` with the data_prep function."""
    from data_prep.features import compute_features

    record["features"] = compute_features(record["observation"])
    return record


def _obs_arrays(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=float) for k, v in obs.items() if isinstance(v, list)}


def _select(obs: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """Observation with only the time indices in ``keep`` (sorted int array)."""
    out = dict(obs)
    for k, v in obs.items():
        if isinstance(v, list):
            out[k] = [v[i] for i in keep]
    return out


# ------------------------------------------------------------------------------- record perturbers
def add_noise(obs: dict[str, Any], factor: float, rng: np.random.Generator) -> dict[str, Any]:
    """Add N(0, (factor·σ)²) to range (σ = max(0.1 m, 0.5 % of range)), az/el (0.02°) and range-rate (3 mm/s)."""
    arr = _obs_arrays(obs)
    out = dict(obs)
    if "range_m" in arr:
        r = arr["range_m"]
        sigma = factor * np.maximum(RANGE_SIGMA_FLOOR_M, RANGE_SIGMA_FRACTION * np.abs(r))
        out["range_m"] = np.maximum(r + rng.normal(0.0, 1.0, r.shape) * sigma, 0.0).tolist()
    for key in ("az_deg", "el_deg"):
        if key in arr:
            out[key] = (arr[key] + rng.normal(0.0, factor * ANGLE_SIGMA_DEG, arr[key].shape)).tolist()
    if "el_deg" in out:
        out["el_deg"] = np.clip(out["el_deg"], -90.0, 90.0).tolist()
    if "range_rate_mps" in arr:
        rr = arr["range_rate_mps"]
        out["range_rate_mps"] = (rr + rng.normal(0.0, factor * RANGE_RATE_SIGMA_MPS, rr.shape)).tolist()
    return out


def drop_samples(obs: dict[str, Any], param: tuple[str, float], rng: np.random.Generator) -> dict[str, Any]:
    """Keep every k-th sample (``("decimate", k)``: the cadence stays uniform), or drop a random fraction or one gap.

    Random drops and gaps keep the first and last samples and make the cadence irregular.
    """
    kind, frac = param
    n = len(obs["t_s"])
    if n <= 3:
        return dict(obs)
    if kind == "decimate":
        keep = np.arange(0, n, int(frac))
        return _select(obs, keep) if keep.size >= 3 else dict(obs)
    inner = np.arange(1, n - 1)
    n_drop = min(int(round(frac * n)), n - 3)
    if n_drop <= 0:
        return dict(obs)
    if kind == "random":
        dropped = rng.choice(inner, size=n_drop, replace=False)
    elif kind == "gap":
        start = int(rng.integers(1, n - 1 - n_drop + 1))
        dropped = np.arange(start, start + n_drop)
    else:
        raise ValueError(f"unknown dropout kind {kind!r}")
    keep = np.setdiff1d(np.arange(n), dropped)
    return _select(obs, keep)


def truncate_window(obs: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Keep the samples in the first ``fraction`` of the observation time span (at least 3)."""
    t = np.asarray(obs["t_s"], dtype=float)
    if t.size <= 3:
        return dict(obs)
    cut = t[0] + fraction * (t[-1] - t[0])
    keep = np.flatnonzero(t <= cut)
    if keep.size < 3:
        keep = np.arange(3)
    return _select(obs, keep)


# --------------------------------------------------------------------------------- text perturbers
def protected_spans(text: str) -> list[tuple[int, int]]:
    """Spans that typos must not touch: label names/aliases (both languages), level names, answer keywords."""
    import re

    from pipeline.core.answer import find_label_mentions

    spans = [(s, e) for s, e, _, _ in find_label_mentions(text)]
    words = {w for lang in LEVEL_DISPLAY for w in LEVEL_DISPLAY[lang].values()} | {"answer", "答案", "options", "选项"}
    low = text.lower()
    for w in words:
        for m in re.finditer(re.escape(w.lower()), low):
            spans.append((m.start(), m.end()))
    return spans


def _word_runs(text: str) -> list[tuple[int, int]]:
    """Maximal runs of alphabetic characters (no digits): Latin words >= 3 letters, CJK runs >= 2."""
    runs, i, n = [], 0, len(text)
    while i < n:
        if text[i].isalpha():
            j = i
            while j < n and text[j].isalpha() and (text[j].isascii() == text[i].isascii()):
                j += 1
            if (j - i) >= (3 if text[i].isascii() else 2):
                runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


def _split_around(runs: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cut protected spans out of the runs (a CJK sentence run keeps its unprotected pieces)."""
    out = []
    for s, e in runs:
        pieces = [(s, e)]
        for ps, pe in spans:
            nxt = []
            for a, b in pieces:
                if pe <= a or ps >= b:
                    nxt.append((a, b))
                    continue
                if a < ps:
                    nxt.append((a, ps))
                if pe < b:
                    nxt.append((pe, b))
            pieces = nxt
        out.extend((a, b) for a, b in pieces if b - a >= 2)
    return out


def typo_word(word: str, rng: np.random.Generator) -> str:
    """One typo in ``word``: swap two neighbours, drop, double, or (Latin) hit a neighbouring key."""
    ops = ["swap", "drop", "double"] + (["key"] if word.isascii() else [])
    op = ops[int(rng.integers(len(ops)))]
    i = int(rng.integers(len(word) - 1)) if op == "swap" else int(rng.integers(len(word)))
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "double":
        return word[:i] + word[i] + word[i:]
    c = word[i]
    near = _KEYBOARD.get(c.lower(), c.lower())
    r = near[int(rng.integers(len(near)))]
    return word[:i] + (r.upper() if c.isupper() else r) + word[i + 1:]


def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Typos in ``rate`` of the eligible words (at least one when any is eligible); letters only."""
    runs = _split_around(_word_runs(text), protected_spans(text))
    if not runs:
        return text
    k = max(1, int(round(rate * len(runs))))
    chosen = sorted(rng.choice(len(runs), size=min(k, len(runs)), replace=False).tolist())
    pieces, last = [], 0
    for idx in chosen:
        s, e = runs[idx]
        pieces.append(text[last:s])
        pieces.append(typo_word(text[s:e], rng))
        last = e
    pieces.append(text[last:])
    return "".join(pieces)


# ------------------------------------------------------------------------------ options perturbers
def options_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild ``RenderOptions`` from a prompts row's ``render`` dict (the renderer's inverse of options_to_dict)."""
    from prompts_cot.render import options_from_dict as from_dict

    return from_dict(data or {})


def canonical_field_order() -> tuple[str, ...]:
    """The renderer's canonical order of the 7 known-information elements."""
    from prompts_cot.render import FIELD_ORDER

    return tuple(FIELD_ORDER)


def shuffled(items: tuple[str, ...], rng: np.random.Generator) -> tuple[str, ...]:
    """A permutation of ``items`` that differs from the input whenever that is possible."""
    if len(items) < 2:
        return tuple(items)
    for _ in range(10):
        perm = tuple(items[i] for i in rng.permutation(len(items)))
        if perm != tuple(items):
            return perm
    return tuple(items[1:]) + (items[0],)


def n_instruction_variants(lang: str) -> int:
    """How many instruction paraphrases the renderer has for ``lang``."""
    from prompts_cot.render import N_INSTRUCTION_VARIANTS

    return int(N_INSTRUCTION_VARIANTS[lang])


# ------------------------------------------------------------------------------------------- apply
def perturb_record(record: dict[str, Any], name: str, severity: int, rng: np.random.Generator) -> dict[str, Any]:
    """Record-level part of a perturbation (noise, dropout, truncate); others return a copy unchanged.

    Labels are never edited. Features are recomputed from the edited observation.
    """
    spec = get_spec(name)
    param = spec.levels[severity]
    rec = copy.deepcopy(record)
    if name == "noise":
        rec["observation"] = add_noise(rec["observation"], float(param), rng)
    elif name == "dropout":
        rec["observation"] = drop_samples(rec["observation"], param, rng)
    elif name == "truncate":
        rec["observation"] = truncate_window(rec["observation"], float(param))
    else:
        return rec
    return recompute_features(rec)


def perturb_options(options: Any, record: dict[str, Any], name: str, severity: int,
                    rng: np.random.Generator) -> Any:
    """RenderOptions-level part of a perturbation (units, precision, order, distractors, instruction)."""
    param = get_spec(name).levels[severity]
    rep: Callable[..., Any] = dataclasses.replace
    if name == "units":
        return rep(options, units=param)
    if name == "precision":
        return rep(options, **param)
    if name == "field_order":
        base = tuple(options.field_order or ())
        base = base + tuple(f for f in canonical_field_order() if f not in base)
        return rep(options, field_order=shuffled(base, rng))
    if name == "distractors":
        pool = DISTRACTORS[options.lang]
        picks = rng.choice(len(pool), size=min(int(param), len(pool)), replace=False)
        return rep(options, distractors=tuple(options.distractors) + tuple(pool[i] for i in sorted(picks)))
    if name == "instruction":
        n = n_instruction_variants(options.lang)
        return rep(options, instruction_variant=(options.instruction_variant + int(param)) % n)
    if name == "option_order":
        current = dict(options.option_order or ())
        order = tuple((lvl, shuffled(tuple(current.get(lvl, LABELS[lvl])), rng)) for lvl in LEVELS)
        return rep(options, option_order=order)
    if name == "mixed_units":
        return rep(options, units=param[0], speed_units=param[1])
    if name == "language":
        return rep(options, lang="zh" if options.lang == "en" else "en",
                   instruction_variant=options.instruction_variant % n_instruction_variants(
                       "zh" if options.lang == "en" else "en"))
    return options


def render_text(record: dict[str, Any], options: Any, text_steps: list[tuple[str, int, np.random.Generator]]) -> str:
    """Render ``record`` with ``options``, then apply the text-level families in :data:`TEXT_LEVEL` order.

    ``text_steps``: ``(name, severity, rng)`` of the text-level families to apply (any order given).
    """
    from prompts_cot import variation
    from prompts_cot.render import assemble_prompt, motion_text, render_prompt
    from prompts_cot.templates import TEMPLATES

    order = {name: i for i, name in enumerate(TEXT_LEVEL)}
    steps = sorted(text_steps, key=lambda s: order[s[0]])
    if steps and steps[0][0] == "prose":
        _, _, rng = steps.pop(0)
        t = TEMPLATES[options.lang]
        lines = [] if options.prompt_type == "compact" else [t["known_header"]]
        lines.append(variation.to_prose(record, motion_text(record, options), options.lang, rng))
        lines += [t["distractor_line"].format(text=d) for d in options.distractors]
        text = assemble_prompt("\n".join(lines), options)
    else:
        text = render_prompt(record, options)
    lang = options.lang
    for name, severity, rng in steps:
        if name == "synonyms":
            text = variation.swap_synonyms(text, lang, rng, "train")
        elif name == "synonyms_unseen":
            text = variation.swap_synonyms(text, lang, rng, "heldout")
        elif name == "key_alias":
            text = variation.alias_keys(text, lang, rng)
        elif name == "casing":
            text = variation.vary_casing(text, lang, rng)
        elif name == "typos":
            text = add_typos(text, float(get_spec(name).levels[severity]), rng)
    return text


def perturb_example(record: dict[str, Any], options: Any, name: str, severity: int, seed: int) -> Perturbed | None:
    """Apply perturbation ``name`` at ``severity`` to one example; None when it does not apply.

    Args:
        record: data_prep record (not modified).
        options: the ``RenderOptions`` the clean prompt was rendered with.
    Returns the perturbed record and options and the re-rendered prompt (typos: the rendered
    prompt with letter typos).
    """
    spec = get_spec(name)
    if severity not in spec.levels:
        raise ValueError(f"perturbation {name!r} has severities {sorted(spec.levels)}, not {severity}")
    if not is_applicable(name, record, options):
        return None
    rng = rng_for(name, severity, seed, str(record["sample_id"]))
    rec = perturb_record(record, name, severity, rng)
    opts = perturb_options(options, rec, name, severity, rng)
    prompt = render_text(rec, opts, [(name, severity, rng)] if name in TEXT_LEVEL else [])
    may_change = severity in spec.label_may_change
    oracle = None
    if name in RECORD_LEVEL and rec.get("features"):
        # the physics oracle decides per example whether the edited observation still shows the gold motion
        oracle = oracle_motion(rec["features"])
        gold = (record.get("labels") or {}).get("motion")
        may_change = may_change or (gold is not None and oracle != gold)
    return Perturbed(record=rec, options=opts, prompt=prompt, label_may_change=may_change, oracle_motion=oracle)


def train_rng(name: str, severity: int, seed: int, sample_id: str) -> np.random.Generator:
    """The generator of a training-time variation: its own key space (``train:`` + name), so no training draw
    ever equals an evaluation draw (:func:`rng_for`), whatever the seeds."""
    return rng_for(f"train:{name}", severity, seed, sample_id)


def vary_example(record: dict[str, Any], options: Any, steps: list[tuple[str, int]], seed: int) -> Perturbed | None:
    """Several label-preserving families at once (training-time variation); None when the result may not keep
    the gold motion (a record-level step the physics oracle disagrees with) or a step does not apply.

    Record-level steps run first (features recomputed), then options-level ones, then the text-level ones in
    :data:`TEXT_LEVEL` order. Each step draws from :func:`train_rng`.
    """
    sid = str(record["sample_id"])
    rec, opts, text_steps = record, options, []
    for name, severity in steps:
        if severity in get_spec(name).label_may_change or not is_applicable(name, rec, opts):
            return None
        rng = train_rng(name, severity, seed, sid)
        rec = perturb_record(rec, name, severity, rng)
        opts = perturb_options(opts, rec, name, severity, rng)
        if name in TEXT_LEVEL:
            text_steps.append((name, severity, rng))
    oracle = None
    if any(name in RECORD_LEVEL for name, _ in steps) and rec.get("features"):
        oracle = oracle_motion(rec["features"])
        if oracle != (record.get("labels") or {}).get("motion"):
            return None
    return Perturbed(record=rec, options=opts, prompt=render_text(rec, opts, text_steps), label_may_change=False,
                     oracle_motion=oracle)


def oracle_motion(features: dict[str, Any]) -> str | None:
    """Motion label the simulator's relabelling rules give ``features`` (None = ambiguous)."""
    from data_prep.oracle import relabel_motion

    return relabel_motion(features)


__all__ = ["DISTRACTORS", "SPECS", "PerturbSpec", "Perturbed", "add_noise", "add_typos", "drop_samples",
           "get_spec", "is_applicable", "label_may_change", "options_from_dict", "oracle_motion", "perturb_example",
           "perturb_options", "perturb_record", "protected_spans", "render_text", "rng_for", "train_rng",
           "truncate_window", "typo_word", "vary_example"]

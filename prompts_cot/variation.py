"""Label-preserving surface variation of rendered prompts: what other people's tooling writes.

The renderer (:mod:`prompts_cot.render`) writes one canonical form. Real inputs differ in ways that never
change the answer: keys and values in another case and with other separators, other names for the fields
(``EM`` / ``RF environment``), everyday synonyms for the trend words (``closing`` / ``converging``,
``burns`` / ``thruster firings``) and the context written as a sentence. Each is a pure function of
``(text or record, options, rng)``; :mod:`eval.perturb` registers them as perturbation families and the
prompts stage's ``augment`` section renders a share of the training rows through them.

Measured numbers are never edited: every function rewrites words only (a burn count may become a word,
``1 burn`` -> ``one burn``, and a number name may carry a digit, ``r0/rmin``, as people write them). Word lists come in two disjoint pools:
``train`` (used by training-time variation and by the seen evaluation families) and ``heldout`` (only the
evaluation's ``synonyms_unseen`` family), so a report can show generalisation to wordings the model never saw.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from prompts_cot.templates import TEMPLATES

Pool = Literal["train", "heldout"]

__all__ = [
    "KEY_ALIASES",
    "SYNONYMS",
    "alias_keys",
    "swap_synonyms",
    "to_prose",
    "vary_casing",
]

# ------------------------------------------------------------------------------------- word lists
#: Other names for the compact prompt's field keys (``TEMPLATES[lang]["compact"]["fields"]``).
KEY_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "orbit": ("Own station", "Station orbit", "Host", "Platform", "Our station", "Orbit regime"),
        "size": ("Target size", "Object size", "Dimensions", "Size class", "Target class"),
        "cooperative": ("Cooperativeness", "Coop", "Cooperating", "Friendly", "Cooperative target"),
        "equipment": ("Payload", "Onboard equipment", "Device", "Instrument", "Fitted with", "Gear"),
        "lighting": ("Lighting", "Illumination", "Sun", "Sunlight", "Light conditions"),
        "electromagnetic": ("Electromagnetic", "RF environment", "EM environment", "Spectrum", "Radio"),
        "motion": ("Relative motion", "Trajectory", "Track", "Kinematics", "Movement", "Motion summary"),
    },
    "zh": {
        "orbit": ("我方空间站", "所在轨道", "平台", "本站"),
        "size": ("目标尺寸", "大小", "尺度"),
        "cooperative": ("是否合作", "合作性", "合作目标"),
        "equipment": ("载荷", "携带设备", "设备"),
        "lighting": ("光照条件", "日照", "光线"),
        "electromagnetic": ("电磁环境", "射频环境", "电磁状况"),
        "motion": ("相对运动", "轨迹", "运动情况", "航迹"),
    },
}

# Synonyms of the canonical words of the compact prompt (trend clause, manoeuvres, number names, values).
# Longest phrases are matched first, so "closing, then opening" is replaced as a whole.
_SYN_EN_TRAIN: dict[str, tuple[str, ...]] = {
    "closing, then opening": ("converging, then diverging", "range decreasing then increasing",
                              "closing in, then moving away", "approaching, then receding"),
    "opening, then closing": ("diverging, then converging", "range increasing then decreasing",
                              "moving away, then closing in", "receding, then approaching"),
    "closing, then at rest": ("converging, then stationary", "closing in, then stopped",
                              "approaching, then holding still"),
    "closing to contact": ("converging to contact", "closing in until touching", "approaching until contact"),
    "about constant": ("roughly steady", "nearly unchanged", "holding range", "stable range"),
    "closing": ("converging", "closing in", "approaching", "range decreasing"),
    "opening": ("diverging", "receding", "moving away", "range increasing"),
    "passing by": ("flying past", "going past", "straight pass"),
    "around the station": ("circling the station", "looping around the station", "orbiting the station"),
    "ending at rest": ("finally stationary", "coming to rest", "stopping at the end"),
    "ending at contact": ("finally touching", "ending in contact", "reaching contact"),
    "no burns": ("no thruster firings", "no manoeuvres", "no maneuvers", "no delta-v events", "coasting"),
    "1 burn": ("1 thruster firing", "1 manoeuvre", "1 maneuver", "1 delta-v event", "one burn"),
    "burns": ("thruster firings", "manoeuvres", "maneuvers", "delta-v events", "impulses"),
    "start/min": ("initial/closest", "start-to-min", "r0/rmin", "first/min"),
    "end/min": ("final/closest", "end-to-min", "rf/rmin", "last/min"),
    "radial/min": ("radial extent/closest", "radial-to-min", "x/rmin", "radial span/min"),
    "min": ("closest", "minimum range", "CPA", "min range"),
    "speed": ("velocity", "final speed", "end speed", "rate"),
    "keep-out entered": ("inside keep-out zone", "keep-out sphere breached", "entered keep-out"),
    "robotic arm": ("manipulator arm", "robot arm", "grapple arm", "manipulator"),
    "antenna": ("comms antenna", "radio antenna", "RF antenna", "dish"),
    "camera": ("imager", "optical camera", "imaging sensor", "telescope camera"),
    "full sunlight": ("fully sunlit", "full sun", "daylight"),
    "partial sunlight": ("partly sunlit", "partial sun", "penumbra"),
    "eclipse": ("in shadow", "umbra", "Earth shadow", "dark"),
    "optimal": ("excellent", "clean", "ideal"),
    "interference": ("jammed", "noisy", "interfered"),
    "normal": ("nominal", "ordinary", "typical"),
    "yes": ("true", "y", "cooperative"),
    "no": ("false", "n", "non-cooperative"),
}
_SYN_EN_HELDOUT: dict[str, tuple[str, ...]] = {
    "closing, then opening": ("nearing, then drifting off", "coming closer, then backing off"),
    "opening, then closing": ("drifting off, then nearing", "backing off, then coming closer"),
    "closing, then at rest": ("nearing, then motionless", "coming closer, then parked"),
    "closing to contact": ("nearing until it touches", "coming closer to contact"),
    "about constant": ("flat distance", "distance unchanged"),
    "closing": ("nearing", "coming closer", "range shrinking"),
    "opening": ("drifting off", "backing off", "range growing"),
    "passing by": ("sweeping past", "overflying"),
    "around the station": ("encircling the station", "going round the station"),
    "ending at rest": ("finishing motionless", "parked at the end"),
    "ending at contact": ("finishing in touch", "docked by impact"),
    "no burns": ("no engine firings", "no propulsive events"),
    "1 burn": ("1 engine firing", "a single propulsive event"),
    "burns": ("engine firings", "propulsive events"),
    "start/min": ("begin/nearest", "first/nearest"),
    "end/min": ("finish/nearest", "last/nearest"),
    "radial/min": ("radial/nearest", "up-down extent/nearest"),
    "min": ("nearest", "smallest distance"),
    "speed": ("terminal rate", "last speed"),
    "keep-out entered": ("keep-out violated",),
    "robotic arm": ("mechanical arm", "servicing arm"),
    "antenna": ("transceiver", "radio dish"),
    "camera": ("photo sensor", "visual sensor"),
    "full sunlight": ("completely lit",),
    "partial sunlight": ("half lit",),
    "eclipse": ("earth shade", "night side"),
    "optimal": ("pristine",),
    "interference": ("disturbed",),
    "normal": ("usual",),
    "yes": ("affirmative",),
    "no": ("negative",),
}
_SYN_ZH_TRAIN: dict[str, tuple[str, ...]] = {
    "先接近后远离": ("先靠近后离开", "距离先减小后增大", "先逼近后远离"),
    "先远离后接近": ("先离开后靠近", "距离先增大后减小", "先远离后逼近"),
    "接近后静止": ("靠近后停住", "逼近后保持静止"),
    "接近至接触": ("靠近直至接触", "逼近到接触"),
    "基本不变": ("大致稳定", "几乎不变", "保持稳定"),
    "接近": ("靠近", "逼近", "距离减小"),
    "远离": ("离开", "背离", "距离增大"),
    "从旁掠过": ("掠过", "飞越而过", "擦肩而过"),
    "绕空间站": ("环绕空间站", "绕飞空间站"),
    "最终静止": ("最后停住", "终态静止"),
    "最终接触": ("最后接触", "终态接触"),
    "无机动": ("无变轨", "未点火", "无推力器点火"),
    "次机动": ("次变轨", "次点火", "次推力器点火"),
    "最近": ("最小距离", "最近距离"),
    "起始/最近": ("初始/最近", "起点/最小"),
    "结束/最近": ("末端/最近", "终点/最小"),
    "径向/最近": ("径向范围/最近", "径向/最小"),
    "末速度": ("最终速度", "末端速度"),
    "进入禁入球": ("闯入禁飞区", "进入安全禁区"),
    "机械臂": ("机器臂", "机械手"),
    "天线": ("通信天线", "射频天线"),
    "相机": ("摄像机", "光学相机"),
    "全日照": ("完全光照", "日照充足"),
    "部分光照": ("半光照", "部分日照"),
    "地影": ("阴影区", "地球阴影"),
    "有干扰": ("存在干扰", "受干扰"),
    "最佳": ("良好", "优良"),
    "正常": ("一般", "常规"),
}
_SYN_ZH_HELDOUT: dict[str, tuple[str, ...]] = {
    "先接近后远离": ("先趋近后退离", "先贴近后撤离"),
    "先远离后接近": ("先退离后趋近", "先撤离后贴近"),
    "接近": ("趋近", "贴近"),
    "远离": ("退离", "撤离"),
    "无机动": ("无轨控", "无变速"),
    "次机动": ("次轨控", "次变速"),
    "从旁掠过": ("侧向飞过", "旁侧通过"),
    "绕空间站": ("围绕空间站", "环空间站"),
    "地影": ("阴影中", "背阳区"),
    "机械臂": ("捕获臂", "操作臂"),
    "天线": ("收发天线", "无线电天线"),
    "相机": ("成像仪", "照相设备"),
    "正常": ("平常", "普通"),
}

#: ``SYNONYMS[pool][lang]``: canonical phrase -> alternatives.
SYNONYMS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {"en": _SYN_EN_TRAIN, "zh": _SYN_ZH_TRAIN},
    "heldout": {"en": _SYN_EN_HELDOUT, "zh": _SYN_ZH_HELDOUT},
}

# Separators between a key and its value, and the case styles of keys/values (casing family).
_SEPARATORS = {"en": (": ", " : ", " = ", "=", " - ", ":\t", ":  ", " -> "), "zh": ("：", ":", " : ", "=", "——")}
_CASES = ("lower", "upper", "keep", "title")


# ------------------------------------------------------------------------------------------ helpers
def _pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _canonical_seps(lang: str) -> tuple[str, ...]:
    """Separators the renderer writes between key and value (``TEMPLATES[lang]["line"]``)."""
    line = TEMPLATES[lang]["line"]
    return (line.split("{field}", 1)[1].split("{value}", 1)[0],)


def split_line(line: str, lang: str) -> tuple[str, str, str] | None:
    """``(key, separator, value)`` of a ``key: value`` line, or None for a line without one."""
    for sep in _canonical_seps(lang) + (": ", "："):
        if sep in line:
            key, value = line.split(sep, 1)
            if key.strip() and len(key) <= 40:
                return key, sep, value
    return None


def _case(text: str, style: str) -> str:
    if style == "lower":
        return text.lower()
    if style == "upper":
        return text.upper()
    if style == "title":
        return text.title()
    return text


@lru_cache(maxsize=8)
def _synonym_regex(pool: str, lang: str) -> re.Pattern[str]:
    words = sorted(SYNONYMS[pool][lang], key=len, reverse=True)
    body = "|".join(re.escape(w) for w in words)
    # Latin words must stand alone ("no" not inside "normal"); CJK has no word boundaries.
    return re.compile(rf"(?<![\w/-])(?:{body})(?![\w/-])" if lang == "en" else f"(?:{body})")


# ----------------------------------------------------------------------------------------- families
def vary_casing(text: str, lang: str, rng: np.random.Generator) -> str:
    """Keys and values in another case, another key/value separator and uneven spacing (every line).

    Lines without a key keep their words but share the value case. Digits and units are untouched except for
    their case (``KM``), which the model must read as well.
    """
    key_case, value_case = _pick(rng, _CASES), _pick(rng, _CASES[:3])
    sep = _pick(rng, _SEPARATORS[lang])
    out = []
    for line in text.split("\n"):
        parts = split_line(line, lang)
        pad = " " * int(rng.integers(0, 3))
        if parts is None:
            out.append(pad + _case(line, value_case))
            continue
        key, _, value = parts
        out.append(pad + _case(key.strip(), key_case) + sep + _case(value.strip(), value_case)
                   + " " * int(rng.integers(0, 2)))
    return "\n".join(out)


def alias_keys(text: str, lang: str, rng: np.random.Generator) -> str:
    """Every known field key replaced by one of its aliases (:data:`KEY_ALIASES`)."""
    fields = {v: k for k, v in TEMPLATES[lang]["compact"]["fields"].items()}
    fields.update({v: k for k, v in TEMPLATES[lang]["fields"].items()})
    out = []
    for line in text.split("\n"):
        parts = split_line(line, lang)
        if parts is None or parts[0].strip().lstrip("- ") not in fields:
            out.append(line)
            continue
        key, sep, value = parts
        lead = key[: len(key) - len(key.lstrip("- "))]
        out.append(lead + _pick(rng, KEY_ALIASES[lang][fields[key.strip().lstrip("- ")]]) + sep + value)
    return "\n".join(out)


def swap_synonyms(text: str, lang: str, rng: np.random.Generator, pool: Pool = "train") -> str:
    """Canonical words replaced by synonyms from ``pool`` (every occurrence, longest phrase first)."""
    table = SYNONYMS[pool][lang]
    return _synonym_regex(pool, lang).sub(lambda m: _pick(rng, table[m.group(0)]), text)


_PROSE = {
    "en": (
        "A {size} {coop} target carrying {equipment} is near our {orbit} station, in {lighting}, with {em} "
        "electromagnetic conditions. Its motion: {motion}.",
        "Near the {orbit} station we track a {size}, {coop} object with {equipment}; lighting is {lighting} and "
        "the EM environment is {em}. Motion: {motion}.",
        "Target report: {coop}, {size}, equipped with {equipment}, {lighting}, EM {em}, station {orbit}. The "
        "track shows {motion}.",
        "Our {orbit} station observes a {coop} target of {size} size ({equipment} on board) under {lighting} and "
        "{em} EM conditions; relative motion {motion}.",
    ),
    "zh": (
        "我方{orbit}附近有一个{size}{coop}目标，携带{equipment}，光照为{lighting}，电磁环境{em}。运动：{motion}。",
        "目标情况：{coop}，{size}，装备{equipment}，{lighting}，电磁{em}，位于{orbit}附近。其运动{motion}。",
        "在{orbit}附近观测到{coop}的{size}目标（{equipment}），光照{lighting}，电磁{em}；相对运动：{motion}。",
    ),
}
_COOP_PROSE = {"en": {"true": "cooperative", "false": "non-cooperative"}, "zh": {"true": "合作", "false": "非合作"}}
_NONE_PROSE = {"en": "no equipment", "zh": "无装备"}


def to_prose(record: dict[str, Any], motion: str, lang: str, rng: np.random.Generator) -> str:
    """The known information as one sentence (a template drawn by ``rng``); ``motion`` is the rendered motion
    element (:func:`prompts_cot.render.motion_text`). Records without context (free text) keep ``motion``."""
    from prompts_cot.render import value_text

    context = record.get("context") or {}
    if not context:
        return motion
    values = {f: value_text(f, context.get(f), lang, compact=True) for f in
              ("orbit", "size", "equipment", "lighting", "electromagnetic")}
    equipment = _NONE_PROSE[lang] if context.get("equipment") == "none" else values["equipment"]
    return _pick(rng, _PROSE[lang]).format(
        size=values["size"], coop=_COOP_PROSE[lang][str(bool(context.get("cooperative"))).lower()],
        equipment=equipment, orbit=values["orbit"], lighting=values["lighting"], em=values["electromagnetic"],
        motion=motion.rstrip("。."),
    )

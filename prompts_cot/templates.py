"""Prompt and response templates, as data, in English and Chinese.

Everything the renderer writes that is not a number or a label comes from :data:`TEMPLATES`,
so a template edit is visible in the per-row ``template_hash`` (sha256 of exactly the
entries a row used, see :func:`template_hash`). Placeholders use ``str.format`` syntax.

Layout of ``TEMPLATES[lang]``:

* ``fields``      -- the label of each known-information line (own spacecraft, 3 target
  elements, 2 environment elements, orbital motion): 4 categories / 7 elements.
* ``values``      -- display names of context values (unknown values fall back to the raw value).
* ``motion``      -- qualitative motion clauses (no numbers) and the numeric-block templates.
* ``basic`` / ``instruction`` / ``cot`` -- per prompt type: the paraphrase lists (same index =
  ``RenderOptions.instruction_variant``) and the fixed parts (options block, format hint, steps).
* ``rationale``   -- CoT response steps: trend, key numbers vs thresholds, class definition, rule.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.core.answer import ANSWER_FORMAT

# Each paraphrase list has the same length within a language so that one
# ``instruction_variant`` index selects a consistent wording for every prompt type.
TEMPLATES: dict[str, dict[str, Any]] = {
    "en": {
        "known_header": "Known information:",
        "line": "{field}: {value}",
        "distractor_line": "Note: {text}",
        "fields": {
            "orbit": "Own spacecraft",
            "size": "Target size",
            "cooperative": "Cooperative",
            "equipment": "Equipment",
            "lighting": "Lighting",
            "electromagnetic": "Electromagnetic",
            "motion": "Orbital motion",
        },
        "values": {
            "orbit": {"LEO": "LEO space station", "GEO": "GEO space station", "_default": "{value} space station"},
            "size": {"small": "small", "medium": "medium", "large": "large"},
            "cooperative": {"true": "yes", "false": "no"},
            "equipment": {"robotic_arm": "robotic arm", "antenna": "antenna", "camera": "camera", "none": "none"},
            "lighting": {"full_sunlight": "full sunlight", "partial": "partial sunlight", "eclipse": "eclipse"},
            "electromagnetic": {"optimal": "optimal", "normal": "normal", "interference": "interference"},
        },
        "motion": {
            # Qualitative sentence: trend clause, then optional manoeuvre / keep-out clauses.
            "trend": {
                "approaching": "The target continuously approaches our space station",
                "approaching_stops": "The target approaches our space station and comes to rest beside it",
                "approaching_contact": "The target approaches our space station and reaches it while still moving",
                "receding": "The target gradually moves away from our space station",
                "approach_then_recede": (
                    "The target continuously approaches our space station, reaches the closest distance,"
                    " then gradually moves away"
                ),
                "constant": "The target keeps an almost constant distance from our space station",
                "recede_then_approach": "The target first moves away from our space station, then comes back closer",
            },
            "burns": ", with {n} velocity jump(s)",
            "no_burns": ", without visible manoeuvres",
            "keepout": ", and enters the keep-out sphere",
            "end": ".",
            # Numeric block (units and precision come from RenderOptions).
            "samples": " Samples t/range/rate ({t_unit}/{d_unit}/{v_unit}): {points}.",
            "point": "{t}/{r}/{rr}",
            "point_sep": ", ",
            # Summary numbers; the jumps and keep-out parts are filled from "jumps"/"no_jumps"/"keepout_in".
            "summary": (
                " Range {r0}->{rf} {d_unit}, min {rmin} at {tmin} {t_unit}, speed {vf} {v_unit},"
                " extent {ex}/{ey}/{ez}, {jumps}{keepout}."
            ),
            "jumps": "{nb} jumps max {dv}",
            "no_jumps": "no jumps",
            "keepout_in": ", keep-out entered",
        },
        # Compact prompt (prompt_type "compact") and compact motion (motion_style "compact"): short field
        # names, no instruction or option list (label scoring enumerates the candidates), and the motion as
        # trend words + manoeuvre count + the unitless ratios the relabelling rules compare.
        "compact": {
            "fields": {
                "orbit": "Station",
                "size": "Size",
                "cooperative": "Cooperative",
                "equipment": "Equipment",
                "lighting": "Light",
                "electromagnetic": "EM",
                "motion": "Motion",
            },
            # short values where the full ones are long ("LEO" for "LEO space station")
            "values": {"orbit": {"LEO": "LEO", "GEO": "GEO"}},
            "motion": (
                "{trend}, {burns}; min {rmin} {d_unit}; start/min {a}; end/min {b}; radial/min {x};"
                " speed {vf} {v_unit}{keepout}"
            ),
            "burns": {"0": "no burns", "1": "1 burn", "n": "{n} burns"},
            # The rules' decisive splits said in words in the trend clause, where the model reads (see
            # prompts_cot.render.compact_motion): how the track ends (rendezvous / collision, whatever the
            # trend) and, for a closing-and-opening arc, its path against the flyby / fly-around radial
            # bounds (radial_grade; "medium" adds nothing). Trained on the numbers alone, or on "small/large
            # radial swing", the demo model never told flyby from fly-around (chance between the two), nor a
            # rendezvous reached after an opening arc from a collision.
            "ends": {"rest": ", ending at rest", "contact": ", ending at contact"},
            "path": {"small": ", passing by", "medium": "", "large": ", around the station"},
            "keepout": "; keep-out entered",
        },
        "options": "Options:\n{lines}",
        "option_line": "{level}: {labels}",
        "option_sep": " ",  # a space costs no extra token (26 candidates must fit the budget)
        "format_hint": "Answer: motion=?; operation=?; task=?",
        "basic": {
            "question": [
                "What are the target's motion, operation and task intentions?",
                "Which motion, operation and task intentions does the target have?",
                "Infer the target's motion, operation and task intentions.",
                "Determine the intentions of the target at the motion, operation and task levels.",
                "What does the target intend in terms of motion, operation and task?",
                "Identify the target's motion, operation and task intentions.",
            ],
        },
        "instruction": {
            "instruction": [
                "Recognise the target's intentions; choose one option per level.",
                "Pick the target's motion, operation and task intentions from the options.",
                "Classify the target's intentions: one candidate for each level.",
                "Decide what the target near our station intends, one option per level.",
                "Choose the most likely intention of the target at each level.",
                "Select the target's intentions from the listed candidates.",
            ],
        },
        "cot": {
            "steps": "Think step by step, then answer.",
        },
        "rationale": {
            "trend": "Trend: {trend}.",
            "numbers": "Check: {checks}.",
            "check_sep": ", ",
            "definition": "{motion}: {definition}.",
            "rule": "Rule: {facts} -> operation {operation} -> task {task}.",
            "fact_sep": ", ",
            "fact": "{field} {value}",
            "fact_fields": {"size": "size", "lighting": "lighting", "electromagnetic": "electromagnetic"},
            "coop": {"true": "cooperative", "false": "non-cooperative"},
            "equipment_none": "no equipment",
            "trend_short": {
                "constant": "about constant",
                "approaching": "closing",
                "approaching_stops": "closing, then at rest",
                "approaching_contact": "closing to contact",
                "receding": "opening",
                "approach_then_recede": "closing, then opening",
                "recede_then_approach": "opening, then closing",
            },
            # Terms of the threshold checks ("{term} {value} {relation} {threshold}").
            "terms": {
                "final": "final",
                "speed": "speed",
                "start": "start",
                "min": "min",
                "burns": "burns",
                "extent": "extent",
                "radial": "radial",
                "keepout": "keep-out",
                "pct_of_start": "{pct}% of start {r0} {d_unit}",
                "x_min": "x min",
                "ratios": "start/min, final/min",
                "no_burns": "no burns",
            },
            "definitions": {
                "hovering": "constant distance, near-zero relative velocity",
                "flyby": "distance falls then rises, never near zero",
                "fly_around": "distance non-zero, varying in a band",
                "approach": "closing, still moving, not yet arrived",
                "rendezvous": "distance and relative velocity both reach about zero",
                "collision": "distance reaches zero with non-zero velocity",
                "retreat": "on a collision course, then manoeuvres away",
                "random": "unclear or changing motion",
            },
        },
        **ANSWER_FORMAT["en"],  # the answer line's strings live with its parser (pipeline.core.answer)
    },
    "zh": {
        "known_header": "已知信息：",
        "line": "{field}：{value}",
        "distractor_line": "备注：{text}",
        "fields": {
            "orbit": "我方航天器",
            "size": "目标尺寸",
            "cooperative": "是否合作",
            "equipment": "装备",
            "lighting": "光照",
            "electromagnetic": "电磁环境",
            "motion": "轨道运动",
        },
        "values": {
            "orbit": {"LEO": "空间站，近地轨道", "GEO": "空间站，地球静止轨道", "_default": "空间站，{value}"},
            "size": {"small": "小型", "medium": "中型", "large": "大型"},
            "cooperative": {"true": "是", "false": "否"},
            "equipment": {"robotic_arm": "机械臂", "antenna": "天线", "camera": "相机", "none": "无"},
            "lighting": {"full_sunlight": "全日照", "partial": "部分光照", "eclipse": "地影"},
            "electromagnetic": {"optimal": "最佳", "normal": "正常", "interference": "有干扰"},
        },
        "motion": {
            "trend": {
                "approaching": "目标持续接近我方空间站",
                "approaching_stops": "目标接近我方空间站并在其附近停下",
                "approaching_contact": "目标接近我方空间站并在仍有速度时到达",
                "receding": "目标逐渐远离我方空间站",
                "approach_then_recede": "目标持续接近我方空间站，到达最近距离后逐渐远离",
                "constant": "目标与我方空间站保持几乎不变的距离",
                "recede_then_approach": "目标先远离我方空间站，随后再次靠近",
            },
            "burns": "，有{n}次速度突变",
            "no_burns": "，无明显机动",
            "keepout": "，并进入禁入球",
            "end": "。",
            "samples": "采样t/距离/变化率（{t_unit}/{d_unit}/{v_unit}）：{points}。",
            "point": "{t}/{r}/{rr}",
            "point_sep": "，",
            "summary": (
                "距离{r0}→{rf} {d_unit}，最近{rmin}（{tmin} {t_unit}），速度{vf} {v_unit}，"
                "范围{ex}/{ey}/{ez}，{jumps}{keepout}。"
            ),
            "jumps": "突变{nb}次最大{dv}",
            "no_jumps": "无突变",
            "keepout_in": "，进入禁入球",
        },
        "compact": {
            "fields": {
                "orbit": "空间站",
                "size": "尺寸",
                "cooperative": "合作",
                "equipment": "装备",
                "lighting": "光照",
                "electromagnetic": "电磁",
                "motion": "运动",
            },
            "values": {"orbit": {"LEO": "近地轨道", "GEO": "地球静止轨道"}},
            "motion": (
                "{trend}，{burns}；最近{rmin} {d_unit}；起始/最近{a}；结束/最近{b}；径向/最近{x}；"
                "末速度{vf} {v_unit}{keepout}"
            ),
            "burns": {"0": "无机动", "1": "1次机动", "n": "{n}次机动"},
            "ends": {"rest": "，最终静止", "contact": "，最终接触"},
            "path": {"small": "，从旁掠过", "medium": "", "large": "，绕空间站"},
            "keepout": "；进入禁入球",
        },
        "options": "选项：\n{lines}",
        "option_line": "{level}：{labels}",
        "option_sep": "、",
        "format_hint": "答案：运动=?；操作=?；任务=?",
        "basic": {
            "question": [
                "目标的运动、操作和任务意图分别是什么？",
                "目标具有怎样的运动、操作和任务意图？",
                "请推断目标的运动、操作和任务意图。",
                "请判断目标在运动、操作、任务三个层次上的意图。",
                "目标在运动、操作和任务方面意图是什么？",
                "请识别目标的运动、操作和任务意图。",
            ],
        },
        "instruction": {
            "instruction": [
                "识别我方空间站附近目标的意图，每个层次选择一个选项。",
                "根据已知信息，从选项中选出目标的运动、操作和任务意图。",
                "对目标意图进行分类：下列每个层次恰好选择一个候选。",
                "你正在监视空间站周边。判断目标意图，每个层次选一项。",
                "利用已知信息，为每个层次选择目标最可能的意图。",
                "从所列候选中选出目标的运动、操作和任务意图。",
            ],
        },
        "cot": {
            "steps": "逐步推理，再作答。",
        },
        "rationale": {
            "trend": "趋势：{trend}。",
            "numbers": "检验：{checks}。",
            "check_sep": "，",
            "definition": "{motion}：{definition}。",
            "rule": "规则：{facts}→操作{operation}→任务{task}。",
            "fact_sep": "，",
            "fact": "{field}{value}",
            "fact_fields": {"size": "尺寸", "lighting": "光照", "electromagnetic": "电磁环境"},
            "coop": {"true": "合作", "false": "非合作"},
            "equipment_none": "无装备",
            "trend_short": {
                "constant": "基本不变",
                "approaching": "接近",
                "approaching_stops": "接近后静止",
                "approaching_contact": "接近至接触",
                "receding": "远离",
                "approach_then_recede": "先接近后远离",
                "recede_then_approach": "先远离后接近",
            },
            "terms": {
                "final": "末距离",
                "speed": "速度",
                "start": "初距离",
                "min": "最近",
                "burns": "机动",
                "extent": "范围",
                "radial": "径向",
                "keepout": "禁入球",
                "pct_of_start": "初距离{r0} {d_unit}的{pct}%",
                "x_min": "倍最近",
                "ratios": "初/最近、末/最近",
                "no_burns": "无机动",
            },
            "definitions": {
                "hovering": "距离不变，相对速度接近零",
                "flyby": "距离先减小后增大，且不接近零",
                "fly_around": "距离不为零并在一定范围内变化",
                "approach": "持续靠近，仍在运动，尚未到达",
                "rendezvous": "距离和相对速度都接近零",
                "collision": "距离降为零且速度不为零",
                "retreat": "先处于碰撞航向，随后机动离开",
                "random": "运动不明确或不断变化",
            },
        },
        **ANSWER_FORMAT["zh"],
    },
}

#: Number of instruction paraphrases per language (``RenderOptions.instruction_variant`` range).
N_INSTRUCTION_VARIANTS: dict[str, int] = {lang: len(t["instruction"]["instruction"]) for lang, t in TEMPLATES.items()}


def used_templates(prompt_type: str, lang: str, instruction_variant: int, cot: bool,
                   motion_style: str | None = None) -> dict[str, Any]:
    """The template entries one (prompt, response) pair draws on, as a JSON-able dict.

    The ``compact`` entries count only for a compact prompt or compact motion, so the hashes of the
    other renderings do not change when they are edited.
    """
    t = TEMPLATES[lang]
    shared = {k: t[k] for k in ("known_header", "line", "distractor_line", "fields", "values", "motion")}
    used: dict[str, Any] = {
        "lang": lang,
        "prompt_type": prompt_type,
        **shared,
        "answer": [t["answer"], t["answer_pair"], t["answer_sep"]],
    }
    if prompt_type == "compact" or motion_style == "compact":
        used["compact"] = t["compact"]
    if prompt_type == "basic":
        used["question"] = t["basic"]["question"][instruction_variant]
    elif prompt_type == "compact":
        pass  # no instruction, no option list, no format hint
    else:
        used["instruction"] = t["instruction"]["instruction"][instruction_variant]
        used["options"] = [t["options"], t["option_line"], t["option_sep"], t["format_hint"]]
    if prompt_type == "cot":
        used["steps"] = t["cot"]["steps"]
    if motion_style == "compact":
        used["rationale_trend"] = t["rationale"]["trend_short"]
    if cot:
        used["rationale"] = t["rationale"]
    return used


def template_hash(prompt_type: str, lang: str, instruction_variant: int, cot: bool,
                  motion_style: str | None = None) -> str:
    """sha256 of the canonical JSON of the template entries a row used (stable across runs)."""
    text = json.dumps(used_templates(prompt_type, lang, instruction_variant, cot, motion_style), sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

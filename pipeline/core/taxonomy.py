"""The intent taxonomy of the reference study (Jing et al. 2025) and its label aliases.

Three intent levels. Motion has the paper's seven subtypes plus ``approach``;
operation adds ``none`` (no operation observed) and task adds ``unclear`` (the paper's
"task intention is unclear"). Canonical labels are lower-case ASCII; every label has
an English and a Chinese display name plus aliases that the answer parser accepts.
"""

from __future__ import annotations

import re

LEVELS: tuple[str, ...] = ("motion", "operation", "task")

MOTION_LABELS: tuple[str, ...] = (
    "hovering", "flyby", "fly_around", "approach", "rendezvous", "collision", "retreat", "random",
)
OPERATION_LABELS: tuple[str, ...] = (
    "docking", "refuelling", "repair", "grabbing", "photographing", "communication", "none",
)
TASK_LABELS: tuple[str, ...] = (
    "detection", "surveillance", "interference", "negotiation", "observation",
    "assistance", "deterrence", "support", "experiment", "attack", "unclear",
)
LABELS: dict[str, tuple[str, ...]] = {"motion": MOTION_LABELS, "operation": OPERATION_LABELS, "task": TASK_LABELS}

#: Display names used in prompts and answers, per language.
DISPLAY: dict[str, dict[str, str]] = {
    "en": {
        "hovering": "hovering", "flyby": "flyby", "fly_around": "fly-around", "approach": "approach",
        "rendezvous": "rendezvous", "collision": "collision", "retreat": "retreat", "random": "random",
        "docking": "docking", "refuelling": "refuelling", "repair": "repair", "grabbing": "grabbing",
        "photographing": "photographing", "communication": "communication", "none": "none",
        "detection": "detection", "surveillance": "surveillance", "interference": "interference",
        "negotiation": "negotiation", "observation": "observation", "assistance": "assistance",
        "deterrence": "deterrence", "support": "support", "experiment": "experiment", "attack": "attack",
        "unclear": "unclear",
    },
    "zh": {
        "hovering": "悬停", "flyby": "飞越", "fly_around": "绕飞", "approach": "接近",
        "rendezvous": "交会", "collision": "撞击", "retreat": "撤离", "random": "随机",
        "docking": "对接", "refuelling": "加注", "repair": "维修", "grabbing": "抓捕",
        "photographing": "拍照", "communication": "通信", "none": "无",
        "detection": "探测", "surveillance": "监视", "interference": "干扰",
        "negotiation": "协商", "observation": "观测", "assistance": "协助",
        "deterrence": "威慑", "support": "支援", "experiment": "试验", "attack": "攻击",
        "unclear": "不明确",
    },
}

#: Level names as written in the answer line, per language.
LEVEL_DISPLAY: dict[str, dict[str, str]] = {
    "en": {"motion": "motion", "operation": "operation", "task": "task"},
    "zh": {"motion": "运动", "operation": "操作", "task": "任务"},
}

#: Extra spellings the parser maps to canonical labels (lower-case, compared after normalisation).
ALIASES: dict[str, str] = {
    "hover": "hovering", "hovers": "hovering", "station-keeping": "hovering", "悬停": "hovering", "驻留": "hovering",
    "fly-by": "flyby", "fly by": "flyby", "flypast": "flyby", "飞掠": "flyby", "飞越": "flyby",
    "fly-around": "fly_around", "fly around": "fly_around", "flyaround": "fly_around", "circumnavigation": "fly_around",
    "绕飞": "fly_around", "环绕": "fly_around",
    "approaching": "approach", "closing": "approach", "接近": "approach", "逼近": "approach",
    "rendezvousing": "rendezvous", "交会": "rendezvous", "交会对接": "rendezvous",
    "collide": "collision", "impact": "collision", "撞击": "collision", "碰撞": "collision",
    "retreating": "retreat", "evasion": "retreat", "撤离": "retreat", "规避": "retreat", "撤退": "retreat",
    "unknown motion": "random", "随机": "random", "不规则": "random",
    "dock": "docking", "对接": "docking",
    "refuel": "refuelling", "refueling": "refuelling", "加注": "refuelling", "加油": "refuelling", "燃料加注": "refuelling",
    "repairing": "repair", "servicing": "repair", "维修": "repair", "修复": "repair",
    "grab": "grabbing", "capture": "grabbing", "grasping": "grabbing", "抓捕": "grabbing", "抓取": "grabbing",
    "photograph": "photographing", "imaging": "photographing", "photo": "photographing", "拍照": "photographing", "成像": "photographing",
    "communicate": "communication", "comms": "communication", "通信": "communication", "通讯": "communication",
    "no operation": "none", "n/a": "none", "无": "none", "无操作": "none",
    "detect": "detection", "探测": "detection", "侦察": "detection",
    "surveil": "surveillance", "监视": "surveillance",
    "jamming": "interference", "干扰": "interference",
    "negotiate": "negotiation", "协商": "negotiation", "谈判": "negotiation",
    "observe": "observation", "观测": "observation", "观察": "observation",
    "assist": "assistance", "协助": "assistance", "援助": "assistance",
    "deter": "deterrence", "威慑": "deterrence",
    "supporting": "support", "支援": "support", "支持": "support", "保障": "support",
    "test": "experiment", "试验": "experiment", "实验": "experiment",
    "attacking": "attack", "攻击": "attack",
    "unknown": "unclear", "不明确": "unclear", "不明": "unclear", "未知": "unclear",
}

_SPACES = re.compile(r"[\s_]+")


def normalise(text: str) -> str:
    """Lower-case, strip punctuation at the ends, fold spaces/underscores to one space."""
    return _SPACES.sub(" ", text.strip().strip(".。,，;；:：!！\"'“”`*").lower()).strip()


def canonical_label(text: str, level: str | None = None) -> str | None:
    """Map a display name or alias (either language) to its canonical label, or None.

    With ``level`` given, only labels of that level are accepted.
    """
    key = normalise(text)
    allowed = LABELS[level] if level else tuple(lab for labs in LABELS.values() for lab in labs)
    for label in allowed:
        if key in {normalise(label), normalise(DISPLAY["en"][label]), normalise(DISPLAY["zh"][label])}:
            return label
    alias = ALIASES.get(key)
    return alias if alias is not None and alias in allowed else None


def display(label: str, lang: str) -> str:
    """Display name of a canonical label in ``lang`` ("en" or "zh")."""
    return DISPLAY[lang][label]

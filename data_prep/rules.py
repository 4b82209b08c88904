"""Explicit rule tables: operation intent from context + motion, task intent from
cooperativeness + motion + operation (REFERENCE.md: "a task intent is a combination of
cooperativeness, motion intents and operation intents").

The rules are deterministic so that a model can learn them from the known information.

Operation rules (:func:`operation_intent`), first matching row wins:

==========================  ===================  ===========  =======================
motion                      equipment            cooperative  operation
==========================  ===================  ===========  =======================
collision, retreat, random  any                  any          none
rendezvous                  robotic_arm          no           grabbing
rendezvous                  robotic_arm          yes          refuelling (size large),
                                                              repair (small/medium)
rendezvous                  antenna/camera/none  yes          docking
rendezvous                  antenna/camera/none  no           none
other (hovering, flyby,     camera               any          photographing, but none in
fly_around, approach)                                         eclipse (nothing to image)
other                       antenna              yes          communication, but none under
                                                              electromagnetic interference
                                                              (the link is unusable)
other                       antenna              no           communication
other                       robotic_arm          yes          repair if hovering (arm work
                                                              at a fixed point), else none
other                       robotic_arm / none   (else)       none
==========================  ===================  ===========  =======================

Task rules (:func:`task_intent`), keyed by (cooperative, motion, operation); ``*`` = any:

===========  ======================  ===============================  ============
cooperative  motion                  operation                        task
===========  ======================  ===============================  ============
no           collision               *                                attack
no           rendezvous              grabbing                         attack
no           rendezvous              none / docking                   interference
no           retreat                 *                                deterrence
no           approach                none                             deterrence
no           approach                photographing                    detection
no           approach                communication                    interference
no           hovering, fly_around    photographing                    detection
no           hovering, fly_around    communication                    interference
no           hovering, fly_around    none                             surveillance
no           flyby                   photographing                    observation
no           flyby                   communication                    surveillance
no           flyby                   none                             unclear
no           random                  *                                unclear
yes          rendezvous              docking / refuelling             support
yes          rendezvous              repair / grabbing                assistance
yes          hovering, fly_around    photographing / repair           assistance
yes          hovering, fly_around    communication                    support
yes          hovering, fly_around    none                             experiment
yes          approach                communication                    negotiation
yes          approach                photographing                    observation
yes          approach                none                             support
yes          flyby                   photographing                    observation
yes          flyby                   communication                    negotiation
yes          flyby                   none                             unclear
yes          random                  *                                experiment
yes          collision, retreat      *                                unclear
===========  ======================  ===============================  ============
"""

from __future__ import annotations

import itertools
from typing import Any

#: Context fields and their values (sampled uniformly by the simulator).
CONTEXT_VALUES: dict[str, tuple[Any, ...]] = {
    "size": ("small", "medium", "large"),
    "cooperative": (False, True),
    "equipment": ("robotic_arm", "antenna", "camera", "none"),
    "lighting": ("full_sunlight", "partial", "eclipse"),
    "electromagnetic": ("optimal", "normal", "interference"),
}

_NO_OPERATION_MOTIONS = {"collision", "retreat", "random"}
_STATION_KEEPING = {"hovering", "fly_around"}


def operation_intent(context: dict[str, Any], motion: str) -> str:
    """Operation intent from the context and the motion intent (module table 1)."""
    equipment, coop = context["equipment"], bool(context["cooperative"])
    if motion in _NO_OPERATION_MOTIONS:
        return "none"
    if motion == "rendezvous":
        if equipment == "robotic_arm":
            if not coop:
                return "grabbing"
            return "refuelling" if context["size"] == "large" else "repair"
        return "docking" if coop else "none"
    if equipment == "camera":
        return "none" if context["lighting"] == "eclipse" else "photographing"
    if equipment == "antenna":
        if coop and context["electromagnetic"] == "interference":
            return "none"
        return "communication"
    if equipment == "robotic_arm" and coop and motion == "hovering":
        return "repair"
    return "none"


_TASK_NONCOOP: dict[tuple[str, str], str] = {
    ("rendezvous", "grabbing"): "attack",
    ("rendezvous", "none"): "interference",
    ("rendezvous", "docking"): "interference",
    ("approach", "none"): "deterrence",
    ("approach", "photographing"): "detection",
    ("approach", "communication"): "interference",
    ("flyby", "photographing"): "observation",
    ("flyby", "communication"): "surveillance",
    ("flyby", "none"): "unclear",
}
_TASK_COOP: dict[tuple[str, str], str] = {
    ("rendezvous", "docking"): "support",
    ("rendezvous", "refuelling"): "support",
    ("rendezvous", "repair"): "assistance",
    ("rendezvous", "grabbing"): "assistance",
    ("approach", "communication"): "negotiation",
    ("approach", "photographing"): "observation",
    ("approach", "none"): "support",
    ("flyby", "photographing"): "observation",
    ("flyby", "communication"): "negotiation",
    ("flyby", "none"): "unclear",
}


def task_intent(cooperative: bool, motion: str, operation: str) -> str:
    """Task intent from cooperativeness, motion and operation (module table 2)."""
    if not cooperative:
        if motion == "collision":
            return "attack"
        if motion == "retreat":
            return "deterrence"
        if motion == "random":
            return "unclear"
        if motion in _STATION_KEEPING:
            return {"photographing": "detection", "communication": "interference"}.get(operation, "surveillance")
        return _TASK_NONCOOP.get((motion, operation), "unclear")
    if motion == "random":
        return "experiment"
    if motion in {"collision", "retreat"}:
        return "unclear"
    if motion in _STATION_KEEPING:
        return {"photographing": "assistance", "repair": "assistance", "communication": "support"}.get(
            operation, "experiment")
    return _TASK_COOP.get((motion, operation), "unclear")


def intents(context: dict[str, Any], motion: str) -> dict[str, str]:
    """All three labels for a context and a motion intent."""
    op = operation_intent(context, motion)
    return {"motion": motion, "operation": op, "task": task_intent(bool(context["cooperative"]), motion, op)}


def determined_intents(context: dict[str, Any], motion: str) -> dict[str, str | None]:
    """:func:`intents` for a context with unknown fields: a level's label where every value the unknown
    fields could take gives the same one, else None.

    A field is unknown when it is missing, None or ``"unknown"`` (what :func:`data_prep.tracks.read_tracks`
    fills in). E.g. a collision needs no context for its operation (none) but cooperativeness for its task.
    """
    unknown = [f for f in CONTEXT_VALUES if context.get(f) in (None, "unknown")]
    known = {f: context[f] for f in CONTEXT_VALUES if f not in unknown}
    seen: dict[str, set[str]] = {"operation": set(), "task": set()}
    for values in itertools.product(*(CONTEXT_VALUES[f] for f in unknown)):  # at most 216 combinations
        labels = intents({**known, **dict(zip(unknown, values))}, motion)
        for level in seen:
            seen[level].add(labels[level])
    return {"motion": motion, **{level: next(iter(v)) if len(v) == 1 else None for level, v in seen.items()}}

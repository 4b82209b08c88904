"""Hand-made records for tests and examples (no simulator needed).

:func:`make_record` builds a CONTRACT-shaped record of one motion class from a simple analytic
range profile (not orbital mechanics: just the range shape the class is defined by), with
features computed from that profile so that every number a prompt or rationale quotes is
checkable. :func:`make_text_record` builds an imported, text-only record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_prep.features import range_trend
from data_prep.labelling import DEFAULT_THRESHOLDS
from data_prep.taxonomy import MOTION_LABELS

#: A plausible (operation, task) per motion class, for fixtures only (the real rules live in data_prep).
FIXTURE_LABELS: dict[str, tuple[str, str]] = {
    "hovering": ("photographing", "detection"),
    "flyby": ("photographing", "observation"),
    "fly_around": ("photographing", "surveillance"),
    "approach": ("none", "unclear"),
    "rendezvous": ("docking", "assistance"),
    "collision": ("none", "attack"),
    "retreat": ("none", "deterrence"),
    "random": ("communication", "interference"),
}


def _profile(motion: str, t: np.ndarray, scale: float) -> tuple[np.ndarray, int, list[float]]:
    """Range (m) over time for a motion class, its number of burns and its LVLH extents (m).

    Shapes and extents are chosen to satisfy ``data_prep.labelling.relabel_motion`` for the class.
    """
    T = float(t[-1])
    if motion == "hovering":
        return 1000.0 * scale + 0.5 * np.sin(2 * np.pi * t / T), 0, [2.0, 3.0, 1.0]
    if motion == "flyby":
        r = np.hypot(1500.0 * scale, 3.0 * scale * (t - 0.5 * T))
        return r, 0, [0.1 * r.min(), float(np.ptp(r)) + r.min(), 0.01 * r.min()]
    if motion == "fly_around":
        r = 800.0 * scale + 200.0 * scale * np.sin(2 * np.pi * t / T)
        return r, 0, [1.2 * r.min(), 2.4 * r.min(), 0.1 * r.min()]
    if motion == "approach":
        r = 5000.0 * scale * (1 - 0.72 * t / T)
        return r, 0, [0.05 * r[0], 0.72 * r[0], 0.01 * r[0]]
    if motion == "rendezvous":
        r = 5.0 + (3000.0 * scale - 5.0) * (1 - t / T) ** 2
        return r, 1, [0.05 * r[0], r[0], 0.01 * r[0]]
    if motion == "collision":
        r = np.maximum(0.5, 4500.0 * scale * (1 - t / T))
        return r, 0, [0.05 * r[0], r[0], 0.01 * r[0]]
    if motion == "retreat":
        r_in = 150.0 + (3000.0 * scale - 150.0) * (1 - t / (0.6 * T))
        r = np.where(t < 0.6 * T, r_in, 150.0 + 2.0 * (t - 0.6 * T))
        return r, 1, [0.1 * r[0], r[0], 0.01 * r[0]]
    if motion == "random":
        r = 2000.0 * scale + 300.0 * np.sin(5 * t / T) * np.cos(13 * t / T) + 0.05 * t
        return r, 3, [600.0, 900.0, 50.0]
    raise ValueError(f"unknown motion {motion!r}")


def make_features(t: np.ndarray, r: np.ndarray, rr: np.ndarray, n_burns: int, extent: list[float]) -> dict[str, Any]:
    """CONTRACT feature dict of a range profile (trend by ``data_prep.features.range_trend``)."""
    i = int(np.argmin(r))
    return {
        "initial_range_m": float(r[0]),
        "min_range_m": float(r[i]),
        "t_min_range_s": float(t[i]),
        "final_range_m": float(r[-1]),
        "final_speed_mps": float(abs(rr[-1])),
        "mean_range_rate_mps": float(np.mean(rr)),
        "extent_m": [float(e) for e in extent],
        "max_dv_mps": 2.0 if n_burns else 0.0,
        "n_burns": int(n_burns),
        "entered_keepout": bool(r.min() < DEFAULT_THRESHOLDS.keepout_radius_m),
        "range_trend": range_trend(r),
    }


def make_record(
    motion: str,
    sample_id: str | None = None,
    split: str = "train",
    scale: float = 1.0,
    cooperative: bool = False,
    equipment: str = "robotic_arm",
    n_points: int = 51,
) -> dict[str, Any]:
    """A simulator-like record of class ``motion`` (range profile over 3000 s)."""
    if motion not in MOTION_LABELS:
        raise ValueError(f"unknown motion {motion!r}")
    t = np.linspace(0.0, 3000.0, n_points)
    r, n_burns, extent = _profile(motion, t, scale)
    rr = np.gradient(r, t)
    if motion == "rendezvous":
        rr[-1] = -0.01  # comes to rest
    operation, task = FIXTURE_LABELS[motion]
    return {
        "sample_id": sample_id or f"fx-{motion}",
        "scenario_seed": 0,
        "split": split,
        "source": "fixture",
        "labels": {"motion": motion, "operation": operation, "task": task},
        "context": {
            "orbit": "LEO",
            "size": "large",
            "cooperative": cooperative,
            "equipment": equipment,
            "lighting": "full_sunlight",
            "electromagnetic": "optimal",
        },
        "observation": {
            "t_s": t.tolist(),
            "range_m": r.tolist(),
            "range_rate_mps": rr.tolist(),
            "az_deg": np.zeros_like(t).tolist(),
            "el_deg": np.zeros_like(t).tolist(),
        },
        "features": make_features(t, r, rr, n_burns, extent),
        "text": None,
        "rationale": None,
        "provenance": [],
    }


def make_text_record(sample_id: str = "imp-1", split: str = "train", rationale: str | None = None) -> dict[str, Any]:
    """An imported record: free-text known information, no observation/features."""
    return {
        "sample_id": sample_id,
        "scenario_seed": None,
        "split": split,
        "source": "import",
        "labels": {"motion": "flyby", "operation": "refuelling", "task": "unclear"},
        "context": None,
        "observation": None,
        "features": None,
        "text": (
            "The target continuously approaches our space station, reaches the closest distance, then gradually "
            "moves away. The target is a large cooperative spacecraft equipped with an operating robotic arm. "
            "Lighting: full sunlight; electromagnetic: optimal."
        ),
        "rationale": rationale,
        "provenance": [],
    }

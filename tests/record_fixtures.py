"""Tiny CONTRACT-shaped records for tests (no data_prep stage needed). Test-only: not shipped in a package.

* :func:`make_record` -- one motion class from a simple analytic range profile (not orbital
  mechanics: just the range shape the class is defined by), with features computed from that
  profile so that every number a prompt or rationale quotes is checkable;
* :func:`make_sim_record` / :func:`make_records` -- closed-form CW trajectories seen through the
  simulator's sensor model, features from :func:`data_prep.features.compute_features`, so
  evaluation code paths (perturbation, feature recomputation, the relabelling oracle) run on
  realistic records in milliseconds;
* :func:`make_text_record` -- an imported, text-only record;
* :func:`prompt_row` / :func:`write_fixture_dirs` -- prompts-stage rows and folders from records.

Operation and task labels always come from the simulator's rule tables (:func:`data_prep.rules.intents`),
so fixtures agree with what data_prep would label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data_prep.cw import orbit_mean_motion, propagate
from data_prep.features import compute_features, range_trend
from data_prep.oracle import DEFAULT_THRESHOLDS
from data_prep.rules import intents
from data_prep.sensor import SensorNoise, measure
from pipeline.core.answer import format_answer
from pipeline.core.io import write_jsonl
from pipeline.core.taxonomy import MOTION_LABELS
from prompts_cot.render import RenderOptions, options_to_dict, render_prompt


def make_context(cooperative: bool = False, equipment: str = "robotic_arm", size: str = "large") -> dict[str, Any]:
    """A record context (LEO, full sunlight, optimal electromagnetic environment)."""
    return {"orbit": "LEO", "size": size, "cooperative": cooperative, "equipment": equipment,
            "lighting": "full_sunlight", "electromagnetic": "optimal"}


def _profile(motion: str, t: np.ndarray, scale: float) -> tuple[np.ndarray, int, list[float]]:
    """Range (m) over time for a motion class, its number of burns and its LVLH extents (m).

    Shapes and extents are chosen to satisfy ``data_prep.oracle.relabel_motion`` for the class.
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
    context = make_context(cooperative, equipment)
    return {
        "sample_id": sample_id or f"fx-{motion}",
        "scenario_seed": 0,
        "split": split,
        "source": "fixture",
        "labels": intents(context, motion),
        "context": context,
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
    """An imported record: free-text known information, no observation/features (labels as an expert gave them)."""
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


# ------------------------------------------------------------------------------- CW-simulated records
#: motion -> (initial LVLH state x, y, z, vx, vy, vz as a function of n, window seconds)
_SCENARIOS = {
    # co-elliptic drift 2 km below the station: a straight pass along-track (flyby)
    "flyby": (lambda n: [-2000.0, -6000.0, 0.0, 0.0, 3000.0 * n, 0.0], 3540.0),
    # the same drift, window ending before the closest approach (approach)
    "approach": (lambda n: [-2000.0, -8000.0, 0.0, 0.0, 3000.0 * n, 0.0], 1500.0),
    # V-bar station keeping 1 km ahead (hovering)
    "hovering": (lambda n: [0.0, 1000.0, 0.0, 0.0, 0.0, 0.0], 1200.0),
}


def make_sim_record(motion: str, index: int = 0, split: str = "test", dt: float = 30.0) -> dict[str, Any]:
    """A data_prep-style simulator record of ``motion`` (flyby | approach | hovering); noise seeded by ``index``."""
    state_fn, window = _SCENARIOS[motion]
    n = orbit_mean_motion("LEO")
    steps = int(window // dt)
    states = propagate(np.array([state_fn(n)]), n, dt, steps)
    meas = measure(states, np.random.default_rng(index), SensorNoise())
    t = (np.arange(steps + 1) * dt).tolist()
    obs = {"t_s": t, **{k: [round(float(v), 4) for v in meas[k][0]] for k in
                        ("range_m", "range_rate_mps", "az_deg", "el_deg")}}
    context = make_context(cooperative=motion != "flyby")
    return {
        "sample_id": f"fx-{motion}-{index:04d}", "scenario_seed": index, "split": split, "source": "simulator",
        "labels": intents(context, motion), "context": context,
        "observation": obs, "features": compute_features(obs), "text": None, "rationale": None, "provenance": [],
    }


def make_records(n: int, split: str = "test") -> list[dict[str, Any]]:
    """``n`` simulator records cycling through the CW scenarios (flyby, approach, hovering)."""
    motions = list(_SCENARIOS)
    return [make_sim_record(motions[i % len(motions)], i, split) for i in range(n)]


# ------------------------------------------------------------------------------------ prompts rows
def prompt_row(record: dict[str, Any], variant: str, lang: str = "en") -> dict[str, Any]:
    """A prompts-stage row (docs/CONTRACT.md) for ``record``: plain = instruction prompt, cot = CoT prompt."""
    opts = RenderOptions(prompt_type="cot" if variant == "cot" else "instruction", lang=lang)
    return {"sample_id": record["sample_id"], "split": record["split"], "variant": variant,
            "prompt_type": opts.prompt_type, "lang": lang, "prompt": render_prompt(record, opts),
            # evaluation never reads the response; the answer line keeps the fixture independent of the rationale writer
            "response": format_answer(record["labels"], lang), "label": dict(record["labels"]),
            "template_hash": "fixture", "render": options_to_dict(opts)}


def write_fixture_dirs(root: Any, n: int = 6, variants: tuple[str, ...] = ("plain", "cot"), split: str = "test",
                       langs: tuple[str, ...] = ("en",)) -> tuple[Path, Path]:
    """Write ``records/<split>.jsonl`` and ``prompts/<variant>/<split>.jsonl`` under ``root``; return both dirs.

    Languages alternate over the records when several are given.
    """
    root = Path(root)
    records = make_records(n, split)
    write_jsonl(root / "records" / f"{split}.jsonl", records)
    for v in variants:
        write_jsonl(root / "prompts" / v / f"{split}.jsonl",
                    [prompt_row(r, v, langs[i % len(langs)]) for i, r in enumerate(records)])
    return root / "records", root / "prompts"

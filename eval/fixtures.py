"""Tiny simulated records for tests and smoke runs (no data_prep stage needed).

Three closed-form CW trajectories seen through the simulator's sensor model, with features from
:func:`data_prep.features.compute_features`, so evaluation code paths (perturbation, feature
recomputation, the relabelling oracle, rendering) run on realistic records in milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_prep.cw import orbit_mean_motion, propagate
from data_prep.features import compute_features
from data_prep.sensor import SensorNoise, measure

#: motion -> (initial LVLH state x, y, z, vx, vy, vz as a function of n, window seconds)
_SCENARIOS = {
    # co-elliptic drift 2 km below the station: a straight pass along-track (flyby)
    "flyby": (lambda n: [-2000.0, -6000.0, 0.0, 0.0, 3000.0 * n, 0.0], 3540.0),
    # the same drift, window ending before the closest approach (approach)
    "approach": (lambda n: [-2000.0, -8000.0, 0.0, 0.0, 3000.0 * n, 0.0], 1500.0),
    # V-bar station keeping 1 km ahead (hovering)
    "hovering": (lambda n: [0.0, 1000.0, 0.0, 0.0, 0.0, 0.0], 1200.0),
}
_LABELS = {
    "flyby": {"motion": "flyby", "operation": "photographing", "task": "observation"},
    "approach": {"motion": "approach", "operation": "docking", "task": "support"},
    "hovering": {"motion": "hovering", "operation": "communication", "task": "surveillance"},
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
    return {
        "sample_id": f"fx-{motion}-{index:04d}", "scenario_seed": index, "split": split, "source": "simulator",
        "labels": dict(_LABELS[motion]),
        "context": {"orbit": "LEO", "size": "large", "cooperative": motion != "flyby", "equipment": "robotic_arm",
                    "lighting": "full_sunlight", "electromagnetic": "optimal"},
        "observation": obs, "features": compute_features(obs), "text": None, "rationale": None, "provenance": [],
    }


def make_text_record(index: int = 0, split: str = "test") -> dict[str, Any]:
    """An imported free-text record (no observation/features; operation and task unknown)."""
    return {
        "sample_id": f"fx-text-{index:04d}", "scenario_seed": None, "split": split, "source": "import",
        "labels": {"motion": "flyby", "operation": None, "task": None}, "context": None, "observation": None,
        "features": None, "rationale": None, "provenance": [],
        "text": "The target continuously approaches our space station, reaches the closest distance of "
                "1500 m, then gradually moves away.",
    }


def make_records(n: int, split: str = "test") -> list[dict[str, Any]]:
    """``n`` simulator records cycling through the fixture motions."""
    motions = list(_SCENARIOS)
    return [make_sim_record(motions[i % len(motions)], i, split) for i in range(n)]


__all__ = ["make_records", "make_sim_record", "make_text_record", "prompt_row", "write_fixture_dirs"]


def prompt_row(record: dict[str, Any], variant: str, lang: str = "en") -> dict[str, Any]:
    """A prompts-stage row (docs/CONTRACT.md) for ``record``: plain = instruction prompt, cot = CoT prompt."""
    from prompts_cot.render import RenderOptions, format_answer, options_to_dict, render_prompt

    opts = RenderOptions(prompt_type="cot" if variant == "cot" else "instruction", lang=lang)
    return {"sample_id": record["sample_id"], "split": record["split"], "variant": variant,
            "prompt_type": opts.prompt_type, "lang": lang, "prompt": render_prompt(record, opts),
            # evaluation never reads the response; the answer line keeps the fixture independent of the rationale writer
            "response": format_answer(record["labels"], lang), "label": dict(record["labels"]),
            "template_hash": "fixture", "render": options_to_dict(opts)}


def write_fixture_dirs(root: Any, n: int = 6, variants: tuple[str, ...] = ("plain", "cot"), split: str = "test",
                       langs: tuple[str, ...] = ("en",)) -> tuple[Any, Any]:
    """Write ``records/<split>.jsonl`` and ``prompts/<variant>/<split>.jsonl`` under ``root``; return both dirs.

    Languages alternate over the records when several are given.
    """
    from pathlib import Path

    from pipeline.io import write_jsonl

    root = Path(root)
    records = make_records(n, split)
    write_jsonl(root / "records" / f"{split}.jsonl", records)
    for v in variants:
        write_jsonl(root / "prompts" / v / f"{split}.jsonl",
                    [prompt_row(r, v, langs[i % len(langs)]) for i, r in enumerate(records)])
    return root / "records", root / "prompts"

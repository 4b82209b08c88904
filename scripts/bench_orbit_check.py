"""How often the orbit-vs-dynamics check (data_prep.tracks.check_orbit_dynamics) refuses or warns.

Usage: python scripts/bench_orbit_check.py [--seeds 3]
Simulates tracks of every motion class with the wide simulator (7 track settings: LEO and GEO,
cadences 10-300 s, windows 0.3-2 orbits, jitter and gaps, sensor noise), reads each once as its
own orbit and once as the other one, and counts ok / warn / refused per (true orbit, declared
orbit). Prints a JSON table; the numbers in docs/reliability.md come from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter

import numpy as np

from data_prep import cw, wide
from data_prep.features import compute_features
from data_prep.sensor import SensorNoise, measure
from data_prep.tracks import _observation, check_orbit_dynamics
from pipeline.core.io import DataError

MOTIONS = ("hovering", "approach", "retreat", "flyby", "rendezvous", "random", "fly_around", "collision")
SETTINGS = (("LEO", 30.0, 1.0, "jitter"), ("LEO", 60.0, 0.5, "gaps"), ("LEO", 10.0, 0.5, "jitter"),
            ("LEO", 60.0, 2.0, "jitter_gaps"), ("GEO", 240.0, 1.0, "jitter"), ("GEO", 300.0, 0.6, "jitter_gaps"),
            ("GEO", 60.0, 0.3, "uniform"))
MIX = wide.ManoeuvreMix(hovering_impulsive=1.0, approach_burns=1.0, rendezvous_burns=1.0, collision_burns=1.0,
                        retreat_setup=1.0)


def simulate(motion: str, orbit: str, orbits: float, cadence: float, sampling: str, seed: int) -> dict:
    """A noisy sensor-form observation of one simulated track."""
    period = 2 * math.pi / cw.orbit_mean_motion(orbit)
    settings = wide.TrackSettings(orbit, round(orbits * period, 1), cadence, sampling)
    rng = np.random.default_rng(seed)
    sim = wide.make_sim(settings, 1e-6, rng)
    states = wide.generate(motion, sim, 1, 1, MIX)[0]
    idx = wide.sample_indices(rng, settings)
    m = measure(states[None, idx], rng, SensorNoise())
    t = np.arange(sim.n_steps + 1)[idx] * sim.dt
    return _observation(t, m["range_m"][0], m["range_rate_mps"][0], m["az_deg"][0], m["el_deg"][0], orbit)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("data_prep.tracks").addHandler(Collect())
    counts: Counter = Counter()
    flagged_own: Counter = Counter()  # motion classes flagged when read as their own orbit
    start = time.perf_counter()
    for orbit, cadence, orbits, sampling in SETTINGS:
        for motion in MOTIONS:
            for seed in range(args.seeds):
                obs = simulate(motion, orbit, orbits, cadence, sampling, seed)
                for declared in ("LEO", "GEO"):
                    read = {**obs, "orbit": declared}
                    seen = len(warnings)
                    try:
                        check_orbit_dynamics("sim", 1, motion, read, compute_features(read))
                        outcome = "warn" if len(warnings) > seen else "ok"
                    except DataError:
                        outcome = "refused"
                    counts[f"{orbit} read as {declared}: {outcome}"] += 1
                    if declared == orbit and outcome != "ok":
                        flagged_own[f"{orbit} {motion}: {outcome}"] += 1
    print(json.dumps({"tracks": sum(counts.values()) // 2, "seconds": round(time.perf_counter() - start, 1),
                      "counts": dict(sorted(counts.items())),
                      "flagged_as_own_orbit": dict(sorted(flagged_own.items()))}, indent=2))


if __name__ == "__main__":
    main()

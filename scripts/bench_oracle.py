"""Agreement of the motion oracle with the generating class on a freshly simulated mixed set.

Usage: python scripts/bench_oracle.py [--config data_prep/configs/wide.yaml] [--scenarios 100]
       [--seed 20260] [--lookalikes 50] [--out runs/bench/oracle.json]

Draws ``scenarios`` scenarios per motion class (x ``variants_per_scenario`` tracks) with the
config's simulator settings and a fresh seed, computes every track's features from its noisy
observation and relabels it with :func:`data_prep.oracle.relabel_motion`; nothing is dropped.
Writes the agreement overall and per class, the confusion counts, and the agreement per orbit,
sampling style, window (orbits) and cadence bin. Then the look-alike families of
``tests/lookalikes.py`` (tracks simulated independently of data_prep: swing-out approaches,
retreats after an in-window set-up burn), ``lookalikes`` tracks per family and form (LVLH
states, sensor form with that module's own noise model), written as JSONL track files and read
back with :func:`data_prep.tracks.read_tracks` (the classify path): agreement per family and form.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep import cw  # noqa: E402
from data_prep.features import compute_features  # noqa: E402
from data_prep.oracle import relabel_motion  # noqa: E402
from data_prep.tracks import read_tracks  # noqa: E402
from data_prep.stage import DataPrepConfig, simulate_tracks  # noqa: E402
from pipeline.core.taxonomy import MOTION_LABELS  # noqa: E402
from pipeline.core.config import load_config  # noqa: E402
from pipeline.core.io import write_json  # noqa: E402


def _bin(value: float, edges: list[float]) -> str:
    """Label of the bin of ``value`` between consecutive ``edges``."""
    for lo, hi in zip(edges[:-1], edges[1:]):
        if value < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def _rate(c: Counter) -> dict[str, float | int]:
    return {"n": c["n"], "agree": round(c["ok"] / max(c["n"], 1), 4)}


def lookalike_agreement(count: int, seed: int) -> dict[str, dict]:
    """Agreement on ``count`` independently simulated look-alike tracks per family and form."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import lookalikes  # noqa: PLC0415 (a test helper, not a package module)

    out: dict[str, dict] = {}
    total = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for family, motion in lookalikes.FAMILIES.items():
            out[family] = {"motion": motion}
            for form in lookalikes.FORMS:
                path = lookalikes.write_family(Path(tmp) / f"{family}-{form}.jsonl", family, form, count, seed)
                labels = Counter(str(relabel_motion(r["features"])) for r in read_tracks(path))
                c = Counter(n=count, ok=labels[motion])
                total.update(c)
                out[family][form] = {**_rate(c), "labels": dict(sorted(labels.items()))}
    out["all"] = _rate(total)
    return out


def main() -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="data_prep/configs/wide.yaml")
    parser.add_argument("--scenarios", type=int, default=100, help="scenarios per motion class")
    parser.add_argument("--seed", type=int, default=20260, help="fresh seed (not the config's)")
    parser.add_argument("--lookalikes", type=int, default=50, help="look-alike tracks per family and form (0: none)")
    parser.add_argument("--out", default="runs/bench/oracle.json")
    parser.add_argument("--dump", default=None, help="optional JSONL of every miss (features, settings)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(DataPrepConfig, args.config, [f"seed={args.seed}"])
    t0 = time.perf_counter()
    per_class: dict[str, Counter] = defaultdict(Counter)
    confusion: dict[str, Counter] = defaultdict(Counter)
    by_setting: dict[str, Counter] = defaultdict(Counter)
    misses = []
    for class_idx, motion in enumerate(cfg.motions):
        observations, _ = simulate_tracks(cfg, MOTION_LABELS.index(motion), motion, 0, args.scenarios)
        for obs in observations:
            f = compute_features(obs, th=cfg.thresholds)
            label = relabel_motion(f, cfg.thresholds)
            ok = label == motion
            per_class[motion]["n"] += 1
            per_class[motion]["ok"] += ok
            confusion[motion][str(label)] += 1
            period = 2 * np.pi / cw.orbit_mean_motion(f.get("orbit", cfg.orbit))
            window = f.get("window_s", obs["t_s"][-1] - obs["t_s"][0])
            keys = [f"orbit={f.get('orbit', cfg.orbit)}",
                    f"window_orbits={_bin(window / period, [0.5, 1.0, 1.5, 2.05])}",
                    f"cadence_s={_bin(float(np.median(np.diff(obs['t_s']))), [10, 20, 40, 80, 120])}"]
            for key in keys:
                by_setting[key]["n"] += 1
                by_setting[key]["ok"] += ok
            if not ok and args.dump:
                misses.append({"motion": motion, "label": label, "features": f})
    total = Counter()
    for c in per_class.values():
        total.update(c)
    looks = lookalike_agreement(args.lookalikes, args.seed) if args.lookalikes > 0 else {}
    report = {
        "config": args.config, "seed": args.seed, "scenarios_per_class": args.scenarios,
        "variants_per_scenario": cfg.variants_per_scenario, "simulator": cfg.simulator,
        "agreement": _rate(total),
        "per_class": {m: _rate(per_class[m]) for m in cfg.motions},
        "confusion": {m: dict(sorted(confusion[m].items())) for m in cfg.motions},
        "by_setting": {k: _rate(by_setting[k]) for k in sorted(by_setting)},
        "lookalikes": looks,
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_count": os.cpu_count(), "machine": platform.platform(),
        "manoeuvres": dataclasses.asdict(cfg.manoeuvres),
    }
    write_json(args.out, report)
    if args.dump:
        Path(args.dump).parent.mkdir(parents=True, exist_ok=True)
        with open(args.dump, "w", encoding="utf-8") as fh:
            for m in misses:
                fh.write(json.dumps(m) + "\n")
    keys = ("agreement", "per_class", "confusion", "by_setting", "lookalikes", "seconds")
    print(json.dumps({k: report[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the data_prep stage on N simulated samples and record throughput and peak memory.

Usage: python scripts/bench_data_prep.py [N] [--out runs/bench/data_prep.json]
Runs the real stage (simulation, sensor model, features, relabelling, splits, writing)
into a temporary folder and writes {samples, seconds, samples_per_s, peak_rss_mb, ...}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep.stage import STAGE, DataPrepConfig  # noqa: E402
from pipeline.core.config import load_config  # noqa: E402
from pipeline.core.io import write_json  # noqa: E402


def main() -> int:
    """Run the benchmark; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", nargs="?", type=int, default=50688, help="samples to generate (default 50688)")
    parser.add_argument("--out", default="runs/bench/data_prep.json")
    parser.add_argument("--config", default="data_prep/configs/paper.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(DataPrepConfig, args.config, [f"n_samples={args.n}", f"out_dir={tmp}"])
        t0 = time.perf_counter()
        result = STAGE.run(cfg)
        seconds = time.perf_counter() - t0
        out_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report = {
        "samples": args.n,
        "seconds": round(seconds, 2),
        "generation_seconds": result.stats.get("generation_seconds"),
        "samples_per_s": round(args.n / seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "output_mb": round(out_bytes / 2**20, 1),
        "dropped_total": result.stats.get("dropped_total"),
        "rows": result.stats.get("rows"),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Plot a train stage's dev accuracy against training steps (the README's learning curve).

    python scripts/plot_learning_curve.py runs/demo/train_curve --mark 300 --label "P-Tuning v2, demo recipe" \
        --out docs/results/learning_curve

Reads ``<train_dir>/metrics.jsonl`` (the ``kind: eval`` rows: dev accuracy per level and joint, the dev rows and
how they were answered), writes ``<out>.png`` (the same plot the evaluate report draws) and ``<out>.json`` (the
points, the run's config and the command), so the figure can be checked against its numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.report import plot_learning_curves  # noqa: E402
from pipeline.core.io import read_jsonl, write_json  # noqa: E402


def curve_points(train_dir: Path) -> list[dict]:
    """The dev-evaluation rows of a train run, in step order."""
    rows = [row for _, row in read_jsonl(Path(train_dir) / "metrics.jsonl") if row.get("kind") == "eval"]
    return sorted(({k: v for k, v in r.items() if k != "kind"} for r in rows), key=lambda r: r["step"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_dir", type=Path, help="a train stage's out_dir (holds metrics.jsonl)")
    ap.add_argument("--mark", type=int, default=None, help="step to mark (e.g. where the demo stops)")
    ap.add_argument("--label", default="tuned", help="the curve's title")
    ap.add_argument("--mark-label", default="demo stops", help="legend text of the marked step")
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix (.png and .json are written)")
    args = ap.parse_args(argv)
    points = curve_points(args.train_dir)
    if not any(p.get("dev_acc") is not None for p in points):
        print(f"error: {args.train_dir / 'metrics.jsonl'} has no dev accuracy rows", file=sys.stderr)
        return 2
    curves = {args.label: {"points": points, "evaluated_step": args.mark, "mark_label": args.mark_label}}
    png = plot_learning_curves({"learning_curves": curves})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".png").write_bytes(base64.b64decode(png))
    config = json.loads((args.train_dir / "train_config.json").read_text()) if (
        args.train_dir / "train_config.json").exists() else None
    write_json(args.out.with_suffix(".json"), {"command": " ".join(sys.argv), "train_dir": str(args.train_dir),
                                               "marked_step": args.mark, "points": points, "train_config": config})
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')} ({len(points)} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: evaluation throughput — label scoring vs batched generation vs one-at-a-time generation.

Uses the prompts stage's rows (default the demo's plain test split) and the embedded default
model with a trained prefix when one exists. The prefix key/values are computed once per batch
and shared across its rows (``AdaptedLM.new_cache`` expands a view, no copy). Writes JSON
(default runs/bench/eval.json).

    python scripts/bench_eval.py                                   # smollm2, 16 demo prompts
    python scripts/bench_eval.py --model tiny:llama --n 8          # quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.core.io import load_jsonl, write_json  # noqa: E402
from pipeline.methods import method_config_path  # noqa: E402
from pipeline.models.lm import load_model  # noqa: E402
from pipeline.models.scoring import benchmark_throughput  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--prefix-dir", default=str(ROOT / "runs" / "demo" / "train" / "best"),
                   help="trained prefix (ignored when missing: the base model is measured)")
    p.add_argument("--prompts", default=str(ROOT / "runs" / "demo" / "prompts" / "plain" / "test.jsonl"))
    p.add_argument("--n", type=int, default=16, help="number of prompts")
    p.add_argument("--n-single", type=int, default=8, help="prompts for the one-at-a-time run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "eval.json"))
    args = p.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    rows = load_jsonl(args.prompts)[: args.n]
    prefix_dir = args.prefix_dir if method_config_path(args.prefix_dir).exists() else None  # any method's folder
    lm, tok = load_model(args.model, checkpoint=prefix_dir)
    result = benchmark_throughput(lm, tok, [r["prompt"] for r in rows], [r.get("lang", "en") for r in rows],
                                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  n_single=args.n_single)
    result.update({
        "benchmark": "evaluation throughput (examples/s)",
        "command": " ".join(["python"] + sys.argv),
        "model": args.model, "prefix_dir": prefix_dir, "pre_seq_len": lm.pre_seq_len, "prompts": args.prompts,
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "score_vs_batched_generation": result["score_examples_per_s"] / result["generate_batched_examples_per_s"],
        "batched_vs_single_generation": result["generate_batched_examples_per_s"]
        / result["generate_single_examples_per_s"],
    })
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

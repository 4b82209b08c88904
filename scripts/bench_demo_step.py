"""Benchmark: what each lever of the CPU demo recipe does to the P-Tuning v2 training step.

Variants of one step (forward + backward + AdamW) on the embedded SmolLM2-135M, batch 8, the demo's prefix
length, timed in alternating rounds in one process (machine load hits every variant alike) and reported as
ratios to the first (the demo recipe):

* ``demo``: bf16 base, empty system turn (source ~103 tokens), prefix trained in the top ``--train-layers``;
* ``all layers``: the same with every layer's prefix trained;
* ``domain system prompt``: the same as ``demo`` with the default system turn (+24 source tokens);
* ``float32``: the same as ``demo`` with a float32 base.

    python scripts/bench_demo_step.py                      # ~3 min on 2 cores
    python scripts/bench_demo_step.py --rounds 2 --steps 1 --model tiny:llama   # quick check

Writes JSON (default runs/bench/demo_step.json) and prints a Markdown table.
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
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train_step import make_batch, make_step, time_steps  # noqa: E402

from pipeline.core.io import write_json  # noqa: E402
from pipeline.methods import MethodConfig, build_adapters  # noqa: E402
from pipeline.methods.base import arch_facts  # noqa: E402
from pipeline.methods.ptuning_v2 import PrefixConfig  # noqa: E402
from pipeline.models.lm import AdaptedLM, load_base_model  # noqa: E402
from pipeline.models.store import resolve_model_dir  # noqa: E402

log = logging.getLogger("bench_demo_step")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--source", type=int, default=103, help="prompt tokens with the empty system turn")
    p.add_argument("--system-tokens", type=int, default=24, help="tokens the default system turn adds")
    p.add_argument("--target", type=int, default=16)
    p.add_argument("--pre-seq-len", type=int, default=330)
    p.add_argument("--train-layers", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "demo_step.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bases = {dt: load_base_model(resolve_model_dir(args.model), dtype=dt) for dt in ("bfloat16", "float32")}
    layers = arch_facts(bases["bfloat16"].config).num_layers
    top = min(args.train_layers, layers)
    # name -> (base dtype, source tokens, trained layers)
    variants = {"demo": ("bfloat16", args.source, top),
                "all layers": ("bfloat16", args.source, None),
                "domain system prompt": ("bfloat16", args.source + args.system_tokens, top),
                "float32": ("float32", args.source, top)}
    steps, batches = {}, {}
    for name, (dtype, source, train_layers) in variants.items():
        model = bases[dtype]
        cfg = MethodConfig(name="ptuning_v2", ptuning_v2=PrefixConfig(pre_seq_len=args.pre_seq_len,
                                                                      train_layers=train_layers))
        lm = AdaptedLM(model, build_adapters(cfg, model, arch_facts(model.config))).train()
        steps[name] = make_step(lm, 0.01)
        batches[name] = make_batch(model.config.vocab_size, args.batch, source, args.target, "cpu")
        steps[name](batches[name])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in variants:
            times[name].append(time_steps(steps[name], batches[name], args.steps, "cpu"))
        log.info("round %d: %s", r + 1, {k: round(v[-1], 2) for k, v in times.items()})
    best = {name: min(t) for name, t in times.items()}
    result = {"command": "python scripts/bench_demo_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "args": vars(args), "layers": layers,
              "variants": {name: {"dtype": v[0], "source_tokens": v[1], "train_layers": v[2],
                                  "seconds_per_step": best[name], "ratio_to_demo": best[name] / best["demo"]}
                           for name, v in variants.items()}}
    write_json(Path(args.out), result)
    print("| variant | base dtype | source tokens | trained layers | s/step (best round) | × demo |")
    print("|---|---|---|---|---|---|")
    for name, v in result["variants"].items():
        print(f"| {name} | {v['dtype']} | {v['source_tokens']} | {v['train_layers'] or layers} | "
              f"{v['seconds_per_step']:.2f} | {v['ratio_to_demo']:.2f} |")
    print(json.dumps({"out": args.out}))
    return result


if __name__ == "__main__":
    main()

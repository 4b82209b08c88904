"""Benchmark: one P-Tuning v2 training step, ours (pipeline.models.lm.PrefixLM) vs PEFT PrefixTuning.

Same base model, batch, sequence length and prefix length; the two are timed alternately
in one process (so machine load hits both alike), then each is run alone in a fresh
subprocess to measure the memory its training steps add. Writes JSON (default runs/bench/train_step.json).

    python scripts/bench_train_step.py                       # embedded default smollm2 on CPU
    python scripts/bench_train_step.py --model tiny:llama --rounds 2 --steps 2   # quick check
    python scripts/bench_train_step.py --device cuda --dtype bfloat16 --batch 8   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.core.io import write_json  # noqa: E402
from pipeline.methods.ptuning_v2 import PrefixConfig  # noqa: E402
from pipeline.models.lm import PrefixLM, load_base_model  # noqa: E402
from pipeline.models.store import resolve_model_dir  # noqa: E402

log = logging.getLogger("bench_train_step")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_batch(vocab: int, batch: int, source: int, target: int, device: str) -> dict[str, torch.Tensor]:
    """Random ids ``(B, S+T)``; labels -100 on the source so the loss covers the target only."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab - 10, (batch, source + target), generator=g)
    labels = ids.clone()
    labels[:, :source] = -100
    mask = torch.ones_like(ids)
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def build_ours(model: torch.nn.Module, pre_seq_len: int, projection: bool) -> torch.nn.Module:
    """Our PrefixLM around ``model``."""
    lm = PrefixLM(model, PrefixConfig(pre_seq_len=pre_seq_len, prefix_projection=projection))
    lm.prefix.to(next(model.parameters()).device)
    return lm.train()


def build_peft(model: torch.nn.Module, pre_seq_len: int, projection: bool) -> torch.nn.Module:
    """PEFT's PrefixTuning around a copy of ``model`` (PEFT wraps/mutates its base)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    cfg = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pre_seq_len,
                             prefix_projection=projection,
                             encoder_hidden_size=model.config.hidden_size)
    return get_peft_model(copy.deepcopy(model), cfg).train()


def make_step(lm: torch.nn.Module, lr: float):
    """A closure doing forward + backward + AdamW step on the trainable parameters."""
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def step(batch: dict[str, torch.Tensor]) -> float:
        out = lm(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, batch, n: int, device: str) -> float:
    """Mean seconds per step over ``n`` steps."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step(batch)
    sync(device)
    return (time.perf_counter() - t0) / n


def peak_memory_alone(args: argparse.Namespace, which: str) -> float:
    """Peak memory (MiB) of a fresh process running only ``which`` for a few steps."""
    cmd = [sys.executable, __file__, "--only", which, "--model", args.model, "--batch", str(args.batch),
           "--source", str(args.source), "--target", str(args.target), "--pre-seq-len", str(args.pre_seq_len),
           "--device", args.device, "--dtype", args.dtype, "--steps", "2"]
    if args.projection:
        cmd.append("--projection")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def run_only(args: argparse.Namespace) -> None:
    """Child mode: build one variant, run a few steps, print the memory the steps add.

    CPU: resident memory sampled every 2 ms during the steps, minus the resident memory just before
    them (the process-lifetime peak is dominated by loading the weights, identical for both
    variants). CUDA: peak allocated memory during the steps.
    """
    import threading

    import psutil

    model = load_base_model(resolve_model_dir(args.model), dtype=args.dtype, device=args.device)
    lm = (build_ours if args.only == "ours" else build_peft)(model, args.pre_seq_len, args.projection)
    batch = make_batch(model.config.vocab_size, args.batch, args.source, args.target, args.device)
    step = make_step(lm, 2e-2)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(args.steps):
        step(batch)
    done.set()
    sampler.join()
    if args.device.startswith("cuda"):
        added = torch.cuda.max_memory_allocated() / 2**20
    else:
        added = (peak[0] - base) / 2**20
    print(json.dumps({"peak_mib": added, "rss_before_steps_mib": base / 2**20}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--source", type=int, default=256)
    p.add_argument("--target", type=int, default=128)
    p.add_argument("--pre-seq-len", type=int, default=128)
    p.add_argument("--projection", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory subprocesses")
    p.add_argument("--memory-only", action="store_true", help="only the per-variant memory subprocesses")
    p.add_argument("--only", choices=["ours", "peft"], help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "train_step.json"))
    args = p.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    if args.only:
        run_only(args)
        return

    if args.memory_only:
        mem = {name: peak_memory_alone(args, name) for name in ("ours", "peft")}
        out = Path(args.out)
        result = json.loads(out.read_text()) if out.exists() else {}
        result["step_memory_mib"] = mem
        result["step_memory_ratio_peft_over_ours"] = mem["peft"] / mem["ours"]
        result["step_memory_note"] = "memory the training steps add on top of the loaded model (RSS sampled on CPU)"
        result.pop("peak_mib", None)
        result.pop("memory_ratio_peft_over_ours", None)
        write_json(out, result)
        print(json.dumps(mem))
        return
    model = load_base_model(resolve_model_dir(args.model), dtype=args.dtype, device=args.device)
    variants = {"ours": build_ours(model, args.pre_seq_len, args.projection),
                "peft": build_peft(model, args.pre_seq_len, args.projection)}
    batch = make_batch(model.config.vocab_size, args.batch, args.source, args.target, args.device)
    steps = {name: make_step(lm, 2e-2) for name, lm in variants.items()}
    for name, step in steps.items():
        for _ in range(args.warmup):
            step(batch)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # alternate who goes first
        for name in order:
            times[name].append(time_steps(steps[name], batch, args.steps, args.device))
        log.info("round %d: %s", r, {k: round(v[-1], 3) for k, v in times.items()})
    tokens = args.batch * (args.source + args.target)
    result: dict = {
        "benchmark": "p-tuning v2 training step, ours vs PEFT PrefixTuning",
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "setting": {"model": args.model, "batch": args.batch, "source": args.source, "target": args.target,
                    "pre_seq_len": args.pre_seq_len, "projection": args.projection, "dtype": args.dtype},
        "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "all_seconds_per_step": times,
    }
    result["tokens_per_s"] = {k: tokens / v for k, v in result["seconds_per_step"].items()}
    result["speed_ratio_ours_over_peft"] = result["tokens_per_s"]["ours"] / result["tokens_per_s"]["peft"]
    if not args.no_memory:
        del variants, steps
        result["step_memory_mib"] = {name: peak_memory_alone(args, name) for name in ("ours", "peft")}
        result["step_memory_ratio_peft_over_ours"] = result["step_memory_mib"]["peft"] / result["step_memory_mib"]["ours"]
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in result if k not in {"all_seconds_per_step"}}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: one training step per tuning method, ours (pipeline.models.lm.AdaptedLM) vs PEFT's implementation.

Same base model, batch, sequence length and number of virtual tokens; ours and PEFT's are timed
alternately in one process (so machine load hits both alike), then each is run alone in a fresh
subprocess to measure the memory its training steps add. Writes JSON (default runs/bench/train_step.json).

``--method`` picks the method (default ``ptuning_v2``: P-Tuning v2 vs PEFT ``PrefixTuning``); ``all`` runs a
row per method -- ptuning_v2 / prefix_tuning (PEFT ``PrefixTuning`` with projection) / prompt_tuning (PEFT
``PromptTuning``) / ptuning_v1 (PEFT ``PromptEncoder``, MLP) / lora (PEFT ``LoraModel``) -- and prints a
Markdown table, including our P-Tuning v2 vs our LoRA step time.

    python scripts/bench_train_step.py                       # embedded default smollm2 on CPU
    python scripts/bench_train_step.py --method all --no-memory --rounds 2 --steps 2
    python scripts/bench_train_step.py --method ptuning_v2_vs_lora --rounds 2 --steps 2
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
from pipeline.methods import MethodConfig, build_adapters, method_names  # noqa: E402
from pipeline.methods.base import arch_facts  # noqa: E402
from pipeline.methods.lora import LoraConfig  # noqa: E402
from pipeline.methods.prefix_tuning import PrefixTuningConfig  # noqa: E402
from pipeline.methods.prompt_tuning import PromptTuningConfig  # noqa: E402
from pipeline.methods.ptuning_v1 import PTuningV1Config  # noqa: E402
from pipeline.methods.ptuning_v2 import PrefixConfig  # noqa: E402
from pipeline.models.lm import AdaptedLM, load_base_model  # noqa: E402
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


#: PEFT's implementation of each method (what the ratio is measured against)
PEFT_NAMES = {"ptuning_v2": "PrefixTuning", "prefix_tuning": "PrefixTuning (projection)",
              "prompt_tuning": "PromptTuning", "ptuning_v1": "PromptEncoder (MLP)", "lora": "LoraModel"}
PREFIX_HIDDEN = 512  # prefix_tuning's MLP width (Li & Liang), both sides
LORA = LoraConfig(r=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"))


def method_config(method: str, pre_seq_len: int, projection: bool) -> MethodConfig:
    """Our settings of ``method`` for the benchmark (the same shapes as :func:`build_peft`)."""
    settings = {"ptuning_v2": PrefixConfig(pre_seq_len=pre_seq_len, prefix_projection=projection),
                "prefix_tuning": PrefixTuningConfig(pre_seq_len=pre_seq_len, prefix_hidden_size=PREFIX_HIDDEN),
                "prompt_tuning": PromptTuningConfig(pre_seq_len=pre_seq_len),
                "ptuning_v1": PTuningV1Config(pre_seq_len=pre_seq_len, encoder="mlp"),
                "lora": LORA}[method]
    return MethodConfig(name=method, **{method: settings})


def build_ours(model: torch.nn.Module, pre_seq_len: int, projection: bool, method: str = "ptuning_v2") -> torch.nn.Module:
    """Our AdaptedLM with ``method`` around ``model`` (a copy for LoRA, which is injected into its model)."""
    if method == "lora":
        model = copy.deepcopy(model)
    adapters = build_adapters(method_config(method, pre_seq_len, projection), model, arch_facts(model.config))
    return AdaptedLM(model, adapters).train()


def build_peft(model: torch.nn.Module, pre_seq_len: int, projection: bool, method: str = "ptuning_v2") -> torch.nn.Module:
    """PEFT's implementation of ``method`` around a copy of ``model`` (PEFT wraps/mutates its base)."""
    from peft import LoraConfig as PeftLora
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    common = {"task_type": TaskType.CAUSAL_LM}
    if method == "ptuning_v2":
        cfg = PrefixTuningConfig(**common, num_virtual_tokens=pre_seq_len, prefix_projection=projection,
                                 encoder_hidden_size=model.config.hidden_size)
    elif method == "prefix_tuning":
        cfg = PrefixTuningConfig(**common, num_virtual_tokens=pre_seq_len, prefix_projection=True,
                                 encoder_hidden_size=PREFIX_HIDDEN)
    elif method == "prompt_tuning":
        cfg = PromptTuningConfig(**common, num_virtual_tokens=pre_seq_len)
    elif method == "ptuning_v1":
        cfg = PromptEncoderConfig(**common, num_virtual_tokens=pre_seq_len, encoder_reparameterization_type="MLP",
                                  encoder_hidden_size=model.config.hidden_size)
    else:
        cfg = PeftLora(**common, r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout,
                       target_modules=list(LORA.target_modules))
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
    cmd = [sys.executable, __file__, "--only", which, "--method", args.method, "--model", args.model,
           "--batch", str(args.batch),
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
    lm = (build_ours if args.only == "ours" else build_peft)(model, args.pre_seq_len, args.projection, args.method)
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


def machine(args: argparse.Namespace) -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(), "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}


def setting(args: argparse.Namespace) -> dict:
    return {"model": args.model, "batch": args.batch, "source": args.source, "target": args.target,
            "pre_seq_len": args.pre_seq_len, "projection": args.projection, "dtype": args.dtype}


def time_method(args: argparse.Namespace, model: torch.nn.Module, method: str) -> dict:
    """Alternating timing of ours vs PEFT for ``method``: median s/step, tokens/s and the speed ratio."""
    variants = {"ours": build_ours(model, args.pre_seq_len, args.projection, method),
                "peft": build_peft(model, args.pre_seq_len, args.projection, method)}
    result: dict = {"method": method, "peft": PEFT_NAMES[method], **time_variants(args, model, variants, method)}
    result["speed_ratio_ours_over_peft"] = result["tokens_per_s"]["ours"] / result["tokens_per_s"]["peft"]
    return result


def time_ptuning_v2_vs_lora(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    """Our P-Tuning v2 (``pre_seq_len`` virtual tokens) and our LoRA, timed alternately like ours vs PEFT."""
    variants = {"ptuning_v2": build_ours(model, args.pre_seq_len, args.projection, "ptuning_v2"),
                "lora": build_ours(model, args.pre_seq_len, args.projection, "lora")}
    result = time_variants(args, model, variants, "ptuning_v2 vs lora")
    result["step_time_ratio_ptuning_v2_over_lora"] = (result["seconds_per_step"]["ptuning_v2"]
                                                      / result["seconds_per_step"]["lora"])
    return result


def time_variants(args: argparse.Namespace, model: torch.nn.Module, variants: dict[str, torch.nn.Module],
                  label: str) -> dict:
    """Warm up, then time the variants in alternating rounds (who goes first alternates too)."""
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
        log.info("%s round %d: %s", label, r, {k: round(v[-1], 3) for k, v in times.items()})
    tokens = args.batch * (args.source + args.target)
    result: dict = {"trainable_params": {k: sum(p.numel() for p in lm.parameters() if p.requires_grad)
                                         for k, lm in variants.items()},
                    "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
                    "all_seconds_per_step": times}
    result["tokens_per_s"] = {k: tokens / v for k, v in result["seconds_per_step"].items()}
    return result


def run_all_methods(args: argparse.Namespace) -> None:
    """One row per method (ours vs PEFT), plus our P-Tuning v2 vs our LoRA; JSON + a Markdown table."""
    model = load_base_model(resolve_model_dir(args.model), dtype=args.dtype, device=args.device)
    rows = []
    for method in method_names():
        row = time_method(args, model, method)
        if not args.no_memory:
            args.method = method
            row["step_memory_mib"] = {name: peak_memory_alone(args, name) for name in ("ours", "peft")}
        rows.append(row)
        log.info("%s: ours %.2f s/step, PEFT %.2f s/step, ratio %.2f", method, row["seconds_per_step"]["ours"],
                 row["seconds_per_step"]["peft"], row["speed_ratio_ours_over_peft"])
    pair = time_ptuning_v2_vs_lora(args, model)
    result = {"benchmark": "training step per method, ours vs PEFT's implementation",
              "command": " ".join([Path(sys.executable).name] + sys.argv), "machine": machine(args),
              "setting": setting(args), "rows": rows, "ptuning_v2_vs_lora": pair}
    write_json(args.out, result)
    print("| method | PEFT implementation | trainable (ours) | ours s/step | PEFT s/step | ours tokens/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s, t = r["seconds_per_step"], r["tokens_per_s"]
        print(f"| `{r['method']}` | `{r['peft']}` | {r['trainable_params']['ours']:,} | {s['ours']:.2f} | "
              f"{s['peft']:.2f} | {t['ours']:.0f} | **{r['speed_ratio_ours_over_peft']:.2f}** |")
    print_pair(pair)


def print_pair(pair: dict) -> None:
    s = pair["seconds_per_step"]
    print(f"\nours, alternating: P-Tuning v2 {s['ptuning_v2']:.2f} s/step, LoRA {s['lora']:.2f} s/step, "
          f"P-Tuning v2 / LoRA = {pair['step_time_ratio_ptuning_v2_over_lora']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--method", default="ptuning_v2", choices=[*method_names(), "all", "ptuning_v2_vs_lora"],
                   help="the method to compare with PEFT's implementation; all = one row per method (and our "
                        "P-Tuning v2 vs our LoRA); ptuning_v2_vs_lora = only that pair")
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

    if args.method == "all":
        run_all_methods(args)
        return
    if args.method == "ptuning_v2_vs_lora":
        model = load_base_model(resolve_model_dir(args.model), dtype=args.dtype, device=args.device)
        pair = time_ptuning_v2_vs_lora(args, model)
        write_json(args.out, {"benchmark": "our P-Tuning v2 vs our LoRA training step (alternating)",
                              "command": " ".join([Path(sys.executable).name] + sys.argv), "machine": machine(args),
                              "setting": setting(args), **pair})
        print_pair(pair)
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
    result = {"benchmark": f"{args.method} training step, ours vs PEFT {PEFT_NAMES[args.method]}",
              "command": " ".join([Path(sys.executable).name] + sys.argv), "machine": machine(args),
              "setting": setting(args), **time_method(args, model, args.method)}
    if not args.no_memory:
        result["step_memory_mib"] = {name: peak_memory_alone(args, name) for name in ("ours", "peft")}
        result["step_memory_ratio_peft_over_ours"] = result["step_memory_mib"]["peft"] / result["step_memory_mib"]["ours"]
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in result if k not in {"all_seconds_per_step"}}, indent=2))


if __name__ == "__main__":
    main()

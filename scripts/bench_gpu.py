"""GPU benchmark: P-Tuning v2 on a ChatGLM2-6B-shaped GlmForCausalLM with random weights.

Shape of ChatGLM2-6B in the native GLM layout: 28 layers, hidden 4096, 32 heads, 2 KV groups,
head_dim 128, ffn 13696, vocab 65024, RoPE on half the head dimension. bf16 weights.

Measures, for a training step (forward + backward + AdamW on the prefix only):
  * tokens/s and peak GPU memory, ours vs PEFT PrefixTuning (alternating rounds);
  * model FLOPs utilisation: frozen weights cost 4·N per token (2N forward, 2N for the input
    gradients; no weight gradients), plus attention 12·L·T·(T+P)·d per sequence
    (QKᵀ and AV, forward ×1, backward ×2);
  * the same step through the DeepSpeed engine with ZeRO-0 and ZeRO-2 (bf16);
and greedy generation throughput (prefill + decode with the prefix cache).

    python scripts/bench_gpu.py --out runs/bench/gpu.json           # on the GPU machine
    python scripts/bench_gpu.py --shape tiny --device cpu --steps 1  # smoke test anywhere
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.methods import MethodConfig  # noqa: E402
from pipeline.methods.ptuning_v2 import PrefixConfig  # noqa: E402
from pipeline.models.lm import AdaptedLM  # noqa: E402

log = logging.getLogger("bench_gpu")

SHAPES = {
    "chatglm2-6b": dict(num_hidden_layers=28, hidden_size=4096, num_attention_heads=32, num_key_value_heads=2,
                        head_dim=128, intermediate_size=13696, vocab_size=65024),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16, intermediate_size=128, vocab_size=1024),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build_model(shape: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Random-weight GlmForCausalLM of the given shape, built directly on ``device`` in ``dtype``."""
    from transformers import GlmConfig, GlmForCausalLM

    cfg = GlmConfig(**SHAPES[shape], partial_rotary_factor=0.5, attention_bias=True, rms_norm_eps=1e-5,
                    max_position_embeddings=32768, tie_word_embeddings=False, pad_token_id=0, eos_token_id=2)
    cfg._attn_implementation = "sdpa"
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GlmForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def frozen_flops_per_step(model: torch.nn.Module, batch: int, seq: int, pre: int) -> float:
    """4·N·tokens (frozen weights) + attention 12·L·T·(T+P)·(heads·head_dim) per sequence."""
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    attn = 12 * c.num_hidden_layers * seq * (seq + pre) * c.num_attention_heads * c.head_dim
    return 4 * n_params * batch * seq + attn * batch


def make_batch(vocab: int, batch: int, source: int, target: int, device: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(10, vocab - 10, (batch, source + target), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :source] = -100
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, n: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def plain_step(lm: torch.nn.Module, batch: dict) -> callable:
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-2, weight_decay=0.0)

    def step() -> None:
        lm(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def deepspeed_step(lm: torch.nn.Module, batch: dict, stage: int, bf16: bool) -> callable:
    """The same step through DeepSpeed (client torch AdamW: no JIT-built op needed)."""
    import deepspeed

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    params = [p for p in lm.parameters() if p.requires_grad]
    config = {"train_micro_batch_size_per_gpu": batch["input_ids"].shape[0], "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "zero_optimization": {"stage": stage}, "bf16": {"enabled": bf16},
              "steps_per_print": 10**9, "wall_clock_breakdown": False}
    opt = torch.optim.AdamW(params, lr=2e-2, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=lm, model_parameters=params, optimizer=opt, config=config)

    def step() -> None:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()

    return step


@torch.no_grad()
def generation_throughput(lm: AdaptedLM, batch: int, prompt_len: int, new_tokens: int, device: str) -> dict:
    """Greedy prefill + decode with the prefix cache; returns new tokens/s and latency."""
    ids = torch.randint(10, lm.config.vocab_size - 10, (batch, prompt_len), device=device)

    def run() -> None:
        cache = lm.new_cache(batch)
        mask = lm.extend_mask(torch.ones_like(ids))
        pos = torch.arange(prompt_len, device=device).unsqueeze(0).expand(batch, -1) + lm.position_offset
        out = lm.call_base(ids, mask, pos, cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for i in range(new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            p = pos[:, -1:] + 1 + i
            out = lm.call_base(nxt, mask, p, cache, use_cache=True)  # the cache object grows in place
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)

    run()
    seconds = timed(run, 2, device)
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "seconds": seconds,
            "new_tokens_per_s": batch * new_tokens / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="chatglm2-6b", choices=sorted(SHAPES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--source", type=int, default=256)
    p.add_argument("--target", type=int, default=128)
    p.add_argument("--pre-seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-deepspeed", action="store_true")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "gpu.json"))
    args = p.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(args.shape, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built %s (%.2fB params) in %.1fs", args.shape, n_params / 1e9, time.perf_counter() - t0)
    batch = make_batch(model.config.vocab_size, args.batch, args.source, args.target, args.device)
    seq = args.source + args.target
    tokens = args.batch * seq
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in gpu), None)
    result: dict = {"command": " ".join(["python"] + sys.argv), "gpu": gpu, "torch": torch.__version__,
                    "shape": args.shape, "params": n_params, "dtype": str(dtype),
                    "setting": {"batch": args.batch, "source": args.source, "target": args.target,
                                "pre_seq_len": args.pre_seq_len}, "peak_bf16_tflops": peak}

    ours = AdaptedLM(model, MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=args.pre_seq_len))).train()
    ours.prefix.to(args.device)
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    peft_lm = get_peft_model(copy.deepcopy(model) if args.device == "cpu" else model,
                             PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.pre_seq_len)).train()
    steps = {"ours": plain_step(ours, batch), "peft": plain_step(peft_lm, batch)}
    for s in steps.values():
        s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for name in (list(steps) if r % 2 == 0 else list(reversed(steps))):
            times[name].append(timed(steps[name], args.steps, args.device))
    per_step = {k: statistics.median(v) for k, v in times.items()}
    flops = frozen_flops_per_step(model, args.batch, seq, args.pre_seq_len)
    result["train_step"] = {
        name: {"seconds_per_step": s, "tokens_per_s": tokens / s, "achieved_tflops": flops / s / 1e12,
               "mfu": (flops / s / 1e12 / peak) if peak else None}
        for name, s in per_step.items()}
    result["speed_ratio_ours_over_peft"] = per_step["peft"] / per_step["ours"]
    del steps, peft_lm
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        for name, lm_ in (("ours", ours),):
            torch.cuda.reset_peak_memory_stats()
            step = plain_step(lm_, batch)
            step()
            result["train_step"][name]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    ours.eval()
    result["generation"] = generation_throughput(ours, batch=16, prompt_len=args.source, new_tokens=64,
                                                 device=args.device)
    if not args.skip_deepspeed:
        ours.train()
        for stage in (0, 2):
            try:
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                step = deepspeed_step(ours, batch, stage, bf16=args.device.startswith("cuda"))
                step()
                s = timed(step, args.steps, args.device)
                entry = {"seconds_per_step": s, "tokens_per_s": tokens / s,
                         "mfu": (flops / s / 1e12 / peak) if peak else None}
                if args.device.startswith("cuda"):
                    entry["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
                result[f"deepspeed_zero{stage}"] = entry
            except Exception as exc:  # noqa: BLE001 - report, keep the other numbers
                log.exception("deepspeed zero-%d failed", stage)
                result[f"deepspeed_zero{stage}"] = {"error": repr(exc)[:500]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

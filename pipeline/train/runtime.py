"""Process-level pieces of a training run: seeding, RNG snapshots, device and dtype, memory, ranks."""

from __future__ import annotations

import os
import random
import resource
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Current python / numpy / torch (and CUDA) RNG states, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(choice: str) -> str:
    """``cuda:LOCAL_RANK`` for auto/cuda when a GPU exists, else ``cpu``."""
    if choice == "cpu" or not torch.cuda.is_available():
        if choice == "cuda":
            raise ValueError("device=cuda but no CUDA device is available")
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return f"cuda:{local_rank}"


def pick_dtype(choice: str, device: str) -> str:
    """Resolve ``auto``: bfloat16 on a GPU that supports it, else float32 (CPU trains in float32)."""
    if choice != "auto":
        return choice
    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"


def peak_memory_mb() -> dict[str, float]:
    """Peak resident set size of this process and, on GPU, the CUDA peak allocation (MiB)."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def barrier() -> None:
    """Wait for every data-parallel rank (no-op in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def resolve_repo_path(path: Path) -> Path:
    """``path`` as given when it exists, else relative to the repository root (shipped configs)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    return Path(__file__).resolve().parents[2] / path


__all__ = ["barrier", "peak_memory_mb", "pick_device", "pick_dtype", "resolve_repo_path", "restore_rng_states",
           "rng_states", "seed_everything"]

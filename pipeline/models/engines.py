"""Training engines for a :class:`~pipeline.models.lm.AdaptedLM`: DeepSpeed (default) and plain torch.

Both implement the one :class:`Engine` interface (``module``, ``current_lr``, ``forward``, ``backward``,
``step``, ``save_state``, ``load_state``, ``gathered_prefix``; the train recipe's loop calls
``forward`` / ``backward`` per micro-batch and ``step`` once per optimizer step) and take the optimisation settings as one typed
:class:`OptimConfig` (the train config's ``optim`` section); the DeepSpeed engine additionally
takes its JSON config and the weights dtype.

Both engines run one optimizer step over ``gradient_accumulation_steps`` micro-batches with the
same math: mean token loss per micro-batch, averaged over the micro-batches; gradient norm
clipping; AdamW over the prefix parameters only; linear warmup then linear decay to 0 at
``max_steps`` (``transformers.get_linear_schedule_with_warmup``, the HF Trainer schedule used by
ChatGLM's ptuning). With the shipped ZeRO-0/1/2/3 JSON files DeepSpeed gets exactly that torch
AdamW and scheduler as *client* objects (no JIT-compiled optimizer op); a JSON that carries its own
``optimizer`` / ``scheduler`` section (``zero2_offload.json``: DeepSpeed's CPU Adam and
``WarmupDecayLR``) is used as is, with its ``"auto"`` values filled from our config.

DeepSpeed on a machine without the ``deepspeed`` launcher: :func:`init_distributed_env` sets a
single-process ``RANK=0 / WORLD_SIZE=1`` rendezvous on a free local port; on CPU DeepSpeed picks its
CPU accelerator and the gloo backend (the first start JIT-builds its small shared-memory comm op,
~80 s once, then cached in ``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import json
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings (the ``optim`` section of a train config); defaults = ChatGLM2 ``ptuning/train.sh``."""

    # peak learning rate (reference: 2e-2; prefix tuning needs a large lr)
    learning_rate: float = 2e-2
    # AdamW weight decay (reference: 0)
    weight_decay: float = 0.0
    # AdamW betas and epsilon (HF Trainer defaults)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # linear warmup steps from 0 to the peak lr, then linear decay to 0 at max_steps
    warmup_steps: int = 0
    # optimizer steps (reference: 3000)
    max_steps: int = 3000
    # rows per micro-batch per device (reference: 1)
    per_device_batch_size: int = 1
    # micro-batches per optimizer step (reference: 16)
    gradient_accumulation_steps: int = 16
    # clip the gradient L2 norm to this value; 0 = no clipping (reference: 1.0)
    max_grad_norm: float = 1.0


# ----------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a single-process rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed_env() -> None:
    """Fill the env variables torch.distributed needs when not started by a launcher (single process)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return  # the deepspeed / torchrun launcher set them
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)


def skip_shm_comm_build() -> None:
    """Don't JIT-build DeepSpeed's shared-memory all-reduce op for a single-process CPU run.

    The op only speeds up all-reduces between ranks on one host; with one rank there is nothing to reduce,
    and its first build costs ~80 s of a 2-core machine (compiler + ninja). DeepSpeed's torch backend asks
    ``build_shm_op()`` for it when the backend is created, and treats ``None`` as "not available".
    """
    import importlib

    try:  # by module path: ``deepspeed.comm.torch`` as an attribute is the torch library (``from .comm import *``)
        ds_torch_comm = importlib.import_module("deepspeed.comm.torch")
    except ImportError:  # an older layout: nothing to skip
        return
    if hasattr(ds_torch_comm, "build_shm_op"):
        ds_torch_comm.build_shm_op = lambda: None


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed when initialised, else the environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def grad_norm(params: Sequence[torch.nn.Parameter]) -> float | None:
    """L2 norm of the gradients held in ``p.grad`` (None when no parameter holds one)."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def build_optimizer(params: Sequence[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.AdamW:
    """torch AdamW (the reference's HF Trainer optimizer; weight decay 0 by default)."""
    return torch.optim.AdamW(params, lr=optim.learning_rate, betas=optim.adam_betas, eps=optim.adam_eps,
                             weight_decay=optim.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> Any:
    """Linear warmup from 0 to the peak lr over ``warmup_steps``, then linear decay to 0 at ``max_steps``."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, optim.warmup_steps, optim.max_steps)


def fill_deepspeed_config(raw: dict[str, Any], optim: OptimConfig, *, dtype: str, on_gpu: bool,
                          world_size: int) -> dict[str, Any]:
    """Replace every ``"auto"`` in a DeepSpeed JSON with our config's value.

    Precision: ``bf16``/``fp16`` are enabled only on GPU and only for the matching ``dtype``;
    on CPU both are forced off (fp32). ``train_batch_size`` = micro * accumulation * world size.
    """
    cfg = copy.deepcopy(raw)
    micro_batch, grad_accum = optim.per_device_batch_size, optim.gradient_accumulation_steps
    known = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": optim.max_grad_norm,
        "train_batch_size": micro_batch * grad_accum * world_size,
    }
    for key, value in known.items():
        if cfg.get(key, AUTO) == AUTO:
            cfg[key] = value
    for key, wanted in (("bf16", "bfloat16"), ("fp16", "float16")):
        section = cfg.setdefault(key, {})
        enabled = section.get("enabled", AUTO)
        section["enabled"] = bool(on_gpu and dtype == wanted) if enabled == AUTO else bool(enabled and on_gpu)
    opt = cfg.get("optimizer")
    if opt is not None:
        fills = {"lr": optim.learning_rate, "betas": list(optim.adam_betas), "eps": optim.adam_eps,
                 "weight_decay": optim.weight_decay}
        params = opt.setdefault("params", {})
        for key, value in fills.items():
            if params.get(key, AUTO) == AUTO:
                params[key] = value
    sched = cfg.get("scheduler")
    if sched is not None:
        fills = {"warmup_min_lr": 0.0, "warmup_max_lr": optim.learning_rate, "warmup_num_steps": optim.warmup_steps,
                 "total_num_steps": optim.max_steps, "warmup_type": "linear"}
        params = sched.setdefault("params", {})
        for key, value in fills.items():
            if params.get(key, AUTO) == AUTO:
                params[key] = value
    leftovers = [k for k, v in _walk(cfg) if v == AUTO]
    if leftovers:
        raise ValueError(f"DeepSpeed config keeps unresolved 'auto' values: {', '.join(leftovers)}")
    cfg.setdefault("steps_per_print", 10**9)  # our loop logs; keep DeepSpeed quiet
    return cfg


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


# ------------------------------------------------------------------------------------------ engines
class Engine(abc.ABC):
    """What the train recipe needs from an engine; both engines implement all of it.

    Attributes: ``name`` (written into checkpoints: a resume must use the same engine), ``rank`` and
    ``world_size`` (data parallelism), ``zero_stage`` (DeepSpeed ZeRO stage, None for torch).
    """

    name: ClassVar[str]
    rank: int = 0
    world_size: int = 1
    zero_stage: int | None = None

    @property
    @abc.abstractmethod
    def module(self) -> torch.nn.Module:
        """The (possibly wrapped-then-unwrapped) AdaptedLM being trained."""

    @abc.abstractmethod
    def current_lr(self) -> float:
        """The learning rate the next :meth:`step` applies."""

    @abc.abstractmethod
    def forward(self, micro_batch: dict[str, torch.Tensor]) -> Any:
        """The model's training forward on one micro-batch (``input_ids``, ``attention_mask``, ``labels`` ``(B, T)``,
        or ``class_labels``); the output's ``loss`` is the micro-batch's mean loss."""

    @abc.abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of one micro-batch's loss (scaled by 1 / ``gradient_accumulation_steps``)."""

    @abc.abstractmethod
    def step(self) -> float | None:
        """The optimizer + scheduler step after the micro-batches' backward passes; returns the grad norm
        (before clipping; None where the engine cannot tell)."""

    def mean_loss(self, total: float, n: int) -> float:
        """The step's loss for the log: ``total`` (the sum of ``n`` micro-batch losses) averaged (over ranks too)."""
        return total / n

    @abc.abstractmethod
    def save_state(self, ckpt_dir: Path) -> dict[str, Any]:
        """Save what a resume needs (every rank calls this); returns entries for ``trainer_state.pt``."""

    @abc.abstractmethod
    def load_state(self, ckpt_dir: Path, state: dict[str, Any]) -> None:
        """Restore the prefix weights, optimizer and scheduler from a checkpoint folder and its trainer state."""

    @abc.abstractmethod
    def gathered_prefix(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the full prefix weights are local (collective under ZeRO-3)."""


class TorchEngine(Engine):
    """Plain torch: AdamW + linear schedule + clipping over the prefix parameters (single process)."""

    name = "torch"

    def __init__(self, lm: torch.nn.Module, optim: OptimConfig):
        self.lm, self.optim = lm, optim
        self.params = list(lm.trainable_parameters())
        self.optimizer = build_optimizer(self.params, optim)
        self.scheduler = build_scheduler(self.optimizer, optim)
        self.rank, self.world_size = 0, 1

    @property
    def module(self) -> torch.nn.Module:
        return self.lm

    def current_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def forward(self, micro_batch: dict[str, torch.Tensor]) -> Any:
        self.lm.train()
        return self.lm(**micro_batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.optim.gradient_accumulation_steps).backward()

    def step(self) -> float | None:
        """Clip, AdamW step, schedule step, zero the gradients; returns the pre-clip grad norm."""
        clip = self.optim.max_grad_norm
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip)) if clip > 0 else grad_norm(self.params)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save_state(self, ckpt_dir: Path) -> dict[str, Any]:
        """Optimizer + scheduler state for ``trainer_state.pt`` (nothing written here)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state(self, ckpt_dir: Path, state: dict[str, Any]) -> None:
        """Restore the method's weights (its safetensors files) and what :meth:`save_state` returned."""
        self.lm.load_adapter_weights(ckpt_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def gathered_prefix(self) -> Iterator[None]:
        """The full prefix weights are always local here."""
        yield


class DeepSpeedEngine(Engine):
    """``deepspeed.initialize`` over the AdaptedLM with only the prefix parameters trainable.

    Optimizer/scheduler state lives in a DeepSpeed checkpoint (``<ckpt>/deepspeed/``, frozen base
    weights excluded) so partitioned ZeRO states resume on any rank layout DeepSpeed supports.
    """

    name = "deepspeed"
    TAG = "state"

    def __init__(self, lm: torch.nn.Module, optim: OptimConfig, *, config_path: Path, dtype: str):
        init_distributed_env()
        import deepspeed

        on_gpu = torch.cuda.is_available() and next(lm.parameters()).is_cuda
        if not on_gpu and dtype == "float16":
            raise ValueError("dtype float16 needs a GPU; on CPU use float32 or bfloat16")
        # On CPU a bfloat16 *frozen base* is fine: the trainable parameters stay float32, so DeepSpeed runs its
        # float32 path (its bf16/fp16 modes stay off on CPU) and only the base model's matmuls use bf16 (AMX).
        if not on_gpu and dist_rank_world()[1] == 1:
            skip_shm_comm_build()
        deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=False)
        self.rank, self.world_size = dist_rank_world()
        raw = json.loads(Path(config_path).read_text(encoding="utf-8"))
        self.ds_config = fill_deepspeed_config(raw, optim, dtype=dtype, on_gpu=on_gpu, world_size=self.world_size)
        self.zero_stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        params = list(lm.trainable_parameters())
        for module in (getattr(lm, "prefix", None), getattr(lm, "prompt", None)):
            if self.zero_stage == 3 and module is not None:
                # ZeRO-3 gathers a module's own parameters when its forward runs; prefix / prompt encoders read
                # their child embedding's weight without calling the child, so register it on the encoder
                for p in module.parameters():
                    deepspeed.zero.register_external_parameter(module, p)
        optimizer = scheduler = None
        if "optimizer" not in self.ds_config:
            optimizer = build_optimizer(params, optim)
            if "scheduler" not in self.ds_config:
                scheduler = build_scheduler(optimizer, optim)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=lm, model_parameters=params, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        self.params = params
        self._pending = 0  # micro-batches since the last optimizer step
        log.info("DeepSpeed engine: ZeRO-%d, world size %d, bf16=%s fp16=%s, optimizer %s", self.zero_stage,
                 self.world_size, self.ds_config["bf16"]["enabled"], self.ds_config["fp16"]["enabled"],
                 type(self.optimizer).__name__)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def current_lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def forward(self, micro_batch: dict[str, torch.Tensor]) -> Any:
        self.engine.train()
        return self.engine(**micro_batch)

    def backward(self, loss: torch.Tensor) -> None:
        """DeepSpeed scales the loss by 1/accumulation; its ``step`` must follow every backward (it steps the
        optimizer only on the accumulation boundary, which :meth:`step` is)."""
        self.engine.backward(loss)
        self._pending += 1
        if self._pending < self.engine.gradient_accumulation_steps():
            self.engine.step()

    def step(self) -> float | None:
        norm = None
        if self.zero_stage == 0:
            norm = grad_norm(self.engine.module.trainable_parameters())  # ZeRO-0 does not report it
        self.engine.step()
        self._pending = 0
        ds_norm = self.engine.get_global_grad_norm()
        return float(ds_norm) if ds_norm is not None else norm

    def mean_loss(self, total: float, n: int) -> float:
        if self.world_size > 1:  # log the mean loss over data-parallel ranks, not rank 0's share
            mean = torch.tensor(total, dtype=torch.float64, device=self.engine.device)
            torch.distributed.all_reduce(mean)
            total = float(mean) / self.world_size
        return total / n

    def save_state(self, ckpt_dir: Path) -> dict[str, Any]:
        """Write the DeepSpeed checkpoint (every rank must call this) into ``<ckpt_dir>/deepspeed``."""
        with self._trainable_module_state():
            self.engine.save_checkpoint(str(ckpt_dir / "deepspeed"), tag=self.TAG, save_latest=False,
                                        exclude_frozen_parameters=True)
        return {}

    @contextlib.contextmanager
    def _trainable_module_state(self) -> Iterator[None]:
        """Make DeepSpeed's module snapshot hold the prefix only.

        ``exclude_frozen_parameters`` filters by ``named_parameters``, which lists a tied weight
        (e.g. ``lm_head.weight`` = the input embedding) once under another name, so the frozen
        embedding would still be saved (540 MB for SmolLM2). We hand DeepSpeed the trainable
        tensors only; everything else is reloaded from the base model anyway.
        """
        engine = self.engine
        module = engine.module

        def prefix_only(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}

        engine.module_state_dict = prefix_only  # instance attribute shadows the method for this save
        try:
            yield
        finally:
            del engine.module_state_dict

    def load_state(self, ckpt_dir: Path, state: dict[str, Any]) -> None:
        """Restore prefix, optimizer and scheduler from ``<ckpt_dir>/deepspeed``."""
        path, _ = self.engine.load_checkpoint(str(ckpt_dir / "deepspeed"), tag=self.TAG, load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {ckpt_dir / 'deepspeed'}")

    @contextlib.contextmanager
    def gathered_prefix(self) -> Iterator[None]:
        """Under ZeRO-3 gather the partitioned prefix weights (collective: every rank enters)."""
        if self.zero_stage != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.engine.module.trainable_parameters()), modifier_rank=None):
            yield


def build_engine(kind: str, lm: torch.nn.Module, optim: OptimConfig, *, deepspeed_config: Path,
                 dtype: str) -> Engine:
    """The ``"torch"`` or ``"deepspeed"`` engine over ``lm``.

    ``deepspeed_config`` (a DeepSpeed JSON) and ``dtype`` configure DeepSpeed; the torch engine
    trains ``lm`` in the dtype it was loaded in and has no JSON config.
    """
    if kind == "torch":
        return TorchEngine(lm, optim)
    if kind == "deepspeed":
        return DeepSpeedEngine(lm, optim, config_path=deepspeed_config, dtype=dtype)
    raise ValueError(f"unknown engine {kind!r}; choose torch or deepspeed")


__all__ = [
    "DeepSpeedEngine",
    "Engine",
    "OptimConfig",
    "TorchEngine",
    "build_engine",
    "build_optimizer",
    "build_scheduler",
    "fill_deepspeed_config",
    "free_port",
    "grad_norm",
    "init_distributed_env",
]

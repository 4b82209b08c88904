"""LoRA (Hu et al. 2021): trained low-rank updates ``W x + (alpha / r) * B A dropout(x)`` on chosen linears.

:func:`inject_lora` replaces every targeted ``nn.Linear`` of the frozen model (matched by its name or
name suffix, PEFT's rule: ``q_proj`` matches ``model.layers.0.self_attn.q_proj``) with a
:class:`LoraLinear` that keeps the frozen layer and adds ``lora_A`` ``(r, in)`` (Kaiming-uniform, as
``nn.Linear``) and ``lora_B`` ``(out, r)`` (zeros, so training starts at the base model). The same
weights as PEFT's ``LoraModel`` under the same names give the same logits (tested). The adapters are
collected in a :class:`LoraAdapter` whose ``state_dict`` is the LoRA weights only: what a checkpoint saves.
The LoRA weights stay float32 on a bfloat16 base; the update is added in the base output's dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pipeline.methods.base import ArchFacts


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Settings of LoRA (the ``method.lora`` section)."""

    # rank r of the update B A
    r: int = 8
    # scaling numerator: the update is multiplied by alpha / r
    alpha: float = 16.0
    # dropout on the LoRA branch's input during training
    dropout: float = 0.05
    # linear layers to adapt, by name or name suffix (q_proj, v_proj: PEFT's default for Llama-style models;
    # ChatGLM folders are converted to GLM and have the same names)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules or any(not isinstance(t, str) or not t for t in self.target_modules):
            raise ValueError(f"target_modules must be a non-empty list of module names, got {self.target_modules!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


class LoraBranch(nn.Module):
    """``(alpha / r) * B A dropout(x)``: ``lora_A`` ``(r, in)``, ``lora_B`` ``(out, r)``."""

    def __init__(self, in_features: int, out_features: int, config: LoraConfig):
        super().__init__()
        self.lora_A = nn.Linear(in_features, config.r, bias=False)  # nn.Linear's Kaiming-uniform init (= PEFT)
        self.lora_B = nn.Linear(config.r, out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` -> ``(..., out)`` in the LoRA weights' dtype."""
        return self.lora_B(self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype)))) * self.scaling


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a :class:`LoraBranch`; ``forward(x) = base(x) + branch(x)``."""

    def __init__(self, base: nn.Linear, branch: LoraBranch):
        super().__init__()
        self.base, self.branch = base, branch

    @property
    def weight(self) -> torch.Tensor:  # some model code reads .weight of its projections (dtype/device probes)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.branch(x).to(out.dtype)


class LoraAdapter(nn.Module):
    """Every :class:`LoraBranch` by module path (``.`` written ``__``); ``state_dict()`` = the LoRA weights only."""

    def __init__(self, config: LoraConfig, branches: dict[str, LoraBranch]):
        super().__init__()
        self.config = config
        self.branches = nn.ModuleDict({name.replace(".", "__"): b for name, b in branches.items()})

    def module_paths(self) -> list[str]:
        """The adapted modules' paths in the base model."""
        return [k.replace("__", ".") for k in self.branches]


def matches(name: str, targets: tuple[str, ...]) -> bool:
    """PEFT's name rule: ``name`` equals a target or ends with ``.<target>``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, config: LoraConfig) -> LoraAdapter:
    """Wrap every targeted ``nn.Linear`` of ``model`` in a :class:`LoraLinear` (in place); returns the adapter.

    The branches are created on the linear's device in float32. ValueError naming the model's linear
    layers when nothing matches.
    """
    found = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and matches(name, config.target_modules)]
    if not found:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"lora.target_modules {list(config.target_modules)} match no linear layer; "
                         f"this model has: {', '.join(leaves) or 'none'}")
    branches: dict[str, LoraBranch] = {}
    for name, linear in found:
        branch = LoraBranch(linear.in_features, linear.out_features, config).to(linear.weight.device)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(linear, branch))
        branches[name] = branch
    return LoraAdapter(config, branches)


def count_lora_parameters(config: LoraConfig, model: nn.Module) -> int:
    """Trainable parameters LoRA would add to ``model``: ``r * (in + out)`` per targeted linear."""
    return sum(config.r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and matches(n, config.target_modules))


def count_lora_parameters_from_facts(config: LoraConfig, facts: ArchFacts) -> int:
    """Same count for the default q/k/v/o targets of a Llama-style model, from its shape facts alone."""
    q_out, kv_out = facts.hidden_size, facts.kv_dim
    sizes = {"q_proj": (facts.hidden_size, q_out), "k_proj": (facts.hidden_size, kv_out),
             "v_proj": (facts.hidden_size, kv_out), "o_proj": (q_out, facts.hidden_size)}
    per_layer = sum(config.r * sum(sizes[t]) for t in config.target_modules if t in sizes)
    return per_layer * facts.num_layers

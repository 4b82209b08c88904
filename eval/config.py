"""The ``evaluate`` stage's config: the frozen dataclasses, their checks and the paths they name.

:class:`EvalConfig` is the stage's typed config (``eval/configs/*.yaml``); :func:`check_config` refuses
inconsistent settings before any model is loaded; the ``*_path`` / :func:`prefix_dir` helpers say where the
config's inputs are (records, prompt files, PET example pools, checkpoint folders, the train stage's metrics).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from eval import perturb


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model to evaluate."""

    # name in reports and predictions (model_tag), e.g. base | tuned
    tag: str
    # model spec: smollm2 | tiny:<name> | local HF (or ChatGLM2/3) folder
    spec: str
    # checkpoint folder under the config's train_dir (best | final | checkpoints/step-N); null = the base model
    checkpoint: str | None = None
    # answer the perturbed prompts too (false: the clean split only, e.g. a base model that is wrong everywhere)
    perturbed: bool = True


@dataclasses.dataclass(frozen=True)
class PerturbationEntry:
    """One perturbation family and the severities to run."""

    # a name from eval.perturb.SPECS: noise dropout truncate units precision field_order distractors typos
    # instruction option_order
    name: str
    # severity levels to run (1..K as declared in eval.perturb.SPECS); null = all declared levels
    severities: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class PetSection:
    """PET-style cloze systems: a frozen model answering a manual cloze pattern, scored through its verbalizer."""

    # in-context example counts; one system per value, tagged pet-<k>shot (0 = zero-shot)
    k: tuple[int, ...] = (0, 4)
    # model spec; null = the spec of the baseline_tag model
    spec: str | None = None
    # seed of the in-context example choice (deterministic, balanced over motion classes)
    seed: int = 0
    # split of prompts_dir/<variant>/ the in-context examples come from; evaluated sample ids are never chosen
    pool_split: str = "train"


def _all_perturbations() -> tuple[PerturbationEntry, ...]:
    return tuple(PerturbationEntry(name) for name in perturb.SPECS)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Config of the ``evaluate`` stage."""

    # where predictions.jsonl, report.{json,md,html} and manifest.json go
    out_dir: Path
    # records folder (data_prep or label.merge output) with <split>.jsonl records (perturbations re-render from them)
    data_dir: Path
    # prompts-stage output folder with <variant>/<split>.jsonl
    prompts_dir: Path
    # train-stage output folder holding the models' checkpoints; null = base models only
    train_dir: Path | None = None
    # prompt variants to evaluate (sub-folders of prompts_dir), e.g. plain, cot
    variants: tuple[str, ...] = ("plain", "cot")
    # split to evaluate
    split: str = "test"
    # models to compare; each has tag, spec, checkpoint (a folder under train_dir; null = base model)
    models: tuple[ModelEntry, ...] = (ModelEntry("base", "smollm2"),)
    # model tag the others are compared with (paired deltas, robustness std ratio)
    baseline_tag: str = "base"
    # score = label scoring over each level's candidates; generate = greedy generation + answer parsing
    modes: tuple[str, ...] = ("score", "generate")
    # evaluate only the first N prompt rows per variant; null = all
    limit: int | None = None
    # perturbation families and severities (default: every family at every declared severity)
    perturbations: tuple[PerturbationEntry, ...] = dataclasses.field(default_factory=_all_perturbations)
    # perturbation seeds (each gives an independent draw per example)
    seeds: tuple[int, ...] = (0,)
    # share of the evaluated nominal set that is perturbed (the reference study: 8,448 / 50,688 = 1/6)
    perturbed_fraction: float = 1 / 6
    # prompts per forward batch (generation and scoring)
    batch_size: int = 8
    # greedy decoding budget for plain prompts (the reference study used 128)
    max_new_tokens: int = 128
    # greedy decoding budget for CoT prompts (rationale + answer line)
    max_new_tokens_cot: int = 256
    # rows answered between two appends to the resume cache
    chunk_size: int = 64
    # bootstrap resamples for confidence intervals
    bootstrap_resamples: int = 2000
    # seed of the bootstrap generators
    bootstrap_seed: int = 0
    # base-model weights dtype: float32 | bfloat16 | float16
    dtype: str = "float32"
    # torch device, e.g. cpu or cuda
    device: str = "cpu"
    # torch threads for CPU runs; 0 = torch's default
    num_threads: int = 0
    # robustness cells with fewer prompts are listed but kept out of std, std ratio and PDR summaries
    min_cell_n: int = 50
    # PET-style cloze systems evaluated beside the models (score mode only); null = none
    pet: PetSection | None = None


def check_config(cfg: EvalConfig) -> None:
    """Raise ValueError for inconsistent settings (before any model is loaded)."""
    bad_modes = [m for m in cfg.modes if m not in ("score", "generate")]
    if bad_modes or not cfg.modes:
        raise ValueError(f"modes must be a non-empty subset of score, generate; got {list(cfg.modes)}")
    tags = [m.tag for m in cfg.models]
    if not tags or len(set(tags)) != len(tags):
        raise ValueError(f"models need distinct tags; got {tags}")
    if not 0.0 <= cfg.perturbed_fraction <= 1.0:
        raise ValueError("perturbed_fraction must be in [0, 1]")
    if min(cfg.batch_size, cfg.max_new_tokens, cfg.max_new_tokens_cot, cfg.chunk_size, cfg.min_cell_n) < 1:
        raise ValueError("batch_size, max_new_tokens(_cot), chunk_size and min_cell_n must be >= 1")
    for p in cfg.perturbations:
        spec = perturb.get_spec(p.name)
        bad = [s for s in (p.severities or ()) if s not in spec.levels]
        if bad:
            raise ValueError(f"perturbation {p.name}: severities {bad} not in {sorted(spec.levels)}")
    if not cfg.seeds:
        raise ValueError("seeds must not be empty")
    needs_train = [m.tag for m in cfg.models if m.checkpoint is not None]
    if needs_train and cfg.train_dir is None:
        raise ValueError(f"models {needs_train} name a checkpoint but train_dir is not set")
    if cfg.pet is not None:
        check_pet(cfg, cfg.pet)


def pet_tag(k: int) -> str:
    """Report tag of the PET system with ``k`` in-context examples."""
    return f"pet-{k}shot"


def check_pet(cfg: EvalConfig, pet: PetSection) -> None:
    """The ``pet`` section: distinct non-negative k, tags free, a spec to use, score mode on."""
    if not pet.k or min(pet.k) < 0 or len(set(pet.k)) != len(pet.k):
        raise ValueError(f"pet.k must be distinct integers >= 0; got {list(pet.k)}")
    clash = sorted({pet_tag(k) for k in pet.k} & {m.tag for m in cfg.models})
    if clash:
        raise ValueError(f"pet systems are tagged {clash}, which models already use")
    if "score" not in cfg.modes:
        raise ValueError("pet systems are label-scored: modes must include score")
    if pet.spec is None and cfg.baseline_tag not in {m.tag for m in cfg.models}:
        raise ValueError(f"pet.spec is null but baseline_tag {cfg.baseline_tag!r} names no model to take it from")


def records_path(cfg: EvalConfig) -> Path:
    """The records file of the evaluated split."""
    return Path(cfg.data_dir) / f"{cfg.split}.jsonl"


def prompts_path(cfg: EvalConfig, variant: str) -> Path:
    """The prompts file of one variant."""
    return Path(cfg.prompts_dir) / variant / f"{cfg.split}.jsonl"


def prefix_dir(cfg: EvalConfig, entry: ModelEntry) -> Path | None:
    """The checkpoint folder ``<train_dir>/<checkpoint>`` of a model, or None for a base model."""
    from pipeline.models.checkpoint import checkpoint_path  # lazy: the reader imports torch

    return checkpoint_path(cfg.train_dir, entry.checkpoint)


def metrics_path(cfg: EvalConfig) -> Path | None:
    """The train stage's ``metrics.jsonl`` (its dev evaluations give the learning curve), when models are tuned."""
    if cfg.train_dir is None or all(m.checkpoint is None for m in cfg.models):
        return None
    path = Path(cfg.train_dir) / "metrics.jsonl"
    # a checkpoint folder from elsewhere (a PEFT adapter, train_dir=<it> checkpoint=.) has no training curve
    return path if path.exists() else None


def pet_pool_path(cfg: EvalConfig, variant: str) -> Path | None:
    """The prompts file the PET in-context examples of ``variant`` come from (None without k-shot PET)."""
    if cfg.pet is None or max(cfg.pet.k) == 0:
        return None
    return Path(cfg.prompts_dir) / variant / f"{cfg.pet.pool_split}.jsonl"


def budget_of(cfg: EvalConfig, variant: str) -> int:
    """Greedy decoding budget of a variant."""
    return cfg.max_new_tokens_cot if variant == "cot" else cfg.max_new_tokens

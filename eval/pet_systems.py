"""Answering systems of the ``evaluate`` stage: the configured models and the PET-style cloze systems.

A :class:`System` is a configured model, or the base model answering a manual cloze pattern with ``k``
labelled in-context examples (:mod:`pipeline.methods.pet`), label-scored through the verbalizer.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from eval.config import EvalConfig, ModelEntry, pet_pool_path, pet_tag
from eval.expand import Example
from eval.robustness import CLEAN
from pipeline.core.io import DataError
from prompts_cot.rows import read_prompt_rows

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class System:
    """One answering system: a configured model, or a PET cloze system (the base model, a pattern, k examples)."""

    entry: ModelEntry
    # PET in-context examples: variant -> lang -> examples; None = a plain model
    pet_demos: dict[str, dict[str, list[Any]]] | None = None
    # number of in-context examples asked for (PET systems only)
    pet_k: int | None = None

    @property
    def modes(self) -> tuple[str, ...] | None:
        """Modes this system answers in (None = every configured mode; PET is label-scored only)."""
        return ("score",) if self.pet_demos is not None else None

    def pet_facts(self) -> dict[str, Any] | None:
        """What a PET system's answers depend on besides the model (fingerprint and manifest)."""
        if self.pet_demos is None:
            return None
        from pipeline.methods.pet import PET_VERSION, template_hash

        return {"version": PET_VERSION, "template_sha256": template_hash(), "k": self.pet_k,
                "examples": {v: {lang: [d.sample_id for d in ds] for lang, ds in by_lang.items()}
                             for v, by_lang in sorted(self.pet_demos.items())}}


def load_pet_pool(cfg: EvalConfig, variant: str) -> list[Any]:
    """Labelled rows of the PET example pool of ``variant`` (empty without k-shot PET)."""
    from pipeline.methods.pet import demo_from_row

    path = pet_pool_path(cfg, variant)
    if path is None:
        return []
    if not path.is_file():
        raise DataError(path, None, "pet.pool_split", f"no {cfg.pet.pool_split} prompts for the PET examples")  # type: ignore[union-attr]
    return [d for _, row in read_prompt_rows(path) if (d := demo_from_row(row)) is not None]


def build_systems(cfg: EvalConfig, examples: dict[str, list[Example]]) -> list[System]:
    """The configured models, then one PET system per ``pet.k`` (examples chosen per variant and language)."""
    from pipeline.methods.pet import select_demos_by_lang

    systems = [System(m) for m in cfg.models]
    if cfg.pet is None:
        return systems
    pet = cfg.pet
    spec = pet.spec or next(m.spec for m in cfg.models if m.tag == cfg.baseline_tag)
    pools = {v: load_pet_pool(cfg, v) for v in cfg.variants}
    for k in pet.k:
        demos = {}
        for v, exs in examples.items():
            # never show a scored row as an example (the pool is another split, but a config may point it anywhere)
            demos[v] = select_demos_by_lang(pools[v], k, pet.seed, {e.lang for e in exs}, {e.sample_id for e in exs})
            short = {lang: len(ds) for lang, ds in demos[v].items() if len(ds) < k}
            if short:
                log.warning("pet %s/%s: only %s in-context examples available", pet_tag(k), v, short)
        systems.append(System(ModelEntry(pet_tag(k), spec), demos, k))
    return systems


def system_examples(system: System, exs: list[Example]) -> list[Example]:
    """The examples one system answers: all, or only the clean ones (``perturbed: false``)."""
    return exs if system.entry.perturbed else [ex for ex in exs if ex.perturbation == CLEAN]

"""Examples of the ``evaluate`` stage: every clean prompt of a variant, plus its perturbed re-renders.

The clean split comes from the prompts stage's rows; on a deterministic subset (``perturbed_fraction``, by a
hash of the sample id) every configured perturbation x severity x seed is re-rendered from the record
(:mod:`eval.perturb`). CoT examples keep their record and render options for the faithfulness checker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval import perturb
from eval.config import EvalConfig, prompts_path, records_path
from eval.robustness import CLEAN
from pipeline.core.answer import strip_answer_lines
from pipeline.core.io import DataError, index_jsonl_by_id
from pipeline.core.taxonomy import LABELS, LEVELS
from prompts_cot.rows import read_prompt_rows


@dataclasses.dataclass
class Example:
    """One prompt to answer (clean or perturbed); the model/mode are added when it is answered."""

    sample_id: str
    variant: str
    perturbation: str
    severity: int
    seed: int
    prompt: str
    lang: str
    gold: dict[str, str | None]
    label_may_change: bool
    oracle_motion: str | None = None
    # the record and render options the prompt was rendered from, for CoT variants (the faithfulness checker
    # marks a generated rationale against them); None for answer-only variants
    record: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    options: Any = dataclasses.field(default=None, repr=False)


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by sample_id (DataError on a missing id or duplicate)."""
    return index_jsonl_by_id(path)


def parse_gold(row: dict[str, Any], path: Path, lineno: int) -> dict[str, str | None]:
    """The row's gold labels (``label``), validated against the taxonomy; null levels allowed."""
    label = row.get("label")
    if not isinstance(label, dict) or label.get("motion") is None:
        raise DataError(path, lineno, "label", "missing label dict with at least label.motion")
    gold: dict[str, str | None] = {}
    for lvl in LEVELS:
        val = label.get(lvl)
        if val is not None and val not in LABELS[lvl]:
            raise DataError(path, lineno, f"label.{lvl}", f"{val!r} is not a {lvl} label")
        gold[lvl] = val
    return gold


def is_cot_row(row: dict[str, Any]) -> bool:
    """A prompts row whose target has a rationale before its answer line (a CoT variant)."""
    return any(ln.strip() for ln in strip_answer_lines(str(row.get("response") or "")))


def perturbed_subset(sample_ids: list[str], fraction: float) -> set[str]:
    """ceil(fraction * n) ids, the same whatever the variant: lowest sha256(sample_id) first."""
    k = math.ceil(fraction * len(sample_ids))
    ranked = sorted(sample_ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return set(ranked[:k])


def build_examples(cfg: EvalConfig, variant: str, records: dict[str, dict[str, Any]]) -> list[Example]:
    """Clean examples of one variant plus the perturbed ones of its subset."""
    path = prompts_path(cfg, variant)
    rows = read_prompt_rows(path, limit=cfg.limit)
    examples: list[Example] = []
    cot = any(is_cot_row(row) for _, row in rows)
    for lineno, row in rows:
        ex = Example(row["sample_id"], variant, CLEAN, 0, 0, row["prompt"], row.get("lang", "en"),
                     parse_gold(row, path, lineno), False)
        if cot and isinstance(row.get("render"), dict) and row["sample_id"] in records:
            ex.record, ex.options = records[row["sample_id"]], perturb.options_from_dict(row["render"])
        examples.append(ex)
    subset = perturbed_subset([r["sample_id"] for _, r in rows], cfg.perturbed_fraction)
    todo = [(lineno, row) for lineno, row in rows if row["sample_id"] in subset] if cfg.perturbations else []
    for lineno, row in tqdm(todo, desc=f"perturb {variant}", disable=not todo):
        record = records.get(row["sample_id"])
        if record is None:
            raise DataError(path, lineno, "sample_id", f"{row['sample_id']!r} has no record in {records_path(cfg)}")
        if not isinstance(row.get("render"), dict):
            raise DataError(path, lineno, "render", "missing RenderOptions dict (needed to re-render perturbations)")
        options = perturb.options_from_dict(row["render"])
        gold = parse_gold(row, path, lineno)
        for entry in cfg.perturbations:
            for sev in entry.severities or tuple(sorted(perturb.get_spec(entry.name).levels)):
                for seed in cfg.seeds:
                    p = perturb.perturb_example(record, options, entry.name, sev, seed)
                    if p is None:
                        continue
                    # the perturbed prompt's language (the language family renders the other one)
                    examples.append(Example(row["sample_id"], variant, entry.name, sev, seed, p.prompt,
                                            p.options.lang, gold, p.label_may_change, p.oracle_motion,
                                            p.record if cot else None, p.options if cot else None))
    return examples

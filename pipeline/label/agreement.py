"""Stage ``label.agreement``: inter-annotator agreement and model-vs-expert statistics.

``python -m pipeline label agreement --config pipeline/label/configs/agreement_demo.yaml``

Per intent level, from one or more ``reviews.jsonl`` files:

* Cohen's kappa (``sklearn.metrics.cohen_kappa_score``) for every reviewer pair on the tasks both
  labelled, plus the observed agreement and the mean over pairs;
* Krippendorff's alpha (``krippendorff``, nominal) over all reviewers -- the measure to read when
  there are more than two reviewers or the overlap is uneven;
* model-expert acceptance rate (share of reviews keeping the model's label), overall and per reviewer;
* the model -> expert correction matrix (counts; rows = model label, columns = expert label).

Outputs ``agreement.json`` and a readable ``agreement.md``. Undefined values (too little overlap,
a single category) are ``null``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from pipeline.core.io import DataError, write_json, write_text
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LABELS, LEVELS
from pipeline.label.common import latest_per_reviewer, load_reviews

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AgreementConfig:
    """Config of ``label.agreement``."""

    # where agreement.json, agreement.md and manifest.json go
    out_dir: Path = Path("runs/demo/label/agreement")
    # review files (label.import / label.review outputs); all reviewers are pooled
    reviews: tuple[Path, ...] = (Path("runs/demo/label/import/reviews.jsonl"),)
    # pairs with fewer shared tasks than this get kappa null
    min_overlap: int = 2


def agreement_inputs(cfg: AgreementConfig) -> list[Path]:
    """Every review file."""
    return [Path(p) for p in cfg.reviews]


def finite_or_none(x: float) -> float | None:
    """``x`` rounded to 6 places, or None when it is NaN/inf."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def pairwise_kappa(by_sample: dict[str, dict[str, dict]], level: str, min_overlap: int) -> list[dict[str, Any]]:
    """Cohen's kappa and observed agreement for every reviewer pair on their shared tasks."""
    reviewers = sorted({rev for per in by_sample.values() for rev in per})
    out = []
    for a, b in itertools.combinations(reviewers, 2):
        pairs = [(per[a]["labels"][level], per[b]["labels"][level]) for per in by_sample.values()
                 if a in per and b in per and per[a]["labels"].get(level) and per[b]["labels"].get(level)]
        n = len(pairs)
        entry: dict[str, Any] = {"reviewers": [a, b], "n": n, "observed": None, "kappa": None}
        if n >= min_overlap:
            ya, yb = zip(*pairs)
            entry["observed"] = round(sum(x == y for x, y in pairs) / n, 6)
            if len(set(ya) | set(yb)) > 1:  # with one category kappa is 0/0
                entry["kappa"] = finite_or_none(cohen_kappa_score(ya, yb, labels=list(LABELS[level])))
        out.append(entry)
    return out


def krippendorff_alpha(by_sample: dict[str, dict[str, dict]], level: str) -> tuple[float | None, int]:
    """Nominal alpha over all reviewers; returns (alpha, number of tasks with >= 2 ratings).

    Reliability matrix shape: (reviewers, tasks), label codes, NaN where a reviewer did not rate.
    """
    reviewers = sorted({rev for per in by_sample.values() for rev in per})
    codes = {lab: i for i, lab in enumerate(LABELS[level])}
    columns = []
    for per in by_sample.values():
        col = [codes[per[r]["labels"][level]] if r in per and per[r]["labels"].get(level) else np.nan
               for r in reviewers]
        if sum(not np.isnan(v) for v in col) >= 2:
            columns.append(col)
    if len(reviewers) < 2 or not columns:
        return None, len(columns)
    data = np.asarray(columns, dtype=float).T
    values = set(data[~np.isnan(data)].tolist())
    if len(values) < 2:  # alpha is undefined with a single category
        return None, len(columns)
    try:
        return finite_or_none(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")), len(columns)
    except ValueError as exc:
        log.warning("krippendorff alpha for %s undefined: %s", level, exc)
        return None, len(columns)


def model_vs_expert(rows: list[dict[str, Any]], level: str) -> dict[str, Any]:
    """Acceptance rate of the model's ``level`` label and the model -> expert correction matrix."""
    pairs = [(r["model_labels"][level], r["labels"][level]) for r in rows
             if r["model_labels"].get(level) and r["labels"].get(level)]
    per_reviewer: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r["model_labels"].get(level) and r["labels"].get(level):
            per_reviewer[r["reviewer"]].append(r["model_labels"][level] == r["labels"][level])
    labels = list(LABELS[level])
    matrix = confusion_matrix([m for m, _ in pairs], [e for _, e in pairs], labels=labels) if pairs else \
        np.zeros((len(labels), len(labels)), dtype=int)
    corrections = Counter(f"{m}->{e}" for m, e in pairs if m != e)
    return {
        "n": len(pairs),
        "acceptance_rate": round(sum(m == e for m, e in pairs) / len(pairs), 6) if pairs else None,
        "acceptance_per_reviewer": {k: round(sum(v) / len(v), 6) for k, v in sorted(per_reviewer.items())},
        "corrections": dict(corrections.most_common()),
        "matrix": {"labels": labels, "rows_model_cols_expert": matrix.tolist()},
    }


def compute_agreement(reviews: list[tuple[Path, int, dict[str, Any]]], min_overlap: int = 2) -> dict[str, Any]:
    """All agreement statistics from loaded review rows (see module docstring)."""
    by_sample = latest_per_reviewer(reviews)
    rows = [r for per in by_sample.values() for r in per.values()]
    reviewers = sorted({r["reviewer"] for r in rows})
    per_level = {}
    for lev in LEVELS:
        pairs = pairwise_kappa(by_sample, lev, min_overlap)
        kappas = [p["kappa"] for p in pairs if p["kappa"] is not None]
        alpha, n_alpha = krippendorff_alpha(by_sample, lev)
        per_level[lev] = {
            "pairwise": pairs,
            "mean_kappa": round(float(np.mean(kappas)), 6) if kappas else None,
            "krippendorff_alpha": alpha,
            "alpha_items": n_alpha,
            "model_vs_expert": model_vs_expert(rows, lev),
        }
    accepted = [r["accepted"] for r in rows]
    return {
        "reviewers": reviewers,
        "reviews": len(rows),
        "tasks": len(by_sample),
        "multi_reviewed_tasks": sum(len(per) > 1 for per in by_sample.values()),
        "acceptance_rate_all_levels": round(sum(accepted) / len(accepted), 6) if accepted else None,
        "levels": per_level,
    }


def _cell(x: Any) -> str:
    return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def render_markdown(result: dict[str, Any]) -> str:
    """Readable report of :func:`compute_agreement`'s result."""
    lines = ["# Expert agreement", "",
             f"{result['reviews']} reviews of {result['tasks']} tasks by {len(result['reviewers'])} reviewer(s) "
             f"({', '.join(result['reviewers'])}); {result['multi_reviewed_tasks']} tasks reviewed more than once.",
             f"Model labels accepted on all levels: {_cell(result['acceptance_rate_all_levels'])}.", "",
             "| level | mean Cohen's κ | Krippendorff's α (items) | model acceptance (n) |",
             "|---|---|---|---|"]
    for lev, d in result["levels"].items():
        m = d["model_vs_expert"]
        lines.append(f"| {lev} | {_cell(d['mean_kappa'])} | {_cell(d['krippendorff_alpha'])} ({d['alpha_items']}) "
                     f"| {_cell(m['acceptance_rate'])} ({m['n']}) |")
    lines += ["", "## Reviewer pairs", "", "| level | pair | shared | observed | κ |", "|---|---|---|---|---|"]
    for lev, d in result["levels"].items():
        for p in d["pairwise"]:
            lines.append(f"| {lev} | {' / '.join(p['reviewers'])} | {p['n']} | {_cell(p['observed'])} "
                         f"| {_cell(p['kappa'])} |")
    lines += ["", "## Model → expert corrections", ""]
    for lev, d in result["levels"].items():
        corr = d["model_vs_expert"]["corrections"]
        lines.append(f"- **{lev}**: " + (", ".join(f"{k} ×{v}" for k, v in corr.items()) if corr else "none"))
    return "\n".join(lines) + "\n"


def run_agreement(cfg: AgreementConfig) -> StageResult:
    """Compute and write agreement.json and agreement.md."""
    reviews = load_reviews(map(Path, cfg.reviews))
    if not reviews:
        raise DataError(cfg.reviews[0] if cfg.reviews else "config", None, None, "no reviews to compare")
    result = compute_agreement(reviews, cfg.min_overlap)
    out = Path(cfg.out_dir)
    write_json(out / "agreement.json", result)
    write_text(out / "agreement.md", render_markdown(result))
    stats = {"reviews": result["reviews"], "reviewers": len(result["reviewers"]),
             "acceptance_rate_all_levels": result["acceptance_rate_all_levels"],
             **{f"{lev}_mean_kappa": d["mean_kappa"] for lev, d in result["levels"].items()},
             **{f"{lev}_alpha": d["krippendorff_alpha"] for lev, d in result["levels"].items()}}
    return StageResult(outputs=[out / "agreement.json", out / "agreement.md"], stats=stats)


STAGE = Stage(
    name="label.agreement",
    config_cls=AgreementConfig,
    inputs=agreement_inputs,
    run=run_agreement,
    default_config="pipeline/label/configs/agreement_demo.yaml",
    help="Cohen's kappa, Krippendorff's alpha, model acceptance and correction matrix",
)

__all__ = ["STAGE", "AgreementConfig", "compute_agreement", "krippendorff_alpha", "pairwise_kappa", "run_agreement"]

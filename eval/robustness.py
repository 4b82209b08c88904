"""Robustness statistics over prediction rows (clean and perturbed).

Rows follow the predictions schema of docs/CONTRACT.md. Accuracy here is **joint** accuracy
(every level with a gold label right) unless a level is named. For one (model, variant, mode)
group, :func:`robustness_table` gives per perturbation x severity: n, accuracy with a 95 % bootstrap
CI, Δ vs clean with a paired-bootstrap CI, PDR = 1 − acc_pert / acc_clean (PromptBench), flip rate
(prediction changed vs clean; overall and among clean-correct: CheckList's INV failure rate),
invalid rate and the exact McNemar p. :func:`robustness_aggregates` gives mean and std of accuracy
over (perturbation, severity, seed) cells that cannot change the label (the reference study's
robustness statistic is that std), the mean PDR, HELM's worst-case accuracy per instance and consistency.

**Minimum cell size.** A cell with fewer than ``min_n`` perturbed prompts (default
:data:`MIN_CELL_N` = 50) is marked ``too_small``: it is still listed, but kept out of the std, the
std ratio and the PDR summary, because at that size its accuracy is noise (n = 9 gives CIs like
[0.0, 0.44]). A std ratio that cannot be formed says why (``reason``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from eval.metrics import bootstrap_mean_ci, mcnemar_exact, paired_bootstrap_delta
from pipeline.core.taxonomy import LEVELS

CLEAN = "clean"
#: Cells (perturbation x severity, or x seed in the aggregates) below this many prompts are not summarised.
MIN_CELL_N = 50


def gold_levels(row: dict[str, Any], levels: Sequence[str] = LEVELS) -> list[str]:
    """Levels of ``row`` that have a gold label."""
    return [lvl for lvl in levels if (row.get("gold") or {}).get(lvl) is not None]


def is_correct(row: dict[str, Any], level: str | None = None) -> bool:
    """Joint correctness (all gold levels right), or one level's."""
    correct = row.get("correct") or {}
    if level is not None:
        return bool(correct.get(level))
    levels = gold_levels(row)
    return bool(levels) and all(bool(correct.get(lvl)) for lvl in levels)


def is_invalid(row: dict[str, Any]) -> bool:
    """True when a gold level could not be parsed."""
    parsed = row.get("parsed") or {}
    return any(parsed.get(lvl) is None for lvl in gold_levels(row))


def prediction(row: dict[str, Any]) -> tuple[str | None, ...]:
    """The predicted label tuple (used for flips and consistency)."""
    parsed = row.get("parsed") or {}
    return tuple(parsed.get(lvl) for lvl in LEVELS)


def group_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """(model_tag, variant, mode)."""
    return (row["model_tag"], row["variant"], row["mode"])


def split_groups(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows grouped by :func:`group_key` (insertion order kept)."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[group_key(r)].append(r)
    return dict(out)


def accuracy_with_ci(flags: Sequence[bool], seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """n, mean and 95 % bootstrap CI of 0/1 flags."""
    x = np.asarray(flags, dtype=float)
    if x.size == 0:
        return {"n": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    lo, hi = bootstrap_mean_ci(x, n_resamples=n_resamples, seed=seed)
    return {"n": int(x.size), "accuracy": float(x.mean()), "ci_low": lo, "ci_high": hi}


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def perturbation_cell(pert_rows: list[dict[str, Any]], clean: dict[str, dict[str, Any]],
                      seed: int = 0, n_resamples: int = 2000, min_n: int = MIN_CELL_N) -> dict[str, Any]:
    """Statistics of one perturbation x severity (all seeds pooled), paired with the clean rows by sample_id.

    ``too_small`` is true below ``min_n`` paired prompts (the cell is listed, never summarised).
    """
    paired = [(r, clean[r["sample_id"]]) for r in pert_rows if r["sample_id"] in clean]
    if not paired:
        return {"n": 0, "too_small": True}
    p_ok = np.array([is_correct(r) for r, _ in paired])
    c_ok = np.array([is_correct(c) for _, c in paired])
    flipped = np.array([prediction(r) != prediction(c) for r, c in paired])
    acc = accuracy_with_ci(p_ok, seed=seed, n_resamples=n_resamples)
    acc_clean = float(c_ok.mean())
    delta = paired_bootstrap_delta(p_ok, c_ok, n_resamples=n_resamples, seed=seed)
    out = {
        **acc,
        "accuracy_clean": acc_clean,
        "delta": delta["delta"], "delta_ci_low": _nan_to_none(delta["ci_low"]),
        "delta_ci_high": _nan_to_none(delta["ci_high"]),
        "pdr": (1.0 - acc["accuracy"] / acc_clean) if acc_clean > 0 else None,
        "flip_rate": float(flipped.mean()),
        "flip_rate_correct": float(flipped[c_ok].mean()) if c_ok.any() else None,
        "invalid_rate": float(np.mean([is_invalid(r) for r, _ in paired])),
        "mcnemar_p": mcnemar_exact(p_ok, c_ok)["p_value"],
        "label_may_change": bool(any(r.get("label_may_change") for r, _ in paired)),
        "per_level_accuracy": {lvl: float(np.mean([is_correct(r, lvl) for r, _ in paired])) for lvl in LEVELS},
        "seeds": sorted({int(r.get("seed", 0)) for r, _ in paired}),
        "too_small": len(paired) < min_n,
    }
    return out


def robustness_table(rows: list[dict[str, Any]], seed: int = 0, n_resamples: int = 2000,
                     min_n: int = MIN_CELL_N) -> list[dict[str, Any]]:
    """One entry per (perturbation, severity) of a single (model, variant, mode) group."""
    clean = {r["sample_id"]: r for r in rows if r["perturbation"] == CLEAN}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["perturbation"] != CLEAN:
            cells[(r["perturbation"], int(r["severity"]))].append(r)
    return [{"perturbation": name, "severity": sev,
             **perturbation_cell(cells[(name, sev)], clean, seed, n_resamples, min_n)}
            for name, sev in sorted(cells)]


def robustness_aggregates(rows: list[dict[str, Any]], min_n: int = MIN_CELL_N) -> dict[str, Any]:
    """Mean/std of accuracy over invariant (perturbation, severity, seed) cells, mean PDR, worst-case and consistency.

    Only rows with ``label_may_change`` false count, and only cells with at least ``min_n`` prompts
    (``n_cells_too_small`` counts the others). Worst-case accuracy: the share of perturbed instances right
    on the clean input *and* on every invariant perturbed version. Consistency: the share whose predicted
    labels are identical on all those versions. Mean PDR: 1 − acc_pert / acc_clean averaged over the
    usable cells (each paired with the clean accuracy of its own prompts).
    """
    clean = {r["sample_id"]: r for r in rows if r["perturbation"] == CLEAN}
    inv = [r for r in rows if r["perturbation"] != CLEAN and not r.get("label_may_change")]
    cells: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    per_sample: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in inv:
        cells[(r["perturbation"], int(r["severity"]), int(r.get("seed", 0)))].append(r)
        per_sample[r["sample_id"]].append(r)
    usable = {k: v for k, v in cells.items() if len(v) >= min_n}
    accs = np.array([np.mean([is_correct(r) for r in v]) for v in usable.values()]) if usable else np.array([])
    pdrs = []
    for v in usable.values():
        base = [is_correct(clean[r["sample_id"]]) for r in v if r["sample_id"] in clean]
        if base and np.mean(base) > 0:
            pdrs.append(1.0 - np.mean([is_correct(r) for r in v]) / np.mean(base))
    worst, consistent = [], []
    for sid, prs in per_sample.items():
        if sid not in clean:
            continue
        versions = [clean[sid]] + prs
        worst.append(all(is_correct(v) for v in versions))
        consistent.append(len({prediction(v) for v in versions}) == 1)
    subset = [clean[s] for s in per_sample if s in clean]
    return {
        "min_cell_n": min_n,
        "n_cells": int(accs.size),
        "n_cells_too_small": len(cells) - len(usable),
        "mean_accuracy": float(accs.mean()) if accs.size else None,
        # sample std (ddof=1) across usable cells; undefined (None) with fewer than two
        "std_accuracy": float(accs.std(ddof=1)) if accs.size > 1 else None,
        "min_cell_accuracy": float(accs.min()) if accs.size else None,
        "mean_pdr": float(np.mean(pdrs)) if pdrs else None,
        "clean_accuracy_on_subset": float(np.mean([is_correct(c) for c in subset])) if subset else None,
        "worst_case_accuracy": float(np.mean(worst)) if worst else None,
        "consistency": float(np.mean(consistent)) if consistent else None,
        "n_instances": len(worst),
    }


def mark_training(table: list[dict[str, Any]], trained: list[str] | None) -> list[dict[str, Any]]:
    """Set ``in_training`` on every cell of a robustness table: True when its family was among the model's
    training-time variation families, False when not (an *unseen* family), None for an untrained model."""
    for cell in table:
        cell["in_training"] = None if trained is None else cell["perturbation"] in trained
    return table


def cell_summary(rows: list[dict[str, Any]], trained: list[str] | None, min_n: int = MIN_CELL_N) -> dict[str, Any]:
    """Invariant cells of one group (perturbation x severity, seeds pooled, rows whose label may change left out,
    at least ``min_n`` prompts), all / seen / unseen in training: count, mean, std over cells and the worst cell
    (accuracy and Δ vs the clean accuracy of the same prompts), so a report states its weakest point.

    ``trained``: the model's training-time variation families (None: an untrained model, nothing is seen).
    """
    clean = {r["sample_id"]: r for r in rows if r["perturbation"] == CLEAN}
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["perturbation"] != CLEAN and not r.get("label_may_change") and r["sample_id"] in clean:
            cells[(r["perturbation"], int(r["severity"]))].append(r)
    usable = []
    for (name, sev), v in sorted(cells.items()):
        if len(v) < min_n:
            continue
        acc = float(np.mean([is_correct(r) for r in v]))
        base = float(np.mean([is_correct(clean[r["sample_id"]]) for r in v]))
        usable.append({"cell": f"{name}-{sev}", "n": len(v), "accuracy": acc, "delta": acc - base,
                       "in_training": None if trained is None else name in trained})

    def summarise(group: list[dict[str, Any]]) -> dict[str, Any]:
        if not group:
            return {"n_cells": 0}
        accs = np.array([c["accuracy"] for c in group])
        worst = min(group, key=lambda c: c["accuracy"])
        return {"n_cells": len(group), "mean_accuracy": float(accs.mean()),
                "std_accuracy": float(accs.std(ddof=1)) if len(group) > 1 else None,
                "worst_cell": worst["cell"], "worst_accuracy": worst["accuracy"], "worst_delta": worst["delta"],
                "max_drop": float(max(-c["delta"] for c in group))}

    return {"cells": usable, "all": summarise(usable),
            "seen": summarise([c for c in usable if c["in_training"] is True]),
            "unseen": summarise([c for c in usable if c["in_training"] is False])}


def flip_by_class(rows: list[dict[str, Any]], level: str = "motion") -> dict[str, dict[str, float | None]]:
    """Flip rate per perturbation (invariant severities pooled) x gold class of ``level``."""
    clean = {r["sample_id"]: r for r in rows if r["perturbation"] == CLEAN}
    acc: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["perturbation"] == CLEAN or r.get("label_may_change") or r["sample_id"] not in clean:
            continue
        gold = (r.get("gold") or {}).get(level)
        if gold is None:
            continue
        acc[r["perturbation"]][gold].append(prediction(r) != prediction(clean[r["sample_id"]]))
    return {p: {g: float(np.mean(v)) for g, v in sorted(d.items())} for p, d in sorted(acc.items())}


def std_ratio_reason(std: float | None, baseline_std: float | None, agg: dict[str, Any],
                     base: dict[str, Any]) -> str | None:
    """Why the std ratio of a model to its baseline cannot be formed (None when it can)."""
    for who, s, a in (("model", std, agg), ("baseline", baseline_std, base)):
        if s is None:
            return (f"{who} has {a.get('n_cells', 0)} invariant cell(s) with n >= {a.get('min_cell_n', MIN_CELL_N)} "
                    f"({a.get('n_cells_too_small', 0)} too small): a std needs at least two")
    if baseline_std == 0:
        return "baseline std is 0: the baseline has the same accuracy in every cell (e.g. always wrong), so no ratio"
    return None


def std_ratios(aggregates: dict[tuple[str, str, str], dict[str, Any]], baseline_tag: str) -> list[dict[str, Any]]:
    """std of perturbed accuracy of each model / the baseline model's, per (variant, mode); ``reason`` says why
    a ratio is missing."""
    out = []
    for (tag, variant, mode), agg in sorted(aggregates.items()):
        if tag == baseline_tag:
            continue
        base = aggregates.get((baseline_tag, variant, mode))
        if base is None:
            out.append({"model_tag": tag, "baseline": baseline_tag, "variant": variant, "mode": mode,
                        "std": agg.get("std_accuracy"), "baseline_std": None, "ratio": None,
                        "reason": f"no {baseline_tag} rows for {variant}/{mode}"})
            continue
        s, b = agg.get("std_accuracy"), base.get("std_accuracy")
        reason = std_ratio_reason(s, b, agg, base)
        out.append({"model_tag": tag, "baseline": baseline_tag, "variant": variant, "mode": mode,
                    "std": s, "baseline_std": b, "ratio": None if reason else s / b, "reason": reason})
    return out


__all__ = ["CLEAN", "MIN_CELL_N", "accuracy_with_ci", "cell_summary", "flip_by_class", "mark_training", "group_key", "is_correct", "is_invalid", "perturbation_cell",
           "prediction", "robustness_aggregates", "robustness_table", "split_groups", "std_ratio_reason", "std_ratios"]

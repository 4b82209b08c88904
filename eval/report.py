"""Assemble the evaluation report (JSON numbers, Markdown summary, self-contained HTML with plots).

:func:`build_report` turns prediction rows into one JSON-able dict; :func:`write_reports` writes
``report.json``, ``report.md`` and ``report.html`` (plots as base64 PNG, matplotlib Agg, so the
HTML file is the whole report).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.faithfulness import summarise as summarise_faithfulness
from eval.metrics import calibration, classification_summary, mcnemar_exact, paired_bootstrap_delta
from eval.robustness import (
    CLEAN,
    MIN_CELL_N,
    accuracy_with_ci,
    cell_summary,
    flip_by_class,
    is_correct,
    is_invalid,
    mark_training,
    robustness_aggregates,
    robustness_table,
    split_groups,
    std_ratios,
)
from pipeline.core.io import DataError, read_json_object, write_json, write_text
from pipeline.core.taxonomy import LABELS, LEVELS

log = logging.getLogger(__name__)

GroupKey = tuple[str, str, str]


# ------------------------------------------------------------------------------------------ numbers
def clean_summary(rows: list[dict[str, Any]], seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Clean-set metrics of one group: joint accuracy + CI, invalid rate, per-level summaries, calibration."""
    clean = [r for r in rows if r["perturbation"] == CLEAN]
    out = accuracy_with_ci([is_correct(r) for r in clean], seed=seed, n_resamples=n_resamples)
    out["invalid_rate"] = float(np.mean([is_invalid(r) for r in clean])) if clean else None
    out["parse_rate"] = (1.0 - out["invalid_rate"]) if out["invalid_rate"] is not None else None
    lat = [r["latency_s"] for r in clean if r.get("latency_s")]
    out["examples_per_s"] = (1.0 / float(np.mean(lat))) if lat else None
    # generated rows: new tokens per second of generation wall time (a row's latency is its batch's time / rows)
    gen = [r for r in clean if r.get("new_tokens") is not None and r.get("latency_s")]
    out["new_tokens_per_s"] = (sum(r["new_tokens"] for r in gen) / sum(r["latency_s"] for r in gen)) if gen else None
    out["mean_new_tokens"] = float(np.mean([r["new_tokens"] for r in gen])) if gen else None
    out["levels"] = {}
    out["calibration"] = {}
    for lvl in LEVELS:
        have = [r for r in clean if (r.get("gold") or {}).get(lvl) is not None]
        summ = classification_summary([r["gold"][lvl] for r in have], [r["parsed"].get(lvl) for r in have],
                                      LABELS[lvl])
        summ.update({k: v for k, v in accuracy_with_ci([is_correct(r, lvl) for r in have], seed=seed,
                                                        n_resamples=n_resamples).items() if k.startswith("ci_")})
        out["levels"][lvl] = summ
        scored = [r for r in have if (r.get("probs") or {}).get(lvl)]
        if scored:
            probs = np.array([[r["probs"][lvl].get(lab, 0.0) for lab in LABELS[lvl]] for r in scored])
            gold_idx = [LABELS[lvl].index(r["gold"][lvl]) for r in scored]
            out["calibration"][lvl] = calibration(probs, gold_idx)
    return out


def faithfulness_summary(rows: list[dict[str, Any]], seed: int = 0, n_resamples: int = 2000) -> dict[str, Any] | None:
    """Rationale faithfulness of one group's generated CoT rows (:mod:`eval.faithfulness`), clean and perturbed:
    faithful rate with a bootstrap CI, consistency rate, errors per claim type, examples of unfaithful rows."""
    marked = [r for r in rows if isinstance(r.get("faithfulness"), dict)]
    if not marked:
        return None
    out = {}
    for part, subset in (("clean", [r for r in marked if r["perturbation"] == CLEAN]),
                         ("perturbed", [r for r in marked if r["perturbation"] != CLEAN])):
        if not subset:
            continue
        verdicts = [r["faithfulness"] for r in subset]
        shown = [{"sample_id": r["sample_id"], "perturbation": r["perturbation"], "severity": r["severity"],
                  "gold": r["gold"], "prompt": r["prompt"], "output": r["output"]} for r in subset]
        summ = summarise_faithfulness(verdicts, shown)
        ci = accuracy_with_ci([bool(v["faithful"]) for v in verdicts], seed=seed, n_resamples=n_resamples)
        summ.update(faithful_ci_low=ci.get("ci_low"), faithful_ci_high=ci.get("ci_high"))
        out[part] = summ
    return out


def paired_comparison(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], seed: int = 0,
                      n_resamples: int = 2000) -> dict[str, Any]:
    """Clean joint accuracy of a vs b on their shared sample_ids: Δ with paired CI and McNemar p."""
    a = {r["sample_id"]: r for r in a_rows if r["perturbation"] == CLEAN}
    b = {r["sample_id"]: r for r in b_rows if r["perturbation"] == CLEAN}
    shared = sorted(set(a) & set(b))
    if not shared:
        return {"n": 0}
    ok_a = np.array([is_correct(a[s]) for s in shared])
    ok_b = np.array([is_correct(b[s]) for s in shared])
    d = paired_bootstrap_delta(ok_a, ok_b, n_resamples=n_resamples, seed=seed)
    return {"n": len(shared), "accuracy_a": float(ok_a.mean()), "accuracy_b": float(ok_b.mean()),
            "delta": d["delta"], "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"],
            "mcnemar_p": mcnemar_exact(ok_a, ok_b)["p_value"]}


def comparisons(groups: dict[GroupKey, list[dict[str, Any]]], baseline_tag: str, seed: int = 0,
                n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Every model vs the baseline (same variant, mode) and cot vs plain (same model, mode)."""
    out = []
    for (tag, variant, mode), rows in sorted(groups.items()):
        base = groups.get((baseline_tag, variant, mode))
        if tag != baseline_tag and base is not None:
            out.append({"kind": "model", "a": f"{tag}/{variant}/{mode}", "b": f"{baseline_tag}/{variant}/{mode}",
                        **paired_comparison(rows, base, seed, n_resamples)})
        plain = groups.get((tag, "plain", mode))
        if variant != "plain" and plain is not None:
            out.append({"kind": "variant", "a": f"{tag}/{variant}/{mode}", "b": f"{tag}/plain/{mode}",
                        **paired_comparison(rows, plain, seed, n_resamples)})
    return out


def failing_examples(groups: dict[GroupKey, list[dict[str, Any]]], per_perturbation: int = 3) -> dict[str, list]:
    """Up to ``per_perturbation`` examples per perturbation that were right clean and wrong perturbed."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, rows in groups.items():
        clean = {r["sample_id"]: r for r in rows if r["perturbation"] == CLEAN}
        for r in rows:
            if r["perturbation"] == CLEAN or len(out[r["perturbation"]]) >= per_perturbation:
                continue
            c = clean.get(r["sample_id"])
            if c is not None and is_correct(c) and not is_correct(r):
                out[r["perturbation"]].append({
                    "group": "/".join(key), "sample_id": r["sample_id"], "severity": r["severity"], "seed": r["seed"],
                    "gold": r["gold"], "clean_prompt": c["prompt"], "perturbed_prompt": r["prompt"],
                    "clean_output": c["output"], "perturbed_output": r["output"],
                    "clean_parsed": c["parsed"], "perturbed_parsed": r["parsed"]})
    return dict(out)


def build_report(rows: list[dict[str, Any]], manifest: dict[str, Any], baseline_tag: str = "base",
                 seed: int = 0, n_resamples: int = 2000, min_cell_n: int = MIN_CELL_N,
                 learning_curves: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """All numbers of the evaluation as one JSON-able dict (see module docstring).

    ``learning_curves``: per model tag, the train stage's dev-evaluation rows (``kind: eval`` of its
    metrics.jsonl) and which step the evaluated checkpoint is, for the learning-curve plot.
    """
    groups = split_groups(rows)
    trained = {m.get("tag"): m.get("trained_families") for m in manifest.get("models") or []}
    out_groups, aggs = [], {}
    for key, grows in groups.items():
        agg = robustness_aggregates(grows, min_cell_n)
        aggs[key] = agg
        table = mark_training(robustness_table(grows, seed, n_resamples, min_cell_n), trained.get(key[0]))
        out_groups.append({
            "model_tag": key[0], "variant": key[1], "mode": key[2],
            "clean": clean_summary(grows, seed, n_resamples),
            "robustness": table,
            "cells": cell_summary(grows, trained.get(key[0]), min_cell_n),
            "aggregates": agg,
            "flip_by_class": {lvl: flip_by_class(grows, lvl) for lvl in LEVELS},
            "faithfulness": faithfulness_summary(grows, seed, n_resamples),
        })
    return {
        "manifest": manifest,
        "groups": out_groups,
        "comparisons": comparisons(groups, baseline_tag, seed, n_resamples),
        "std_ratios": std_ratios(aggs, baseline_tag),
        "failures": failing_examples(groups),
        "n_rows": len(rows),
        "min_cell_n": min_cell_n,
        "learning_curves": learning_curves or {},
    }


# -------------------------------------------------------------------------------------------- plots
def _png(fig: Any) -> str:
    """Render a matplotlib figure to base64 PNG and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_severity_curves(report: dict[str, Any]) -> str | None:
    """Accuracy vs severity (0 = clean on the perturbed subset) per perturbation, one line + CI band per group."""
    perts = sorted({c["perturbation"] for g in report["groups"] for c in g["robustness"]})
    if not perts:
        return None
    plt = _pyplot()
    ncol = min(3, len(perts))
    nrow = (len(perts) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, pert in zip(axes.flat, perts):
        for g in report["groups"]:
            cells = [c for c in g["robustness"] if c["perturbation"] == pert and c.get("n")]
            if not cells:
                continue
            xs = [0] + [c["severity"] for c in cells]
            ys = [cells[0]["accuracy_clean"]] + [c["accuracy"] for c in cells]
            lo = [ys[0]] + [c["ci_low"] for c in cells]
            hi = [ys[0]] + [c["ci_high"] for c in cells]
            label = f"{g['model_tag']}/{g['variant']}/{g['mode']}"
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
            for c in cells:
                if c.get("label_may_change"):
                    ax.axvspan(c["severity"] - 0.4, c["severity"] + 0.4, color="grey", alpha=0.06)
        ax.set_title(pert)
        ax.set_xlabel("severity (grey: label may change)")
        ax.set_ylabel("joint accuracy")
        ax.set_ylim(-0.02, 1.02)
    for ax in list(axes.flat)[len(perts):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def plot_confusions(group: dict[str, Any]) -> str:
    """One row of confusion matrices (gold rows x predicted columns incl. invalid), one per level."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(5.0 * len(LEVELS), 4.4))
    for ax, lvl in zip(np.atleast_1d(axes), LEVELS):
        conf = group["clean"]["levels"][lvl].get("confusion")
        if not conf:
            ax.axis("off")
            continue
        m = np.array(conf["matrix"], dtype=float)
        ax.imshow(m, cmap="Blues")
        labels = conf["labels"]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels) - 1), labels[:-1], fontsize=7)
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=6)
        ax.set_title(f"{lvl} (gold rows, predicted columns)", fontsize=9)
    fig.suptitle(f"{group['model_tag']}/{group['variant']}/{group['mode']}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_flip_heatmap(group: dict[str, Any], level: str = "motion") -> str | None:
    """Perturbation x gold-class flip rate (invariant severities) for one group."""
    data = group["flip_by_class"].get(level) or {}
    if not data:
        return None
    plt = _pyplot()
    perts = sorted(data)
    classes = [c for c in LABELS[level] if any(c in data[p] for p in perts)]
    m = np.array([[data[p].get(c, np.nan) for c in classes] for p in perts], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(classes), 0.9 + 0.4 * len(perts)))
    im = ax.imshow(m, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=8)
    ax.set_yticks(range(len(perts)), perts, fontsize=8)
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="flip rate")
    ax.set_title(f"flip rate by gold {level}: {group['model_tag']}/{group['variant']}/{group['mode']}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def plot_reliability(report: dict[str, Any]) -> str | None:
    """Reliability diagram (accuracy vs confidence per bin) per level, one line per score-mode group."""
    groups = [g for g in report["groups"] if g["clean"].get("calibration")]
    if not groups:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(4.2 * len(LEVELS), 3.6))
    for ax, lvl in zip(np.atleast_1d(axes), LEVELS):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        for g in groups:
            cal = g["clean"]["calibration"].get(lvl)
            if not cal:
                continue
            bins = [b for b in cal["bins"] if b["count"]]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                    label=f"{g['model_tag']}/{g['variant']} ECE={cal['ece']:.3f}")
        ax.set_title(lvl)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# -------------------------------------------------------------------------------------------- text
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "nan" if np.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _ci(d: dict[str, Any], key: str = "accuracy", lo: str = "ci_low", hi: str = "ci_high") -> str:
    return f"{_fmt(d.get(key))} [{_fmt(d.get(lo))}, {_fmt(d.get(hi))}]"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The headline table: one row per (model, variant, mode)."""
    rows = []
    for g in report["groups"]:
        c, a = g["clean"], g["aggregates"]
        rows.append([g["model_tag"], g["variant"], g["mode"], str(c["n"]), _ci(c),
                     *[_fmt(c["levels"][lvl].get("accuracy")) for lvl in LEVELS],
                     _fmt(c["levels"]["motion"].get("macro_f1")), _fmt(c.get("invalid_rate")),
                     _fmt(a.get("mean_accuracy")), _fmt(a.get("std_accuracy")), _fmt(a.get("mean_pdr")),
                     f"{a.get('n_cells', 0)} (+{a.get('n_cells_too_small', 0)} small)", _fmt(a.get("worst_case_accuracy")),
                     _fmt(a.get("consistency")), _fmt(c.get("examples_per_s"), 2), _fmt(c.get("new_tokens_per_s"), 1)])
    return rows


SUMMARY_HEADER = ["model", "variant", "mode", "n", "joint acc [95% CI]", *[f"{lvl} acc" for lvl in LEVELS],
                  "motion macro-F1", "invalid", "pert. mean acc", "pert. std", "mean PDR", "cells used",
                  "worst-case", "consistency", "ex/s", "new tok/s"]
ROBUST_HEADER = ["perturbation", "sev", "in training", "n", "acc [95% CI]", "Δ vs clean [95% CI]", "PDR", "flip",
                 "flip|correct", "invalid", "McNemar p", "label may change", "note"]
CELLS_HEADER = ["model", "variant", "mode", "clean joint", "cells", "mean", "std over cells", "worst cell",
                "worst acc", "worst Δ", "seen: cells / mean / worst", "unseen: cells / mean / worst"]
_SEEN = {True: "seen", False: "unseen", None: "–"}


def cells_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per group: the usable invariant cells' mean, std and worst cell, and the same for seen / unseen families."""
    out = []
    for g in report["groups"]:
        cs = g.get("cells") or {}
        a, seen, unseen = cs.get("all") or {}, cs.get("seen") or {}, cs.get("unseen") or {}
        if not a.get("n_cells"):
            continue

        def brief(d: dict[str, Any]) -> str:
            if not d.get("n_cells"):
                return "–"
            return f"{d['n_cells']} / {_fmt(d.get('mean_accuracy'))} / {d['worst_cell']} {_fmt(d.get('worst_accuracy'))}"

        out.append([g["model_tag"], g["variant"], g["mode"], _fmt(g["clean"].get("accuracy")), str(a["n_cells"]),
                    _fmt(a.get("mean_accuracy")), _fmt(a.get("std_accuracy")), a["worst_cell"],
                    _fmt(a.get("worst_accuracy")), _fmt(a.get("worst_delta")), brief(seen), brief(unseen)])
    return out


def robustness_rows(group: dict[str, Any]) -> list[list[str]]:
    """Per perturbation x severity lines of one group."""
    out = []
    for c in group["robustness"]:
        if not c.get("n"):
            continue
        out.append([c["perturbation"], str(c["severity"]), _SEEN[c.get("in_training")], str(c["n"]), _ci(c),
                    _ci(c, "delta", "delta_ci_low", "delta_ci_high"), _fmt(c.get("pdr")), _fmt(c.get("flip_rate")),
                    _fmt(c.get("flip_rate_correct")), _fmt(c.get("invalid_rate")), _fmt(c.get("mcnemar_p"), 4),
                    "yes" if c.get("label_may_change") else "no",
                    "too small: not summarised" if c.get("too_small") else ""])
    return out


def comparison_rows(report: dict[str, Any]) -> list[list[str]]:
    """Paired clean comparisons (model vs baseline, cot vs plain)."""
    return [[c["kind"], c["a"], c["b"], str(c.get("n")), _fmt(c.get("accuracy_a")), _fmt(c.get("accuracy_b")),
             _ci(c, "delta", "delta_ci_low", "delta_ci_high"), _fmt(c.get("mcnemar_p"), 4)]
            for c in report["comparisons"] if c.get("n")]


FAITH_HEADER = ["model", "variant", "mode", "rows", "n", "faithful [95% CI]", "consistent", "claims checked",
                "most frequent errors (count)"]


def faithfulness_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per group and part (clean, perturbed): faithful rate with CI, consistency rate, the top error types."""
    out = []
    for g in report["groups"]:
        for part, f in (g.get("faithfulness") or {}).items():
            top = ", ".join(f"{k} ({v})" for k, v in list(f["errors"].items())[:4]) or "none"
            out.append([g["model_tag"], g["variant"], g["mode"], part, str(f["n"]),
                        _ci(f, "faithful_rate", "faithful_ci_low", "faithful_ci_high"), _fmt(f["consistent_rate"]),
                        str(f["claims"]), top])
    return out


def claim_error_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Errors per claim type (rows with the error / errors) for every group with faithfulness, clean rows."""
    groups = [g for g in report["groups"] if (g.get("faithfulness") or {}).get("clean")]
    kinds = sorted({k for g in groups for k in g["faithfulness"]["clean"]["errors"]})
    header = ["claim type", *[f"{g['model_tag']}/{g['variant']}/{g['mode']} rows (errors)" for g in groups]]
    rows = [[k, *[f"{g['faithfulness']['clean']['rows_with_error'].get(k, 0)} "
                  f"({g['faithfulness']['clean']['errors'].get(k, 0)})" for g in groups]] for k in kinds]
    return header, rows


def faithfulness_examples(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, example) of the unfaithful rationales the summaries kept."""
    return [(f"{g['model_tag']}/{g['variant']}/{g['mode']} ({part})", ex) for g in report["groups"]
            for part, f in (g.get("faithfulness") or {}).items() for ex in f["examples"]]


COMPARE_HEADER = ["kind", "a", "b", "n", "acc a", "acc b", "Δ (a−b) [95% CI]", "McNemar p"]
RATIO_HEADER = ["model", "baseline", "variant", "mode", "std", "baseline std", "ratio", "why no ratio"]


def ratio_rows(report: dict[str, Any]) -> list[list[str]]:
    """Robustness std ratios (model / baseline), with the reason where one cannot be formed."""
    return [[r["model_tag"], r["baseline"], r["variant"], r["mode"], _fmt(r["std"]), _fmt(r["baseline_std"]),
             _fmt(r["ratio"]), r.get("reason") or ""] for r in report["std_ratios"]]


CURVE_HEADER = ["model", "step", "dev rows", "mode", "joint", *[f"{lvl}" for lvl in LEVELS], "dev loss", "evaluated"]


def curve_rows(report: dict[str, Any]) -> list[list[str]]:
    """The train stage's dev evaluations per model (the learning curve as a table)."""
    out = []
    for tag, curve in sorted((report.get("learning_curves") or {}).items()):
        for r in curve["points"]:
            out.append([tag, str(r["step"]), str(r.get("dev_rows", "")), str(r.get("dev_mode", "")),
                        _fmt(r.get("dev_acc")), *[_fmt(r.get(f"dev_acc_{lvl}")) for lvl in LEVELS],
                        _fmt(r.get("dev_loss")), "yes" if r["step"] == curve.get("evaluated_step") else ""])
    return out


def plot_learning_curves(report: dict[str, Any]) -> str | None:
    """Dev accuracy (joint and per level) vs training step per tuned model; the evaluated checkpoint marked."""
    curves = {t: c for t, c in (report.get("learning_curves") or {}).items()
              if any(p.get("dev_acc") is not None for p in c["points"])}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.4), squeeze=False)
    for ax, (tag, curve) in zip(axes.flat, sorted(curves.items())):
        pts = [p for p in curve["points"] if p.get("dev_acc") is not None]
        steps = [p["step"] for p in pts]
        ax.plot(steps, [p["dev_acc"] for p in pts], marker="o", lw=2, label="joint")
        for lvl in LEVELS:
            ax.plot(steps, [p.get(f"dev_acc_{lvl}") for p in pts], marker=".", lw=1, alpha=0.7, label=lvl)
        if curve.get("evaluated_step") is not None:
            ax.axvline(curve["evaluated_step"], color="grey", ls="--", lw=1,
                       label=curve.get("mark_label", "evaluated checkpoint"))
        ax.set_title(f"{tag}: dev accuracy ({pts[-1].get('dev_rows', '?')} rows, {pts[-1].get('dev_mode', '?')})")
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: headline table, comparisons, std ratios, per-group robustness tables."""
    m = report["manifest"]
    parts = ["# Evaluation report", "",
             f"Split `{m.get('split')}`, {report['n_rows']} prediction rows; joint accuracy = all three levels right. "
             "Robustness statistics use only perturbations that cannot change the label.", "",
             "## Summary", md_table(SUMMARY_HEADER, summary_rows(report)), "",
             "## Robustness cells: worst cell, std over cells, seen vs unseen in training",
             "Usable invariant cells (n >= the minimum, label cannot change). *seen*: the family was among the "
             "model's training-time variation families; *unseen*: it was kept out of training.", "",
             md_table(CELLS_HEADER, cells_rows(report)), "",
             "## Paired comparisons (clean)", md_table(COMPARE_HEADER, comparison_rows(report)), "",
             "## Robustness std ratio (model / baseline)",
             f"Cells with fewer than {report.get('min_cell_n')} prompts are listed but kept out of std, ratio and PDR.",
             "", md_table(RATIO_HEADER, ratio_rows(report)), ""]
    if faithfulness_rows(report):
        header, rows = claim_error_rows(report)
        parts += ["## Rationale faithfulness (generated CoT replies, eval/faithfulness.py)",
                  "Faithful = every step there and every claim true of the record and the rule tables (trend, "
                  "numbers, thresholds, comparisons, rule operation and task); consistent = the answer line names "
                  "the rationale's own conclusion.", "", md_table(FAITH_HEADER, faithfulness_rows(report)), "",
                  "### Errors per claim type (clean rows)", md_table(header, rows), "",
                  "### Unfaithful rationales (examples)", ""]
        for name, ex in faithfulness_examples(report):
            parts += [f"**{name}** sample `{ex['sample_id']}`, gold `{ex['gold']}`: " + "; ".join(ex["notes"]), "",
                      "```", ex["output"], "```", ""]
    if report.get("learning_curves"):
        parts += ["## Learning curve (train stage dev evaluations)", md_table(CURVE_HEADER, curve_rows(report)), ""]
    for g in report["groups"]:
        parts += [f"## Robustness: {g['model_tag']} / {g['variant']} / {g['mode']}",
                  md_table(ROBUST_HEADER, robustness_rows(g)), ""]
    parts += ["## Inputs", "```json", json.dumps(m, ensure_ascii=False, indent=1)[:6000], "```", ""]
    return "\n".join(parts)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An escaped HTML table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:12px;"
       "margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}img{max-width:100%}"
       "pre{white-space:pre-wrap;background:#f7f7f7;padding:0.5em;font-size:11px;max-height:20em;overflow:auto}"
       ".pair{display:grid;grid-template-columns:1fr 1fr;gap:0.5em}")


def faithfulness_html(report: dict[str, Any]) -> list[str]:
    """The rationale-faithfulness section of report.html (empty without generated CoT rows)."""
    if not faithfulness_rows(report):
        return []
    esc = html.escape
    header, rows = claim_error_rows(report)
    parts = ["<h2>Rationale faithfulness</h2>",
             "<p>Faithful = every step there and every claim true of the record and the rule tables; consistent = "
             "the answer line names the rationale's own conclusion.</p>",
             html_table(FAITH_HEADER, faithfulness_rows(report)), "<h3>Errors per claim type (clean rows)</h3>",
             html_table(header, rows), "<h3>Unfaithful rationales (examples)</h3>"]
    for name, ex in faithfulness_examples(report):
        parts += [f"<p><b>{esc(name)}</b> sample <code>{esc(ex['sample_id'])}</code>, gold "
                  f"<code>{esc(str(ex['gold']))}</code></p>",
                  f"<pre>{esc(ex['prompt'])}\n\n=> {esc(ex['output'])}\n\n{esc(chr(10).join(ex['notes']))}</pre>"]
    return parts


def render_html(report: dict[str, Any]) -> str:
    """report.html: self-contained (inline CSS, plots as data: URIs)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>Evaluation report</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             "<h1>Evaluation report</h1>",
             f"<p>Split <code>{esc(str(report['manifest'].get('split')))}</code>, {report['n_rows']} prediction rows. "
             "Joint accuracy = all three levels right; robustness statistics use only perturbations that cannot "
             "change the label.</p>",
             "<h2>Summary</h2>", html_table(SUMMARY_HEADER, summary_rows(report)),
             "<h2>Robustness cells: worst cell, std, seen vs unseen in training</h2>",
             html_table(CELLS_HEADER, cells_rows(report)),
             "<h2>Paired comparisons (clean)</h2>", html_table(COMPARE_HEADER, comparison_rows(report)),
             "<h2>Robustness std ratio</h2>",
             f"<p>Cells with fewer than {report.get('min_cell_n')} prompts are listed but kept out of std, ratio "
             "and PDR.</p>", html_table(RATIO_HEADER, ratio_rows(report)),
             *faithfulness_html(report),
             "<h2>Learning curve</h2>", _img(plot_learning_curves(report), "learning curve"),
             html_table(CURVE_HEADER, curve_rows(report)),
             "<h2>Accuracy vs severity</h2>", _img(plot_severity_curves(report), "accuracy vs severity"),
             "<h2>Reliability (label scoring)</h2>", _img(plot_reliability(report), "reliability diagram")]
    for g in report["groups"]:
        name = f"{g['model_tag']} / {g['variant']} / {g['mode']}"
        parts += [f"<h2>{esc(name)}</h2>", html_table(ROBUST_HEADER, robustness_rows(g)),
                  _img(plot_confusions(g), f"confusion matrices {name}"),
                  _img(plot_flip_heatmap(g), f"flip heatmap {name}")]
    parts.append("<h2>Top failing examples</h2>")
    for pert, examples in sorted(report["failures"].items()):
        parts.append(f"<h3>{esc(pert)}</h3>")
        for ex in examples:
            parts += [f"<p><b>{esc(ex['group'])}</b> sample <code>{esc(ex['sample_id'])}</code>, severity "
                      f"{ex['severity']}, seed {ex['seed']}, gold <code>{esc(str(ex['gold']))}</code></p>",
                      '<div class="pair">',
                      f"<pre>{esc(ex['clean_prompt'])}\n\n=> {esc(ex['clean_output'])}</pre>",
                      f"<pre>{esc(ex['perturbed_prompt'])}\n\n=> {esc(ex['perturbed_output'])}</pre>",
                      "</div>"]
    parts += ["<h2>Inputs</h2>",
              f"<pre>{esc(json.dumps(report['manifest'], ensure_ascii=False, indent=1))}</pre>",
              "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_reports(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and report.html atomically; return their paths."""
    out_dir = Path(out_dir)
    paths = [write_json(out_dir / "report.json", report),
             write_text(out_dir / "report.md", render_markdown(report)),
             write_text(out_dir / "report.html", render_html(report))]
    return paths


# ------------------------------------------------------------------------------------ reading back
def report_file(path: Path) -> Path:
    """``report.json`` itself, or the one inside an evaluate output folder."""
    path = Path(path)
    return path / "report.json" if path.is_dir() or path.suffix != ".json" else path


def load_report(path: Path) -> dict[str, Any]:
    """A report.json (or the evaluate folder holding it), checked for the group fields readers use (DataError)."""
    path = report_file(path)
    report = read_json_object(path)
    if not isinstance(report.get("groups"), list):
        raise DataError(path, None, "groups", "not an evaluate report (no groups list)")
    for i, g in enumerate(report["groups"]):
        for field in ("model_tag", "variant", "mode", "clean", "aggregates"):
            if field not in g:
                raise DataError(path, None, f"groups[{i}].{field}", "missing")
    return report


__all__ = ["build_report", "load_report", "report_file", "clean_summary", "comparisons", "failing_examples", "html_table", "md_table",
           "paired_comparison", "render_html", "render_markdown", "write_reports"]


"""Stage ``compare``: several evaluation reports side by side.

``python -m pipeline compare --config eval/configs/compare_demo.yaml``

Reads ``report.json`` files written by ``evaluate`` and writes ``compare.json``, ``compare.md`` and
``compare.html`` under ``out_dir``: one line per (report, model, variant, mode) with clean joint
accuracy (95 % CI), per-level accuracy (95 % CI), parse rate, rationale faithfulness and answer/rationale
consistency (generated CoT), the perturbed-set mean/std of accuracy, worst-case accuracy, consistency, ECE
(score mode), new tokens/s (generation) and the robustness std ratios. ``pairs`` adds paired tests between lines of
different reports (clean joint accuracy on the shared prompts: bootstrap Δ with CI, McNemar), read from the
``predictions.jsonl`` beside each report.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path
from typing import Any

from eval.report import CSS, _ci, _fmt, html_table, load_report, md_table, paired_comparison, report_file
from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, read_jsonl, write_json, write_text
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LEVELS


@dataclasses.dataclass(frozen=True)
class PairEntry:
    """Two lines to test against each other on their shared clean prompts (paired bootstrap Δ and McNemar)."""

    # "<report>/<model_tag>/<variant>/<mode>", e.g. cot/tuned_cot/cot/generate
    a: str
    # the line it is compared with, e.g. plain/tuned/plain/score
    b: str


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Config of the ``compare`` stage."""

    # where compare.{json,md,html} (and manifest.json) go
    out_dir: Path
    # reports to put side by side, in order: name (e.g. in_distribution, generalisation, run-2) -> an evaluate
    # stage's output folder or its report.json (a profile wires them as inputs: {reports.<name>: <step>})
    reports: dict[str, Path]
    # paired tests between lines of different reports, read from the predictions.jsonl beside each report.json
    pairs: tuple[PairEntry, ...] = ()
    # bootstrap resamples and seed of the paired tests
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0


HEADER = ["report", "model", "variant", "mode", "n", "joint acc [95% CI]", *[f"{lvl} acc [95% CI]" for lvl in LEVELS],
          "parse rate", "faithful", "answer = rationale", "pert. mean", "pert. std", "worst-case", "consistency",
          "motion ECE", "new tok/s"]


def comparison_lines(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (report, model, variant, mode)."""
    lines = []
    for name, rep in reports.items():
        for g in rep["groups"]:
            c, a = g["clean"], g["aggregates"]
            cal = (c.get("calibration") or {}).get("motion") or {}
            faith = (g.get("faithfulness") or {}).get("clean") or {}
            lines.append({"report": name, "model_tag": g["model_tag"], "variant": g["variant"], "mode": g["mode"],
                          "n": c.get("n"), "accuracy": c.get("accuracy"), "ci_low": c.get("ci_low"),
                          "ci_high": c.get("ci_high"),
                          "level_accuracy": {lvl: (c.get("levels") or {}).get(lvl, {}).get("accuracy") for lvl in LEVELS},
                          "levels": {lvl: {k: (c.get("levels") or {}).get(lvl, {}).get(k)
                                           for k in ("accuracy", "ci_low", "ci_high")} for lvl in LEVELS},
                          "invalid_rate": c.get("invalid_rate"),
                          "parse_rate": None if c.get("invalid_rate") is None else 1.0 - c["invalid_rate"],
                          "faithful_rate": faith.get("faithful_rate"),
                          "faithful_ci_low": faith.get("faithful_ci_low"),
                          "faithful_ci_high": faith.get("faithful_ci_high"),
                          "answer_consistent_rate": faith.get("consistent_rate"),
                          "new_tokens_per_s": c.get("new_tokens_per_s"),
                          "perturbed_mean": a.get("mean_accuracy"),
                          "perturbed_std": a.get("std_accuracy"), "worst_case": a.get("worst_case_accuracy"),
                          "consistency": a.get("consistency"), "motion_ece": cal.get("ece")})
    return lines


def table_rows(lines: list[dict[str, Any]]) -> list[list[str]]:
    """Rendered table cells."""
    return [[ln["report"], ln["model_tag"], ln["variant"], ln["mode"], _fmt(ln["n"]), _ci(ln),
             *[_ci(ln["levels"][lvl]) for lvl in LEVELS], _fmt(ln["parse_rate"]),
             _ci(ln, "faithful_rate", "faithful_ci_low", "faithful_ci_high") if ln["faithful_rate"] is not None
             else "–", _fmt(ln["answer_consistent_rate"]), _fmt(ln["perturbed_mean"]), _fmt(ln["perturbed_std"]),
             _fmt(ln["worst_case"]), _fmt(ln["consistency"]), _fmt(ln["motion_ece"]), _fmt(ln["new_tokens_per_s"], 1)]
            for ln in lines]


def line_rows(reports: dict[str, Path], name: str) -> list[dict[str, Any]]:
    """The prediction rows of one ``<report>/<model>/<variant>/<mode>`` line (DataError when there are none)."""
    report, _, rest = name.partition("/")
    parts = rest.split("/")
    if report not in reports or len(parts) != 3:
        raise ConfigError(f"pairs: {name!r} is not <report>/<model>/<variant>/<mode> with a report of "
                          f"{sorted(reports)}")
    path = report_file(reports[report]).parent / "predictions.jsonl"
    tag, variant, mode = parts
    rows = [r for _, r in read_jsonl(path)
            if (r.get("model_tag"), r.get("variant"), r.get("mode")) == (tag, variant, mode)]
    if not rows:
        raise DataError(path, None, "model_tag/variant/mode", f"no rows of {tag}/{variant}/{mode}")
    return rows


def paired_tests(cfg: CompareConfig) -> list[dict[str, Any]]:
    """Each configured pair: paired bootstrap Δ of clean joint accuracy (a − b) with its CI, and McNemar's p."""
    return [{"a": p.a, "b": p.b, **paired_comparison(line_rows(cfg.reports, p.a), line_rows(cfg.reports, p.b),
                                                     cfg.bootstrap_seed, cfg.bootstrap_resamples)}
            for p in cfg.pairs]


PAIR_HEADER = ["a", "b", "shared prompts", "acc a", "acc b", "Δ (a−b) [95% CI]", "McNemar p"]


def pair_rows(pairs: list[dict[str, Any]]) -> list[list[str]]:
    return [[p["a"], p["b"], str(p.get("n")), _fmt(p.get("accuracy_a")), _fmt(p.get("accuracy_b")),
             _ci(p, "delta", "delta_ci_low", "delta_ci_high"), _fmt(p.get("mcnemar_p"), 4)] for p in pairs]


def ratio_rows(reports: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Robustness std ratios of every report (with the reason where one is missing)."""
    return [[name, r["model_tag"], r["baseline"], r["variant"], r["mode"], _fmt(r["std"]), _fmt(r["baseline_std"]),
             _fmt(r["ratio"]), r.get("reason") or ""] for name, rep in reports.items() for r in rep.get("std_ratios", [])]


RATIO_HEADER = ["report", "model", "baseline", "variant", "mode", "std", "baseline std", "ratio", "why no ratio"]


def run_compare(cfg: CompareConfig) -> StageResult:
    """Load every report and write the side-by-side comparison."""
    if not cfg.reports:
        raise ValueError("compare needs at least one report")
    reports = {name: load_report(path) for name, path in cfg.reports.items()}
    lines = comparison_lines(reports)
    pairs = paired_tests(cfg)
    out_dir = Path(cfg.out_dir)
    data = {"reports": {name: str(report_file(path)) for name, path in cfg.reports.items()}, "lines": lines,
            "pairs": pairs,
            "std_ratios": {name: rep.get("std_ratios", []) for name, rep in reports.items()},
            "manifests": {name: rep.get("manifest", {}) for name, rep in reports.items()}}
    md = "\n".join(["# Comparison of evaluation reports", "", md_table(HEADER, table_rows(lines)), "",
                    *(["## Paired tests (clean prompts shared by both lines)", md_table(PAIR_HEADER, pair_rows(pairs)),
                       ""] if pairs else []),
                    "## Robustness std ratio (model / baseline)", md_table(RATIO_HEADER, ratio_rows(reports)), ""])
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      "<title>Comparison of evaluation reports</title>", f"<style>{CSS}</style>", "</head>", "<body>",
                      "<h1>Comparison of evaluation reports</h1>",
                      "<p>" + ", ".join(f"<b>{html.escape(name)}</b>: <code>{html.escape(str(report_file(path)))}</code>"
                                        for name, path in cfg.reports.items()) + "</p>",
                      html_table(HEADER, table_rows(lines)),
                      *(["<h2>Paired tests (clean prompts shared by both lines)</h2>",
                         html_table(PAIR_HEADER, pair_rows(pairs))] if pairs else []),
                      "<h2>Robustness std ratio</h2>",
                      html_table(RATIO_HEADER, ratio_rows(reports)), "</body>", "</html>"]) + "\n"
    outputs = [write_json(out_dir / "compare.json", data), write_text(out_dir / "compare.md", md),
               write_text(out_dir / "compare.html", page)]
    return StageResult(outputs=outputs, stats={"reports": len(reports), "lines": len(lines)})


STAGE = Stage(
    name="compare",
    config_cls=CompareConfig,
    inputs=lambda cfg: [report_file(path) for path in cfg.reports.values()]
    + sorted({report_file(cfg.reports[n.split("/")[0]]).parent / "predictions.jsonl"
              for p in cfg.pairs for n in (p.a, p.b) if n.split("/")[0] in cfg.reports}),
    run=run_compare,
    default_config="eval/configs/compare_demo.yaml",
    help="side-by-side comparison of evaluate reports",
)

"""Stage ``compare``: several evaluation reports side by side.

``python -m pipeline compare --config eval/configs/compare_demo.yaml``

Reads ``report.json`` files written by ``evaluate`` and writes ``compare.json``, ``compare.md`` and
``compare.html`` under ``out_dir``: one line per (report, model, variant, mode) with clean joint
accuracy (95 % CI), per-level accuracy, invalid rate, the perturbed-set mean/std of accuracy,
worst-case accuracy, consistency, ECE (score mode) and the robustness std ratios.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path
from typing import Any

from eval.report import CSS, _ci, _fmt, html_table, load_report, md_table, report_file
from pipeline.core.io import write_json, write_text
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LEVELS


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Config of the ``compare`` stage."""

    # where compare.{json,md,html} (and manifest.json) go
    out_dir: Path
    # reports to put side by side, in order: name (e.g. in_distribution, generalisation, run-2) -> an evaluate
    # stage's output folder or its report.json (a profile wires them as inputs: {reports.<name>: <step>})
    reports: dict[str, Path]


HEADER = ["report", "model", "variant", "mode", "n", "joint acc [95% CI]", *[f"{lvl} acc" for lvl in LEVELS],
          "invalid", "pert. mean", "pert. std", "worst-case", "consistency", "motion ECE"]


def comparison_lines(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (report, model, variant, mode)."""
    lines = []
    for name, rep in reports.items():
        for g in rep["groups"]:
            c, a = g["clean"], g["aggregates"]
            cal = (c.get("calibration") or {}).get("motion") or {}
            lines.append({"report": name, "model_tag": g["model_tag"], "variant": g["variant"], "mode": g["mode"],
                          "n": c.get("n"), "accuracy": c.get("accuracy"), "ci_low": c.get("ci_low"),
                          "ci_high": c.get("ci_high"),
                          "level_accuracy": {lvl: (c.get("levels") or {}).get(lvl, {}).get("accuracy") for lvl in LEVELS},
                          "invalid_rate": c.get("invalid_rate"), "perturbed_mean": a.get("mean_accuracy"),
                          "perturbed_std": a.get("std_accuracy"), "worst_case": a.get("worst_case_accuracy"),
                          "consistency": a.get("consistency"), "motion_ece": cal.get("ece")})
    return lines


def table_rows(lines: list[dict[str, Any]]) -> list[list[str]]:
    """Rendered table cells."""
    return [[ln["report"], ln["model_tag"], ln["variant"], ln["mode"], _fmt(ln["n"]), _ci(ln),
             *[_fmt(ln["level_accuracy"][lvl]) for lvl in LEVELS], _fmt(ln["invalid_rate"]),
             _fmt(ln["perturbed_mean"]), _fmt(ln["perturbed_std"]), _fmt(ln["worst_case"]),
             _fmt(ln["consistency"]), _fmt(ln["motion_ece"])] for ln in lines]


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
    out_dir = Path(cfg.out_dir)
    data = {"reports": {name: str(report_file(path)) for name, path in cfg.reports.items()}, "lines": lines,
            "std_ratios": {name: rep.get("std_ratios", []) for name, rep in reports.items()},
            "manifests": {name: rep.get("manifest", {}) for name, rep in reports.items()}}
    md = "\n".join(["# Comparison of evaluation reports", "", md_table(HEADER, table_rows(lines)), "",
                    "## Robustness std ratio (model / baseline)", md_table(RATIO_HEADER, ratio_rows(reports)), ""])
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      "<title>Comparison of evaluation reports</title>", f"<style>{CSS}</style>", "</head>", "<body>",
                      "<h1>Comparison of evaluation reports</h1>",
                      "<p>" + ", ".join(f"<b>{html.escape(name)}</b>: <code>{html.escape(str(report_file(path)))}</code>"
                                        for name, path in cfg.reports.items()) + "</p>",
                      html_table(HEADER, table_rows(lines)), "<h2>Robustness std ratio</h2>",
                      html_table(RATIO_HEADER, ratio_rows(reports)), "</body>", "</html>"]) + "\n"
    outputs = [write_json(out_dir / "compare.json", data), write_text(out_dir / "compare.md", md),
               write_text(out_dir / "compare.html", page)]
    return StageResult(outputs=outputs, stats={"reports": len(reports), "lines": len(lines)})


STAGE = Stage(
    name="compare",
    config_cls=CompareConfig,
    inputs=lambda cfg: [report_file(path) for path in cfg.reports.values()],
    run=run_compare,
    default_config="eval/configs/compare_demo.yaml",
    help="side-by-side comparison of evaluate reports",
)

"""Stage ``method_table``: one table of tuning methods -- accuracy, robustness and cost side by side.

``python -m pipeline method_table --config eval/configs/method_table_methods.yaml``

Reads several ``evaluate`` outputs (``report.json``) and the ``train`` runs behind them (their
``manifest.json`` stats and checkpoint folder) and writes ``method_table.json`` and ``method_table.md``
under ``out_dir``: one row per system (base model, PET 0/k-shot, every trained method) with

* clean joint accuracy [95 % CI] and per-level accuracy [95 % CI] (the report's clean summary);
* robustness: std of perturbed accuracy and its ratio to the ``baseline`` row's std (formed here,
  so the systems may sit in different reports; the ratio is refused with a reason when either std
  is missing -- too few cells of ``min_cell_n`` -- or when the two reports perturbed differently);
* eval examples/s (clean rows, from the answers' latencies);
* from the train run: method, trainable parameters, bytes of the checkpoint folder (``checkpoint``,
  default ``final/``), train steps, train tokens/s, train seconds, peak RSS and CUDA peak memory (MiB).

A value the inputs do not hold is shown as ``–`` (and is ``null`` in the JSON); the train stage
writes ``stats.trainable_params``, ``stats.tokens_per_s``, ``stats.seconds``, ``stats.steps``,
``stats.peak_rss_mb`` and (on GPU) ``stats.cuda_peak_mb`` into its ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from eval.report import _ci, _fmt, load_report, md_table, report_file
from eval.robustness import std_ratio_reason
from pipeline.core.io import DataError, read_json_object, write_json, write_text
from pipeline.core.stage import MANIFEST, Stage, StageResult, expand_files
from pipeline.core.taxonomy import LEVELS


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One row of the table: a system of an evaluate report, and the train run that made it (if any)."""

    # row name, e.g. base | pet-0shot | pet-4shot | ptuning_v2 | lora
    name: str
    # key of ``reports`` holding this system's predictions
    report: str
    # the system's model tag in that report (base, tuned, pet-0shot, ...)
    model_tag: str
    # key of ``train_runs`` that trained it; null = untrained (base model, PET)
    train: str | None = None


@dataclasses.dataclass(frozen=True)
class MethodTableConfig:
    """Config of the ``method_table`` stage."""

    # where method_table.{json,md} (and manifest.json) go
    out_dir: Path
    # name -> an evaluate output folder or its report.json (a profile wires them: {reports.<name>: <step>})
    reports: dict[str, Path]
    # the table's rows, in order
    rows: tuple[TableRow, ...]
    # name -> a train output folder (its manifest.json and checkpoint; wired as {train_runs.<name>: <step>})
    train_runs: dict[str, Path] = dataclasses.field(default_factory=dict)
    # prompt variant of the report groups to read
    variant: str = "plain"
    # answer mode of the report groups to read (score | generate)
    mode: str = "score"
    # row name the robustness std ratio is taken against
    baseline: str = "base"
    # checkpoint folder under a train run whose bytes are reported (final | best | checkpoints/step-N)
    checkpoint: str = "final"


def check_config(cfg: MethodTableConfig) -> None:
    """Rows name known reports and train runs, have distinct names, and the baseline is a row."""
    names = [r.name for r in cfg.rows]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"rows need distinct names; got {names}")
    for r in cfg.rows:
        if r.report not in cfg.reports:
            raise ValueError(f"row {r.name}: report {r.report!r} is not in reports ({sorted(cfg.reports)})")
        if r.train is not None and r.train not in cfg.train_runs:
            raise ValueError(f"row {r.name}: train {r.train!r} is not in train_runs ({sorted(cfg.train_runs)})")
    if cfg.baseline not in names:
        raise ValueError(f"baseline {cfg.baseline!r} is not a row name ({names})")
    if cfg.mode not in ("score", "generate"):
        raise ValueError(f"mode must be score or generate; got {cfg.mode!r}")


#: a train run's output that changes whenever the run does (its manifest is bookkeeping, not a declared output)
METRICS_FILE = "metrics.jsonl"


def table_inputs(cfg: MethodTableConfig) -> list[Path]:
    """The reports, every train run's metrics and the reported checkpoint folders.

    The train run's ``manifest.json`` (its stats) is read too, but the stage contract only lets a
    stage declare another stage's *outputs*; ``metrics.jsonl`` is rewritten by every run, so a
    retrained method still makes the table stale.
    """
    paths = [report_file(p) for p in cfg.reports.values()]
    for run in cfg.train_runs.values():
        paths += [Path(run) / METRICS_FILE, Path(run) / cfg.checkpoint]
    return paths


def find_group(report: dict[str, Any], path: Path, tag: str, variant: str, mode: str) -> dict[str, Any]:
    """The report group of (tag, variant, mode) (DataError naming what the report has)."""
    for g in report["groups"]:
        if (g["model_tag"], g["variant"], g["mode"]) == (tag, variant, mode):
            return g
    have = sorted({f"{g['model_tag']}/{g['variant']}/{g['mode']}" for g in report["groups"]})
    raise DataError(report_file(path), None, "groups", f"no group {tag}/{variant}/{mode}; the report has {have}")


def folder_bytes(folder: Path) -> int | None:
    """Total size of the files in a folder (None if it does not exist)."""
    folder = Path(folder)
    return sum(f.stat().st_size for f in expand_files([folder])) if folder.is_dir() else None


def train_facts(run: Path, checkpoint: str) -> dict[str, Any]:
    """Method and cost facts of a train run (missing ones None)."""
    run = Path(run)
    manifest = read_json_object(run / MANIFEST)
    stats = manifest.get("stats") or {}
    config = manifest.get("config") or {}
    method = (config.get("method") or {}).get("name") if isinstance(config, dict) else None
    return {"method": method, "trainable_params": stats.get("trainable_params"),
            "checkpoint_bytes": folder_bytes(run / checkpoint), "steps": stats.get("steps"),
            "train_tokens_per_s": stats.get("tokens_per_s"), "train_seconds": stats.get("seconds"),
            "peak_rss_mb": stats.get("peak_rss_mb"), "cuda_peak_mb": stats.get("cuda_peak_mb")}


def same_perturbations(a: dict[str, Any], b: dict[str, Any], variant: str) -> bool:
    """Whether two reports perturbed the same examples the same way (so their stds are comparable)."""
    ma, mb = a.get("manifest") or {}, b.get("manifest") or {}
    keys = ("perturbations", "seeds", "perturbed_fraction", "split")
    return all(ma.get(k) == mb.get(k) for k in keys) and \
        (ma.get("examples") or {}).get(variant) == (mb.get("examples") or {}).get(variant)


def table_line(row: TableRow, group: dict[str, Any], train: dict[str, Any] | None) -> dict[str, Any]:
    """One JSON line of the table (the std ratio is filled in by :func:`add_std_ratios`)."""
    c, a = group["clean"], group["aggregates"]
    levels = {lvl: {k: (c.get("levels") or {}).get(lvl, {}).get(k) for k in ("accuracy", "ci_low", "ci_high")}
              for lvl in LEVELS}
    line = {"name": row.name, "report": row.report, "model_tag": row.model_tag, "train": row.train,
            "method": (train or {}).get("method") or row.name, "n": c.get("n"), "accuracy": c.get("accuracy"),
            "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high"), "levels": levels,
            "perturbed_std": a.get("std_accuracy"), "std_ratio": None, "std_ratio_reason": None,
            "eval_examples_per_s": c.get("examples_per_s")}
    keys = ("trainable_params", "checkpoint_bytes", "steps", "train_tokens_per_s", "train_seconds", "peak_rss_mb",
            "cuda_peak_mb")
    line.update({k: (train or {}).get(k) for k in keys})
    if train is None:  # nothing trained: no parameters and no checkpoint, known rather than missing
        line.update(trainable_params=0, checkpoint_bytes=0)
    return line


def add_std_ratios(lines: list[dict[str, Any]], groups: dict[str, dict[str, Any]],
                   reports: dict[str, dict[str, Any]], baseline: str, variant: str) -> None:
    """std / baseline std per line, or the reason it cannot be formed."""
    base_line = next(ln for ln in lines if ln["name"] == baseline)
    base_agg = groups[baseline]["aggregates"]
    for ln in lines:
        if ln["name"] == baseline:
            continue
        if not same_perturbations(reports[ln["report"]], reports[base_line["report"]], variant):
            ln["std_ratio_reason"] = f"report {ln['report']} perturbed other examples or cells than {base_line['report']}"
            continue
        reason = std_ratio_reason(ln["perturbed_std"], base_line["perturbed_std"], groups[ln["name"]]["aggregates"],
                                  base_agg)
        ln["std_ratio_reason"] = reason
        ln["std_ratio"] = None if reason else ln["perturbed_std"] / base_line["perturbed_std"]


HEADER = ["system", "method", "n", "joint acc [95% CI]", *[f"{lvl} acc [95% CI]" for lvl in LEVELS], "pert. std",
          "std ratio vs base", "trainable params", "ckpt bytes", "steps", "train tok/s", "train s", "peak RSS MiB",
          "CUDA peak MiB", "eval ex/s"]


def table_cells(lines: list[dict[str, Any]]) -> list[list[str]]:
    """Rendered Markdown cells, one list per line."""
    return [[ln["name"], ln["method"], _fmt(ln["n"]), _ci(ln), *[_ci(ln["levels"][lvl]) for lvl in LEVELS],
             _fmt(ln["perturbed_std"]), _fmt(ln["std_ratio"], 2), _fmt(ln["trainable_params"]),
             _fmt(ln["checkpoint_bytes"]), _fmt(ln["steps"]), _fmt(ln["train_tokens_per_s"], 1),
             _fmt(ln["train_seconds"], 1), _fmt(ln["peak_rss_mb"], 0), _fmt(ln["cuda_peak_mb"], 0),
             _fmt(ln["eval_examples_per_s"], 2)] for ln in lines]


def render_markdown(cfg: MethodTableConfig, lines: list[dict[str, Any]]) -> str:
    """method_table.md: the table, the std-ratio reasons and where every number came from."""
    reasons = [f"- {ln['name']}: {ln['std_ratio_reason']}" for ln in lines if ln["std_ratio_reason"]]
    sources = [f"- report `{name}`: `{report_file(p)}`" for name, p in cfg.reports.items()]
    sources += [f"- train run `{name}`: `{p}` (checkpoint `{cfg.checkpoint}/`)" for name, p in cfg.train_runs.items()]
    return "\n".join([f"# Methods: {cfg.variant} prompts, {cfg.mode} mode", "", md_table(HEADER, table_cells(lines)),
                      "", f"std ratio: perturbed-accuracy std / the `{cfg.baseline}` row's; – where it cannot be "
                      "formed:", *(reasons or ["- (every ratio formed)"]), "", "Sources:", *sources, ""])


def run_method_table(cfg: MethodTableConfig) -> StageResult:
    """Read the reports and train runs; write the table."""
    check_config(cfg)
    reports = {name: load_report(p) for name, p in cfg.reports.items()}
    trains = {name: train_facts(p, cfg.checkpoint) for name, p in cfg.train_runs.items()}
    groups = {r.name: find_group(reports[r.report], cfg.reports[r.report], r.model_tag, cfg.variant, cfg.mode)
              for r in cfg.rows}
    lines = [table_line(r, groups[r.name], trains.get(r.train) if r.train else None) for r in cfg.rows]
    add_std_ratios(lines, groups, reports, cfg.baseline, cfg.variant)
    out_dir = Path(cfg.out_dir)
    data = {"variant": cfg.variant, "mode": cfg.mode, "baseline": cfg.baseline, "checkpoint": cfg.checkpoint,
            "reports": {n: str(report_file(p)) for n, p in cfg.reports.items()},
            "train_runs": {n: str(p) for n, p in cfg.train_runs.items()}, "rows": lines}
    outputs = [write_json(out_dir / "method_table.json", data),
               write_text(out_dir / "method_table.md", render_markdown(cfg, lines))]
    return StageResult(outputs=outputs, stats={"rows": len(lines),
                                               "accuracy": {ln["name"]: ln["accuracy"] for ln in lines}})


STAGE = Stage(
    name="method_table",
    config_cls=MethodTableConfig,
    inputs=table_inputs,
    run=run_method_table,
    default_config="eval/configs/method_table_methods.yaml",
    help="one table of methods: accuracy with CIs, robustness std ratio, parameters, checkpoint bytes, speed, memory",
    check=check_config,
)

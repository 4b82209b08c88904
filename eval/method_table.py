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
from eval.metrics import mcnemar_exact
from pipeline.core.io import DataError, atomic_open, load_jsonl, read_json_object, write_json, write_text
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
    # row every other row is paired with (exact McNemar on clean joint correctness, shared prompts); null = none
    reference: str | None = None
    # dev joint accuracy whose first crossing (train seconds, step) is reported from the train runs' dev checks
    target_dev_acc: float = 0.9
    # also draw dev_curve.png: dev joint accuracy against train seconds, one line per trained row
    plot: bool = True


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
    if cfg.reference is not None and cfg.reference not in names:
        raise ValueError(f"reference {cfg.reference!r} is not a row name ({names})")
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
    if cfg.reference is not None:
        paths += [predictions_file(p) for p in cfg.reports.values()]
    for run in cfg.train_runs.values():
        paths += [Path(run) / METRICS_FILE, Path(run) / cfg.checkpoint]
    return paths


PREDICTIONS_FILE = "predictions.jsonl"


def predictions_file(path: Path) -> Path:
    """The evaluate output's ``predictions.jsonl`` beside its report."""
    return report_file(path).parent / PREDICTIONS_FILE


def clean_joint_correct(path: Path, tag: str, variant: str, mode: str) -> dict[str, bool]:
    """sample_id -> all three levels right, for the clean rows of one (tag, variant, mode) group."""
    out: dict[str, bool] = {}
    for row in load_jsonl(predictions_file(path)):
        if (row.get("model_tag"), row.get("variant"), row.get("mode"), row.get("perturbation")) == \
                (tag, variant, mode, "clean"):
            correct = row.get("correct") or {}
            out[str(row["sample_id"])] = all(bool(correct.get(lvl)) for lvl in LEVELS)
    return out


def paired_test(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """Exact McNemar of a vs b on the prompts both answered (``a_only``: a right and b wrong)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return {"n_paired": 0, "a_only": None, "b_only": None, "p_value": None}
    return {"n_paired": len(shared), **mcnemar_exact([a[k] for k in shared], [b[k] for k in shared])}


def dev_curve(run: Path) -> list[dict[str, Any]]:
    """The run's dev checks: step, dev joint accuracy, and train seconds up to it (the dev checks' own time
    taken out: the elapsed clock of ``metrics.jsonl`` runs through them)."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        return []
    rows = load_jsonl(path, allow_nonfinite=True)
    train_elapsed = {r["step"]: r["elapsed"] for r in rows if r.get("kind") == "train" and "elapsed" in r}
    curve, eval_time = [], 0.0
    for r in rows:
        if r.get("kind") != "eval" or r.get("dev_acc") is None:
            continue
        before = train_elapsed.get(r["step"])
        seconds = (before - eval_time) if before is not None else r.get("elapsed")
        if before is not None and r.get("elapsed") is not None:
            eval_time += max(0.0, r["elapsed"] - before)
        curve.append({"step": r["step"], "dev_acc": r["dev_acc"], "train_seconds": round(seconds, 2),
                      **{k: r[k] for k in r if k.startswith("dev_acc_")}, "dev_rows": r.get("dev_rows")})
    return curve


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first dev check at or above ``target`` (None: never reached)."""
    return next(({"step": c["step"], "train_seconds": c["train_seconds"]} for c in curve if c["dev_acc"] >= target),
                None)


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
    sweep, peft = stats.get("sweep"), stats.get("peft")
    return {"method": method, "trainable_params": stats.get("trainable_params"),
            "learning_rate": stats.get("learning_rate"), "cls_head": stats.get("cls_head"),
            "chosen": (sweep or {}).get("chosen"), "chosen_overrides": (sweep or {}).get("chosen_overrides"),
            "sweep": sweep, "sweep_seconds": (sweep or {}).get("sweep_seconds"),
            "peft": peft, "peft_step_ratio": (peft or {}).get("step_time_ratio_peft_over_ours"),
            "dev_curve": dev_curve(run),
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
    line["cells"] = {f"{c['perturbation']}-{c['severity']}": {"n": c.get("n"), "accuracy": c.get("accuracy"),
                                                             "delta": c.get("delta")}
                     for c in group.get("robustness") or []}
    keys = ("trainable_params", "checkpoint_bytes", "steps", "train_tokens_per_s", "train_seconds", "peak_rss_mb",
            "cuda_peak_mb", "learning_rate", "cls_head", "chosen", "chosen_overrides", "sweep", "sweep_seconds", "peft",
            "peft_step_ratio", "dev_curve")
    line.update({k: (train or {}).get(k) for k in keys})
    line["dev_curve"] = line["dev_curve"] or []
    line["time_to_target"] = None
    line["paired_vs_reference"] = None
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


HEADER = ["system", "method", "setting (sweep's choice)", "n", "joint acc [95% CI]",
          *[f"{lvl} acc [95% CI]" for lvl in LEVELS], "vs reference: McNemar p (only a / only ref)", "pert. std",
          "std ratio", "trainable params", "ckpt bytes", "steps", "train tok/s", "train s", "time to target dev",
          "PEFT step ratio", "peak RSS MiB", "CUDA peak MiB", "eval ex/s"]


def setting_text(ln: dict[str, Any]) -> str:
    """The trained setting in a few words: the sweep's choice, lr, cls head."""
    if ln.get("train") is None:
        return "–"
    parts = [ln["chosen"]] if ln.get("chosen") else []
    if ln.get("learning_rate") is not None:
        parts.append(f"lr {ln['learning_rate']:g}")
    if ln.get("cls_head"):
        parts.append("cls head")
    return ", ".join(parts) or "–"


def paired_text(ln: dict[str, Any]) -> str:
    p = ln.get("paired_vs_reference")
    if not p or p.get("p_value") is None:
        return "–"
    return f"{p['p_value']:.3g} ({p['a_only']} / {p['b_only']})"


def target_text(ln: dict[str, Any]) -> str:
    if ln.get("train") is None:
        return "–"
    t = ln.get("time_to_target")
    if t is None:
        return "not reached" if ln.get("dev_curve") else "–"
    return f"{t['train_seconds']:.0f} s (step {t['step']})"


def table_cells(lines: list[dict[str, Any]]) -> list[list[str]]:
    """Rendered Markdown cells, one list per line."""
    return [[ln["name"], ln["method"], setting_text(ln), _fmt(ln["n"]), _ci(ln),
             *[_ci(ln["levels"][lvl]) for lvl in LEVELS], paired_text(ln), _fmt(ln["perturbed_std"]),
             _fmt(ln["std_ratio"], 2), _fmt(ln["trainable_params"]), _fmt(ln["checkpoint_bytes"]), _fmt(ln["steps"]),
             _fmt(ln["train_tokens_per_s"], 1), _fmt(ln["train_seconds"], 1), target_text(ln),
             _fmt(ln.get("peft_step_ratio"), 2), _fmt(ln["peak_rss_mb"], 0), _fmt(ln["cuda_peak_mb"], 0),
             _fmt(ln["eval_examples_per_s"], 2)] for ln in lines]


def cell_names(lines: list[dict[str, Any]]) -> list[str]:
    return sorted({c for ln in lines for c in (ln.get("cells") or {})})


def cells_table(lines: list[dict[str, Any]]) -> str:
    """Accuracy per robustness cell (n in the header), one row per system that has cells."""
    names = cell_names(lines)
    rows = [ln for ln in lines if ln.get("cells")]
    if not names or not rows:
        return "(no robustness cells in these reports)"
    n = {c: next((ln["cells"][c]["n"] for ln in rows if c in ln["cells"]), None) for c in names}
    header = ["system", "clean", *[f"{c} (n {n[c]})" for c in names]]
    return md_table(header, [[ln["name"], _fmt(ln["accuracy"]),
                              *[_fmt((ln["cells"].get(c) or {}).get("accuracy")) for c in names]] for ln in rows])


def sweep_table(lines: list[dict[str, Any]]) -> str:
    """Every sweep candidate of every trained row: overrides, dev joint, dev loss, seconds; the chosen marked."""
    rows = []
    for ln in lines:
        sw = ln.get("sweep")
        if not sw:
            continue
        for c in sw["candidates"]:
            mark = "**chosen**" if c["name"] == sw["chosen"] else ""
            rows.append([ln["name"], c["name"], "<br>".join(f"`{o}`" for o in c["overrides"]) or "–",
                         _fmt(c.get("dev_acc")), _fmt(c.get("dev_loss"), 4), _fmt(c.get("seconds"), 1), mark])
    if not rows:
        return "(no sweep in these train runs)"
    first = next(ln["sweep"] for ln in lines if ln.get("sweep"))
    note = (f"{first['steps']} steps per candidate, dev joint on the first {first['dev_rows']} dev rows "
            f"(label scoring), dev loss on {first['loss_rows']}; rule: {first['rule']}.")
    return note + "\n\n" + md_table(["system", "candidate", "overrides", "dev joint", "dev loss", "seconds", ""], rows)


def peft_table(lines: list[dict[str, Any]]) -> str:
    """Ours vs PEFT's implementation of the same method at the same settings: s/step and the ratio."""
    rows = []
    for ln in lines:
        pf = ln.get("peft")
        if not pf:
            continue
        if not pf.get("peft"):
            rows.append([ln["name"], "–", "–", "–", "–", pf.get("reason", "–")])
            continue
        s = pf["seconds_per_step"]
        rows.append([ln["name"], f"`{pf['peft']}`", _fmt(s["ours"], 3), _fmt(s["peft"], 3),
                     _fmt(pf["step_time_ratio_peft_over_ours"], 2), "; ".join(pf.get("differences") or []) or "–"])
    if not rows:
        return "(PEFT not timed in these train runs)"
    return md_table(["system", "PEFT implementation", "ours s/step", "PEFT s/step", "PEFT / ours",
                     "what PEFT cannot match"], rows)


def curve_table(lines: list[dict[str, Any]]) -> str:
    rows = [[ln["name"], " · ".join(f"{c['step']}: {c['dev_acc']:.3f} ({c['train_seconds']:.0f} s)"
                                    for c in ln["dev_curve"])] for ln in lines if ln.get("dev_curve")]
    if not rows:
        return "(no dev checks in these train runs)"
    return md_table(["system", "step: dev joint (train seconds)"], rows)


def render_markdown(cfg: MethodTableConfig, lines: list[dict[str, Any]]) -> str:
    """method_table.md: the table, cells, sweep, PEFT, the learning curve and where every number came from."""
    reasons = [f"- {ln['name']}: {ln['std_ratio_reason']}" for ln in lines if ln["std_ratio_reason"]]
    sources = [f"- report `{name}`: `{report_file(p)}`" for name, p in cfg.reports.items()]
    sources += [f"- train run `{name}`: `{p}` (checkpoint `{cfg.checkpoint}/`)" for name, p in cfg.train_runs.items()]
    ref = (f"Paired tests: exact McNemar of each row's clean joint correctness against `{cfg.reference}` on the prompts "
           "both answered (p, then how many only that row / only the reference got right)."
           if cfg.reference else "Paired tests: none (no reference row).")
    return "\n".join([
        f"# Methods: {cfg.variant} prompts, {cfg.mode} mode", "", md_table(HEADER, table_cells(lines)), "",
        ref, f"Time to target dev: train seconds (dev checks excluded) to the first dev check with joint accuracy "
        f">= {cfg.target_dev_acc:g}. PEFT step ratio: PEFT's s/step over ours, same settings, alternating rounds.", "",
        f"std ratio: perturbed-accuracy std / the `{cfg.baseline}` row's; – where it cannot be formed:",
        *(reasons or ["- (every ratio formed)"]), "",
        "## Robustness cells (joint accuracy)", "", cells_table(lines), "",
        "## Sweep (dev)", "", sweep_table(lines), "",
        "## Ours vs PEFT", "", peft_table(lines), "",
        "## Learning curve (dev checks during training)", "", curve_table(lines), "",
        "Sources:", *sources, ""])


def write_bytes(path: Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def plot_curves(lines: list[dict[str, Any]], target: float) -> bytes | None:
    """dev_curve.png: dev joint accuracy against train seconds, one line per row with dev checks (None: none)."""
    curves = [ln for ln in lines if ln.get("dev_curve")]
    if not curves:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for ln in curves:
        xs = [0.0] + [c["train_seconds"] for c in ln["dev_curve"]]
        ys = [None] + [c["dev_acc"] for c in ln["dev_curve"]]
        ax.plot(xs[1:], ys[1:], marker="o", label=f"{ln['name']} ({setting_text(ln)})")
    ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    ax.set_xlabel("train seconds (dev checks excluded)")
    ax.set_ylabel("dev joint accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def run_method_table(cfg: MethodTableConfig) -> StageResult:
    """Read the reports and train runs; write the table (and the plot)."""
    check_config(cfg)
    reports = {name: load_report(p) for name, p in cfg.reports.items()}
    trains = {name: train_facts(p, cfg.checkpoint) for name, p in cfg.train_runs.items()}
    groups = {r.name: find_group(reports[r.report], cfg.reports[r.report], r.model_tag, cfg.variant, cfg.mode)
              for r in cfg.rows}
    lines = [table_line(r, groups[r.name], trains.get(r.train) if r.train else None) for r in cfg.rows]
    add_std_ratios(lines, groups, reports, cfg.baseline, cfg.variant)
    for ln in lines:
        ln["time_to_target"] = first_reaching(ln["dev_curve"], cfg.target_dev_acc)
    if cfg.reference is not None:
        correct = {r.name: clean_joint_correct(cfg.reports[r.report], r.model_tag, cfg.variant, cfg.mode)
                   for r in cfg.rows}
        for ln in lines:
            if ln["name"] != cfg.reference:
                ln["paired_vs_reference"] = paired_test(correct[ln["name"]], correct[cfg.reference])
    out_dir = Path(cfg.out_dir)
    data = {"variant": cfg.variant, "mode": cfg.mode, "baseline": cfg.baseline, "checkpoint": cfg.checkpoint,
            "reference": cfg.reference, "target_dev_acc": cfg.target_dev_acc,
            "reports": {n: str(report_file(p)) for n, p in cfg.reports.items()},
            "train_runs": {n: str(p) for n, p in cfg.train_runs.items()}, "rows": lines}
    outputs = [write_json(out_dir / "method_table.json", data),
               write_text(out_dir / "method_table.md", render_markdown(cfg, lines))]
    png = plot_curves(lines, cfg.target_dev_acc) if cfg.plot else None
    if png is not None:
        outputs.append(write_bytes(out_dir / "dev_curve.png", png))
    return StageResult(outputs=outputs, stats={"rows": len(lines),
                                               "accuracy": {ln["name"]: ln["accuracy"] for ln in lines}})


# ------------------------------------------------------------------------- README section from the table
README_START = "<!-- methods-table:start -->"
README_END = "<!-- methods-table:end -->"


def readme_section(data: dict[str, Any], run: dict[str, str] | None = None) -> str:
    """The README's "Choosing a tuning method" section from ``method_table.json`` (``run``: command, machine, date,
    wall time -- written by whoever ran the profile)."""
    run = run or {}
    rows = data["rows"]
    trained = sorted((r for r in rows if r.get("train")), key=lambda r: -(r.get("accuracy") or 0.0))
    untrained = [r for r in rows if not r.get("train")]
    head = ["method (setting)", "joint acc [95% CI]", "motion", "vs P-Tuning v2 (p)", "trainable params",
            "ckpt bytes", "train tok/s", "PEFT / ours step", "time to dev 0.90"]
    body = [[f"`{r['name']}` ({setting_text(r)})", _ci(r), _fmt(r["levels"]["motion"]["accuracy"]),
             (f"{r['paired_vs_reference']['p_value']:.2g}" if (r.get("paired_vs_reference") or {}).get("p_value")
              is not None else "ref." if r["name"] == data.get("reference") else "–"),
             _fmt(r["trainable_params"]), _fmt(r["checkpoint_bytes"]), _fmt(r["train_tokens_per_s"], 0),
             _fmt(r.get("peft_step_ratio"), 2), target_text(r)] for r in trained]
    body += [[f"`{r['name']}` (untrained, n {r.get('n')})", _ci(r), _fmt(r["levels"]["motion"]["accuracy"]), "–", "0", "0", "–", "–",
              "–"] for r in untrained]
    best = trained[0] if trained else None
    n = {r.get("n") for r in trained}
    steps = {r.get("steps") for r in trained}
    lines = ["## Choosing a tuning method", "",
             f"From one run of `{run.get('command', 'python -m pipeline run methods')}` "
             f"({run.get('machine', '<machine>')}, {run.get('date', '<date>')}, {run.get('wall', '<wall time>')}): "
             f"every method tuned by a short dev sweep, then trained at its chosen setting for the same "
             f"{'/'.join(str(s) for s in sorted(steps, key=str))} steps on the same rows, label-scored on the same "
             f"{'/'.join(str(x) for x in sorted(n, key=str))} test prompts. Table, sweep, PEFT timings and the "
             "learning-curve plot: [docs/methods.md](docs/methods.md).", "",
             md_table(head, body), ""]
    if trained:
        def pick(key: str, low: bool) -> dict[str, Any] | None:
            have = [r for r in trained if r.get(key) is not None]
            return (min if low else max)(have, key=lambda r: r[key]) if have else None

        facts = [("smallest checkpoint", pick("checkpoint_bytes", True), "checkpoint_bytes", "bytes"),
                 ("fewest trainable parameters", pick("trainable_params", True), "trainable_params", "parameters"),
                 ("fastest training", pick("train_tokens_per_s", False), "train_tokens_per_s", "tokens/s"),
                 ("largest PEFT step ratio", pick("peft_step_ratio", False), "peft_step_ratio", "x ours")]
        lines += [f"- {what}: `{r['name']}` ({_fmt(r[key], 1 if isinstance(r[key], float) else 3)} {unit})"
                  for what, r, key, unit in facts if r is not None]
        lines.append("")
    if best is not None:
        lines.append(f"At this budget `{best['name']}` scores highest ({_fmt(best['accuracy'])} joint); rows whose "
                     "McNemar p is above 0.05 are not distinguishable from P-Tuning v2 on these prompts. "
                     "Pick by the columns that matter to you: accuracy at this budget, parameters and checkpoint "
                     "size, train speed, and whether PEFT's implementation is slower for the same method.")
    return "\n".join([README_START, *lines, README_END]) + "\n"


def replace_readme_section(text: str, section: str) -> str:
    """``text`` with the block between the methods-table markers replaced by ``section`` (appended when absent)."""
    if README_START in text and README_END in text:
        a, rest = text.split(README_START, 1)
        _, b = rest.split(README_END, 1)
        return a + section.rstrip("\n") + b
    return text.rstrip("\n") + "\n\n" + section


STAGE = Stage(
    name="method_table",
    config_cls=MethodTableConfig,
    inputs=table_inputs,
    run=run_method_table,
    default_config="eval/configs/method_table_methods.yaml",
    help="one table of methods: accuracy with CIs, paired tests, robustness cells, sweep, PEFT ratio, cost; dev-curve plot",
    check=check_config,
)

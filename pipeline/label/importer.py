"""Stage ``label.import``: expert annotations (Label Studio JSON export / plain JSONL) -> ``reviews.jsonl``.

``python -m pipeline label import --config pipeline/label/configs/import_demo.yaml``

* Label Studio: the project's *JSON* export (a list of tasks with ``annotations[]`` and
  ``predictions[]``). Cancelled (skipped) annotations are dropped; ``completed_by``,
  ``lead_time``, ``created_at`` and ``updated_at`` are kept; several reviewers per task give
  several rows. The model's pre-annotation (``predictions[0]``) becomes ``model_labels`` /
  ``model_rationale``.
* Plain JSONL: ``tasks.jsonl`` rows of ``label.export`` extended by the annotation tool with
  ``reviewer``, ``labels`` and optionally ``expert_rationale``; rows already in the review schema
  (with ``model_labels``) are accepted as they are.

Labels may be canonical or display names in either language (``canonical_label``); anything else
is a DataError naming the file, the task id and the field. Output: ``reviews.jsonl``, one row per
(task, reviewer) in the schema of :mod:`pipeline.label.common` (a reviewer's later annotation of
the same task wins).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.core.io import DataError, read_jsonl, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LEVELS
from pipeline.label.common import latest_per_reviewer, make_review, validate_label, validate_labels
from pipeline.label.export import RATIONALE_NAME

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Config of ``label.import``."""

    # where reviews.jsonl and manifest.json go
    out_dir: Path = Path("runs/demo/label/import")
    # Label Studio JSON exports (list of tasks) to read
    label_studio: tuple[Path, ...] = ()
    # plain JSONL annotation files (tasks.jsonl rows + reviewer, labels[, expert_rationale])
    jsonl: tuple[Path, ...] = ()
    # Label Studio user id -> reviewer name (ids not listed become "user-<id>", or the e-mail when exported)
    reviewer_names: dict[str, str] = dataclasses.field(default_factory=dict)


def import_inputs(cfg: ImportConfig) -> list[Path]:
    """Every annotation file."""
    return [*map(Path, cfg.label_studio), *map(Path, cfg.jsonl)]


# ---------------------------------------------------------------------------------- Label Studio
def reviewer_name(completed_by: Any, names: dict[str, str]) -> str | None:
    """Reviewer from ``completed_by``: an id (int/str) or an object with id/email."""
    if isinstance(completed_by, dict):
        uid = completed_by.get("id")
        if uid is not None and str(uid) in names:
            return names[str(uid)]
        return completed_by.get("email") or (f"user-{uid}" if uid is not None else None)
    if completed_by is None or completed_by == "":
        return None
    return names.get(str(completed_by), f"user-{completed_by}")


def parse_result(result: Any, path: Path, where: str, field: str) -> tuple[dict[str, str | None], str | None, bool]:
    """``(labels, rationale, has_rationale)`` from Label Studio result regions.

    ``field`` is the JSON path of ``result`` for error messages, e.g. ``annotations[0].result``.
    """
    if not isinstance(result, list):
        raise DataError(path, None, field, f"{where}: expected a list of regions")
    labels: dict[str, str | None] = {lev: None for lev in LEVELS}
    rationale, has_rationale = None, False
    for i, region in enumerate(result):
        f = f"{field}[{i}]"
        if not isinstance(region, dict):
            raise DataError(path, None, f, f"{where}: expected an object")
        name, value = region.get("from_name"), region.get("value") or {}
        if name in LEVELS:
            choices = value.get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise DataError(path, None, f"{f}.value.choices",
                                f"{where}: expected exactly one {name} choice, got {choices!r}")
            labels[name] = validate_label(choices[0], name, path, None, where, f"{f}.value.choices")
            if labels[name] is None:
                raise DataError(path, None, f"{f}.value.choices", f"{where}: empty {name} choice")
        elif name == RATIONALE_NAME:
            text = value.get("text")
            parts = [text] if isinstance(text, str) else text
            if not isinstance(parts, list) or not all(isinstance(t, str) for t in parts):
                raise DataError(path, None, f"{f}.value.text", f"{where}: expected a list of strings")
            rationale = "\n".join(parts).strip() or None
            has_rationale = True
        else:
            log.debug("%s: %s ignores region from_name=%r", path, where, name)
    return labels, rationale, has_rationale


def load_label_studio(path: Path, names: dict[str, str]) -> tuple[list[dict[str, Any]], Counter]:
    """Review rows from one Label Studio JSON export, plus counters (tasks, annotations, cancelled)."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, None, "file does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
    if isinstance(tasks, dict):  # a single-task export
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(path, None, None, "expected a list of Label Studio tasks")
    counts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    for t_index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise DataError(path, None, f"[{t_index}]", "expected a task object")
        data = task.get("data") or {}
        task_id = task.get("id", data.get("sample_id", f"#{t_index}"))
        where = f"task {task_id}"
        sid = data.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(path, None, "data.sample_id", f"{where}: missing sample_id")
        counts["tasks"] += 1
        model_labels, model_rationale, model_version = {lev: None for lev in LEVELS}, None, data.get("model_version")
        preds = task.get("predictions") or []
        if preds:
            pred = preds[0]
            model_labels, model_rationale, _ = parse_result(pred.get("result", []), path, where, "predictions[0].result")
            model_version = pred.get("model_version") or model_version
        annotations = task.get("annotations") or []
        if not annotations:
            counts["tasks_without_annotations"] += 1
        for a_index, ann in enumerate(annotations):
            counts["annotations"] += 1
            if ann.get("was_cancelled"):
                counts["cancelled"] += 1
                continue
            field = f"annotations[{a_index}]"
            reviewer = reviewer_name(ann.get("completed_by"), names)
            if reviewer is None:
                raise DataError(path, None, f"{field}.completed_by", f"{where}: annotation has no reviewer")
            labels, rationale, has_rationale = parse_result(ann.get("result"), path, where, f"{field}.result")
            if not has_rationale:  # reviewer left the pre-filled rationale out: nothing said about it
                rationale = model_rationale
            rows.append(make_review(
                sample_id=sid, split=data.get("split"), batch_id=data.get("batch_id"), task_id=task_id,
                reviewer=reviewer, labels=labels, rationale=rationale,
                rationale_edited=has_rationale and rationale != model_rationale,
                model_labels=model_labels, model_rationale=model_rationale, model_version=model_version,
                lead_time=ann.get("lead_time"), created_at=ann.get("created_at"), updated_at=ann.get("updated_at"),
                source="label_studio",
            ))
    return rows, counts


# ------------------------------------------------------------------------------------------ JSONL
def load_plain(path: Path) -> list[dict[str, Any]]:
    """Review rows from a plain JSONL annotation file."""
    rows = []
    for lineno, row in read_jsonl(path):
        sid = row.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(path, lineno, "sample_id", "missing or not a string")
        task_id = row.get("task_id", sid)
        where = f"task {task_id}"
        reviewer = row.get("reviewer")
        if not isinstance(reviewer, str) or not reviewer:
            raise DataError(path, lineno, "reviewer", f"{where}: missing reviewer")
        labels = validate_labels(row.get("labels"), path, lineno, where)
        if "model_labels" in row:  # already in the review schema
            model_labels = validate_labels(row["model_labels"], path, lineno, where, "model_labels")
            model_rationale, rationale = row.get("model_rationale"), row.get("rationale")
        else:  # tasks.jsonl row: "predicted"/"rationale" are the model's
            model_labels = validate_labels(row.get("predicted"), path, lineno, where, "predicted")
            model_rationale = row.get("rationale")
            rationale = row.get("expert_rationale", model_rationale)
        rows.append(make_review(
            sample_id=sid, split=row.get("split"), batch_id=row.get("batch_id"), task_id=task_id,
            reviewer=reviewer, labels=labels, rationale=rationale,
            rationale_edited=bool(row.get("rationale_edited", rationale != model_rationale)),
            model_labels=model_labels, model_rationale=model_rationale, model_version=row.get("model_version"),
            lead_time=row.get("lead_time"), created_at=row.get("created_at"), updated_at=row.get("updated_at"),
            source="jsonl",
        ))
    return rows


def run_import(cfg: ImportConfig) -> StageResult:
    """Read every annotation file and write ``reviews.jsonl``."""
    if not cfg.label_studio and not cfg.jsonl:
        raise DataError("config", None, "label_studio", "give at least one Label Studio export or JSONL file")
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for p in cfg.label_studio:
        r, c = load_label_studio(Path(p), cfg.reviewer_names)
        rows += r
        counts.update(c)
    for p in cfg.jsonl:
        rows += load_plain(Path(p))
    latest = latest_per_reviewer((Path("-"), 0, r) for r in rows)
    # keep first-seen task order; one row per (task, reviewer)
    seen: set[tuple[str, str]] = set()
    out_rows = []
    for r in rows:
        key = (r["sample_id"], r["reviewer"])
        if key not in seen:
            seen.add(key)
            out_rows.append(latest[r["sample_id"]][r["reviewer"]])
    out = Path(cfg.out_dir) / "reviews.jsonl"
    write_jsonl(out, out_rows)
    per_task = Counter(r["sample_id"] for r in out_rows)
    stats = {
        **{k: int(v) for k, v in counts.items()},
        "reviews": len(out_rows),
        "duplicates_replaced": len(rows) - len(out_rows),
        "tasks_reviewed": len(per_task),
        "multi_reviewed_tasks": sum(n > 1 for n in per_task.values()),
        "per_reviewer": dict(Counter(r["reviewer"] for r in out_rows)),
        "accepted": sum(r["accepted"] for r in out_rows),
        "rationale_edited": sum(r["rationale_edited"] for r in out_rows),
    }
    return StageResult(outputs=[out], stats=stats)


STAGE = Stage(
    name="label.import",
    config_cls=ImportConfig,
    inputs=import_inputs,
    run=run_import,
    default_config="pipeline/label/configs/import_demo.yaml",
    help="Label Studio JSON / plain JSONL annotations -> reviews.jsonl",
)

__all__ = ["STAGE", "ImportConfig", "load_label_studio", "load_plain", "run_import"]

"""Stage ``label.import``: expert annotations (Label Studio exports / plain JSONL) -> ``reviews.jsonl``.

``python -m pipeline label import --config pipeline/label/configs/import_demo.yaml label_studio=[export.json]``

Label Studio (checked against a real 1.23 server, see ``tests/fixtures/label_studio/``). Every
export it offers for our labelling config that can carry the labels is read, the kind is
recognised from the content:

* **JSON** (Export -> JSON; ``GET /api/projects/<id>/export?exportType=JSON``): a list of tasks with
  ``annotations[]``; ``predictions`` are prediction ids, ``completed_by`` a user id.
* **Snapshot JSON** (``POST /api/projects/<id>/exports`` with ``serialization_options``): the same
  tasks, optionally with full prediction objects and ``completed_by`` objects (``{"id", "email"}``).
* **JSON_MIN**: one flat object per submitted annotation: the task's data fields, one key per
  control (``motion``, ..., ``rationale``), ``id`` (task), ``annotator``, ``annotation_id``. Label
  Studio leaves skipped annotations out of it.

CSV, TSV and the other export formats (ZIP archives, XML, CoNLL) are refused with a DataError that
names the format and says to export JSON instead.

The model's pre-annotation is never taken from the export: it is resolved by ``sample_id`` from
``tasks`` -- the ``tasks.jsonl`` that ``label.export`` wrote for the batch imported into the
project -- so every export kind compares against the same labels and rationale.

What the expert did is read from the fields Label Studio writes:

* ``was_cancelled: true`` -- the task was **skipped**: counted, no review row (its ``result`` may
  still hold the pre-fill, it is ignored);
* labels -- the chosen value per level (``accepted`` when every level equals the model's);
* rationale -- the region's ``origin``: ``prediction`` = **kept**, ``prediction-changed`` =
  **edited**, ``manual`` = **written** (typed anew); without ``origin`` (JSON_MIN) the text is
  compared with the model's. A missing rationale region on an annotation that started from the
  pre-annotation (``parent_prediction`` set, or any region with a ``prediction*`` origin; JSON_MIN
  has neither, and the editor pre-fills every task that has a rationale) means the expert
  **deleted** it: ``rationale`` is None and the model's rationale is not used.

Reviewer names: ``completed_by`` / ``annotator`` ids are mapped through ``reviewer_names``, then
``users`` (the server's user list, ``GET /api/users/``, or a YAML ``{id: name}``); a user object in
the export gives its e-mail; anything else becomes ``user-<id>`` (with a warning).

Plain JSONL: ``tasks.jsonl`` rows of ``label.export`` extended by the annotation tool with
``reviewer``, ``labels`` and optionally ``expert_rationale``; rows already in the review schema
(with ``model_labels``) are accepted as they are.

Labels may be canonical or display names in either language; anything else is a DataError naming
the file, the task and the field. Output: ``reviews.jsonl``, one row per (task, reviewer) in the
schema of :mod:`pipeline.label.common` (a reviewer's later annotation of the same task wins).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, read_jsonl, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LEVELS
from pipeline.label.common import (
    RATIONALE_ACTIONS,
    latest_per_reviewer,
    load_task_rows,
    make_review,
    rationale_action,
    validate_label,
    validate_labels,
)
from pipeline.label.export import RATIONALE_NAME

log = logging.getLogger(__name__)

#: how to get an export this stage reads (named in every refusal)
EXPORT_HINT = ("export JSON instead: in Label Studio Export -> JSON (or JSON-MIN), or "
               "`python scripts/label_studio_server.py pull PROJECT_ID OUT_DIR`")


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Config of ``label.import``."""

    # where reviews.jsonl and manifest.json go
    out_dir: Path = Path("runs/demo/label/import")
    # Label Studio exports: JSON, JSON_MIN or a snapshot export (the kind is recognised from the content)
    label_studio: tuple[Path, ...] = ()
    # label.export tasks.jsonl of the batch(es) imported into the project: the model's pre-annotations
    tasks: tuple[Path, ...] = ()
    # Label Studio user list (GET /api/users/ as JSON) or a YAML/JSON mapping {user id: name}; null = none
    users: Path | None = None
    # Label Studio user id -> reviewer name; wins over `users`
    reviewer_names: dict[str, str] = dataclasses.field(default_factory=dict)
    # an exported task whose sample_id is in none of the `tasks` files: error | ignore (counted)
    unknown_tasks: Literal["error", "ignore"] = "error"
    # plain JSONL annotation files (tasks.jsonl rows + reviewer, labels[, expert_rationale])
    jsonl: tuple[Path, ...] = ()


def import_inputs(cfg: ImportConfig) -> list[Path]:
    """Every annotation file, plus the batch files and the user list when Label Studio exports are read."""
    if not cfg.label_studio:
        return [*map(Path, cfg.jsonl)]
    users = [Path(cfg.users)] if cfg.users else []
    return [*map(Path, cfg.label_studio), *map(Path, cfg.tasks), *users, *map(Path, cfg.jsonl)]


# ------------------------------------------------------------------------------------ batch, users
def load_batch(paths: tuple[Path, ...]) -> dict[str, dict[str, Any]]:
    """``{sample_id: tasks.jsonl row}`` over the batch files; a sample in two rows is a DataError."""
    out: dict[str, dict[str, Any]] = {}
    where: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.suffix == ".json":
            raise DataError(path, None, None, "expected label.export's tasks.jsonl (the batch record), "
                                              "not the Label Studio import file tasks.json next to it")
        for row in load_task_rows(path):
            sid = row["sample_id"]
            if sid in out:
                raise DataError(path, None, "sample_id", f"sample {sid!r} is also in {where[sid]}")
            out[sid], where[sid] = row, path
    return out


def user_name(user: dict[str, Any]) -> str | None:
    """A reviewer name from a Label Studio user object: the e-mail (unique, also in snapshot exports)."""
    email = user.get("email")
    if isinstance(email, str) and email:
        return email
    return user.get("username") or None


def load_users(path: Path) -> dict[str, str]:
    """``{user id: name}`` from the server's user list (JSON list of user objects) or a ``{id: name}`` mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
    except FileNotFoundError:
        raise DataError(path, None, None, "file does not exist") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise DataError(path, None if line is None else line + 1, None, f"invalid YAML/JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):  # a paginated user list
        data = data["results"]
    if isinstance(data, list):
        names = {}
        for i, user in enumerate(data):
            if not isinstance(user, dict) or "id" not in user:
                raise DataError(path, None, f"[{i}]", "expected a user object with an id")
            name = user_name(user)
            if name:
                names[str(user["id"])] = name
        return names
    if isinstance(data, dict):
        bad = [k for k, v in data.items() if not isinstance(v, str) or not v]
        if bad:
            raise DataError(path, None, str(bad[0]), "expected {user id: name} with non-empty string names")
        return {str(k): v for k, v in data.items()}
    raise DataError(path, None, None, "expected the user list (GET /api/users/) or a mapping {user id: name}")


def reviewer_name(user: Any, names: dict[str, str]) -> str | None:
    """Reviewer from ``completed_by`` / ``annotator``: an id (int/str) or a user object with id/email."""
    if isinstance(user, dict):
        uid = user.get("id")
        if uid is not None and str(uid) in names:
            return names[str(uid)]
        return user_name(user) or (f"user-{uid}" if uid is not None else None)
    if user is None or user == "":
        return None
    if isinstance(user, str) and "@" in user:  # some exports name the annotator by e-mail
        return names.get(user, user)
    return names.get(str(user), f"user-{user}")


# ---------------------------------------------------------------------------------- export formats
@dataclasses.dataclass
class Annotation:
    """One expert annotation, whatever export it came from."""

    where: str                      # "task 17" (error messages)
    sample_field: str               # JSON path of the sample_id in its file
    user_field: str                 # JSON path of completed_by / annotator
    task_id: Any
    sample_id: str
    user: Any                       # completed_by / annotator as exported
    cancelled: bool
    labels: dict[str, str | None]
    origins: dict[str, str | None]  # control name -> region origin (None when not exported)
    rationale: str | None           # None also when the region is absent (see has_rationale)
    has_rationale: bool
    from_prediction: bool | None    # started from the pre-annotation; None = the export cannot tell
    lead_time: float | None
    created_at: str | None
    updated_at: str | None


def refuse_non_json(path: Path, head: bytes) -> DataError:
    """The DataError for a file that is not JSON, naming the export format it looks like."""
    if head.startswith(b"PK\x03\x04"):
        kind = "a ZIP archive (Label Studio's COCO / YOLO / VOC / ... exports)"
    else:
        first = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[0] if head.strip() else ""
        if "\t" in first:
            kind = "a TSV export"
        elif first.lstrip().startswith("<"):
            kind = "an XML export (e.g. Pascal VOC)"
        elif first.startswith("-DOCSTART-"):
            kind = "a CoNLL 2003 export"
        elif "," in first:
            kind = "a CSV export"
        else:
            kind = "not JSON"
    return DataError(path, None, None, f"this is {kind}; label import reads Label Studio's JSON, JSON-MIN and "
                                       f"snapshot JSON exports only; {EXPORT_HINT}")


def read_export(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """``(kind, items)``: kind ``JSON`` (task list, standard or snapshot) or ``JSON_MIN`` (annotation rows)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, None, "file does not exist") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        stripped = raw.lstrip()
        if stripped[:1] in (b"[", b"{"):  # meant to be JSON: say where it breaks
            line = getattr(exc, "lineno", None)
            raise DataError(path, line, None, f"invalid JSON ({getattr(exc, 'msg', exc)})") from None
        raise refuse_non_json(path, raw[:4096]) from None
    if isinstance(data, dict):
        if "images" in data and "categories" in data:
            raise DataError(path, None, None, f"this is a COCO export; {EXPORT_HINT}")
        if "data" in data or "annotations" in data:  # a single task
            data = [data]
    if not isinstance(data, list):
        raise DataError(path, None, None, f"expected a list of Label Studio tasks or JSON-MIN rows; {EXPORT_HINT}")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(path, None, f"[{i}]", "expected an object")
    if not data:
        return "JSON", []
    if all("data" in item or "annotations" in item for item in data):
        return "JSON", data
    if all("data" not in item and ("annotation_id" in item or "annotator" in item) for item in data):
        return "JSON_MIN", data
    raise DataError(path, None, "[0]", "neither a Label Studio task (data, annotations) nor a JSON-MIN row "
                                       f"(annotation_id, annotator); {EXPORT_HINT}")


def single_choice(value: Any, level: str, path: Path, where: str, field: str) -> str:
    """The one canonical label of a choices value (``[label]`` in JSON, ``label`` in JSON-MIN)."""
    if isinstance(value, dict):  # JSON-MIN writes {"choices": [...]} for multi-choice controls
        value = value.get("choices")
    choices = [value] if isinstance(value, str) else value
    if not isinstance(choices, list) or len(choices) != 1:
        raise DataError(path, None, field, f"{where}: expected exactly one {level} choice, got {value!r}")
    label = validate_label(choices[0], level, path, None, where, field)
    if label is None:
        raise DataError(path, None, field, f"{where}: empty {level} choice")
    return label


def text_value(value: Any, path: Path, where: str, field: str) -> str | None:
    """A textarea value (``["..."]`` in JSON, ``"..."`` in JSON-MIN) as one stripped string; empty -> None."""
    if isinstance(value, dict):
        value = value.get("text")
    parts = [value] if isinstance(value, str) else value
    if not isinstance(parts, list) or not all(isinstance(t, str) for t in parts):
        raise DataError(path, None, field, f"{where}: expected a list of strings")
    return "\n".join(parts).strip() or None


def parse_result(result: Any, path: Path, where: str, field: str) -> tuple[dict, dict, str | None, bool]:
    """``(labels, origins, rationale, has_rationale)`` from Label Studio result regions.

    ``field`` is the JSON path of ``result`` for error messages, e.g. ``annotations[0].result``.
    """
    if result is None:
        result = []
    if not isinstance(result, list):
        raise DataError(path, None, field, f"{where}: expected a list of regions")
    labels: dict[str, str | None] = {lev: None for lev in LEVELS}
    origins: dict[str, str | None] = {}
    rationale, has_rationale = None, False
    for i, region in enumerate(result):
        f = f"{field}[{i}]"
        if not isinstance(region, dict):
            raise DataError(path, None, f, f"{where}: expected an object")
        name, value = region.get("from_name"), region.get("value") or {}
        if name in origins:
            raise DataError(path, None, f, f"{where}: a second {name!r} region")
        if name in LEVELS:
            labels[name] = single_choice(value.get("choices"), name, path, where, f"{f}.value.choices")
        elif name == RATIONALE_NAME:
            rationale = text_value(value.get("text"), path, where, f"{f}.value.text")
            has_rationale = rationale is not None
        else:
            log.debug("%s: %s ignores region from_name=%r", path, where, name)
            continue
        origins[name] = region.get("origin")
    return labels, origins, rationale, has_rationale


def task_annotations(path: Path, tasks: list[dict[str, Any]]) -> Iterator[Annotation]:
    """Annotations of a JSON (standard or snapshot) export."""
    for t_index, task in enumerate(tasks):
        data = task.get("data") or {}
        task_id = task.get("id", f"#{t_index}")
        where = f"task {task_id}"
        sid = data.get("sample_id") if isinstance(data, dict) else None
        if not isinstance(sid, str) or not sid:
            raise DataError(path, None, f"[{t_index}].data.sample_id",
                            f"{where}: missing sample_id (was the project's tasks.json written by label.export?)")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise DataError(path, None, f"[{t_index}].annotations", f"{where}: expected a list")
        for a_index, ann in enumerate(annotations):
            field = f"[{t_index}].annotations[{a_index}]"
            if not isinstance(ann, dict):
                raise DataError(path, None, field, f"{where}: expected an annotation object")
            labels, origins, rationale, has_rationale = parse_result(ann.get("result"), path, where, f"{field}.result")
            if "parent_prediction" in ann or origins:
                from_prediction = ann.get("parent_prediction") is not None or any(
                    str(o).startswith("prediction") for o in origins.values())
            else:  # an export without editor metadata cannot tell
                from_prediction = None
            yield Annotation(
                where=where, sample_field=f"[{t_index}].data.sample_id", user_field=f"{field}.completed_by",
                task_id=task_id, sample_id=sid, user=ann.get("completed_by"),
                cancelled=bool(ann.get("was_cancelled")), labels=labels, origins=origins, rationale=rationale,
                has_rationale=has_rationale, from_prediction=from_prediction, lead_time=ann.get("lead_time"),
                created_at=ann.get("created_at"), updated_at=ann.get("updated_at"),
            )


def min_annotations(path: Path, rows: list[dict[str, Any]]) -> Iterator[Annotation]:
    """Annotations of a JSON_MIN export (one flat row per submitted annotation)."""
    for i, row in enumerate(rows):
        task_id = row.get("id", f"#{i}")
        where = f"task {task_id}, annotation {row.get('annotation_id')}"
        sid = row.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(path, None, f"[{i}].sample_id",
                            f"{where}: missing sample_id (was the project's tasks.json written by label.export?)")
        labels: dict[str, str | None] = {lev: None for lev in LEVELS}
        for lev in LEVELS:
            if row.get(lev) not in (None, "", []):
                labels[lev] = single_choice(row[lev], lev, path, where, f"[{i}].{lev}")
        rationale = None
        if row.get(RATIONALE_NAME) is not None:
            rationale = text_value(row[RATIONALE_NAME], path, where, f"[{i}].{RATIONALE_NAME}")
        yield Annotation(
            where=where, sample_field=f"[{i}].sample_id", user_field=f"[{i}].annotator", task_id=task_id,
            sample_id=sid, user=row.get("annotator"), cancelled=False, labels=labels, origins={},
            rationale=rationale, has_rationale=rationale is not None, from_prediction=None, lead_time=row.get("lead_time"), created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
        )


# ------------------------------------------------------------------------------------------ judge
def judge_rationale(ann: Annotation, model_rationale: str | None) -> tuple[str | None, str]:
    """``(rationale, action)`` for one annotation; action in :data:`RATIONALE_ACTIONS`."""
    if ann.has_rationale:
        origin = ann.origins.get(RATIONALE_NAME)
        if origin == "prediction":
            return ann.rationale, "kept"
        if origin == "prediction-changed":
            return ann.rationale, "edited"
        if origin == "manual":
            return ann.rationale, "written"
        return ann.rationale, rationale_action(ann.rationale, model_rationale)  # no origin: compare texts
    if model_rationale and ann.from_prediction is not False:
        return None, "deleted"
    return None, "none"


def prefill_mismatches(ann: Annotation, model_labels: dict[str, str | None], model_rationale: str | None) -> list[str]:
    """Controls whose region says "kept from the prediction" but differs from the batch's pre-annotation.

    Non-empty means ``tasks`` is not the batch the project was created from.
    """
    bad = [lev for lev in LEVELS if ann.origins.get(lev) == "prediction" and ann.labels[lev] != model_labels.get(lev)]
    if ann.origins.get(RATIONALE_NAME) == "prediction" and (ann.rationale or "") != (model_rationale or "").strip():
        bad.append(RATIONALE_NAME)
    return bad


def load_label_studio(path: Path, batch: dict[str, dict[str, Any]], names: dict[str, str],
                      unknown_tasks: str = "error") -> tuple[list[dict[str, Any]], Counter, str]:
    """Review rows from one Label Studio export, plus counters and the export kind."""
    path = Path(path)
    kind, items = read_export(path)
    annotations = task_annotations(path, items) if kind == "JSON" else min_annotations(path, items)
    counts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for ann in annotations:
        task = batch.get(ann.sample_id)
        if task is None:
            if unknown_tasks == "ignore":
                counts["unknown_tasks_ignored"] += ann.sample_id not in seen
                seen.add(ann.sample_id)
                continue
            raise DataError(path, None, ann.sample_field,
                            f"{ann.where}: sample {ann.sample_id!r} is in none of the batch files (tasks); pass "
                            "the tasks.jsonl that label.export wrote for this project, or unknown_tasks=ignore")
        seen.add(ann.sample_id)
        counts["annotations"] += 1
        if ann.cancelled:
            counts["skipped"] += 1
            continue
        reviewer = reviewer_name(ann.user, names)
        if reviewer is None:
            raise DataError(path, None, ann.user_field, f"{ann.where}: annotation has no reviewer")
        if reviewer.startswith("user-"):
            counts["unnamed_reviewers"] += 1
        model_labels, model_rationale = task["predicted"], task.get("rationale")
        bad = prefill_mismatches(ann, model_labels, model_rationale)
        if bad:
            counts["prefill_mismatch"] += 1
            log.warning("%s: %s: %s kept from the prediction but differ from the batch's pre-annotation; "
                        "is `tasks` the batch this project was created from?", path, ann.where, bad)
        rationale, action = judge_rationale(ann, model_rationale)
        rows.append(make_review(
            sample_id=ann.sample_id, split=task.get("split"), batch_id=task.get("batch_id"), task_id=ann.task_id,
            reviewer=reviewer, labels=ann.labels, rationale=rationale, rationale_edited=action in ("edited", "written"),
            rationale_action=action, model_labels=model_labels, model_rationale=model_rationale,
            model_version=task.get("model_version"), lead_time=ann.lead_time, created_at=ann.created_at,
            updated_at=ann.updated_at, source="label_studio",
        ))
    counts["tasks"] = len(seen)
    return rows, counts, kind


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
        action = row.get("rationale_action")
        if action is not None and action not in RATIONALE_ACTIONS:
            raise DataError(path, lineno, "rationale_action", f"{where}: {action!r} not in {list(RATIONALE_ACTIONS)}")
        rows.append(make_review(
            sample_id=sid, split=row.get("split"), batch_id=row.get("batch_id"), task_id=task_id,
            reviewer=reviewer, labels=labels, rationale=rationale,
            rationale_edited=bool(row.get("rationale_edited", rationale != model_rationale)),
            rationale_action=action, model_labels=model_labels, model_rationale=model_rationale,
            model_version=row.get("model_version"), lead_time=row.get("lead_time"), created_at=row.get("created_at"),
            updated_at=row.get("updated_at"), source="jsonl",
        ))
    return rows


def run_import(cfg: ImportConfig) -> StageResult:
    """Read every annotation file and write ``reviews.jsonl``."""
    if not cfg.label_studio and not cfg.jsonl:
        raise DataError("config", None, "label_studio", "give at least one Label Studio export or JSONL file")
    if cfg.label_studio and not cfg.tasks:
        raise ConfigError("tasks: give the tasks.jsonl that label.export wrote for the batch imported into Label "
                          "Studio (the model's pre-annotations are read from it, not from the export)")
    batch = load_batch(tuple(map(Path, cfg.tasks))) if cfg.label_studio else {}
    names = {**(load_users(Path(cfg.users)) if cfg.users and cfg.label_studio else {}),
             **{str(k): v for k, v in cfg.reviewer_names.items()}}
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    exports: dict[str, dict[str, Any]] = {}
    for p in cfg.label_studio:
        r, c, kind = load_label_studio(Path(p), batch, names, cfg.unknown_tasks)
        rows += r
        counts.update({k: v for k, v in c.items() if k != "tasks"})
        exports[str(p)] = {"format": kind, "tasks": c["tasks"], "annotations": c["annotations"], "reviews": len(r)}
    if counts["unnamed_reviewers"]:
        log.warning("%d annotation(s) by users without a name (user-<id>); pass users=<GET /api/users/ as JSON> "
                    "or reviewer_names", counts["unnamed_reviewers"])
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
        "exports": exports,
        "batch_tasks": len(batch),
        **{k: int(v) for k, v in sorted(counts.items())},
        "reviews": len(out_rows),
        "duplicates_replaced": len(rows) - len(out_rows),
        "tasks_reviewed": len(per_task),
        "batch_tasks_not_reviewed": len(set(batch) - set(per_task)),
        "multi_reviewed_tasks": sum(n > 1 for n in per_task.values()),
        "per_reviewer": dict(Counter(r["reviewer"] for r in out_rows)),
        "accepted": sum(r["accepted"] for r in out_rows),
        "labels_changed": sum(any(r["labels"][lev] not in (None, r["model_labels"][lev]) for lev in LEVELS)
                              for r in out_rows),
        "rationale_edited": sum(r["rationale_edited"] for r in out_rows),
        "rationale": {a: sum(r["rationale_action"] == a for r in out_rows) for a in RATIONALE_ACTIONS},
    }
    return StageResult(outputs=[out], stats=stats)


STAGE = Stage(
    name="label.import",
    config_cls=ImportConfig,
    inputs=import_inputs,
    run=run_import,
    default_config="pipeline/label/configs/import_demo.yaml",
    help="Label Studio JSON / JSON-MIN / snapshot exports or plain JSONL -> reviews.jsonl",
)

__all__ = ["STAGE", "ImportConfig", "judge_rationale", "load_batch", "load_label_studio", "load_plain", "load_users",
           "read_export", "run_import"]

"""Shared pieces of the expert labelling loop: records, review rows, label validation.

Every label stage speaks the same two row shapes:

* a **selection row** (``label.select`` output, ``label.export`` / ``label.review`` input)::

    {"sample_id", "split", "batch_id", "strategy", "score", "in_random_slice", "reasons": {strategy: score},
     "text", "predicted": {level: label|None}, "rationale": str|None, "confidence": float|None,
     "gold": {level: label|None}, "model_version"}

* a **review row** (``label.import`` / ``label.review`` output, ``label.merge`` / ``label.agreement`` input),
  one per (task, reviewer)::

    {"sample_id", "split", "batch_id", "task_id", "reviewer", "labels": {level: label|None},
     "rationale": str|None, "rationale_edited": bool, "model_labels": {level: label|None},
     "model_rationale": str|None, "model_version", "accepted": bool, "lead_time": float|None,
     "created_at": str|None, "updated_at": str|None, "source": "label_studio"|"jsonl"|"review",
     "rationale_action": "kept"|"edited"|"written"|"deleted"|"none"}

``labels[level] is None`` means the reviewer gave no opinion on that level (the record keeps its label).
``rationale_action`` says what the reviewer did with the model's pre-filled rationale: kept it, edited
it, wrote one where there was none (or after removing it), deleted it (``rationale`` is then None and
the model's rationale must not be used), or there was none and they wrote none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.answer import strip_answer_lines
from pipeline.core.io import DataError, index_jsonl_by_id, read_jsonl
from pipeline.core.taxonomy import DISPLAY, LABELS, LEVELS, canonical_label

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
REVIEW_SOURCES = ("label_studio", "jsonl", "review")


# -------------------------------------------------------------------------------------------- records
def split_files(records_dir: Path, splits: Iterable[str] = SPLITS) -> list[Path]:
    """``<records_dir>/<split>.jsonl`` for each split that exists (at least one must)."""
    files = [Path(records_dir) / f"{s}.jsonl" for s in splits if (Path(records_dir) / f"{s}.jsonl").exists()]
    if not files:
        raise DataError(records_dir, None, None, f"no records files {[f'{s}.jsonl' for s in splits]} found")
    return files


def load_records(records_dir: Path, splits: Iterable[str] = SPLITS) -> dict[str, dict[str, Any]]:
    """All records of the given splits keyed by ``sample_id`` (duplicates are a DataError)."""
    out: dict[str, dict[str, Any]] = {}
    for path in split_files(records_dir, splits):

        def check(lineno: int, rec: dict[str, Any], path: Path = path) -> None:
            if not isinstance(rec.get("labels"), dict):
                raise DataError(path, lineno, "labels", "missing or not an object")
            rec.setdefault("split", path.stem)

        index_jsonl_by_id(path, out, validate=check)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def describe_record(record: dict[str, Any], lang: str = "en") -> str:
    """Human-readable known information of a record for an expert.

    Uses the record's free ``text`` when it has one, else the prompts stage's known-information
    block (the same wording the model sees, without the question) when ``prompts_cot`` is
    importable, else a plain listing of context and features, so the labelling loop never depends
    on the prompt module being present.
    """
    if record.get("text"):
        return str(record["text"])
    try:
        from prompts_cot.render import RenderOptions, known_information

        return known_information(record, RenderOptions(prompt_type="basic", lang=lang))
    except Exception as exc:  # noqa: BLE001 - any failure of the optional renderer falls back to the listing
        log.debug("prompts_cot rendering unavailable (%s); using the plain listing", exc)
    lines = []
    for key, value in (record.get("context") or {}).items():
        lines.append(f"{key}: {_fmt(value)}")
    for key, value in (record.get("features") or {}).items():
        lines.append(f"{key}: {_fmt(value)}")
    return "\n".join(lines) if lines else f"(no known information for {record.get('sample_id')})"


def extract_rationale(output: str | None) -> str | None:
    """The reasoning part of a CoT output: every line except the final ``Answer:`` / ``答案：`` line."""
    if not output:
        return None
    text = "\n".join(strip_answer_lines(output)).strip()
    return text or None


# --------------------------------------------------------------------------------------------- labels
def empty_labels() -> dict[str, str | None]:
    """``{level: None}`` for every level."""
    return {lev: None for lev in LEVELS}


def validate_label(value: Any, level: str, path: Path, line: int | None, where: str,
                   field: str | None = None) -> str | None:
    """Canonical label for ``value`` (canonical or display name, either language); None stays None.

    ``where`` names the task (``task 17``) for the error message; ``field`` defaults to the level.
    """
    field = field or level
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DataError(path, line, field, f"{where}: label {value!r} is not a string")
    label = canonical_label(value, level)
    if label is None:
        raise DataError(path, line, field,
                        f"{where}: unknown {level} label {value!r}; expected one of {', '.join(LABELS[level])}")
    return label


def validate_labels(labels: Any, path: Path, line: int | None, where: str, field: str = "labels") -> dict[str, str | None]:
    """Canonical ``{level: label|None}`` from a mapping; unknown levels or labels are DataErrors."""
    if labels is None:
        return empty_labels()
    if not isinstance(labels, dict):
        raise DataError(path, line, field, f"{where}: expected an object of level -> label")
    unknown = sorted(set(labels) - set(LEVELS))
    if unknown:
        raise DataError(path, line, field, f"{where}: unknown level(s) {unknown}; levels are {list(LEVELS)}")
    return {lev: validate_label(labels.get(lev), lev, path, line, where, f"{field}.{lev}") for lev in LEVELS}


def is_accepted(labels: dict[str, str | None], model_labels: dict[str, str | None]) -> bool:
    """True when the reviewer kept every model label they gave an opinion on (and gave at least one)."""
    given = [lev for lev in LEVELS if labels.get(lev) is not None]
    return bool(given) and all(labels[lev] == model_labels.get(lev) for lev in given)


def choice_display(label: str, lang: str) -> str:
    """Display name shown to the expert (the canonical label is what gets stored)."""
    return DISPLAY[lang][label]


# ---------------------------------------------------------------------------------------------- tasks
def load_task_rows(path: Path) -> list[dict[str, Any]]:
    """``label.export``'s ``tasks.jsonl`` (or ``label.select``'s ``selection.jsonl``) rows, checked.

    Every row needs a ``sample_id``; ``predicted`` is validated into canonical ``{level: label|None}``.
    """
    tasks = []
    for lineno, row in read_jsonl(path):
        sid = row.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(path, lineno, "sample_id", "missing or not a string")
        row["predicted"] = validate_labels(row.get("predicted"), path, lineno, f"task {sid}", "predicted")
        tasks.append(row)
    return tasks


# -------------------------------------------------------------------------------------------- reviews
REVIEW_KEYS = ("sample_id", "split", "batch_id", "task_id", "reviewer", "labels", "rationale", "rationale_edited",
               "model_labels", "model_rationale", "model_version", "accepted", "lead_time", "created_at",
               "updated_at", "source", "rationale_action")
RATIONALE_ACTIONS = ("kept", "edited", "written", "deleted", "none")


def rationale_action(rationale: str | None, model_rationale: str | None) -> str:
    """What a reviewer did with the model's rationale, judged from the texts alone (no editor metadata)."""
    if rationale is None:
        return "deleted" if model_rationale else "none"
    if not model_rationale:
        return "written"
    return "kept" if rationale.strip() == model_rationale.strip() else "edited"


def make_review(**fields: Any) -> dict[str, Any]:
    """A review row with every key of the schema present (missing ones None/False), ``accepted`` derived."""
    row: dict[str, Any] = {k: fields.get(k) for k in REVIEW_KEYS}
    row["labels"] = dict(row["labels"] or empty_labels())
    row["model_labels"] = dict(row["model_labels"] or empty_labels())
    row["rationale_edited"] = bool(row["rationale_edited"])
    row["accepted"] = is_accepted(row["labels"], row["model_labels"])
    if row["rationale_action"] is None:
        row["rationale_action"] = rationale_action(row["rationale"], row["model_rationale"])
    elif row["rationale_action"] not in RATIONALE_ACTIONS:
        raise ValueError(f"rationale_action {row['rationale_action']!r} not in {RATIONALE_ACTIONS}")
    extra = sorted(set(fields) - set(REVIEW_KEYS))
    if extra:
        raise ValueError(f"unknown review field(s) {extra}")
    return row


def load_reviews(paths: Iterable[Path]) -> list[tuple[Path, int, dict[str, Any]]]:
    """Read review rows from ``reviews.jsonl`` files, checking the schema; returns (path, line, row)."""
    out = []
    for path in paths:
        for lineno, row in read_jsonl(path):
            for key in ("sample_id", "reviewer"):
                if not isinstance(row.get(key), str) or not row[key]:
                    raise DataError(path, lineno, key, "missing or not a string")
            where = f"task {row.get('task_id', row['sample_id'])}"
            row["labels"] = validate_labels(row.get("labels"), path, lineno, where)
            row["model_labels"] = validate_labels(row.get("model_labels"), path, lineno, where, "model_labels")
            out.append((Path(path), lineno, row))
    return out


def latest_per_reviewer(reviews: Iterable[tuple[Path, int, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{sample_id: {reviewer: row}}``; when a reviewer reviewed a task twice the later row wins.

    "Later" is the greater ``updated_at`` (ISO strings compare in time order), then file order.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for _, _, row in reviews:
        per = out.setdefault(row["sample_id"], {})
        old = per.get(row["reviewer"])
        if old is None or (row.get("updated_at") or "") >= (old.get("updated_at") or ""):
            per[row["reviewer"]] = row
    return out


__all__ = [
    "RATIONALE_ACTIONS", "REVIEW_KEYS", "SPLITS", "choice_display", "describe_record", "empty_labels",
    "extract_rationale", "is_accepted", "latest_per_reviewer", "load_records", "load_reviews", "load_task_rows",
    "make_review", "rationale_action", "split_files", "validate_label", "validate_labels",
]

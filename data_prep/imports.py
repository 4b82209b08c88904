"""Import users' own labelled data (CSV, JSONL, ChatGLM ptuning JSON lines) as records.

Imported rows become contract records with ``text`` set (the known information) and
``observation``/``features`` null. Labels come from mapped columns or, for the ChatGLM
format (``{"content": ..., "summary": ...}``), are parsed out of the response: the answer
line (``Answer: motion=...; operation=...; task=...`` / ``答案：运动=...；操作=...；任务=...``)
or the paper's sentences ("Movement intention is flyby ... Task intention is unclear").
Every problem is a :class:`~pipeline.core.io.DataError` naming file, line and field.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any, Literal

from pipeline.core.answer import parse_reply, unrecognised_values
from pipeline.core.io import DataError, decode_utf8, read_jsonl
from pipeline.core.taxonomy import LABELS, canonical_label


@dataclasses.dataclass(frozen=True)
class ImportSpec:
    """One user data file and how its columns map to record fields."""

    # File to read (CSV with a header row, or JSON lines).
    path: Path
    # csv | jsonl: labels in columns; chatglm: prompt/response JSON lines, labels parsed from the response.
    format: Literal["csv", "jsonl", "chatglm"] = "jsonl"
    # Column with the known information (prompt text); chatglm default is "content".
    text_column: str = "text"
    # Label columns (csv/jsonl); operation/task may be null (column missing or None = not labelled).
    motion_column: str = "motion"
    operation_column: str | None = "operation"
    task_column: str | None = "task"
    # Optional columns: a stable row id (else the line number is used) and a rationale.
    id_column: str | None = None
    rationale_column: str | None = None
    # chatglm: the response column holding the answer (also "response"/"summary" are tried).
    response_column: str = "summary"
    # Prefix of the sample ids (default: the file stem), e.g. "user-<id>".
    source: str | None = None


def parse_answer(text: str) -> tuple[dict[str, str | None], str | None]:
    """Labels and the rationale (text before the answer line) from a user's response.

    The project's one answer-line parser (:func:`pipeline.core.answer.parse_reply`) without its
    last fallback: a label merely mentioned in the rationale does not become the label.
    """
    return parse_reply(text, mentions=False)


def _read_rows(spec: ImportSpec) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row dict) for every data row of the file; a file without rows is an error.

    CSV: every row must have exactly the header's cells. JSONL/ChatGLM: every line a JSON object
    without NaN/Infinity numbers. Bytes that are not UTF-8 are an error naming the line.
    """
    path = Path(spec.path)
    if not path.is_file():
        raise DataError(path, None, None, "import file does not exist" if not path.exists() else "is not a file")
    if spec.format == "csv":
        text = decode_utf8(path.read_bytes(), path)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            raise DataError(path, 1, None, "CSV file has no header row")
        width = len(reader.fieldnames)
        rows = []
        for row in reader:
            if None in row:
                raise DataError(path, reader.line_num, None, f"row has more cells than the header ({width})")
            if any(v is None for v in row.values()):
                cells = sum(v is not None for v in row.values())
                raise DataError(path, reader.line_num, None, f"row has {cells} cell(s), the header has {width}")
            rows.append((reader.line_num, dict(row)))
    else:
        rows = list(read_jsonl(path))
    if not rows:
        # an empty export would otherwise replace an earlier data set with 0 rows
        raise DataError(path, None, None, "import file has no data rows")
    return rows


def _label(path: Path, line: int, row: dict[str, Any], column: str | None, level: str,
           required: bool) -> str | None:
    """Canonical label of ``row[column]`` for ``level``; DataError if unknown (or missing when required)."""
    value = row.get(column) if column else None
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError(path, line, column or level, f"missing {level} label")
        return None
    if not isinstance(value, str):
        raise DataError(path, line, column, f"expected a label string, got {value!r}")
    label = canonical_label(value, level)
    if label is None:
        raise DataError(path, line, column, f"unknown {level} label {value!r}; expected one of {list(LABELS[level])}")
    return label


def _text(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    """Non-empty string ``row[column]`` or DataError."""
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, column, "missing or empty text")
    return value.strip()


def import_file(spec: ImportSpec) -> list[dict[str, Any]]:
    """Records (split unassigned: ``split`` is None) for every row of ``spec.path``."""
    path = Path(spec.path)
    source = spec.source or path.stem
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, row in _read_rows(spec):
        if spec.format == "chatglm":
            text_col = spec.text_column if spec.text_column in row else next(
                (c for c in ("content", "prompt") if c in row), spec.text_column)
            resp_col = spec.response_column if spec.response_column in row else next(
                (c for c in ("summary", "response") if c in row), spec.response_column)
            text = _text(path, line, row, text_col)
            response = _text(path, line, row, resp_col)
            labels, rationale = parse_answer(response)
            if labels["motion"] is None:
                raise DataError(path, line, resp_col, "no motion label found in the response (answer line or 'motion intention is ...')")
            for level, raw in unrecognised_values(response).items():
                if labels[level] is None:  # named in the answer, but not a label: never silently null
                    raise DataError(path, line, resp_col,
                                    f"unknown {level} label {raw!r}; expected one of {list(LABELS[level])}")
        else:
            text = _text(path, line, row, spec.text_column)
            labels = {
                "motion": _label(path, line, row, spec.motion_column, "motion", required=True),
                "operation": _label(path, line, row, spec.operation_column, "operation", required=False),
                "task": _label(path, line, row, spec.task_column, "task", required=False),
            }
            rationale = None
            if spec.rationale_column and row.get(spec.rationale_column):
                rationale = str(row[spec.rationale_column]).strip()
        if spec.id_column:
            raw_id = row.get(spec.id_column)
            if raw_id is None or str(raw_id).strip() == "":
                raise DataError(path, line, spec.id_column, "missing id")
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                raise DataError(path, line, spec.id_column, f"id must be a string or an integer, got {raw_id!r}")
            if str(raw_id).strip().lower() in ("nan", "none", "null"):
                raise DataError(path, line, spec.id_column, f"id {raw_id!r} looks like a missing value")
            sample_id = f"{source}-{str(raw_id).strip()}"
        else:
            sample_id = f"{source}-{line:06d}"
        if sample_id in seen:
            raise DataError(path, line, spec.id_column or "id", f"duplicate id {sample_id!r} (first on line {seen[sample_id]})")
        seen[sample_id] = line
        records.append({
            "sample_id": sample_id, "scenario_seed": None, "split": None, "source": source,
            "labels": labels, "context": None, "observation": None, "features": None,
            "text": text, "rationale": rationale, "provenance": [],
        })
    return records


def hashed_split(sample_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of a sample id: a sha256 bucket in [0, 1) cut by the fractions."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()
    u = int(digest[:12], 16) / float(1 << 48)
    total = sum(fractions)
    if u < fractions[0] / total:
        return "train"
    return "dev" if u < (fractions[0] + fractions[1]) / total else "test"

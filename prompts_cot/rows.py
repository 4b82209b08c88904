"""The prompts stage's output rows (docs/CONTRACT.md): the ONE reader every consumer uses.

Train needs ``prompt`` and ``response``; predict and evaluate need ``sample_id`` and ``prompt``.
Every problem is a :class:`~pipeline.core.io.DataError` naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.io import DataError, read_jsonl

LANGS = ("en", "zh")


def read_prompt_rows(path: Path, required: Sequence[str] = ("sample_id", "prompt"), limit: int | None = None,
                     allow_empty: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of the first ``limit`` rows of a prompts-stage JSONL file.

    Every field in ``required`` must be a non-empty string and ``lang`` (when present) en or zh;
    a row without ``sample_id`` gets ``<file stem>-<line>``. ``allow_empty=False``: no rows is an error.
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, row in read_jsonl(path):
        for field in required:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise DataError(path, lineno, field, "missing or not a non-empty string")
        if row.get("lang", "en") not in LANGS:
            raise DataError(path, lineno, "lang", f"{row.get('lang')!r} is not en|zh")
        row.setdefault("sample_id", f"{Path(path).stem}-{lineno}")
        rows.append((lineno, row))
        if limit is not None and len(rows) >= limit:
            break
    if not rows and not allow_empty:
        raise DataError(path, None, None, "no rows")
    return rows


__all__ = ["read_prompt_rows"]

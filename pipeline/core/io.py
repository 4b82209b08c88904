"""Atomic file writing and validated JSONL reading shared by every stage.

Writers go to a temp file beside the target and ``os.replace`` it into place, so an
interrupted or failing stage never leaves a half-written output or clobbers the
previous good one. Readers report bad input as :class:`DataError` naming file, line
and field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}"
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path for libraries that want a filename (np.savez, savefig, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_object(path: str | Path) -> dict[str, Any]:
    """Parse a JSON file that must hold an object; a missing file, bad JSON or another type is a DataError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, None, None, "file does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(path, None, None, "expected a JSON object")
    return data


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as pretty, UTF-8 JSON."""
    return write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write ``rows`` as JSON lines; returns the number written."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; bad JSON is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file does not exist")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, None, f"invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(path, lineno, None, "expected a JSON object")
            yield lineno, obj


def index_jsonl_by_id(path: str | Path, out: dict[str, dict[str, Any]] | None = None, key: str = "sample_id",
                      validate: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Add every row of a JSONL file to ``out`` keyed by ``row[key]``.

    A missing/empty key or an id already in ``out`` (also from an earlier file) is a DataError
    naming file, line and field; ``validate(line_number, row)`` may check/complete each row first.
    Returns ``out``.
    """
    out = {} if out is None else out
    for lineno, row in read_jsonl(path):
        if validate is not None:
            validate(lineno, row)
        rid = row.get(key)
        if not isinstance(rid, str) or not rid:
            raise DataError(path, lineno, key, "missing or not a non-empty string")
        if rid in out:
            raise DataError(path, lineno, key, f"duplicate {key} {rid!r}")
        out[rid] = row
    return out


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a whole JSONL file into a list of dicts."""
    return [obj for _, obj in read_jsonl(path)]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def count_rows(path: str | Path) -> int | None:
    """Row count for JSONL/CSV files (non-blank lines; CSV minus header), else None."""
    path = Path(path)
    if path.suffix not in {".jsonl", ".csv"}:
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        n = sum(1 for line in fh if line.strip())
    return max(n - 1, 0) if path.suffix == ".csv" else n

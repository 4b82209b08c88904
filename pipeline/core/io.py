"""Atomic file writing and validated JSONL reading shared by every stage.

Writers go to a temp file beside the target (``.<name>.<random>.tmp``) and ``os.replace`` it into
place, so an interrupted or failing stage never leaves a half-written output or clobbers the
previous good one; the finished file gets the usual ``0666 & ~umask`` mode (mkstemp's 0600 would
otherwise stick). Readers report bad input as :class:`DataError` naming file, line and field:
invalid JSON, bytes that are not UTF-8, and the non-finite numbers ``NaN``/``Infinity`` (which
Python's json would accept silently) are all refused at this one boundary.

:func:`fault_point` is a test hook: ``PIPELINE_FAULT=<point>[#k]`` SIGKILLs the process the k-th
time it passes the named point (tests/test_fault_injection.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

#: environment variable naming the fault point (and optionally its k-th pass) to SIGKILL at
FAULT_ENV = "PIPELINE_FAULT"
_fault_hits: Counter = Counter()
#: marks a temp name written by this module (stale ones are removed by the stage runner)
TEMP_MARK = ".tmp"


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


def fault_point(name: str) -> None:
    """SIGKILL this process here when ``$PIPELINE_FAULT`` is ``name`` or ``name#k`` (the k-th pass, 1-based).

    A test hook for kill -9 at chosen points (no cleanup handler runs, like a real crash); a no-op otherwise.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition("#")
    if point != name:
        return
    _fault_hits[name] += 1
    if _fault_hits[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new output file: ``0666 & ~umask`` (what ``open`` would give)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new output folder: ``0777 & ~umask`` (what ``mkdir`` would give)."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A fresh hidden temp folder under ``parent`` with the ordinary folder mode (mkdtemp's is 0700)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_MARK, dir=parent))
    os.chmod(tmp, dir_mode())
    return tmp


def is_temp_name(name: str) -> bool:
    """True for a hidden temp file/folder name written by this module or a checkpoint writer."""
    return name.startswith(".") and (name.endswith((TEMP_MARK, ".old")) or f"{TEMP_MARK}." in name)


def remove_temp_files(root: str | Path) -> list[Path]:
    """Delete stale temp files/folders (left by a killed writer) anywhere under ``root``; returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if is_temp_name(name):
                stale.append(Path(dirpath) / name)
        dirnames[:] = [d for d in dirnames if not is_temp_name(d)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return stale


#: errors of a write that are the machine's state, not a bug: disk full, quota, read-only, no permission, too big
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def named_os_error(exc: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """``exc`` naming ``path`` (a write error raised without a file name, or naming our temp file), else ``exc``."""
    if exc.errno is None or (exc.filename is not None and (tmp is None or str(exc.filename) != str(tmp))):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _new_temp(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_MARK + suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished temp file the ordinary mode and rename it over ``path``."""
    os.chmod(tmp, file_mode())
    fault_point("io.before_replace")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    tmp = _new_temp(path)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (named := named_os_error(exc, path, tmp)) is not exc:
            raise named from exc
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path for libraries that want a filename (np.savez, savefig, safetensors).

    The temp name keeps ``path``'s suffix last, for libraries that pick the format from it.
    """
    path = Path(path)
    tmp = _new_temp(path, path.suffix)
    try:
        yield tmp
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (named := named_os_error(exc, path, tmp)) is not exc:
            raise named from exc
        raise


class _NonFinite(ValueError):
    """Raised by the JSON parser on ``NaN`` / ``Infinity`` / ``-Infinity``."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999 overflows to inf
        raise _NonFinite(text)
    return value


def nonfinite_field(obj: Any, prefix: str = "") -> str | None:
    """Dotted path (``features.min_range_m``, ``observation.range_m[3]``) of the first NaN/inf number, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (prefix or "<value>")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = nonfinite_field(v, f"{prefix}.{k}" if prefix else str(k))
            if found is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = nonfinite_field(v, f"{prefix}[{i}]")
            if found is not None:
                return found
    return None


def check_finite(obj: Any, path: str | Path, line: int | None, prefix: str = "") -> None:
    """DataError naming file, line and field when ``obj`` holds a NaN or infinite number."""
    field = nonfinite_field(obj, prefix)
    if field is not None:
        raise DataError(path, line, field, "is not a finite number (NaN or infinity)")


def parse_json(text: str, path: str | Path, line: int | None = None, allow_nonfinite: bool = False) -> Any:
    """``json.loads`` that reports bad JSON (and, unless allowed, NaN/Infinity) as a DataError with the field."""
    try:
        if allow_nonfinite:
            return json.loads(text)
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        raise DataError(path, where, None, f"invalid JSON ({exc.msg})") from None
    except _NonFinite as exc:
        field = nonfinite_field(json.loads(text))
        raise DataError(path, line, field, f"{exc} is not a finite number") from None


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` decoded as UTF-8 (a leading BOM dropped); otherwise a DataError naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(path, line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                          "save the file as UTF-8") from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (DataError when it is missing or not UTF-8)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, None, "file does not exist") from None
    except IsADirectoryError:
        raise DataError(path, None, None, "is a folder, expected a file") from None
    return decode_utf8(data, path)


def read_json_object(path: str | Path, allow_nonfinite: bool = False) -> dict[str, Any]:
    """Parse a JSON file that must hold an object; a missing file, bad JSON or another type is a DataError."""
    path = Path(path)
    data = parse_json(read_text(path), path, allow_nonfinite=allow_nonfinite)
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


def read_jsonl(path: str | Path, allow_nonfinite: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line.

    Bad JSON, a line that is not UTF-8 or not an object, and (unless ``allow_nonfinite``, for our own
    metrics files) a ``NaN``/``Infinity`` number are a DataError naming file, line and field.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file does not exist")
    if path.is_dir():
        raise DataError(path, None, None, "is a folder, expected a JSONL file")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                                    f"{exc.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            obj = parse_json(line, path, lineno, allow_nonfinite)
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


def load_jsonl(path: str | Path, allow_nonfinite: bool = False) -> list[dict[str, Any]]:
    """Read a whole JSONL file into a list of dicts."""
    return [obj for _, obj in read_jsonl(path, allow_nonfinite)]


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

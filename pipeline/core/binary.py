"""Checked readers of binary files: safetensors, torch ``.pt``/``.bin``, NPZ and GGUF.

The one place a binary file is opened. Each reader turns what goes wrong with a file copied by
hand into a :class:`~pipeline.core.io.DataError` naming the file (and the tensor or column):

* a missing file, a folder, a file of 0 bytes;
* a file that is not the container its name says (a ``.safetensors`` that is a zip, an NPZ that
  is text): the message names what the first bytes look like;
* a truncated file (a safetensors whose header describes more bytes than there are, a zip whose
  central directory is cut off, a member whose CRC fails: the column is named);
* with ``expected`` shapes, a missing, unexpected or differently shaped tensor.

Libraries raise a zoo of types for these (``EOFError``, ``BadZipFile``, ``SafetensorError``,
``UnpicklingError``, ``RuntimeError``); none of them leaves this module. torch and safetensors
are imported lazily so that numpy-only callers (track files) never import torch.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import DataError

#: first bytes of the containers we read
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GGUF_MAGIC = b"GGUF"
#: bytes per element of the safetensors dtypes (for the header's consistency check)
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                           "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def describe_bytes(head: bytes) -> str:
    """What the first bytes of a file look like (for "not a ... file" messages)."""
    if not head:
        return "an empty file"
    if head.startswith(ZIP_MAGIC):
        return "a zip archive (an NPZ or a torch .pt/.bin file)"
    if head.startswith(GGUF_MAGIC):
        return "a GGUF file"
    if head[:1] == b"\x80":
        return "a Python pickle (a legacy torch file)"
    if head[:1] in (b"{", b"[") or head[:1].isspace():
        return "text (JSON?)"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


def check_file(path: str | Path, what: str) -> int:
    """Size in bytes of ``path``; DataError when it is missing, a folder or empty."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, f"{what} file does not exist")
    if not path.is_file():
        raise DataError(path, None, None, f"is a folder, expected a {what} file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, None, None, f"{what} file is empty (0 bytes)")
    return size


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def check_shapes(path: str | Path, found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 what: str = "tensor") -> None:
    """DataError naming the first missing, unexpected or differently shaped tensor of ``path``."""
    missing = [k for k in expected if k not in found]
    if missing:
        raise DataError(path, None, missing[0], f"{what} missing (expected shape {tuple(expected[missing[0]])}; "
                                                f"the file holds {sorted(found)})")
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise DataError(path, None, unexpected[0], f"unexpected {what} (shape {tuple(found[unexpected[0]])}): "
                                                   f"the model expects only {sorted(expected)}")
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise DataError(path, None, key, f"{what} has shape {tuple(found[key])}, the model expects "
                                             f"{tuple(shape)} (saved for another model or config?)")


# ------------------------------------------------------------------------------------ safetensors
def safetensors_header(path: str | Path) -> dict[str, Any]:
    """The header of a complete safetensors file (tensor name -> dtype/shape/data_offsets, ``__metadata__``).

    DataError unless the header is readable JSON, every entry's byte range fits its dtype and shape,
    and the data is exactly as long as the header says (a truncated copy is refused before loading).
    """
    path = Path(path)
    size = check_file(path, "safetensors")
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            kind = describe_bytes(head + fh.read(8))
            if kind != "a safetensors file" and kind != "unknown binary data":
                raise DataError(path, None, None, f"not a safetensors file: it looks like {kind}")
            raise DataError(path, None, None, f"truncated or corrupt safetensors file ({size} bytes, header says {n})")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DataError(path, None, None, "corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise DataError(path, None, None, "corrupt safetensors header (not a JSON object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = (int(v) for v in entry["data_offsets"])
            shape = [int(d) for d in entry["shape"]]
            width = SAFETENSORS_DTYPE_BYTES.get(str(entry["dtype"]))  # None: a newer dtype, size not checked
        except (KeyError, TypeError, ValueError):
            raise DataError(path, None, name, "corrupt safetensors header entry (dtype/shape/data_offsets)") from None
        if lo < 0 or hi < lo or (width is not None and hi - lo != math.prod(shape) * width):
            raise DataError(path, None, name, f"corrupt safetensors header: {hi - lo} bytes for shape {shape} "
                                              f"of {entry['dtype']}")
        end = max(end, hi)
    if 8 + n + end != size:
        raise DataError(path, None, None, f"truncated or corrupt safetensors file: {size} bytes, the header "
                                          f"describes {8 + n + end}")
    return header


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from a checked safetensors header (no data is read)."""
    header = safetensors_header(path)
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def read_safetensors(path: str | Path, expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """All tensors of a safetensors file (torch, CPU), checked first (:func:`safetensors_header`).

    ``expected``: tensor name -> shape the caller's model needs; any other name set or shape is a
    DataError naming the tensor, before anything is loaded.
    """
    path = Path(path)
    shapes = safetensors_shapes(path)
    if expected is not None:
        check_shapes(path, shapes, expected)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise DataError(path, None, None, f"unreadable safetensors file ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------------ torch
def read_torch(path: str | Path, weights_only: bool = True, mmap: bool = False) -> Any:
    """``torch.load`` of a ``.pt``/``.bin`` file on the CPU; an empty, truncated or foreign file is a DataError.

    ``mmap`` is tried first when asked and falls back to a plain load (legacy, non-zip files
    cannot be memory-mapped).
    """
    path = Path(path)
    check_file(path, "torch")
    head = _head(path)
    if not (head.startswith(ZIP_MAGIC) or head[:1] == b"\x80"):
        raise DataError(path, None, None, f"not a torch file: it looks like {describe_bytes(head)}")
    import torch

    try:
        if mmap and head.startswith(ZIP_MAGIC):
            try:
                return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
            except RuntimeError:
                pass
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - RuntimeError/EOFError/UnpicklingError/OSError for a bad file
        raise DataError(path, None, None, f"unreadable torch file, truncated or corrupt "
                                          f"({type(exc).__name__}: {exc})") from None


# -------------------------------------------------------------------------------------------- NPZ
def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an NPZ file (no pickles), read eagerly so a damaged member is named as the column."""
    path = Path(path)
    check_file(path, "NPZ")
    head = _head(path)
    if not head.startswith(ZIP_MAGIC):
        raise DataError(path, None, None, f"not an NPZ file: it looks like {describe_bytes(head)}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, None, None, f"truncated or corrupt NPZ file ({type(exc).__name__}: {exc})") from None
    out: dict[str, np.ndarray] = {}
    with data:
        for key in data.files:
            try:
                out[key] = data[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
                raise DataError(path, None, key, f"unreadable array, truncated or corrupt NPZ "
                                                 f"({type(exc).__name__}: {exc})") from None
    return out


# ------------------------------------------------------------------------------------------- GGUF
def check_gguf(path: str | Path) -> None:
    """DataError unless ``path`` is a complete GGUF file (magic, header and tensor table readable)."""
    path = Path(path)
    check_file(path, "GGUF")
    head = _head(path)
    if not head.startswith(GGUF_MAGIC):
        raise DataError(path, None, None, f"not a GGUF file: it looks like {describe_bytes(head)}")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        for tensor in reader.tensors:  # the reader maps the file; a cut-off one has tensors past its end
            if int(tensor.data_offset) + int(tensor.n_bytes) > path.stat().st_size:
                raise ValueError(f"tensor {tensor.name} runs past the end of the file")
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError/IndexError/struct errors
        raise DataError(path, None, None, f"truncated or corrupt GGUF file ({type(exc).__name__}: {exc})") from None

"""Reading a train checkpoint folder: find it, verify it and read it, once, for every stage that uses one.

A checkpoint folder (``<train_dir>/best``, ``final`` or ``checkpoints/step-N``) holds the method's files (its
method JSON -- ``prefix_config.json`` for ptuning_v2, ``adapter_config.json`` for the others -- and weights),
``train_config.json`` and ``checkpoint.json``, the index the train stage writes last: the run fingerprint,
the step and the sha256 of every other file of the folder (:mod:`pipeline.train.checkpoint` writes it).

:func:`read_checkpoint` is the one reader: it refuses (exit-2 :class:`~pipeline.core.io.DataError`) a folder that
is missing (naming the checkpoints that do exist), holds no method JSON or one of an unknown method, or whose
files differ from their sha256 in ``checkpoint.json`` (a truncated, corrupt or hand-edited file, named). A folder
without ``checkpoint.json`` (made by hand, or by an older version) is read unverified; its tensors are still
checked name by name and shape by shape when the method loads them (a DataError naming file and tensor).
:meth:`Checkpoint.check_base_model` refuses a checkpoint made for another base model. Train resume, predict,
classify, evaluate (and its preflight) all go through here, and :func:`pipeline.models.lm.load_model` takes the
:class:`Checkpoint` itself, so one run reads a checkpoint's JSON once.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pipeline.core.io import DataError, read_json_object, sha256_file
from pipeline.methods import get_method, method_config_path, read_method_config
from pipeline.methods.base import ArchFacts, check_arch

#: the index of a checkpoint folder (written last by the train stage)
INDEX_FILE = "checkpoint.json"
#: the trainer state of a step checkpoint (what a resume needs besides the method's files)
STATE_FILE = "trainer_state.pt"
#: a step checkpoint's folder name under ``checkpoints/``
STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_path(train_dir: str | Path | None, checkpoint: str | None) -> Path | None:
    """``<train_dir>/<checkpoint>`` (``best`` | ``final`` | ``checkpoints/step-N``), or None for the base model."""
    if train_dir is None or checkpoint is None:
        return None
    return Path(train_dir) / checkpoint


def available_checkpoints(train_dir: str | Path) -> list[str]:
    """The checkpoint names under ``train_dir`` that hold a method JSON (``best``, ``final``, ``checkpoints/step-N``)."""
    root = Path(train_dir)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in [*root.glob("*"), *root.glob("checkpoints/step-*")]
                  if p.is_dir() and method_config_path(p).exists())


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` except its ``checkpoint.json``, sorted."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and f != folder / INDEX_FILE)


def index_problem(folder: Path, need_state: bool = True) -> str | None:
    """Why ``folder`` is not an intact indexed checkpoint (missing index, missing or changed file), or None.

    ``need_state=False`` for ``best/`` and ``final/`` (method files only, no trainer state).
    """
    try:
        index = read_json_object(folder / INDEX_FILE)
    except DataError as exc:
        return f"{INDEX_FILE}: {exc} (an incomplete checkpoint or one written by an older version)"
    files = index.get("files")
    if not isinstance(files, dict) or not isinstance(index.get("facts"), dict) or (need_state and STATE_FILE not in files):
        return f"{INDEX_FILE} lacks its file list, facts or {STATE_FILE}"
    bad = changed_file(folder, files)
    return None if bad is None else bad[1]


def changed_file(folder: Path, files: dict[str, str]) -> tuple[Path, str] | None:
    """The first file of an index ``{relative path: sha256}`` that is missing or changed, and why; None if all match."""
    for rel, digest in files.items():
        f = folder / rel
        if not f.is_file():
            return f, f"{rel} is missing"
        if sha256_file(f) != digest:
            return f, f"{rel} changed since it was written (truncated or corrupt)"
    return None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint folder and what it records (read once by :func:`read_checkpoint`).

    Attributes:
        folder: the folder.
        meta: its method JSON, ``method`` filled in (``ptuning_v2`` for folders older than the key).
        meta_path: the method JSON's path.
        index: its ``checkpoint.json`` (None for a folder without one).
    """

    folder: Path
    meta: dict[str, Any]
    meta_path: Path
    index: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        """The registered method the folder was trained with."""
        return str(self.meta["method"])

    @property
    def cls_head(self) -> bool:
        """Whether the folder holds classification heads."""
        return bool(self.meta.get("cls_head"))

    @property
    def model_spec(self) -> str | None:
        """The model spec it was trained on (None when not recorded)."""
        return self.meta.get("model_spec")

    @property
    def step(self) -> int | None:
        """The training step it was saved at (method JSON, else ``checkpoint.json``), if recorded."""
        for source in (self.meta, self.index or {}):
            if isinstance(source.get("step"), int):
                return source["step"]
        return None

    def system_prompt(self, default: str | None) -> str | None:
        """The chat system prompt recorded at training time (``default`` for checkpoints older than the record)."""
        return self.meta.get("system_prompt", default)

    def check_base_model(self, facts: ArchFacts, spec: str | None = None) -> None:
        """DataError (exit 2) naming the field when the checkpoint was made for another base model than ``facts``."""
        what = f"{self.method} checkpoint" + (f" (loading on {spec})" if spec else "")
        check_arch(self.meta["arch"], facts, self.meta_path, what=what)


def read_checkpoint(folder: str | Path) -> Checkpoint:
    """Find, verify and read a checkpoint folder (see the module docstring); DataError (exit 2) when it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        found = available_checkpoints(folder.parent)
        raise DataError(folder, None, "checkpoint", "no such checkpoint folder"
                        + (f"; {folder.parent} has: {', '.join(found)}" if found
                           else f" ({folder.parent} holds no checkpoints)"))
    meta = read_method_config(folder)
    index = None
    if (folder / INDEX_FILE).exists():
        index = read_json_object(folder / INDEX_FILE)
        files = index.get("files")
        if not isinstance(files, dict):
            raise DataError(folder / INDEX_FILE, None, "files", "the index lacks its file list")
        bad = changed_file(folder, files)
        if bad is not None:
            raise DataError(bad[0], None, None, f"does not match {folder / INDEX_FILE}: {bad[1]}; retrain, or "
                            "restore the folder as the train stage wrote it")
    get_method(meta["method"])  # known (read_method_config checked it): the registry entry loads it
    return Checkpoint(folder, meta, method_config_path(folder), index)


def as_checkpoint(checkpoint: Checkpoint | str | Path) -> Checkpoint:
    """``checkpoint`` itself, or the folder read by :func:`read_checkpoint`."""
    return checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)


__all__ = ["INDEX_FILE", "STATE_FILE", "STEP_DIR", "Checkpoint", "as_checkpoint", "available_checkpoints",
           "changed_file", "checkpoint_path", "folder_files", "index_problem", "read_checkpoint"]

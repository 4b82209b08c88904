"""The stage contract: declared inputs, outputs under ``out_dir`` committed as a set, a manifest, skip-if-fresh.

A stage is a module-level :class:`Stage` object: its config dataclass (which must have
an ``out_dir`` field), a function listing the input files it reads, and a ``run``
function that writes only under ``out_dir`` and returns what it wrote. The runner
(:func:`run_stage`) checks the config and the inputs before anything is written, then:

* **stages its outputs.** ``run`` gets the config with ``out_dir`` replaced by
  ``<out_dir>/.staging``; the previous set stays untouched (and valid) while it runs.
* **commits them as a set, manifest last.** The old ``manifest.json`` is moved aside, the old
  set's entries go to ``.trash``, the new ones are renamed in, and only then is the new
  ``manifest.json`` (config, input/output hashes, versions, git commit, timings) written; the
  trash and ``.staging`` are removed after it. A folder without a manifest but with ``.staging`` is
  an unfinished output: no downstream stage accepts it (:func:`check_inputs`), and it never looks
  up to date. A kill -9 at any point leaves either the old complete set or such a refused folder.
* **cleans up.** Stale temp files (``.*.tmp``) and a killed run's staging are removed when the
  stage next runs; ``out_dir/.lock`` keeps two runs out of one folder.
* skips a stage whose config and inputs are unchanged and whose outputs are intact, unless
  ``force`` is set.

``resumable`` stages (train) keep an interrupted run's ``.staging`` (its step checkpoints) for the
stage's own resume logic; stages with ``staged=False`` publish into ``out_dir`` themselves
(``label.merge``'s versions, ``label.review``'s growing file) and only get the manifest protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, config_to_dict
from pipeline.core.io import (
    WRITE_ERRNOS,
    DataError,
    count_rows,
    fault_point,
    remove_temp_files,
    sha256_file,
    write_json,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: the next output set while it is written; its presence without a manifest marks an unfinished folder
STAGING = ".staging"
#: the replaced output set during a commit
TRASH = ".trash"
#: held (flock) by the run writing the folder
LOCK = ".lock"
BOOKKEEPING = frozenset({STAGING, TRASH, LOCK})
#: config keys that name an upstream stage's output folder (the same in every stage config)
UPSTREAM_KEYS = ("data_dir", "prompts_dir", "train_dir")
TRACKED_PACKAGES = (
    "torch", "transformers", "deepspeed", "datasets", "numpy", "scipy", "scikit-learn",
    "safetensors", "tokenizers", "sentencepiece", "gguf", "accelerate", "peft", "evaluate", "matplotlib",
)


@dataclasses.dataclass
class StageResult:
    """What a stage's ``run`` returns: the files it wrote and free-form statistics."""

    outputs: list[Path]
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A pipeline stage.

    Attributes:
        name: CLI name, e.g. ``data_prep`` or ``label.select``.
        config_cls: frozen dataclass with an ``out_dir`` field.
        inputs: ``cfg -> list of files`` the stage reads (directories are expanded).
        run: ``cfg -> StageResult``; writes only under ``cfg.out_dir``.
        default_config: path of the YAML used when ``--config`` is omitted.
        always_run: interactive/side-effect stages (e.g. ``label.review``) never skip.
        check: ``cfg -> None``, raises ValueError/ConfigError for settings that cannot run (checked
            before anything runs, e.g. by the profile runner for every step).
        staged: outputs are written into ``out_dir/.staging`` and committed as a set (default);
            False: the stage publishes into ``out_dir`` itself and only the manifest is the runner's.
        resumable: keep an interrupted run's ``.staging`` for the stage's own resume (train).
        fresh: ``cfg -> cfg`` of a from-scratch run, used by ``--force`` (train: ``resume=never``).
    """

    name: str
    config_cls: type
    inputs: Callable[[Any], list[Path]]
    run: Callable[[Any], StageResult]
    default_config: str | None = None
    always_run: bool = False
    help: str = ""
    check: Callable[[Any], None] | None = None
    staged: bool = True
    resumable: bool = False
    fresh: Callable[[Any], Any] | None = None


def expand_files(paths: list[Path]) -> list[Path]:
    """Expand directories into their files (sorted, skipping manifests and hidden files)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(
                f for f in sorted(p.rglob("*"))
                if f.is_file() and f.name != MANIFEST and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            files.append(p)
    return files


def describe_file(path: Path) -> dict[str, Any]:
    """sha256, size and row count of one file (JSONL/CSV rows)."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": count_rows(path)}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """Commit of the code that ran (``-dirty`` when the tree has changes), if in a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_hash(cfg_dict: dict[str, Any]) -> str:
    """Stable hash of a resolved config."""
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True).encode()).hexdigest()


def _describe_all(files: list[Path], base: Path | None = None) -> dict[str, Any]:
    out = {}
    for f in files:
        key = str(f.relative_to(base)) if base is not None and f.is_relative_to(base) else str(f)
        out[key] = describe_file(f)
    return out


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The folder's ``manifest.json`` when it is a readable JSON object with an ``outputs`` mapping, else None."""
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict):
        return None
    return manifest


def committed_dir(out_dir: str | Path) -> Path:
    """The stage's real output folder, also when given the staging folder a run writes into."""
    out_dir = Path(out_dir)
    return out_dir.parent if out_dir.name == STAGING else out_dir


def is_main_process() -> bool:
    """False on the non-zero ranks of a multi-process (DeepSpeed/torchrun) launch: only rank 0 commits."""
    return os.environ.get("RANK", "0") in ("", "0")


def is_up_to_date(stage: Stage, cfg: Any) -> bool:
    """True when the manifest matches this config, the current inputs and intact outputs."""
    out_dir = Path(cfg.out_dir)
    if stage.always_run:
        return False
    manifest = read_manifest(out_dir)
    if manifest is None:
        return False
    if manifest.get("config_hash") != config_hash(config_to_dict(cfg)):
        return False
    inputs = expand_files(stage.inputs(cfg))
    if any(not f.is_file() for f in inputs):
        return False
    recorded_inputs = manifest.get("inputs", {})
    if not isinstance(recorded_inputs, dict) or set(recorded_inputs) != {str(f) for f in inputs}:
        return False
    for f in inputs:
        if not isinstance(recorded_inputs[str(f)], dict) or recorded_inputs[str(f)].get("sha256") != sha256_file(f):
            return False
    for rel, desc in manifest["outputs"].items():
        f = out_dir / rel
        if not f.is_file() or not isinstance(desc, dict) or sha256_file(f) != desc.get("sha256"):
            return False
    return True


# ------------------------------------------------------------------------------------ before a run
def check_config(stage: Stage, cfg: Any) -> None:
    """Run the stage's own config checks; a ValueError becomes a ConfigError (exit 2, no traceback)."""
    if stage.check is None:
        return
    try:
        stage.check(cfg)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{stage.name} config: {exc}") from None


def upstream_dirs(cfg: Any) -> dict[str, Path]:
    """The config's upstream output folders (:data:`UPSTREAM_KEYS` that are set), by key."""
    return {key: Path(getattr(cfg, key)) for key in UPSTREAM_KEYS if getattr(cfg, key, None) is not None}


#: binary outputs nobody edits by hand: an upstream one that differs from its manifest is corrupt
VERIFIED_SUFFIXES = (".safetensors", ".pt", ".bin", ".npz", ".npy")


def check_input_dir(folder: Path, files: list[Path], key: str | None,
                    hashes: dict[str, str] | None = None, accept_edits: bool = False) -> None:
    """Refuse an upstream folder that is not a finished stage output set.

    With a ``manifest.json``: it must be readable, every file it lists must exist (binary ones with
    the size they were written with), every input file read from the folder must be one it lists
    (a file from an older set is stale) and a binary input (weights, trainer state, arrays) must
    still have the sha256 it was written with (text files may be corrected by hand, e.g. a gold
    label) -- but not lose or gain rows: a JSONL/CSV input whose row count differs from the manifest's
    is refused unless ``accept_edits`` (``--accept-edited-inputs``: rows removed or added on
    purpose). Without a manifest, a ``.staging`` folder
    means the stage writing it was interrupted or is still running. A folder with neither (made by
    hand, or a ``label.merge`` version) is accepted as it is. ``hashes``: sha256 of the input files
    when already computed.
    """
    field = key or "input"
    rerun = "rerun the stage that writes it (its output is incomplete)"
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        if manifest is None:
            raise DataError(folder / MANIFEST, None, field, f"unreadable or incomplete manifest; {rerun}")
        listed = set(manifest["outputs"])
        for rel in sorted(listed):
            f, recorded = folder / rel, manifest["outputs"][rel]
            if not f.is_file():
                raise DataError(f, None, field, f"listed in {folder / MANIFEST} but missing; {rerun}")
            if f.suffix in VERIFIED_SUFFIXES and isinstance(recorded, dict) and recorded.get("bytes") != f.stat().st_size:
                raise DataError(f, None, field, f"has {f.stat().st_size} bytes, its stage wrote {recorded.get('bytes')} "
                                                f"(truncated or corrupt); {rerun}")
        for f in files:
            if not f.is_relative_to(folder):
                continue
            rel = str(f.relative_to(folder))
            if rel not in listed:
                raise DataError(f, None, field, f"not part of the finished output set of {folder} (its manifest "
                                                f"does not list it: left over from an older run?); {rerun}")
            if f.suffix in VERIFIED_SUFFIXES:
                digest = (hashes or {}).get(str(f)) or sha256_file(f)
                recorded = manifest["outputs"][rel]
                if not isinstance(recorded, dict) or recorded.get("sha256") != digest:
                    raise DataError(f, None, field, f"differs from what its stage wrote (truncated or corrupt; "
                                                    f"sha256 recorded in {folder / MANIFEST}); {rerun}")
            elif not accept_edits:
                check_row_count(f, manifest["outputs"][rel], folder, field)
    elif (folder / STAGING).exists():
        raise DataError(folder, None, field, f"unfinished stage output (no {MANIFEST}, {STAGING}/ present: the "
                                             f"stage writing it was interrupted or is still running); {rerun}")


def check_row_count(f: Path, recorded: Any, folder: Path, field: str) -> None:
    """Refuse a JSONL/CSV input with fewer or more rows than its stage's manifest records.

    A hand correction (a gold label) keeps the rows; a file cut short by a bad copy, or rows
    deleted by mistake, would silently shrink every report computed from it.
    """
    want = recorded.get("rows") if isinstance(recorded, dict) else None
    if want is None:
        return
    have = count_rows(f)
    if have is not None and have != want:
        raise DataError(f, None, field, f"has {have} rows, {folder / MANIFEST} records {want} "
                                        f"({'lost' if have < want else 'added'} by an edit or a cut-off copy?); "
                                        "rerun the stage that writes it, or pass --accept-edited-inputs "
                                        "if the rows were removed or added on purpose")


def check_inputs_exist(stage: Stage, inputs: list[Path]) -> None:
    """Every declared input exists (bad user input, a wrong path: exit 2 with the file named)."""
    missing = [str(f) for f in inputs if not f.exists()]
    if missing:
        raise DataError(missing[0], None, None, f"does not exist (stage {stage.name}: declared input(s) missing: "
                                                f"{', '.join(missing)})")


def check_inputs(stage: Stage, cfg: Any, inputs: list[Path], hashes: dict[str, str] | None = None,
                 accept_edits: bool = False) -> None:
    """Every declared input exists, and no input comes from a torn, unfinished or corrupted upstream folder
    (nor, unless ``accept_edits``, has lost or gained rows since its stage wrote it)."""
    check_inputs_exist(stage, inputs)
    folders: dict[Path, str | None] = {d: key for key, d in upstream_dirs(cfg).items()}
    for f in inputs:  # also a loose input file inside another stage's output folder (compare's reports)
        if (f.parent / MANIFEST).exists() or (f.parent / STAGING).exists():
            folders.setdefault(f.parent, None)
    for folder, key in folders.items():
        check_input_dir(folder, inputs, key, hashes, accept_edits)


def prepare_out_dir(out_dir: Path, cfg: Any) -> bool:
    """Create ``out_dir`` (True when it did not exist); refuse a file, an unwritable folder or an input folder."""
    for key, d in upstream_dirs(cfg).items():
        if d.resolve() == out_dir.resolve():
            raise ConfigError(f"out_dir: {out_dir} is also {key}; a stage never writes into its input folder",
                              key="out_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir: {out_dir} exists and is not a folder", key="out_dir")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(out_dir, None, "out_dir", f"cannot create the output folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise DataError(out_dir, None, "out_dir", "output folder is not writable")
    return created


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.lock`` (an flock, released by the OS even on kill -9) for the duration of a run."""
    import fcntl

    fh = open(out_dir / LOCK, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(out_dir, None, "out_dir", "another run is writing this folder (it holds "
                                                      f"{out_dir / LOCK}); wait for it or choose another out_dir") from None
        yield
    finally:
        fh.close()


def clean_stale(stage: Stage, out_dir: Path, force: bool) -> None:
    """Remove what a killed run left: temp files, the trash and (unless kept for a resume) the staging folder."""
    stale = remove_temp_files(out_dir)
    if stale:
        log.info("removed %d stale temp file(s) under %s", len(stale), out_dir)
    shutil.rmtree(out_dir / TRASH, ignore_errors=True)
    staging = out_dir / STAGING
    if staging.exists() and (force or not stage.resumable or not stage.staged):
        shutil.rmtree(staging)


def tidy_up_to_date(stage: Stage, out_dir: Path) -> None:
    """Remove what a run killed after its commit left behind, unless another run holds the folder."""
    leftovers = (out_dir / TRASH).exists() or (out_dir / STAGING).exists() and not stage.resumable
    if not leftovers or not stage.staged:
        return
    with contextlib.suppress(DataError):
        with locked(out_dir):
            clean_stale(stage, out_dir, force=False)


# ------------------------------------------------------------------------------------------ commit
def owned_names(out_dir: Path) -> set[str]:
    """Top-level names of the set the folder last committed (also from a commit that was interrupted)."""
    names: set[str] = set()
    for folder in (out_dir, out_dir / TRASH):
        manifest = read_manifest(folder)
        if manifest is not None:
            names.update(str(rel).split("/", 1)[0] for rel in manifest["outputs"])
    return names


def commit_outputs(staging: Path, out_dir: Path, manifest: dict[str, Any]) -> None:
    """Swap the staged set into ``out_dir``: old manifest aside, old entries to trash, new ones in, manifest last.

    Entries of ``out_dir`` that no committed set owns (a user's own files) are left alone; hidden
    entries (``.partial`` caches, the lock) are kept.
    """
    fault_point("stage.before_commit")
    trash = out_dir / TRASH
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    owned = owned_names(out_dir)
    moves: list[tuple[Path, Path]] = []  # (from, to), undone in reverse when the commit fails

    def move(src: Path, dst: Path) -> None:
        os.replace(src, dst)
        moves.append((src, dst))

    try:
        if (out_dir / MANIFEST).exists():
            move(out_dir / MANIFEST, trash / MANIFEST)  # from here on the old set is no longer "finished"
        new = sorted(e.name for e in staging.iterdir() if not e.name.startswith("."))
        for entry in sorted(out_dir.iterdir()):
            if not entry.name.startswith(".") and entry.name != MANIFEST and (entry.name in owned or entry.name in new):
                move(entry, trash / entry.name)
        for name in new:
            move(staging / name, out_dir / name)
            fault_point("stage.mid_commit")
        fault_point("stage.before_manifest")
        write_json(out_dir / MANIFEST, manifest)
    except BaseException:
        roll_back(moves)
        with contextlib.suppress(OSError):
            trash.rmdir()  # only when the roll-back emptied it
        raise
    fault_point("stage.after_manifest")
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def roll_back(moves: list[tuple[Path, Path]]) -> None:
    """Undo a failed commit's renames (newest first): the previous set and its manifest are back in place.

    Renames within one file system need no free space, so this works on a full disk too.
    """
    for src, dst in reversed(moves):
        with contextlib.suppress(OSError):
            os.replace(dst, src)


def write_error(exc: OSError, out_dir: Path) -> DataError | None:
    """The exit-2 error of a failed write under ``out_dir`` (disk full, read-only, ...), else None.

    Names the stage's ``out_dir`` and the file being written (relative to it); a write error
    outside ``out_dir`` (or another errno: a bug) is not turned into one.
    """
    if exc.errno not in WRITE_ERRNOS:
        return None
    what = "an output file"  # a write error without a file name (not from our atomic writers)
    if exc.filename is not None:
        target, root = Path(exc.filename).resolve(), out_dir.resolve()
        if not target.is_relative_to(root):
            return None
        what = "/".join(p for p in target.relative_to(root).parts if p != STAGING) or "the folder"
    return DataError(out_dir, None, "out_dir", f"cannot write {what} ({exc.strerror or os.strerror(exc.errno)}, "
                                               f"{errno.errorcode.get(exc.errno, exc.errno)}); nothing was "
                                               "committed and the previous output set is unchanged; free space "
                                               "or fix the folder's permissions, then rerun")


def build_manifest(stage: Stage, cfg: Any, input_desc: dict[str, Any], outputs: list[Path], base: Path,
                   result: StageResult, started: float, elapsed: float) -> dict[str, Any]:
    """The manifest of a finished run (output paths relative to ``base``, the folder they were written in)."""
    cfg_dict = config_to_dict(cfg)
    return {
        "stage": stage.name,
        "config": cfg_dict,
        "config_hash": config_hash(cfg_dict),
        "inputs": input_desc,
        "outputs": _describe_all(outputs, base=base),
        "stats": result.stats,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "timings": {"started_unix": started, "seconds": round(elapsed, 3)},
    }


def _only_bookkeeping(out_dir: Path) -> bool:
    """True when ``out_dir`` holds nothing but the runner's own bookkeeping (an empty staging included)."""
    for entry in out_dir.iterdir():
        if entry.name not in BOOKKEEPING or (entry.name == STAGING and any(entry.iterdir())):
            return False
    return True


def run_stage(stage: Stage, cfg: Any, force: bool = False, accept_edits: bool = False) -> dict[str, Any]:
    """Run ``stage`` with ``cfg`` unless it is up to date; return its manifest (see the module docstring).

    ``accept_edits``: accept upstream JSONL/CSV files whose row count differs from their manifest.
    """
    out_dir = Path(cfg.out_dir)
    check_config(stage, cfg)
    if not force and is_up_to_date(stage, cfg):
        log.info("stage %s is up to date (%s); use --force to re-run", stage.name, out_dir / MANIFEST)
        if is_main_process():
            tidy_up_to_date(stage, out_dir)
        return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    inputs = expand_files(stage.inputs(cfg))
    check_inputs_exist(stage, inputs)
    input_desc = _describe_all(inputs)
    check_inputs(stage, cfg, inputs, {f: d["sha256"] for f, d in input_desc.items()}, accept_edits)
    main = is_main_process()
    created = prepare_out_dir(out_dir, cfg)
    with locked(out_dir) if main else contextlib.nullcontext():
        staging = out_dir / STAGING
        if main:
            clean_stale(stage, out_dir, force)
            if stage.staged:
                staging.mkdir(exist_ok=True)  # while it exists without a manifest, the folder reads as unfinished
        run_cfg = stage.fresh(cfg) if force and stage.fresh is not None else cfg
        base = staging if stage.staged else out_dir
        if stage.staged:
            run_cfg = dataclasses.replace(run_cfg, out_dir=staging)
        started = time.time()
        t0 = time.perf_counter()
        try:
            result = stage.run(run_cfg)
        except BaseException as exc:
            if main:
                keep = stage.resumable and staging.exists() and any(staging.iterdir())
                if stage.staged and not keep:
                    shutil.rmtree(staging, ignore_errors=True)
                if created and _only_bookkeeping(out_dir):
                    shutil.rmtree(out_dir, ignore_errors=True)
            if isinstance(exc, OSError) and (error := write_error(exc, out_dir)) is not None:
                raise error from exc
            raise
        elapsed = time.perf_counter() - t0
        outputs = expand_files([Path(p) for p in result.outputs])
        for f in outputs:
            if not f.resolve().is_relative_to(base.resolve()):
                raise RuntimeError(f"stage {stage.name} wrote {f} outside its out_dir {base}")
        manifest = build_manifest(stage, cfg, input_desc, outputs, base, result, started, elapsed)
        if not main:
            return manifest
        try:
            if stage.staged:
                commit_outputs(staging, out_dir, manifest)
            else:
                write_json(out_dir / MANIFEST, manifest)
        except OSError as exc:
            if stage.staged and not stage.resumable:
                shutil.rmtree(staging, ignore_errors=True)
            if (error := write_error(exc, out_dir)) is not None:
                raise error from exc
            raise
    log.info("stage %s done in %.1fs -> %s", stage.name, elapsed, out_dir)
    return manifest

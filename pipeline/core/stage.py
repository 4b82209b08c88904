"""The stage contract: declared inputs, outputs under ``out_dir``, a manifest, skip-if-fresh.

A stage is a module-level :class:`Stage` object: its config dataclass (which must have
an ``out_dir`` field), a function listing the input files it reads, and a ``run``
function that writes only under ``out_dir`` and returns what it wrote. The runner
hashes inputs and outputs, records versions, git commit and timings in
``out_dir/manifest.json`` (atomically), and skips a stage whose config and inputs
are unchanged and whose outputs are intact, unless ``force`` is set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.config import config_to_dict
from pipeline.core.io import DataError, count_rows, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "torch", "transformers", "deepspeed", "datasets", "numpy", "scipy", "scikit-learn",
    "safetensors", "tokenizers", "sentencepiece", "gguf", "accelerate", "peft", "matplotlib",
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
    """

    name: str
    config_cls: type
    inputs: Callable[[Any], list[Path]]
    run: Callable[[Any], StageResult]
    default_config: str | None = None
    always_run: bool = False
    help: str = ""
    check: Callable[[Any], None] | None = None


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


def is_up_to_date(stage: Stage, cfg: Any) -> bool:
    """True when the manifest matches this config, the current inputs and intact outputs."""
    out_dir = Path(cfg.out_dir)
    manifest_path = out_dir / MANIFEST
    if stage.always_run or not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("config_hash") != config_hash(config_to_dict(cfg)):
        return False
    inputs = expand_files(stage.inputs(cfg))
    if any(not f.exists() for f in inputs):
        return False
    recorded_inputs = manifest.get("inputs", {})
    if set(recorded_inputs) != {str(f) for f in inputs}:
        return False
    for f in inputs:
        if recorded_inputs[str(f)]["sha256"] != sha256_file(f):
            return False
    for rel, desc in manifest.get("outputs", {}).items():
        f = out_dir / rel
        if not f.exists() or sha256_file(f) != desc["sha256"]:
            return False
    return True


def run_stage(stage: Stage, cfg: Any, force: bool = False) -> dict[str, Any]:
    """Run ``stage`` with ``cfg`` unless it is up to date; return its manifest."""
    out_dir = Path(cfg.out_dir)
    if not force and is_up_to_date(stage, cfg):
        log.info("stage %s is up to date (%s); use --force to re-run", stage.name, out_dir / MANIFEST)
        return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    inputs = expand_files(stage.inputs(cfg))
    missing = [str(f) for f in inputs if not f.exists()]
    if missing:
        # bad user input (a wrong path), so exit 2 with the file named, not a traceback
        raise DataError(missing[0], None, None, f"does not exist (stage {stage.name}: declared input(s) missing: "
                                                f"{', '.join(missing)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    input_desc = _describe_all(inputs)
    started = time.time()
    t0 = time.perf_counter()
    result = stage.run(cfg)
    elapsed = time.perf_counter() - t0
    outputs = expand_files([Path(p) for p in result.outputs])
    for f in outputs:
        if not f.resolve().is_relative_to(out_dir.resolve()):
            raise RuntimeError(f"stage {stage.name} wrote {f} outside its out_dir {out_dir}")
    cfg_dict = config_to_dict(cfg)
    manifest = {
        "stage": stage.name,
        "config": cfg_dict,
        "config_hash": config_hash(cfg_dict),
        "inputs": input_desc,
        "outputs": _describe_all(outputs, base=out_dir),
        "stats": result.stats,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "timings": {"started_unix": started, "seconds": round(elapsed, 3)},
    }
    write_json(out_dir / MANIFEST, manifest)
    log.info("stage %s done in %.1fs -> %s", stage.name, elapsed, out_dir)
    return manifest

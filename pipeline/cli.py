"""Command line: ``python -m pipeline <stage> [sub] [--config FILE] [--force] [key=value ...]``.

Stages are looked up lazily in :data:`STAGES` so that ``python -m pipeline data_prep``
does not import torch. A stage group such as ``label`` takes a sub-command:
``python -m pipeline label select --config ...`` runs stage ``label.select``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.io import DataError
from pipeline.stage import Stage, run_stage

#: stage name -> "module:attribute" of its :class:`~pipeline.stage.Stage`.
STAGES: dict[str, str] = {
    "data_prep": "data_prep.stage:STAGE",
    "prompts": "prompts_cot.stage:STAGE",
    "train": "pipeline.train:STAGE",
    "predict": "pipeline.predict:STAGE",
    "evaluate": "eval.stage:STAGE",
    "compare": "eval.compare:STAGE",
    "label.select": "pipeline.label.select:STAGE",
    "label.export": "pipeline.label.export:STAGE",
    "label.import": "pipeline.label.importer:STAGE",
    "label.review": "pipeline.label.review:STAGE",
    "label.merge": "pipeline.label.merge:STAGE",
    "label.agreement": "pipeline.label.agreement:STAGE",
}

ROOT = Path(__file__).resolve().parent.parent


def resolve_stage(name: str) -> Stage:
    """Import and return the stage registered under ``name``."""
    if name not in STAGES:
        raise SystemExit(f"unknown stage {name!r}; choose from: {', '.join(STAGES)}")
    module, attr = STAGES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def split_stage_name(argv: list[str]) -> tuple[str, list[str]]:
    """Join a group and its sub-command (``label select`` -> ``label.select``)."""
    if not argv:
        raise SystemExit("usage: python -m pipeline <stage> [sub] [--config FILE] [--force] [key=value ...]\n"
                         f"stages: {', '.join(STAGES)}")
    name, rest = argv[0], argv[1:]
    groups = {s.split(".")[0] for s in STAGES if "." in s}
    if name in groups:
        if not rest or rest[0].startswith("-") or "=" in rest[0]:
            subs = [s.split(".", 1)[1] for s in STAGES if s.startswith(name + ".")]
            raise SystemExit(f"stage group {name!r} needs a sub-command: {', '.join(subs)}")
        name, rest = f"{name}.{rest[0]}", rest[1:]
    return name, rest


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:", ", ".join(STAGES))
        return 0
    name, rest = split_stage_name(argv)
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {name.replace('.', ' ')}")
    parser.add_argument("--config", help="stage YAML (default: the stage's shipped default)")
    parser.add_argument("--force", action="store_true", help="re-run even if up to date")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(rest)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stage = resolve_stage(name)
    config_path = args.config or (str(ROOT / stage.default_config) if stage.default_config else None)
    try:
        cfg = load_config(stage.config_cls, config_path, args.overrides)
        manifest = run_stage(stage, cfg, force=args.force)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"stage": name, "out_dir": str(cfg.out_dir), "stats": manifest.get("stats", {})}
    print(json.dumps(summary, ensure_ascii=False, default=str)[:4000])
    return 0

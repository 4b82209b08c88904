"""Command line.

    python -m pipeline <stage> [sub] [--config FILE] [--force] [--accept-edited-inputs] [--debug] [key=value ...]
    (any config key may also be given as ``--key value``: ``python -m pipeline export --format peft ...``)
    python -m pipeline run <profile> [--steps a,b] [--run-root DIR] [--dry-run] [--force] [--debug] [step.key=value ...]
    python -m pipeline serve [--model SPEC] [--train-dir DIR] [--checkpoint best] [--port 8000] ...   HTTP endpoint

Exit codes: 0 done (or up to date); 2 a user error (bad config key or value, bad or missing input
file, unusable out_dir), printed as one ``error:`` line naming the file, line, field or key, with
no traceback unless ``--debug``; 130 interrupted (Ctrl-C); anything else is a bug (traceback).

Stages are looked up lazily by name in :data:`pipeline.core.registry.STAGES`, so that
``python -m pipeline data_prep`` does not import torch. A stage group such as ``label`` takes a
sub-command: ``python -m pipeline label select --config ...`` runs stage ``label.select``.
``run`` runs a profile (``pipeline/profiles/<name>.yaml``, see :mod:`pipeline.core.profile`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline import missing_package_message
from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import WRITE_ERRNOS, DataError
from pipeline.core.profile import load_profile, run_profile, step_command
from pipeline.core.registry import COMMANDS, STAGES, UnknownStage, resolve_command
from pipeline.core.registry import resolve_stage as _resolve_stage
from pipeline.core.stage import Stage, run_stage

ROOT = Path(__file__).resolve().parent.parent
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UserError(Exception):
    """Raised inside :func:`user_errors` to leave with exit code ``code`` after the message was printed."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn user errors into one ``error:`` line and exit 2 (tracebacks only with ``--debug``).

    User errors: :class:`ConfigError`, :class:`DataError` and an ``OSError`` about a named file
    (permission denied, disk full, a folder where a file was expected) or a write error without a
    name (:data:`~pipeline.core.io.WRITE_ERRNOS`; the stage runner names the ``out_dir`` of its
    own). Ctrl-C exits 130.
    """
    try:
        yield
    except (ConfigError, DataError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise UserError(2) from None
    except OSError as exc:
        if debug or (exc.filename is None and exc.errno not in WRITE_ERRNOS):
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        raise UserError(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        raise UserError(130) from None


def usage_error(message: str) -> SystemExit:
    """Print ``error: message`` and give the exit-2 SystemExit to raise (a command-line mistake)."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def resolve_stage(name: str) -> Stage:
    """Import and return the stage registered under ``name`` (exit 2 with the known names otherwise)."""
    try:
        return _resolve_stage(name)
    except UnknownStage as exc:
        raise usage_error(str(exc)) from None


def split_stage_name(argv: list[str]) -> tuple[str, list[str]]:
    """Join a group and its sub-command (``label select`` -> ``label.select``)."""
    if not argv:
        raise usage_error("usage: python -m pipeline <stage> [sub] [--config FILE] [--force] [key=value ...]\n"
                          "       python -m pipeline run <profile> [--steps a,b] [--dry-run] [step.key=value ...]\n"
                          f"stages: {', '.join(STAGES)}")
    name, rest = argv[0], argv[1:]
    groups = {s.split(".")[0] for s in STAGES if "." in s}
    if name in groups:
        if not rest or rest[0].startswith("-") or "=" in rest[0]:
            subs = [s.split(".", 1)[1] for s in STAGES if s.startswith(name + ".")]
            raise usage_error(f"stage group {name!r} needs a sub-command: {', '.join(subs)}")
        name, rest = f"{name}.{rest[0]}", rest[1:]
    return name, rest


#: the stage command's own options; any other ``--key value`` is the config override ``key=value``
STAGE_FLAGS = frozenset({"--config", "--force", "--accept-edited-inputs", "--debug", "--log-level", "-h", "--help"})


def flags_to_overrides(argv: list[str]) -> list[str]:
    """``--format peft`` / ``--format=peft`` -> ``format=peft`` for config keys (the stage's own flags stay)."""
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        name = word.split("=", 1)[0]
        if word.startswith("--") and name not in STAGE_FLAGS:
            if "=" in word:
                out.append(word[2:])
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out.append(f"{word[2:]}={argv[i + 1]}")
                i += 1
            else:
                raise usage_error(f"option {word} needs a value (it sets the config key {word[2:]!r})")
        else:
            out.append(word)
        i += 1
    return out


def main_run(argv: list[str]) -> int:
    """``python -m pipeline run <profile> ...``: run a profile's stages in order."""
    parser = argparse.ArgumentParser(prog="python -m pipeline run")
    parser.add_argument("profile", help="profile name (pipeline/profiles/<name>.yaml) or a profile YAML path")
    parser.add_argument("--steps", help="comma-separated step names to run (default: all, in profile order)")
    parser.add_argument("--run-root", help="replace the profile's run_root")
    parser.add_argument("--dry-run", action="store_true", help="print the equivalent stage commands and exit")
    parser.add_argument("--force", action="store_true", help="re-run steps from scratch even if up to date")
    parser.add_argument("--accept-edited-inputs", action="store_true",
                        help="accept upstream JSONL/CSV files with fewer or more rows than their manifest records")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="step.key=value overrides, e.g. train.optim.max_steps=12")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    steps = args.steps.split(",") if args.steps else None
    try:
        with user_errors(args.debug):
            profile = load_profile(args.profile, args.run_root)
            if args.dry_run:
                for step in profile.steps:
                    if not steps or step.name in steps:
                        print(step_command(profile, step, args.overrides))
                return 0
            manifests = run_profile(profile, steps, args.overrides, force=args.force,
                                    accept_edits=args.accept_edited_inputs)
    except UserError as exc:
        return exc.code
    summary = [{"stage": m["stage"], "stats": m.get("stats", {})} for m in manifests]
    print(json.dumps({"profile": args.profile, "run_root": str(profile.run_root), "steps": summary},
                     ensure_ascii=False, default=str)[:4000])
    return 0


#: top-level packages of this project (a missing one of these is a bug, not a setup problem)
PROJECT_PACKAGES = ("pipeline", "data_prep", "prompts_cot", "eval")


def missing_dependency(entry: Callable[[], int]) -> int:
    """Run ``entry``; a third-party package that cannot be imported is one ``error:`` line saying how to set up
    (exit 2) instead of a traceback -- the usual cause is the system ``python`` instead of the project's ``.venv``."""
    try:
        return entry()
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] in PROJECT_PACKAGES or "--debug" in sys.argv:
            raise
        print(missing_package_message(exc.name, sys.executable), file=sys.stderr)
        return 2


def console_main() -> int:
    """The ``glm-pipeline`` console script: :func:`main` with the missing-dependency message."""
    return missing_dependency(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:", ", ".join(STAGES))
        print("commands:", ", ".join(["run", *COMMANDS]))
        return 0
    if argv and argv[0] == "run":
        return main_run(argv[1:])
    if argv and argv[0] in COMMANDS:  # serve: looked up by name like the stages (nothing imported before)
        return resolve_command(argv[0])(argv[1:])
    name, rest = split_stage_name(argv)
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {name.replace('.', ' ')}")
    parser.add_argument("--config", help="stage YAML (default: the stage's shipped default)")
    parser.add_argument("--force", action="store_true", help="re-run from scratch even if up to date")
    parser.add_argument("--accept-edited-inputs", action="store_true",
                        help="accept upstream JSONL/CSV files with fewer or more rows than their manifest records")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(flags_to_overrides(rest))
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    stage = resolve_stage(name)
    config_path = args.config or (str(ROOT / stage.default_config) if stage.default_config else None)
    try:
        with user_errors(args.debug):
            cfg = load_config(stage.config_cls, config_path, args.overrides)
            manifest = run_stage(stage, cfg, force=args.force, accept_edits=args.accept_edited_inputs)
    except UserError as exc:
        return exc.code
    summary = {"stage": name, "out_dir": str(cfg.out_dir), "stats": manifest.get("stats", {})}
    print(json.dumps(summary, ensure_ascii=False, default=str)[:4000])
    return 0

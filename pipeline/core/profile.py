"""Run profiles: one YAML file per run naming its stages, their configs and a run root.

    python -m pipeline run demo                       # pipeline/profiles/demo.yaml
    python -m pipeline run demo --steps train,evaluate train.optim.max_steps=12

A profile is the pipeline's stage graph made explicit::

    run_root: runs/demo
    steps:
      - {name: data_prep, config: data_prep/configs/demo.yaml}
      - {name: prompts,   config: prompts_cot/configs/demo.yaml, inputs: {data_dir: data_prep}}
      - {name: train,     config: pipeline/configs/train_demo.yaml, inputs: {prompts_dir: prompts}}
      - {name: evaluate,  config: eval/configs/demo.yaml,
         inputs: {data_dir: data_prep, prompts_dir: prompts, train_dir: train}}

Each step runs stage ``stage`` (default: its ``name``) with its YAML config plus derived overrides:
``out_dir = <run_root>/<name>`` and, for every ``inputs`` entry ``key: step[/sub/path]``,
``key = <run_root>/<step>[/sub/path]`` -- so every input points at an upstream step's output.
Input keys follow one convention in every stage config: ``data_dir`` (data_prep output),
``prompts_dir`` (prompts output), ``train_dir`` (train output). Steps run in file order; each one
is skipped when up to date (the stage contract).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, load_config, parse_override
from pipeline.core.registry import STAGES, resolve_stage
from pipeline.core.stage import run_stage

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = ROOT / "pipeline" / "profiles"


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage run of a profile."""

    # step name: its output folder under run_root, and what later steps' inputs refer to
    name: str
    # the stage's YAML config (relative paths: to the repository root)
    config: Path
    # registered stage name (python -m pipeline --help lists them); null = the step name
    stage: str | None = None
    # config key -> upstream step name, optionally followed by /sub/path (e.g. train/best)
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    # extra key=value overrides for this step
    overrides: tuple[str, ...] = ()

    @property
    def stage_name(self) -> str:
        """The registered stage this step runs."""
        return self.stage or self.name


@dataclasses.dataclass(frozen=True)
class Profile:
    """A run: where its outputs go and its steps in order."""

    # every step writes <run_root>/<step name>
    run_root: Path
    # the stages to run, upstream first
    steps: tuple[Step, ...]


def profile_path(name_or_path: str | Path) -> Path:
    """A shipped profile name (``demo`` -> ``pipeline/profiles/demo.yaml``) or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return PROFILE_DIR / f"{name_or_path}.yaml"


def check_profile(profile: Profile) -> None:
    """Refuse unknown stages, duplicate step names and inputs that do not point at an earlier step."""
    seen: set[str] = set()
    for i, step in enumerate(profile.steps):
        where = f"steps[{i}] ({step.name})"
        if step.stage_name not in STAGES:
            raise ConfigError(f"{where}: unknown stage {step.stage_name!r}; choose from: {', '.join(STAGES)}")
        if step.name in seen or "/" in step.name:
            raise ConfigError(f"{where}: step names must be unique folder names")
        for key, ref in step.inputs.items():
            upstream = ref.split("/", 1)[0]
            if upstream not in seen:
                raise ConfigError(f"{where}: input {key}: {ref!r} does not name an earlier step ({sorted(seen)})")
        seen.add(step.name)


def load_profile(name_or_path: str | Path, run_root: str | Path | None = None) -> Profile:
    """Load and check a profile (``run_root`` replaces the file's when given)."""
    path = profile_path(name_or_path)
    overrides = [f"run_root={run_root}"] if run_root is not None else []
    profile = load_config(Profile, path, overrides)
    try:
        check_profile(profile)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return profile


def config_file(step: Step) -> Path:
    """The step's YAML: as given when it exists, else relative to the repository root."""
    path = Path(step.config)
    return path if path.exists() or path.is_absolute() else ROOT / path


def step_overrides(profile: Profile, step: Step, extra: list[str] | None = None) -> list[str]:
    """``out_dir``, the wired inputs, the step's own overrides, then ``extra`` (later wins)."""
    root = Path(profile.run_root)
    wired = [f"out_dir={root / step.name}"] + [f"{key}={root / ref}" for key, ref in step.inputs.items()]
    return wired + list(step.overrides) + list(extra or [])


def split_step_overrides(profile: Profile, overrides: list[str]) -> dict[str, list[str]]:
    """``step.key=value`` command-line overrides grouped by step name (``key=value`` for that step)."""
    names = {s.name for s in profile.steps}
    out: dict[str, list[str]] = {name: [] for name in names}
    for text in overrides:
        path, _ = parse_override(text)
        if len(path) < 2 or path[0] not in names:
            raise ConfigError(f"override {text!r} must start with a step name: {', '.join(sorted(names))}")
        out[path[0]].append(text.split(".", 1)[1])
    return out


def step_configs(profile: Profile, overrides: list[str] | None = None) -> list[tuple[Step, Any]]:
    """Every step with its loaded and checked config (stages are imported here), before anything runs."""
    extra = split_step_overrides(profile, overrides or [])
    out = []
    for step in profile.steps:
        stage = resolve_stage(step.stage_name)
        cfg = load_config(stage.config_cls, config_file(step), step_overrides(profile, step, extra[step.name]))
        if stage.check is not None:
            try:
                stage.check(cfg)
            except ValueError as exc:
                raise ConfigError(f"step {step.name}: {exc}") from None
        out.append((step, cfg))
    return out


def step_command(profile: Profile, step: Step, overrides: list[str] | None = None) -> str:
    """The equivalent single-stage command line of a step."""
    extra = split_step_overrides(profile, overrides or [])[step.name]
    words = ["python", "-m", "pipeline", *step.stage_name.split("."), "--config", str(step.config),
             *step_overrides(profile, step, extra)]
    return " ".join(words)


def run_profile(profile: Profile, steps: list[str] | None = None, overrides: list[str] | None = None,
                force: bool = False, accept_edits: bool = False) -> list[dict[str, Any]]:
    """Run the profile's steps in order (``steps``: only these names); return their manifests."""
    unknown = sorted(set(steps or []) - {s.name for s in profile.steps})
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown}; the profile has {[s.name for s in profile.steps]}")
    manifests = []
    start = time.perf_counter()
    for step, cfg in step_configs(profile, overrides):
        if steps and step.name not in steps:
            continue
        log.info("=== step %s (stage %s, %.0fs elapsed)", step.name, step.stage_name, time.perf_counter() - start)
        manifests.append(run_stage(resolve_stage(step.stage_name), cfg, force=force, accept_edits=accept_edits))
    log.info("=== profile done in %.0fs -> %s", time.perf_counter() - start, profile.run_root)
    return manifests


__all__ = ["PROFILE_DIR", "Profile", "Step", "check_profile", "load_profile", "profile_path", "run_profile",
           "split_step_overrides", "step_command", "step_configs", "step_overrides"]

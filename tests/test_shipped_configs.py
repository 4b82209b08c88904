"""Every shipped YAML config loads and validates with the stage its first line names; profiles wire up."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pipeline.core.config import load_config, parse_override
from pipeline.core.profile import PROFILE_DIR, Profile, load_profile, step_configs
from pipeline.core.registry import STAGES, resolve_stage
from pipeline.methods import method_names

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.relative_to(ROOT) for d in ("data_prep", "prompts_cot", "pipeline", "eval")
                 for p in (ROOT / d).rglob("configs/*.yaml"))
PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))

#: spot checks of settings the README quotes
SPOT_CHECKS = {
    "data_prep/configs/paper.yaml": lambda c: c.n_samples == 50688,
    "pipeline/configs/train_paper.yaml": lambda c: (
        c.method.name, c.method.ptuning_v2.pre_seq_len, c.optim.learning_rate, c.data.max_source_len,
        c.data.max_target_len, c.optim.max_steps) == ("ptuning_v2", 128, 0.02, 256, 128, 3000),
    "prompts_cot/configs/demo.yaml": lambda c: c.variants[0].name == "plain" and c.variants[1].cot,
}


def launch_command(path: Path) -> tuple[str, list[str]]:
    """(stage name, remaining words) from the config's first line ``# python -m pipeline <stage> [sub] --config F``."""
    first = (ROOT / path).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# python -m pipeline "), f"{path}: first line must be the command that runs it"
    words = shlex.split(first[len("# python -m pipeline "):])
    name = words[0] if words[0] in STAGES else f"{words[0]}.{words[1]}"
    return name, words


def test_there_are_configs_for_every_stage():
    assert {launch_command(p)[0] for p in CONFIGS} == set(STAGES)


@pytest.mark.parametrize("path", CONFIGS, ids=str)
def test_shipped_config_loads_and_validates(path):
    name, words = launch_command(path)
    assert words[words.index("--config") + 1] == str(path)  # the command names this very file
    stage = resolve_stage(name)
    cfg = load_config(stage.config_cls, ROOT / path)
    if stage.check is not None and name != "data_prep":  # data_prep's check wants the import files to exist
        stage.check(cfg)
    assert SPOT_CHECKS.get(str(path), lambda c: True)(cfg), path
    for key in ("deepspeed_config",):
        value = getattr(getattr(cfg, "engine", None), key, None)
        assert value is None or (ROOT / value).exists()


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_default_config_is_shipped(name):
    stage = resolve_stage(name)
    assert stage.name == name and Path(stage.default_config) in CONFIGS


def missing_methods(profile: Profile) -> dict[str, str]:
    """Step name -> the tuning method its ``method.name=`` override selects, for methods this checkout lacks.

    The methods profiles name every method of the comparison table; a step whose method is not in
    ``pipeline.methods.method_names()`` yet (its branch not merged) cannot load its config.
    """
    out = {}
    for step in profile.steps:
        for text in step.overrides:
            path, value = parse_override(text)
            if path == ["method", "name"] and value not in method_names():
                out[step.name] = value
    return out


def without_missing_methods(profile: Profile) -> Profile:
    """The profile less the steps of missing methods and every step downstream of them."""
    dropped = set(missing_methods(profile))
    kept = []
    for step in profile.steps:
        if step.name in dropped or any(ref.split("/")[0] in dropped for ref in step.inputs.values()):
            dropped.add(step.name)
        else:
            kept.append(step)
    return Profile(profile.run_root, tuple(kept))


@pytest.mark.parametrize("name", PROFILES)
def test_profile_steps_load_with_inputs_wired_to_upstream_outputs(name):
    # steps of methods not merged yet are checked once they exist (test_methods_profiles_name_every_method)
    profile = without_missing_methods(load_profile(name))
    root = Path(profile.run_root)
    outputs: set[Path] = set()
    for step, cfg in step_configs(profile):
        assert Path(cfg.out_dir) == root / step.name
        for key, ref in step.inputs.items():
            value = cfg
            for part in key.split("."):  # dotted keys reach into sections and mappings (reports.<name>)
                value = value[part] if isinstance(value, dict) else getattr(value, part)
            value = Path(value)
            assert value == root / ref and (root / ref.split("/")[0]) in outputs, (step.name, key)
        outputs.add(Path(cfg.out_dir))


@pytest.mark.parametrize("name", ["methods", "methods_tiny", "methods_gpu"])
def test_methods_profiles_train_every_method_on_one_recipe(name):
    profile = load_profile(name)
    trains = [s for s in profile.steps if s.stage_name in ("train", "train_sweep")]
    names = [next((parse_override(o)[1] for o in s.overrides if o.startswith("method.name=")), "ptuning_v2")
             for s in trains]  # without an override: the recipe's own method
    assert names == ["ptuning_v2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora"]
    assert len({str(s.config) for s in trains}) == 1  # same data, steps and batch: only the method differs
    for s in trains:  # an override may set the method, its own section and its learning rate, nothing else
        keys = {".".join(parse_override(o)[0]) for o in s.overrides}
        method = s.name[len("train_"):]
        assert keys <= {"method.name", f"method.{method}", "optim.learning_rate", "sweep.candidates"}, (s.name, keys)
        for o in s.overrides:  # a sweep candidate, too, changes only the method, the cls head and the learning rate
            if o.startswith("sweep.candidates="):
                for cand in parse_override(o)[1]:
                    ckeys = {parse_override(c)[0][0] + "." + parse_override(c)[0][1] for c in cand["overrides"]}
                    assert ckeys <= {f"method.{method}", "method.cls_head", "optim.learning_rate"}, (s.name, cand)
    table = next(s for s in profile.steps if s.stage_name == "method_table")
    assert {f"train_runs.{n}" for n in names} | {f"reports.{n}" for n in names} < set(table.inputs)
    if missing_methods(profile):
        pytest.skip(f"methods not in this checkout yet: {sorted(set(missing_methods(profile).values()))}")

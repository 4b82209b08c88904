"""The stage registry: every stage's name and where it lives, as strings (imported lazily, by name).

The ground floor never imports a stage module statically: :func:`resolve_stage` imports it when
a stage is run, so ``python -m pipeline data_prep`` does not import torch and the import graph
keeps pointing down (tests/test_architecture.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pipeline.core.stage import Stage

#: stage name -> "module:attribute" of its :class:`~pipeline.core.stage.Stage`.
STAGES: dict[str, str] = {
    "data_prep": "data_prep.stage:STAGE",
    "prompts": "prompts_cot.stage:STAGE",
    "train": "pipeline.train:STAGE",
    "train_sweep": "pipeline.train.sweep:STAGE",
    "predict": "pipeline.predict:STAGE",
    "classify": "pipeline.classify:STAGE",
    "export": "pipeline.export:STAGE",
    "evaluate": "eval.stage:STAGE",
    "compare": "eval.compare:STAGE",
    "method_table": "eval.method_table:STAGE",
    "label.select": "pipeline.label.select:STAGE",
    "label.export": "pipeline.label.export:STAGE",
    "label.import": "pipeline.label.importer:STAGE",
    "label.review": "pipeline.label.review:STAGE",
    "label.merge": "pipeline.label.merge:STAGE",
    "label.agreement": "pipeline.label.agreement:STAGE",
}

#: commands that are not stages (no out_dir, no manifest) -> "module:function" taking the remaining argv
COMMANDS: dict[str, str] = {
    "serve": "pipeline.serve:main",
}


def resolve_command(name: str) -> Callable[[list[str]], int]:
    """Import and return the entry function of command ``name`` (``serve``)."""
    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


class UnknownStage(KeyError):
    """A stage name that is not in :data:`STAGES`."""

    def __str__(self) -> str:
        return f"unknown stage {self.args[0]!r}; choose from: {', '.join(STAGES)}"


def stage_module(name: str) -> str:
    """The module that defines stage ``name``."""
    if name not in STAGES:
        raise UnknownStage(name)
    return STAGES[name].split(":")[0]


def resolve_stage(name: str) -> Stage:
    """Import and return the stage registered under ``name``."""
    if name not in STAGES:
        raise UnknownStage(name)
    module, attr = STAGES[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["COMMANDS", "STAGES", "UnknownStage", "resolve_command", "resolve_stage", "stage_module"]

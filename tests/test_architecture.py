"""The floor plan (docs/ARCHITECTURE.md), checked on the import graph read from the source (AST).

Floors, bottom up; a module may import only its own floor or lower ones:

    0 ground floor   pipeline.core.* (config, io, stage, registry, profile, taxonomy, answer), pipeline.cli
    1 methods        pipeline.methods.*  (one folder per tuning method)
    2 model library  pipeline.models.*   (store, chatglm, lm, tokenizer, data, engines, generation, scoring)
    3 domain libs    data_prep.*, prompts_cot.*, eval.*  (everything that is not a stage)
    4 stages         data_prep.stage, prompts_cot.stage, pipeline.train.*, pipeline.predict, pipeline.classify,
                     eval.stage (with eval.config, expand, pet_systems, cache, preflight, answering, provenance),
                     eval.compare, eval.method_table, pipeline.label.*

Plus: no import cycle between modules, and a stage never imports another stage. Every import
counts, also the lazy ones inside functions (the CLI finds stages by name, never by import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "data_prep", "prompts_cot", "eval")
FLOOR_NAMES = ["ground floor", "methods", "model library", "domain libraries", "stages"]
#: stage modules / packages (a package's modules form one stage unit)
STAGE_UNITS = ("data_prep.stage", "prompts_cot.stage", "pipeline.train", "pipeline.predict", "pipeline.classify",
               "pipeline.export",
               "eval.stage", "eval.compare", "eval.method_table", "pipeline.label")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


#: modules that belong to another module's stage unit (serve is the classify stage's HTTP front end; the evaluate
#: stage's jobs live beside eval/stage.py)
UNIT_OF = {"pipeline.serve": "pipeline.classify",
           **{f"eval.{job}": "eval.stage"
              for job in ("config", "expand", "pet_systems", "cache", "preflight", "answering", "provenance")}}


def stage_unit(mod: str) -> str | None:
    if mod in UNIT_OF:
        return UNIT_OF[mod]
    return next((u for u in STAGE_UNITS if mod == u or mod.startswith(u + ".")), None)


def floor(mod: str) -> int:
    if mod in ("pipeline", "pipeline.cli", "pipeline.__main__") or mod.startswith("pipeline.core"):
        return 0
    if mod.startswith("pipeline.methods"):
        return 1
    if mod.startswith("pipeline.models"):
        return 2
    if stage_unit(mod) is not None:
        return 4
    if mod.split(".")[0] in ("data_prep", "prompts_cot", "eval"):
        return 3
    raise AssertionError(f"module {mod} has no floor: add it to tests/test_architecture.py and docs/ARCHITECTURE.md")


def imports_of(mod: str) -> set[str]:
    """Project modules ``mod`` imports (``from pkg import submodule`` counts as the submodule)."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    package = mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # import a.b.c where c is a function: the module a.b
                name = name.rpartition(".")[0]
            if name and name != mod:
                found.add(name)
    return found


GRAPH = {mod: imports_of(mod) for mod in MODULES}


def test_every_module_has_a_floor():
    for mod in MODULES:
        floor(mod)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_import_runs_up_a_floor(mod):
    up = [f"{dep} ({FLOOR_NAMES[floor(dep)]})" for dep in sorted(GRAPH[mod]) if floor(dep) > floor(mod)]
    assert not up, f"{mod} ({FLOOR_NAMES[floor(mod)]}) imports from a higher floor: {', '.join(up)}"


def test_stages_do_not_import_other_stages():
    bad = [(mod, dep) for mod, deps in GRAPH.items() for dep in deps
           if stage_unit(mod) and stage_unit(dep) and stage_unit(mod) != stage_unit(dep)]
    assert not bad, bad


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(GRAPH[mod]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[mod] = 2

    for mod in sorted(GRAPH):
        if mod not in state:
            visit(mod)


def test_the_checker_sees_lazy_imports_and_from_imports():
    """Guard the checker itself: a known lazy import and a known from-import are edges."""
    assert "pipeline.models.tokenizer" in GRAPH["prompts_cot.stage"]  # imported inside run()
    assert "pipeline.train.checkpoint" in GRAPH["pipeline.train.recipe"]  # from pipeline.train import checkpoint


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_the_documented_code_map_names_every_package(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    folders = sorted({str(p.parent.relative_to(ROOT)) + "/" for p in MODULES.values()})
    missing = [f for f in folders if f not in text]
    assert not missing, f"{doc} does not mention {missing}"


def test_every_code_folder_is_a_regular_package():
    """A folder without __init__.py would import as a namespace package but never be installed."""
    folders = {p.parent for p in MODULES.values()}
    assert not [str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()]


def test_test_modules_do_not_import_each_other():
    """Shared fixtures live in tests/conftest.py and shared helpers in helper modules (not ``test_*.py``):
    a test module importing another would run the other's module-level code and hide where a helper lives."""
    tests = ROOT / "tests"
    bad = set()
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                leaf = name.removeprefix("tests.").split(".")[0]
                if leaf == "conftest" or leaf.startswith("test_") and (tests / f"{leaf}.py").exists():
                    bad.add(f"{path.name} imports {leaf}")
    assert not bad, sorted(bad)

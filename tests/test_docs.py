"""The documentation stays true: links resolve, named paths exist, the commands it shows would run.

README.md is the front page and docs/*.md the manual. Checked here: every relative link (and its
``#anchor``) resolves; every repository path written in backticks exists; every ``python -m pipeline``
command names a real stage or run profile, an existing ``--config`` file and overrides that the real
config loader accepts; the front page stays short; and the README's tiny-profile commands run from a
shell the way a user types them after ``make demo`` (activate the venv, then ``python -m pipeline``).
"""

from __future__ import annotations

import ast
import glob
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.profile import PROFILE_DIR, load_profile, step_configs
from pipeline.core.registry import COMMANDS, STAGES, resolve_stage

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]
#: pages other branches add in parallel; a link to one of them is skipped while the file is absent
PENDING_PAGES = {"robustness.md", "cot.md", "chatglm.md", "reliability.md", "ecosystem.md"}
#: a backticked word starting with one of these is a repository path
REPO_DIRS = ("pipeline/", "data_prep/", "prompts_cot/", "eval/", "scripts/", "tests/", "docs/")
PROFILES = {p.stem for p in PROFILE_DIR.glob("*.yaml")}
FRONT_PAGE_MAX_LINES = 260

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def prose(text: str) -> str:
    """The page without its fenced blocks (links and code spans live in the prose)."""
    return FENCE.sub("", text)


def fenced_lines(text: str) -> list[str]:
    """Every line of every fenced block, with backslash continuations joined."""
    out: list[str] = []
    for block in FENCE.findall(text):
        pending = ""
        for line in block.splitlines()[1:-1]:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append(pending + line)
            pending = ""
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings (repeats get -1, -2, ... like GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def path_words(span: str) -> list[str]:
    """The words of a code span that name a repository path (``key=path`` gives its path)."""
    out = []
    for word in span.split():
        word = word.split("=")[-1].strip("()[],;:'\"").split(":")[0]  # module.py:ATTR names module.py
        word = word[2:] if word.startswith("./") else word
        if word.startswith(REPO_DIRS) and "$" not in word:
            out.append(word)
    return out


def expand_braces(word: str) -> list[str]:
    """``a_{x,y}.py`` -> ``[a_x.py, a_y.py]`` (one level, as the docs use it)."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not m:
        return [word]
    return [w for part in m.group(1).split(",") for w in expand_braces(word[:m.start()] + part + word[m.end():])]


def path_exists(word: str) -> bool:
    """A literal path exists, a glob (``*``, ``<placeholder>``) matches, or an output stem has files."""
    for one in expand_braces(word):
        pattern = re.sub(r"<[^>]*>", "*", one).rstrip("/")
        if not (glob.glob(str(ROOT / pattern)) or glob.glob(str(ROOT / pattern) + ".*")):
            return False
    return True


# --------------------------------------------------------------------------------------------- (a)
@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page):
    bad = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            if dest.parent == ROOT / "docs" and dest.name in PENDING_PAGES:
                continue  # added by another branch; checked once it exists
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: {bad}"


# --------------------------------------------------------------------------------------------- (b)
@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_backticked_repository_path_exists(page):
    text = prose(page.read_text(encoding="utf-8"))
    words = [w for span in CODE_SPAN.findall(text) for w in path_words(span)]
    words += [w for line in fenced_lines(page.read_text(encoding="utf-8")) if "pipeline" in line or "scripts/" in line
              for w in path_words(line.split(" #")[0])]
    missing = sorted({w for w in words if not path_exists(w)})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_path_checker_itself():
    assert path_words("python -m pipeline x --config eval/configs/demo.yaml out_dir=runs/x") == ["eval/configs/demo.yaml"]
    assert path_exists("tests/test_label_{select,merge}.py") and not path_exists("tests/test_label_{select,nope}.py")
    assert path_exists("pipeline/configs/models/tiny-<name>.json") and path_exists("docs/results/learning_curve")
    assert not path_exists("pipeline/no_such_module.py")


# --------------------------------------------------------------------------------------------- (c)
def pipeline_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(line, words after ``python -m pipeline`` / ``glm-pipeline``) of every command the page shows."""
    text = page.read_text(encoding="utf-8")
    lines = fenced_lines(text) + [s for s in CODE_SPAN.findall(prose(text))
                                  if s.startswith(("python -m pipeline ", "glm-pipeline "))]
    out = []
    for line in lines:
        if "<stage>" in line or "<profile>" in line:
            continue  # the synopsis, not a command
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            if words[i:i + 3] == ["python", "-m", "pipeline"]:
                out.append((line, words[i + 3:]))
                break
            if word == "glm-pipeline" or word.endswith("/glm-pipeline"):
                out.append((line, words[i + 1:]))
                break
    return out


def split_arguments(words: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """Options (``--config F``, ``--force``) and ``key=value`` overrides; ``[...]`` and ``...`` dropped."""
    options: dict[str, str | bool] = {}
    overrides = []
    takes_value = {"--config", "--steps", "--run-root", "--log-level"}
    it = iter(words)
    for word in it:
        if word.startswith("[") and word.count("[") > word.count("]"):
            word = word[1:]
        if word.endswith("]") and word.count("]") > word.count("["):
            word = word[:-1]
        if not word or word.strip(".…") == "":
            continue
        if word.startswith("--"):
            options[word] = next(it) if word in takes_value else True
        elif "=" in word:
            overrides.append(word)
    return options, overrides


def check_command(words: list[str]) -> None:
    """Raise if the command names an unknown stage/profile/file or an override its config refuses."""
    if not words or words[0].startswith("-") or words[0].strip(".…") == "":
        return
    if words[0] == "run":
        profile_name, rest = words[1], words[2:]
        assert profile_name in PROFILES or (ROOT / profile_name).exists(), f"unknown profile {profile_name!r}"
        options, overrides = split_arguments(rest)
        profile = load_profile(profile_name)
        names = {s.name for s in profile.steps}
        steps = str(options.get("--steps", "")).split(",") if options.get("--steps") else []
        assert set(steps) <= names, f"--steps {steps} not in profile {profile_name}: {sorted(names)}"
        step_configs(profile, overrides)
        return
    name, rest = words[0], words[1:]
    if name == "label":
        name, rest = f"label.{rest[0]}", rest[1:]
    if name in COMMANDS:  # a command that is not a stage (serve): its name is real, its flags are its own
        return
    assert name in STAGES, f"unknown stage {name!r}"
    options, overrides = split_arguments(rest)
    config = options.get("--config")
    if config:
        assert (ROOT / str(config)).exists(), f"--config {config} does not exist"
    stage = resolve_stage(name)
    load_config(stage.config_cls, ROOT / str(config or stage.default_config), overrides)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_pipeline_command_names_real_stages_files_and_keys(page):
    bad = []
    for line, words in pipeline_commands(page):
        try:
            check_command(words)
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its line
            bad.append(f"{line.strip()!r}: {type(exc).__name__}: {exc}")
    for line in fenced_lines(page.read_text(encoding="utf-8")):
        m = re.search(r"scripts/run_all\.sh (\S+)", line)
        if m and m.group(1) not in PROFILES:
            bad.append(f"{line.strip()!r}: unknown profile {m.group(1)!r}")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_the_command_checker_refuses_what_the_cli_would():
    check_command(["train", "--config", "pipeline/configs/train_demo.yaml", "optim.max_steps=12"])
    check_command(["run", "demo", "--steps", "train,evaluate", "train.optim.max_steps=12"])
    for words in (["trian"], ["run", "no_such_profile"], ["train", "--config", "pipeline/configs/nope.yaml"],
                  ["train", "optim.max_stepz=3"], ["run", "tiny", "nostep.limit=3"],
                  ["run", "tiny", "--steps", "train,nope"]):
        with pytest.raises(Exception):
            check_command(words)


def test_the_readme_shows_commands_that_are_checked():
    commands = [" ".join(w[:2]) for _, w in pipeline_commands(README)]
    assert "run tiny" in commands and "run demo" in commands


def python_examples(page: Path) -> list[str]:
    """The page's ```python blocks."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)


def check_python_example(code: str) -> None:
    """Raise if the example imports a name that does not exist or passes a keyword its callee lacks."""
    tree = ast.parse(code)
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            params = inspect.signature(names[node.func.id]).parameters
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                continue
            unknown = [k.arg for k in node.keywords if k.arg and k.arg not in params]
            assert not unknown, f"{node.func.id}() takes no keyword {unknown}"


#: pages whose ```python blocks are interface sketches (signatures without bodies), not runnable examples
SKETCH_PAGES = {"CONTRACT.md"}


@pytest.mark.parametrize("page", [p for p in PAGES if python_examples(p) and p.name not in SKETCH_PAGES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_use_real_names_and_keywords(page):
    for code in python_examples(page):
        check_python_example(code)


def test_the_python_example_checker_refuses_renames():
    check_python_example("from pipeline.models.lm import load_model\nload_model('x', checkpoint='d')")
    with pytest.raises(AssertionError):
        check_python_example("from pipeline.models.lm import no_such_name")
    with pytest.raises(AssertionError):
        check_python_example("from pipeline.models.lm import load_model\nload_model('x', no_such_kw=1)")


# --------------------------------------------------------------------------------------------- (d)
def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= FRONT_PAGE_MAX_LINES, f"README.md has {len(lines)} lines; move the manual to docs/"
    for needed in ("make demo", "make test", "source .venv/bin/activate", "glm-pipeline"):
        assert needed in "\n".join(lines), needed


# --------------------------------------------------------------------------------------------- (e)
def readme_tiny_script(bin_dir: Path, run_root: Path, dry_run: bool = False) -> str:
    """The README's environment line and tiny-profile commands as one bash script, for this interpreter.

    ``dry_run`` appends ``--dry-run`` to each command: the shell, the interpreter, the CLI and the profile
    are all exercised, nothing is trained.
    """
    picked = []
    for line in fenced_lines(README.read_text(encoding="utf-8")):
        command = line.split(" #")[0].strip()
        if command.startswith("source .venv/bin/activate") or (
                "tiny" in command.split() and ("python -m pipeline" in command or "glm-pipeline" in command)):
            picked.append(command + (" --dry-run" if dry_run and not command.startswith("source") else ""))
    assert picked and picked[0].startswith("source"), "the README must show how to enter the environment first"
    script = "set -e\n" + "\n".join(picked) + "\n"
    script = script.replace(".venv/bin/", f"{bin_dir}/").replace("/tmp/tiny", str(run_root))
    if not (bin_dir / "activate").exists():  # not a venv (e.g. conda): what activating does, by hand
        script = script.replace(f"source {bin_dir}/activate", f'export PATH="{bin_dir}:$PATH"')
    return script


def run_readme_tiny_commands(tmp_path: Path, dry_run: bool) -> subprocess.CompletedProcess:
    """Run the README's tiny commands in ``bash`` from a fresh PATH, in the repository root, as typed."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "glm-pipeline").exists():
        pytest.skip(f"no glm-pipeline console script in {bin_dir}: the project is not installed here")
    script = readme_tiny_script(bin_dir, tmp_path / "tiny", dry_run)
    assert "run tiny" in script and "glm-pipeline" in script
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: nothing of the project on PATH yet
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code (the venv may hold an editable install of another)
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{script}\n--- stderr ---\n{done.stderr[-4000:]}"
    return done


def test_the_readme_tiny_commands_start_from_a_shell_as_typed(tmp_path):
    """Fast: activate, then each README tiny command with --dry-run (its stage commands are printed)."""
    done = run_readme_tiny_commands(tmp_path, dry_run=True)
    assert "python -m pipeline train --config pipeline/configs/train_tiny.yaml" in done.stdout
    assert not (tmp_path / "tiny").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_the_readme_tiny_commands_run_from_a_shell_as_typed(tmp_path):
    """The whole tiny profile as the README shows it (about 25 s on an idle 2-core box, minutes under load)."""
    run_readme_tiny_commands(tmp_path, dry_run=False)
    assert (tmp_path / "tiny" / "evaluate" / "report.html").is_file()
    assert (tmp_path / "tiny" / "evaluate" / "manifest.json").is_file()

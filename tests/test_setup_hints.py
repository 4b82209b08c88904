"""The wrong interpreter gets a way in, not a traceback: scripts pick the project's .venv, the CLI names `make setup`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in a process where ``module`` cannot be imported (as on a system python)."""
    code = (f"import sys, runpy; sys.modules[{module!r}] = None; sys.argv = ['pipeline', *{list(args)!r}]; "
            "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_missing_dependency_names_make_setup_instead_of_a_traceback(tmp_path):
    for module, args in [("yaml", ["data_prep"]),  # needed by the CLI itself
                         ("tqdm", ["data_prep", f"out_dir={tmp_path / 'x'}"])]:  # needed when the stage is loaded
        done = run_cli_without(module, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"the Python package '{module}' is missing" in done.stderr
        assert "make setup" in done.stderr and "source .venv/bin/activate" in done.stderr
    assert not (tmp_path / "x").exists()


def test_a_missing_project_module_is_still_a_bug_with_its_traceback():
    done = run_cli_without("data_prep.features", "data_prep")
    assert done.returncode == 1 and "Traceback" in done.stderr and "make setup" not in done.stderr


def source_project_python(root: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "source scripts/project_python.sh && echo \"PY=$PY\""], cwd=root,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp")})


def test_scripts_use_the_project_venv_or_say_make_setup(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "project_python.sh", tmp_path / "scripts")
    fake = tmp_path / "bin"  # a `python` on PATH without the project's dependencies
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\nexit 1\n")
    (fake / "python").chmod(0o755)
    path = f"{fake}:/usr/bin:/bin"
    done = source_project_python(tmp_path, path)
    assert done.returncode == 2 and "make setup" in done.stderr and "source .venv/bin/activate" in done.stderr
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("#!/bin/sh\nexit 0\n")
    venv_python.chmod(0o755)
    done = source_project_python(tmp_path, path)
    assert done.returncode == 0 and done.stdout.strip() == f"PY={venv_python}"


def test_every_stage_script_uses_the_project_interpreter():
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        if script.name == "project_python.sh":
            continue
        text = script.read_text()
        assert "source scripts/project_python.sh" in text, script
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        assert not [ln for ln in lines if ln.lstrip().startswith(("python ", "exec python"))], script

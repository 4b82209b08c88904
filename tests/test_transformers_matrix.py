"""Slow: the transformers-touching tests against the oldest allowed and the newest 5.x transformers (own venvs).

Runs ``scripts/transformers_matrix.sh`` (needs the registry for the ~13 MB wheel per version, once; the venvs are
kept under ``.cache/transformers-matrix``). ``pytest -m slow tests/test_transformers_matrix.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_oldest_allowed_and_newest_transformers_pass_the_api_tests():
    done = subprocess.run(["bash", "scripts/transformers_matrix.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.count("passed") >= 2

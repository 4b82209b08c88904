"""Fixtures shared by the test modules (pytest finds them here; no test module imports another).

Plain helper functions live in helper modules beside the tests, imported by name (``tests/`` is on the
path): ``record_fixtures`` (CONTRACT-shaped records and prompt rows), ``train_helpers`` (tiny prompt rows,
the tiny train config, the train CLI), ``lm_helpers`` (tiny random models and inputs), ``label_helpers`` and
``label_studio_checks`` (the labelling loop), ``lookalikes`` (oracle look-alike tracks).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one CPU thread (small models run faster so, and timings do not depend on the box).

    A module uses it for every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    """The tiny:llama tokenizer (a module may override ``tok`` with another model's, e.g. test_data_collate)."""
    from pipeline.models.store import resolve_model_dir
    from pipeline.models.tokenizer import load_tokenizer

    return load_tokenizer(resolve_model_dir("tiny:llama"))


@pytest.fixture
def load_script():
    """``load_script("name")``: ``scripts/name.py`` loaded as a module (scripts/ is not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

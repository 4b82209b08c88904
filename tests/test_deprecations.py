"""No deprecated API in a run or an install: deprecation warnings of transformers, torch and setuptools are errors.

* a text-init train on tiny:llama (P-Tuning v2 ``init: text`` reads the model's own cache, the path that printed
  ``past_key_values/cache_params are deprecated. Use cache instead`` on every demo run) with dev checks in both
  modes, then the loaded checkpoint generating: no DeprecationWarning / FutureWarning raised from transformers,
  torch or this project's code, and no deprecation message on the transformers logger;
* the package metadata build (what ``pip install -e .`` runs) raises no SetuptoolsDeprecationWarning.

pytest's own config no longer ignores DeprecationWarning (pyproject.toml), so every test sees them too.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from train_helpers import tiny_cfg, write_prompts

from pipeline.models.lm import load_model
from pipeline.train import run_train

ROOT = Path(__file__).resolve().parent.parent
#: where a deprecation may come from and count as ours to fix: the libraries named by the brief, and this project
WATCHED = ("/transformers/", "/torch/", "/setuptools/", str(ROOT) + "/")
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class LogRecords(logging.Handler):
    """Collects the records of a logger (transformers reports some deprecations through logging only)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def offending(caught: list[warnings.WarningMessage]) -> list[str]:
    """The deprecation warnings raised from a watched place, as ``file:line: message``."""
    return [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, DEPRECATIONS) and any(part in w.filename for part in WATCHED)]


def test_a_text_init_train_and_generation_use_no_deprecated_api(tmp_path):
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    prompts = write_prompts(tmp_path / "p")
    cfg = tiny_cfg(tmp_path, prompts, **{"method.ptuning_v2.init": "text", "method.ptuning_v2.pre_seq_len": 6,
                                         "method.ptuning_v2.init_text": "'classify the intent of the target'",
                                         "optim.max_steps": 2, "eval.steps": 2, "eval.mode": "generate",
                                         "checkpoint.save_steps": 0})
    logging.Logger.warning_once.cache_clear()  # a message warned once earlier in this process would be hidden
    handler = LogRecords()
    hf_root = hf_logging.get_logger()
    hf_root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_train(cfg)
            lm, tok = load_model("tiny:llama", checkpoint=Path(cfg.out_dir) / "final")
            from pipeline.models.generation import generate

            assert len(generate(lm, tok, ["What is the target doing?"], max_new_tokens=3, batch_size=1)) == 1
    finally:
        hf_root.removeHandler(handler)
    assert not offending(caught), "\n".join(offending(caught))
    deprecated = [m for m in handler.messages if "deprecat" in m.lower()]
    assert not deprecated, deprecated


def build_metadata(tmp_path: Path, pyproject: str) -> subprocess.CompletedProcess:
    """Run setuptools' metadata build (what ``pip install -e .`` runs) on ``pyproject`` with deprecations as errors."""
    src, meta = tmp_path / "src", tmp_path / "meta"
    meta.mkdir()
    for pkg in ("pipeline", "data_prep", "prompts_cot", "eval"):
        (src / pkg).mkdir(parents=True)
        (src / pkg / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text(pyproject)
    shutil.copy(ROOT / "README.md", src / "README.md")
    script = ("import sys, warnings\n"
              "from setuptools.warnings import SetuptoolsDeprecationWarning\n"
              "warnings.simplefilter('error', SetuptoolsDeprecationWarning)\n"
              "warnings.simplefilter('error', DeprecationWarning)\n"
              "from setuptools import build_meta\n"
              "build_meta.prepare_metadata_for_build_wheel(sys.argv[1])\n")
    return subprocess.run([sys.executable, "-c", script, str(meta)], cwd=src, capture_output=True, text=True,
                          timeout=300)


def test_the_package_metadata_builds_without_setuptools_deprecations(tmp_path):
    done = build_metadata(tmp_path, (ROOT / "pyproject.toml").read_text())
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = next((tmp_path / "meta").glob("*.dist-info")) / "METADATA"
    assert "License-Expression: Apache-2.0" in metadata.read_text()


def test_the_metadata_check_catches_a_license_table(tmp_path):
    """Guard the check itself: the old TOML-table form warns, so the test above can fail."""
    old = (ROOT / "pyproject.toml").read_text().replace('license = "Apache-2.0"', 'license = { text = "Apache-2.0" }')
    done = build_metadata(tmp_path, old)
    assert done.returncode != 0 and "license" in done.stderr.lower()

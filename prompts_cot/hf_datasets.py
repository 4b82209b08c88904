"""Records and prompt splits as a Hugging Face ``datasets.DatasetDict`` (local JSON lines, nothing downloaded).

    from prompts_cot.hf_datasets import records_dataset, prompts_dataset
    records = records_dataset("runs/demo/data_prep")            # DatasetDict train / dev / test
    prompts = prompts_dataset("runs/demo/prompts", "plain")     # columns sample_id, prompt, response, label, ...

Both are ``datasets.load_dataset("json", data_files={split: path})`` on the stage outputs (docs/CONTRACT.md), so the
same one-liner works without this module. Writing a split back (``ds["train"].to_json(path, force_ascii=False)``)
into ``<prompts_dir>/<variant>/<split>.jsonl`` gives a folder the train and evaluate stages read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.io import DataError

SPLITS = ("train", "dev", "test")


def split_files(folder: str | Path) -> dict[str, str]:
    """``{split: path}`` of the ``<split>.jsonl`` files present in ``folder`` (DataError when there is none)."""
    folder = Path(folder)
    files = {s: str(folder / f"{s}.jsonl") for s in SPLITS if (folder / f"{s}.jsonl").is_file()}
    if not files:
        raise DataError(folder, None, None, f"no {'/'.join(SPLITS)}.jsonl split files here")
    return files


def json_splits(folder: str | Path) -> Any:
    """A ``DatasetDict`` of the folder's split files (``datasets``' JSON builder; cached under HF_DATASETS_CACHE)."""
    from datasets import load_dataset

    return load_dataset("json", data_files=split_files(folder))


def records_dataset(data_dir: str | Path) -> Any:
    """The data_prep stage's records ``<data_dir>/{train,dev,test}.jsonl`` as a ``DatasetDict``."""
    return json_splits(data_dir)


def prompts_dataset(prompts_dir: str | Path, variant: str = "plain") -> Any:
    """The prompts stage's rows of one variant ``<prompts_dir>/<variant>/<split>.jsonl`` as a ``DatasetDict``."""
    return json_splits(Path(prompts_dir) / variant)


__all__ = ["SPLITS", "json_splits", "prompts_dataset", "records_dataset", "split_files"]

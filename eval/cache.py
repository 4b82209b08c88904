"""The ``evaluate`` stage's resume cache: fingerprints, cache keys and the append-only answer file.

Every model answer is appended to ``out_dir/.partial/rows.jsonl`` as it is produced, keyed by everything that
can change it (:func:`row_key`): the system's fingerprint (:func:`model_fingerprint`: spec, a local model's
config, every checkpoint file's sha256; a PET system's pattern, k and examples), dtype, variant, mode,
perturbation, severity, seed, sample_id, the prompt's hash and the decoding budget. Only the answer is cached
(:func:`cached_answer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from eval.config import EvalConfig, ModelEntry, prefix_dir
from eval.expand import Example
from eval.pet_systems import System
from pipeline.core.io import fault_point, sha256_file
from pipeline.core.stage import expand_files

log = logging.getLogger(__name__)

#: the resume cache, relative to the stage's committed out_dir (it outlives a failed run)
PARTIAL = ".partial/rows.jsonl"

#: version of the cache key layout (a new layout never matches an old line)
CACHE_VERSION = "v3"  # v3: generation stops at the end of the answer line


def model_fingerprint(entry: ModelEntry, prefix: Path | None, extra: str = "") -> str:
    """Short hash of the model spec, a local model's config, the checkpoint files (a retrained prefix is new)
    and ``extra`` (a PET system's pattern, k and in-context examples)."""
    h = hashlib.sha256(entry.spec.encode())
    local_config = Path(entry.spec).expanduser() / "config.json"
    if local_config.is_file():
        h.update(sha256_file(local_config).encode())
    if prefix is not None:
        for f in expand_files([prefix]):
            h.update(str(f.relative_to(prefix)).encode())
            h.update(sha256_file(f).encode())
    if extra:
        h.update(extra.encode())
    return h.hexdigest()[:16]


def system_fingerprint(cfg: EvalConfig, system: System) -> str:
    """:func:`model_fingerprint` of a system (PET systems add their pattern, k and examples)."""
    facts = system.pet_facts()
    extra = json.dumps(facts, sort_keys=True) if facts is not None else ""
    return model_fingerprint(system.entry, prefix_dir(cfg, system.entry), extra)


def row_key(fingerprint: str, dtype: str, mode: str, ex: Example, budget: int) -> str:
    """Cache key of one model answer: everything that can change it (not the gold labels, which it does not see)."""
    prompt_hash = hashlib.sha256(ex.prompt.encode()).hexdigest()[:16]
    budget_part = str(budget) if mode == "generate" else "-"
    return "|".join([CACHE_VERSION, fingerprint, dtype, ex.variant, mode, ex.perturbation, str(ex.severity),
                     str(ex.seed), ex.sample_id, prompt_hash, budget_part])


class PartialCache:
    """Append-only JSONL of model answers (``{"key", "answer"}``); survives interruption (a torn last line is ignored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.answers: dict[str, dict[str, Any]] = {}
        # a crash can leave a torn last line without "\n"; the next append must start on a fresh line
        self._needs_newline = self.path.exists() and self.path.stat().st_size > 0 and \
            self.path.read_bytes()[-1:] != b"\n"
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        log.warning("ignoring a torn line in %s", self.path)
                        continue
                    if isinstance(obj, dict) and isinstance(obj.get("answer"), dict) and isinstance(obj.get("key"), str):
                        self.answers[obj["key"]] = obj["answer"]

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def add(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Append answers and flush them to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if self._needs_newline:
                fh.write("\n")
                self._needs_newline = False
            for key, answer in items:
                fh.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
                self.answers[key] = answer
            fh.flush()
        fault_point("evaluate.chunk")


def cached_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The part of a model answer worth caching (output, parsed labels, label probabilities, latency, new tokens)."""
    keep = {k: answer[k] for k in ("output", "parsed", "probs", "new_tokens") if k in answer}
    keep["latency_s"] = round(float(answer.get("latency_s") or 0.0), 5)
    return keep

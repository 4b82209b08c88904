"""In-context examples for k-shot PET: chosen deterministically per seed, class-balanced when possible.

The pool is a labelled split (the prompts stage's train rows). For each language separately,
the motion classes (the finest level, 8 classes) are visited round-robin in an order fixed by the
seed, and each class gives its next example in an order fixed by the seed, so ``k <= 8`` examples
cover ``k`` distinct motion classes whenever the pool has them. Rows whose sample id is in
``exclude`` (the rows being scored) are never chosen; rows without a label at every level are
skipped (their filled reply would have a blank).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from pipeline.core.taxonomy import LEVELS


@dataclasses.dataclass(frozen=True)
class Demo:
    """One labelled pool row."""

    sample_id: str
    # the rendered prompt text (what the prompts stage wrote)
    text: str
    # level -> canonical label (every level set)
    labels: Mapping[str, str]
    # en | zh
    lang: str


def _rank(seed: int, key: str) -> str:
    """A seed-dependent, platform-independent sort key."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def select_demos(pool: Iterable[Demo], k: int, seed: int, exclude: Iterable[str] = ()) -> list[Demo]:
    """``k`` examples of one language's pool (fewer if the pool is smaller), balanced over motion classes."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    banned = set(exclude)
    by_class: dict[str, list[Demo]] = defaultdict(list)
    for d in pool:
        if d.sample_id in banned or any(d.labels.get(lvl) is None for lvl in LEVELS):
            continue
        by_class[d.labels["motion"]].append(d)
    queues = {c: sorted(ds, key=lambda d: _rank(seed, d.sample_id)) for c, ds in by_class.items()}
    order = sorted(queues, key=lambda c: _rank(seed, c))
    chosen: list[Demo] = []
    depth = 0
    while len(chosen) < k and any(depth < len(queues[c]) for c in order):
        for c in order:
            if len(chosen) < k and depth < len(queues[c]):
                chosen.append(queues[c][depth])
        depth += 1
    return chosen


def select_demos_by_lang(pool: Sequence[Demo], k: int, seed: int, langs: Iterable[str],
                         exclude: Iterable[str] = ()) -> dict[str, list[Demo]]:
    """For each language in ``langs``: :func:`select_demos` over the pool rows of that language."""
    banned = set(exclude)
    return {lang: select_demos([d for d in pool if d.lang == lang], k, seed, banned) for lang in sorted(set(langs))}


def demo_from_row(row: Mapping[str, object]) -> Demo | None:
    """A pool entry from a prompts-stage row (``sample_id``, ``prompt``, ``label``, ``lang``); None if unlabelled."""
    label = row.get("label")
    if not isinstance(label, Mapping) or any(label.get(lvl) is None for lvl in LEVELS):
        return None
    return Demo(str(row["sample_id"]), str(row["prompt"]), {lvl: str(label[lvl]) for lvl in LEVELS},
                str(row.get("lang") or "en"))


__all__ = ["Demo", "demo_from_row", "select_demos", "select_demos_by_lang"]

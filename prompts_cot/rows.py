"""The prompts stage's output rows (docs/CONTRACT.md): the ONE reader every consumer uses.

Train needs ``prompt`` and ``response``; predict and evaluate need ``sample_id`` and ``prompt``.
Every problem is a :class:`~pipeline.core.io.DataError` naming file, line and field.
:func:`training_prompts` sums up how a set of rows was rendered (the train stage stores it in its
checkpoints, so new records can be rendered exactly like the training prompts).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.io import DataError, read_jsonl

LANGS = ("en", "zh")


def read_prompt_rows(path: Path, required: Sequence[str] = ("sample_id", "prompt"), limit: int | None = None,
                     allow_empty: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` of the first ``limit`` rows of a prompts-stage JSONL file.

    Every field in ``required`` must be a non-empty string and ``lang`` (when present) en or zh;
    a row without ``sample_id`` gets ``<file stem>-<line>``. ``allow_empty=False``: no rows is an error.
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, row in read_jsonl(path):
        for field in required:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise DataError(path, lineno, field, "missing or not a non-empty string")
        if row.get("lang", "en") not in LANGS:
            raise DataError(path, lineno, "lang", f"{row.get('lang')!r} is not en|zh")
        row.setdefault("sample_id", f"{Path(path).stem}-{lineno}")
        rows.append((lineno, row))
        if limit is not None and len(rows) >= limit:
            break
    if not rows and not allow_empty:
        raise DataError(path, None, None, "no rows")
    return rows


def training_prompts(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How ``rows`` (prompts-stage rows a model trains on) were rendered, or None without ``render`` dicts.

    Returns ``{"render": <options dict>, "langs": {lang: rows}, "cot": bool, "rows": n}`` (plus ``variation``:
    ``{"rows", "seeds", "families": {family: rows}}`` when rows were rendered under training-time variation, and ``counterfactual``:
    ``{"rows", "flipped", "seeds"}`` for counterfactual twins): ``render`` is the
    :func:`prompts_cot.render.options_to_dict` dict most rows share, counted over the rows the prompts stage
    did not truncate (a variant renders every row with the same options except the per-row language, so
    this is the variant's options in its most frequent language); ``cot`` is True when responses carry a
    rationale before the answer line. Re-rendering a record with ``options_from_dict(render)`` gives
    exactly the prompt the prompts stage wrote for it (in that language).
    """
    rendered = [r for r in rows if isinstance(r.get("render"), dict)]
    if not rendered:
        return None
    # varied rows (training-time variation) do not re-render from their options alone: canonical rows decide
    pool = [r for r in rendered if not r.get("truncated") and not r.get("variation")] or rendered
    counts = Counter(json.dumps(r["render"], sort_keys=True) for r in pool)
    canonical = json.loads(counts.most_common(1)[0][0])
    langs = Counter(str(r.get("lang") or r["render"].get("lang", "en")) for r in rendered)
    cot = any(len(str(r.get("response", "")).strip().splitlines()) > 1 for r in rendered)
    out = {"render": canonical, "langs": dict(sorted(langs.items())), "cot": cot, "rows": len(rows)}
    varied = [r["variation"] for r in rows if isinstance(r.get("variation"), dict)]
    if varied:
        families = Counter(str(step[0]) for v in varied for step in v.get("steps", []))
        out["variation"] = {"rows": len(varied), "seeds": sorted({v.get("seed") for v in varied}),
                            "families": dict(sorted(families.items()))}
    twins = [r["counterfactual"] for r in rows if isinstance(r.get("counterfactual"), dict)]
    if twins:
        out["counterfactual"] = {"rows": len(twins), "flipped": sorted({str(t.get("flipped")) for t in twins}),
                                 "seeds": sorted({t.get("seed") for t in twins})}
    return out


__all__ = ["read_prompt_rows", "training_prompts"]

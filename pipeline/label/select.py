"""Stage ``label.select``: pick the next batch of instances for expert review (active learning).

``python -m pipeline label select --config pipeline/label/configs/select_demo.yaml``

The pool is the records of ``splits`` that the current model was evaluated on (``predictions.jsonl``
of the evaluate stage, rows of ``model_tag``). Each instance gets a score per strategy:

* ``least_confidence`` -- 1 - max p, per level from score-mode ``probs`` (clean rows), aggregated;
* ``margin`` -- 1 - (p1 - p2), aggregated;
* ``entropy`` -- entropy / log(K) (normalised to [0, 1]), aggregated;
* ``disagreement`` -- share of levels where the plain and the CoT variant answer differently (clean);
* ``flip`` -- share of perturbed rows whose answer differs from the clean answer of the same
  variant and mode (rows with ``label_may_change`` are ignored);
* ``error`` -- share of levels with a gold label that the primary prediction gets wrong;
* ``random`` -- a uniform random slice, drawn first from the whole pool, so accuracy measured on
  it (``stats.random_slice_accuracy``) is an unbiased estimate of the pool accuracy.

The batch is split into per-strategy quotas by ``mix`` (largest remainder). Each strategy takes its
highest-scoring instances not yet chosen (ties broken by a seeded shuffle), the sparse signals
(error, disagreement, flip; positive scores only) before the uncertainty rankings; quota a strategy
cannot fill (no probs, no perturbations, no errors) goes to the other strategies in that order,
then to ``random_fill``. Same inputs + seed => same batch. Output ``selection.jsonl`` (schema in
:mod:`pipeline.label.common`).

Pre-annotation (:func:`prefill`): labels and confidence come from one source, the label-scoring
probabilities when the sample has score-mode rows (argmax per level, mean top probability), else
the generated answer of ``primary_variant`` (no confidence). The CoT rationale is pre-filled only
when the generated answer equals those labels (a rationale arguing for other labels would mislead).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, read_jsonl, sha256_file, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LEVELS
from pipeline.label.common import describe_record, extract_rationale, load_records, split_files

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("least_confidence", "margin", "entropy", "disagreement", "flip", "error", "random")
#: strategies that only pick instances with a positive score (the others rank the whole pool)
SPARSE: tuple[str, ...] = ("error", "disagreement", "flip")
DEFAULT_MIX: dict[str, float] = {
    "random": 0.2, "least_confidence": 0.15, "margin": 0.1, "entropy": 0.1,
    "disagreement": 0.15, "flip": 0.15, "error": 0.15,
}


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Config of ``label.select``."""

    # where selection.jsonl and manifest.json go
    out_dir: Path = Path("runs/demo/label/select")
    # records folder (data_prep or label.merge output) with {train,dev,test}.jsonl
    data_dir: Path = Path("runs/demo/data_prep")
    # evaluate-stage predictions of the current model on those records
    predictions: Path = Path("runs/demo/evaluate/predictions.jsonl")
    # splits the pool is drawn from (never select from test if test must stay untouched)
    splits: tuple[str, ...] = ("train",)
    # which model's rows in predictions.jsonl to use (model_tag field)
    model_tag: str = "tuned"
    # variant whose clean generated answer gives the rationale (and the labels when there are no probs);
    # the other variant is the fallback
    primary_variant: str = "cot"
    # instances in the batch
    batch_size: int = 32
    # share of the batch per strategy (normalised to sum 1); keys from STRATEGIES, order = priority
    mix: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MIX))
    # how per-level uncertainties become one score: mean | max over levels
    aggregate: Literal["mean", "max"] = "mean"
    # seed of the random slice and of tie-breaking
    seed: int = 0
    # id stamped on every selected row (and later on tasks, reviews and provenance)
    batch_id: str = "batch-001"
    # model version stamped on pre-annotations; null = "<model_tag>@<sha256 of predictions[:12]>"
    model_version: str | None = None
    # JSONL files (earlier selection.jsonl / reviews.jsonl) whose sample_ids must not be picked again
    exclude: tuple[Path, ...] = ()
    # leave out records that already carry expert provenance (reviewed in an earlier round)
    skip_reviewed: bool = True
    # language of the known-information text shown to experts: en | zh
    lang: Literal["en", "zh"] = "en"


# ------------------------------------------------------------------------------------------ inputs
def select_inputs(cfg: SelectConfig) -> list[Path]:
    """Records of the pool splits, the predictions and the exclusion lists."""
    return [*split_files(cfg.data_dir, cfg.splits), Path(cfg.predictions), *map(Path, cfg.exclude)]


def check_config(cfg: SelectConfig) -> dict[str, float]:
    """Validate ``mix`` and return it normalised to sum 1 (insertion order kept)."""
    unknown = sorted(set(cfg.mix) - set(STRATEGIES))
    if unknown:
        raise ConfigError("mix: " + f"unknown strategy(ies) {unknown}; choose from {list(STRATEGIES)}")
    if any(v < 0 for v in cfg.mix.values()):
        raise ConfigError("mix: " + "fractions must be >= 0")
    total = sum(cfg.mix.values())
    if total <= 0:
        raise ConfigError("mix: " + "fractions sum to 0")
    if cfg.batch_size < 1:
        raise ConfigError("batch_size: " + "must be >= 1")
    return {k: v / total for k, v in cfg.mix.items()}


def allocate_quotas(mix: dict[str, float], batch_size: int) -> dict[str, int]:
    """Largest-remainder split of ``batch_size`` by the (normalised) fractions in ``mix``."""
    raw = {k: v * batch_size for k, v in mix.items()}
    quotas = {k: int(math.floor(v)) for k, v in raw.items()}
    left = batch_size - sum(quotas.values())
    order = sorted(mix, key=lambda k: (-(raw[k] - quotas[k]), list(mix).index(k)))
    for k in order[:left]:
        quotas[k] += 1
    return quotas


# ------------------------------------------------------------------------------------------ scores
def normalise_probs(dist: dict[str, float]) -> np.ndarray:
    """Probabilities of one level as a vector summing to 1, shape (K,)."""
    p = np.clip(np.asarray(list(dist.values()), dtype=float), 0.0, None)
    s = p.sum()
    return p / s if s > 0 else np.full(len(p), 1.0 / max(len(p), 1))


def least_confidence(p: np.ndarray) -> float:
    """1 - max p for a distribution of shape (K,)."""
    return float(1.0 - p.max())


def margin_score(p: np.ndarray) -> float:
    """1 - (p_top1 - p_top2): high when the two best labels are close; shape (K,)."""
    if len(p) < 2:
        return 0.0
    top = np.sort(p)[::-1]
    return float(1.0 - (top[0] - top[1]))


def entropy_score(p: np.ndarray) -> float:
    """Shannon entropy / log K in [0, 1]; shape (K,)."""
    if len(p) < 2:
        return 0.0
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(p)))


UNCERTAINTY = {"least_confidence": least_confidence, "margin": margin_score, "entropy": entropy_score}


def mean_probs(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per level, the average of the normalised label distributions of several score-mode rows."""
    acc: dict[str, dict[str, float]] = {}
    count: dict[str, int] = defaultdict(int)
    for row in rows:
        for lev, dist in (row.get("probs") or {}).items():
            if not dist:
                continue
            p = normalise_probs(dist)
            tgt = acc.setdefault(lev, {})
            for lab, v in zip(dist, p):
                tgt[lab] = tgt.get(lab, 0.0) + float(v)
            count[lev] += 1
    return {lev: {lab: v / count[lev] for lab, v in d.items()} for lev, d in acc.items()}


def labels_differ(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[bool]:
    """Per level, whether two parsed answers differ (a missing answer differs from a given one)."""
    a, b = a or {}, b or {}
    return [a.get(lev) != b.get(lev) for lev in LEVELS]


def pick_label_row(rows: list[dict[str, Any]], variant: str) -> dict[str, Any] | None:
    """The clean row of ``variant`` that provides its answer: generate mode preferred, then score."""
    cands = [r for r in rows if r.get("variant") == variant]
    cands.sort(key=lambda r: (r.get("mode") != "generate", r.get("seed", 0)))
    return cands[0] if cands else None


def error_share(row: dict[str, Any]) -> float | None:
    """Share of gold-labelled levels the row gets wrong; None when the row has no gold at all."""
    gold = row.get("gold") or {}
    levels = [lev for lev in LEVELS if gold.get(lev) is not None]
    if not levels:
        return None
    correct = row.get("correct") or {}
    wrong = [not correct.get(lev, (row.get("parsed") or {}).get(lev) == gold[lev]) for lev in levels]
    return sum(wrong) / len(levels)


def score_sample(rows: list[dict[str, Any]], primary: str, aggregate: str) -> dict[str, Any]:
    """All strategy scores and the pre-annotation of one sample from its prediction rows.

    Returns ``{"scores": {strategy: float}, "label_row": row|None, "probs": {level: {label: p}}}``;
    a strategy whose evidence is missing (no probs, one variant only, no perturbed rows, no gold)
    has no score.
    """
    clean = [r for r in rows if r.get("perturbation", "clean") == "clean" and not r.get("severity")]
    perturbed = [r for r in rows if r.get("perturbation", "clean") != "clean" and not r.get("label_may_change")]
    scores: dict[str, float] = {}
    probs = mean_probs([r for r in clean if r.get("mode") == "score"])
    if probs:
        agg = max if aggregate == "max" else (lambda xs: sum(xs) / len(xs))
        for name, fn in UNCERTAINTY.items():
            scores[name] = float(agg([fn(normalise_probs(probs[lev])) for lev in probs]))
    variants = sorted({r.get("variant") for r in clean})
    label_rows = {v: pick_label_row(clean, v) for v in variants}
    if "plain" in label_rows and "cot" in label_rows:
        diff = labels_differ(label_rows["plain"].get("parsed"), label_rows["cot"].get("parsed"))
        scores["disagreement"] = sum(diff) / len(LEVELS)
    flips, total = 0, 0
    for r in perturbed:
        ref = next((c for c in clean if c.get("variant") == r.get("variant") and c.get("mode") == r.get("mode")), None)
        if ref is None:
            continue
        total += 1
        flips += any(labels_differ(ref.get("parsed"), r.get("parsed")))
    if total:
        scores["flip"] = flips / total
    label_row = label_rows.get(primary) or next((label_rows[v] for v in variants if label_rows[v]), None)
    if label_row is not None:
        err = error_share(label_row)
        if err is not None:
            scores["error"] = err
    return {"scores": scores, "label_row": label_row, "probs": probs}


# -------------------------------------------------------------------------------------------- load
def group_predictions(path: Path, model_tag: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``model_tag`` grouped by sample_id (schema checked: sample_id, parsed)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for lineno, row in read_jsonl(path):
        if not isinstance(row.get("sample_id"), str):
            raise DataError(path, lineno, "sample_id", "missing or not a string")
        if row.get("model_tag", model_tag) != model_tag:
            continue
        if "parsed" in row and row["parsed"] is not None and not isinstance(row["parsed"], dict):
            raise DataError(path, lineno, "parsed", "expected an object of level -> label")
        if row.get("probs") is not None and not isinstance(row["probs"], dict):
            raise DataError(path, lineno, "probs", "expected an object of level -> {label: p}")
        out[row["sample_id"]].append(row)
    return out


def excluded_ids(paths: tuple[Path, ...]) -> set[str]:
    """sample_ids listed in earlier selection / review files."""
    ids: set[str] = set()
    for p in paths:
        ids.update(str(row["sample_id"]) for _, row in read_jsonl(p) if "sample_id" in row)
    return ids


# ------------------------------------------------------------------------------------------ choose
def choose_batch(
    pool: list[str], scores: dict[str, dict[str, float]], mix: dict[str, float], batch_size: int, seed: int
) -> list[tuple[str, str, float, bool]]:
    """Pick ``batch_size`` distinct ids from ``pool``; returns (sample_id, strategy, score, in_random_slice).

    ``pool`` must be sorted (determinism); ``scores[strategy][sample_id]`` holds the scores.
    Disagreement, flip and error only pick instances with a positive score.
    """
    rng = np.random.default_rng(seed)
    tiebreak = {pool[i]: int(rank) for i, rank in enumerate(rng.permutation(len(pool)))}
    quotas = allocate_quotas(mix, min(batch_size, len(pool)))
    chosen: dict[str, tuple[str, float, bool]] = {}
    # the random slice comes first, uniformly from the whole pool, so it is not biased by the others
    n_random = quotas.pop("random", 0)
    for sid in rng.choice(pool, size=min(n_random, len(pool)), replace=False).tolist() if n_random else []:
        chosen[sid] = ("random", 0.0, True)

    def ranked(strategy: str) -> list[str]:
        s = scores.get(strategy, {})
        positive_only = strategy in SPARSE
        ids = [sid for sid in s if sid not in chosen and (s[sid] > 0 or not positive_only)]
        return sorted(ids, key=lambda sid: (-s[sid], tiebreak[sid]))

    def take(strategy: str, n: int) -> int:
        got = 0
        for sid in ranked(strategy)[:n]:
            chosen[sid] = (strategy, float(scores[strategy][sid]), False)
            got += 1
        return got

    target = min(batch_size, len(pool))
    # sparse, targeted signals first: an uncertainty strategy always has candidates and would
    # otherwise take a known error or a flip with a tiny uncertainty score
    order = sorted(quotas, key=lambda k: (k not in SPARSE, list(quotas).index(k)))
    for strategy in order:
        take(strategy, quotas[strategy])
    for strategy in order:  # second pass: unfilled quota goes to strategies that still have candidates
        if len(chosen) >= target:
            break
        take(strategy, target - len(chosen))
    if len(chosen) < target:
        rest = [sid for sid in pool if sid not in chosen]
        for sid in sorted(rest, key=tiebreak.__getitem__)[: target - len(chosen)]:
            chosen[sid] = ("random_fill", 0.0, False)
    return [(sid, *chosen[sid]) for sid in chosen]


def prefill(info: dict[str, Any]) -> dict[str, Any]:
    """The pre-annotation of one sample: labels, their source, confidence and the CoT rationale.

    One source for labels and confidence: with label-scoring ``probs`` (score-mode rows, the same
    distributions the uncertainty strategies rank by) each level's label is the most probable one
    and the confidence the mean of those probabilities; without probs the labels are the parsed
    answer of the generation row and there is no confidence. The CoT rationale argues for the
    generated answer, so it is only shown when that answer equals the pre-filled labels.
    Returns ``{"predicted", "predicted_source": "probs"|"generate"|None, "confidence", "rationale",
    "variant"}``.
    """
    row = info.get("label_row") or {}
    parsed = row.get("parsed") or {}
    probs = info.get("probs") or {}
    if probs:
        predicted: dict[str, str | None] = {lev: None for lev in LEVELS}
        tops = []
        for lev, dist in probs.items():
            p = normalise_probs(dist)
            predicted[lev] = list(dist)[int(np.argmax(p))]  # first of tied labels: dict (taxonomy) order
            tops.append(float(p.max()))
        source, confidence = "probs", float(np.mean(tops))
    else:
        predicted = {lev: parsed.get(lev) for lev in LEVELS}
        source = "generate" if any(predicted.values()) else None
        confidence = None
    rationale = None
    if row.get("variant") == "cot" and all(parsed.get(lev) == predicted[lev] for lev in LEVELS):
        rationale = extract_rationale(row.get("output"))
    return {"predicted": predicted, "predicted_source": source, "confidence": confidence,
            "rationale": rationale, "variant": row.get("variant")}


def build_row(sid: str, record: dict[str, Any], info: dict[str, Any], pick: tuple[str, float, bool],
              cfg: SelectConfig, model_version: str) -> dict[str, Any]:
    """One selection row (schema in :mod:`pipeline.label.common`)."""
    strategy, score, in_slice = pick
    pre = prefill(info)
    return {
        "sample_id": sid,
        "split": record.get("split"),
        "batch_id": cfg.batch_id,
        "strategy": strategy,
        "score": round(score, 6),
        "in_random_slice": in_slice,
        "reasons": {k: round(v, 6) for k, v in sorted(info.get("scores", {}).items())},
        "text": describe_record(record, cfg.lang),
        "predicted": pre["predicted"],
        "predicted_source": pre["predicted_source"],
        "predicted_variant": pre["variant"],
        "rationale": pre["rationale"],
        "confidence": None if pre["confidence"] is None else round(pre["confidence"], 6),
        "probs": info.get("probs") or None,
        "gold": dict(record.get("labels") or {}),
        "model_version": model_version,
    }


def run_select(cfg: SelectConfig) -> StageResult:
    """Score the pool, choose the batch and write ``selection.jsonl``."""
    mix = check_config(cfg)
    records = load_records(cfg.data_dir, cfg.splits)
    preds = group_predictions(Path(cfg.predictions), cfg.model_tag)
    skip = excluded_ids(tuple(Path(p) for p in cfg.exclude))
    pool = sorted(
        sid for sid, rec in records.items()
        if sid in preds and sid not in skip and not (cfg.skip_reviewed and rec.get("provenance"))
    )
    if not pool:
        raise DataError(cfg.predictions, None, "sample_id",
                        f"no pool: none of the {len(records)} records of {list(cfg.splits)} has predictions of "
                        f"model_tag {cfg.model_tag!r} (after exclusions)")
    infos = {sid: score_sample(preds[sid], cfg.primary_variant, cfg.aggregate) for sid in pool}
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    for sid, info in infos.items():
        for name, value in info["scores"].items():
            scores[name][sid] = value
    picks = choose_batch(pool, scores, mix, cfg.batch_size, cfg.seed)
    model_version = cfg.model_version or f"{cfg.model_tag}@{sha256_file(cfg.predictions)[:12]}"
    rows = [build_row(sid, records[sid], infos[sid], (s, sc, sl), cfg, model_version) for sid, s, sc, sl in picks]
    out = Path(cfg.out_dir) / "selection.jsonl"
    write_jsonl(out, rows)
    per_strategy: dict[str, int] = defaultdict(int)
    for r in rows:
        per_strategy[r["strategy"]] += 1
    slice_errors = [infos[r["sample_id"]]["scores"].get("error") for r in rows if r["in_random_slice"]]
    slice_errors = [e for e in slice_errors if e is not None]
    stats = {
        "pool": len(pool),
        "excluded": len(skip),
        "selected": len(rows),
        "batch_id": cfg.batch_id,
        "model_version": model_version,
        "quotas": allocate_quotas(mix, min(cfg.batch_size, len(pool))),
        "per_strategy": dict(per_strategy),
        "scored": {k: len(v) for k, v in scores.items()},
        # unbiased estimate of the model's exact-match accuracy on the pool (random slice only)
        "random_slice_accuracy": (sum(e == 0 for e in slice_errors) / len(slice_errors)) if slice_errors else None,
        "random_slice_n": len(slice_errors),
        "prefilled_from": dict(sorted(Counter(str(r["predicted_source"]) for r in rows).items())),
        "with_rationale": sum(bool(r["rationale"]) for r in rows),
    }
    log.info("selected %d of %d (%s)", len(rows), len(pool), dict(per_strategy))
    return StageResult(outputs=[out], stats=stats)


STAGE = Stage(
    name="label.select",
    config_cls=SelectConfig,
    inputs=select_inputs,
    run=run_select,
    default_config="pipeline/label/configs/select_demo.yaml",
    help="active-learning batch selection for expert review",
)

__all__ = ["STAGE", "STRATEGIES", "SelectConfig", "allocate_quotas", "choose_batch", "entropy_score",
           "least_confidence", "margin_score", "prefill", "run_select", "score_sample"]

"""Tiny hand-made records and predictions for the labelling-loop tests (tests/test_label_*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import write_jsonl
from pipeline.core.taxonomy import LABELS, LEVELS

DEFAULT_LABELS = {"motion": "flyby", "operation": "photographing", "task": "observation"}


def make_record(sid: str, split: str, labels: dict[str, str | None] | None = None, **extra: Any) -> dict[str, Any]:
    """A CONTRACT-shaped record with small context/features."""
    rec = {
        "sample_id": sid, "scenario_seed": int(sid.split("-")[-1]) if sid.split("-")[-1].isdigit() else 0,
        "split": split, "source": "simulator", "labels": dict(labels or DEFAULT_LABELS),
        "context": {"orbit": "LEO", "size": "large", "cooperative": False, "equipment": "robotic_arm",
                    "lighting": "full_sunlight", "electromagnetic": "optimal"},
        "observation": {"t_s": [0.0, 10.0], "range_m": [1000.0, 900.0], "range_rate_mps": [-10.0, -10.0],
                        "az_deg": [0.0, 0.0], "el_deg": [0.0, 0.0]},
        "features": {"initial_range_m": 1000.0, "min_range_m": 900.0, "t_min_range_s": 10.0, "final_range_m": 900.0,
                     "final_speed_mps": 10.0, "mean_range_rate_mps": -10.0, "extent_m": [1.0, 2.0, 3.0],
                     "max_dv_mps": 0.0, "n_burns": 0, "entered_keepout": False, "range_trend": "decreasing"},
        "text": None, "rationale": None, "provenance": [],
    }
    rec.update(extra)
    return rec


def write_records(root: Path, per_split: dict[str, list[dict[str, Any]]], trajectories: bool = True) -> Path:
    """Write ``{split}.jsonl`` (+ ``trajectories/<split>.npz``) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, recs in per_split.items():
        write_jsonl(root / f"{split}.jsonl", recs)
        if trajectories:
            (root / "trajectories").mkdir(exist_ok=True)
            states = np.zeros((len(recs), 3, 7), dtype=np.float32)
            np.savez(root / "trajectories" / f"{split}.npz", sample_id=np.array([r["sample_id"] for r in recs]),
                     states=states)
    return root


def distribution(level: str, top: list[float], labels: dict[str, str]) -> dict[str, float]:
    """Probabilities over every label of ``level``: ``top`` goes to the predicted label, then the others in
    taxonomy order; the remaining mass is spread evenly over the rest."""
    order = [labels[level]] + [lab for lab in LABELS[level] if lab != labels[level]]
    rest = 1.0 - sum(top)
    n_rest = len(order) - len(top)
    return {lab: (top[i] if i < len(top) else rest / n_rest) for i, lab in enumerate(order)}


def pred_row(sid: str, split: str, variant: str, mode: str, parsed: dict[str, str | None], gold: dict[str, str],
             perturbation: str = "clean", severity: int = 0, probs: dict | None = None,
             label_may_change: bool = False, output: str | None = None, model_tag: str = "tuned") -> dict[str, Any]:
    """One evaluate-stage predictions row (CONTRACT schema)."""
    return {
        "sample_id": sid, "split": split, "model_tag": model_tag, "variant": variant, "mode": mode,
        "perturbation": perturbation, "severity": severity, "seed": 0, "prompt": f"prompt of {sid}",
        "output": output if output is not None else
        ("The target closes in and then moves away.\nAnswer: motion=" + str(parsed.get("motion")) +
         "; operation=" + str(parsed.get("operation")) + "; task=" + str(parsed.get("task"))),
        "parsed": parsed, "gold": gold, "correct": {lev: parsed.get(lev) == gold[lev] for lev in LEVELS},
        "probs": probs, "label_may_change": label_may_change, "latency_s": 0.01,
    }


# probability shapes chosen so each uncertainty strategy has its own clear winner:
#   s01 [.34,.33,.33,0..]: least confidence .66 (top), margin .99, entropy .53
#   s02 [.5,.5,0..]:       least confidence .50, margin 1.0 (top), entropy .33
#   s03 [.4, rest even]:   least confidence .60, margin .69, entropy ~.89 (top)
PEAKED = [0.97]
SHAPES = {"s01": [0.34, 0.33, 0.33], "s02": [0.5, 0.5], "s03": [0.4]}


def pool_fixture(root: Path, n_train: int = 20) -> tuple[Path, Path]:
    """Records (train pool of ``n_train`` + 3 dev) and predictions with one planted case per strategy.

    s04: plain and CoT disagree (CoT right); s05: CoT flips under a typo perturbation;
    s06: both variants wrong on motion (a known error); s07: its perturbed answer changes but the
    perturbation may change the label (must not count as a flip).
    """
    ids = [f"s{i:02d}" for i in range(n_train)]
    train = [make_record(sid, "train") for sid in ids]
    dev = [make_record(f"d{i:02d}", "dev") for i in range(3)]
    records = write_records(root / "records", {"train": train, "dev": dev, "test": []}, trajectories=False)
    rows = []
    for rec in train + dev:
        sid, split, gold = rec["sample_id"], rec["split"], rec["labels"]
        shape = SHAPES.get(sid, PEAKED)
        probs = {lev: distribution(lev, shape, gold) for lev in LEVELS}
        plain = dict(gold)
        cot = dict(gold)
        if sid == "s04":
            plain["motion"] = "hovering"
        if sid == "s06":
            plain["motion"] = cot["motion"] = "rendezvous"
            probs["motion"] = distribution("motion", PEAKED, {"motion": "rendezvous"})
        rows.append(pred_row(sid, split, "plain", "generate", plain, gold))
        rows.append(pred_row(sid, split, "cot", "generate", cot, gold))
        rows.append(pred_row(sid, split, "plain", "score", plain, gold, probs=probs))
        perturbed = dict(cot)
        if sid in ("s05", "s07"):
            perturbed["task"] = "attack"
        rows.append(pred_row(sid, split, "cot", "generate", perturbed, gold, perturbation="typo", severity=1,
                             label_may_change=sid == "s07"))
        # a base-model row that must be ignored (model_tag filter)
        rows.append(pred_row(sid, split, "cot", "generate", {lev: None for lev in LEVELS}, gold, model_tag="base"))
    preds = root / "predictions.jsonl"
    write_jsonl(preds, rows)
    return records, preds

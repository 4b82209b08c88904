"""The intent metrics as a Hugging Face ``evaluate`` module, loaded offline from this file.

    import evaluate
    metric = evaluate.load("eval/intent_metric.py")          # a local path: nothing is downloaded
    metric.compute(predictions=["Answer: motion=hovering; operation=none; task=surveillance"],
                   references=["Answer: motion=hovering; operation=none; task=surveillance"])
    -> {"joint_accuracy": 1.0, "joint_ci_low": ..., "invalid_rate": 0.0, "motion_accuracy": 1.0,
        "motion_macro_f1": 1.0, ...}

``predictions``: model replies (any text the evaluate stage parses: an answer line, a CoT reply, Chinese);
``references``: gold answer lines (``pipeline.core.answer.format_answer`` of the labels). The numbers are the
evaluate report's clean-set numbers (:func:`eval.report.clean_summary`, the same parser and bootstrap: same
seed, ``n_resamples``), so a ``predictions.jsonl`` group scored here gives its report row.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from eval.report import clean_summary
from eval.robustness import CLEAN
from pipeline.core.answer import parse_answer
from pipeline.core.taxonomy import LEVELS

_DESCRIPTION = "Joint and per-level intent accuracy (95% bootstrap CI), macro-F1 and invalid rate of answer lines."
_KWARGS = """
Args:
    predictions: list of model replies (str).
    references: list of gold answer lines (str).
    lang: en | zh | None (both parsed), passed to the answer parser.
    seed, n_resamples: the bootstrap of the confidence interval (the evaluate stage's defaults: 0, 2000).
Returns: joint_accuracy, joint_ci_low, joint_ci_high, invalid_rate, n, and <level>_accuracy / <level>_macro_f1
    for motion, operation and task.
"""


def score_rows(predictions: list[str], references: list[str], lang: str | None) -> list[dict[str, Any]]:
    """Rows in the evaluate stage's shape (``gold``, ``parsed``, ``correct``) for :func:`clean_summary`."""
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        gold, parsed = parse_answer(ref, lang, mentions=False), parse_answer(pred, lang)
        if any(gold[lvl] is None for lvl in LEVELS):
            raise ValueError(f"reference is not a full answer line: {ref!r}")
        rows.append({"perturbation": CLEAN, "gold": gold, "parsed": parsed,
                     "correct": {lvl: parsed[lvl] == gold[lvl] for lvl in LEVELS}})
    return rows


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class IntentMetric(evaluate.Metric):
    """``evaluate`` wrapper around the report's clean-set summary."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions: list[str], references: list[str], lang: str | None = None, seed: int = 0,
                 n_resamples: int = 2000) -> dict[str, Any]:
        summary = clean_summary(score_rows(predictions, references, lang), seed=seed, n_resamples=n_resamples)
        out = {"n": summary["n"], "joint_accuracy": summary["accuracy"], "joint_ci_low": summary["ci_low"],
               "joint_ci_high": summary["ci_high"], "invalid_rate": summary["invalid_rate"]}
        for lvl in LEVELS:
            out[f"{lvl}_accuracy"] = summary["levels"][lvl]["accuracy"]
            out[f"{lvl}_macro_f1"] = summary["levels"][lvl]["macro_f1"]
        return out

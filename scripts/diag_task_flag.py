"""Does a tuned model read the cooperative flag? Task accuracy per (motion, flag) and the errors that are the
other flag's task.

    python scripts/diag_task_flag.py runs/demo/evaluate/predictions.jsonl runs/demo/data_prep/test.jsonl

Reads the clean rows of one model tag (default ``tuned``) from an evaluate stage's predictions and the
data_prep records they came from (for the flag). A model that ignores the flag shows it plainly: for a motion
it gives one flag's task to every target (e.g. hovering 0/25 cooperative right, 24/25 non-cooperative), and
most of its task errors are exactly :func:`data_prep.rules.task_intent` with the flag flipped.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_prep.rules import task_intent
from pipeline.cli import UserError, user_errors
from pipeline.core.io import DataError, read_jsonl


def flag_table(predictions: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Task accuracy per ``(motion, cooperative)``, given motion and operation right, and other-flag errors."""
    cells: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])
    given = [0, 0]
    errors = other_flag = 0
    for row in predictions:
        coop = bool(records[row["sample_id"]]["context"]["cooperative"])
        parsed, gold = row.get("parsed") or {}, row["gold"]
        right = parsed.get("task") == gold["task"]
        cells[(gold["motion"], coop)][0] += right
        cells[(gold["motion"], coop)][1] += 1
        if parsed.get("motion") == gold["motion"] and parsed.get("operation") == gold["operation"]:
            given[0] += right
            given[1] += 1
        if not right:
            errors += 1
            if parsed.get("motion") and parsed.get("operation") and \
                    task_intent(not coop, parsed["motion"], parsed["operation"]) == parsed.get("task"):
                other_flag += 1
    n = sum(c[1] for c in cells.values())
    return {"n": n, "task_acc": sum(c[0] for c in cells.values()) / max(n, 1),
            "task_acc_given_motion_and_operation": given[0] / max(given[1], 1),
            "task_errors": errors, "other_flag_errors": other_flag,
            "cells": {f"{m}/{'cooperative' if c else 'non-cooperative'}": v for (m, c), v in sorted(cells.items())}}


def read_inputs(predictions: Path, records: Path, tag: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The clean prediction rows of ``tag`` and the records by sample id; a missing field or a prediction
    without its record is a DataError naming file, line and field."""
    by_id: dict[str, dict[str, Any]] = {}
    for line, rec in read_jsonl(records):
        if not isinstance(rec.get("context"), dict) or "cooperative" not in rec["context"]:
            raise DataError(records, line, "context.cooperative", "missing (expected a data_prep record)")
        by_id[str(rec.get("sample_id"))] = rec
    rows = []
    for line, row in read_jsonl(predictions):
        for key in ("sample_id", "perturbation", "model_tag", "gold"):
            if key not in row:
                raise DataError(predictions, line, key, "missing (expected an evaluate stage's predictions.jsonl)")
        if row["perturbation"] != "clean" or row["model_tag"] != tag:
            continue
        if row["sample_id"] not in by_id:
            raise DataError(predictions, line, "sample_id", f"{row['sample_id']!r} is not in {records}")
        rows.append(row)
    return rows, by_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", type=Path)
    ap.add_argument("records", type=Path, help="the data_prep split the predictions came from")
    ap.add_argument("--tag", default="tuned")
    ap.add_argument("--debug", action="store_true", help="tracebacks instead of one error line")
    args = ap.parse_args(argv)
    try:
        with user_errors(args.debug):
            table = flag_table(*read_inputs(args.predictions, args.records, args.tag))
    except UserError as exc:
        return exc.code
    print(f"n {table['n']}  task acc {table['task_acc']:.3f}  task acc | motion & operation right "
          f"{table['task_acc_given_motion_and_operation']:.3f}  task errors {table['task_errors']}, "
          f"of them the other flag's task {table['other_flag_errors']}")
    for cell, (right, n) in table["cells"].items():
        print(f"{cell:32s} {right:3d} / {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Label Studio round trip, shared by the slow real-server test and the fast test on its recorded exports.

``make_batch`` builds the batch that goes to Label Studio (tiny records -> label select -> label
export); ``check_exports`` runs ``label import`` on every export the server wrote, then
``label agreement`` and ``label merge``, and checks every count against what the scripted experts of
``scripts/label_studio_server.py`` (``SCENARIO``) did:

=====  =================  ============================  ==========================================
task   first expert       second expert                 notes
=====  =================  ============================  ==========================================
T1     accept             accept                        the pre-annotation without a rationale
T2     change motion      change motion + edit reason   both pick the same motion -> changed
T3     edit rationale     accept                        -> confirmed, edited rationale merged
T4     delete rationale   change task                   1:1 on task -> flagged
T5     skip               change operation              -> changed
T6     delete + retype    skip                          -> confirmed, written rationale merged
T7     --                 --                            never opened (only the snapshot lists it)
=====  =================  ============================  ==========================================
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from label_helpers import pool_fixture

from pipeline.core.taxonomy import LEVELS
from pipeline.core.config import load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.label.agreement import AgreementConfig, run_agreement
from pipeline.label.export import ExportConfig, run_export
from pipeline.label.importer import ImportConfig, run_import
from pipeline.label.merge import MergeConfig, run_merge
from pipeline.label.select import SelectConfig, run_select

EXPERTS = ("alice@example.org", "bob@example.org")
#: the sample whose CoT answer did not parse: labels and confidence must still come from the probs
UNPARSED = "s08"


def make_batch(tmp: Path) -> tuple[Path, Path]:
    """Records + predictions (one unparsed CoT answer planted) -> select 7 -> export; returns (records, export dir)."""
    records, preds = pool_fixture(tmp)
    rows = load_jsonl(preds)
    for row in rows:
        if row["sample_id"] == UNPARSED and row["mode"] == "generate" and row["variant"] == "cot" \
                and row["perturbation"] == "clean" and row["model_tag"] == "tuned":
            row["parsed"] = {lev: None for lev in LEVELS}
            row["correct"] = {lev: False for lev in LEVELS}
            row["output"] = "The range keeps shrinking, so"  # cut off before the answer line
    write_jsonl(preds, rows)
    sel = run_select(load_config(SelectConfig, None, [
        f"out_dir={tmp / 'select'}", f"data_dir={records}", f"predictions={preds}", "batch_size=7",
        "batch_id=ls-roundtrip"]))
    assert sel.stats["prefilled_from"] == {"probs": 7}
    exported = run_export(load_config(ExportConfig, None, [
        f"out_dir={tmp / 'export'}", f"selection={tmp / 'select' / 'selection.jsonl'}"]))
    # every task is pre-filled (labels from the probs), the unparsed one without a rationale
    assert exported.stats == {"tasks": 7, "with_predictions": 7, "with_rationale": 6}
    selected = [r["sample_id"] for r in load_jsonl(tmp / "select" / "selection.jsonl")]
    assert UNPARSED in selected
    return records, tmp / "export"


def import_one(tmp: Path, name: str, export: Path, exports_dir: Path, *extra: str) -> tuple[list[dict], dict]:
    """``label import`` of one export with the recorded batch and user list; returns (rows, stats)."""
    out = tmp / f"import_{name}"
    cfg = load_config(ImportConfig, None, [f"out_dir={out}", f"label_studio=[{export}]",
                                           f"tasks=[{exports_dir / 'tasks.jsonl'}]",
                                           f"users={exports_dir / 'users.json'}", *extra])
    stats = run_import(cfg).stats
    return load_jsonl(out / "reviews.jsonl"), stats


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Review rows keyed by (sample_id, reviewer)."""
    return {(r["sample_id"], r["reviewer"]): r for r in rows}


def roles_by_sample(exports_dir: Path) -> dict[str, list[str]]:
    """``{sample_id: [first expert's action, second's]}`` from the recorded round-trip summary."""
    summary = json.loads((exports_dir / "roundtrip.json").read_text())
    tasks = {t["id"]: t for t in json.loads((exports_dir / "export_snapshot.json").read_text())}
    return {tasks[int(tid)]["data"]["sample_id"]: roles for tid, roles in summary["roles"].items()}


def check_rows(rows: list[dict[str, Any]], roles: dict[str, list[str]], batch: dict[str, dict]) -> None:
    """Every review row says what its expert did (see the module table)."""
    rows_by = by_key(rows)
    for sid, actions in roles.items():
        model = batch[sid]
        for expert, action in zip(EXPERTS, actions):
            row = rows_by.get((sid, expert))
            if action == "skip":
                assert row is None, (sid, expert)
                continue
            assert row is not None, (sid, expert)
            assert row["model_labels"] == model["predicted"] and row["model_rationale"] == model["rationale"]
            assert row["batch_id"] == "ls-roundtrip" and row["split"] == "train" and row["lead_time"] > 0
            changed = sorted(lev for lev in LEVELS if row["labels"][lev] != model["predicted"][lev])
            want_changed = sorted(p.split(":")[1] for p in action.split("+") if p.startswith("change:"))
            assert changed == want_changed, (sid, expert, action)
            assert row["accepted"] == (not want_changed)
            if "edit" in action.split("+"):
                assert row["rationale_action"] == "edited" and row["rationale_edited"]
                assert row["rationale"].startswith("Expert: ") and model["rationale"] in row["rationale"]
            elif action == "delete":
                # the expert removed the pre-filled rationale: it must not come back as the model's
                assert row["rationale_action"] == "deleted" and row["rationale"] is None
                assert not row["rationale_edited"]
            elif action == "rewrite":
                assert row["rationale_action"] in ("written", "edited") and row["rationale_edited"]
                assert row["rationale"] == "Expert rationale written from scratch."
            elif model["rationale"]:
                assert row["rationale_action"] == "kept" and row["rationale"] == model["rationale"]
            else:
                assert row["rationale_action"] == "none" and row["rationale"] is None


EXPECTED_IMPORT = {
    "batch_tasks": 7, "reviews": 10, "tasks_reviewed": 6, "batch_tasks_not_reviewed": 1, "multi_reviewed_tasks": 4,
    "per_reviewer": {EXPERTS[0]: 5, EXPERTS[1]: 5}, "accepted": 6, "labels_changed": 4, "rationale_edited": 3,
    "duplicates_replaced": 0,
}


def check_exports(exports_dir: Path, records: Path, tmp: Path) -> dict[str, Any]:
    """Import every recorded export, compare them, run agreement and merge; returns the merge stats."""
    batch = {r["sample_id"]: r for r in load_jsonl(exports_dir / "tasks.jsonl")}
    roles = roles_by_sample(exports_dir)
    assert sorted(a for pair in roles.values() for a in pair).count("skip") == 2

    rows_json, st_json = import_one(tmp, "json", exports_dir / "export_json.json", exports_dir)
    rows_min, st_min = import_one(tmp, "min", exports_dir / "export_json_min.json", exports_dir)
    rows_snap, st_snap = import_one(tmp, "snapshot", exports_dir / "export_snapshot.json", exports_dir)
    for stats in (st_json, st_min, st_snap):
        assert {k: stats[k] for k in EXPECTED_IMPORT} == EXPECTED_IMPORT
        assert stats.get("prefill_mismatch", 0) == 0 and stats.get("unnamed_reviewers", 0) == 0
    # JSON and the snapshot list the skips (with their pre-filled result); JSON-MIN leaves them out
    assert (st_json["annotations"], st_json["skipped"]) == (12, 2) == (st_snap["annotations"], st_snap["skipped"])
    assert (st_min["annotations"], st_min.get("skipped", 0)) == (10, 0)
    assert [e["format"] for e in (*st_json["exports"].values(), *st_min["exports"].values(),
                                  *st_snap["exports"].values())] == ["JSON", "JSON_MIN", "JSON"]
    assert st_json["rationale"] == {"kept": 4, "edited": 2, "written": 1, "deleted": 1, "none": 2} == st_snap["rationale"]
    # JSON-MIN has no region origin: a retyped rationale reads as an edit of the model's
    assert st_min["rationale"] == {"kept": 4, "edited": 3, "written": 0, "deleted": 1, "none": 2}
    for rows in (rows_json, rows_min, rows_snap):
        check_rows(rows, roles, batch)
    # the three exports give the same reviews (JSON-MIN cannot tell a retyped rationale from an edit)
    assert by_key(rows_json) == by_key(rows_snap)
    strip = lambda rows: {k: {**r, "rationale_action": None} for k, r in by_key(rows).items()}  # noqa: E731
    assert strip(rows_json) == strip(rows_min)

    # the formats Label Studio offers that cannot carry our labels are refused, naming the format
    offered = {f["name"] for f in json.loads((exports_dir / "export_formats.json").read_text()) if not f.get("disabled")}
    assert {"JSON", "JSON_MIN", "CSV", "TSV"} <= offered
    for name, kind in (("export.csv", "CSV"), ("export.tsv", "TSV")):
        with pytest.raises(DataError, match=f"this is a {kind} export.*Export -> JSON") as err:
            import_one(tmp, kind, exports_dir / name, exports_dir)
        assert name in str(err.value)

    reviews = f"reviews=[{tmp / 'import_json' / 'reviews.jsonl'}]"
    agreement = run_agreement(load_config(AgreementConfig, None, [f"out_dir={tmp / 'agreement'}", reviews])).stats
    assert agreement["reviews"] == 10 and agreement["reviewers"] == 2
    assert agreement["acceptance_rate_all_levels"] == pytest.approx(0.6)
    result = json.loads((tmp / "agreement" / "agreement.json").read_text())
    pairs = {lev: d["pairwise"][0] for lev, d in result["levels"].items()}
    assert {lev: (p["n"], p["observed"]) for lev, p in pairs.items()} == {
        "motion": (4, 1.0), "operation": (4, 1.0), "task": (4, 0.75)}
    assert {lev: d["model_vs_expert"]["acceptance_rate"] for lev, d in result["levels"].items()} == {
        "motion": 0.8, "operation": 0.9, "task": 0.9}

    merge = run_merge(load_config(MergeConfig, None, [f"out_dir={tmp / 'dataset'}", f"data_dir={records}",
                                                      reviews])).stats
    assert {k: merge[k] for k in ("reviews", "reviewed", "changed", "confirmed", "flagged", "rationale_changed")} == {
        "reviews": 10, "reviewed": 6, "changed": 2, "confirmed": 3, "flagged": 1, "rationale_changed": 3}
    merged = {r["sample_id"]: r for r in load_jsonl(Path(merge["records_dir"]) / "train.jsonl")}
    flagged = load_jsonl(Path(merge["records_dir"]) / "adjudication.jsonl")
    assert [f["sample_id"] for f in flagged] == [s for s, a in roles.items() if a[0] == "delete"]
    assert set(flagged[0]["conflicts"]) == {"task"}
    for sid, actions in roles.items():
        rec = merged[sid]
        if actions[0] == "delete":
            assert rec["provenance"] == []  # flagged: left for adjudication
            continue
        reviewers = [e for e, a in zip(EXPERTS, actions) if a != "skip"]
        assert rec["provenance"][-1]["reviewers"] == reviewers
        if actions[1] == "change:motion+edit":
            assert rec["rationale"].startswith("Expert: ")
        if actions[0] == "rewrite":
            assert rec["rationale"] == "Expert rationale written from scratch."
    untouched = [sid for sid in batch if sid not in roles]
    assert len(untouched) == 1 and merged[untouched[0]]["provenance"] == []
    shutil.rmtree(tmp / "dataset")
    return merge

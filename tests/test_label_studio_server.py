"""The labelling loop against a real Label Studio server (slow: ~2 min on the shared 2-core box once
``label-studio`` is installed, most of it creating the SQLite database; the first install into
``.cache/label-studio/venv`` adds ~4 min).

label select -> label export -> a fresh Label Studio (SQLite, free port): project from our XML, tasks
with pre-annotations imported, two experts annotating through the REST API as the editor does (accept,
change, edit / delete / retype the rationale, skip) -> the server's own exports (JSON, JSON_MIN,
snapshot, CSV, TSV, user list) -> label import -> agreement -> merge, every count checked
(``label_studio_checks``).

Record the fast test's fixtures from this run:
``LABEL_STUDIO_RECORD=tests/fixtures/label_studio python -m pytest -m slow tests/test_label_studio_server.py``
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from label_studio_checks import check_exports, make_batch

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_FILES = ("tasks.json", "tasks.jsonl", "labeling_config.xml", "export_json.json", "export_json_min.json",
                 "export_snapshot.json", "export.csv", "export.tsv", "users.json", "export_formats.json",
                 "roundtrip.json")


@pytest.mark.slow
def test_round_trip_against_a_real_label_studio(tmp_path, load_script):
    helper = load_script("label_studio_server")
    start = time.monotonic()
    records, export_dir = make_batch(tmp_path / "batch")
    out = tmp_path / "exports"
    summary = helper.roundtrip(export_dir, out, data_dir=tmp_path / "server")
    assert summary["label_studio"] == helper.VERSION
    assert (summary["imported"]["task_count"], summary["imported"]["prediction_count"]) == (7, 7)
    assert len(summary["roles"]) == 6 and len(summary["untouched"]) == 1
    check_exports(out, records, tmp_path / "check")
    record = os.environ.get("LABEL_STUDIO_RECORD")
    if record:
        dest = Path(record)
        dest.mkdir(parents=True, exist_ok=True)
        for name in FIXTURE_FILES:
            shutil.copy2(out / name, dest / name)
        summary["seconds"]["test_total"] = round(time.monotonic() - start, 1)
        (dest / "roundtrip.json").write_text(json.dumps(summary, indent=1) + "\n")


def test_scripted_editor_bodies(load_script):
    """The scripted experts send what the editor sends (fast; no server)."""
    helper = load_script("label_studio_server")
    prediction = json.loads((ROOT / "tests/fixtures/label_studio/tasks.json").read_text())[0]["predictions"][0]
    prediction = {"id": 7, **prediction}
    accept = helper.editor_annotation(prediction, {}, lead_time=1.0)
    assert accept["parent_prediction"] == 7 and "was_cancelled" not in accept
    assert [r["origin"] for r in accept["result"]] == ["prediction"] * 4
    assert [r["value"] for r in accept["result"]] == [r["value"] for r in prediction["result"]]
    edits, skip = helper.plan_actions(prediction, "change:motion+edit")
    body = helper.editor_annotation(prediction, edits, lead_time=1.0, skip=skip)
    origins = {r["from_name"]: r["origin"] for r in body["result"]}
    assert origins == {"motion": "prediction-changed", "operation": "prediction", "task": "prediction",
                       "rationale": "prediction-changed"}
    edits, _ = helper.plan_actions(prediction, "delete")
    assert "rationale" not in {r["from_name"] for r in helper.editor_annotation(prediction, edits, 1.0)["result"]}
    edits, _ = helper.plan_actions(prediction, "rewrite")
    (typed,) = [r for r in helper.editor_annotation(prediction, edits, 1.0)["result"] if r["from_name"] == "rationale"]
    assert typed["origin"] == "manual" and typed["id"] != "pred-rationale"
    edits, skip = helper.plan_actions(prediction, "skip")
    assert helper.editor_annotation(prediction, edits, 1.0, skip=skip)["was_cancelled"] is True

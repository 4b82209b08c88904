"""label.export (Label Studio tasks, XML config, JSONL) and label.import (real Label Studio exports, plain JSONL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from label_helpers import pool_fixture
from label_studio_checks import check_exports

from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.taxonomy import LABELS, LEVELS
from pipeline.label.export import ExportConfig, build_labeling_config, run_export
from pipeline.label.importer import ImportConfig, run_import
from pipeline.label.merge import MergeConfig, run_merge
from pipeline.label.select import SelectConfig, run_select

ROOT = Path(__file__).resolve().parent.parent
#: exports recorded from a real Label Studio 1.23.2 by tests/test_label_studio_server.py (README there)
LS = Path(__file__).parent / "fixtures" / "label_studio"


@pytest.fixture()
def exported(tmp_path):
    records, preds = pool_fixture(tmp_path)
    run_select(load_config(SelectConfig, None, [f"out_dir={tmp_path / 'sel'}", f"data_dir={records}",
                                                f"predictions={preds}", "batch_size=6"]))
    cfg = load_config(ExportConfig, None, [f"out_dir={tmp_path / 'exp'}", f"selection={tmp_path / 'sel/selection.jsonl'}"])
    result = run_export(cfg)
    return tmp_path / "exp", result.stats


def test_export_task_shape(exported):
    out, stats = exported
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == stats["tasks"] == 6
    for task in tasks:
        assert set(task) == {"data", "predictions"}
        # experts see the text and ids only: no strategy/score (they could bias the review), no split
        assert set(task["data"]) == {"text", "sample_id", "batch_id"}
        assert task["data"]["text"] and task["data"]["sample_id"] and task["data"]["batch_id"] == "batch-001"
        (pred,) = task["predictions"]
        assert pred["model_version"].startswith("tuned@") and 0 < pred["score"] <= 1
        by_name = {r["from_name"]: r for r in pred["result"]}
        assert set(by_name) == {*LEVELS, "rationale"}
        ids = [r["id"] for r in pred["result"]]
        assert len(ids) == len(set(ids))
        for lev in LEVELS:
            r = by_name[lev]
            assert r["type"] == "choices" and r["to_name"] == "text"
            assert r["value"]["choices"][0] in LABELS[lev]
        assert by_name["rationale"]["type"] == "textarea"
        assert by_name["rationale"]["value"]["text"] == ["The target closes in and then moves away."]
    plain = load_jsonl(out / "tasks.jsonl")
    assert [p["sample_id"] for p in plain] == [t["data"]["sample_id"] for t in tasks]
    assert all(set(p["predicted"]) == set(LEVELS) for p in plain)
    assert all(p["strategy"] and p["split"] == "train" and p["predicted_source"] == "probs" for p in plain)


def test_labeling_config_lists_every_label(exported):
    out, _ = exported
    root = ET.fromstring((out / "labeling_config.xml").read_text())
    assert root.tag == "View"
    (text,) = root.findall("Text")
    assert text.get("name") == "text" and text.get("value") == "$text"
    choices = {c.get("name"): c for c in root.findall("Choices")}
    assert set(choices) == set(LEVELS)
    for lev, node in choices.items():
        assert node.get("toName") == "text" and node.get("choice") == "single"
        assert [c.get("alias") for c in node.findall("Choice")] == list(LABELS[lev])
    (area,) = root.findall("TextArea")
    assert area.get("name") == "rationale" and area.get("editable") == "true"
    zh = ET.fromstring(build_labeling_config("zh"))
    captions = [c.get("value") for c in zh.iter("Choice")]
    assert "绕飞" in captions and "fly_around" in [c.get("alias") for c in zh.iter("Choice")]
    # every header of the Chinese config is Chinese (no English words mixed in)
    headers = [h.get("value") for h in zh.iter("Header")]
    assert headers[:2] == ["已知信息", "运动意图"] and len(headers) == 5
    assert not any(ch.isascii() and ch.isalpha() for h in headers for ch in h)


def do_import(tmp_path, *overrides):
    cfg = load_config(ImportConfig, None, [f"out_dir={tmp_path / 'imp'}", *overrides])
    result = run_import(cfg)
    return load_jsonl(tmp_path / "imp" / "reviews.jsonl"), result.stats


BATCH = f"tasks=[{LS / 'tasks.jsonl'}]"
USERS = f"users={LS / 'users.json'}"


def recorded(name: str) -> list | dict:
    return json.loads((LS / name).read_text())


def role_task(role: str, expert: int = 0) -> int:
    """Task id whose scripted expert ``expert`` did ``role`` in the recorded round trip."""
    roles = recorded("roundtrip.json")["roles"]
    return next(int(tid) for tid, actions in roles.items() if actions[expert] == role)


def write_export(tmp_path, tasks, name="edited.json"):
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def test_recorded_real_exports_round_trip(tmp_path):
    """JSON, JSON_MIN and the snapshot export of a real Label Studio 1.23.2 -> import -> agreement -> merge."""
    records, _ = pool_fixture(tmp_path / "pool")
    check_exports(LS, records, tmp_path)


def test_recorded_export_has_the_real_shape():
    """What the issue found: the standard export lists prediction ids and user ids, not objects."""
    tasks = recorded("export_json.json")
    assert all(isinstance(p, int) for t in tasks for p in t["predictions"])
    anns = [a for t in tasks for a in t["annotations"]]
    assert all(isinstance(a["completed_by"], int) and "parent_prediction" in a for a in anns)
    assert {r.get("origin") for a in anns for r in a["result"]} == {"prediction", "prediction-changed", "manual"}
    snap = recorded("export_snapshot.json")
    assert all(isinstance(p, dict) for t in snap for p in t["predictions"])
    assert all(isinstance(a["completed_by"], dict) for t in snap for a in t["annotations"])
    flat = recorded("export_json_min.json")
    assert all("sample_id" in row and "annotator" in row and "data" not in row for row in flat)


def test_skip_drops_the_annotation_even_with_a_prefilled_result(tmp_path):
    tasks = recorded("export_json.json")
    (task,) = [t for t in tasks if t["id"] == role_task("skip")]
    skipped = [a for a in task["annotations"] if a["was_cancelled"]]
    assert len(skipped) == 1 and len(skipped[0]["result"]) == 4  # the editor sends the pre-fill along
    rows, stats = do_import(tmp_path, f"label_studio=[{LS / 'export_json.json'}]", BATCH, USERS)
    assert stats["skipped"] == 2
    assert not [r for r in rows if r["task_id"] == task["id"] and r["reviewer"] == "alice@example.org"]


def test_deleted_rationale_is_not_the_models(tmp_path):
    """Region absent + the annotation started from the prediction = deleted; without a pre-fill = none."""
    tasks = recorded("export_json.json")
    tid = role_task("delete")
    rows, _ = do_import(tmp_path, f"label_studio=[{LS / 'export_json.json'}]", BATCH, USERS)
    (row,) = [r for r in rows if r["task_id"] == tid and r["reviewer"] == "alice@example.org"]
    assert row["model_rationale"] and row["rationale"] is None
    assert (row["rationale_action"], row["rationale_edited"], row["accepted"]) == ("deleted", False, True)
    # the same annotation created from scratch (no parent prediction, every region typed by hand)
    for t in tasks:
        if t["id"] == tid:
            ann = next(a for a in t["annotations"] if a["completed_by"] == 1)
            ann["parent_prediction"] = None
            for region in ann["result"]:
                region["origin"] = "manual"
    rows, _ = do_import(tmp_path / "scratch", f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH, USERS)
    (row,) = [r for r in rows if r["task_id"] == tid and r["reviewer"] == "alice@example.org"]
    assert (row["rationale"], row["rationale_action"]) == (None, "none")


def test_deleted_rationale_does_not_reach_the_merged_record(tmp_path):
    """The model's labels differ from the record; the expert accepts them but deletes the model's reasoning."""
    records, _ = pool_fixture(tmp_path / "pool")
    tid = role_task("delete")
    tasks = [t for t in recorded("export_json.json") if t["id"] == tid]
    tasks[0]["annotations"] = [a for a in tasks[0]["annotations"] if a["completed_by"] == 1]  # alice only
    sid = tasks[0]["data"]["sample_id"]
    rows, _ = do_import(tmp_path, f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH, USERS)
    (row,) = rows
    record = next(r for r in load_jsonl(records / "train.jsonl") if r["sample_id"] == sid)
    assert row["accepted"] and row["labels"] != record["labels"]  # the model (and the expert) disagree with the record
    merge = run_merge(load_config(MergeConfig, None, [f"out_dir={tmp_path / 'ds'}", f"data_dir={records}",
                                                      f"reviews=[{tmp_path / 'imp' / 'reviews.jsonl'}]"])).stats
    assert merge["changed"] == 1
    merged = next(r for r in load_jsonl(Path(merge["records_dir"]) / "train.jsonl") if r["sample_id"] == sid)
    assert merged["labels"] == row["labels"] and merged["rationale"] is None


def test_origin_tells_kept_edited_and_written_apart(tmp_path):
    tasks = recorded("export_json.json")
    rows, _ = do_import(tmp_path, f"label_studio=[{LS / 'export_json.json'}]", BATCH, USERS)
    by = {(r["task_id"], r["reviewer"]): r for r in rows}
    alice, bob = "alice@example.org", "bob@example.org"
    assert by[role_task("edit"), alice]["rationale_action"] == "edited"
    assert by[role_task("accept", 1), bob]["rationale_action"] in ("kept", "none")
    assert by[role_task("rewrite"), alice]["rationale_action"] == "written"
    # the origin wins over a text comparison: an edit back to the model's text is still an edit ...
    tid = role_task("edit")
    task = next(t for t in tasks if t["id"] == tid)
    ann = next(a for a in task["annotations"] if a["completed_by"] == 1)
    region = next(r for r in ann["result"] if r["from_name"] == "rationale")
    region["value"]["text"] = [by[tid, alice]["model_rationale"]]
    rows, _ = do_import(tmp_path / "back", f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH, USERS)
    row = next(r for r in rows if r["task_id"] == tid and r["reviewer"] == alice)
    assert row["rationale_action"] == "edited" and row["rationale"] == row["model_rationale"]
    # ... and without origins (an older server) the texts are compared
    for region in (r for a in task["annotations"] for r in a["result"]):
        region.pop("origin")
    rows, _ = do_import(tmp_path / "plain", f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH, USERS)
    row = next(r for r in rows if r["task_id"] == tid and r["reviewer"] == alice)
    assert row["rationale_action"] == "kept"


def test_reviewer_names_from_ids_users_and_mapping(tmp_path):
    export = f"label_studio=[{LS / 'export_json.json'}]"
    rows, stats = do_import(tmp_path, export, BATCH)
    assert stats["per_reviewer"] == {"user-1": 5, "user-2": 5} and stats["unnamed_reviewers"] == 10
    rows, stats = do_import(tmp_path, export, BATCH, USERS, "reviewer_names={'2': bob}")
    assert stats["per_reviewer"] == {"alice@example.org": 5, "bob": 5}
    (tmp_path / "users.yaml").write_text("1: Dr. Li\n2: Dr. Wang\n")
    rows, stats = do_import(tmp_path, f"label_studio=[{LS / 'export_json_min.json'}]", BATCH,
                            f"users={tmp_path / 'users.yaml'}")
    assert stats["per_reviewer"] == {"Dr. Li": 5, "Dr. Wang": 5}
    # the snapshot's user objects carry the e-mail: no user list needed
    rows, stats = do_import(tmp_path, f"label_studio=[{LS / 'export_snapshot.json'}]", BATCH)
    assert stats["per_reviewer"] == {"alice@example.org": 5, "bob@example.org": 5}
    (tmp_path / "users.json").write_text('{"1": ""}')
    with pytest.raises(DataError, match=r"users.json, field '1'"):
        do_import(tmp_path, export, BATCH, f"users={tmp_path / 'users.json'}")


def test_refused_formats_name_the_format_and_exit_2(tmp_path):
    for body, kind in ((b"PK\x03\x04rest", "a ZIP archive"), (b"<annotation><object/></annotation>", "an XML export"),
                       (b"-DOCSTART- -X- O\n", "a CoNLL 2003 export")):
        path = tmp_path / "export.bin"
        path.write_bytes(body)
        with pytest.raises(DataError, match=f"this is {kind}"):
            do_import(tmp_path, f"label_studio=[{path}]", BATCH)
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [], "categories": [], "annotations": []}')
    with pytest.raises(DataError, match="COCO export"):
        do_import(tmp_path, f"label_studio=[{coco}]", BATCH)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1,\n "data": }]')
    with pytest.raises(DataError, match=r"broken.json, line 2: invalid JSON"):
        do_import(tmp_path, f"label_studio=[{broken}]", BATCH)
    cli = subprocess.run([sys.executable, "-m", "pipeline", "label", "import", "--config",
                          str(ROOT / "pipeline/label/configs/import_demo.yaml"), f"out_dir={tmp_path / 'cli'}",
                          f"label_studio=[{LS / 'export.csv'}]", BATCH], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "export.csv: this is a CSV export" in cli.stderr and "Export -> JSON" in cli.stderr
    assert not (tmp_path / "cli" / "reviews.jsonl").exists()


def test_bad_label_names_file_task_and_field(tmp_path):
    tasks = recorded("export_json.json")
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["teleport"]
    with pytest.raises(DataError) as err:
        do_import(tmp_path, f"label_studio=[{write_export(tmp_path, tasks, 'bad.json')}]", BATCH)
    msg = str(err.value)
    assert "bad.json" in msg and f"task {tasks[1]['id']}" in msg and "teleport" in msg
    assert err.value.field == "[1].annotations[0].result[0].value.choices"
    assert not (tmp_path / "imp" / "reviews.jsonl").exists()  # nothing half-written
    flat = recorded("export_json_min.json")
    flat[0]["motion"] = "teleport"
    with pytest.raises(DataError, match=r"field '\[0\].motion'.*unknown motion label 'teleport'"):
        do_import(tmp_path, f"label_studio=[{write_export(tmp_path, flat, 'min.json')}]", BATCH)
    del flat[0]["sample_id"]
    with pytest.raises(DataError, match=r"field '\[0\].sample_id'.*missing sample_id"):
        do_import(tmp_path, f"label_studio=[{write_export(tmp_path, flat, 'min.json')}]", BATCH)


def test_two_choices_missing_reviewer_and_unknown_tasks(tmp_path):
    tasks = recorded("export_json.json")
    tid = tasks[0]["id"]
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["flyby", "hovering"]
    with pytest.raises(DataError, match=f"task {tid}.*exactly one motion"):
        do_import(tmp_path, f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH)
    tasks = recorded("export_json.json")
    del tasks[0]["annotations"][0]["completed_by"]
    with pytest.raises(DataError, match=rf"field '\[0\].annotations\[0\].completed_by'.*task {tid}"):
        do_import(tmp_path, f"label_studio=[{write_export(tmp_path, tasks)}]", BATCH)
    tasks = recorded("export_json.json")
    tasks[0]["data"]["sample_id"] = "not-in-the-batch"
    export = f"label_studio=[{write_export(tmp_path, tasks)}]"
    with pytest.raises(DataError, match=r"field '\[0\].data.sample_id'.*'not-in-the-batch' is in none of the batch"):
        do_import(tmp_path, export, BATCH)
    rows, stats = do_import(tmp_path, export, BATCH, "unknown_tasks=ignore")
    assert stats["unknown_tasks_ignored"] == 1 and len(rows) == 10 - len(tasks[0]["annotations"])


def test_batch_is_required_and_checked(tmp_path):
    export = f"label_studio=[{LS / 'export_json.json'}]"
    with pytest.raises(ConfigError, match="tasks: give the tasks.jsonl"):
        do_import(tmp_path, export)
    with pytest.raises(DataError, match="expected label.export's tasks.jsonl"):
        do_import(tmp_path, export, f"tasks=[{LS / 'tasks.json'}]")
    # a batch whose pre-annotation differs from what the project showed is reported
    batch = load_jsonl(LS / "tasks.jsonl")
    batch[0]["predicted"]["operation"] = "docking"
    write_jsonl(tmp_path / "other.jsonl", batch)
    _, stats = do_import(tmp_path, export, f"tasks=[{tmp_path / 'other.jsonl'}]")
    assert stats["prefill_mismatch"] >= 1


def test_import_plain_jsonl(tmp_path, exported):
    out, _ = exported
    tasks = load_jsonl(out / "tasks.jsonl")
    ann = []
    for t in tasks[:2]:
        ann.append({**t, "reviewer": "carol", "labels": {**t["predicted"], "task": "surveillance"}})
    ann.append({**tasks[2], "reviewer": "carol", "labels": t["predicted"], "expert_rationale": "Better reasoning."})
    write_jsonl(tmp_path / "plain.jsonl", ann)
    rows, stats = do_import(tmp_path, f"jsonl=[{tmp_path / 'plain.jsonl'}]", f"label_studio=[{LS / 'export_json.json'}]",
                            BATCH, USERS)
    plain = [r for r in rows if r["source"] == "jsonl"]
    assert len(plain) == 3 and stats["reviews"] == 13
    assert [r["accepted"] for r in plain] == [False, False, True]
    assert plain[2]["rationale"] == "Better reasoning." and plain[2]["rationale_edited"]
    assert [r["rationale_action"] for r in plain] == ["kept", "kept", "edited"]
    assert plain[0]["model_labels"] == tasks[0]["predicted"] and not plain[0]["rationale_edited"]
    # the review schema itself is accepted too (round trip)
    rows2, _ = do_import(tmp_path / "again", f"jsonl=[{tmp_path / 'imp' / 'reviews.jsonl'}]")
    assert rows2 == [{**r, "source": "jsonl"} for r in rows]
    write_jsonl(tmp_path / "bad.jsonl", [{"sample_id": "s00", "reviewer": "x", "labels": {"moton": "flyby"}}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 1, field 'labels'.*unknown level"):
        do_import(tmp_path, f"jsonl=[{tmp_path / 'bad.jsonl'}]")
    shutil.rmtree(tmp_path / "again")

"""label.export (Label Studio tasks, XML config, JSONL) and label.import (LS export fixture, plain JSONL)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from label_helpers import pool_fixture

from pipeline.core.config import load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.taxonomy import LABELS, LEVELS
from pipeline.label.export import ExportConfig, build_labeling_config, run_export
from pipeline.label.importer import ImportConfig, run_import
from pipeline.label.select import SelectConfig, run_select

FIXTURE = Path(__file__).parent / "fixtures" / "label_studio_export.json"


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


def do_import(tmp_path, *overrides):
    cfg = load_config(ImportConfig, None, [f"out_dir={tmp_path / 'imp'}", *overrides])
    result = run_import(cfg)
    return load_jsonl(tmp_path / "imp" / "reviews.jsonl"), result.stats


def test_import_label_studio_fixture(tmp_path):
    rows, stats = do_import(tmp_path, f"label_studio=[{FIXTURE}]", "reviewer_names={'1': alice, '2': bob}")
    assert stats["cancelled"] == 1 and stats["annotations"] == 4 and stats["tasks"] == 3
    assert stats["tasks_without_annotations"] == 1 and stats["multi_reviewed_tasks"] == 1
    by = {(r["sample_id"], r["reviewer"]): r for r in rows}
    assert set(by) == {("s01", "alice"), ("s01", "bob"), ("s02", "wang@example.org")}
    alice = by["s01", "alice"]
    assert alice["labels"] == {"motion": "flyby", "operation": "photographing", "task": "surveillance"}
    assert alice["model_labels"]["task"] == "observation" and not alice["accepted"]
    assert alice["rationale_edited"] and alice["rationale"].count("\n") == 1
    assert (alice["lead_time"], alice["created_at"], alice["updated_at"]) == (
        42.5, "2025-03-01T10:00:00.000000Z", "2025-03-01T10:00:30.000000Z")
    assert alice["task_id"] == 101 and alice["batch_id"] == "batch-001" and alice["source"] == "label_studio"
    bob = by["s01", "bob"]
    assert bob["accepted"] and not bob["rationale_edited"]
    wang = by["s02", "wang@example.org"]
    # Chinese display name and capitalised English display name both map to canonical labels
    assert wang["labels"] == {"motion": "fly_around", "operation": "photographing", "task": "detection"}
    assert wang["rationale"] == "It stays put." and not wang["rationale_edited"]  # no rationale region
    assert wang["model_version"] == "tuned@abc"


def test_import_bad_label_names_task_and_field(tmp_path):
    tasks = json.loads(FIXTURE.read_text())
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["teleport"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(DataError) as err:
        do_import(tmp_path, f"label_studio=[{bad}]")
    msg = str(err.value)
    assert "bad.json" in msg and "task 102" in msg and "teleport" in msg
    assert err.value.field == "annotations[0].result[0].value.choices"
    assert not (tmp_path / "imp" / "reviews.jsonl").exists()  # nothing half-written


def test_import_rejects_two_choices_and_missing_reviewer(tmp_path):
    tasks = json.loads(FIXTURE.read_text())
    tasks[0]["annotations"][1]["result"][0]["value"]["choices"] = ["flyby", "hovering"]
    bad = tmp_path / "two.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="task 101.*exactly one motion"):
        do_import(tmp_path, f"label_studio=[{bad}]")
    tasks = json.loads(FIXTURE.read_text())
    del tasks[1]["annotations"][0]["completed_by"]
    bad.write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="task 102"):
        do_import(tmp_path, f"label_studio=[{bad}]")


def test_import_plain_jsonl(tmp_path, exported):
    out, _ = exported
    tasks = load_jsonl(out / "tasks.jsonl")
    ann = []
    for t in tasks[:2]:
        ann.append({**t, "reviewer": "carol", "labels": {**t["predicted"], "task": "surveillance"}})
    ann.append({**tasks[2], "reviewer": "carol", "labels": t["predicted"], "expert_rationale": "Better reasoning."})
    write_jsonl(tmp_path / "plain.jsonl", ann)
    rows, stats = do_import(tmp_path, f"jsonl=[{tmp_path / 'plain.jsonl'}]", f"label_studio=[{FIXTURE}]")
    plain = [r for r in rows if r["source"] == "jsonl"]
    assert len(plain) == 3 and stats["reviews"] == 6
    assert [r["accepted"] for r in plain] == [False, False, True]
    assert plain[2]["rationale"] == "Better reasoning." and plain[2]["rationale_edited"]
    assert plain[0]["model_labels"] == tasks[0]["predicted"] and not plain[0]["rationale_edited"]
    # the review schema itself is accepted too (round trip)
    rows2, _ = do_import(tmp_path / "again", f"jsonl=[{tmp_path / 'imp' / 'reviews.jsonl'}]")
    assert rows2 == [{**r, "source": "jsonl"} for r in rows]
    write_jsonl(tmp_path / "bad.jsonl", [{"sample_id": "s00", "reviewer": "x", "labels": {"moton": "flyby"}}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 1, field 'labels'.*unknown level"):
        do_import(tmp_path, f"jsonl=[{tmp_path / 'bad.jsonl'}]")
    shutil.rmtree(tmp_path / "again")

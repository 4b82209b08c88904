"""label.review driven by piped stdin: accept, relabel, edit rationale, skip, quit and resume."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.label.review import STAGE, ReviewConfig, run_review

ROOT = Path(__file__).resolve().parent.parent
PRED = {"motion": "flyby", "operation": "photographing", "task": "observation"}


@pytest.fixture()
def tasks(tmp_path):
    rows = [{"sample_id": f"t{i}", "split": "train", "batch_id": "b1", "strategy": "entropy", "score": 0.5,
             "text": f"Known information of t{i}.\nSecond line.", "predicted": PRED,
             "rationale": "Model reasoning.", "confidence": 0.6, "model_version": "tuned@x"} for i in range(3)]
    path = tmp_path / "tasks.jsonl"
    write_jsonl(path, rows)
    return path


def session(tmp_path, tasks, script: str, reviewer: str = "alice"):
    cfg = load_config(ReviewConfig, None, [f"out_dir={tmp_path / 'rev'}", f"tasks={tasks}", f"reviewer={reviewer}"])
    out = io.StringIO()
    result = run_review(cfg, inp=io.StringIO(script), out=out)
    return result.stats, out.getvalue(), load_jsonl(tmp_path / "rev" / "reviews.jsonl")


def test_accept_relabel_edit_skip(tmp_path, tasks):
    script = "\n".join([
        "a",                                   # t0: accept the model's labels
        "x",                                   # t1: unknown command, asked again
        "r", "2", "", "attack",                # relabel: motion #2 (flyby), keep operation, task by name
        "e", "Expert line one.", "line two.", ".",  # edit rationale (two lines)
        "r", "99", "hover", "", "",            # relabel again: bad number re-asked, then alias 'hover'
        "a",                                   # save
        "s",                                   # t2: skip
    ]) + "\n"
    stats, shown, rows = session(tmp_path, tasks, script)
    assert stats["saved"] == 2 and stats["skipped"] == 1 and stats["remaining"] == 1 and stats["quit"] == 0
    assert "Known information of t0." in shown and "unknown command" in shown and "not a motion label" in shown
    assert [r["sample_id"] for r in rows] == ["t0", "t1"]
    t0, t1 = rows
    assert t0["accepted"] and t0["labels"] == PRED and not t0["rationale_edited"] and t0["rationale"] == "Model reasoning."
    assert t1["labels"] == {"motion": "hovering", "operation": "photographing", "task": "attack"}
    assert not t1["accepted"] and t1["rationale"] == "Expert line one.\nline two." and t1["rationale_edited"]
    assert t1["reviewer"] == "alice" and t1["source"] == "review" and t1["batch_id"] == "b1"
    assert t1["model_labels"] == PRED and t1["lead_time"] >= 0 and t1["updated_at"].endswith("Z")


def test_quit_and_resume(tmp_path, tasks):
    stats, _, rows = session(tmp_path, tasks, "a\nq\n")
    assert stats["saved"] == 1 and stats["quit"] == 1 and len(rows) == 1
    # resume: t0 is done, t1 comes first; end of input quits and keeps what was saved
    stats, shown, rows = session(tmp_path, tasks, "s\n")
    assert stats["already_reviewed"] == 1 and "t0 " not in shown and "t1 " in shown and len(rows) == 1
    stats, _, rows = session(tmp_path, tasks, "a\na\n")
    assert stats["saved"] == 2 and [r["sample_id"] for r in rows] == ["t0", "t1", "t2"]
    stats, _, rows = session(tmp_path, tasks, "")
    assert stats["saved"] == 0 and stats["remaining"] == 0
    # a second reviewer shares the folder and reviews everything again
    stats, _, rows = session(tmp_path, tasks, "a\n", reviewer="bob")
    assert stats["already_reviewed"] == 0 and stats["saved"] == 1
    assert [(r["sample_id"], r["reviewer"]) for r in rows][-1] == ("t0", "bob") and len(rows) == 4


def test_progress_saved_before_a_crash(tmp_path, tasks):
    class Boom(io.StringIO):
        def readline(self, *a):
            line = super().readline(*a)
            if line == "":
                raise RuntimeError("terminal died")
            return line

    cfg = load_config(ReviewConfig, None, [f"out_dir={tmp_path / 'rev'}", f"tasks={tasks}"])
    with pytest.raises(RuntimeError):
        run_review(cfg, inp=Boom("a\n"), out=io.StringIO())
    assert [r["sample_id"] for r in load_jsonl(tmp_path / "rev" / "reviews.jsonl")] == ["t0"]


def test_always_runs_and_validates_tasks(tmp_path, tasks, monkeypatch):
    assert STAGE.always_run
    cfg = load_config(ReviewConfig, None, [f"out_dir={tmp_path / 'rev'}", f"tasks={tasks}"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("q\n"))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    m1 = run_stage(STAGE, cfg)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\n"))
    m2 = run_stage(STAGE, cfg)
    assert m1["stats"]["saved"] == 0 and m2["stats"]["saved"] == 1
    write_jsonl(tmp_path / "bad.jsonl", [{"sample_id": "z", "text": "x", "predicted": {"motion": "warp"}}])
    with pytest.raises(DataError, match="task z"):
        run_review(load_config(ReviewConfig, None, [f"out_dir={tmp_path / 'r2'}", f"tasks={tmp_path / 'bad.jsonl'}"]),
                   inp=io.StringIO(""), out=io.StringIO())


def test_cli_with_piped_stdin(tmp_path, tasks):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "label", "review", "--config", "pipeline/label/configs/review_demo.yaml",
         f"out_dir={tmp_path / 'cli'}", f"tasks={tasks}", "reviewer=carol"],
        input="a\nr\n1\n\n\na\nq\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"saved": 2' in proc.stdout and "[a]ccept" in proc.stderr
    rows = load_jsonl(tmp_path / "cli" / "reviews.jsonl")
    assert rows[1]["labels"]["motion"] == "hovering" and rows[1]["reviewer"] == "carol"

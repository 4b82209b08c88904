"""label.merge: overrides, provenance, majority/flag policies, splits kept, versions never touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from label_helpers import DEFAULT_LABELS, make_record, write_records

from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.label.common import make_review
from pipeline.label.merge import STAGE, MergeConfig, run_merge, vote

L = DEFAULT_LABELS  # flyby / photographing / observation


def review(sid, reviewer, labels=None, rationale="Model reasoning.", edited=False, when="2025-03-01T10:00:00Z", **kw):
    return make_review(sample_id=sid, reviewer=reviewer, labels={**L, **(labels or {})}, model_labels=L,
                       rationale=rationale, rationale_edited=edited, model_rationale="Model reasoning.",
                       batch_id="batch-001", model_version="tuned@x", updated_at=when, source="review", **kw)


@pytest.fixture()
def base(tmp_path):
    recs = {
        "train": [make_record("a", "train", rationale="Old reasoning."), make_record("b", "train"),
                  make_record("x", "train")],
        "dev": [make_record("c", "dev"), make_record("d", "dev")],
        "test": [make_record("e", "test", labels={"motion": "hovering", "operation": None, "task": None})],
    }
    return write_records(tmp_path / "base", recs)


@pytest.fixture()
def reviews(tmp_path):
    rows = [
        # a: one expert relabels motion and rewrites the rationale
        review("a", "alice", {"motion": "fly_around"}, rationale="Range stays in a band: fly-around.", edited=True),
        # b: 2 vs 1 on task -> majority changes it, flag policy flags it
        review("b", "alice", {"task": "surveillance"}, rationale=None),
        review("b", "bob", {"task": "surveillance"}, rationale=None),
        review("b", "carol"),
        # c: 1 vs 1 on operation -> flagged under both policies
        review("c", "alice", {"operation": "repair"}),
        review("c", "bob", {"operation": "docking"}),
        # d: confirmed as is
        review("d", "bob"),
        # e (test): an expert fills a label that was missing, accepting the model's labels
        make_review(sample_id="e", reviewer="alice", labels={"motion": "hovering", "operation": "none", "task": None},
                    model_labels={"motion": "hovering", "operation": "none", "task": "unclear"},
                    rationale="Hovers, does nothing.", model_rationale="Hovers, does nothing.", source="jsonl"),
        # a second, later review of d by bob replaces his first
        review("d", "bob", {"task": "unclear"}, when="2025-03-02T10:00:00Z"),
    ]
    path = tmp_path / "reviews.jsonl"
    write_jsonl(path, rows)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def merge(tmp_path, base, reviews, *overrides):
    cfg = load_config(MergeConfig, None, [f"out_dir={tmp_path / 'ds'}", f"data_dir={base}", f"reviews=[{reviews}]",
                                          *overrides])
    return run_merge(cfg).stats


def by_id(folder: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for s in ("train", "dev", "test") for r in load_jsonl(folder / f"{s}.jsonl")}


def test_vote():
    assert vote([], "majority") == (None, False)
    assert vote(["a", "a"], "flag") == ("a", False)
    assert vote(["a", "a", "b"], "majority") == ("a", False)
    assert vote(["a", "a", "b"], "flag") == (None, True)
    assert vote(["a", "b"], "majority") == (None, True)


def test_majority_merge(tmp_path, base, reviews):
    before = tree_digest(base)
    stats = merge(tmp_path, base, reviews)
    v1 = tmp_path / "ds" / "v1"
    assert stats["version"] == 1 and (tmp_path / "ds" / "LATEST").read_text().strip() == "v1"
    assert tree_digest(base) == before  # base untouched
    recs = by_id(v1)
    # overrides
    assert recs["a"]["labels"]["motion"] == "fly_around" and recs["a"]["rationale"] == "Range stays in a band: fly-around."
    assert recs["b"]["labels"]["task"] == "surveillance"
    assert recs["b"]["rationale"] is None  # labels changed and the winning reviewers did not accept the model
    assert recs["c"]["labels"] == L and recs["c"]["provenance"] == []  # flagged: unchanged
    assert recs["d"]["labels"]["task"] == "unclear"  # bob's later review wins
    assert recs["e"]["labels"] == {"motion": "hovering", "operation": "none", "task": None}
    assert recs["e"]["rationale"] == "Hovers, does nothing."  # accepted model rationale fits the new labels
    assert recs["x"] == make_record("x", "train")  # not reviewed: identical
    # provenance
    (prov,) = recs["a"]["provenance"]
    assert prov["reviewer"] == "alice" and prov["batch_id"] == "batch-001" and prov["model_version"] == "tuned@x"
    assert prov["time"] == "2025-03-01T10:00:00Z" and prov["old_labels"] == L and prov["changed"] == ["motion"]
    assert prov["old_rationale"] == "Old reasoning."
    assert recs["b"]["provenance"][0]["reviewers"] == ["alice", "bob", "carol"]
    # splits unchanged, same order, sidecars copied
    for split in ("train", "dev", "test"):
        assert [r["sample_id"] for r in load_jsonl(v1 / f"{split}.jsonl")] == \
               [r["sample_id"] for r in load_jsonl(base / f"{split}.jsonl")]
        assert np.load(v1 / "trajectories" / f"{split}.npz")["states"].shape[1:] == (3, 7)
    # adjudication and stats
    (adj,) = load_jsonl(v1 / "adjudication.jsonl")
    assert adj["sample_id"] == "c" and adj["conflicts"] == {"operation": {"docking": ["bob"], "repair": ["alice"]}}
    assert stats["flagged"] == 1 and stats["changed"] == 4 and stats["reviewed"] == 5
    assert stats["per_class_changes"]["motion"] == {"flyby->fly_around": 1}
    assert stats["per_class_changes"]["task"] == {"observation->surveillance": 1, "observation->unclear": 1}
    assert stats["per_class_changes"]["operation"] == {"None->none": 1}
    assert stats["per_class_gained"]["task"] == {"surveillance": 1, "unclear": 1}
    assert len(load_jsonl(v1 / "changes.jsonl")) == 4


def test_flag_policy(tmp_path, base, reviews):
    stats = merge(tmp_path, base, reviews, "policy=flag")
    recs = by_id(tmp_path / "ds" / "v1")
    assert recs["b"]["labels"] == L and stats["flagged"] == 2
    assert {r["sample_id"] for r in load_jsonl(tmp_path / "ds" / "v1" / "adjudication.jsonl")} == {"b", "c"}
    assert recs["a"]["labels"]["motion"] == "fly_around"  # unanimous items still merge


def test_new_version_keeps_previous(tmp_path, base, reviews):
    merge(tmp_path, base, reviews)
    v1 = tmp_path / "ds" / "v1"
    snapshot = tree_digest(v1)
    # round 2 builds on v1 with a new review of x
    write_jsonl(tmp_path / "r2.jsonl", [review("x", "dan", {"motion": "retreat"})])
    stats = merge(tmp_path, v1, tmp_path / "r2.jsonl")
    assert stats["version"] == 2 and (tmp_path / "ds" / "LATEST").read_text().strip() == "v2"
    assert tree_digest(v1) == snapshot
    recs = by_id(tmp_path / "ds" / "v2")
    assert recs["x"]["labels"]["motion"] == "retreat" and recs["a"]["labels"]["motion"] == "fly_around"
    assert len(recs["a"]["provenance"]) == 1 and len(recs["x"]["provenance"]) == 1
    with pytest.raises(ConfigError, match="never overwritten"):
        merge(tmp_path, v1, tmp_path / "r2.jsonl", "version=1")
    assert not list((tmp_path / "ds").glob(".v*"))  # no temp folder left behind


def test_unknown_sample_and_bad_review(tmp_path, base, reviews):
    write_jsonl(tmp_path / "r.jsonl", [review("nope", "alice")])
    with pytest.raises(DataError, match="r.jsonl, line 1, field 'sample_id'.*nope"):
        merge(tmp_path, base, tmp_path / "r.jsonl")
    assert not (tmp_path / "ds" / "v1").exists() and not list((tmp_path / "ds").glob(".v*"))
    stats = merge(tmp_path, base, tmp_path / "r.jsonl", "unknown_samples=ignore")
    assert stats["unknown_samples_ignored"] == 1
    write_jsonl(tmp_path / "bad.jsonl", [{**review("a", "alice"), "labels": {"motion": "warp"}}])
    with pytest.raises(DataError, match="field 'labels.motion'.*warp"):
        merge(tmp_path, base, tmp_path / "bad.jsonl")


def test_unversioned_output_and_stage(tmp_path, base, reviews):
    cfg = load_config(MergeConfig, None, [f"out_dir={tmp_path / 'flat'}", f"data_dir={base}", f"reviews=[{reviews}]",
                                          "versioned=false"])
    manifest = run_stage(STAGE, cfg)
    assert manifest["stats"]["changed"] == 4 and "train.jsonl" in manifest["outputs"]
    assert "trajectories/train.npz" in manifest["outputs"]
    assert run_stage(STAGE, cfg)["timings"] == manifest["timings"]  # up to date
    with pytest.raises(ConfigError):
        run_merge(load_config(MergeConfig, None, [f"out_dir={base}", f"data_dir={base}", "versioned=false"]))

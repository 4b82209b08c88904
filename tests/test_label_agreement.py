"""label.agreement: kappa / alpha against hand-computed values, acceptance and correction matrix."""

from __future__ import annotations

import json

import pytest

from pipeline.core.config import load_config
from pipeline.core.io import write_jsonl
from pipeline.core.taxonomy import LABELS
from pipeline.label.agreement import AgreementConfig, compute_agreement, run_agreement
from pipeline.label.common import load_reviews, make_review

MODEL = {"motion": "flyby", "operation": "none", "task": "unclear"}


def rev(sid, reviewer, motion, task="unclear"):
    return make_review(sample_id=sid, reviewer=reviewer, labels={"motion": motion, "operation": "none", "task": task},
                       model_labels=MODEL, source="review")


@pytest.fixture()
def reviews(tmp_path):
    a = ["flyby", "flyby", "hovering", "hovering"]
    b = ["flyby", "hovering", "hovering", "hovering"]
    rows = [rev(f"t{i}", "alice", m) for i, m in enumerate(a)] + [rev(f"t{i}", "bob", m) for i, m in enumerate(b)]
    path = tmp_path / "reviews.jsonl"
    write_jsonl(path, rows)
    return path


def test_two_reviewers_by_hand(tmp_path, reviews):
    result = compute_agreement(load_reviews([reviews]))
    motion = result["levels"]["motion"]
    (pair,) = motion["pairwise"]
    # p_o = 3/4; p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert pair["n"] == 4 and pair["observed"] == pytest.approx(0.75) and pair["kappa"] == pytest.approx(0.5)
    # nominal alpha from the coincidence matrix: o_ff=2, o_fh=o_hf=1, o_hh=4; n_f=3, n_h=5, n=8
    # D_o = 2/8, D_e = 2*3*5/(8*7); alpha = 1 - D_o/D_e = 8/15
    assert motion["krippendorff_alpha"] == pytest.approx(8 / 15)
    # acceptance of the model's motion label (flyby): 3 of the 8 reviews
    mve = motion["model_vs_expert"]
    assert mve["acceptance_rate"] == pytest.approx(3 / 8) and mve["corrections"] == {"flyby->hovering": 5}
    assert mve["acceptance_per_reviewer"] == {"alice": 0.5, "bob": 0.25}
    labels = mve["matrix"]["labels"]
    assert labels == list(LABELS["motion"])
    row = mve["matrix"]["rows_model_cols_expert"][labels.index("flyby")]
    assert row[labels.index("flyby")] == 3 and row[labels.index("hovering")] == 5 and sum(row) == 8
    # a level on which everybody agrees on a single category: kappa/alpha undefined, not an error
    task = result["levels"]["task"]
    assert task["pairwise"][0]["kappa"] is None and task["pairwise"][0]["observed"] == 1.0
    assert task["krippendorff_alpha"] is None and task["model_vs_expert"]["acceptance_rate"] == 1.0
    assert result["acceptance_rate_all_levels"] == pytest.approx(3 / 8)


def test_three_reviewers_alpha_and_outputs(tmp_path, reviews):
    # carol rates t0..t2 only (uneven overlap); alpha uses every pairable rating
    write_jsonl(tmp_path / "carol.jsonl", [rev("t0", "carol", "flyby"), rev("t1", "carol", "hovering"),
                                           rev("t2", "carol", "flyby", task="attack")])
    cfg = load_config(AgreementConfig, None, [f"out_dir={tmp_path / 'agr'}",
                                              f"reviews=[{reviews}, {tmp_path / 'carol.jsonl'}]"])
    stats = run_agreement(cfg).stats
    data = json.loads((tmp_path / "agr" / "agreement.json").read_text())
    motion = data["levels"]["motion"]
    pairs = {tuple(p["reviewers"]): p for p in motion["pairwise"]}
    assert set(pairs) == {("alice", "bob"), ("alice", "carol"), ("bob", "carol")}
    assert pairs["alice", "carol"]["n"] == 3
    # alice/carol: [f,f,h] vs [f,h,f]: p_o = 1/3, p_e = (2/3)(2/3) + (1/3)(1/3) = 5/9 -> kappa = -1/2
    assert pairs["alice", "carol"]["kappa"] == pytest.approx(-0.5)
    # coincidences: t0 (f,f,f): o_ff += 3; t1 (f,h,h): o_fh=o_hf += 1, o_hh += 1; t2 (h,h,f): same; t3 (h,h): o_hh += 2
    # o_ff=3, o_fh=o_hf=2, o_hh=4; n_f=5, n_h=6, n=11; D_o = 4/11, D_e = 2*5*6/(11*10) -> alpha = 1 - (4/11)/(60/110) = 1/3
    assert motion["krippendorff_alpha"] == pytest.approx(1 / 3)
    assert motion["alpha_items"] == 4 and data["multi_reviewed_tasks"] == 4
    md = (tmp_path / "agr" / "agreement.md").read_text()
    assert "Krippendorff" in md and "alice / carol" in md and "flyby->hovering" in md
    assert stats["reviewers"] == 3 and stats["motion_alpha"] == pytest.approx(1 / 3, abs=1e-6)

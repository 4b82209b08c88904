"""End-to-end ``evaluate`` with tiny:llama on fixture records; resume skips answered rows."""

from __future__ import annotations

import json

import pytest
import torch
from record_fixtures import write_fixture_dirs

import pipeline.models.scoring as scoring
from eval.cache import PARTIAL
from eval.config import EvalConfig
from eval.stage import STAGE
from pipeline.core.config import load_config
from pipeline.core.io import DataError, load_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import LABELS, LEVELS

ROWS_PER_RUN = 2 * 2 * (4 + 2 * 6)  # variants x modes x (clean 4 + 2 perturbed samples x 6 cells: noise 1,4, typos 1,
# option_order 1, synonyms 1, language 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaldata")
    return write_fixture_dirs(root, n=4, langs=("en", "zh"))


def make_cfg(data, out_dir, *extra):
    records, prompts = data
    return load_config(EvalConfig, "eval/configs/tiny.yaml",
                       [f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={out_dir}", *extra])


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalout")
    cfg = make_cfg(data, out)
    return cfg, run_stage(STAGE, cfg)


def test_end_to_end_outputs(first_run):
    cfg, manifest = first_run
    out = cfg.out_dir
    rows = load_jsonl(out / "predictions.jsonl")
    assert len(rows) == ROWS_PER_RUN == manifest["stats"]["rows"]
    for r in rows:
        assert set(r["parsed"]) == set(LEVELS) and set(r["correct"]) == set(LEVELS)
        assert r["mode"] in ("score", "generate") and r["variant"] in ("plain", "cot")
        if r["mode"] == "score":
            for lvl in LEVELS:
                assert set(r["probs"][lvl]) == set(LABELS[lvl])
                assert sum(r["probs"][lvl].values()) == pytest.approx(1.0, abs=1e-6)
                assert r["parsed"][lvl] == max(r["probs"][lvl], key=r["probs"][lvl].get)
    keys = {(r["variant"], r["mode"], r["perturbation"], r["severity"], r["sample_id"]) for r in rows}
    assert len(keys) == len(rows)
    assert any(r["perturbation"] == "noise" and r["severity"] == 4 and r["label_may_change"] for r in rows)
    # the perturbed subset is the same samples for every variant
    subset = {v: {r["sample_id"] for r in rows if r["variant"] == v and r["perturbation"] != "clean"}
              for v in ("plain", "cot")}
    assert subset["plain"] == subset["cot"] and len(subset["plain"]) == 2
    report = json.loads((out / "report.json").read_text())
    assert len(report["groups"]) == 4
    assert report["manifest"]["models"][0]["spec"] == "tiny:llama"
    assert set(report["manifest"]["data_sha256"]) == {str(p) for p in STAGE.inputs(cfg)}
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / PARTIAL).exists()


def test_up_to_date_run_is_skipped(first_run):
    cfg, manifest = first_run
    again = run_stage(STAGE, cfg)
    assert again["timings"] == manifest["timings"]


def test_resume_answers_only_missing_rows(first_run, data, tmp_path, monkeypatch):
    cfg, _ = first_run
    # copy half of the cache (plus a torn last line, as after a crash) into a fresh out_dir
    lines = (cfg.out_dir / PARTIAL).read_text().splitlines()
    keep = lines[: len(lines) // 2]
    (tmp_path / PARTIAL).parent.mkdir(parents=True)
    (tmp_path / PARTIAL).write_text("\n".join(keep) + "\n" + lines[-1][:40])
    answered = []
    real = scoring.answer_rows

    def counting(lm, tok, mode, prompts, langs, batch_size, max_new_tokens):
        answered.extend(prompts)
        return real(lm, tok, mode, prompts, langs, batch_size, max_new_tokens)

    monkeypatch.setattr(scoring, "answer_rows", counting)
    resumed = run_stage(STAGE, make_cfg(data, tmp_path))
    assert len(answered) == ROWS_PER_RUN - len(keep)
    assert resumed["stats"]["rows"] == ROWS_PER_RUN
    # a third run with everything cached never calls the model
    answered.clear()
    run_stage(STAGE, make_cfg(data, tmp_path), force=True)
    assert answered == []


def test_bad_prompt_row_names_file_line_and_field(data, tmp_path):
    records, prompts = data
    bad = tmp_path / "prompts" / "plain"
    bad.mkdir(parents=True)
    rows = (prompts / "plain" / "test.jsonl").read_text().splitlines()
    row = json.loads(rows[1])
    row["label"]["motion"] = "teleport"
    (bad / "test.jsonl").write_text("\n".join([rows[0], json.dumps(row)]) + "\n")
    cfg = load_config(EvalConfig, "eval/configs/tiny.yaml",
                      [f"data_dir={records}", f"prompts_dir={tmp_path / 'prompts'}", f"out_dir={tmp_path / 'o'}",
                       "variants=[plain]"])
    with pytest.raises(DataError) as err:
        run_stage(STAGE, cfg)
    assert err.value.line == 2 and err.value.field == "label.motion"
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


def test_learning_curve_is_read_from_the_train_stage(data, tmp_path):
    """A tuned model's curve: the train stage's dev evaluations, with the evaluated checkpoint's step; metrics.jsonl
    is a declared input (a retrained run re-evaluates)."""
    from eval.provenance import learning_curves
    from eval.stage import evaluate_inputs

    train = tmp_path / "train"
    (train / "best").mkdir(parents=True)
    (train / "best" / "prefix_config.json").write_text(json.dumps({"step": 20, "kind": "encoder"}))
    rows = [{"kind": "train", "step": 10, "loss": 1.0},
            {"kind": "eval", "step": 10, "dev_loss": 0.9, "dev_acc": 0.25, "dev_mode": "score", "dev_rows": 200},
            {"kind": "eval", "step": 20, "dev_loss": 0.5, "dev_acc": 0.75, "dev_mode": "score", "dev_rows": 200}]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg(data, tmp_path / "out", f"train_dir={train}",
                   "models=[{tag: base, spec: 'tiny:llama'}, {tag: tuned, spec: 'tiny:llama', checkpoint: best}]")
    curves = learning_curves(cfg)
    assert set(curves) == {"tuned"} and curves["tuned"]["evaluated_step"] == 20
    assert [p["dev_acc"] for p in curves["tuned"]["points"]] == [0.25, 0.75]
    assert train / "metrics.jsonl" in evaluate_inputs(cfg)
    assert learning_curves(make_cfg(data, tmp_path / "out2")) == {}  # base models only: no curve

"""Robustness statistics and report files from synthetic prediction rows (no model); the compare stage."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from html.parser import HTMLParser

import pytest

from eval.compare import STAGE as COMPARE
from eval.compare import CompareConfig
from eval.report import build_report, render_html, render_markdown, write_reports
from eval.robustness import robustness_aggregates, robustness_table, std_ratios
from pipeline.core.stage import run_stage

ROOT = Path(__file__).resolve().parent.parent

GOLD = {"motion": "flyby", "operation": "photographing", "task": "observation"}
WRONG = {"motion": "hovering", "operation": "photographing", "task": "observation"}


def row(tag, sid, pert, sev, seed, ok, may_change=False, probs=None):
    parsed = GOLD if ok else WRONG
    r = {"sample_id": sid, "split": "test", "model_tag": tag, "variant": "plain", "mode": "score",
         "perturbation": pert, "severity": sev, "seed": seed, "lang": "en", "prompt": f"p {sid} {pert}{sev}",
         "output": f"Answer: motion={parsed['motion']}", "parsed": dict(parsed), "gold": dict(GOLD),
         "correct": {k: parsed[k] == GOLD[k] for k in GOLD}, "label_may_change": may_change, "latency_s": 0.1}
    r["probs"] = probs or {"motion": {"flyby": 0.8 if ok else 0.3, "hovering": 0.2 if ok else 0.7},
                           "operation": {"photographing": 1.0}, "task": {"observation": 1.0}}
    return r


def synthetic_rows(n=20):
    rows = []
    for i in range(n):
        sid = f"s{i:02d}"
        # tuned: all clean right; typos seed 0 breaks 5, seed 1 breaks 2; noise sev 4 (label may change) breaks all
        rows.append(row("tuned", sid, "clean", 0, 0, True))
        rows.append(row("tuned", sid, "typos", 1, 0, i >= 5))
        rows.append(row("tuned", sid, "typos", 1, 1, i >= 2))
        rows.append(row("tuned", sid, "noise", 4, 0, False, may_change=True))
        # base: right on even samples only, perturbations change nothing
        rows.append(row("base", sid, "clean", 0, 0, i % 2 == 0))
        rows.append(row("base", sid, "typos", 1, 0, i % 2 == 0))
        rows.append(row("base", sid, "typos", 1, 1, i % 2 == 0))
        rows.append(row("base", sid, "noise", 4, 0, i % 2 == 0, may_change=True))
    return rows


def test_robustness_table_by_hand():
    rows = [r for r in synthetic_rows() if r["model_tag"] == "tuned"]
    table = {(c["perturbation"], c["severity"]): c for c in robustness_table(rows, n_resamples=300)}
    typos = table[("typos", 1)]
    assert typos["n"] == 40
    assert typos["accuracy"] == pytest.approx(33 / 40)
    assert typos["accuracy_clean"] == 1.0
    assert typos["delta"] == pytest.approx(-7 / 40)
    assert typos["delta_ci_low"] < typos["delta"] < typos["delta_ci_high"] <= 0.0
    assert typos["pdr"] == pytest.approx(7 / 40)
    assert typos["flip_rate"] == pytest.approx(7 / 40) == typos["flip_rate_correct"]
    assert typos["mcnemar_p"] == pytest.approx(2 * 0.5 ** 7)
    assert typos["label_may_change"] is False
    assert table[("noise", 4)]["label_may_change"] is True


def test_aggregates_exclude_label_changing_cells():
    rows = [r for r in synthetic_rows() if r["model_tag"] == "tuned"]
    agg = robustness_aggregates(rows, min_n=20)      # the synthetic cells hold 20 prompts each
    assert agg["n_cells"] == 2                      # typos seed 0 and seed 1; noise sev 4 excluded
    assert agg["mean_accuracy"] == pytest.approx((15 / 20 + 18 / 20) / 2)
    assert agg["std_accuracy"] == pytest.approx(abs(15 / 20 - 18 / 20) / 2 ** 0.5)
    assert agg["mean_pdr"] == pytest.approx(((1 - 15 / 20) + (1 - 18 / 20)) / 2)
    assert agg["worst_case_accuracy"] == pytest.approx(15 / 20)
    assert agg["consistency"] == pytest.approx(15 / 20)
    base = robustness_aggregates([r for r in synthetic_rows() if r["model_tag"] == "base"], min_n=20)
    assert base["std_accuracy"] == 0.0 and base["consistency"] == 1.0
    ratios = std_ratios({("tuned", "plain", "score"): agg, ("base", "plain", "score"): {"std_accuracy": 0.1}}, "base")
    assert ratios[0]["ratio"] == pytest.approx(agg["std_accuracy"] / 0.1) and ratios[0]["reason"] is None
    # a baseline that is equally right in every cell has std 0: no ratio, and the report says why
    zero = std_ratios({("tuned", "plain", "score"): agg, ("base", "plain", "score"): base}, "base")[0]
    assert zero["ratio"] is None and "baseline std is 0" in zero["reason"]


def test_cells_below_the_minimum_are_listed_but_never_summarised():
    rows = [r for r in synthetic_rows() if r["model_tag"] == "tuned"]
    table = {(c["perturbation"], c["severity"]): c for c in robustness_table(rows, n_resamples=300, min_n=50)}
    assert table[("typos", 1)]["n"] == 40 and table[("typos", 1)]["too_small"] is True
    assert robustness_table(rows, n_resamples=300, min_n=40)[1]["too_small"] is False  # 40 pooled over 2 seeds
    agg = robustness_aggregates(rows, min_n=50)
    assert agg["n_cells"] == 0 and agg["n_cells_too_small"] == 2
    assert agg["std_accuracy"] is None and agg["mean_pdr"] is None and agg["mean_accuracy"] is None
    base = robustness_aggregates([r for r in synthetic_rows() if r["model_tag"] == "base"], min_n=50)
    ratio = std_ratios({("tuned", "plain", "score"): agg, ("base", "plain", "score"): base}, "base")[0]
    assert ratio["ratio"] is None and "n >= 50" in ratio["reason"] and "2 too small" in ratio["reason"]
    report = build_report(synthetic_rows(), {"split": "test"}, n_resamples=200, min_cell_n=50)
    md = render_markdown(report)
    assert "too small: not summarised" in md and "kept out of std, ratio and PDR" in md


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    curve = {"tuned": {"checkpoint": "best", "evaluated_step": 20, "points": [
        {"step": s, "dev_loss": 1.0 / s, "dev_acc": s / 40, "dev_acc_motion": s / 30, "dev_acc_operation": 0.9,
         "dev_acc_task": s / 35, "dev_mode": "score", "dev_rows": 200} for s in (10, 20, 30)]}}
    report = build_report(synthetic_rows(), {"split": "test", "note": "<script>x</script>"}, baseline_tag="base",
                          n_resamples=300, learning_curves=curve)
    write_reports(out, report)
    return out


def test_report_json_and_markdown(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    groups = {(g["model_tag"], g["mode"]): g for g in report["groups"]}
    tuned = groups[("tuned", "score")]
    assert tuned["clean"]["accuracy"] == 1.0
    assert tuned["clean"]["calibration"]["motion"]["ece"] == pytest.approx(0.2)
    assert groups[("base", "score")]["clean"]["accuracy"] == 0.5
    comp = [c for c in report["comparisons"] if c["kind"] == "model"][0]
    assert comp["delta"] == pytest.approx(0.5) and comp["mcnemar_p"] < 0.01
    assert report["failures"]["typos"]                  # clean right, perturbed wrong examples listed
    md = (report_dir / "report.md").read_text()
    assert "| tuned | plain | score | 20 |" in md
    # the learning curve: every dev evaluation of the train stage, the evaluated checkpoint marked
    assert "## Learning curve" in md and "| tuned | 20 | 200 | score | 0.500 |" in md
    assert report["learning_curves"]["tuned"]["evaluated_step"] == 20


def test_report_html_is_well_formed_with_png_images(report_dir):
    text = (report_dir / "report.html").read_text()
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and checker.stack == []
    assert len(checker.images) >= 5                     # severity curves, reliability, learning curve, confusions, ...
    assert 'alt="learning curve"' in text
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<script>x</script>" not in text            # manifest text is escaped


def test_compare_stage(tmp_path, report_dir):
    cfg = CompareConfig(out_dir=tmp_path / "cmp", reports={"a": report_dir / "report.json", "b": report_dir})
    manifest = run_stage(COMPARE, cfg)
    assert manifest["stats"] == {"reports": 2, "lines": 4}
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {ln["report"] for ln in data["lines"]} == {"a", "b"}
    checker = _Checker()
    checker.feed((tmp_path / "cmp" / "compare.html").read_text())
    assert not checker.errors and checker.stack == []
    assert "| a | tuned | plain | score |" in (tmp_path / "cmp" / "compare.md").read_text()


def test_compare_rejects_non_report(tmp_path):
    from pipeline.core.io import DataError

    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="groups"):
        run_stage(COMPARE, CompareConfig(out_dir=tmp_path / "o", reports={"x": bad}))


@pytest.mark.slow
def test_report_renders_in_chromium(report_dir, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed")
    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,2000", (report_dir / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_render_html_empty_report_is_valid():
    checker = _Checker()
    checker.feed(render_html(build_report([], {"split": "test"})))
    assert not checker.errors and checker.stack == []


def test_learning_curve_script_writes_png_and_points(tmp_path, load_script):
    script = load_script("plot_learning_curve")
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"kind": "eval", "step": s, "dev_acc": s / 100, "dev_acc_motion": s / 90, "dev_rows": 240,
             "dev_mode": "score", "dev_loss": 1 / s} for s in (50, 25)] + [{"kind": "train", "step": 25, "loss": 1.0}]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert script.main([str(train), "--mark", "25", "--out", str(tmp_path / "out/curve")]) == 0
    assert (tmp_path / "out/curve.png").read_bytes().startswith(b"\x89PNG")
    data = json.loads((tmp_path / "out/curve.json").read_text())
    assert [p["step"] for p in data["points"]] == [25, 50] and data["marked_step"] == 25
    (train / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    assert script.main([str(train), "--out", str(tmp_path / "none")]) == 2

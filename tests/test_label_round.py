"""A full labelling round: records -> predictions -> select -> export -> Label Studio export + terminal
review -> import -> agreement -> merge -> prompts -> a few train steps on tiny:llama.

The default test uses hand-made predictions; the slow one gets them from the real evaluate stage.
The prompts step runs the real ``prompts`` stage when ``prompts_cot.stage`` exists, else renders the
same rows with ``prompts_cot.render`` (CONTRACT row schema).
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
from label_helpers import distribution, pred_row

from pipeline.cli import resolve_stage
from pipeline.core.config import load_config
from pipeline.core.io import load_jsonl, write_jsonl
from pipeline.core.stage import run_stage
from pipeline.core.taxonomy import LEVELS
from pipeline.label.agreement import STAGE as AGREEMENT
from pipeline.label.export import STAGE as EXPORT
from pipeline.label.importer import STAGE as IMPORT
from pipeline.label.merge import STAGE as MERGE
from pipeline.label.review import ReviewConfig, run_review
from pipeline.label.select import STAGE as SELECT

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "pipeline" / "label" / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def write_pool(root: Path) -> Path:
    """Simulator records (record_fixtures) for train/dev/test with readable ids."""
    from record_fixtures import make_records

    out = root / "records"
    for split, n in (("train", 6), ("dev", 2), ("test", 2)):
        recs = make_records(n, split)
        for i, r in enumerate(recs):
            r["sample_id"] = f"{split}-{i}"
        write_jsonl(out / f"{split}.jsonl", recs)
    return out


def fake_predictions(records: Path, path: Path) -> Path:
    """A 'model' that gets motion wrong on every third train record and is unsure on the second."""
    rows = []
    for r in load_jsonl(records / "train.jsonl"):
        i = int(r["sample_id"].split("-")[1])
        gold = r["labels"]
        parsed = dict(gold, motion="random") if i % 3 == 0 else dict(gold)
        shape = [0.4, 0.35] if i == 1 else [0.9]
        probs = {lev: distribution(lev, shape, parsed) for lev in LEVELS}
        for variant in ("plain", "cot"):
            rows.append(pred_row(r["sample_id"], "train", variant, "generate", parsed, gold))
            rows.append(pred_row(r["sample_id"], "train", variant, "score", parsed, gold, probs=probs))
    write_jsonl(path, rows)
    return path


def run(stage, yaml_name: str, *overrides: str):
    cfg = load_config(stage.config_cls, CONFIGS / yaml_name, list(overrides))
    return run_stage(stage, cfg)


def annotate_in_label_studio(tasks_json: Path, out: Path) -> Path:
    """A Label Studio JSON export of the exported tasks after two experts worked on them.

    Same shape as a real 1.23 server writes (``tests/fixtures/label_studio/export_json.json``):
    prediction ids, integer ``completed_by``, ``parent_prediction`` and region ``origin``s.
    """
    tasks = json.loads(tasks_json.read_text())
    for tid, task in enumerate(tasks, start=1):
        task["id"] = tid
        preds = task.pop("predictions", None) or []
        task["predictions"] = [tid] if preds else []
        # without a pre-annotation (the model's answer did not parse) the experts label from scratch
        pred = [dict(r, origin="prediction") for r in preds[0]["result"]] if preds else [
            {"id": f"x-{lev}", "from_name": lev, "to_name": "text", "type": "choices", "value": {"choices": [lab]},
             "origin": "manual"}
            for lev, lab in (("motion", "flyby"), ("operation", "photographing"), ("task", "observation"))
        ] + [{"id": "x-r", "from_name": "rationale", "to_name": "text", "type": "textarea", "value": {"text": ["."]},
              "origin": "manual"}]
        anns = []
        for uid in (1, 2):
            result = json.loads(json.dumps(pred))  # experts start from the pre-annotation
            if uid == 1 and task["data"]["sample_id"] == "train-0":  # alice corrects the motion and the reasoning
                for region in result:
                    if region["from_name"] == "motion":
                        region.update(value={"choices": ["flyby"]}, origin="prediction-changed")
                    if region["from_name"] == "rationale":
                        region.update(value={"text": ["Range falls then rises, never near zero: flyby."]},
                                      origin="prediction-changed")
            anns.append({"id": 100 * tid + uid, "completed_by": uid, "was_cancelled": False, "lead_time": 5.0,
                         "created_at": "2025-03-01T10:00:00Z", "updated_at": f"2025-03-01T10:0{uid}:00Z",
                         "result": result, "parent_prediction": tid if preds else None})
        anns.append({"id": 100 * tid + 9, "completed_by": 3, "was_cancelled": True, "result": json.loads(json.dumps(pred)),
                     "parent_prediction": tid if preds else None})
        task["annotations"] = anns
    out.write_text(json.dumps(tasks))
    return out


def write_prompts(records: Path, out: Path) -> Path:
    """Prompts-stage output for ``records``: the real stage when it exists, else the same rows rendered here."""
    if importlib.util.find_spec("prompts_cot.stage") is not None:
        stage = resolve_stage("prompts")
        cfg = load_config(stage.config_cls, ROOT / "prompts_cot" / "configs" / "tiny.yaml",
                          [f"data_dir={records}", f"out_dir={out}"])
        run_stage(stage, cfg)
        return out
    from prompts_cot.render import RenderOptions, options_to_dict, render_prompt, render_response

    opts = RenderOptions(prompt_type="instruction", lang="en")
    for split in ("train", "dev", "test"):
        write_jsonl(out / "plain" / f"{split}.jsonl", [
            {"sample_id": r["sample_id"], "split": split, "variant": "plain", "prompt_type": "instruction",
             "lang": "en", "prompt": render_prompt(r, opts), "response": render_response(r, opts, cot=False),
             "label": r["labels"], "template_hash": "label-round-test", "render": options_to_dict(opts)}
            for r in load_jsonl(records / f"{split}.jsonl")])
    return out


def label_round(tmp: Path, records: Path, predictions: Path, fake: bool = True) -> Path:
    """select -> export -> LS annotations + terminal review -> import -> agreement -> merge; returns the new version."""
    m = run(SELECT, "select_demo.yaml", f"out_dir={tmp / 'select'}", f"data_dir={records}",
            f"predictions={predictions}", "batch_size=4", "batch_id=round1")
    assert m["stats"]["selected"] == 4
    selected = {r["sample_id"] for r in load_jsonl(tmp / "select" / "selection.jsonl")}
    run(EXPORT, "export_demo.yaml", f"out_dir={tmp / 'export'}", f"selection={tmp / 'select' / 'selection.jsonl'}")
    ls_export = annotate_in_label_studio(tmp / "export" / "tasks.json", tmp / "ls_export.json")
    m = run(IMPORT, "import_demo.yaml", f"out_dir={tmp / 'import'}", f"label_studio=[{ls_export}]",
            f"tasks=[{tmp / 'export' / 'tasks.jsonl'}]", "reviewer_names={'1': alice, '2': bob}")
    assert m["stats"]["skipped"] == 4 and m["stats"]["reviews"] == 8
    # carol uses the terminal tool: accepts everything except train-3, where she fixes the motion too
    tasks = load_jsonl(tmp / "export" / "tasks.jsonl")
    script = "".join("r\n2\n\n\na\n" if t["sample_id"] in ("train-0", "train-3") else "a\n" for t in tasks)
    cfg = load_config(ReviewConfig, CONFIGS / "review_demo.yaml",
                      [f"out_dir={tmp / 'review'}", f"tasks={tmp / 'export' / 'tasks.jsonl'}", "reviewer=carol"])
    assert run_review(cfg, inp=io.StringIO(script), out=io.StringIO()).stats["saved"] == 4
    reviews = f"reviews=[{tmp / 'import' / 'reviews.jsonl'}, {tmp / 'review' / 'reviews.jsonl'}]"
    m = run(AGREEMENT, "agreement_demo.yaml", f"out_dir={tmp / 'agreement'}", reviews)
    assert m["stats"]["reviewers"] == 3
    m = run(MERGE, "merge_demo.yaml", f"out_dir={tmp / 'dataset'}", f"data_dir={records}", reviews)
    new = Path(m["stats"]["records_dir"])
    assert new == tmp / "dataset" / "v1"
    merged = {r["sample_id"]: r for r in load_jsonl(new / "train.jsonl")}
    if "train-0" in selected:  # alice + carol say flyby, bob accepts the model's answer -> majority flyby
        assert merged["train-0"]["labels"]["motion"] == "flyby"
    if fake and "train-3" in selected:  # alice and bob accept the model's wrong 'random', carol alone says flyby
        assert merged["train-3"]["labels"]["motion"] == "random"
        assert merged["train-3"]["provenance"][0]["old_labels"]["motion"] == "flyby"
    reviewed = [r for r in merged.values() if r["provenance"]]
    assert {r["sample_id"] for r in reviewed} == selected
    assert all(r["provenance"][0]["batch_id"] == "round1" for r in reviewed)
    return new


def train_a_few_steps(prompts: Path, out: Path) -> Path:
    train = resolve_stage("train")
    cfg = load_config(train.config_cls, ROOT / "pipeline" / "configs" / "train_tiny.yaml",
                      [f"prompts_dir={prompts}", f"out_dir={out}", "data.variant=plain", "optim.max_steps=2",
                       "eval.steps=0", "eval.accuracy_rows=0", "checkpoint.save_steps=0"])
    run_stage(train, cfg)
    return out


def test_full_round_with_scripted_experts(tmp_path):
    records = write_pool(tmp_path)
    preds = fake_predictions(records, tmp_path / "predictions.jsonl")
    new = label_round(tmp_path, records, preds)
    # the merged version is a valid prompts-stage input and trains
    prompts = write_prompts(new, tmp_path / "prompts")
    rows = load_jsonl(prompts / "plain" / "train.jsonl")
    merged = {r["sample_id"]: r for r in load_jsonl(new / "train.jsonl")}
    assert all(row["label"] == merged[row["sample_id"]]["labels"] for row in rows)
    cot = {r["sample_id"]: r for r in load_jsonl(prompts / "cot" / "train.jsonl")} if (prompts / "cot").exists() else {}
    if "train-0" in cot and merged["train-0"]["provenance"]:
        # alice's edited rationale became the CoT training target
        assert cot["train-0"]["response"].startswith("Range falls then rises, never near zero: flyby.")
    out = train_a_few_steps(prompts, tmp_path / "train")
    assert (out / "final" / "prefix.safetensors").exists()


@pytest.mark.slow
def test_round_on_real_evaluate_predictions(tmp_path):
    """Same round, with predictions of the evaluate stage on tiny:llama (~1 min on 2 cores)."""
    records = write_pool(tmp_path)
    prompts = write_prompts(records, tmp_path / "prompts0")
    if not (prompts / "cot").exists():  # the fallback renders plain only; evaluate both variants when possible
        variants = "variants=[plain]"
    else:
        variants = "variants=[plain, cot]"
    evaluate = resolve_stage("evaluate")
    cfg = load_config(evaluate.config_cls, None, [
        f"out_dir={tmp_path / 'eval'}", f"data_dir={records}", f"prompts_dir={prompts}", "split=train", variants,
        "models=[{tag: tuned, spec: 'tiny:llama'}]", "baseline_tag=tuned", "perturbed_fraction=1.0",
        "perturbations=[{name: typos, severities: [1]}]", "max_new_tokens=8", "max_new_tokens_cot=8",
        "bootstrap_resamples=20", "num_threads=1"])
    run_stage(evaluate, cfg)
    new = label_round(tmp_path, records, tmp_path / "eval" / "predictions.jsonl", fake=False)
    prompts1 = write_prompts(new, tmp_path / "prompts1")
    assert (train_a_few_steps(prompts1, tmp_path / "train") / "final" / "prefix.safetensors").exists()

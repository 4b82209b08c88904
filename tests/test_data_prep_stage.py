"""The data_prep stage end to end: determinism, splits, imports, bad input, config errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.features import compute_features
from data_prep.imports import parse_answer
from data_prep.oracle import relabel_motion
from data_prep.stage import STAGE, DataPrepConfig
from pipeline.cli import main as cli_main
from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl
from pipeline.core.stage import run_stage

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "data_prep" / "configs" / "tiny.yaml"
SPLITS = ("train", "dev", "test")


def tiny_cfg(out_dir: Path, *overrides: str) -> DataPrepConfig:
    return load_config(DataPrepConfig, TINY, [f"out_dir={out_dir}", *overrides])


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp") / "a"
    run_stage(STAGE, tiny_cfg(out))
    return out


def test_records_follow_the_contract(tiny_run):
    rows = {s: load_jsonl(tiny_run / f"{s}.jsonl") for s in SPLITS}
    assert sum(len(r) for r in rows.values()) == 160
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["stats"]["rows"] == {s: len(rows[s]) for s in SPLITS}
    stats = manifest["stats"]
    assert set(stats["dropped_per_class"]) == set(stats["dropped_per_reason"]) == {
        "hovering", "flyby", "fly_around", "approach", "rendezvous", "collision", "retreat", "random"}
    # Every drop is counted once per reason: relabelled:<class> or ambiguous:<branch of the rules>.
    for motion, reasons in stats["dropped_per_reason"].items():
        assert all(r.split(":")[0] in ("relabelled", "ambiguous") for r in reasons)
        assert sum(reasons.values()) == sum(stats["dropped_per_class"][motion].values())
        assert sum(v for r, v in reasons.items() if r.startswith("ambiguous:")) == (
            stats["dropped_per_class"][motion].get("ambiguous", 0))
    assert sum(stats["dropped_reasons_total"].values()) == stats["dropped_total"] > 0
    keys = {"sample_id", "scenario_seed", "split", "source", "labels", "context", "observation", "features",
            "text", "rationale", "provenance"}
    for split, recs in rows.items():
        # Stratified: every motion class appears in every split.
        assert len({r["labels"]["motion"] for r in recs}) == 8
        npz = np.load(tiny_run / "trajectories" / f"{split}.npz")
        assert list(npz["sample_id"]) == [r["sample_id"] for r in recs]
        assert npz["states"].shape == (len(recs), 51, 7)
        for r in recs[:10]:
            assert set(r) == keys and r["split"] == split and r["source"] == "simulator"
            # Features are a pure function of the stored observation, and relabel to the label.
            assert compute_features(r["observation"]) == r["features"]
            assert relabel_motion(r["features"]) == r["labels"]["motion"]
    # The sidecar holds the true state: its range matches the observed range within sensor noise.
    rec, st = rows["train"][0], np.load(tiny_run / "trajectories" / "train.npz")["states"][0]
    true_r = np.linalg.norm(st[:, 1:4], axis=1)
    np.testing.assert_allclose(rec["observation"]["range_m"], true_r, rtol=0.05, atol=5.0)


def test_scenarios_never_straddle_splits(tiny_run):
    split_of: dict[int, str] = {}
    for s in SPLITS:
        for r in load_jsonl(tiny_run / f"{s}.jsonl"):
            assert split_of.setdefault(r["scenario_seed"], s) == s


def test_same_seed_same_bytes_other_seed_differs(tiny_run, tmp_path):
    run_stage(STAGE, tiny_cfg(tmp_path / "b"))
    assert digest(tmp_path / "b") == digest(tiny_run)
    run_stage(STAGE, tiny_cfg(tmp_path / "c", "seed=1"))
    assert digest(tmp_path / "c")["train.jsonl"] != digest(tiny_run)["train.jsonl"]


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_import_csv_jsonl_chatglm(tmp_path):
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text(
        "id,info,move,op,task,why\n"
        "a1,\"The target approaches, then leaves.\",Flyby,photograph,observation,it passed\n"
        "a2,Target holds position.,悬停,,,\n", encoding="utf-8")
    jsonl_path = write_lines(tmp_path / "mine.jsonl", [
        {"text": "Target closes to contact.", "motion": "collision", "operation": "none", "task": "attack"}])
    glm_path = write_lines(tmp_path / "glm.json", [
        {"content": "Known information: ...", "summary": "The range falls to zero.\nAnswer: motion=collision; operation=none; task=attack"},
        {"content": "已知信息：……", "summary": "距离保持不变。\n答案：运动=悬停；操作=拍照；任务=探测"},
        {"prompt": "Known information", "response": "Movement intention is flyby. Operation intention is refuel. Task intention is unclear."},
    ])
    out = tmp_path / "out"
    cfg = load_config(DataPrepConfig, None, [
        f"out_dir={out}", "mode=import",
        f"imports=[{{path: {csv_path}, format: csv, text_column: info, motion_column: move, operation_column: op, "
        f"task_column: task, id_column: id, rationale_column: why}}, {{path: {jsonl_path}, format: jsonl}}, "
        f"{{path: {glm_path}, format: chatglm}}]"])
    manifest = run_stage(STAGE, cfg)
    assert str(csv_path) in manifest["inputs"]
    recs = {r["sample_id"]: r for s in SPLITS for r in load_jsonl(out / f"{s}.jsonl")}
    assert len(recs) == 6 and not (out / "trajectories").exists()
    a1 = recs["mine-a1"]
    assert a1["labels"] == {"motion": "flyby", "operation": "photographing", "task": "observation"}
    assert a1["rationale"] == "it passed" and a1["observation"] is None and a1["features"] is None
    assert recs["mine-a2"]["labels"] == {"motion": "hovering", "operation": None, "task": None}
    glm = [r for r in recs.values() if r["source"] == "glm"]
    assert [r["labels"]["motion"] for r in glm] == ["collision", "hovering", "flyby"]
    assert glm[0]["rationale"] == "The range falls to zero."
    assert glm[1]["labels"] == {"motion": "hovering", "operation": "photographing", "task": "detection"}
    assert glm[2]["labels"] == {"motion": "flyby", "operation": "refuelling", "task": "unclear"}
    # Split assignment is a deterministic hash of the id.
    run_stage(STAGE, load_config(DataPrepConfig, None, [f"out_dir={tmp_path / 'out2'}", "mode=import",
                                                        f"imports=[{{path: {jsonl_path}}}]"]))
    again = load_jsonl(next(p for p in (tmp_path / "out2").glob("*.jsonl") if p.stat().st_size))
    assert again[0]["split"] == recs[again[0]["sample_id"]]["split"]


def test_parse_answer_takes_the_last_answer_line():
    labels, rationale = parse_answer("Reasoning.\nAnswer: motion=approach; operation=none; task=deterrence\n"
                                     "Answer: motion=retreat; operation=none; task=deterrence")
    assert labels["motion"] == "retreat" and rationale.startswith("Reasoning.")


@pytest.mark.parametrize("fmt, content, line, field", [
    ("jsonl", ['{"text": "ok", "motion": "flyby"}', '{"text": "x", "motion": "teleport"}'], 2, "motion"),
    ("jsonl", ['{"text": "ok", "motion": "flyby"}', '{"text": "ok", "motion": "flyby"', ], 2, None),
    ("jsonl", ['{"text": "", "motion": "flyby"}'], 1, "text"),
    ("jsonl", ['{"text": "t", "motion": "flyby", "task": "conquest"}'], 1, "task"),
    ("chatglm", ['{"content": "c", "summary": "no answer here"}'], 1, "summary"),
    ("csv", ["text,motion", "hello,flyby", "bye,"], 3, "motion"),
])
def test_bad_rows_name_file_line_field_and_write_nothing(tmp_path, fmt, content, line, field):
    path = tmp_path / f"bad.{'csv' if fmt == 'csv' else 'jsonl'}"
    path.write_text("\n".join(content) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    cfg = load_config(DataPrepConfig, None, [f"out_dir={out}", "mode=both", "n_samples=16",
                                             f"imports=[{{path: {path}, format: {fmt}}}]"])
    with pytest.raises(DataError) as err:
        run_stage(STAGE, cfg)
    assert err.value.path == str(path) and err.value.line == line and err.value.field == field
    assert str(path) in str(err.value) and f"line {line}" in str(err.value)
    assert not any(p.is_file() for p in out.rglob("*"))


def test_cli_reports_bad_data_with_exit_code_2(tmp_path, capsys):
    bad = write_lines(tmp_path / "bad.jsonl", [{"text": "t", "motion": "warp"}])
    code = cli_main(["data_prep", "--config", str(TINY), f"out_dir={tmp_path / 'o'}", "mode=import",
                     f"imports=[{{path: {bad}}}]"])
    assert code == 2
    assert "bad.jsonl, line 1, field 'motion'" in capsys.readouterr().err


@pytest.mark.parametrize("override, key", [
    ("n_sample=10", "n_sample"),
    ("n_samples=ten", "n_samples"),
    ("noise.angle_deg=[1]", "noise.angle_deg"),
    ("orbit=MEO", "orbit"),
    ("imports=[{path: x.csv, colour: red}]", "colour"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DataPrepConfig, TINY, [override])


def test_semantic_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="motions"):
        STAGE.run(tiny_cfg(tmp_path, "motions=[flyby, warp]"))
    with pytest.raises(ConfigError, match="imports"):
        STAGE.run(tiny_cfg(tmp_path, "mode=import"))


def test_subset_of_motions_and_geo_orbit(tmp_path):
    cfg = tiny_cfg(tmp_path / "geo", "motions=[hovering, rendezvous]", "n_samples=12", "orbit=GEO")
    manifest = run_stage(STAGE, cfg)
    counts = {}
    for split in SPLITS:
        for r in load_jsonl(tmp_path / "geo" / f"{split}.jsonl"):
            counts[r["labels"]["motion"]] = counts.get(r["labels"]["motion"], 0) + 1
            assert r["context"]["orbit"] == "GEO"
    assert counts == {"hovering": 6, "rendezvous": 6}
    assert manifest["stats"]["rows"]["train"] > 0


WIDE = ROOT / "data_prep" / "configs" / "wide.yaml"


def test_wide_simulator_end_to_end(tmp_path):
    """Variable-length tracks: records render, features recompute, sidecar padded with lengths."""
    from prompts_cot.render import RenderOptions, render_prompt

    out = tmp_path / "wide"
    over = [f"out_dir={out}", "n_samples=48", "variants_per_scenario=2", "max_track_samples=150"]
    manifest = run_stage(STAGE, load_config(DataPrepConfig, WIDE, over))
    assert sum(manifest["stats"]["rows"].values()) == 48
    lengths_seen, orbits = set(), set()
    for split in SPLITS:
        recs = load_jsonl(out / f"{split}.jsonl")
        npz = np.load(out / "trajectories" / f"{split}.npz")
        assert list(npz["sample_id"]) == [r["sample_id"] for r in recs]
        assert npz["states"].shape[0] == len(recs) == len(npz["lengths"])
        for r, st, n in zip(recs, npz["states"], npz["lengths"]):
            obs = r["observation"]
            assert len(obs["t_s"]) == n and obs["orbit"] == r["context"]["orbit"]
            assert np.all(np.isfinite(st[:n])) and np.all(np.isnan(st[n:]))
            np.testing.assert_allclose(st[:n, 0], obs["t_s"], atol=0.06)
            assert compute_features(obs) == r["features"]
            assert relabel_motion(r["features"]) == r["labels"]["motion"]
            lengths_seen.add(int(n))
            orbits.add(obs["orbit"])
        if recs:
            assert "Orbital motion" in render_prompt(recs[0], RenderOptions(prompt_type="cot"))
    assert len(lengths_seen) > 5 and orbits == {"LEO", "GEO"}
    again = tmp_path / "again"
    run_stage(STAGE, load_config(DataPrepConfig, WIDE, over[1:] + [f"out_dir={again}"]))
    assert digest(again) == digest(out)


@pytest.mark.parametrize("override, key", [
    ("window_orbits=[1.0, 0.5]", "window_orbits"),
    ("cadence_range_s=[0, 10]", "cadence_range_s"),
    ("sampling=[]", "sampling"),
    ("manoeuvres.approach_burns=1.5", "manoeuvres.approach_burns"),
])
def test_wide_config_errors_name_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        STAGE.run(load_config(DataPrepConfig, WIDE, [f"out_dir={tmp_path}", override]))


def test_wide_keys_need_the_wide_simulator(tmp_path):
    with pytest.raises(ConfigError, match="cadence_range_s.*simulator: wide"):
        STAGE.run(tiny_cfg(tmp_path, "cadence_range_s=[10, 120]"))
    with pytest.raises(ConfigError, match="sampling"):
        load_config(DataPrepConfig, TINY, ["sampling=[sparse]"])


def test_balanced_contexts_cover_the_rule_tables_evenly(tmp_path):
    """``context_sampling: balanced`` flattens operation and task (the rules still decide every label); the
    uniform path draws exactly what it drew before (its own random stream is untouched)."""
    from collections import Counter

    from data_prep import rules

    runs = {}
    for mode in ("uniform", "balanced"):
        cfg = load_config(DataPrepConfig, TINY, [f"out_dir={tmp_path / mode}", "n_samples=800",
                                                 f"context_sampling={mode}"])
        run_stage(STAGE, cfg)
        runs[mode] = [r for s in ("train", "dev", "test") for r in load_jsonl(tmp_path / mode / f"{s}.jsonl")]
    for r in runs["balanced"]:
        assert r["labels"] == rules.intents(r["context"], r["labels"]["motion"])
    ops = {m: Counter(r["labels"]["operation"] for r in rs) for m, rs in runs.items()}
    tasks = {m: Counter(r["labels"]["task"] for r in rs) for m, rs in runs.items()}
    assert ops["balanced"]["none"] < ops["uniform"]["none"]
    assert min(tasks["balanced"].values()) > min(tasks["uniform"].values())
    # the observations (physics) are the same; only contexts differ
    assert [r["features"] for r in runs["balanced"]] == [r["features"] for r in runs["uniform"]]

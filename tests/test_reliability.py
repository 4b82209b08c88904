"""Nothing silently wrong (issue 12): one test per case a careful user tried.

* silently wrong results: resume of another run, stale evaluate cache rows, torn stage outputs,
  a prefix on the wrong base, NaN in prompts, importer holes;
* tracebacks that are now exit-2 errors naming the file / line / field / key;
* the minor ones: override attribution, empty out_dir after a failed check, file modes, split
  fractions, evaluate's early checkpoint check, resume falling back to the newest intact checkpoint.

Fault injection (kill -9 at chosen points, corrupted outputs) is in tests/test_fault_injection.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from record_fixtures import make_records, write_fixture_dirs
from safetensors.torch import load_file
from train_helpers import TINY_YAML, tiny_cfg, train_losses, write_prompts

import pipeline.models.scoring as scoring
from data_prep.imports import ImportSpec, import_file
from data_prep.stage import STAGE as DATA_PREP
from data_prep.stage import DataPrepConfig, check_records_finite
from eval.config import EvalConfig
from eval.stage import STAGE as EVALUATE
from pipeline.cli import main as cli_main
from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError, load_jsonl, read_jsonl, write_jsonl
from pipeline.core.stage import MANIFEST, STAGING, run_stage
from pipeline.train import STAGE as TRAIN
from pipeline.train import run_train
from prompts_cot.stage import STAGE as PROMPTS
from prompts_cot.stage import PromptsConfig

ROOT = Path(__file__).resolve().parent.parent
DATA_TINY = ROOT / "data_prep/configs/tiny.yaml"
PROMPTS_TINY = ROOT / "prompts_cot/configs/tiny.yaml"
EVAL_TINY = ROOT / "eval/configs/tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def short(tmp_path: Path, out: Path, prompts: Path, **overrides) -> object:
    """A 4-step tiny train config writing ``out`` (checkpoints at steps 2 and 4, no dev generation)."""
    args = {"optim.max_steps": 4, "checkpoint.save_steps": 2, "eval.steps": 2, "eval.accuracy_rows": 0,
            **overrides}
    return load_config(TRAIN.config_cls, TINY_YAML,
                       [f"prompts_dir={prompts}", f"out_dir={out}"] + [f"{k}={v}" for k, v in args.items()])


def step_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


# ============================================================================ 1. resume = same run only
@pytest.fixture
def finished(tmp_path):
    """A finished tiny train run (through the stage runner) and its prompts folder (plain and cot)."""
    prompts = write_prompts(tmp_path / "p")
    shutil.copytree(prompts / "plain", prompts / "cot")
    out = tmp_path / "run"
    run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "auto"}))
    return out, prompts


def test_resume_auto_refuses_a_finished_run_of_another_variant(finished, tmp_path):
    out, prompts = finished
    before = load_file(str(out / "final/prefix.safetensors"))
    with pytest.raises(DataError) as err:
        run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "auto", "data.variant": "cot"}))
    msg = str(err.value)
    assert "data.variant 'plain' -> 'cot'" in msg and "checkpoint.resume=never" in msg and "--force" in msg
    # nothing was served: the plain run stays intact and is still the committed set
    after = load_file(str(out / "final/prefix.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / MANIFEST).read_text())["config"]["data"]["variant"] == "plain"


def test_resume_auto_refuses_a_changed_learning_rate_cli_exit_2(finished, tmp_path, capsys):
    out, prompts = finished
    code = cli_main(["train", "--config", str(TINY_YAML), f"prompts_dir={prompts}", f"out_dir={out}",
                     "optim.max_steps=4", "checkpoint.save_steps=2", "eval.steps=2", "eval.accuracy_rows=0",
                     "checkpoint.resume=auto", "optim.learning_rate=0.05"])
    err = capsys.readouterr().err
    assert code == 2 and "optim.learning_rate 0.02 -> 0.05" in err and "Traceback" not in err


def test_force_and_resume_never_start_fresh_and_never_count_old_steps(finished, tmp_path):
    out, prompts = finished
    # a shorter rerun: resume=auto refuses (the schedule differs) ...
    with pytest.raises(DataError, match="optim.max_steps 4 -> 2"):
        run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "auto", "optim.max_steps": 2}))
    # ... --force trains it from scratch, and only its own step folders are kept and counted
    manifest = run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "auto", "optim.max_steps": 2}),
                         force=True)
    assert manifest["stats"]["steps"] == 2 and manifest["stats"]["resumed_from"] is None
    assert step_dirs(out) == ["step-2"]
    assert [r[1] for r in train_losses(out) if r[0] == "train"] == [1, 2]
    # resume=never does the same without --force
    manifest = run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "never", "optim.max_steps": 6}))
    assert manifest["stats"]["steps"] == 6 and step_dirs(out) == ["step-2", "step-4", "step-6"]


def test_same_run_resumes_from_the_finished_checkpoint(finished, tmp_path):
    out, prompts = finished
    # a setting outside the fingerprint changed (how many checkpoints to keep): the run is continued, not redone
    manifest = run_stage(TRAIN, short(tmp_path, out, prompts, **{"checkpoint.resume": "auto",
                                                                "checkpoint.save_total_limit": 1}))
    assert manifest["stats"]["resumed_from"].endswith("step-4")
    assert step_dirs(out) == ["step-4"]


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    prompts = write_prompts(tmp_path / "p")
    full = short(tmp_path, tmp_path / "a", prompts, **{"method.ptuning_v2.prefix_dropout": 0.1})
    run_train(full)
    part = tmp_path / "b"
    shutil.copytree(tmp_path / "a/checkpoints", part / "checkpoints")
    shutil.copy(tmp_path / "a/metrics.jsonl", part / "metrics.jsonl")
    (part / "checkpoints/step-4/trainer_state.pt").write_bytes(b"garbage")  # the newest one is damaged
    resumed = short(tmp_path, part, prompts, **{"method.ptuning_v2.prefix_dropout": 0.1, "checkpoint.resume": "auto"})
    stats = run_train(resumed).stats
    assert stats["resumed_from"].endswith("step-2")
    assert "skipping damaged checkpoint" in caplog.text and "step-4" in caplog.text
    assert train_losses(tmp_path / "a") == train_losses(part)  # still bit-identical to the uninterrupted run


def test_explicit_resume_of_a_corrupt_or_foreign_checkpoint_exits_2(finished, tmp_path, capsys):
    out, prompts = finished
    step = tmp_path / "copy/step-2"
    shutil.copytree(out / "checkpoints/step-2", step)
    (step / "trainer_state.pt").write_bytes(b"\x00" * 10)
    base = ["train", "--config", str(TINY_YAML), f"prompts_dir={prompts}", f"out_dir={tmp_path / 'o'}",
            "optim.max_steps=4", "checkpoint.save_steps=2", "eval.steps=2", "eval.accuracy_rows=0"]
    assert cli_main(base + [f"checkpoint.resume={step}"]) == 2
    assert "trainer_state.pt changed since it was written" in capsys.readouterr().err
    # a shape mismatch (other pre_seq_len) is named before any model is built
    assert cli_main(base + [f"checkpoint.resume={out / 'checkpoints/step-2'}",
                            "method.ptuning_v2.pre_seq_len=6"]) == 2
    assert "method.ptuning_v2.pre_seq_len 4 -> 6" in capsys.readouterr().err


def test_a_llama_checkpoint_is_refused_on_a_glm_base(finished, tmp_path, capsys):
    out, prompts = finished
    # resume: the model is part of the run's fingerprint
    code = cli_main(["train", "--config", str(TINY_YAML), f"prompts_dir={prompts}", f"out_dir={out}",
                     "optim.max_steps=4", "checkpoint.save_steps=2", "eval.steps=2", "eval.accuracy_rows=0",
                     "checkpoint.resume=auto", "model.spec=tiny:glm"])
    assert code == 2 and "model.spec 'tiny:llama' -> 'tiny:glm'" in capsys.readouterr().err


# ============================================================================ 2. evaluate's answer cache
@pytest.fixture
def eval_data(tmp_path):
    return write_fixture_dirs(tmp_path / "data", n=4, langs=("en",))


def eval_cfg(data, out, *extra):
    records, prompts = data
    return load_config(EvalConfig, EVAL_TINY, [f"data_dir={records}", f"prompts_dir={prompts}", f"out_dir={out}",
                                               "variants=[plain]", "modes=[score]", "perturbations=[]", *extra])


def counting_answers(monkeypatch) -> list[str]:
    answered: list[str] = []
    real = scoring.answer_rows

    def counting(lm, tok, mode, prompts, *args):
        answered.extend(prompts)
        return real(lm, tok, mode, prompts, *args)

    monkeypatch.setattr(scoring, "answer_rows", counting)
    return answered


def test_corrected_gold_label_is_used_without_answering_again(eval_data, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    run_stage(EVALUATE, eval_cfg(eval_data, out))
    first = load_jsonl(out / "predictions.jsonl")
    # an expert corrects the gold label of the first row to what the model answered
    path = eval_data[1] / "plain/test.jsonl"
    rows = [row for _, row in read_jsonl(path)]
    rows[0]["label"] = dict(first[0]["parsed"])
    write_jsonl(path, rows)
    answered = counting_answers(monkeypatch)
    run_stage(EVALUATE, eval_cfg(eval_data, out))
    again = load_jsonl(out / "predictions.jsonl")
    assert answered == []  # the model's answers did not change, only the gold did
    assert again[0]["gold"] == first[0]["parsed"] and all(again[0]["correct"].values())
    assert [r["output"] for r in again] == [r["output"] for r in first]


def test_another_dtype_is_never_served_from_float32_rows(eval_data, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    run_stage(EVALUATE, eval_cfg(eval_data, out))
    answered = counting_answers(monkeypatch)
    run_stage(EVALUATE, eval_cfg(eval_data, out, "dtype=bfloat16"))
    assert len(answered) == 4


def test_evaluate_checks_every_checkpoint_before_any_model_answers(eval_data, finished, tmp_path, monkeypatch,
                                                                   capsys):
    out, _ = finished
    answered = counting_answers(monkeypatch)
    records, prompts = eval_data
    code = cli_main(["evaluate", "--config", str(EVAL_TINY), f"data_dir={records}", f"prompts_dir={prompts}",
                     f"out_dir={tmp_path / 'e'}", f"train_dir={out}", "variants=[plain]", "modes=[score]",
                     "perturbations=[]", "models=[{tag: base, spec: 'tiny:llama'}, "
                                         "{tag: tuned, spec: 'tiny:glm', checkpoint: final}]"])
    err = capsys.readouterr().err
    assert code == 2 and "'llama' model" in err and "'glm'" in err and "prefix_config.json" in err
    assert answered == []  # refused before the base model's rows


# ============================================================================ 3. outputs as a set
def data_cfg(out: Path, *extra: str) -> DataPrepConfig:
    return load_config(DataPrepConfig, DATA_TINY, [f"out_dir={out}", "n_samples=16", "variants_per_scenario=1",
                                                   *extra])


def prompts_cfg(data_dir: Path, out: Path) -> PromptsConfig:
    return load_config(PromptsConfig, PROMPTS_TINY, [f"data_dir={data_dir}", f"out_dir={out}", "limit=2"])


def test_a_failing_rerun_keeps_the_previous_set_and_leaves_no_mix(tmp_path, monkeypatch):
    out = tmp_path / "data"
    run_stage(DATA_PREP, data_cfg(out))
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    import data_prep.stage as dp

    real = dp.atomic_path

    def failing(path):  # the seed-1 records are written, then writing the trajectories fails
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(dp, "atomic_path", failing)
    with pytest.raises(DataError, match="No space left on device") as err:  # exit 2 naming out_dir (issue 23)
        run_stage(DATA_PREP, data_cfg(out, "seed=1"))
    assert err.value.path == str(out) and err.value.field == "out_dir"
    monkeypatch.setattr(dp, "atomic_path", real)
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # the seed-0 set, manifest included, untouched; nothing of seed 1 beside it
    assert not (out / STAGING).exists()
    run_stage(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))  # and it is still a valid input


def test_downstream_refuses_an_unfinished_or_stale_folder(tmp_path):
    out = tmp_path / "data"
    run_stage(DATA_PREP, data_cfg(out))
    (out / STAGING).mkdir()
    manifest = (out / MANIFEST).read_bytes()
    (out / MANIFEST).unlink()  # as after a kill -9 in the middle of a commit
    with pytest.raises(DataError, match="unfinished stage output"):
        run_stage(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))
    (out / MANIFEST).write_bytes(manifest)
    (out / "trajectories/dev.npz").unlink()
    with pytest.raises(DataError, match="listed in .* but missing"):
        run_stage(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))
    run_stage(DATA_PREP, data_cfg(out))  # the rerun repairs it
    (out / "extra").mkdir()
    (out / "extra/old.jsonl").write_text("{}\n")
    cfg = load_config(PromptsConfig, PROMPTS_TINY, [f"data_dir={out}", f"out_dir={tmp_path / 'prompts'}", "limit=2"])
    from prompts_cot.stage import STAGE as P  # a stale file read from the folder is refused too

    with pytest.raises(DataError, match="not part of the finished output set"):
        from pipeline.core.stage import check_inputs

        check_inputs(P, cfg, [out / "extra/old.jsonl"])


def test_stale_temp_files_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "data"
    run_stage(DATA_PREP, data_cfg(out))
    (out / ".train.jsonl.abc123.tmp").write_text("half")
    (out / "trajectories/.dev.npz.x1.tmp.npz").write_bytes(b"half")
    run_stage(DATA_PREP, data_cfg(out), force=True)
    assert not list(out.rglob("*.tmp*"))


# ============================================================================ 5. non-finite numbers
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_features_are_refused_naming_file_line_field(tmp_path, token):
    data = tmp_path / "records"
    data.mkdir()
    rows = make_records(3, split="train")
    lines = [json.dumps(r) for r in rows]
    lines[1] = lines[1].replace('"min_range_m": ', f'"min_range_m": {token}, "_was": ', 1)
    assert token in lines[1]
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        run_stage(PROMPTS, prompts_cfg(data, tmp_path / "prompts"))
    assert err.value.line == 2 and err.value.field == "features.min_range_m"
    assert not (tmp_path / "prompts").exists()


def test_data_prep_refuses_non_finite_records_before_writing(tmp_path):
    rec = make_records(1)[0]
    rec["features"]["min_range_m"] = float("nan")
    with pytest.raises(DataError) as err:
        check_records_finite([make_records(1)[0], rec], tmp_path / "train.jsonl")
    assert err.value.line == 2 and err.value.field == "features.min_range_m"


# ============================================================================ 6. importer holes
@pytest.mark.parametrize("name, content, fmt, line, field, message", [
    ("short.csv", "text,motion,operation\nclose pass,flyby,none\nfar,hovering\n", "csv", 3, None, "2 cell(s)"),
    ("glm.jsonl", '{"content": "c", "summary": "Answer: motion=flyby; operation=dancing; task=unclear"}\n',
     "chatglm", 1, "summary", "unknown operation label 'dancing'"),
    ("glm2.jsonl", '{"content": "c", "summary": "Answer: motion=flyby; operation=none; task=conquest"}\n',
     "chatglm", 1, "summary", "unknown task label 'conquest'"),
    ("empty.jsonl", "\n", "jsonl", None, None, "no data rows"),
    ("nan_id.jsonl", '{"id": NaN, "text": "t", "motion": "flyby"}\n', "jsonl", 1, "id", "not a finite number"),
    ("latin1.csv", "text,motion\ncaf\xe9,flyby\n", "csv", 2, None, "not UTF-8"),
])
def test_importer_refuses_bad_rows(tmp_path, name, content, fmt, line, field, message):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1") if "latin1" in name else content.encode())
    with pytest.raises(DataError) as err:
        import_file(ImportSpec(path=path, format=fmt, id_column="id" if "nan_id" in name else None))
    assert err.value.line == line and err.value.field == field and message in str(err.value), str(err.value)


def test_an_empty_import_never_replaces_an_earlier_dataset(tmp_path):
    good = tmp_path / "user.jsonl"
    good.write_text(json.dumps({"text": "t", "motion": "flyby"}) + "\n")
    out = tmp_path / "data"
    cfg = data_cfg(out, "mode=import", f"imports=[{{path: {good}}}]")
    run_stage(DATA_PREP, cfg)
    before = (out / MANIFEST).read_bytes()
    good.write_text("")
    with pytest.raises(DataError, match="no data rows"):
        run_stage(DATA_PREP, cfg)
    assert (out / MANIFEST).read_bytes() == before


# ============================================================================ exit 2, not a traceback
def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr)."""
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        code = cli_main(list(args))
    return code, buf.getvalue()


def test_malformed_override_value_is_named_as_an_override(tmp_path):
    code, err = cli("data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'o'}", "n_samples=[1")
    assert code == 2 and "command-line override 'n_samples=[1'" in err and "not valid YAML" in err
    code, err = cli("data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'o'}", "n_samples=ten")
    assert code == 2 and "command-line override 'n_samples=ten'" in err and str(DATA_TINY) not in err
    assert not (tmp_path / "o").exists()


def test_unknown_stage_or_missing_sub_command_exits_2(capsys):
    for argv in (["nosuchstage"], ["label"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_train_config_checks_exit_2_and_leave_no_out_dir(tmp_path):
    prompts = write_prompts(tmp_path / "p")
    code, err = cli("train", "--config", str(TINY_YAML), f"prompts_dir={prompts}", f"out_dir={tmp_path / 'o'}",
                    "optim.max_steps=0")
    assert code == 2 and "optim.max_steps must be >= 1" in err
    assert not (tmp_path / "o").exists()


def test_missing_input_and_non_utf8_input_exit_2(tmp_path):
    code, err = cli("prompts", "--config", str(PROMPTS_TINY), f"data_dir={tmp_path / 'nowhere'}",
                    f"out_dir={tmp_path / 'o'}")
    assert code == 2 and "does not exist" in err and "nowhere" in err
    data = tmp_path / "records"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_bytes(b'\n{"sample_id": "caf\xe9"}\n')
    code, err = cli("prompts", "--config", str(PROMPTS_TINY), f"data_dir={data}", f"out_dir={tmp_path / 'o'}")
    assert code == 2 and "train.jsonl, line 2" in err and "not UTF-8" in err


@pytest.mark.parametrize("damage", ["missing", "no_config", "bad_config", "truncated_weights"])
def test_missing_or_corrupt_model_folder_exits_2(tmp_path, damage):
    from pipeline.models.store import resolve_model_dir

    model = tmp_path / "model"
    if damage != "missing":
        shutil.copytree(resolve_model_dir("tiny:llama"), model)
        weights = model / "model.safetensors"
        if damage == "no_config":
            (model / "config.json").unlink()
        elif damage == "bad_config":
            (model / "config.json").write_text("{not json")
        else:
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    prompts = write_prompts(tmp_path / "p")
    code, err = cli("train", "--config", str(TINY_YAML), f"prompts_dir={prompts}", f"out_dir={tmp_path / 'o'}",
                    f"model.spec={model}")
    expected = {"missing": "no such folder", "no_config": "no config.json", "bad_config": "invalid JSON",
                "truncated_weights": "truncated or corrupt safetensors"}[damage]
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_out_dir_that_is_a_file_or_not_writable_exits_2(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    code, err = cli("data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'afile'}")
    assert code == 2 and "exists and is not a folder" in err
    code, err = cli("data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'afile' / 'sub'}")
    assert code == 2 and "cannot create the output folder" in err
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("ro") else real(p, mode))
    (tmp_path / "ro").mkdir()
    code, err = cli("data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'ro'}")
    assert code == 2 and "not writable" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError):
        cli_main(["data_prep", "--config", str(DATA_TINY), f"out_dir={tmp_path / 'o'}", "n_samples=[1", "--debug"])


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pipeline", "data_prep", "--config", str(DATA_TINY),
                          f"out_dir={tmp_path / 'o'}", "split_fractions=[0.8, 0.1, 0.2]"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "split_fractions: [0.8, 0.1, 0.2] sums to 1.1, not 1" in res.stderr and "Traceback" not in res.stderr


# ============================================================================ minor
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_umask_modes(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        run_stage(DATA_PREP, data_cfg(tmp_path / "data"))
    finally:
        os.umask(old)
    out = tmp_path / "data"
    files = [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {file_mode}
    dirs = [out] + [p for p in out.rglob("*") if p.is_dir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {dir_mode}

"""No traceback, no silent mistake (issue 23): corrupt binaries, full disks, contradicting metadata.

One test (or parametrized family) per class of the issue; each docstring says how it failed before
the fix. Property-based fuzzing of the user-file readers is in tests/test_fuzz_readers.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pipeline.core.io as io_mod
from data_prep.stage import STAGE as DATA_PREP
from data_prep.stage import DataPrepConfig
from data_prep.tracks import EXAMPLE_PATH, read_tracks
from eval.config import EvalConfig
from eval.stage import STAGE as EVALUATE
from pipeline.cli import main as cli_main
from pipeline.core.binary import check_gguf, read_npz, read_safetensors, read_torch
from pipeline.core.config import load_config
from pipeline.core.io import DataError, load_jsonl, read_jsonl, write_jsonl
from pipeline.core.stage import MANIFEST, STAGING, TRASH, check_inputs, expand_files, run_stage
from pipeline.methods.base import ArchFacts, load_into
from pipeline.methods.ptuning_v2 import PrefixConfig, PrefixEncoder, export_static_prefix, load_prefix, save_prefix
from pipeline.train.checkpoint import load_trainer_state
from prompts_cot.stage import STAGE as PROMPTS
from prompts_cot.stage import PromptsConfig

ROOT = Path(__file__).resolve().parent.parent
DATA_TINY = ROOT / "data_prep/configs/tiny.yaml"
PROMPTS_TINY = ROOT / "prompts_cot/configs/tiny.yaml"
FACTS = ArchFacts(num_layers=3, kv_heads=2, head_dim=4, hidden_size=16, model_type="test")


def data_cfg(out: Path, *extra: str) -> DataPrepConfig:
    return load_config(DataPrepConfig, DATA_TINY, [f"out_dir={out}", "n_samples=16", "variants_per_scenario=1", *extra])


def prompts_cfg(data_dir: Path, out: Path) -> PromptsConfig:
    return load_config(PromptsConfig, PROMPTS_TINY, [f"data_dir={data_dir}", f"out_dir={out}", "limit=4",
                                                     "variants=[{name: plain, prompt_type: instruction, cot: false}]"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ================================================================== 1. binary files: empty, cut, foreign, wrong shape
def npz_track(path: Path, n: int = 12, short: str | None = None) -> Path:
    t = np.arange(n) * 30.0
    cols = {"t_s": t, "range_m": 1000.0 + t, "az_deg": np.zeros(n), "el_deg": np.zeros(n),
            "range_rate_mps": np.ones(n)}
    if short:
        cols[short] = cols[short][: n // 2]
    np.savez(path, **cols)
    return path


@pytest.mark.parametrize("damage, message", [
    ("empty", "empty (0 bytes)"), ("cut", "truncated or corrupt NPZ"), ("text", "not an NPZ file: it looks like text"),
    ("member", "unreadable array"),
])
def test_a_damaged_npz_track_file_is_a_data_error(tmp_path, damage, message):
    """Before: EOFError (empty), BadZipFile (cut in half) or a ValueError about pickles, as tracebacks."""
    path = npz_track(tmp_path / "t.npz")
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "cut":
        cut(path)
    elif damage == "text":
        path.write_text("t_s,range_m\n0,1\n")
    else:  # flip bytes inside the first member's data: its CRC no longer matches
        data = bytearray(path.read_bytes())
        data[120:140] = bytes(20)
        path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        read_tracks(path)
    assert err.value.path == str(path) and message in str(err.value), str(err.value)


def test_a_ragged_npz_names_the_short_column(tmp_path):
    """Before: 'arrays differ in length ([6, 12])' without naming which array."""
    with pytest.raises(DataError) as err:
        read_tracks(npz_track(tmp_path / "t.npz", short="range_m"))
    assert err.value.field == "range_m" and "has 6 values, the other columns 12" in str(err.value)


def encoder_folder(tmp_path: Path, pre_seq_len: int = 4) -> Path:
    enc = PrefixEncoder(PrefixConfig(pre_seq_len=pre_seq_len), FACTS)
    save_prefix(enc, tmp_path / "ck")
    return tmp_path / "ck"


@pytest.mark.parametrize("damage, field, message", [
    ("empty", None, "empty (0 bytes)"),
    ("cut", None, "truncated or corrupt safetensors"),
    ("torch_file", None, "not a safetensors file: it looks like a zip archive"),
    ("other_shape", "embedding.weight", "has shape (6, 48), the model expects (4, 48)"),
    ("other_name", "embedding.weight", "missing"),
])
def test_ptuning_v2_prefix_file_copied_by_hand_is_checked(tmp_path, damage, field, message):
    """Before: the P-Tuning v2 loader called safetensors' load_file directly (SafetensorError for a cut or
    foreign file, 'RuntimeError: size mismatch' for another shape), bypassing the checked path."""
    folder = encoder_folder(tmp_path)
    weights = folder / "prefix.safetensors"
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "cut":
        cut(weights)
    elif damage == "torch_file":
        torch.save({"embedding.weight": torch.zeros(4, 48)}, weights)
    elif damage == "other_shape":
        save_file({"embedding.weight": torch.zeros(6, 48)}, str(weights))
    else:
        save_file({"prefix.weight": torch.zeros(4, 48)}, str(weights))
    with pytest.raises(DataError) as err:
        load_prefix(folder, FACTS)
    assert err.value.path == str(weights) and err.value.field == field and message in str(err.value), str(err.value)


def test_a_static_prefix_of_another_shape_names_the_tensor(tmp_path):
    """Before: a ValueError from StaticPrefix (a traceback at the CLI), after loading the whole file."""
    folder = tmp_path / "static"
    export_static_prefix(PrefixEncoder(PrefixConfig(pre_seq_len=4), FACTS), folder)
    save_file({"past_key_values": torch.zeros(3, 2, 2, 5, 4)}, str(folder / "prefix_static.safetensors"))
    with pytest.raises(DataError) as err:
        load_prefix(folder, FACTS)
    assert err.value.field == "past_key_values" and "(3, 2, 2, 5, 4)" in str(err.value)


def test_adapter_weights_of_another_shape_name_the_tensor(tmp_path):
    """Before: 'weights do not fit the model: size mismatch ...' without the tensor as the field."""
    path = tmp_path / "adapter.safetensors"
    save_file({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, str(path))
    with pytest.raises(DataError) as err:
        load_into(torch.nn.Linear(4, 3), read_safetensors(path), path)
    assert err.value.field == "weight" and "has shape (3, 5), the model expects (3, 4)" in str(err.value)


@pytest.mark.parametrize("damage, message", [("empty", "empty (0 bytes)"), ("cut", "unreadable torch file"),
                                             ("text", "not a torch file: it looks like text")])
def test_a_damaged_trainer_state_is_a_data_error(tmp_path, damage, message):
    """Before: the message for an empty file was an EOFError text; a text file an UnpicklingError text."""
    path = tmp_path / "trainer_state.pt"
    torch.save({"engine": "torch", "step": 1, "epoch": 0, "position": 0, "rng": {}, "w": torch.zeros(1000)}, path)
    {"empty": lambda: path.write_bytes(b""), "cut": lambda: cut(path), "text": lambda: path.write_text("{}")}[damage]()
    with pytest.raises(DataError) as err:
        load_trainer_state(tmp_path, engine=None)  # refused before the engine is touched
    assert err.value.path == str(path) and message in str(err.value), str(err.value)


def test_chatglm_bin_shard_and_gguf_damage_is_a_data_error(tmp_path):
    """Before: torch.load / the GGUF reader raised their own errors (EOFError, ValueError) for these files."""
    from gguf import GGUFWriter

    from pipeline.models.chatglm import iter_shard_tensors

    shard = tmp_path / "pytorch_model.bin"
    shard.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        list(iter_shard_tensors(shard))
    gguf = tmp_path / "m.gguf"
    writer = GGUFWriter(str(gguf), "llama")
    writer.add_tensor("w", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check_gguf(gguf)  # the intact file passes
    with pytest.raises(DataError, match="truncated or corrupt GGUF"):
        check_gguf(cut(gguf, 0.6))
    gguf.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="not a GGUF file: it looks like a zip archive"):
        check_gguf(gguf)


def test_binary_readers_name_the_file_for_missing_and_folder(tmp_path):
    for reader in (read_npz, read_safetensors, read_torch, check_gguf):
        with pytest.raises(DataError, match="does not exist"):
            reader(tmp_path / "nope")
        with pytest.raises(DataError, match="is a folder"):
            reader(tmp_path)


# ================================================================== 2. write errors: exit 2 naming out_dir
def failing_fsync(code: int):
    def fsync(fd):  # what a full disk does to a buffered write: the error surfaces at flush/fsync, without a name
        raise OSError(code, os.strerror(code))
    return fsync


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_write_error_without_a_file_name_exits_2_naming_out_dir(tmp_path, monkeypatch, capsys, code):
    """Before: 'OSError: [Errno 28] No space left on device' traceback (the CLI re-raised OS errors whose
    filename is None)."""
    out = tmp_path / "data"
    assert cli_main(["data_prep", "--config", str(DATA_TINY), f"out_dir={out}", "n_samples=16",
                     "variants_per_scenario=1"]) == 0
    before = snapshot(out)
    monkeypatch.setattr(io_mod.os, "fsync", failing_fsync(code))
    code_ = cli_main(["data_prep", "--config", str(DATA_TINY), f"out_dir={out}", "n_samples=16",
                      "variants_per_scenario=1", "seed=1"])
    err = capsys.readouterr().err
    assert code_ == 2 and "Traceback" not in err, err
    assert f"error: {out}, field 'out_dir': cannot write " in err and os.strerror(code) in err
    assert errno.errorcode[code] in err and ".jsonl" in err  # what was being written
    monkeypatch.undo()
    assert snapshot(out) == before  # the earlier set, manifest included, byte-identical
    assert not list(out.rglob("*.tmp*")) and not (out / STAGING).exists()


def test_a_full_disk_at_the_manifest_rolls_the_commit_back(tmp_path, monkeypatch):
    """Before: the new set was renamed in and the old one moved to .trash, then the manifest write failed:
    the folder was left without a manifest (refused downstream), the earlier set no longer in place."""
    out = tmp_path / "data"
    run_stage(DATA_PREP, data_cfg(out))
    before = snapshot(out)
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out / MANIFEST and Path(src).name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", replace)
    with pytest.raises(DataError) as err:
        run_stage(DATA_PREP, data_cfg(out, "seed=1"))
    monkeypatch.undo()
    assert err.value.field == "out_dir" and err.value.path == str(out) and "manifest.json" in str(err.value)
    assert snapshot(out) == before
    assert not (out / TRASH).exists() and not (out / STAGING).exists()
    run_stage(PROMPTS, prompts_cfg(out, tmp_path / "prompts"))  # still a valid, finished input


# ================================================================== 3. metadata that contradicts the data
def sensor_rows(n: int = 12) -> list[dict]:
    return [{"t_s": 30.0 * i, "range_m": 1000.0 + 5 * i, "az_deg": 0.1 * i, "el_deg": 0.0, "range_rate_mps": 5 / 30}
            for i in range(n)]


def test_a_units_header_that_contradicts_the_column_suffixes_is_refused(tmp_path):
    """Before: the JSONL header {"units": {"distance": "km"}} was ignored without a word (columns in m)."""
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"units": {"distance": "km", "time": "s"}}, *sensor_rows()])
    with pytest.raises(DataError) as err:
        read_tracks(path)
    assert err.value.line == 1 and err.value.field == "units"
    assert "declares distance=km, but column 'range_m' is named in m" in str(err.value)
    csv = tmp_path / "t.csv"
    csv.write_text("# units: angle=rad\nt_s,range_m,az_deg,el_deg,range_rate_mps\n"
                   + "".join(f"{r['t_s']},{r['range_m']},{r['az_deg']},0,0.1\n" for r in sensor_rows()))
    with pytest.raises(DataError, match="declares angle=rad, but column 'az_deg' is named in deg") as err:
        read_tracks(csv)
    assert err.value.line == 1
    write_jsonl(path, [{"units": {"distance": "m"}}, *sensor_rows()])  # agreeing declarations are fine
    assert read_tracks(path)


def test_a_geo_track_read_as_leo_is_refused_with_the_fitted_mean_motion(tmp_path, caplog):
    """Before: the GEO example track read as LEO got 10 phantom burns in its features (and its prompt)."""
    lines = EXAMPLE_PATH.read_text().splitlines()
    rows = [lines[0]] + [ln for ln in lines[1:] if ln.startswith("rendezvous-geo,")]
    path = tmp_path / "geo_as_leo.csv"
    path.write_text("\n".join(rows).replace(",GEO,", ",LEO,") + "\n")
    with pytest.raises(DataError) as err:
        read_tracks(path)
    msg = str(err.value)
    assert err.value.field == "orbit" and "is read as LEO (mean motion 0.00113 rad/s)" in msg
    assert "coasting arcs fit" in msg and "GEO: 7.29e-05 rad/s" in msg and "burns read as LEO" in msg
    with caplog.at_level(logging.WARNING, logger="data_prep.tracks"):
        (rec,) = read_tracks(path, orbit_check="warn")  # the documented way to insist
    assert rec["features"]["n_burns"] >= 5 and "coasting arcs fit" in caplog.text
    path.write_text("\n".join(rows) + "\n")
    (rec,) = read_tracks(path)  # read as its own orbit: accepted
    assert rec["context"]["orbit"] == "GEO" and rec["features"]["n_burns"] <= 2


def test_the_shipped_example_tracks_pass_the_orbit_check(caplog):
    with caplog.at_level(logging.WARNING, logger="data_prep.tracks"):
        assert len(read_tracks(EXAMPLE_PATH)) == 6
    assert "coasting arcs" not in caplog.text


# ================================================================== 4. row counts vs the manifest
@pytest.fixture
def records_and_prompts(tmp_path):
    data, prompts = tmp_path / "data", tmp_path / "prompts"
    run_stage(DATA_PREP, data_cfg(data))  # 8 train, 8 dev, 0 test records
    run_stage(PROMPTS, prompts_cfg(data, prompts))
    return data, prompts


def drop_rows(path: Path, keep: int) -> None:
    write_jsonl(path, [row for _, row in read_jsonl(path)][:keep])


def test_a_records_file_with_fewer_rows_than_its_manifest_is_refused(records_and_prompts, tmp_path, capsys):
    """Before: the prompts stage read the cut-down records without a word (and every report shrank)."""
    data, _ = records_and_prompts
    n = len(load_jsonl(data / "dev.jsonl"))
    drop_rows(data / "dev.jsonl", n // 2)
    with pytest.raises(DataError) as err:
        run_stage(PROMPTS, prompts_cfg(data, tmp_path / "p2"))
    assert err.value.path == str(data / "dev.jsonl") and err.value.field == "data_dir"
    assert f"has {n // 2} rows, {data / MANIFEST} records {n} (lost" in str(err.value)
    assert not (tmp_path / "p2").exists()
    args = ["prompts", "--config", str(PROMPTS_TINY), f"data_dir={data}", f"out_dir={tmp_path / 'p3'}", "limit=4"]
    assert cli_main(args) == 2 and "--accept-edited-inputs" in capsys.readouterr().err
    assert cli_main([*args, "--accept-edited-inputs"]) == 0  # the documented flag: the edit is intended


def test_a_prompts_file_with_fewer_rows_is_refused_by_evaluate_but_a_correction_is_not(records_and_prompts):
    """Before: evaluate answered the 8 remaining rows of 16 and the report silently shrank."""
    data, prompts = records_and_prompts
    cfg = load_config(EvalConfig, ROOT / "eval/configs/tiny.yaml",
                      [f"data_dir={data}", f"prompts_dir={prompts}", "out_dir=/tmp/unused", "variants=[plain]",
                       "split=dev"])
    inputs = expand_files(EVALUATE.inputs(cfg))
    path = prompts / "plain/dev.jsonl"
    rows = [row for _, row in read_jsonl(path)]
    rows[0]["label"] = {**rows[0]["label"], "task": "unclear"}  # a hand correction keeps the rows: accepted
    write_jsonl(path, rows)
    check_inputs(EVALUATE, cfg, inputs)
    write_jsonl(path, rows[:-1])
    with pytest.raises(DataError, match=f"has {len(rows) - 1} rows, .* records {len(rows)}") as err:
        check_inputs(EVALUATE, cfg, inputs)
    assert err.value.field == "prompts_dir"
    check_inputs(EVALUATE, cfg, inputs, accept_edits=True)


# ================================================================== 5. label merge is idempotent
def test_label_merge_of_its_own_output_with_the_same_reviews_changes_nothing(tmp_path):
    """Before: the second merge appended a second provenance entry to every reviewed record."""
    from label_helpers import DEFAULT_LABELS, make_record, write_records

    from pipeline.label.common import make_review
    from pipeline.label.merge import MergeConfig, run_merge

    base = write_records(tmp_path / "base", {"train": [make_record("a", "train"), make_record("b", "train")],
                                             "dev": [make_record("c", "dev")], "test": []})
    reviews = tmp_path / "reviews.jsonl"
    write_jsonl(reviews, [make_review(sample_id=s, reviewer="alice", labels={**DEFAULT_LABELS, "motion": m},
                                      model_labels=DEFAULT_LABELS, batch_id="b1", updated_at="2025-03-01T10:00:00Z")
                          for s, m in (("a", "fly_around"), ("c", "flyby"))])

    def merge(data_dir: Path) -> dict:
        return run_merge(load_config(MergeConfig, None, [f"out_dir={tmp_path / 'ds'}", f"data_dir={data_dir}",
                                                         f"reviews=[{reviews}]"])).stats

    first = merge(base)
    v1 = tmp_path / "ds/v1"
    second = merge(v1)
    v2 = tmp_path / "ds/v2"
    for split in ("train", "dev", "test"):
        assert (v2 / f"{split}.jsonl").read_bytes() == (v1 / f"{split}.jsonl").read_bytes()
    assert first["changed"] == 1 and first["confirmed"] == 1
    assert second["changed"] == 0 and second["confirmed"] == 0 and second["already_applied"] == 2
    assert load_jsonl(v2 / "changes.jsonl") == []
    recs = {r["sample_id"]: r for r in load_jsonl(v2 / "train.jsonl")}
    assert len(recs["a"]["provenance"]) == 1 and recs["a"]["labels"]["motion"] == "fly_around"
    # a new review of the same item is still applied on top
    write_jsonl(reviews, [make_review(sample_id="a", reviewer="bob", labels={**DEFAULT_LABELS, "motion": "hovering"},
                                      model_labels=DEFAULT_LABELS, batch_id="b2", updated_at="2025-04-01T10:00:00Z")])
    merge(v2)
    recs = {r["sample_id"]: r for r in load_jsonl(tmp_path / "ds/v3/train.jsonl")}
    assert len(recs["a"]["provenance"]) == 2 and recs["a"]["labels"]["motion"] == "hovering"
    shutil.rmtree(tmp_path / "ds")

"""The one checkpoint reader (pipeline/models/checkpoint.py): find, verify against checkpoint.json, read once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline.core.io import DataError
from pipeline.methods import MethodConfig
from pipeline.methods.lora import LoraConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.checkpoint import available_checkpoints, checkpoint_path, read_checkpoint
from pipeline.models.lm import AdaptedLM, load_base_model, load_model
from pipeline.models.store import resolve_model_dir
from pipeline.train.checkpoint import write_index


pytestmark = pytest.mark.usefixtures("one_thread")


def saved(train_dir: Path, method: MethodConfig, name: str = "best", index: bool = True) -> Path:
    """A checkpoint folder ``train_dir/name`` of ``method`` on tiny:llama (with its checkpoint.json when ``index``)."""
    lm = AdaptedLM(load_base_model(resolve_model_dir("tiny:llama")), method)
    folder = train_dir / name
    lm.save_adapter(folder, extra={"model_spec": "tiny:llama", "step": 7})
    if index:
        write_index(folder, {"run": "test"}, 7)
    return folder


def test_an_intact_checkpoint_is_read_once_and_loads(tmp_path):
    folder = saved(tmp_path, MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=3, init_std=0.5)))
    ckpt = read_checkpoint(folder)
    assert (ckpt.method, ckpt.step, ckpt.model_spec, ckpt.cls_head) == ("ptuning_v2", 7, "tiny:llama", False)
    assert ckpt.index is not None and "prefix.safetensors" in ckpt.index["files"]
    lm, _ = load_model("tiny:llama", checkpoint=ckpt)
    assert lm.method == "ptuning_v2" and lm.pre_seq_len == 3
    assert checkpoint_path(tmp_path, "best") == folder and checkpoint_path(None, "best") is None
    assert available_checkpoints(tmp_path) == ["best"]


def test_a_changed_file_is_a_data_error_naming_it(tmp_path):
    folder = saved(tmp_path, MethodConfig(name="lora", lora=LoraConfig(r=2)))
    weights = folder / "adapter.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0  # same shapes, other values: only the hash can tell
    save_file(tensors, str(weights))
    with pytest.raises(DataError, match=r"adapter\.safetensors.*does not match.*checkpoint\.json.*changed") as exc:
        read_checkpoint(folder)
    assert exc.value.args and "adapter.safetensors" in str(exc.value)
    with pytest.raises(DataError, match="adapter.safetensors"):
        load_model("tiny:llama", checkpoint=folder)


def test_a_hand_copied_folder_with_tensors_of_other_shapes_names_the_tensor(tmp_path):
    folder = saved(tmp_path, MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=3)), index=False)
    other = saved(tmp_path / "other", MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=5)), index=False)
    (folder / "prefix.safetensors").write_bytes((other / "prefix.safetensors").read_bytes())  # copied by hand
    assert read_checkpoint(folder).index is None  # no index: read unverified, checked tensor by tensor
    with pytest.raises(DataError, match=r"prefix\.safetensors.*embedding\.weight.*[[(]5, .*[[(]3, "):
        load_model("tiny:llama", checkpoint=folder)


def test_a_missing_folder_names_what_exists_and_another_base_model_is_refused(tmp_path):
    saved(tmp_path, MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=2)), name="final")
    with pytest.raises(DataError, match="no such checkpoint folder.*has: final"):
        read_checkpoint(tmp_path / "best")
    with pytest.raises(DataError, match="arch.model_type.*'llama' model.*'glm4'"):
        load_model("tiny:glm4", checkpoint=tmp_path / "final")


def test_an_old_folder_without_a_method_key_is_ptuning_v2(tmp_path):
    folder = saved(tmp_path, MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=2)), index=False)
    meta = json.loads((folder / "prefix_config.json").read_text())
    del meta["method"], meta["cls_head"]
    (folder / "prefix_config.json").write_text(json.dumps(meta))
    assert read_checkpoint(folder).method == "ptuning_v2"
    assert load_model("tiny:llama", checkpoint=folder)[0].pre_seq_len == 2

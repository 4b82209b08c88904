"""The method registry: a toy method registered from this test module trains, saves, loads, evaluates and classifies.

The toy method (``toy_prompt``: two trained virtual-token embeddings read at the input layer) is defined and
registered here and nowhere else; every stage reaches it through :mod:`pipeline.methods.registry`. This is the
worked example of docs/ARCHITECTURE.md ("Adding a tuning method").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pipeline.core.config import ConfigError
from pipeline.core.io import DataError
from pipeline.methods import MethodConfig, get_method, method_names, read_method_config
from pipeline.methods.base import ArchFacts
from pipeline.methods.registry import Method, MethodKind, build_from, register_method, unregister_method
from pipeline.models.lm import load_model
from pipeline.models.scoring import score_rows
from pipeline.train import run_train
from train_helpers import evaluate_final, tiny_cfg, train_losses, write_prompts


# ---------------------------------------------------------------------------------------- the toy method
@dataclasses.dataclass(frozen=True)
class ToyPromptConfig:
    """Settings of the toy method (the ``method.toy_prompt`` section)."""

    # number of virtual tokens
    pre_seq_len: int = 2
    # std of the normal init
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.pre_seq_len < 1:
            raise ValueError(f"pre_seq_len must be >= 1, got {self.pre_seq_len}")


class ToyPrompt(nn.Module):
    """``forward()`` -> ``(pre_seq_len, hidden)`` trained embeddings (an InputEmbeddingModule)."""

    def __init__(self, config: ToyPromptConfig, facts: ArchFacts):
        super().__init__()
        self.config = config
        self.embeddings = nn.Parameter(torch.randn(config.pre_seq_len, facts.hidden_size) * config.init_std)

    @property
    def pre_seq_len(self) -> int:
        return self.config.pre_seq_len

    def forward(self) -> torch.Tensor:
        return self.embeddings


TOY = Method(name="toy_prompt", settings_class=ToyPromptConfig, kind=MethodKind.INPUT_EMBEDDINGS,
             build=build_from(ToyPrompt), summary="a 2-token soft prompt (test)")


@pytest.fixture(autouse=True)
def toy_method():
    """Register the toy method for each test, and forget it afterwards (other test modules never see it)."""
    torch.set_num_threads(1)
    register_method(TOY)
    yield TOY
    unregister_method(TOY.name)


@pytest.fixture
def trained(tmp_path) -> Path:
    """A toy-method run of the real train stage (its ``out_dir``)."""
    prompts = write_prompts(tmp_path / "p")
    cfg = tiny_cfg(tmp_path, prompts, **{"method.name": "toy_prompt", "method.toy_prompt.pre_seq_len": 2,
                                         "optim.max_steps": 4, "optim.learning_rate": 0.05,
                                         "checkpoint.save_steps": 2, "eval.steps": 2, "eval.mode": "score"})
    run_train(cfg)
    return Path(cfg.out_dir)


# --------------------------------------------------------------------------------------------- the tests
def test_the_registry_knows_the_shipped_methods_and_the_toy():
    assert method_names()[:5] == ("ptuning_v2", "prefix_tuning", "prompt_tuning", "ptuning_v1", "lora")
    assert get_method("toy_prompt") is TOY and "toy_prompt" in method_names()
    with pytest.raises(ValueError, match="already registered"):
        register_method(dataclasses.replace(TOY))
    cfg = MethodConfig.from_mapping({"name": "toy_prompt", "toy_prompt": {"pre_seq_len": 3}})
    assert cfg.settings == ToyPromptConfig(pre_seq_len=3) and cfg.pre_seq_len == 3
    with pytest.raises(ConfigError, match="unknown key.*method.toy_prompt.width"):
        MethodConfig.from_mapping({"name": "toy_prompt", "toy_prompt": {"width": 3}})


def test_the_toy_method_trains_saves_resumes_and_loads(tmp_path, trained):
    losses = [r for r in train_losses(trained) if r[0] == "train"]
    assert losses, "no training rows logged"
    for folder in ("checkpoints/step-4", "best", "final"):
        meta = read_method_config(trained / folder)
        assert meta["method"] == "toy_prompt" and meta["pre_seq_len"] == 2 and meta["init_std"] == 0.02
        assert set(load_file(str(trained / folder / "adapter.safetensors"))) == {"embeddings"}
    lm, tok = load_model("tiny:llama", checkpoint=trained / "final")
    base, _ = load_model("tiny:llama")
    assert lm.method == "toy_prompt" and lm.pre_seq_len == 2 and lm.position_offset == 2
    saved = load_file(str(trained / "final" / "adapter.safetensors"))["embeddings"]
    torch.testing.assert_close(lm.prompt.embeddings.detach(), saved, atol=0, rtol=0)
    ids = torch.tensor([tok("Range stays at 10 m. Intent?")["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(lm(ids).logits, base(ids).logits)  # the virtual tokens change the answer
    # a resume of the same run continues from the step checkpoint (the registry's load_adapter_weights path)
    prompts = tmp_path / "p"
    again = tiny_cfg(tmp_path, prompts, **{"method.name": "toy_prompt", "method.toy_prompt.pre_seq_len": 2,
                                           "optim.max_steps": 4, "optim.learning_rate": 0.05,
                                           "checkpoint.save_steps": 2, "eval.steps": 2, "eval.mode": "score",
                                           "checkpoint.resume": str(trained / "checkpoints/step-4")})
    assert run_train(again).stats is not None


def test_a_toy_checkpoint_is_scored_by_label_scoring_and_evaluated(tmp_path, trained):
    """Label scoring directly and through the real evaluate stage (preflight, loader, both modes)."""
    from record_fixtures import write_fixture_dirs

    lm, tok = load_model("tiny:llama", checkpoint=trained / "final")
    rows = score_rows(lm, tok, ["Range stays at 10 m. Intent?"], ["en"], 1)
    assert abs(sum(rows[0]["probs"]["motion"].values()) - 1) < 1e-6 and rows[0]["parsed"]["motion"]
    for split in ("train", "dev", "test"):
        records, prompts = write_fixture_dirs(tmp_path / "d", n=4, variants=("plain",), split=split)
    out = evaluate_final(tmp_path, records, prompts, trained, "toy")
    assert {r["mode"] for r in out} == {"score", "generate"} and {r["model_tag"] for r in out} == {"toy"}
    assert all(abs(sum(r["probs"]["task"].values()) - 1) < 1e-6 for r in out if r["mode"] == "score")


def test_a_toy_checkpoint_classifies_tracks(tmp_path, trained):
    from data_prep.tracks import EXAMPLE_PATH
    from pipeline.classify import TrackClassifier

    clf = TrackClassifier("tiny:llama", train_dir=trained, checkpoint="final", render={"prompt_type": "compact"})
    rows = clf.classify(EXAMPLE_PATH)
    assert rows and clf.lm.method == "toy_prompt"
    for row in rows:
        assert abs(sum(row["probs"]["motion"].values()) - 1) < 1e-6 and row["motion"] in row["probs"]["motion"]


def test_a_toy_checkpoint_without_its_method_is_a_data_error(trained):
    unregister_method("toy_prompt")
    with pytest.raises(DataError, match="unknown method 'toy_prompt'"):
        load_model("tiny:llama", checkpoint=trained / "final")


def test_a_build_that_breaks_the_interface_is_refused():
    from pipeline.methods import build_adapters
    from pipeline.models.lm import load_base_model
    from pipeline.models.store import resolve_model_dir
    from pipeline.methods.base import arch_facts

    bad = Method(name="toy_broken", settings_class=ToyPromptConfig, kind=MethodKind.KEY_VALUES,
                 build=lambda settings, model, facts: ToyPrompt(settings, facts))  # no key_values()
    register_method(bad)
    try:
        model = load_base_model(resolve_model_dir("tiny:llama"))
        with pytest.raises(TypeError, match="not a KeyValueModule"):
            build_adapters(MethodConfig(name="toy_broken"), model, arch_facts(model.config))
    finally:
        unregister_method("toy_broken")


def test_the_checkpoint_json_of_a_toy_run_lists_the_adapter(trained):
    index = json.loads((trained / "final" / "checkpoint.json").read_text())
    assert "adapter.safetensors" in index["files"] and "adapter_config.json" in index["files"]

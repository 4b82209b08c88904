"""Every method against PEFT's implementation: same weights -> same logits (fp32, 1e-5, padded batches).

Tiny random Llama / Qwen2 / GLM / GLM-4 models; PEFT's modules get our weights copied in. Real tokens of
right-padded rows sit at the same positions in both (after the virtual tokens: ``positions_after_prefix``),
so their logits must agree; PEFT's logits of input-layer methods include the ``P`` virtual positions first.
"""

from __future__ import annotations

import copy

import pytest
import torch
from lm_helpers import padded_batch

from pipeline.methods import MethodConfig, build_adapters
from pipeline.methods.base import arch_facts
from pipeline.methods.lora import LoraConfig
from pipeline.methods.prefix_tuning import PrefixTuningConfig
from pipeline.methods.prompt_tuning import PromptTuningConfig
from pipeline.methods.ptuning_v1 import PTuningV1Config
from pipeline.models.lm import AdaptedLM, load_base_model
from pipeline.models.store import resolve_model_dir

P = 3
ARCHS = ["llama", "qwen2", "glm", "glm4"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bases():
    return {name: load_base_model(resolve_model_dir(f"tiny:{name}")) for name in ARCHS}


def ours(bases, name: str, method: MethodConfig) -> AdaptedLM:
    torch.manual_seed(0)
    model = copy.deepcopy(bases[name])
    return AdaptedLM(model, build_adapters(method, model, arch_facts(model.config))).eval()


def compare(lm: AdaptedLM, peft_model, virtual: int) -> None:
    """Logits of the real tokens agree at 1e-5 and differ from the bare model's (the method acts)."""
    peft_model.eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        mine = lm(ids, mask).logits
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits[:, virtual:]
        plain = lm.model(input_ids=ids, attention_mask=mask).logits if lm.lora is None else None
    real = mask.bool()
    assert mine.shape == theirs.shape
    torch.testing.assert_close(mine[real], theirs[real], atol=1e-5, rtol=0)
    if plain is not None:
        assert (mine[real] - plain[real]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ARCHS)
def test_prompt_tuning_equals_peft(bases, name):
    from peft import PromptTuningConfig as PeftConfig
    from peft import get_peft_model

    lm = ours(bases, name, MethodConfig(name="prompt_tuning", prompt_tuning=PromptTuningConfig(pre_seq_len=P,
                                                                                                init_std=1.0)))
    peft_model = get_peft_model(copy.deepcopy(bases[name]), PeftConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(lm.prompt.embedding.weight)
    compare(lm, peft_model, P)


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
@pytest.mark.parametrize("name", ARCHS)
def test_ptuning_v1_equals_peft_prompt_encoder(bases, name, encoder):
    from peft import PromptEncoderConfig, get_peft_model

    lm = ours(bases, name, MethodConfig(name="ptuning_v1", ptuning_v1=PTuningV1Config(
        pre_seq_len=P, encoder=encoder, encoder_hidden_size=24)))
    peft_model = get_peft_model(copy.deepcopy(bases[name]), PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=P, encoder_reparameterization_type=encoder.upper(),
        encoder_hidden_size=24))
    theirs = peft_model.prompt_encoder["default"]
    theirs.load_state_dict(lm.prompt.state_dict())  # same module names: embedding, mlp_head, lstm_head
    compare(lm, peft_model, P)


@pytest.mark.parametrize("name", ARCHS)
def test_prefix_tuning_equals_peft_with_projection(bases, name):
    from peft import PrefixTuningConfig as PeftConfig
    from peft import get_peft_model

    lm = ours(bases, name, MethodConfig(name="prefix_tuning", prefix_tuning=PrefixTuningConfig(
        pre_seq_len=P, prefix_hidden_size=24)))
    peft_model = get_peft_model(copy.deepcopy(bases[name]), PeftConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=True, encoder_hidden_size=24))
    theirs = peft_model.prompt_encoder["default"]
    state = {k.replace("trans.", "transform."): v for k, v in lm.prefix.state_dict().items()}
    theirs.load_state_dict(state)
    compare(lm, peft_model, 0)


@pytest.mark.parametrize("name", ARCHS)
def test_lora_equals_peft(bases, name):
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model

    lm = ours(bases, name, MethodConfig(name="lora", lora=LoraConfig(r=4, alpha=8, dropout=0.0,
                                                                     target_modules=("q_proj", "v_proj"))))
    with torch.no_grad():  # B starts at zero (no effect): give it weights so the comparison means something
        for branch in lm.lora.branches.values():
            branch.lora_B.weight.normal_(std=0.5)
    peft_model = get_peft_model(copy.deepcopy(bases[name]), PeftConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    inner = peft_model.base_model.model
    with torch.no_grad():
        for path, branch in zip(lm.lora.module_paths(), lm.lora.branches.values()):
            target = inner.get_submodule(path)
            target.lora_A["default"].weight.copy_(branch.lora_A.weight)
            target.lora_B["default"].weight.copy_(branch.lora_B.weight)
    compare(lm, peft_model, 0)
    ids, mask = padded_batch()
    with torch.no_grad():
        plain = bases[name](input_ids=ids, attention_mask=mask).logits
        mine = lm(ids, mask).logits
    assert (mine - plain)[mask.bool()].abs().max() > 1e-3

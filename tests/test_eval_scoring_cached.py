"""Label scoring with one prompt pass per row must agree with the one-pass-per-level reference."""

import pytest
import torch
from record_fixtures import make_records, prompt_row

from pipeline.methods import MethodConfig
from pipeline.methods.ptuning_v2 import PrefixConfig
from pipeline.models.lm import load_model
from pipeline.models.scoring import score_rows, score_rows_per_level


@pytest.mark.parametrize("spec", ["tiny:llama", "tiny:glm", "tiny:glm4", "tiny:qwen2", "tiny:gpt2"])
def test_cached_label_scoring_matches_per_level_reference(spec):
    torch.manual_seed(0)
    lm, tok = load_model(spec, method=MethodConfig(ptuning_v2=PrefixConfig(pre_seq_len=4)))
    records = make_records(5)
    rows = [prompt_row(r, "plain", "en") for r in records] + [prompt_row(records[0], "cot", "zh")]
    prompts, langs = [r["prompt"] for r in rows], [r["lang"] for r in rows]
    fast = score_rows(lm, tok, prompts, langs, batch_size=3)  # batches mix prompt lengths (left padding)
    ref = score_rows_per_level(lm, tok, prompts, langs, batch_size=2)
    for a, b in zip(fast, ref):
        assert a["parsed"] == b["parsed"]
        assert a["output"] == b["output"]
        for level, dist in a["probs"].items():
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-6)
            for label, p in dist.items():
                assert p == pytest.approx(b["probs"][level][label], abs=1e-5)

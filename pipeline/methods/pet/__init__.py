"""PET-style cloze: a method with no trainable parameters (zero-shot and k-shot in context).

* :mod:`pipeline.methods.pet.cloze` -- the manual pattern per intent level (en/zh), the verbalizer,
  the prompt ``P(x)`` and the scoring candidates (:func:`cloze_candidate`);
* :mod:`pipeline.methods.pet.demos` -- deterministic, class-balanced in-context examples.

The evaluate stage selects it with a ``pet`` section (``eval/configs/*.yaml``) and scores it
through the label scoring of :mod:`pipeline.models.scoring`. What the original PET also does --
fine-tune the masked LM on the cloze loss, then distil an ensemble of patterns into a classifier
-- is not done here: the base model is a frozen causal LM without an MLM head, and the trained
route of this pipeline is P-Tuning v2 (and its sibling methods); see docs/methods.md.
"""

from pipeline.methods.pet.cloze import (
    PATTERNS,
    PET_VERSION,
    VERBALIZER,
    ClozePattern,
    cloze_candidate,
    filled_reply,
    render_cloze_prompt,
    template_hash,
    verbalize,
)
from pipeline.methods.pet.demos import Demo, demo_from_row, select_demos, select_demos_by_lang

__all__ = ["PATTERNS", "PET_VERSION", "VERBALIZER", "ClozePattern", "Demo", "cloze_candidate", "demo_from_row",
           "filled_reply", "render_cloze_prompt", "select_demos", "select_demos_by_lang", "template_hash",
           "verbalize"]

"""Tuning methods, one folder each: ``pipeline/methods/<name>/`` holds its config, module and save/load.

Today: ``ptuning_v2/`` (ChatGLM's P-Tuning v2 prefix encoder). Sibling methods (prompt tuning,
P-Tuning v1, prefix tuning, LoRA, ...) get their own folder, a name in :data:`METHODS` and a
sub-section of the train config's ``method`` section named like the folder::

    method:
      name: ptuning_v2
      ptuning_v2: {pre_seq_len: 16, prefix_projection: false}

Methods sit below the model library (:mod:`pipeline.models`): they import only the ground
floor and :mod:`pipeline.methods.base`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.methods.ptuning_v2 import PrefixConfig

#: Known method names (one folder each).
METHODS: tuple[str, ...] = ("ptuning_v2",)


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The ``method`` section of a train config: which method, and each method's own settings."""

    # the tuning method to train (a folder under pipeline/methods/)
    name: Literal["ptuning_v2"] = "ptuning_v2"
    # P-Tuning v2 prefix settings (pre_seq_len 128, no projection, as in the paper)
    ptuning_v2: PrefixConfig = PrefixConfig()

    @property
    def settings(self) -> PrefixConfig:
        """The sub-section of the selected method."""
        return getattr(self, self.name)


__all__ = ["METHODS", "MethodConfig"]

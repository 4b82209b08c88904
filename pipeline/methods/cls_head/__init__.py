"""The ``cls_head`` option: a linear head per intent level over the last token, trained with cross-entropy."""

from pipeline.methods.cls_head.head import (
    CLS_HEAD_WEIGHTS,
    IGNORE_CLASS,
    ClsHead,
    class_label_ids,
    count_cls_head_parameters,
    head_labels,
    probabilities,
)

__all__ = ["CLS_HEAD_WEIGHTS", "IGNORE_CLASS", "ClsHead", "class_label_ids", "count_cls_head_parameters",
           "head_labels", "probabilities"]

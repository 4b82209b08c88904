"""Stage ``label.export``: selection -> Label Studio tasks with pre-annotations (+ plain JSONL).

``python -m pipeline label export --config pipeline/label/configs/export_demo.yaml``

Writes to ``out_dir``:

* ``tasks.json`` -- Label Studio import file: one task per selected instance,
  ``{"data": {"text", "sample_id", "batch_id"},
  "predictions": [{"model_version", "score", "result": [choices per level, textarea rationale]}]}``;
  experts see the model's labels and rationale pre-filled and only correct them. The data holds
  only what experts may see (Label Studio lists every data field in its task table): the selection
  strategy and score, which could bias the review, stay in ``tasks.jsonl``.
* ``labeling_config.xml`` -- the matching project config: a ``Choices`` per intent level listing
  every label (display name shown, canonical label stored via ``alias``) and a ``TextArea``
  for the rationale; every caption in ``lang``.
* ``tasks.jsonl`` -- the same tasks flat (with split, strategy, score, the model's labels and
  rationale): the batch record ``label.import`` resolves the pre-annotations from, the input of
  ``label.review`` and of other annotation tools.
"""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

from pipeline.core.io import DataError, read_jsonl, write_json, write_jsonl, write_text
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS
from pipeline.label.common import choice_display, validate_labels

log = logging.getLogger(__name__)

TEXT_NAME = "text"          # name of the Text object tag every control points at
RATIONALE_NAME = "rationale"
#: the only task data fields Label Studio gets (it shows every data field to the experts)
TASK_DATA_KEYS = ("text", "sample_id", "batch_id")
#: captions of the labelling interface per language ({level} is the level's display name)
HEADERS: dict[str, dict[str, str]] = {
    "en": {"known": "Known information", "level": "{level} intent",
           "rationale": "Rationale (edit it if the reasoning is wrong)"},
    "zh": {"known": "已知信息", "level": "{level}意图", "rationale": "推理依据（推理有误时请修改）"},
}


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Config of ``label.export``."""

    # where tasks.json, tasks.jsonl, labeling_config.xml and manifest.json go
    out_dir: Path = Path("runs/demo/label/export")
    # label.select output
    selection: Path = Path("runs/demo/label/select/selection.jsonl")
    # language of the choice captions shown to experts (stored values are always canonical labels)
    lang: Literal["en", "zh"] = "en"
    # include the model's rationale as an editable pre-filled TextArea
    include_rationale: bool = True


def export_inputs(cfg: ExportConfig) -> list[Path]:
    """The selection file."""
    return [Path(cfg.selection)]


def prediction_result(predicted: dict[str, str | None], rationale: str | None) -> list[dict[str, Any]]:
    """Label Studio ``result`` regions: one ``choices`` per level with a label, one ``textarea`` rationale."""
    result: list[dict[str, Any]] = []
    for lev in LEVELS:
        if predicted.get(lev):
            result.append({"id": f"pred-{lev}", "from_name": lev, "to_name": TEXT_NAME, "type": "choices",
                           "value": {"choices": [predicted[lev]]}})
    if rationale:
        result.append({"id": f"pred-{RATIONALE_NAME}", "from_name": RATIONALE_NAME, "to_name": TEXT_NAME,
                       "type": "textarea", "value": {"text": [rationale]}})
    return result


def build_task(row: dict[str, Any], include_rationale: bool) -> dict[str, Any]:
    """One Label Studio task (data + one pre-annotation) from a selection row."""
    task: dict[str, Any] = {"data": {k: row.get(k) for k in TASK_DATA_KEYS}}
    result = prediction_result(row.get("predicted") or {}, row.get("rationale") if include_rationale else None)
    if result:
        pred: dict[str, Any] = {"model_version": row.get("model_version") or "unknown", "result": result}
        if row.get("confidence") is not None:
            pred["score"] = row["confidence"]
        task["predictions"] = [pred]
    return task


def build_labeling_config(lang: str = "en", include_rationale: bool = True) -> str:
    """Label Studio labelling-config XML: the text, single-choice ``Choices`` per level, a rationale TextArea."""
    headers = HEADERS[lang]
    view = ET.Element("View")
    ET.SubElement(view, "Header", value=headers["known"])
    ET.SubElement(view, "Text", name=TEXT_NAME, value=f"${TEXT_NAME}")
    for lev in LEVELS:
        ET.SubElement(view, "Header", value=headers["level"].format(level=LEVEL_DISPLAY[lang][lev]))
        choices = ET.SubElement(view, "Choices", name=lev, toName=TEXT_NAME, choice="single",
                                showInline="true", required="true")
        for label in LABELS[lev]:
            # alias: Label Studio stores the alias in results, so exports carry canonical labels
            ET.SubElement(choices, "Choice", value=choice_display(label, lang), alias=label)
    if include_rationale:
        ET.SubElement(view, "Header", value=headers["rationale"])
        ET.SubElement(view, "TextArea", name=RATIONALE_NAME, toName=TEXT_NAME, editable="true",
                      maxSubmissions="1", rows="6")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def plain_task(row: dict[str, Any], include_rationale: bool = True) -> dict[str, Any]:
    """Flat task row for tools other than Label Studio (and for ``label.review``).

    It records exactly the pre-annotation the experts were shown: without ``include_rationale``
    the rationale is None, so ``label.import`` never reads a missing rationale as a deletion.
    """
    keep = ("sample_id", "split", "batch_id", "strategy", "score", "text", "predicted", "predicted_source",
            "rationale", "confidence", "model_version")
    out = {k: row.get(k) for k in keep}
    if not include_rationale:
        out["rationale"] = None
    return out


def load_selection(path: Path) -> list[dict[str, Any]]:
    """Selection rows, checked: sample_id, text, predicted labels valid."""
    rows = []
    for lineno, row in read_jsonl(path):
        sid = row.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(path, lineno, "sample_id", "missing or not a string")
        if not isinstance(row.get("text"), str):
            raise DataError(path, lineno, "text", f"task {sid}: missing known-information text")
        row["predicted"] = validate_labels(row.get("predicted"), path, lineno, f"task {sid}", "predicted")
        rows.append(row)
    return rows


def run_export(cfg: ExportConfig) -> StageResult:
    """Write tasks.json, tasks.jsonl and labeling_config.xml."""
    rows = load_selection(Path(cfg.selection))
    out = Path(cfg.out_dir)
    tasks = [build_task(r, cfg.include_rationale) for r in rows]
    write_json(out / "tasks.json", tasks)
    write_jsonl(out / "tasks.jsonl", (plain_task(r, cfg.include_rationale) for r in rows))
    write_text(out / "labeling_config.xml", build_labeling_config(cfg.lang, cfg.include_rationale))
    stats = {"tasks": len(tasks), "with_predictions": sum("predictions" in t for t in tasks),
             "with_rationale": sum(bool(r.get("rationale")) for r in rows) if cfg.include_rationale else 0}
    return StageResult(outputs=[out / "tasks.json", out / "tasks.jsonl", out / "labeling_config.xml"], stats=stats)


STAGE = Stage(
    name="label.export",
    config_cls=ExportConfig,
    inputs=export_inputs,
    run=run_export,
    default_config="pipeline/label/configs/export_demo.yaml",
    help="Label Studio tasks with pre-annotations + labelling config XML + plain JSONL",
)

__all__ = ["HEADERS", "RATIONALE_NAME", "STAGE", "TASK_DATA_KEYS", "TEXT_NAME", "ExportConfig", "build_labeling_config",
           "build_task", "run_export"]

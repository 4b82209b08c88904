"""Stage ``classify``: raw tracks in, intents out.

    python -m pipeline classify --config pipeline/configs/classify_demo.yaml [tracks=... train_dir=... key=value]

Reads a track file (CSV, JSONL or NPZ; sensor form or LVLH states, any cadence and window:
:func:`data_prep.tracks.read_tracks`) and the checkpoint ``<train_dir>/<checkpoint>``, computes each
track's features, renders the prompt **the model was trained on** (the render options the train stage
recorded in the checkpoint, see :func:`prompt_options`) and answers it by label scoring (``mode: score``,
probabilities per level) or greedy generation (``mode: generate``, e.g. a CoT prefix's rationale and its
answer line). Writes under ``out_dir``:

* ``predictions.jsonl`` -- one row per track (:func:`classify_records` lists the fields);
* ``summary.json`` -- counts, and accuracy against the relabelling oracle and the file's own labels;
* ``manifest.json`` (the stage runner).

The same path as a Python function: :func:`classify_tracks` (or :class:`TrackClassifier` to load a
model once and classify several files).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from data_prep.oracle import relabel_motion
from data_prep.rules import determined_intents
from data_prep.tracks import read_tracks_by_id
from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, write_json, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LABELS, LEVELS
from prompts_cot.render import RenderOptions, check_options, options_from_dict, options_to_dict, render_prompt

if TYPE_CHECKING:  # the checkpoint reader imports torch: a bad track file fails before that
    from pipeline.models.checkpoint import Checkpoint

log = logging.getLogger(__name__)

Mode = Literal["score", "generate"]
#: the checkpoint JSON entry the train stage writes (prompts_cot.rows.training_prompts)
PROMPTS_KEY = "prompts"


# --------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RenderOverrides:
    """Render options that replace the ones the checkpoint records (null = keep the recorded value).

    Without a recorded value (base model, or a checkpoint from before the train stage recorded its
    prompts) a field falls back to :class:`prompts_cot.render.RenderOptions`' default.
    """

    # basic | instruction | cot | compact
    prompt_type: Literal["basic", "instruction", "cot", "compact"] | None = None
    # en | zh (a checkpoint trained on several languages records the most frequent one)
    lang: Literal["en", "zh"] | None = None
    # qualitative | numeric | both | compact
    motion_style: Literal["qualitative", "numeric", "both", "compact"] | None = None
    # m | km (speeds m/s | km/s)
    units: Literal["m", "km"] | None = None
    # digits after the point for distances in metres
    decimals: int | None = None
    # distances and speeds in scientific notation
    scientific: bool | None = None
    # sampled observation points in the numeric motion block
    max_obs_points: int | None = None
    # which paraphrase of the instruction / question
    instruction_variant: int | None = None

    def given(self) -> dict[str, Any]:
        """The fields that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    """Config of the ``classify`` stage."""

    # where predictions.jsonl, summary.json and manifest.json go
    out_dir: Path
    # the track file: CSV, JSONL or NPZ, sensor form (t, range, az, el, range_rate) or LVLH (t, x..vz), units declared
    tracks: Path
    # csv | jsonl | npz; null = from the file suffix
    format: Literal["csv", "jsonl", "npz"] | None = None
    # units of bare column names, e.g. {distance: km, angle: deg, time: s, speed: mps} (overrides the file's own)
    units: dict[str, str] | None = None
    # the station's orbit (LEO | GEO) for tracks without an orbit column; null = LEO
    orbit: str | None = None
    # the column that groups samples into tracks (absent from the file: the whole file is one track)
    id_column: str = "track_id"
    # a track whose own dynamics contradict its orbit (e.g. GEO motion read as LEO): error | warn | off
    orbit_check: Literal["error", "warn", "off"] = "error"
    # model spec: smollm2 | tiny:<name> | local HF (or ChatGLM2/3) folder
    model: str = "smollm2"
    # train stage output folder holding the checkpoint; null = the base model (no prefix)
    train_dir: Path | None = None
    # checkpoint folder under train_dir: best | final | checkpoints/step-N
    checkpoint: str = "best"
    # score = label scoring (probabilities per level); generate = greedy reply (CoT prefix: rationale + answer)
    mode: Mode = "score"
    # render options replacing the checkpoint's recorded ones (normally none: the training prompt is reproduced)
    render: RenderOverrides = dataclasses.field(default_factory=RenderOverrides)
    # prompts per forward batch
    batch_size: int = 8
    # greedy decoding budget per reply (generate mode; a CoT prefix needs ~256)
    max_new_tokens: int = 128
    # base-model weights dtype: float32 | bfloat16 | float16 (the prefix stays float32)
    dtype: str = "float32"
    # torch device, e.g. cpu or cuda
    device: str = "cpu"
    # torch threads for CPU runs; 0 = torch's default
    num_threads: int = 0


def render_options(*layers: dict[str, Any]) -> RenderOptions:
    """RenderOptions' defaults with ``layers`` on top (later ones win), checked: a ConfigError under ``render``."""
    merged: dict[str, Any] = options_to_dict(RenderOptions())
    for layer in layers:
        merged.update(layer)
    try:
        opts = options_from_dict(merged)
        check_options(opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"render: {exc}") from None
    return opts


def check_config(cfg: ClassifyConfig) -> None:
    """Settings that cannot run, as a ConfigError naming the key (before anything is read; the stage runner and
    the profile runner call it as ``STAGE.check``, :func:`run_classify` relies on that)."""
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("batch_size and max_new_tokens must be >= 1")
    render_options(cfg.render.given())


def classify_inputs(cfg: ClassifyConfig) -> list[Path]:
    """The track file, plus the checkpoint folder when given."""
    from pipeline.models.checkpoint import checkpoint_path

    ckpt = checkpoint_path(cfg.train_dir, cfg.checkpoint)
    return [Path(cfg.tracks)] + ([ckpt] if ckpt is not None else [])


# ---------------------------------------------------------------------------------------- checkpoint
def prompt_options(ckpt: Checkpoint | Path | None, overrides: dict[str, Any] | None = None) -> tuple[RenderOptions, str]:
    """The render options for new records, and where they came from (``checkpoint`` | ``config`` | ``defaults``).

    * A checkpoint that records its training prompts (``prompts.render`` in its method JSON, written by the
      train stage): exactly those options -- a record then renders to the very prompt the prompts stage
      wrote for it -- with ``overrides`` on top (each one that differs from training is logged as a warning).
    * A checkpoint without the record (trained before it existed): ``overrides`` on RenderOptions' defaults;
      ``overrides`` must then at least name ``prompt_type`` (else a DataError naming the checkpoint file):
      set the options of the prompts config the model was trained on.
    * No checkpoint (the base model): ``overrides`` on RenderOptions' defaults.

    ``ckpt``: the :class:`~pipeline.models.checkpoint.Checkpoint` already read, or its folder.
    """
    given = dict(overrides or {})
    base: dict[str, Any] = {}
    source = "config" if given else "defaults"
    if ckpt is not None:
        from pipeline.models.checkpoint import as_checkpoint

        ckpt = as_checkpoint(ckpt)
        meta, meta_path = ckpt.meta, ckpt.meta_path
        facts = meta.get(PROMPTS_KEY)
        if isinstance(facts, dict) and isinstance(facts.get("render"), dict):
            base, source = dict(facts["render"]), "checkpoint"
            unknown = sorted(set(base) - {f.name for f in dataclasses.fields(RenderOptions)})
            if unknown:
                raise DataError(meta_path, None, f"{PROMPTS_KEY}.render.{unknown[0]}", "not a render option of this "
                                "version of prompts_cot.render")
            trained_langs = set(facts.get("langs") or [base.get("lang")])
            changed = {k: v for k, v in given.items()
                       if (v not in trained_langs if k == "lang" else base.get(k) != v)}
            if changed:
                log.warning("rendering with %s: not how the training prompts were rendered (%s)", changed,
                            {k: base.get(k) for k in changed})
            if len(trained_langs) > 1 and "lang" not in given:
                log.info("the model was trained on %s prompts; rendering in %s (set render.lang to choose)",
                         "/".join(sorted(trained_langs)), base.get("lang"))
        elif "prompt_type" not in given:
            raise DataError(meta_path, None, PROMPTS_KEY, "the checkpoint does not record how its training prompts "
                            "were rendered (trained before the train stage stored it); give the options of the "
                            "prompts config it was trained on: render.prompt_type=... (and render.motion_style, "
                            "units, decimals, max_obs_points, lang where they differ from RenderOptions' defaults)")
        else:
            log.warning("%s does not record its training prompts: rendering with %s on RenderOptions' defaults",
                        meta_path, given)
    return render_options(base, given), source


# ------------------------------------------------------------------------------------------ per track
def render_prompts(records: Sequence[dict[str, Any]], opts: RenderOptions, source: str | Path) -> list[str]:
    """Each record's prompt; a record the options cannot render is a DataError naming the track and field."""
    prompts = []
    for rec in records:
        try:
            prompts.append(render_prompt(rec, opts))
        except KeyError as exc:
            field = str(exc.args[0]) if exc.args else "?"
            raise DataError(source, None, field, f"track {rec.get('sample_id')!r}: missing (needed to render "
                            f"the {opts.prompt_type} prompt)") from None
    return prompts


def oracle_labels(record: dict[str, Any]) -> dict[str, str | None]:
    """The relabelling oracle's labels: motion from the features (None = ambiguous), operation and task from
    the rule tables where the known context decides them (:func:`data_prep.rules.determined_intents`)."""
    motion = relabel_motion(record["features"])
    if motion is None:
        return dict.fromkeys(LEVELS)
    return determined_intents(record.get("context") or {}, motion)


def agreement(pred: dict[str, str | None], ref: dict[str, str | None] | None) -> dict[str, bool | None]:
    """Per level: the prediction equals the reference label (None where the reference has none)."""
    ref = ref or {}
    return {level: None if ref.get(level) is None else pred.get(level) == ref[level] for level in LEVELS}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of predicted labels and accuracy against the oracle and the file's labels, per level."""

    def accuracy(key: str) -> dict[str, dict[str, Any]]:
        out = {}
        for level in LEVELS:
            refs = [r for r in rows if (r.get(key) or {}).get(level) is not None]
            hits = sum(r[level] == r[key][level] for r in refs)
            out[level] = {"n": len(refs), "accuracy": round(hits / len(refs), 4) if refs else None}
        return out

    oracle_vs_gold = {}
    for level in LEVELS:
        both = [r for r in rows if r["oracle"][level] is not None and (r.get("gold") or {}).get(level) is not None]
        hits = sum(r["oracle"][level] == r["gold"][level] for r in both)
        oracle_vs_gold[level] = {"n": len(both), "agreement": round(hits / len(both), 4) if both else None}
    return {
        "tracks": len(rows),
        "predicted": {level: dict(Counter(str(r[level]) for r in rows).most_common()) for level in LEVELS},
        "unanswered": {level: sum(r[level] is None for r in rows) for level in LEVELS},
        "vs_oracle": accuracy("oracle"),
        "vs_gold": accuracy("gold"),
        "oracle_vs_gold": oracle_vs_gold,
    }


# ------------------------------------------------------------------------------------------ classifier
class TrackClassifier:
    """A (prefix-tuned) model and the prompt options it was trained with; :meth:`classify` tracks with it.

    Example::

        clf = TrackClassifier("smollm2", train_dir="runs/demo/train")
        rows = clf.classify("data_prep/examples/tracks_example.csv")
        rows[0]["motion"], rows[0]["probs"]["motion"]
    """

    def __init__(self, model: str = "smollm2", train_dir: str | Path | None = None, checkpoint: str = "best",
                 mode: Mode = "score", render: RenderOverrides | dict[str, Any] | None = None, batch_size: int = 8,
                 max_new_tokens: int = 128, dtype: str = "float32", device: str = "cpu"):
        if mode not in ("score", "generate"):
            raise ValueError(f"mode must be score or generate, got {mode!r}")
        overrides = render.given() if isinstance(render, RenderOverrides) else dict(render or {})
        from pipeline.models.checkpoint import checkpoint_path, read_checkpoint

        folder = checkpoint_path(train_dir, checkpoint)
        self.checkpoint = read_checkpoint(folder) if folder is not None else None  # read once, used throughout
        self.ckpt = folder
        self.options, self.render_source = prompt_options(self.checkpoint, overrides)
        self.model, self.mode, self.batch_size, self.max_new_tokens = model, mode, batch_size, max_new_tokens
        trained_on = self.checkpoint.model_spec if self.checkpoint is not None else None
        if trained_on is not None and trained_on != model:
            log.warning("prefix in %s was trained on model %r, classifying with %r", self.ckpt, trained_on, model)
        self.dtype, self.device = dtype, device
        self.lm: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        """Load the model (once; on first use, so that bad tracks fail before the weights are read)."""
        if self.lm is None:
            from pipeline.models.lm import load_model  # lazy: a bad track file fails before torch is imported

            self.lm, self.tokenizer = load_model(self.model, checkpoint=self.checkpoint, dtype=self.dtype,
                                                 device=self.device)

    def describe(self) -> dict[str, Any]:
        """What answers the tracks: model, checkpoint, mode and the render options (with their source)."""
        return {"model": self.model, "checkpoint": str(self.ckpt) if self.ckpt else None, "mode": self.mode,
                "render": options_to_dict(self.options), "render_source": self.render_source}

    def classify(self, tracks: str | Path | Sequence[dict[str, Any]], fmt: str | None = None,
                 units: dict[str, str] | str | None = None, orbit: str | None = None,
                 id_column: str = "track_id") -> list[dict[str, Any]]:
        """Rows for every track of a track file (:func:`data_prep.tracks.read_tracks` options) or of records."""
        records, source, track_ids = load_tracks(tracks, fmt, units, orbit, id_column)
        return classify_records(self, records, source, track_ids)


def load_tracks(tracks: str | Path | Sequence[dict[str, Any]], fmt: str | None = None,
                units: dict[str, str] | str | None = None, orbit: str | None = None, id_column: str = "track_id",
                orbit_check: str = "error") -> tuple[list[dict[str, Any]], str, list[str] | None]:
    """(records, source for error messages, the file's track ids; None for records: their sample ids serve)."""
    if isinstance(tracks, (str, Path)):
        path = Path(tracks)
        by_id = read_tracks_by_id(path, fmt=fmt, units=units, orbit=orbit, source=path.stem, id_column=id_column,
                                  orbit_check=orbit_check)
        return list(by_id.values()), str(path), list(by_id)
    records = list(tracks)
    if not records:
        raise DataError("<records>", None, None, "no tracks to classify")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("features"), dict):
            raise DataError("<records>", i + 1, "features", "not a track record with features (use read_tracks)")
    return records, "<records>", None


def classify_records(clf: TrackClassifier, records: Sequence[dict[str, Any]], source: str | Path,
                     track_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Answer every record and assemble its row.

    Row fields: ``track_id`` (the record's entry of ``track_ids``, the id in its track file; without
    ``track_ids`` the sample id), ``sample_id``, ``lang``, ``mode``, ``motion``/``operation``/``task`` (the model's
    labels; None where a generated reply names none), ``probs`` (score mode: ``{level: {label: p}}``, each
    level summing to 1), ``output`` (generate: the reply; score: the answer line of the scored labels),
    ``rationale`` (generate: the reply's text before its answer line, else None), ``faithfulness`` (with a
    rationale: :func:`eval.faithfulness.check_rationale`'s verdict on it), ``prompt``, ``context``,
    ``features`` (all of :func:`data_prep.features.compute_features`), ``oracle`` (:func:`oracle_labels`),
    ``gold`` (the file's labels, or None) and ``agrees_with_oracle`` (per level, None where the oracle has
    no label).
    """
    from eval.faithfulness import check_rationale
    from pipeline.core.answer import parse_reply
    from pipeline.models.scoring import answer_rows

    opts = clf.options
    prompts = render_prompts(records, opts, source)
    clf.load()
    langs = [opts.lang] * len(prompts)
    answers = answer_rows(clf.lm, clf.tokenizer, clf.mode, prompts, langs, clf.batch_size, clf.max_new_tokens)
    rows = []
    ids = track_ids if track_ids is not None else [str(rec["sample_id"]) for rec in records]
    for rec, track_id, prompt, ans in zip(records, ids, prompts, answers, strict=True):
        pred = {level: ans["parsed"].get(level) for level in LEVELS}
        oracle = oracle_labels(rec)
        row: dict[str, Any] = {"track_id": track_id, "sample_id": str(rec["sample_id"]), "lang": opts.lang,
                               "mode": clf.mode, **pred}
        if clf.mode == "score":
            row["probs"] = {level: {lab: ans["probs"][level][lab] for lab in LABELS[level]} for level in LEVELS}
        row["output"] = ans["output"]
        row["rationale"] = parse_reply(ans["output"])[1] if clf.mode == "generate" else None
        if row["rationale"] is not None:  # a CoT reply: every claim of its rationale marked against the track
            row["faithfulness"] = check_rationale(ans["output"], rec, opts).to_dict()
        row.update(prompt=prompt, context=rec.get("context"), features=rec["features"], oracle=oracle,
                   gold=rec.get("labels"), agrees_with_oracle=agreement(pred, oracle))
        rows.append(row)
    return rows


def classify_tracks(tracks: str | Path | Sequence[dict[str, Any]], model: str = "smollm2",
                    train_dir: str | Path | None = None, checkpoint: str = "best", mode: Mode = "score",
                    render: RenderOverrides | dict[str, Any] | None = None, fmt: str | None = None,
                    units: dict[str, str] | str | None = None, orbit: str | None = None, id_column: str = "track_id",
                    batch_size: int = 8, max_new_tokens: int = 128, dtype: str = "float32",
                    device: str = "cpu") -> list[dict[str, Any]]:
    """Classify every track of a track file (or of records from :func:`data_prep.tracks.read_tracks`).

    The tracks are read (and validated: a bad row is a DataError naming file, line and field) before the
    model is loaded. Returns one row per track, fields as in :func:`classify_records`.

    Example::

        from pipeline.classify import classify_tracks
        rows = classify_tracks("data_prep/examples/tracks_example.csv", model="smollm2",
                               train_dir="runs/demo/train")
        for r in rows:
            print(r["track_id"], r["motion"], round(r["probs"]["motion"][r["motion"]], 2), r["oracle"]["motion"])
    """
    records, source, track_ids = load_tracks(tracks, fmt, units, orbit, id_column)
    clf = TrackClassifier(model, train_dir, checkpoint, mode, render, batch_size, max_new_tokens, dtype, device)
    return classify_records(clf, records, source, track_ids)


# ------------------------------------------------------------------------------------------------ stage
def run_classify(cfg: ClassifyConfig) -> StageResult:
    """Classify every track of ``cfg.tracks``; write ``predictions.jsonl`` and ``summary.json``.

    ``cfg`` has passed :func:`check_config` (the stage runner's ``STAGE.check``, before anything was read); the
    options the prompts are rendered with -- the checkpoint's recorded ones with ``cfg.render`` on top -- are
    resolved and checked by :func:`prompt_options`."""
    if cfg.num_threads > 0:
        import torch

        torch.set_num_threads(cfg.num_threads)
    records, source, track_ids = load_tracks(cfg.tracks, cfg.format, cfg.units, cfg.orbit, cfg.id_column,
                                             cfg.orbit_check)
    clf = TrackClassifier(cfg.model, cfg.train_dir, cfg.checkpoint, cfg.mode, cfg.render, cfg.batch_size,
                          cfg.max_new_tokens, cfg.dtype, cfg.device)
    rows = classify_records(clf, records, source, track_ids)
    out_dir = Path(cfg.out_dir)
    summary = {**summarise(rows), **clf.describe(), "tracks_file": str(cfg.tracks)}
    write_jsonl(out_dir / "predictions.jsonl", rows)
    outputs = [out_dir / "predictions.jsonl", write_json(out_dir / "summary.json", summary)]
    log.info("classified %d tracks from %s (%s mode, prompts from the %s)", len(rows), cfg.tracks, cfg.mode,
             clf.render_source)
    return StageResult(outputs=outputs, stats={k: summary[k] for k in ("tracks", "vs_oracle", "vs_gold",
                                                                        "render_source")})


STAGE = Stage(
    name="classify",
    config_cls=ClassifyConfig,
    inputs=classify_inputs,
    run=run_classify,
    default_config="pipeline/configs/classify_demo.yaml",
    help="classify raw tracks (CSV/JSONL/NPZ, sensor or LVLH form) with the prompt the model was trained on",
    check=check_config,
)

__all__ = ["STAGE", "ClassifyConfig", "RenderOverrides", "TrackClassifier", "check_config", "classify_records",
           "classify_tracks", "oracle_labels", "prompt_options", "run_classify", "summarise"]

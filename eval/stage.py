"""Stage ``evaluate``: accuracy of base vs tuned models (and PET-style cloze), plain vs CoT, clean and perturbed.

``python -m pipeline evaluate --config eval/configs/demo.yaml``

For every model (``models``: tag, spec, checkpoint under ``train_dir``), variant (``plain``/``cot`` prompts-stage
output) and mode (``score``: label scoring, ``generate``: greedy generation + parsing) the stage
answers the clean split and, on a deterministic subset (``perturbed_fraction`` of it, chosen by a
hash of the sample id), every configured perturbation x severity x seed (re-rendered from the
record, see :mod:`eval.perturb`). With a ``pet`` section the base model also answers as PET-style cloze
systems (``pet-0shot``, ``pet-<k>shot``: a manual pattern + verbalizer, k labelled examples of ``pet.pool_split``
in context; :mod:`pipeline.methods.pet`), label-scored on the same examples. Outputs under ``out_dir``: ``predictions.jsonl`` (schema in
docs/CONTRACT.md), ``report.json``, ``report.md``, ``report.html``.

Resumable: every model answer is appended to ``out_dir/.partial/rows.jsonl`` as it is produced,
keyed by everything that can change it -- the model fingerprint (spec, local model config, every
checkpoint file's sha256), dtype, variant, mode, perturbation, severity, seed, sample_id, the prompt's
hash and the decoding budget; a restarted run skips those keys. Only the model's answer is cached:
gold labels, correctness and the other row fields are rebuilt from the current inputs, so a
corrected gold label is picked up without answering again. Every checkpoint is checked against its
base model before any model answers. The final files are written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval import perturb
from eval.report import build_report, write_reports
from eval.robustness import CLEAN
from eval.faithfulness import check_rationale
from pipeline.core.answer import strip_answer_lines
from pipeline.core.config import config_to_dict
from pipeline.core.io import DataError, fault_point, index_jsonl_by_id, read_jsonl, sha256_file, write_jsonl
from pipeline.core.stage import Stage, StageResult, committed_dir, expand_files
from pipeline.core.taxonomy import LABELS, LEVELS
from prompts_cot.rows import read_prompt_rows

log = logging.getLogger(__name__)

PARTIAL = ".partial/rows.jsonl"


# --------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model to evaluate."""

    # name in reports and predictions (model_tag), e.g. base | tuned
    tag: str
    # model spec: smollm2 | tiny:<name> | local HF (or ChatGLM2/3) folder
    spec: str
    # checkpoint folder under the config's train_dir (best | final | checkpoints/step-N); null = the base model
    checkpoint: str | None = None
    # answer the perturbed prompts too (false: the clean split only, e.g. a base model that is wrong everywhere)
    perturbed: bool = True


@dataclasses.dataclass(frozen=True)
class PerturbationEntry:
    """One perturbation family and the severities to run."""

    # a name from eval.perturb.SPECS: noise dropout truncate units precision field_order distractors typos
    # instruction option_order
    name: str
    # severity levels to run (1..K as declared in eval.perturb.SPECS); null = all declared levels
    severities: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class PetSection:
    """PET-style cloze systems: a frozen model answering a manual cloze pattern, scored through its verbalizer."""

    # in-context example counts; one system per value, tagged pet-<k>shot (0 = zero-shot)
    k: tuple[int, ...] = (0, 4)
    # model spec; null = the spec of the baseline_tag model
    spec: str | None = None
    # seed of the in-context example choice (deterministic, balanced over motion classes)
    seed: int = 0
    # split of prompts_dir/<variant>/ the in-context examples come from; evaluated sample ids are never chosen
    pool_split: str = "train"


def _all_perturbations() -> tuple[PerturbationEntry, ...]:
    return tuple(PerturbationEntry(name) for name in perturb.SPECS)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Config of the ``evaluate`` stage."""

    # where predictions.jsonl, report.{json,md,html} and manifest.json go
    out_dir: Path
    # records folder (data_prep or label.merge output) with <split>.jsonl records (perturbations re-render from them)
    data_dir: Path
    # prompts-stage output folder with <variant>/<split>.jsonl
    prompts_dir: Path
    # train-stage output folder holding the models' checkpoints; null = base models only
    train_dir: Path | None = None
    # prompt variants to evaluate (sub-folders of prompts_dir), e.g. plain, cot
    variants: tuple[str, ...] = ("plain", "cot")
    # split to evaluate
    split: str = "test"
    # models to compare; each has tag, spec, checkpoint (a folder under train_dir; null = base model)
    models: tuple[ModelEntry, ...] = (ModelEntry("base", "smollm2"),)
    # model tag the others are compared with (paired deltas, robustness std ratio)
    baseline_tag: str = "base"
    # score = label scoring over each level's candidates; generate = greedy generation + answer parsing
    modes: tuple[str, ...] = ("score", "generate")
    # evaluate only the first N prompt rows per variant; null = all
    limit: int | None = None
    # perturbation families and severities (default: every family at every declared severity)
    perturbations: tuple[PerturbationEntry, ...] = dataclasses.field(default_factory=_all_perturbations)
    # perturbation seeds (each gives an independent draw per example)
    seeds: tuple[int, ...] = (0,)
    # share of the evaluated nominal set that is perturbed (the reference study: 8,448 / 50,688 = 1/6)
    perturbed_fraction: float = 1 / 6
    # prompts per forward batch (generation and scoring)
    batch_size: int = 8
    # greedy decoding budget for plain prompts (the reference study used 128)
    max_new_tokens: int = 128
    # greedy decoding budget for CoT prompts (rationale + answer line)
    max_new_tokens_cot: int = 256
    # rows answered between two appends to the resume cache
    chunk_size: int = 64
    # bootstrap resamples for confidence intervals
    bootstrap_resamples: int = 2000
    # seed of the bootstrap generators
    bootstrap_seed: int = 0
    # base-model weights dtype: float32 | bfloat16 | float16
    dtype: str = "float32"
    # torch device, e.g. cpu or cuda
    device: str = "cpu"
    # torch threads for CPU runs; 0 = torch's default
    num_threads: int = 0
    # robustness cells with fewer prompts are listed but kept out of std, std ratio and PDR summaries
    min_cell_n: int = 50
    # PET-style cloze systems evaluated beside the models (score mode only); null = none
    pet: PetSection | None = None


def check_config(cfg: EvalConfig) -> None:
    """Raise ValueError for inconsistent settings (before any model is loaded)."""
    bad_modes = [m for m in cfg.modes if m not in ("score", "generate")]
    if bad_modes or not cfg.modes:
        raise ValueError(f"modes must be a non-empty subset of score, generate; got {list(cfg.modes)}")
    tags = [m.tag for m in cfg.models]
    if not tags or len(set(tags)) != len(tags):
        raise ValueError(f"models need distinct tags; got {tags}")
    if not 0.0 <= cfg.perturbed_fraction <= 1.0:
        raise ValueError("perturbed_fraction must be in [0, 1]")
    if min(cfg.batch_size, cfg.max_new_tokens, cfg.max_new_tokens_cot, cfg.chunk_size, cfg.min_cell_n) < 1:
        raise ValueError("batch_size, max_new_tokens(_cot), chunk_size and min_cell_n must be >= 1")
    for p in cfg.perturbations:
        spec = perturb.get_spec(p.name)
        bad = [s for s in (p.severities or ()) if s not in spec.levels]
        if bad:
            raise ValueError(f"perturbation {p.name}: severities {bad} not in {sorted(spec.levels)}")
    if not cfg.seeds:
        raise ValueError("seeds must not be empty")
    needs_train = [m.tag for m in cfg.models if m.checkpoint is not None]
    if needs_train and cfg.train_dir is None:
        raise ValueError(f"models {needs_train} name a checkpoint but train_dir is not set")
    if cfg.pet is not None:
        check_pet(cfg, cfg.pet)


def pet_tag(k: int) -> str:
    """Report tag of the PET system with ``k`` in-context examples."""
    return f"pet-{k}shot"


def check_pet(cfg: EvalConfig, pet: PetSection) -> None:
    """The ``pet`` section: distinct non-negative k, tags free, a spec to use, score mode on."""
    if not pet.k or min(pet.k) < 0 or len(set(pet.k)) != len(pet.k):
        raise ValueError(f"pet.k must be distinct integers >= 0; got {list(pet.k)}")
    clash = sorted({pet_tag(k) for k in pet.k} & {m.tag for m in cfg.models})
    if clash:
        raise ValueError(f"pet systems are tagged {clash}, which models already use")
    if "score" not in cfg.modes:
        raise ValueError("pet systems are label-scored: modes must include score")
    if pet.spec is None and cfg.baseline_tag not in {m.tag for m in cfg.models}:
        raise ValueError(f"pet.spec is null but baseline_tag {cfg.baseline_tag!r} names no model to take it from")


def records_path(cfg: EvalConfig) -> Path:
    """The records file of the evaluated split."""
    return Path(cfg.data_dir) / f"{cfg.split}.jsonl"


def prompts_path(cfg: EvalConfig, variant: str) -> Path:
    """The prompts file of one variant."""
    return Path(cfg.prompts_dir) / variant / f"{cfg.split}.jsonl"


def prefix_dir(cfg: EvalConfig, entry: ModelEntry) -> Path | None:
    """The checkpoint folder ``<train_dir>/<checkpoint>`` of a model, or None for a base model."""
    from pipeline.models.checkpoint import checkpoint_path  # lazy: the reader imports torch

    return checkpoint_path(cfg.train_dir, entry.checkpoint)


def metrics_path(cfg: EvalConfig) -> Path | None:
    """The train stage's ``metrics.jsonl`` (its dev evaluations give the learning curve), when models are tuned."""
    if cfg.train_dir is None or all(m.checkpoint is None for m in cfg.models):
        return None
    path = Path(cfg.train_dir) / "metrics.jsonl"
    # a checkpoint folder from elsewhere (a PEFT adapter, train_dir=<it> checkpoint=.) has no training curve
    return path if path.exists() else None


def pet_pool_path(cfg: EvalConfig, variant: str) -> Path | None:
    """The prompts file the PET in-context examples of ``variant`` come from (None without k-shot PET)."""
    if cfg.pet is None or max(cfg.pet.k) == 0:
        return None
    return Path(cfg.prompts_dir) / variant / f"{cfg.pet.pool_split}.jsonl"


def evaluate_inputs(cfg: EvalConfig) -> list[Path]:
    """Records, prompt files, PET example pools, checkpoint folders and the train stage's metrics."""
    paths = [records_path(cfg)] + [prompts_path(cfg, v) for v in cfg.variants]
    paths += sorted({p for p in (pet_pool_path(cfg, v) for v in cfg.variants) if p is not None} - set(paths))
    paths += [p for p in (prefix_dir(cfg, m) for m in cfg.models) if p is not None]
    metrics = metrics_path(cfg)
    return paths + ([metrics] if metrics is not None else [])


def checkpoint_step(folder: Path) -> int | None:
    """The training step a checkpoint folder was saved at (its ``*config.json`` records it), if known."""
    for path in sorted(Path(folder).glob("*config.json")):
        try:
            step = json.loads(path.read_text(encoding="utf-8")).get("step")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def learning_curves(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Per tuned model tag: the train stage's dev evaluations (``kind: eval`` rows) and the evaluated step."""
    metrics = metrics_path(cfg)
    if metrics is None:
        return {}
    points = [{k: v for k, v in row.items() if k != "kind"} for _, row in read_jsonl(metrics)
              if row.get("kind") == "eval"]
    return {m.tag: {"points": points, "checkpoint": m.checkpoint, "evaluated_step": checkpoint_step(prefix_dir(cfg, m))}
            for m in cfg.models if m.checkpoint is not None}


# ------------------------------------------------------------------------------------------- examples
@dataclasses.dataclass
class Example:
    """One prompt to answer (clean or perturbed); the model/mode are added when it is answered."""

    sample_id: str
    variant: str
    perturbation: str
    severity: int
    seed: int
    prompt: str
    lang: str
    gold: dict[str, str | None]
    label_may_change: bool
    oracle_motion: str | None = None
    # the record and render options the prompt was rendered from, for CoT variants (the faithfulness checker
    # marks a generated rationale against them); None for answer-only variants
    record: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    options: Any = dataclasses.field(default=None, repr=False)


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by sample_id (DataError on a missing id or duplicate)."""
    return index_jsonl_by_id(path)


def parse_gold(row: dict[str, Any], path: Path, lineno: int) -> dict[str, str | None]:
    """The row's gold labels (``label``), validated against the taxonomy; null levels allowed."""
    label = row.get("label")
    if not isinstance(label, dict) or label.get("motion") is None:
        raise DataError(path, lineno, "label", "missing label dict with at least label.motion")
    gold: dict[str, str | None] = {}
    for lvl in LEVELS:
        val = label.get(lvl)
        if val is not None and val not in LABELS[lvl]:
            raise DataError(path, lineno, f"label.{lvl}", f"{val!r} is not a {lvl} label")
        gold[lvl] = val
    return gold


def is_cot_row(row: dict[str, Any]) -> bool:
    """A prompts row whose target has a rationale before its answer line (a CoT variant)."""
    return any(ln.strip() for ln in strip_answer_lines(str(row.get("response") or "")))


def perturbed_subset(sample_ids: list[str], fraction: float) -> set[str]:
    """ceil(fraction * n) ids, the same whatever the variant: lowest sha256(sample_id) first."""
    k = math.ceil(fraction * len(sample_ids))
    ranked = sorted(sample_ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return set(ranked[:k])


def build_examples(cfg: EvalConfig, variant: str, records: dict[str, dict[str, Any]]) -> list[Example]:
    """Clean examples of one variant plus the perturbed ones of its subset."""
    path = prompts_path(cfg, variant)
    rows = read_prompt_rows(path, limit=cfg.limit)
    examples: list[Example] = []
    cot = any(is_cot_row(row) for _, row in rows)
    for lineno, row in rows:
        ex = Example(row["sample_id"], variant, CLEAN, 0, 0, row["prompt"], row.get("lang", "en"),
                     parse_gold(row, path, lineno), False)
        if cot and isinstance(row.get("render"), dict) and row["sample_id"] in records:
            ex.record, ex.options = records[row["sample_id"]], perturb.options_from_dict(row["render"])
        examples.append(ex)
    subset = perturbed_subset([r["sample_id"] for _, r in rows], cfg.perturbed_fraction)
    todo = [(lineno, row) for lineno, row in rows if row["sample_id"] in subset] if cfg.perturbations else []
    for lineno, row in tqdm(todo, desc=f"perturb {variant}", disable=not todo):
        record = records.get(row["sample_id"])
        if record is None:
            raise DataError(path, lineno, "sample_id", f"{row['sample_id']!r} has no record in {records_path(cfg)}")
        if not isinstance(row.get("render"), dict):
            raise DataError(path, lineno, "render", "missing RenderOptions dict (needed to re-render perturbations)")
        options = perturb.options_from_dict(row["render"])
        gold = parse_gold(row, path, lineno)
        for entry in cfg.perturbations:
            for sev in entry.severities or tuple(sorted(perturb.get_spec(entry.name).levels)):
                for seed in cfg.seeds:
                    p = perturb.perturb_example(record, options, entry.name, sev, seed)
                    if p is None:
                        continue
                    # the perturbed prompt's language (the language family renders the other one)
                    examples.append(Example(row["sample_id"], variant, entry.name, sev, seed, p.prompt,
                                            p.options.lang, gold, p.label_may_change, p.oracle_motion,
                                            p.record if cot else None, p.options if cot else None))
    return examples


# -------------------------------------------------------------------------------------- resume cache
#: version of the cache key layout (a new layout never matches an old line)
CACHE_VERSION = "v3"  # v3: generation stops at the end of the answer line


def model_fingerprint(entry: ModelEntry, prefix: Path | None, extra: str = "") -> str:
    """Short hash of the model spec, a local model's config, the checkpoint files (a retrained prefix is new)
    and ``extra`` (a PET system's pattern, k and in-context examples)."""
    h = hashlib.sha256(entry.spec.encode())
    local_config = Path(entry.spec).expanduser() / "config.json"
    if local_config.is_file():
        h.update(sha256_file(local_config).encode())
    if prefix is not None:
        for f in expand_files([prefix]):
            h.update(str(f.relative_to(prefix)).encode())
            h.update(sha256_file(f).encode())
    if extra:
        h.update(extra.encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ systems
@dataclasses.dataclass(frozen=True)
class System:
    """One answering system: a configured model, or a PET cloze system (the base model, a pattern, k examples)."""

    entry: ModelEntry
    # PET in-context examples: variant -> lang -> examples; None = a plain model
    pet_demos: dict[str, dict[str, list[Any]]] | None = None
    # number of in-context examples asked for (PET systems only)
    pet_k: int | None = None

    @property
    def modes(self) -> tuple[str, ...] | None:
        """Modes this system answers in (None = every configured mode; PET is label-scored only)."""
        return ("score",) if self.pet_demos is not None else None

    def pet_facts(self) -> dict[str, Any] | None:
        """What a PET system's answers depend on besides the model (fingerprint and manifest)."""
        if self.pet_demos is None:
            return None
        from pipeline.methods.pet import PET_VERSION, template_hash

        return {"version": PET_VERSION, "template_sha256": template_hash(), "k": self.pet_k,
                "examples": {v: {lang: [d.sample_id for d in ds] for lang, ds in by_lang.items()}
                             for v, by_lang in sorted(self.pet_demos.items())}}


def load_pet_pool(cfg: EvalConfig, variant: str) -> list[Any]:
    """Labelled rows of the PET example pool of ``variant`` (empty without k-shot PET)."""
    from pipeline.methods.pet import demo_from_row

    path = pet_pool_path(cfg, variant)
    if path is None:
        return []
    if not path.is_file():
        raise DataError(path, None, "pet.pool_split", f"no {cfg.pet.pool_split} prompts for the PET examples")  # type: ignore[union-attr]
    return [d for _, row in read_prompt_rows(path) if (d := demo_from_row(row)) is not None]


def build_systems(cfg: EvalConfig, examples: dict[str, list[Example]]) -> list[System]:
    """The configured models, then one PET system per ``pet.k`` (examples chosen per variant and language)."""
    from pipeline.methods.pet import select_demos_by_lang

    systems = [System(m) for m in cfg.models]
    if cfg.pet is None:
        return systems
    pet = cfg.pet
    spec = pet.spec or next(m.spec for m in cfg.models if m.tag == cfg.baseline_tag)
    pools = {v: load_pet_pool(cfg, v) for v in cfg.variants}
    for k in pet.k:
        demos = {}
        for v, exs in examples.items():
            # never show a scored row as an example (the pool is another split, but a config may point it anywhere)
            demos[v] = select_demos_by_lang(pools[v], k, pet.seed, {e.lang for e in exs}, {e.sample_id for e in exs})
            short = {lang: len(ds) for lang, ds in demos[v].items() if len(ds) < k}
            if short:
                log.warning("pet %s/%s: only %s in-context examples available", pet_tag(k), v, short)
        systems.append(System(ModelEntry(pet_tag(k), spec), demos, k))
    return systems


def system_fingerprint(cfg: EvalConfig, system: System) -> str:
    """:func:`model_fingerprint` of a system (PET systems add their pattern, k and examples)."""
    facts = system.pet_facts()
    extra = json.dumps(facts, sort_keys=True) if facts is not None else ""
    return model_fingerprint(system.entry, prefix_dir(cfg, system.entry), extra)


def row_key(fingerprint: str, dtype: str, mode: str, ex: Example, budget: int) -> str:
    """Cache key of one model answer: everything that can change it (not the gold labels, which it does not see)."""
    prompt_hash = hashlib.sha256(ex.prompt.encode()).hexdigest()[:16]
    budget_part = str(budget) if mode == "generate" else "-"
    return "|".join([CACHE_VERSION, fingerprint, dtype, ex.variant, mode, ex.perturbation, str(ex.severity),
                     str(ex.seed), ex.sample_id, prompt_hash, budget_part])


class PartialCache:
    """Append-only JSONL of model answers (``{"key", "answer"}``); survives interruption (a torn last line is ignored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.answers: dict[str, dict[str, Any]] = {}
        # a crash can leave a torn last line without "\n"; the next append must start on a fresh line
        self._needs_newline = self.path.exists() and self.path.stat().st_size > 0 and \
            self.path.read_bytes()[-1:] != b"\n"
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        log.warning("ignoring a torn line in %s", self.path)
                        continue
                    if isinstance(obj, dict) and isinstance(obj.get("answer"), dict) and isinstance(obj.get("key"), str):
                        self.answers[obj["key"]] = obj["answer"]

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def add(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Append answers and flush them to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if self._needs_newline:
                fh.write("\n")
                self._needs_newline = False
            for key, answer in items:
                fh.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
                self.answers[key] = answer
            fh.flush()
        fault_point("evaluate.chunk")


def cached_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The part of a model answer worth caching (output, parsed labels, label probabilities, latency, new tokens)."""
    keep = {k: answer[k] for k in ("output", "parsed", "probs", "new_tokens") if k in answer}
    keep["latency_s"] = round(float(answer.get("latency_s") or 0.0), 5)
    return keep


def preflight_checkpoints(cfg: EvalConfig) -> dict[str, Any]:
    """Before any model answers: every checkpoint is intact (:func:`pipeline.models.checkpoint.read_checkpoint`),
    of a registered method and made for its base model (DataError); returns ``{model tag: Checkpoint}``."""
    from transformers import AutoConfig

    from pipeline.methods.base import arch_facts
    from pipeline.models.checkpoint import read_checkpoint
    from pipeline.models.store import resolve_model_dir

    found = {}
    for entry in cfg.models:
        folder = prefix_dir(cfg, entry)
        if folder is None:
            continue
        ckpt = read_checkpoint(folder)
        facts = arch_facts(AutoConfig.from_pretrained(str(resolve_model_dir(entry.spec))))
        ckpt.check_base_model(facts, spec=f"model {entry.tag!r}, {entry.spec}")
        found[entry.tag] = ckpt
    return found


# ---------------------------------------------------------------------------------------------- run
def prediction_row(ex: Example, tag: str, mode: str, answer: dict[str, Any], split: str) -> dict[str, Any]:
    """A predictions.jsonl row (docs/CONTRACT.md schema, plus lang and oracle_motion; a generated CoT reply also
    gets its rationale's ``faithfulness`` verdict, :mod:`eval.faithfulness`)."""
    parsed = {lvl: answer["parsed"].get(lvl) for lvl in LEVELS}
    correct = {lvl: (parsed[lvl] == ex.gold[lvl]) if ex.gold[lvl] is not None else None for lvl in LEVELS}
    row = {"sample_id": ex.sample_id, "split": split, "model_tag": tag, "variant": ex.variant, "mode": mode,
           "perturbation": ex.perturbation, "severity": ex.severity, "seed": ex.seed, "lang": ex.lang,
           "prompt": ex.prompt, "output": answer["output"], "parsed": parsed, "gold": ex.gold, "correct": correct,
           "label_may_change": ex.label_may_change, "oracle_motion": ex.oracle_motion,
           "latency_s": round(float(answer.get("latency_s") or 0.0), 5)}
    if "probs" in answer:
        row["probs"] = answer["probs"]
    if answer.get("new_tokens") is not None:
        row["new_tokens"] = int(answer["new_tokens"])
    if mode == "generate" and ex.record is not None and ex.options is not None:
        row["faithfulness"] = check_rationale(answer["output"], ex.record, ex.options).to_dict()
    return row


def budget_of(cfg: EvalConfig, variant: str) -> int:
    """Greedy decoding budget of a variant."""
    return cfg.max_new_tokens_cot if variant == "cot" else cfg.max_new_tokens


def answer_pet(lm: Any, tokenizer: Any, system: System, variant: str, exs: list[Example],
               batch_size: int) -> list[dict[str, Any]]:
    """Label-score PET cloze prompts ``P(x)`` (k filled examples, then x) through the verbalizer candidates."""
    from pipeline.methods.pet import cloze_candidate, filled_reply, render_cloze_prompt
    from pipeline.models.scoring import score_rows

    demos = (system.pet_demos or {}).get(variant, {})
    prompts = [render_cloze_prompt(ex.prompt, ex.lang, [(d.text, d.labels) for d in demos.get(ex.lang, [])])
               for ex in exs]
    t0 = time.perf_counter()
    rows = score_rows(lm, tokenizer, prompts, [ex.lang for ex in exs], batch_size, candidate=cloze_candidate)
    lat = (time.perf_counter() - t0) / max(len(rows), 1)
    for r, ex in zip(rows, exs):
        r["output"] = filled_reply(r["parsed"], ex.lang)
        r["latency_s"] = lat
    return rows


def system_examples(system: System, exs: list[Example]) -> list[Example]:
    """The examples one system answers: all, or only the clean ones (``perturbed: false``)."""
    return exs if system.entry.perturbed else [ex for ex in exs if ex.perturbation == CLEAN]


def trained_families(checkpoint: Any) -> list[str] | None:
    """The training-time variation families a checkpoint's training rows were rendered under (``[]``: none;
    None: a base model), from the method JSON :func:`preflight_checkpoints` already read. The report marks
    robustness cells of those families as seen in training."""
    if checkpoint is None:
        return None
    facts = checkpoint.meta.get("prompts") or {}
    return sorted((facts.get("variation") or {}).get("families") or {})


def answer_examples(cfg: EvalConfig, system: System, examples: dict[str, list[Example]],
                    cache: PartialCache, checkpoint: Any = None) -> dict[str, Any]:
    """Answer every not-yet-cached example with one system (its model loaded only if something is pending).

    ``checkpoint``: the system's :class:`~pipeline.models.checkpoint.Checkpoint` as the preflight read it (None:
    the base model, or read here from the system's folder)."""
    from pipeline.models.scoring import answer_rows

    entry = system.entry
    prefix = prefix_dir(cfg, entry)
    fp = system_fingerprint(cfg, system)
    pending: dict[tuple[str, str], list[tuple[str, Example]]] = defaultdict(list)
    for variant, exs in examples.items():
        for mode in system.modes or cfg.modes:
            for ex in system_examples(system, exs):
                key = row_key(fp, cfg.dtype, mode, ex, budget_of(cfg, variant))
                if key not in cache:
                    pending[(variant, mode)].append((key, ex))
    total = sum(len(v) for v in pending.values())
    timings: dict[str, Any] = {}
    if total == 0:
        log.info("model %s: every row already answered (resume cache)", entry.tag)
        return timings
    from pipeline.models.lm import load_model

    lm, tokenizer = load_model(entry.spec, checkpoint=checkpoint if checkpoint is not None else prefix,
                               dtype=cfg.dtype, device=cfg.device)
    bar = tqdm(total=total, desc=f"evaluate {entry.tag}")
    for (variant, mode), items in pending.items():
        budget = budget_of(cfg, variant)
        t0 = time.perf_counter()
        for start in range(0, len(items), cfg.chunk_size):
            chunk = items[start: start + cfg.chunk_size]
            if system.pet_demos is not None:
                answers = answer_pet(lm, tokenizer, system, variant, [ex for _, ex in chunk], cfg.batch_size)
            else:
                answers = answer_rows(lm, tokenizer, mode, [ex.prompt for _, ex in chunk],
                                      [ex.lang for _, ex in chunk], cfg.batch_size, budget)
            cache.add([(key, cached_answer(ans)) for (key, _), ans in zip(chunk, answers)])
            bar.update(len(chunk))
        secs = time.perf_counter() - t0
        timings[f"{entry.tag}/{variant}/{mode}"] = {"rows": len(items), "seconds": round(secs, 3),
                                                    "examples_per_s": round(len(items) / secs, 3) if secs else None}
    bar.close()
    return timings


def collect_rows(cfg: EvalConfig, systems: list[System], examples: dict[str, list[Example]],
                 cache: PartialCache) -> list[dict[str, Any]]:
    """Prediction rows of exactly this config's keys, in (system, variant, mode, example) order.

    Built from the cached answers and the *current* examples (gold labels, language, perturbation facts).
    """
    rows = []
    for system in systems:
        fp = system_fingerprint(cfg, system)
        for variant, exs in examples.items():
            for mode in system.modes or cfg.modes:
                rows.extend(prediction_row(ex, system.entry.tag, mode,
                                           cache.answers[row_key(fp, cfg.dtype, mode, ex, budget_of(cfg, variant))],
                                           cfg.split) for ex in system_examples(system, exs))
    return rows


def input_manifest(cfg: EvalConfig, systems: list[System], examples: dict[str, list[Example]],
                   checkpoints: dict[str, Any]) -> dict[str, Any]:
    """Models (and PET systems), checkpoint/data/template hashes, seeds and perturbation specs for the report;
    ``checkpoints``: :func:`preflight_checkpoints`' ``{model tag: Checkpoint}``."""
    models = []
    for system in systems:
        m = system.entry
        prefix = prefix_dir(cfg, m)
        files = expand_files([prefix]) if prefix is not None else []
        row = {"tag": m.tag, "spec": m.spec, "prefix_dir": str(prefix) if prefix else None,
               "fingerprint": system_fingerprint(cfg, system),
               "checkpoint_sha256": {str(f.relative_to(prefix)): sha256_file(f) for f in files},
               "trained_families": trained_families(checkpoints.get(m.tag))}
        if system.pet_demos is not None:
            row["pet"] = system.pet_facts()
        models.append(row)
    pools = [p for p in dict.fromkeys(pet_pool_path(cfg, v) for v in cfg.variants) if p is not None]
    data = {str(p): sha256_file(p)
            for p in [records_path(cfg)] + [prompts_path(cfg, v) for v in cfg.variants] + pools}
    templates: dict[str, list[str]] = {}
    for v in cfg.variants:
        hashes = {row.get("template_hash") for _, row in read_prompt_rows(prompts_path(cfg, v), limit=cfg.limit)}
        templates[v] = sorted(h for h in hashes if h)
    counts = {v: {"clean": sum(e.perturbation == CLEAN for e in exs),
                  "perturbed": sum(e.perturbation != CLEAN for e in exs)} for v, exs in examples.items()}
    specs = {p.name: {"severities": list(p.severities or sorted(perturb.get_spec(p.name).levels)),
                      "levels": {str(k): str(v) for k, v in perturb.get_spec(p.name).levels.items()},
                      "label_may_change": sorted(perturb.get_spec(p.name).label_may_change),
                      "description": perturb.get_spec(p.name).description} for p in cfg.perturbations}
    return {"split": cfg.split, "models": models, "data_sha256": data, "template_hashes": templates,
            "seeds": list(cfg.seeds), "perturbed_fraction": cfg.perturbed_fraction, "examples": counts,
            "perturbations": specs, "config": {**config_to_dict(cfg), "out_dir": str(committed_dir(cfg.out_dir))}}


def run_evaluate(cfg: EvalConfig) -> StageResult:
    """Answer, score and report (see module docstring)."""
    check_config(cfg)
    if cfg.num_threads > 0:
        import torch

        torch.set_num_threads(cfg.num_threads)
    out_dir = Path(cfg.out_dir)
    # perturbations re-render records; CoT rationales are checked against them
    records = load_records(records_path(cfg))
    examples = {v: build_examples(cfg, v, records) for v in cfg.variants}
    checkpoints = preflight_checkpoints(cfg)
    systems = build_systems(cfg, examples)
    # the cache lives in the stage's own folder (not the staging one a run writes into) and outlives a failed run
    cache = PartialCache(committed_dir(out_dir) / PARTIAL)
    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    for system in systems:
        timings.update(answer_examples(cfg, system, examples, cache, checkpoints.get(system.entry.tag)))
    answer_secs = time.perf_counter() - t0
    rows = collect_rows(cfg, systems, examples, cache)
    report = build_report(rows, input_manifest(cfg, systems, examples, checkpoints), baseline_tag=cfg.baseline_tag,
                          seed=cfg.bootstrap_seed, n_resamples=cfg.bootstrap_resamples, min_cell_n=cfg.min_cell_n,
                          learning_curves=learning_curves(cfg))
    report["timings"] = timings
    pred_path = out_dir / "predictions.jsonl"
    write_jsonl(pred_path, rows)
    outputs = [pred_path] + write_reports(out_dir, report)
    stats = {"rows": len(rows), "answer_seconds": round(answer_secs, 3), "timings": timings,
             "clean_accuracy": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": g["clean"]["accuracy"]
                                for g in report["groups"]},
             "perturbed_std": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": g["aggregates"]["std_accuracy"]
                               for g in report["groups"]},
             # per group: std over the invariant cells and the worst cell, all / seen / unseen in training
             "cells": {f"{g['model_tag']}/{g['variant']}/{g['mode']}": {k: v for k, v in g["cells"].items()
                                                                         if k != "cells"}
                       for g in report["groups"] if (g.get("cells") or {}).get("all", {}).get("n_cells")}}
    log.info("evaluated %d rows -> %s", len(rows), out_dir)
    return StageResult(outputs=outputs, stats=stats)


STAGE = Stage(
    name="evaluate",
    config_cls=EvalConfig,
    inputs=evaluate_inputs,
    run=run_evaluate,
    default_config="eval/configs/demo.yaml",
    help="accuracy and robustness of base vs tuned models, plain vs CoT prompts",
    check=check_config,
)

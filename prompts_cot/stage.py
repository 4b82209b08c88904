"""Stage ``prompts``: records -> (prompt, response) rows per variant, within token budgets.

Reads ``<data_dir>/{train,dev,test}.jsonl`` (data_prep or label.merge output), renders every
record with :mod:`prompts_cot.render` for each configured variant and writes
``<out_dir>/<variant>/<split>.jsonl`` (rows as in docs/CONTRACT.md), optionally the ChatGLM
ptuning format ``<out_dir>/<variant>/chatglm/<split>.json`` (``{"content", "summary"}`` lines)
and ``<out_dir>/token_lengths.json`` (min/mean/p50/p95/max of source and target tokens per
variant and split).

Token budgets: source = raw prompt tokens + ``chat_overhead_tokens`` (the chat format is applied
later, by ``pipeline.models.lm.build_chat_prompt``); target = response tokens + 1 (the EOS the
trainer appends). Over-budget rows are an error (naming sample, split, variant and budget),
dropped, or truncated by re-rendering (fewer observation points, then a shortened known-information
block; for targets, the leading rationale steps are dropped, never the answer line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, check_finite, read_jsonl, write_json, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LABELS, LEVELS
from prompts_cot.render import (
    RenderOptions,
    assemble_prompt,
    check_options,
    format_answer,
    human_rationale,
    known_information,
    options_to_dict,
    rationale_steps,
)
from prompts_cot.templates import template_hash

log = logging.getLogger(__name__)

Lang = Literal["en", "zh"]


@dataclass(frozen=True)
class VariantConfig:
    """One prompt variant: an output folder of (prompt, response) rows."""

    # output folder name under out_dir (e.g. plain, cot)
    name: str
    # basic | instruction (every candidate listed) | cot (candidates + reasoning steps) | compact (short
    # known information only: the demo's model-friendly prompt)
    prompt_type: Literal["basic", "instruction", "cot", "compact"] = "instruction"
    # response = derived (or human) rationale + answer line when true, else the answer line only
    cot: bool = False
    # en | zh | auto (auto: one language per sample from `languages`, chosen by hash of seed and sample_id)
    lang: Literal["en", "zh", "auto"] = "auto"
    # orbital motion as the qualitative sentence, compact numbers, both, or compact (trend words, burns and
    # the unitless ratios the relabelling rules compare). Default numeric: the CoT
    # rationale then derives the trend itself, and with the SmolLM2 tokenizer "both" costs ~18 more tokens
    # (demo data: cot prompts up to 253 of 256 tokens with both, 235 with numeric)
    motion_style: Literal["qualitative", "numeric", "both", "compact"] = "numeric"
    # distances m|km (speeds m/s|km/s)
    units: Literal["m", "km"] = "m"
    # digits after the point for distances in metres (speeds get max(decimals, 2) in m/s)
    decimals: int = 0
    # sampled observation points in the numeric block (0 = summary numbers only; each point costs ~15 tokens)
    max_obs_points: int = 0
    # which instruction paraphrase (0..N_INSTRUCTION_VARIANTS[lang]-1)
    instruction_variant: int = 0


#: Families a varied training row draws from by default: every label-preserving family of eval.perturb except
#: the ones kept out of training to measure generalisation (typos, distractors, synonyms_unseen) and the
#: language switch (its own share, ``lang_share``).
DEFAULT_AUGMENT_FAMILIES: tuple[str, ...] = (
    "units", "mixed_units", "precision", "field_order", "noise", "dropout", "instruction",
    "casing", "key_alias", "synonyms", "prose",
)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time variation: a share of the rows rendered under label-preserving perturbation families
    (:mod:`eval.perturb`), so the model learns what does not matter. Rows keep their labels; each varied row
    records its draws (``variation``) and the train stage stores the summary in its checkpoints."""

    # share of the rows of `splits` rendered under 1..max_families families (chosen per sample by a stable hash)
    share: float = 0.5
    # eval.perturb family names a varied row draws from (label-changing severities are never drawn)
    families: tuple[str, ...] = DEFAULT_AUGMENT_FAMILIES
    # at most this many distinct families per varied row
    max_families: int = 3
    # share of the rows of `splits` rendered in the other language (en <-> zh), independent of `share`
    lang_share: float = 0.0
    # seed of the draws; training draws have their own key space (eval.perturb.train_rng), disjoint from the
    # evaluation's perturbation seeds whatever the numbers
    seed: int = 1
    # splits that get variation (evaluation splits stay canonical: robustness is measured, not trained, there)
    splits: tuple[str, ...] = ("train",)
    # share of the records of `splits` that also get a counterfactual twin: the same track and context with the
    # cooperative flag flipped, operation and task re-derived by data_prep.rules (only records whose labels follow
    # the rules). The minimal pair teaches the model that this one line, not the track, decides the task
    # (without it the demo model's task errors were ~95 % "the other flag's task").
    counterfactual: float = 0.0


DEFAULT_VARIANTS: tuple[VariantConfig, ...] = (
    VariantConfig(name="plain", prompt_type="instruction", cot=False),
    VariantConfig(name="cot", prompt_type="cot", cot=True),
)


@dataclass(frozen=True)
class PromptsConfig:
    """Config of the ``prompts`` stage."""

    # where <variant>/<split>.jsonl, token_lengths.json and manifest.json go
    out_dir: Path
    # records folder (data_prep or label.merge output) with <split>.jsonl
    data_dir: Path
    # splits to render (each <data_dir>/<split>.jsonl must exist)
    splits: tuple[str, ...] = ("train", "dev", "test")
    # the variants to write; default plain (instruction, answer only) and cot (CoT prompt, rationale + answer)
    variants: tuple[VariantConfig, ...] = DEFAULT_VARIANTS
    # languages for variants with lang=auto (several: one per sample, deterministic in seed and sample_id)
    languages: tuple[Lang, ...] = ("en",)
    # seed of the per-sample language choice
    seed: int = 0
    # tokenizer for the budgets: smollm2 (default model), tiny:<name>, or a local model/tokenizer folder
    tokenizer: str = "smollm2"
    # tokens the chat format adds around a prompt (SmolLM2 template + system prompt: 38 measured)
    chat_overhead_tokens: int = 40
    # budget for prompt tokens + chat_overhead_tokens (ChatGLM ptuning max_source_length)
    max_source_tokens: int = 256
    # budget for response tokens + EOS (ChatGLM ptuning max_target_length)
    max_target_tokens: int = 128
    # over-budget rows: error (stop, naming sample/split/budget) | truncate (re-render shorter) | drop
    on_overflow: Literal["error", "truncate", "drop"] = "error"
    # also write <variant>/chatglm/<split>.json with {"content", "summary"} lines for THUDM ptuning scripts
    export_chatglm: bool = False
    # render at most this many records per split (None = all); for quick runs
    limit: int | None = None
    # training-time variation (null = every row canonical)
    augment: AugmentConfig | None = None


# --------------------------------------------------------------------------- records


def validate_record(rec: dict[str, Any], path: Path, line: int) -> bool:
    """Check one record; return False when it lacks operation/task labels (skipped), raise DataError if bad."""
    if not isinstance(rec.get("sample_id"), str) or not rec["sample_id"]:
        raise DataError(path, line, "sample_id", "missing or not a string")
    labels = rec.get("labels")
    if not isinstance(labels, dict):
        raise DataError(path, line, "labels", "missing or not an object")
    for level in LEVELS:
        value = labels.get(level)
        if value is None and level != "motion":
            return False
        if value not in LABELS[level]:
            raise DataError(path, line, f"labels.{level}", f"{value!r} is not one of {list(LABELS[level])}")
    if rec.get("features") is None:
        if not isinstance(rec.get("text"), str) or not rec["text"].strip():
            raise DataError(path, line, "features", "record has neither features nor text")
    elif not isinstance(rec["features"], dict):
        raise DataError(path, line, "features", "not an object")
    # the reader refuses NaN/Infinity tokens; this also catches records handed over in memory
    check_finite({k: rec.get(k) for k in ("features", "observation", "context")}, path, line)
    return True


def read_records(path: Path, limit: int | None) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(line, record) pairs of one split file, and the number skipped for missing labels."""
    out, skipped = [], 0
    for line, rec in read_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        if validate_record(rec, path, line):
            out.append((line, rec))
        else:
            skipped += 1
    return out, skipped


def choose_lang(variant: VariantConfig, languages: tuple[str, ...], seed: int, sample_id: str) -> str:
    """The row language: the variant's, or (auto) one of ``languages`` by a stable hash."""
    if variant.lang != "auto":
        return variant.lang
    if len(languages) == 1:
        return languages[0]
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()
    return languages[int(digest, 16) % len(languages)]


def variant_options(variant: VariantConfig, lang: str) -> RenderOptions:
    """RenderOptions of a variant in one language."""
    return RenderOptions(
        prompt_type=variant.prompt_type,
        lang=lang,
        motion_style=variant.motion_style,
        units=variant.units,
        decimals=variant.decimals,
        max_obs_points=variant.max_obs_points,
        instruction_variant=variant.instruction_variant,
    )


# --------------------------------------------------------------------------- tokens


class TokenCounter:
    """Token lengths of texts with one tokenizer (no special tokens; batched for speed)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def count(self, texts: list[str]) -> list[int]:
        """Lengths of ``texts``; shape (len(texts),)."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def truncate(self, text: str, n_tokens: int) -> str:
        """The prefix of ``text`` that is ``n_tokens`` tokens long (decoded), with an ellipsis."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: max(n_tokens, 0)]
        return self.tokenizer.decode(ids).rstrip() + "…"


def length_stats(values: list[int]) -> dict[str, float]:
    """min/mean/p50/p95/max of a list of token lengths (zeros when empty)."""
    if not values:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    a = np.asarray(values)
    return {
        "min": int(a.min()),
        "mean": round(float(a.mean()), 2),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": int(a.max()),
    }


# --------------------------------------------------------------------------- rendering with budgets


@dataclass
class Rendered:
    """One rendered row before budgeting."""

    line: int
    record: dict[str, Any]
    opts: RenderOptions
    prompt: str
    response: str
    steps: list[str]  # rationale lines (empty for answer-only responses)
    answer: str
    truncated: bool = False
    # training-time variation: {"seed", "steps": [[family, severity], ...]}; the canonical row to fall back on
    variation: dict[str, Any] | None = None
    canonical: "Rendered | None" = None


def render_one(line: int, rec: dict[str, Any], opts: RenderOptions, cot: bool, path: Path) -> Rendered:
    """Render prompt and response of one record; a missing context key is a DataError."""
    try:
        prompt = assemble_prompt(known_information(rec, opts), opts)
        steps: list[str] = []
        if cot:
            steps = human_rationale(rec["rationale"]) if rec.get("rationale") else rationale_steps(rec, opts)
    except KeyError as exc:
        raise DataError(path, line, str(exc.args[0]), "missing (needed to render the prompt)") from None
    answer = format_answer(rec["labels"], opts.lang)
    return Rendered(line, rec, opts, prompt, "\n".join([*steps, answer]), steps, answer)


def shrink_source(r: Rendered, budget: int, counter: TokenCounter) -> bool:
    """Re-render ``r.prompt`` to fit ``budget`` raw tokens: halve the observation points, then cut
    the known-information block at a token boundary. Returns False if even that cannot fit."""
    opts = r.opts
    while opts.max_obs_points > 0 and r.record.get("features") is not None:
        opts = dataclasses.replace(opts, max_obs_points=opts.max_obs_points // 2)
        prompt = assemble_prompt(known_information(r.record, opts), opts)
        if counter.count([prompt])[0] <= budget:
            r.opts, r.prompt, r.truncated = opts, prompt, True
            return True
    known = known_information(r.record, opts)
    fixed = counter.count([assemble_prompt("", opts)])[0]
    keep = budget - fixed - 2  # 2 tokens of slack: the cut and the ellipsis may merge differently
    while keep > 0:
        prompt = assemble_prompt(counter.truncate(known, keep), opts)
        if counter.count([prompt])[0] <= budget:
            r.opts, r.prompt, r.truncated = opts, prompt, True
            return True
        keep -= 4
    return False


def shrink_target(r: Rendered, budget: int, counter: TokenCounter) -> bool:
    """Drop leading rationale steps until the response fits ``budget`` tokens; the answer line stays."""
    steps = list(r.steps)
    while steps:
        steps.pop(0)
        response = "\n".join([*steps, r.answer])
        if counter.count([response])[0] <= budget:
            r.steps, r.response, r.truncated = steps, response, True
            return True
    return False


def to_row(r: Rendered, variant: VariantConfig, split: str, hashes: dict[tuple, str]) -> dict[str, Any]:
    """The CONTRACT row of a rendered record (``truncated`` only present when it was shortened)."""
    opts = r.opts
    key = (opts.prompt_type, opts.lang, opts.instruction_variant, variant.cot, opts.motion_style)
    if key not in hashes:
        hashes[key] = template_hash(*key)
    row = {
        "sample_id": r.record["sample_id"],
        "split": split,
        "variant": variant.name,
        "prompt_type": opts.prompt_type,
        "lang": opts.lang,
        "prompt": r.prompt,
        "response": r.response,
        "label": {level: r.record["labels"][level] for level in LEVELS},
        "template_hash": hashes[key],
        "render": options_to_dict(opts),
    }
    if r.truncated:
        row["truncated"] = True
    if r.variation is not None:
        row["variation"] = r.variation
    if "counterfactual" in r.record:
        row["counterfactual"] = r.record["counterfactual"]
    return row


def fit_budgets(
    r: Rendered, n_src: int, n_tgt: int, cfg: PromptsConfig, counter: TokenCounter, where: str, path: Path
) -> bool:
    """Make one row fit both budgets per ``cfg.on_overflow``; False = drop it (DataError for error)."""
    checks = (
        (
            "source",
            n_src,
            cfg.max_source_tokens - cfg.chat_overhead_tokens,
            cfg.max_source_tokens,
            cfg.chat_overhead_tokens,
            shrink_source,
        ),
        ("target", n_tgt, cfg.max_target_tokens - 1, cfg.max_target_tokens, 1, shrink_target),
    )
    for which, n, budget, limit, extra, shrink in checks:
        if n <= budget:
            continue
        what = f"sample {r.record['sample_id']} ({where}): {which} tokens {n + extra} > max_{which}_tokens {limit}"
        if cfg.on_overflow == "error":
            raise DataError(
                path,
                r.line,
                "prompt" if which == "source" else "response",
                what + " (on_overflow=error: use truncate or drop, or raise the budget)",
            )
        if cfg.on_overflow == "drop":
            return False
        if not shrink(r, budget, counter):
            log.warning("%s: cannot be truncated to fit; dropped", what)
            return False
    return True


def budget_rows(
    rendered: list[Rendered], cfg: PromptsConfig, counter: TokenCounter, variant: VariantConfig, split: str, path: Path
) -> tuple[list[Rendered], dict[str, Any]]:
    """Apply the token budgets to one variant/split; returns kept rows and their length statistics."""
    src = counter.count([r.prompt for r in rendered])
    tgt = counter.count([r.response for r in rendered])
    kept, dropped, truncated = [], 0, 0
    src_kept, tgt_kept = [], []
    fallbacks = 0
    for r, ns, nt in zip(rendered, src, tgt, strict=True):
        if r.canonical is not None and (ns > cfg.max_source_tokens - cfg.chat_overhead_tokens
                                        or nt > cfg.max_target_tokens - 1):
            # a varied row that does not fit keeps its canonical rendering (the variation is an extra, not data)
            r, fallbacks = r.canonical, fallbacks + 1
            ns, nt = counter.count([r.prompt])[0], counter.count([r.response])[0]
        if not fit_budgets(r, ns, nt, cfg, counter, f"split {split}, variant {variant.name}", path):
            dropped += 1
            continue
        truncated += r.truncated
        kept.append(r)
        src_kept.append(counter.count([r.prompt])[0] if r.truncated else ns)
        tgt_kept.append(counter.count([r.response])[0] if r.truncated else nt)
    stats = {
        "rows": len(kept),
        "dropped": dropped,
        "truncated": truncated,
        "source_tokens": length_stats([n + cfg.chat_overhead_tokens for n in src_kept]),
        "target_tokens": length_stats([n + 1 for n in tgt_kept]),
    }
    if any(r.variation is not None or r.canonical is not None for r in rendered):
        stats["varied"] = sum(r.variation is not None for r in kept)
        stats["varied_over_budget_kept_canonical"] = fallbacks
    return kept, stats


# --------------------------------------------------------------------------- stage


def check_config(cfg: PromptsConfig) -> None:
    """Reject variant settings that cannot render, as a ConfigError, before any work."""
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"variants: names must be distinct and non-empty, got {names}")
    if not cfg.languages:
        raise ConfigError("languages: must not be empty")
    if cfg.max_source_tokens <= cfg.chat_overhead_tokens or cfg.max_target_tokens < 2:
        raise ConfigError("max_source_tokens must exceed chat_overhead_tokens and max_target_tokens be >= 2")
    if cfg.augment is not None:
        check_augment(cfg.augment)
    for i, v in enumerate(cfg.variants):
        for lang in [v.lang] if v.lang != "auto" else cfg.languages:
            try:
                check_options(variant_options(v, lang))
            except ValueError as exc:
                raise ConfigError(f"variants[{i}] ({v.name}, {lang}): {exc}") from None


def check_augment(aug: AugmentConfig) -> None:
    """The ``augment`` section: known, label-preserving families; shares in [0, 1] (ConfigError naming the key)."""
    from eval import perturb

    for key in ("share", "lang_share", "counterfactual"):
        if not 0.0 <= getattr(aug, key) <= 1.0:
            raise ConfigError(f"augment.{key}: {getattr(aug, key)} is outside [0, 1]")
    unknown = [f for f in aug.families if f not in perturb.SPECS]
    if unknown:
        raise ConfigError(f"augment.families: unknown {unknown}; known: {sorted(perturb.SPECS)}")
    if "language" in aug.families:
        raise ConfigError("augment.families: the language switch has its own share, augment.lang_share")
    if aug.share > 0 and (not aug.families or aug.max_families < 1):
        raise ConfigError("augment.families / augment.max_families: a positive share needs >= 1 family")


def draw_variation(aug: AugmentConfig, sample_id: str) -> list[tuple[str, int]]:
    """The families (with a label-preserving severity each) that one sample's rows are rendered under; empty
    for a canonical row. Deterministic in ``(aug.seed, sample_id)``: every variant of a sample gets the same."""
    from eval import perturb

    rng = perturb.keyed_rng("augment", aug.seed, sample_id)
    steps: list[tuple[str, int]] = []
    if rng.random() < aug.share:
        k = int(rng.integers(1, min(aug.max_families, len(aug.families)) + 1))
        for name in rng.choice(list(aug.families), size=k, replace=False):
            spec = perturb.get_spec(str(name))
            levels = [lvl for lvl in sorted(spec.levels) if lvl not in spec.label_may_change]
            steps.append((str(name), int(levels[int(rng.integers(len(levels)))])))
    if rng.random() < aug.lang_share:
        steps.append(("language", 1))
    return steps


#: suffix of a counterfactual twin's sample id (the source record's id before it)
TWIN_SUFFIX = "~coop-flipped"


def counterfactual_twin(rec: dict[str, Any], aug: AugmentConfig) -> dict[str, Any] | None:
    """The record's twin with ``context.cooperative`` flipped and operation/task re-derived, when drawn.

    None when not drawn (stable hash of ``(aug.seed, sample_id)`` against ``aug.counterfactual``), when the
    record's labels do not follow :func:`data_prep.rules.intents` (a user's own labels: flipping the flag says
    nothing about them), or when its context lacks the flag. The twin drops a human rationale (it argued the
    other flag); a CoT row renders the rule-derived one.
    """
    from data_prep import rules
    from eval import perturb

    if aug.counterfactual <= 0:
        return None
    if perturb.keyed_rng("counterfactual", aug.seed, rec["sample_id"]).random() >= aug.counterfactual:
        return None
    context = rec.get("context") or {}
    labels = rec["labels"]
    if not isinstance(context.get("cooperative"), bool):
        return None
    try:
        if rules.intents(context, labels["motion"]) != {lvl: labels[lvl] for lvl in LEVELS}:
            return None
        flipped = {**context, "cooperative": not context["cooperative"]}
        new_labels = rules.intents(flipped, labels["motion"])
    except (KeyError, TypeError, ValueError):
        return None
    twin = {k: v for k, v in rec.items() if k != "rationale"}
    return {**twin, "sample_id": f"{rec['sample_id']}{TWIN_SUFFIX}", "context": flipped, "labels": new_labels,
            "counterfactual": {"of": rec["sample_id"], "flipped": "cooperative", "seed": aug.seed}}


def add_twins(records: list[tuple[int, dict[str, Any]]], aug: AugmentConfig) -> tuple[list[tuple[int, dict]], int]:
    """``records`` with each drawn record's counterfactual twin right after it (same file line), and the count."""
    out: list[tuple[int, dict[str, Any]]] = []
    n = 0
    for line, rec in records:
        out.append((line, rec))
        twin = counterfactual_twin(rec, aug)
        if twin is not None:
            out.append((line, twin))
            n += 1
    return out, n


def vary_one(canonical: Rendered, aug: AugmentConfig, cot: bool, path: Path) -> Rendered:
    """``canonical`` rendered under its sample's variation draws (itself when none apply)."""
    from eval import perturb

    # families that cannot act on this row (instruction paraphrase of a compact prompt) are left out
    steps = [(name, sev) for name, sev in draw_variation(aug, str(canonical.record["sample_id"]))
             if perturb.is_applicable(name, canonical.record, canonical.opts)]
    if not steps:
        return canonical
    varied = perturb.vary_example(canonical.record, canonical.opts, steps, aug.seed)
    if varied is None:  # a step does not apply, or the edited track no longer shows the gold motion
        return canonical
    keep = {k: canonical.record[k] for k in ("labels", "counterfactual") if k in canonical.record}
    r = render_one(canonical.line, {**varied.record, **keep}, varied.options, cot, path)
    r.prompt = varied.prompt
    r.variation = {"seed": aug.seed, "steps": [[name, sev] for name, sev in steps]}
    r.canonical = canonical
    return r


def inputs(cfg: PromptsConfig) -> list[Path]:
    """The split files read."""
    return [Path(cfg.data_dir) / f"{split}.jsonl" for split in cfg.splits]


def run(cfg: PromptsConfig) -> StageResult:
    """Render every split for every variant; write rows, optional ChatGLM export and token lengths."""
    from pipeline.models.tokenizer import load_spec_tokenizer  # lazy: transformers only when rendering

    check_config(cfg)
    t0 = time.perf_counter()
    counter = TokenCounter(load_spec_tokenizer(cfg.tokenizer))
    out_dir = Path(cfg.out_dir)
    records = {}
    skipped = {}
    for split in cfg.splits:
        path = Path(cfg.data_dir) / f"{split}.jsonl"
        records[split], skipped[split] = read_records(path, cfg.limit)
    twins: dict[str, int] = {}
    if cfg.augment is not None and cfg.augment.counterfactual > 0:
        for split in cfg.augment.splits:
            if split in records:
                records[split], twins[split] = add_twins(records[split], cfg.augment)
    outputs: list[Path] = []
    lengths: dict[str, dict[str, Any]] = {}
    hashes: dict[tuple, str] = {}
    # Render and budget everything first, write only after every split passed (no half-written output).
    pending: list[tuple[Path, list[dict[str, Any]]]] = []
    for variant in cfg.variants:
        lengths[variant.name] = {}
        for split in cfg.splits:
            path = Path(cfg.data_dir) / f"{split}.jsonl"
            rendered = [
                render_one(
                    line,
                    rec,
                    variant_options(variant, choose_lang(variant, cfg.languages, cfg.seed, rec["sample_id"])),
                    variant.cot,
                    path,
                )
                for line, rec in tqdm(
                    records[split],
                    desc=f"prompts {variant.name}/{split}",
                    leave=False,
                    disable=len(records[split]) < 2000,
                )
            ]
            if cfg.augment is not None and split in cfg.augment.splits:
                rendered = [vary_one(r, cfg.augment, variant.cot, path) for r in rendered]
            kept, stats = budget_rows(rendered, cfg, counter, variant, split, path)
            stats["skipped_unlabelled"] = skipped[split]
            lengths[variant.name][split] = stats
            rows = [to_row(r, variant, split, hashes) for r in kept]
            pending.append((out_dir / variant.name / f"{split}.jsonl", rows))
            if cfg.export_chatglm:
                pending.append(
                    (
                        out_dir / variant.name / "chatglm" / f"{split}.json",
                        [{"content": row["prompt"], "summary": row["response"]} for row in rows],
                    )
                )
    for target, rows in pending:
        write_jsonl(target, rows)
        outputs.append(target)
    budgets = {
        "tokenizer": cfg.tokenizer,
        "chat_overhead_tokens": cfg.chat_overhead_tokens,
        "max_source_tokens": cfg.max_source_tokens,
        "max_target_tokens": cfg.max_target_tokens,
        "on_overflow": cfg.on_overflow,
    }
    outputs.append(write_json(out_dir / "token_lengths.json", {"budgets": budgets, "variants": lengths}))
    stats = {
        "rows": {v: {s: st["rows"] for s, st in per.items()} for v, per in lengths.items()},
        "dropped": {v: {s: st["dropped"] for s, st in per.items()} for v, per in lengths.items()},
        "truncated": {v: {s: st["truncated"] for s, st in per.items()} for v, per in lengths.items()},
        "skipped_unlabelled": skipped,
        **({"counterfactual_twins": twins} if twins else {}),
        "max_source_tokens_seen": {
            v: max(st["source_tokens"]["max"] for st in per.values()) for v, per in lengths.items()
        },
        "max_target_tokens_seen": {
            v: max(st["target_tokens"]["max"] for st in per.values()) for v, per in lengths.items()
        },
        "token_lengths": lengths,
        "template_hashes": sorted(set(hashes.values())),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("prompts: %s rows written to %s in %.1fs", stats["rows"], out_dir, stats["seconds"])
    return StageResult(outputs=outputs, stats=stats)


STAGE = Stage(
    name="prompts",
    config_cls=PromptsConfig,
    inputs=inputs,
    run=run,
    default_config="prompts_cot/configs/demo.yaml",
    help="render records into basic/instruction/CoT prompt rows per variant within token budgets",
    check=check_config,
)

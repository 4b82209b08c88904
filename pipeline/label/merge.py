"""Stage ``label.merge``: base records + expert reviews -> a new, versioned records set.

``python -m pipeline label merge --config pipeline/label/configs/merge_demo.yaml``

* Output: ``out_dir/v<N>/`` (N = 1 + the highest existing version, or ``version``), or ``out_dir``
  itself with ``versioned: false``. The folder is built under a hidden temp name and renamed into
  place, so a failure never leaves a half-written version, and an existing version is never
  overwritten. ``out_dir/LATEST`` names the newest version. The base folder is only read.
* Records keep the CONTRACT schema, file names and order; every item stays in its split. Sidecars
  of the base folder (``trajectories/*.npz`` and any other non-split file) are copied, so the
  result is a valid input for the prompts stage and for the next labelling round.
* Per level, the reviewers' labels override the record's label. Several reviewers who disagree:
  ``policy: majority`` takes a strict majority (a tie is flagged), ``policy: flag`` flags any
  disagreement. A flagged item is left unchanged and listed in ``adjudication.jsonl``.
* An expert-edited rationale goes to the record's ``rationale``; when the labels change without
  an edited rationale, the old rationale no longer fits and is replaced by the accepted model
  rationale if the expert accepted the model's labels, else cleared (it is kept in provenance).
* Each reviewed item gets a ``provenance`` entry (reviewer(s), batch_id, model_version, time,
  old_labels, new_labels, changed levels, ...). Merging is idempotent: reviews whose application
  the record's provenance already holds (a re-merge of its own output) change nothing
  (``already_applied`` in the stats). ``changes.jsonl`` lists the changed items;
  ``merge_info.json`` and the manifest stats give per-class change counts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config import ConfigError
from pipeline.core.io import DataError, make_temp_dir, read_jsonl, write_json, write_jsonl, write_text
from pipeline.core.stage import MANIFEST, Stage, StageResult
from pipeline.core.taxonomy import LEVELS
from pipeline.label.common import SPLITS, latest_per_reviewer, load_reviews, split_files

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MergeConfig:
    """Config of ``label.merge``."""

    # root of the versioned data set (v1/, v2/, ..., LATEST); or the records folder itself when versioned is false
    out_dir: Path = Path("runs/demo/label/dataset")
    # records folder the reviews apply to (data_prep output or an earlier version); never modified
    data_dir: Path = Path("runs/demo/data_prep")
    # review files (label.import / label.review outputs)
    reviews: tuple[Path, ...] = (Path("runs/demo/label/import/reviews.jsonl"),)
    # reviewer conflicts: majority (strict majority wins, ties flagged) | flag (any disagreement flagged)
    policy: Literal["majority", "flag"] = "majority"
    # write out_dir/v<N>/ (true) or straight into out_dir (false)
    versioned: bool = True
    # version number N to write; null = 1 + the highest existing v<N> (an existing version is an error)
    version: int | None = None
    # a review of a sample_id that is not in data_dir: error | ignore (counted in stats)
    unknown_samples: Literal["error", "ignore"] = "error"


def merge_inputs(cfg: MergeConfig) -> list[Path]:
    """The base records folder and every review file."""
    return [Path(cfg.data_dir), *map(Path, cfg.reviews)]


# -------------------------------------------------------------------------------------- decisions
def vote(values: list[str], policy: str) -> tuple[str | None, bool]:
    """Decide one level from the reviewers' labels; returns (label, conflict).

    No opinions -> (None, False). Unanimous -> that label. Otherwise ``majority`` takes the most
    voted label when no other label has as many votes; a tie (or any disagreement under ``flag``)
    is a conflict.
    """
    if not values:
        return None, False
    counts = Counter(values).most_common()
    if len(counts) == 1:
        return counts[0][0], False
    if policy == "majority" and counts[0][1] > counts[1][1]:
        return counts[0][0], False
    return None, True


def decide(record: dict[str, Any], rows: list[dict[str, Any]], policy: str) -> dict[str, Any]:
    """Resolve one sample's reviews against its record.

    Returns ``{"flagged": bool, "conflicts": {level: {label: [reviewers]}}, "labels": new labels,
    "rationale": new rationale, "rationale_changed": bool}``.
    """
    old = dict(record.get("labels") or {})
    new = dict(old)
    conflicts: dict[str, dict[str, list[str]]] = {}
    for lev in LEVELS:
        values = [r["labels"][lev] for r in rows if r["labels"].get(lev) is not None]
        label, conflict = vote(values, policy)
        if conflict:
            by_label: dict[str, list[str]] = defaultdict(list)
            for r in rows:
                if r["labels"].get(lev) is not None:
                    by_label[r["labels"][lev]].append(r["reviewer"])
            conflicts[lev] = {k: sorted(v) for k, v in sorted(by_label.items())}
        elif label is not None:
            new[lev] = label
    if conflicts:
        return {"flagged": True, "conflicts": conflicts, "labels": old, "rationale": record.get("rationale"),
                "rationale_changed": False}

    def agrees(r: dict[str, Any]) -> bool:
        return all(r["labels"].get(lev) in (None, new.get(lev)) for lev in LEVELS)

    supporters = sorted((r for r in rows if agrees(r)), key=lambda r: r.get("updated_at") or "", reverse=True)
    edited = [r for r in supporters if r.get("rationale_edited") and r.get("rationale")]
    changed = any(new.get(lev) != old.get(lev) for lev in LEVELS)
    rationale = record.get("rationale")
    if edited:
        rationale = edited[0]["rationale"]
    elif changed:
        # the old rationale argued for the old labels; the model's supports the new ones only if accepted
        accepted = [r for r in supporters if r.get("accepted") and r.get("rationale")]
        rationale = accepted[0]["rationale"] if accepted else None
    return {"flagged": False, "conflicts": {}, "labels": new, "rationale": rationale,
            "rationale_changed": rationale != record.get("rationale")}


def provenance_entry(record: dict[str, Any], rows: list[dict[str, Any]], decision: dict[str, Any],
                     policy: str) -> dict[str, Any]:
    """The provenance dict appended to a reviewed record."""
    old = dict(record.get("labels") or {})
    reviewers = sorted({r["reviewer"] for r in rows})
    entry = {
        "reviewer": ",".join(reviewers),
        "reviewers": reviewers,
        "batch_id": next((r["batch_id"] for r in rows if r.get("batch_id")), None),
        "model_version": next((r["model_version"] for r in rows if r.get("model_version")), None),
        "time": max((r.get("updated_at") or r.get("created_at") or "" for r in rows), default="") or None,
        "old_labels": old,
        "new_labels": decision["labels"],
        "changed": [lev for lev in LEVELS if decision["labels"].get(lev) != old.get(lev)],
        "model_labels": next((r["model_labels"] for r in rows if any(r["model_labels"].values())), None),
        "accepted_model": [r["reviewer"] for r in rows if r.get("accepted")],
        "policy": policy,
        "source": sorted({r.get("source") or "" for r in rows}),
    }
    if decision["rationale_changed"]:
        entry["old_rationale"] = record.get("rationale")
    return entry


def review_identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one application of a set of reviews: who, which batch/model, when, and the labels set."""
    return (tuple(entry.get("reviewers") or ()), entry.get("batch_id"), entry.get("model_version"),
            entry.get("time"), tuple(sorted((entry.get("new_labels") or {}).items(), key=lambda kv: kv[0])))


def already_applied(record: dict[str, Any], entry: dict[str, Any]) -> bool:
    """True when ``record``'s provenance already holds this application of the reviews (a re-merge).

    A later review of the same item has another identity and is applied; re-applying an old one
    never reverts it.
    """
    mine = review_identity(entry)
    return any(isinstance(p, dict) and review_identity(p) == mine for p in record.get("provenance") or [])


# ----------------------------------------------------------------------------------------- output
def next_version(root: Path) -> int:
    """1 + the highest ``v<N>`` folder under ``root`` (1 when none)."""
    nums = [int(p.name[1:]) for p in root.glob("v*") if p.is_dir() and p.name[1:].isdigit()]
    return max(nums, default=0) + 1


def copy_sidecars(base: Path, dest: Path) -> list[str]:
    """Copy every file of ``base`` except split JSONL files and the manifest; returns relative paths."""
    split_names = {f"{s}.jsonl" for s in SPLITS}
    copied = []
    for f in sorted(base.rglob("*")):
        rel = f.relative_to(base)
        if not f.is_file() or f.name == MANIFEST or any(p.startswith(".") for p in rel.parts):
            continue
        if len(rel.parts) == 1 and (f.name in split_names or f.name in {"adjudication.jsonl", "changes.jsonl",
                                                                          "merge_info.json"}):
            continue  # rewritten below / belongs to the base's own merge
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        copied.append(str(rel))
    return copied


def merge_records(cfg: MergeConfig, dest: Path) -> dict[str, Any]:
    """Write the merged records (+ sidecars, adjudication, changes, merge_info) into ``dest``."""
    base = Path(cfg.data_dir)
    reviews = load_reviews(map(Path, cfg.reviews))
    by_sample = latest_per_reviewer(reviews)
    first_seen = {row["sample_id"]: (p, line) for p, line, row in reversed(reviews)}
    files = split_files(base)
    known: set[str] = set()
    adjudication, changes = [], []
    transitions: dict[str, Counter] = {lev: Counter() for lev in LEVELS}
    gained: dict[str, Counter] = {lev: Counter() for lev in LEVELS}
    lost: dict[str, Counter] = {lev: Counter() for lev in LEVELS}
    counts: Counter = Counter()
    per_split: dict[str, int] = {}
    for path in files:
        out_rows = []
        for lineno, rec in read_jsonl(path):
            sid = rec.get("sample_id")
            if not isinstance(sid, str):
                raise DataError(path, lineno, "sample_id", "missing or not a string")
            known.add(sid)
            rows = list(by_sample.get(sid, {}).values())
            if rows:
                counts["reviewed"] += 1
                counts["split_mismatch"] += sum(1 for r in rows if r.get("split") not in (None, path.stem))
                decision = decide(rec, rows, cfg.policy)
                if decision["flagged"]:
                    counts["flagged"] += 1
                    adjudication.append({
                        "sample_id": sid, "split": path.stem, "current_labels": rec.get("labels"),
                        "conflicts": decision["conflicts"],
                        "reviews": [{k: r.get(k) for k in ("reviewer", "labels", "rationale", "batch_id", "updated_at")}
                                    for r in rows],
                    })
                elif already_applied(rec, provenance_entry(rec, rows, decision, cfg.policy)):
                    counts["already_applied"] += 1  # merging its own output again: nothing to change
                else:
                    entry = provenance_entry(rec, rows, decision, cfg.policy)
                    rec = {**rec, "labels": decision["labels"], "rationale": decision["rationale"],
                           "provenance": [*(rec.get("provenance") or []), entry]}
                    counts["rationale_changed"] += decision["rationale_changed"]
                    if entry["changed"]:
                        counts["changed"] += 1
                        changes.append({"sample_id": sid, "split": path.stem, "old_labels": entry["old_labels"],
                                        "new_labels": entry["new_labels"], "reviewer": entry["reviewer"]})
                        for lev in entry["changed"]:
                            old_l, new_l = entry["old_labels"].get(lev), entry["new_labels"][lev]
                            transitions[lev][f"{old_l}->{new_l}"] += 1
                            gained[lev][new_l] += 1
                            if old_l is not None:
                                lost[lev][old_l] += 1
                    else:
                        counts["confirmed"] += 1
            out_rows.append(rec)
        per_split[path.stem] = write_jsonl(dest / path.name, out_rows)
    unknown = sorted(set(by_sample) - known)
    if unknown and cfg.unknown_samples == "error":
        p, line = first_seen[unknown[0]]
        raise DataError(p, line, "sample_id",
                        f"{len(unknown)} reviewed sample(s) not in {base} (first: {unknown[0]!r}); "
                        "set unknown_samples=ignore to drop them")
    sidecars = copy_sidecars(base, dest)
    write_jsonl(dest / "adjudication.jsonl", adjudication)
    write_jsonl(dest / "changes.jsonl", changes)
    stats = {
        "base_dir": str(base),
        "policy": cfg.policy,
        "records": per_split,
        "reviews": len(reviews),
        "reviewed": counts["reviewed"],
        "changed": counts["changed"],
        "confirmed": counts["confirmed"],
        "flagged": counts["flagged"],
        "rationale_changed": counts["rationale_changed"],
        "split_mismatch_ignored": counts["split_mismatch"],
        "unknown_samples_ignored": len(unknown),
        "already_applied": counts["already_applied"],
        "per_class_changes": {lev: dict(sorted(transitions[lev].items())) for lev in LEVELS},
        "per_class_gained": {lev: dict(sorted(gained[lev].items())) for lev in LEVELS},
        "per_class_lost": {lev: dict(sorted(lost[lev].items())) for lev in LEVELS},
        "sidecars": sidecars,
    }
    write_json(dest / "merge_info.json", stats)
    return stats


def publish_into(tmp: Path, root: Path) -> list[Path]:
    """Move every entry of the finished ``tmp`` folder into ``root`` (replacing older ones)."""
    outputs = []
    for entry in sorted(tmp.iterdir()):
        target = root / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
        outputs.append(target)
    return outputs


def run_merge(cfg: MergeConfig) -> StageResult:
    """Build the new version in a temp folder, then rename it into place."""
    root, base = Path(cfg.out_dir), Path(cfg.data_dir)
    if root.resolve() == base.resolve():
        raise ConfigError("out_dir: must differ from data_dir (the previous version stays untouched)")
    root.mkdir(parents=True, exist_ok=True)
    n = cfg.version if cfg.version is not None else next_version(root)
    final = root / f"v{n}" if cfg.versioned else root
    if cfg.versioned and final.exists():
        raise ConfigError(f"version: {final} already exists; versions are never overwritten")
    tmp = make_temp_dir(root, prefix=f".v{n}." if cfg.versioned else ".merge.")
    try:
        stats = merge_records(cfg, tmp)
        if cfg.versioned:
            os.replace(tmp, final)
        else:
            outputs = publish_into(tmp, root)
            return StageResult(outputs=outputs, stats={"records_dir": str(root), **stats})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text(root / "LATEST", f"v{n}\n")
    log.info("merged %d reviewed (%d changed, %d flagged) -> %s", stats["reviewed"], stats["changed"],
             stats["flagged"], final)
    return StageResult(outputs=[final, root / "LATEST"], stats={"version": n, "records_dir": str(final), **stats})


STAGE = Stage(
    name="label.merge",
    config_cls=MergeConfig,
    inputs=merge_inputs,
    run=run_merge,
    default_config="pipeline/label/configs/merge_demo.yaml",
    help="apply expert reviews to a records set -> new versioned records folder",
    staged=False,  # publishes its own versions (never overwritten) under out_dir
)

__all__ = ["STAGE", "MergeConfig", "decide", "next_version", "run_merge", "vote"]

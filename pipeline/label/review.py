"""Stage ``label.review``: a small terminal review tool for experts without Label Studio.

``python -m pipeline label review --config pipeline/label/configs/review_demo.yaml reviewer=alice``

For each task of ``tasks`` (``label.export``'s ``tasks.jsonl`` or ``label.select``'s
``selection.jsonl``) it shows the known information, the model's labels and rationale, and reads
one command per line from standard input (plain lines, no curses, so it can be scripted by piping):

* ``a`` accept -- save the labels and rationale shown (the model's, unless changed with r / e);
* ``r`` relabel -- for each level pick a number from the list (or type a label; Enter keeps it),
  then back to the menu;
* ``e`` edit rationale -- type lines, finish with a line holding only ``.``; a lone ``.`` keeps it;
  then back to the menu;
* ``s`` skip -- leave it for later (it is offered again next session);
* ``q`` quit (end of input quits too).

Progress is saved atomically after every saved item to ``out_dir/reviews.jsonl`` (schema of
:mod:`pipeline.label.common`); a new session skips what this reviewer already reviewed, so several
reviewers can share one ``out_dir``. The stage always runs (never "up to date").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

from pipeline.core.io import DataError, load_jsonl, read_jsonl, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import LABELS, LEVEL_DISPLAY, LEVELS, canonical_label
from pipeline.label.common import choice_display, make_review, validate_labels
from pipeline.label.common import load_task_rows as load_tasks

log = logging.getLogger(__name__)

MENU = "[a]ccept  [r]elabel  [e]dit rationale  [s]kip  [q]uit > "


@dataclasses.dataclass(frozen=True)
class ReviewConfig:
    """Config of ``label.review``."""

    # where reviews.jsonl (progress + result) and manifest.json go; may be shared by reviewers
    out_dir: Path = Path("runs/demo/label/review")
    # tasks to review: label.export tasks.jsonl or label.select selection.jsonl
    tasks: Path = Path("runs/demo/label/export/tasks.jsonl")
    # name recorded as the reviewer of every saved item
    reviewer: str = "expert"
    # language of the label captions shown
    lang: Literal["en", "zh"] = "en"


class Quit(Exception):
    """The reviewer asked to stop (``q`` or end of input)."""


def review_inputs(cfg: ReviewConfig) -> list[Path]:
    """The task file."""
    return [Path(cfg.tasks)]


def now_iso() -> str:
    """Current UTC time, ISO 8601 with a ``Z`` (same shape as Label Studio's timestamps)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------------------- terminal
class Terminal:
    """Line-based I/O: prompts go to ``out``, answers come one line at a time from ``inp``."""

    def __init__(self, inp: IO[str], out: IO[str]):
        self.inp, self.out = inp, out

    def say(self, text: str = "") -> None:
        """Write a line."""
        self.out.write(text + "\n")

    def ask(self, prompt: str) -> str:
        """Show ``prompt`` and read one line (stripped); end of input raises :class:`Quit`."""
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        if line == "":
            raise Quit
        return line.rstrip("\r\n").strip()


def format_labels(labels: dict[str, str | None], lang: str, model: dict[str, str | None] | None = None) -> str:
    """``motion=flyby; operation=none; task=unclear`` (``*`` marks a label changed from the model's)."""
    parts = []
    for lev in LEVELS:
        lab = labels.get(lev)
        shown = choice_display(lab, lang) if lab else "?"
        mark = "*" if model is not None and lab != model.get(lev) else ""
        parts.append(f"{LEVEL_DISPLAY[lang][lev]}={shown}{mark}")
    return "; ".join(parts)


def show_task(term: Terminal, task: dict[str, Any], index: int, total: int, labels: dict, rationale: str | None,
              lang: str) -> None:
    """Print one task with the current draft labels and rationale."""
    term.say("")
    term.say(f"=== [{index}/{total}] {task['sample_id']} (split {task.get('split')}, batch {task.get('batch_id')}, "
             f"picked by {task.get('strategy')} {task.get('score')}) ===")
    term.say("Known information:")
    for line in str(task.get("text") or "").splitlines():
        term.say(f"  {line}")
    term.say(f"Model ({task.get('model_version')}): {format_labels(task['predicted'], lang)}")
    term.say(f"Current:  {format_labels(labels, lang, task['predicted'])}")
    term.say("Rationale:")
    for line in (rationale or "(none)").splitlines():
        term.say(f"  {line}")


def ask_label(term: Terminal, level: str, current: str | None, lang: str) -> str | None:
    """Numbered list of ``level``'s labels; a number or a label name picks, Enter keeps ``current``."""
    options = LABELS[level]
    term.say(f"{LEVEL_DISPLAY[lang][level]} (current: {choice_display(current, lang) if current else '?'}):")
    term.say("  " + "  ".join(f"{i}) {choice_display(lab, lang)}" for i, lab in enumerate(options, 1)))
    while True:
        answer = term.ask("number or label (Enter = keep) > ")
        if answer == "":
            return current
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1]
        label = canonical_label(answer, level)
        if label is not None:
            return label
        term.say(f"  not a {level} label: {answer!r}")


def ask_rationale(term: Terminal, current: str | None) -> str | None:
    """Read a new rationale until a line with only ``.``; nothing typed keeps ``current``."""
    term.say("New rationale; end with a line containing only '.' (a lone '.' keeps the current one):")
    lines: list[str] = []
    while True:
        line = term.ask("| ")
        if line == ".":
            break
        lines.append(line)
    text = "\n".join(lines).strip()
    return text or current


def review_task(term: Terminal, task: dict[str, Any], index: int, total: int, lang: str
                ) -> tuple[dict[str, str | None], str | None] | None:
    """Run the menu for one task; returns (labels, rationale) when saved, None when skipped."""
    labels = dict(task["predicted"])
    rationale = task.get("rationale")
    show_task(term, task, index, total, labels, rationale, lang)
    while True:
        cmd = term.ask(MENU).lower()
        if cmd in ("a", "accept"):
            return labels, rationale
        if cmd in ("r", "relabel"):
            for lev in LEVELS:
                labels[lev] = ask_label(term, lev, labels[lev], lang)
            show_task(term, task, index, total, labels, rationale, lang)
        elif cmd in ("e", "edit"):
            rationale = ask_rationale(term, rationale)
            show_task(term, task, index, total, labels, rationale, lang)
        elif cmd in ("s", "skip"):
            return None
        elif cmd in ("q", "quit"):
            raise Quit
        else:
            term.say(f"  unknown command {cmd!r}")


def review_session(tasks: list[dict[str, Any]], reviewer: str, done: list[dict[str, Any]], term: Terminal,
                   save: Callable[[list[dict[str, Any]]], None], lang: str = "en") -> dict[str, int]:
    """Review every task ``reviewer`` has not reviewed yet; ``save(all_rows)`` after each saved item.

    ``done`` holds the rows already in the output (all reviewers); returns counts of this session.
    """
    rows = list(done)
    reviewed = {r["sample_id"] for r in rows if r.get("reviewer") == reviewer}
    todo = [t for t in tasks if t["sample_id"] not in reviewed]
    counts = {"already_reviewed": len(tasks) - len(todo), "saved": 0, "skipped": 0, "quit": 0}
    term.say(f"{len(todo)} task(s) to review as {reviewer!r} ({counts['already_reviewed']} done earlier)")
    for i, task in enumerate(todo, 1):
        started, created = time.monotonic(), now_iso()
        try:
            outcome = review_task(term, task, i, len(todo), lang)
        except Quit:
            counts["quit"] = 1
            term.say("quit; progress saved")
            break
        if outcome is None:
            counts["skipped"] += 1
            continue
        labels, rationale = outcome
        rows.append(make_review(
            sample_id=task["sample_id"], split=task.get("split"), batch_id=task.get("batch_id"),
            task_id=task["sample_id"], reviewer=reviewer, labels=labels, rationale=rationale,
            rationale_edited=rationale != task.get("rationale"), model_labels=task["predicted"],
            model_rationale=task.get("rationale"), model_version=task.get("model_version"),
            lead_time=round(time.monotonic() - started, 3), created_at=created, updated_at=now_iso(),
            source="review",
        ))
        save(rows)  # atomic rewrite after every item: a crash loses at most the item in progress
        counts["saved"] += 1
    counts["remaining"] = len(todo) - counts["saved"]
    return counts


def run_review(cfg: ReviewConfig, inp: IO[str] | None = None, out: IO[str] | None = None) -> StageResult:
    """Interactive review reading stdin, prompting on stderr (or the given streams); writes ``reviews.jsonl``."""
    if not cfg.reviewer.strip():
        raise DataError("config", None, "reviewer", "reviewer name is empty")
    tasks = load_tasks(Path(cfg.tasks))
    path = Path(cfg.out_dir) / "reviews.jsonl"
    done = load_jsonl(path) if path.exists() else []
    # prompts go to stderr so stdout keeps only the CLI's JSON summary
    term = Terminal(inp or sys.stdin, out or sys.stderr)
    counts = review_session(tasks, cfg.reviewer, done, term, lambda rows: write_jsonl(path, rows), cfg.lang)
    if not path.exists():  # nothing saved yet: still leave a (valid, empty) output
        write_jsonl(path, [])
    counts["reviews_total"] = sum(1 for _ in read_jsonl(path))
    return StageResult(outputs=[path], stats={"reviewer": cfg.reviewer, **counts})


STAGE = Stage(
    name="label.review",
    config_cls=ReviewConfig,
    inputs=review_inputs,
    run=run_review,
    default_config="pipeline/label/configs/review_demo.yaml",
    always_run=True,
    staged=False,  # reviews.jsonl grows across sessions (saved after every item)
    help="terminal review of selected tasks (accept / relabel / edit rationale / skip / quit)",
)

__all__ = ["STAGE", "ReviewConfig", "Terminal", "review_session", "review_task", "run_review"]

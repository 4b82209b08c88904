"""Property-based fuzzing of every reader of user files (issue 23), with hypothesis.

Property: any input either parses, or ends in the project's own error type -- a
:class:`~pipeline.core.io.DataError` naming the file (with line/field where there is one) or a
:class:`~pipeline.core.config.ConfigError` -- never another exception (a traceback at the CLI).

Readers: track files (CSV, JSONL, NPZ), data imports (CSV, JSONL, ChatGLM), Label Studio exports
(mutations of the recorded real exports), review / plain annotation JSONL, stage configs (YAML
files) and ``key=value`` overrides. Inputs are drawn near the valid ones (known column names,
label names, units, the recorded exports) so that examples get past the first check, plus raw
bytes. The default run draws :data:`FAST` examples per reader; ``-m slow`` runs :data:`SLOW`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.imports import ImportSpec, import_file
from data_prep.stage import DataPrepConfig
from data_prep.tracks import read_tracks
from eval.config import EvalConfig
from pipeline.core.config import ConfigError, load_config
from pipeline.core.io import DataError
from pipeline.core.taxonomy import LABELS
from pipeline.label.common import load_reviews
from pipeline.label.importer import load_batch, load_label_studio, load_plain
from pipeline.label.merge import MergeConfig
from pipeline.train.config import TrainConfig
from prompts_cot.stage import PromptsConfig

LS = Path(__file__).resolve().parent / "fixtures/label_studio"
# derandomized (the same examples on every run, so CI is reproducible) and no example database on disk
COMMON = dict(deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: examples per reader in the default run, and with -m slow
FAST, SLOW = 30, 400
PROFILES = {"default": settings(max_examples=FAST, **COMMON), "slow": settings(max_examples=SLOW, **COMMON)}
RUNS = ["default", pytest.param("slow", marks=pytest.mark.slow)]


def holds(profile: str, strategy: st.SearchStrategy, prop: Callable[[Any], None]) -> None:
    """Check ``prop`` on ``strategy``'s examples under the profile's settings."""
    PROFILES[profile](given(strategy)(prop))()


def own_error_only(path: Path, read: Callable[[], Any]) -> None:
    """``read()`` returns, or raises a DataError naming ``path`` or a ConfigError; anything else fails the test."""
    try:
        read()
    except DataError as exc:
        assert exc.path.startswith(str(path)) or str(path) in str(exc), str(exc)
    except ConfigError as exc:
        assert str(exc)


def in_temp_file(name: str, data: bytes, read: Callable[[Path], Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        own_error_only(path, lambda: read(path))


# ------------------------------------------------------------------------------------ strategies
TRACK_COLUMNS = ["t_s", "t_min", "t", "range_m", "range_km", "range", "az_deg", "az_rad", "az", "el_deg", "el",
                 "range_rate_mps", "range_rate_kmps", "range_rate", "x_m", "y_m", "z_m", "vx_mps", "vy_mps",
                 "vz_mps", "x_km", "track_id", "orbit", "size", "cooperative", "equipment", "lighting",
                 "electromagnetic", "motion", "operation", "task"]
WORDS = ["LEO", "GEO", "small", "large", "true", "no", "unknown", "hovering", "flyby", "approach", "none", "nan",
         "inf", "-inf", "", " ", "1e999", "abc", "camera", "full_sunlight", "normal", "unclear", "a", "b"]
UNITS = st.dictionaries(st.sampled_from(["time", "distance", "angle", "speed", "mass"]),
                        st.sampled_from(["s", "min", "h", "m", "km", "deg", "rad", "mps", "kmps", "m/s", "x"]),
                        max_size=4)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.floats(-1e4, 1e4))
cells = st.one_of(numbers, st.sampled_from(WORDS), st.text(max_size=6), st.none(), st.booleans())
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(),
                                     st.text(max_size=10)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
raw_bytes = st.binary(max_size=300)


@st.composite
def track_table(draw) -> tuple[list[str], list[list[Any]]]:
    """A header of (mostly) known column names and rows of plausible or odd cells; a track id column
    groups them into tracks of a few samples."""
    names = draw(st.lists(st.sampled_from(TRACK_COLUMNS) | st.text(min_size=1, max_size=6), min_size=1,
                          max_size=9, unique=True))
    n = draw(st.integers(0, 14))
    rows = []
    for i in range(n):
        row = []
        for name in names:
            if name.startswith("t") and draw(st.booleans()):
                row.append(30.0 * i)  # increasing times, so that many examples get past the time check
            else:
                row.append(draw(cells))
        rows.append(row)
    return names, rows


def cell_text(value: Any) -> str:
    return "" if value is None else str(value).replace("\n", " ").replace("\r", " ")


@st.composite
def track_csv(draw) -> bytes:
    names, rows = draw(track_table())
    comments = draw(st.lists(st.one_of(UNITS.map(lambda u: "# units: " + " ".join(f"{k}={v}" for k, v in u.items())),
                                       st.text(max_size=20).map(lambda t: "# " + t.replace("\n", " "))), max_size=2))
    lines = comments + [",".join(names)] + [",".join(cell_text(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def track_jsonl(draw) -> bytes:
    names, rows = draw(track_table())
    lines = []
    if draw(st.booleans()):
        lines.append(json.dumps({"units": draw(st.one_of(UNITS, json_values))}))
    if draw(st.booleans()):  # one track per line, list values
        lines.append(json.dumps({k: [r[i] for r in rows] for i, k in enumerate(names)}))
    else:
        lines += [json.dumps(dict(zip(names, row))) for row in rows]
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=20)).replace("\n", " "))
    return ("\n".join(lines) + "\n").encode()


@st.composite
def track_npz(draw) -> bytes:
    import io

    names, rows = draw(track_table())
    arrays: dict[str, Any] = {}
    for i, name in enumerate(names):
        col = [r[i] for r in rows]
        kind = draw(st.sampled_from(["float", "str", "short", "2d", "as_is"]))
        if kind == "float":
            arrays[name] = np.array([c if isinstance(c, float) else 0.0 for c in col], dtype=float)
        elif kind == "str":
            arrays[name] = np.array([cell_text(c) for c in col], dtype=str)
        elif kind == "short":
            arrays[name] = np.arange(max(len(col) - 1, 0), dtype=float)
        elif kind == "2d":
            arrays[name] = np.zeros((len(col), 2))
        else:
            arrays[name] = np.array([cell_text(c) for c in col])
    if draw(st.booleans()):
        arrays["units"] = np.array(draw(st.one_of(UNITS.map(json.dumps), st.text(max_size=10))))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


label_words = st.sampled_from(sorted({*LABELS["motion"], *LABELS["operation"], *LABELS["task"], "dancing", ""}))


@st.composite
def import_rows(draw, chatglm: bool) -> list[dict[str, Any]]:
    keys = (["content", "summary", "prompt", "response", "id"] if chatglm
            else ["text", "motion", "operation", "task", "id", "rationale"])
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = {}
        for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys))):
            if key in ("summary", "response"):
                row[key] = draw(st.one_of(
                    st.builds(lambda m, o, t: f"Reasoning.\nAnswer: motion={m}; operation={o}; task={t}",
                              label_words, label_words, label_words),
                    st.builds(lambda m: f"Movement intention is {m}.", label_words), st.text(max_size=20), cells))
            elif key in ("motion", "operation", "task"):
                row[key] = draw(st.one_of(label_words, cells))
            else:
                row[key] = draw(st.one_of(st.text(max_size=12), cells))
        rows.append(row)
    return rows


def rows_as(fmt: str, rows: list[dict[str, Any]]) -> bytes:
    if fmt != "csv":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    names = sorted({k for r in rows for k in r}) or ["text"]
    lines = [",".join(names)] + [",".join(cell_text(r.get(k)).replace(",", ";") for k in names) for r in rows]
    return ("\n".join(lines) + "\n").encode()


@st.composite
def mutated(draw, doc: Any, max_edits: int = 3) -> Any:
    """``doc`` (a recorded JSON document) with a few random edits: a value replaced, a key deleted, a list cut."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_edits))):
        node, parent, key = doc, None, None
        for _depth in range(draw(st.integers(0, 6))):
            if isinstance(node, dict) and node:
                parent, key = node, draw(st.sampled_from(sorted(node)))
            elif isinstance(node, list) and node:
                parent, key = node, draw(st.integers(0, len(node) - 1))
            else:
                break
            node = parent[key]
        if parent is None:
            continue
        action = draw(st.sampled_from(["replace", "delete", "cut"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif isinstance(node, list):
            parent[key] = node[: draw(st.integers(0, len(node)))]
    return doc


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("profile", RUNS)
@pytest.mark.parametrize("suffix, strategy", [("csv", track_csv()), ("jsonl", track_jsonl()), ("npz", track_npz())])
def test_track_readers_fail_only_with_data_errors(profile, suffix, strategy):
    holds(profile, st.one_of(strategy, raw_bytes),
          lambda data: in_temp_file(f"tracks.{suffix}", data, lambda p: read_tracks(p, orbit_check="off")))


@pytest.mark.parametrize("profile", RUNS)
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "chatglm"])
def test_data_imports_fail_only_with_data_errors(profile, fmt):
    strategy = st.tuples(st.one_of(import_rows(fmt == "chatglm").map(lambda rows: rows_as(fmt, rows)), raw_bytes),
                         st.sampled_from([None, "id"]))
    holds(profile, strategy, lambda args: in_temp_file(
        f"user.{'csv' if fmt == 'csv' else 'jsonl'}", args[0],
        lambda p: import_file(ImportSpec(path=p, format=fmt, id_column=args[1]))))


@pytest.mark.parametrize("profile", RUNS)
@pytest.mark.parametrize("export", ["export_json.json", "export_json_min.json", "export_snapshot.json"])
def test_label_studio_exports_fail_only_with_data_errors(profile, export):
    batch = load_batch((LS / "tasks.jsonl",))
    doc = json.loads((LS / export).read_text())
    strategy = st.one_of(mutated(doc).map(lambda d: json.dumps(d).encode()), raw_bytes)
    holds(profile, strategy, lambda data: in_temp_file(export, data, lambda p: load_label_studio(p, batch, {})))


@st.composite
def review_lines(draw) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        row = {}
        for key in draw(st.lists(st.sampled_from(["sample_id", "reviewer", "labels", "model_labels", "predicted",
                                                  "rationale", "rationale_action", "task_id"]), unique=True)):
            if key in ("labels", "model_labels", "predicted"):
                row[key] = draw(st.one_of(st.fixed_dictionaries(
                    {}, optional={lev: st.one_of(label_words, cells) for lev in ("motion", "operation", "task")}),
                    json_values))
            else:
                row[key] = draw(st.one_of(st.text(max_size=8), cells))
        rows.append(row)
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.mark.parametrize("profile", RUNS)
@pytest.mark.parametrize("reader", ["reviews", "plain"])
def test_review_files_fail_only_with_data_errors(profile, reader):
    read = (lambda p: load_reviews([p])) if reader == "reviews" else load_plain
    holds(profile, st.one_of(review_lines(), raw_bytes), lambda data: in_temp_file("reviews.jsonl", data, read))


CONFIG_CLASSES = {"data_prep": DataPrepConfig, "prompts": PromptsConfig, "train": TrainConfig,
                  "evaluate": EvalConfig, "label.merge": MergeConfig}


def field_names(cls: type, prefix: str = "") -> list[str]:
    """Dotted field names of a config dataclass (nested sections too)."""
    import dataclasses

    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            out += field_names(f.type, f"{prefix}{f.name}.")
    return out


@st.composite
def config_and_overrides(draw, cls: type) -> tuple[bytes, list[str]]:
    keys = field_names(cls) + ["nosuchkey", "a.b"]
    values = st.one_of(json_values, cells, st.sampled_from(["[1", "{a: 1}", "[0.8, 0.1, 0.2]", "- x", "null"]))
    data = {}
    for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=5)):
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
        node[last] = draw(values)
    text = draw(st.one_of(st.just(yaml.safe_dump(data, allow_unicode=True)), st.text(max_size=40)))
    overrides = draw(st.lists(st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(keys), st.text(max_size=10)),
        st.builds(lambda k, v: f"{k}={json.dumps(v)}", st.sampled_from(keys), json_values), st.text(max_size=12)),
        max_size=3))
    raw = draw(st.one_of(st.just(text.encode()), raw_bytes))
    return raw, overrides


@pytest.mark.parametrize("profile", RUNS)
@pytest.mark.parametrize("stage", sorted(CONFIG_CLASSES))
def test_stage_configs_and_overrides_fail_only_with_config_errors(profile, stage):
    cls = CONFIG_CLASSES[stage]
    holds(profile, config_and_overrides(cls), lambda args: in_temp_file(
        "config.yaml", args[0], lambda p: load_config(cls, p, args[1])))

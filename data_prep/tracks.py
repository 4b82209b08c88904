"""Read users' tracks (CSV, JSONL, NPZ) into records: raw observations in, features out.

A track file is a table of samples grouped by a track id. Each sample is either in **sensor
form** (time, range, azimuth, elevation, range-rate) or in **LVLH form** (time, x, y, z, vx,
vy, vz: the station's frame, x radial, y along-track, z cross-track; turned into the sensor
form, noise-free). Units are part of the column names::

    time         t_s | t_min | t_h
    range        range_m | range_km              x_m, y_m, z_m | x_km, y_km, z_km
    angles       az_deg, el_deg | az_rad, el_rad
    range-rate   range_rate_mps | range_rate_kmps  vx_mps, vy_mps, vz_mps | vx_kmps, ...

Bare names (``t``, ``range``, ``az``, ``el``, ``range_rate``, ``x`` ... ``vz``) take their units
from a ``units`` mapping (``{"time": "s", "distance": "km", "angle": "deg", "speed": "mps"}``):
the ``units`` argument, a ``# units: time=s distance=km angle=deg speed=mps`` comment line at
the top of a CSV file, a first JSONL line ``{"units": {...}}``, or a ``units`` entry (a JSON
string) in an NPZ file.

Optional columns, constant within a track: ``track_id`` (else the file is one track),
context fields ``size``, ``cooperative``, ``equipment``, ``lighting``, ``electromagnetic``
(values of :data:`data_prep.rules.CONTEXT_VALUES`; missing ones are ``"unknown"``), ``orbit``
(``LEO``/``GEO``; default the ``orbit`` argument, else LEO) and labels ``motion``,
``operation``, ``task`` (any display name or alias of the taxonomy). Any cadence, uneven
times and gaps, any window length. Layouts:

* CSV: one sample per row (``#`` comment lines at the top only).
* JSONL: one sample per line, or one track per line with list values
  (``{"track_id": "a", "t_s": [...], "range_km": [...], ..., "size": "small"}``).
* NPZ: equal-length 1-D arrays named like the columns, one sample per index ("line" in
  error messages is the index + 1).

:func:`read_tracks` returns records of the project's schema (docs/CONTRACT.md) with
``observation`` (naming its orbit, so the features are track features), ``features``,
``context`` and ``labels`` (None without a ``motion`` column). Every problem is a
:class:`~pipeline.core.io.DataError` naming file, line and field.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import rules
from data_prep.cw import ORBIT_ALTITUDE_M, arc_misfit, fit_mean_motion, orbit_mean_motion
from data_prep.features import analysis_step, compute_features, line_of_sight
from pipeline.core.taxonomy import LABELS, LEVELS, canonical_label
from pipeline.core.binary import read_npz
from pipeline.core.io import DataError, parse_json, read_jsonl, read_text

#: Unit factors to SI per dimension (s, m, deg, m/s).
UNITS: dict[str, dict[str, float]] = {
    "time": {"s": 1.0, "min": 60.0, "h": 3600.0},
    "distance": {"m": 1.0, "km": 1000.0},
    "angle": {"deg": 1.0, "rad": 180.0 / math.pi},
    "speed": {"mps": 1.0, "kmps": 1000.0},
}
#: Quantities of each form and their dimension.
SENSOR_FORM: dict[str, str] = {"t": "time", "range": "distance", "az": "angle", "el": "angle", "range_rate": "speed"}
LVLH_FORM: dict[str, str] = {"t": "time", "x": "distance", "y": "distance", "z": "distance",
                             "vx": "speed", "vy": "speed", "vz": "speed"}
#: Context fields a track file may carry (besides ``orbit``).
CONTEXT_FIELDS: tuple[str, ...] = tuple(rules.CONTEXT_VALUES)
#: Stored decimals of the observation (features are computed from the stored values).
TRACK_DECIMALS: dict[str, int] = {"t_s": 3, "range_m": 2, "range_rate_mps": 4, "az_deg": 5, "el_deg": 5}
#: A track needs at least this many samples.
MIN_TRACK_SAMPLES = 5
#: Orbit vs dynamics (:func:`check_orbit_dynamics`): the declared orbit's CW coasting misfit over
#: the best other orbit's; at or above WARN a warning, at or above REFUSE (and with at least
#: PHANTOM_BURNS more burns read under the declared orbit) a DataError.
ORBIT_MISFIT_WARN = 3.0
ORBIT_MISFIT_REFUSE = 10.0
ORBIT_PHANTOM_BURNS = 5
ORBIT_CHECKS = ("error", "warn", "off")

log = logging.getLogger(__name__)
_TRUE, _FALSE = {"true", "yes", "1", "y", "t"}, {"false", "no", "0", "n", "f"}


def observation_from_states(t_s: np.ndarray, states: np.ndarray, orbit: str = "LEO") -> dict[str, Any]:
    """Sensor-form observation (noise-free) of LVLH states (T, 6) in m, m/s at times t_s (T,).

    Same angle convention as :mod:`data_prep.sensor`: azimuth from +y (along-track) towards +x
    (radial), elevation towards +z (cross-track).
    """
    pos, vel = np.asarray(states, dtype=float)[:, :3], np.asarray(states, dtype=float)[:, 3:6]
    r = np.linalg.norm(pos, axis=1)
    safe = np.maximum(r, 1e-9)
    rdot = np.where(r > 1e-9, np.sum(pos * vel, axis=1) / safe, -np.linalg.norm(vel, axis=1))
    az = np.degrees(np.arctan2(pos[:, 0], pos[:, 1]))
    el = np.degrees(np.arcsin(np.clip(pos[:, 2] / safe, -1.0, 1.0)))
    return _observation(np.asarray(t_s, dtype=float), r, rdot, az, el, orbit)


def _observation(t: np.ndarray, r: np.ndarray, rdot: np.ndarray, az: np.ndarray, el: np.ndarray,
                 orbit: str) -> dict[str, Any]:
    """The stored observation dict (rounded; with ``orbit``)."""
    cols = {"t_s": t, "range_m": r, "range_rate_mps": rdot, "az_deg": (az + 180.0) % 360.0 - 180.0, "el_deg": el}
    obs: dict[str, Any] = {k: np.round(v, TRACK_DECIMALS[k]).tolist() for k, v in cols.items()}
    obs["orbit"] = orbit
    return obs


# ---------------------------------------------------------------------------------------- columns
def _parse_units(path: Path, line: int | None, spec: Any) -> dict[str, str]:
    """A units mapping {dimension: unit} (``m/s`` and ``km/s`` are accepted for speed), validated."""
    if isinstance(spec, str):
        spec = dict(part.split("=", 1) for part in spec.replace(",", " ").split() if "=" in part)
    if not isinstance(spec, dict):
        raise DataError(path, line, "units", f"expected a mapping of units, got {spec!r}")
    out = {}
    for dim, unit in spec.items():
        unit = {"m/s": "mps", "km/s": "kmps"}.get(str(unit).strip(), str(unit).strip())
        if dim not in UNITS or unit not in UNITS[dim]:
            raise DataError(path, line, "units", f"unknown unit {dim}={unit}; expected "
                            + ", ".join(f"{d}: {'|'.join(u)}" for d, u in UNITS.items()))
        out[dim] = unit
    return out


def check_units_header(path: Path, line: int | None, names: Iterable[str], declared: dict[str, str]) -> None:
    """Refuse a file whose own units declaration contradicts its column suffixes (evidence in the message).

    A header ``distance=km`` over a column ``range_m`` says two different things about one file:
    one of them is wrong, and reading either silently would scale the track by 1000.
    """
    for name in names:
        for quantities in (SENSOR_FORM, LVLH_FORM):
            for q, dim in quantities.items():
                unit = name[len(q) + 1:] if name.startswith(f"{q}_") else None
                if unit in UNITS[dim] and dim in declared and declared[dim] != unit:
                    raise DataError(path, line, "units",
                                    f"the file declares {dim}={declared[dim]}, but column {name!r} is named in "
                                    f"{unit}; fix the units declaration or rename the column")


def _resolve_columns(path: Path, line: int | None, names: Iterable[str], units: dict[str, str]
                     ) -> tuple[str, dict[str, tuple[str, float]]]:
    """Which form the columns are in and, per quantity, (column, factor to SI)."""
    names = list(names)
    found: dict[str, dict[str, tuple[str, float]]] = {"sensor": {}, "lvlh": {}}
    for form, quantities in (("sensor", SENSOR_FORM), ("lvlh", LVLH_FORM)):
        for q, dim in quantities.items():
            for unit, factor in UNITS[dim].items():
                if f"{q}_{unit}" in names:
                    found[form][q] = (f"{q}_{unit}", factor)
            if q not in found[form] and q in names:
                if dim not in units:
                    raise DataError(path, line, q, f"column {q!r} has no unit: name it {q}_<{'|'.join(UNITS[dim])}> "
                                    f"or declare units ({dim}=...)")
                found[form][q] = (q, UNITS[dim][units[dim]])
    for form, quantities in (("sensor", SENSOR_FORM), ("lvlh", LVLH_FORM)):
        if len(found[form]) == len(quantities):
            return form, found[form]
    form = max(found, key=lambda f: len(found[f]) / len(SENSOR_FORM if f == "sensor" else LVLH_FORM))
    quantities = SENSOR_FORM if form == "sensor" else LVLH_FORM
    missing = [q for q in quantities if q not in found[form]]
    raise DataError(path, line, missing[0], f"missing column(s) {missing} of the {form} form; a track file needs "
                    f"t, range, az, el, range_rate (sensor form) or t, x, y, z, vx, vy, vz (LVLH form), "
                    f"each with a unit suffix, e.g. range_km, az_deg, t_s")


def _number(path: Path, line: int, field: str, value: Any) -> float:
    """A finite float from a cell, or DataError."""
    if isinstance(value, bool):
        raise DataError(path, line, field, f"not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(path, line, field, f"not a number: {value!r}") from None
    if not math.isfinite(x):
        raise DataError(path, line, field, f"not finite: {value!r}")
    return x


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _context_value(path: Path, line: int, field: str, value: Any) -> Any:
    """A validated context value (cooperative as bool), or DataError naming the allowed ones."""
    if field == "orbit":
        text = str(value).strip().upper()
        if text not in ORBIT_ALTITUDE_M:
            raise DataError(path, line, field, f"unknown orbit {value!r}; expected one of {sorted(ORBIT_ALTITUDE_M)}")
        return text
    if field == "cooperative":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise DataError(path, line, field, f"unknown value {value!r}; expected true/false (yes/no, 1/0)")
    text = str(value).strip().lower().replace(" ", "_")
    if text not in rules.CONTEXT_VALUES[field]:
        raise DataError(path, line, field,
                        f"unknown value {value!r}; expected one of {list(rules.CONTEXT_VALUES[field])}")
    return text


def _label_value(path: Path, line: int, level: str, value: Any) -> str:
    label = canonical_label(str(value), level) if isinstance(value, str) else None
    if label is None:
        raise DataError(path, line, level, f"unknown {level} label {value!r}; expected one of {list(LABELS[level])}")
    return label


# ------------------------------------------------------------------------------------------ readers
def _csv_rows(path: Path) -> tuple[dict[str, str], list[tuple[int, dict[str, Any]]], int]:
    """(metadata from leading ``# key: value`` lines, [(line, row)], header line)."""
    meta: dict[str, str] = {}
    lines = read_text(path).splitlines()  # not UTF-8: a DataError naming the line
    start = 0
    while start < len(lines) and (lines[start].lstrip().startswith("#") or not lines[start].strip()):
        text = lines[start].lstrip().lstrip("#").strip()
        if ":" in text:
            key, value = text.split(":", 1)
            meta[key.strip().lower()] = value.strip()
            meta[f"{key.strip().lower()}_line"] = start + 1
        start += 1
    if start >= len(lines):
        raise DataError(path, None, None, "CSV file has no header row")
    reader = csv.DictReader(lines[start:])
    rows = []
    for row in reader:
        line = start + reader.line_num
        if None in row:
            raise DataError(path, line, None, "row has more cells than the header")
        if all(_blank(v) for v in row.values()):
            continue
        rows.append((line, dict(row)))
    return meta, rows, start + 1


def _jsonl_rows(path: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int | None]:
    """JSONL samples (one per line, or a track per line with lists expanded to samples)."""
    meta: dict[str, Any] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    for line, obj in read_jsonl(path):
        if not rows and set(obj) == {"units"}:
            meta["units"], meta["units_line"] = obj["units"], line
            continue
        lists = {k: v for k, v in obj.items() if isinstance(v, list)}
        if not lists:
            rows.append((line, obj))
            continue
        lengths = {len(v) for v in lists.values()}
        if len(lengths) != 1:
            key = min(lists, key=lambda k: len(lists[k]))
            raise DataError(path, line, key, f"list fields differ in length ({sorted(lengths)})")
        scalars = {k: v for k, v in obj.items() if k not in lists}
        rows.extend((line, {**scalars, **{k: v[i] for k, v in lists.items()}}) for i in range(lengths.pop()))
    return meta, rows, None


def _npz_rows(path: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int | None]:
    """NPZ columns (equal-length 1-D arrays) as rows; 'line' = index + 1."""
    meta: dict[str, Any] = {}
    cols: dict[str, np.ndarray] = {}
    for key, arr in read_npz(path).items():
        if key == "units":
            if arr.ndim != 0:
                raise DataError(path, None, key, f"expected a 0-d string array (JSON), got shape {arr.shape}")
            meta["units"] = parse_json(str(arr), path)
            continue
        if arr.ndim != 1:
            raise DataError(path, None, key, f"expected a 1-D array, got shape {arr.shape}")
        if arr.dtype.kind not in "biufUS":
            raise DataError(path, None, key, f"unsupported array dtype {arr.dtype} (numbers or strings)")
        cols[key] = arr
    lengths = Counter(len(a) for a in cols.values())
    if len(lengths) > 1:  # name the column that disagrees with the others (the shortest on a tie)
        n = max(lengths, key=lambda length: (lengths[length], length))
        odd = min((k for k, a in cols.items() if len(a) != n), key=lambda k: len(cols[k]))
        raise DataError(path, None, odd, f"has {len(cols[odd])} values, the other columns {n} "
                                         f"(arrays differ in length: {sorted(lengths)})")
    n = next(iter(lengths)) if lengths else 0
    rows = [(i + 1, {k: (a[i].item() if hasattr(a[i], "item") else a[i]) for k, a in cols.items()}) for i in range(n)]
    return meta, rows, None


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("csv", "jsonl", "npz"):
            raise DataError(path, None, None, f"unknown track file format {fmt!r}; expected csv, jsonl or npz")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "npz"):
        return suffix
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    raise DataError(path, None, None, f"cannot tell the format of {path.name!r}; name it .csv, .jsonl or .npz")


def read_tracks(
    path: str | Path,
    fmt: str | None = None,
    units: dict[str, str] | str | None = None,
    orbit: str | None = None,
    source: str | None = None,
    id_column: str = "track_id",
    orbit_check: str = "error",
) -> list[dict[str, Any]]:
    """Records (docs/CONTRACT.md) for every track in a CSV, JSONL or NPZ file.

    Args:
        path: the track file.
        fmt: ``csv`` | ``jsonl`` | ``npz`` (default: from the suffix).
        units: units of bare column names, e.g. ``{"distance": "km", "angle": "deg"}`` (overrides
            the file's own declaration).
        orbit: the station's orbit where the file has no ``orbit`` column (default LEO).
        source: prefix of the sample ids (default the file stem): ``<source>-<track id>``.
        id_column: the column that groups samples into tracks (absent: one track ``"0"``).
        orbit_check: ``error`` | ``warn`` | ``off``: what to do when a track's own dynamics
            contradict its orbit (:func:`check_orbit_dynamics`).

    Returns:
        One record per track, in order of first appearance: ``sample_id``, ``source``,
        ``observation`` (sensor form in s, m, m/s, deg, with ``orbit``), ``features``
        (:func:`data_prep.features.compute_features`), ``context`` (all fields, ``"unknown"``
        where not given), ``labels`` (None without a ``motion`` column), and ``split``,
        ``scenario_seed``, ``text``, ``rationale`` None, ``provenance`` [].
    """
    return list(read_tracks_by_id(path, fmt, units, orbit, source, id_column, orbit_check).values())


def read_tracks_by_id(
    path: str | Path,
    fmt: str | None = None,
    units: dict[str, str] | str | None = None,
    orbit: str | None = None,
    source: str | None = None,
    id_column: str = "track_id",
    orbit_check: str = "error",
) -> dict[str, dict[str, Any]]:
    """:func:`read_tracks`' records keyed by their track id (the ``id_column`` value; ``"0"`` for a file
    without that column), in order of first appearance: the id without the ``<source>-`` of the sample id."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "track file does not exist")
    if orbit_check not in ORBIT_CHECKS:
        raise DataError(path, None, "orbit_check", f"unknown value {orbit_check!r}; expected one of {ORBIT_CHECKS}")
    kind = _format_of(path, fmt)
    meta, rows, header_line = {"csv": _csv_rows, "jsonl": _jsonl_rows, "npz": _npz_rows}[kind](path)
    if not rows:
        raise DataError(path, None, None, "no samples in the track file")
    units_line = meta.get("units_line", header_line)
    declared = _parse_units(path, units_line, meta["units"]) if meta.get("units") else {}
    names = list(dict.fromkeys(k for _, row in rows for k in row))
    check_units_header(path, units_line, names, declared)
    if units:
        declared.update(_parse_units(path, None, units))
    form, columns = _resolve_columns(path, header_line or rows[0][0], names, declared)
    default_orbit = _context_value(path, None, "orbit", orbit) if orbit else "LEO"
    tracks: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line, row in rows:
        tid = row.get(id_column)
        tid = "0" if _blank(tid) and id_column not in names else tid
        if _blank(tid):
            raise DataError(path, line, id_column, "missing track id")
        if isinstance(tid, float) and tid.is_integer():
            tid = int(tid)
        tracks.setdefault(str(tid).strip(), []).append((line, row))
    stem = source or path.stem
    return {tid: _track_record(path, f"{stem}-{tid}", stem, samples, form, columns, default_orbit, orbit_check)
            for tid, samples in tracks.items()}


def _constant(path: Path, samples: list[tuple[int, dict[str, Any]]], field: str,
              parse: Callable[[Path, int, str, Any], Any]) -> Any | None:
    """The parsed value of a per-track field, the same on every row that gives it (None if none does)."""
    seen: tuple[int, Any, Any] | None = None
    for line, row in samples:
        raw = row.get(field)
        if _blank(raw):
            continue
        value = parse(path, line, field, raw)
        if seen is None:
            seen = (line, raw, value)
        elif value != seen[2]:
            raise DataError(path, line, field,
                            f"differs within the track ({raw!r} here, {seen[1]!r} on line {seen[0]})")
    return None if seen is None else seen[2]


def _track_record(path: Path, sample_id: str, source: str, samples: list[tuple[int, dict[str, Any]]], form: str,
                  columns: dict[str, tuple[str, float]], default_orbit: str, orbit_check: str = "error") -> dict[str, Any]:
    """One record from a track's samples (validated, converted to the sensor form)."""
    first_line = samples[0][0]
    if len(samples) < MIN_TRACK_SAMPLES:
        raise DataError(path, first_line, columns["t"][0],
                        f"track {sample_id!r} has {len(samples)} samples; need at least {MIN_TRACK_SAMPLES}")
    values = {q: np.array([_number(path, line, col, row.get(col)) * factor for line, row in samples])
              for q, (col, factor) in columns.items()}
    t = values["t"]
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        line = samples[int(bad[0]) + 1][0]
        raise DataError(path, line, columns["t"][0],
                        f"time does not increase ({t[bad[0] + 1]:g} s after {t[bad[0]]:g} s)")
    context: dict[str, Any] = {"orbit": _constant(path, samples, "orbit", _context_value) or default_orbit}
    for field in CONTEXT_FIELDS:
        value = _constant(path, samples, field, _context_value)
        context[field] = "unknown" if value is None else value
    if form == "sensor":
        for q, lo, hi in (("range", 0.0, math.inf), ("el", -90.0, 90.0)):
            out = np.flatnonzero((values[q] < lo) | (values[q] > hi))
            if out.size:
                line, row = samples[int(out[0])]
                raise DataError(path, line, columns[q][0], f"out of range: {row.get(columns[q][0])!r}")
        obs = _observation(t, values["range"], values["range_rate"], values["az"], values["el"], context["orbit"])
    else:
        states = np.stack([values[q] for q in ("x", "y", "z", "vx", "vy", "vz")], axis=1)
        obs = observation_from_states(t, states, context["orbit"])
    labels = None
    motion = _constant(path, samples, "motion", _label_value)
    if motion is not None:
        labels = {"motion": motion, **{level: _constant(path, samples, level, _label_value) for level in LEVELS[1:]}}
    try:
        features = compute_features(obs)
    except ValueError as exc:
        raise DataError(path, first_line, None, f"track {sample_id!r}: {exc}") from None
    check_orbit_dynamics(path, first_line, sample_id, obs, features, orbit_check)
    return {"sample_id": sample_id, "scenario_seed": None, "split": None, "source": source, "labels": labels,
            "context": context, "observation": obs, "features": features, "text": None, "rationale": None,
            "provenance": []}


def check_orbit_dynamics(path: Path, line: int, sample_id: str, obs: dict[str, Any], features: dict[str, Any],
                         mode: str = "error") -> None:
    """Refuse (or warn about) a track whose own motion contradicts its declared orbit.

    Read with the wrong mean motion, coasting looks like thrust: a GEO track read as LEO shows
    dozens of phantom burns (and a LEO track read as GEO loses its real ones). The track's coasting arcs are fitted with the CW model
    (:func:`data_prep.cw.arc_misfit`, arcs of six analysis steps of the slowest orbit) at every
    named orbit's mean motion; when another orbit explains them :data:`ORBIT_MISFIT_REFUSE` times
    better and reading the track there changes its burn count by :data:`ORBIT_PHANTOM_BURNS` or more, the
    track is refused with the evidence: the best-fitting mean motion, both misfits and both burn
    counts. A weaker contradiction (:data:`ORBIT_MISFIT_WARN`) is logged as a warning.
    """
    if mode == "off":
        return
    t = np.asarray(obs["t_s"], dtype=float)
    pos = np.asarray(obs["range_m"], dtype=float)[:, None] * line_of_sight(np.asarray(obs["az_deg"], dtype=float),
                                                                           np.asarray(obs["el_deg"], dtype=float))
    cadence = float(np.median(np.diff(t)))
    slowest = min(orbit_mean_motion(o) for o in ORBIT_ALTITUDE_M)
    span = min(6.0 * analysis_step(cadence, slowest), 0.5 * float(t[-1] - t[0]))
    misfit = {o: arc_misfit(t, pos, orbit_mean_motion(o), span) for o in ORBIT_ALTITUDE_M}
    declared = obs["orbit"]
    others = [o for o in ORBIT_ALTITUDE_M if o != declared and math.isfinite(misfit[o]) and misfit[o] > 0]
    if not others or not math.isfinite(misfit[declared]):
        return
    other = min(others, key=misfit.__getitem__)
    ratio = misfit[declared] / misfit[other]
    if ratio < ORBIT_MISFIT_WARN:
        return
    other_burns = compute_features({**obs, "orbit": other})["n_burns"]
    fitted = fit_mean_motion(t, pos, span)
    message = (f"track {sample_id!r} is read as {declared} (mean motion {orbit_mean_motion(declared):.3g} rad/s), "
               f"but its coasting arcs fit {fitted:.3g} rad/s best ({other}: {orbit_mean_motion(other):.3g} rad/s); "
               f"CW misfit {misfit[declared]:.2g} as {declared} vs {misfit[other]:.2g} as {other} (of the range), "
               f"{features['n_burns']} burns read as {declared} vs {other_burns} as {other}; give the track's orbit "
               f"(orbit column, or orbit={other}), or orbit_check=warn if {declared} is right")
    if mode == "error" and ratio >= ORBIT_MISFIT_REFUSE and abs(features["n_burns"] - other_burns) >= ORBIT_PHANTOM_BURNS:
        raise DataError(path, line, "orbit", message)
    log.warning("%s: %s", path, message)


# ------------------------------------------------------------------------------------------ writing
def write_tracks_csv(path: str | Path, records: list[dict[str, Any]], distance: str = "km",
                     speed: str = "mps") -> Path:
    """Write records' observations as a sensor-form track CSV (``track_id`` = sample id), with
    their context and labels; range in ``distance`` (m|km), range-rate in ``speed`` (mps|kmps),
    angles in degrees, time in s. Unknown context values are left blank."""
    from pipeline.core.io import atomic_open

    d_factor, v_factor = UNITS["distance"][distance], UNITS["speed"][speed]
    header = ["track_id", "t_s", f"range_{distance}", "az_deg", "el_deg", f"range_rate_{speed}", "orbit",
              *CONTEXT_FIELDS, *LEVELS]

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value in (None, "unknown") else str(value)

    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for rec in records:
            obs, ctx, labels = rec["observation"], rec.get("context") or {}, rec.get("labels") or {}
            fixed = [obs.get("orbit", ctx.get("orbit", "LEO")), *[cell(ctx.get(f)) for f in CONTEXT_FIELDS],
                     *[cell(labels.get(level)) for level in LEVELS]]
            for i in range(len(obs["t_s"])):
                writer.writerow([rec["sample_id"], f"{obs['t_s'][i]:g}", f"{obs['range_m'][i] / d_factor:.7g}",
                                 f"{obs['az_deg'][i]:.5f}", f"{obs['el_deg'][i]:.5f}",
                                 f"{obs['range_rate_mps'][i] / v_factor:.5g}", *fixed])
    return Path(path)


# ----------------------------------------------------------------------------------- example file
#: The shipped example (data_prep/examples/tracks_example.csv): (track id, motion, orbit, window in
#: orbits, cadence s, sampling, context or None). Regenerate: ``python -m data_prep.tracks``.
EXAMPLE_TRACKS: tuple[tuple[str, str, str, float, float, str, dict[str, Any] | None], ...] = (
    ("hover-sk", "hovering", "LEO", 0.5, 10.0, "jitter",
     {"size": "small", "cooperative": False, "equipment": "camera", "lighting": "full_sunlight",
      "electromagnetic": "normal"}),
    ("approach-burns", "approach", "LEO", 1.0, 30.0, "uniform", None),
    ("retreat-setup", "retreat", "LEO", 1.0, 60.0, "gaps",
     {"size": "medium", "cooperative": False, "equipment": "none", "lighting": "eclipse",
      "electromagnetic": "optimal"}),
    ("flyby", "flyby", "LEO", 0.6, 45.0, "uniform", None),
    ("rendezvous-geo", "rendezvous", "GEO", 0.6, 240.0, "jitter",
     {"size": "large", "cooperative": True, "equipment": "robotic_arm", "lighting": "partial",
      "electromagnetic": "normal"}),
    ("random-geo", "random", "GEO", 1.0, 300.0, "jitter_gaps", None),
)
EXAMPLE_PATH = Path(__file__).resolve().parent / "examples" / "tracks_example.csv"


def example_records(seed: int = 0) -> list[dict[str, Any]]:
    """The example tracks, simulated (wide simulator, new manoeuvre styles, sensor noise); for each
    the first seeded draw whose observation the oracle reads as its class."""
    from data_prep import cw, wide
    from data_prep.oracle import relabel_motion
    from data_prep.sensor import SensorNoise, measure

    mix = wide.ManoeuvreMix(hovering_impulsive=1.0, approach_burns=1.0, rendezvous_burns=1.0, collision_burns=1.0,
                            retreat_setup=1.0, setup_drift=0.0, approach_swing=0.0)
    records = []
    for k, (tid, motion, orbit, orbits, cadence, sampling, context) in enumerate(EXAMPLE_TRACKS):
        period = 2 * math.pi / cw.orbit_mean_motion(orbit)
        settings = wide.TrackSettings(orbit, round(orbits * period, 1), cadence, sampling)
        for attempt in range(50):
            rng = np.random.default_rng([seed, k, attempt])
            sim = wide.make_sim(settings, 1e-6, rng)
            states = wide.generate(motion, sim, 1, 1, mix)[0]
            idx = wide.sample_indices(rng, settings)
            m = measure(states[None, idx], rng, SensorNoise())
            t = np.arange(sim.n_steps + 1)[idx] * sim.dt
            obs = _observation(t, m["range_m"][0], m["range_rate_mps"][0], m["az_deg"][0], m["el_deg"][0], orbit)
            if relabel_motion(compute_features(obs)) == motion:
                break
        ctx = {"orbit": orbit, **(context or dict.fromkeys(CONTEXT_FIELDS, "unknown"))}
        labels = rules.intents(ctx, motion) if context else {"motion": motion, "operation": None, "task": None}
        records.append({"sample_id": tid, "context": ctx, "labels": labels, "observation": obs})
    return records


if __name__ == "__main__":
    print(write_tracks_csv(EXAMPLE_PATH, example_records()))

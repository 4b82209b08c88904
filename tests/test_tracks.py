"""Track files in (CSV, JSONL, NPZ; sensor or LVLH form; any units), records out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from data_prep import cw
from data_prep.features import FEATURE_KEYS, TRACK_FEATURE_KEYS, compute_features
from data_prep.oracle import relabel_motion
from data_prep.tracks import (EXAMPLE_PATH, EXAMPLE_TRACKS, example_records, observation_from_states, read_tracks,
                              write_tracks_csv)
from pipeline.core.io import DataError

N = cw.LEO_MEAN_MOTION


def test_shipped_example_reads_and_relabels():
    from prompts_cot.render import RenderOptions, render_prompt

    recs = read_tracks(EXAMPLE_PATH)
    assert [r["sample_id"] for r in recs] == [f"tracks_example-{t[0]}" for t in EXAMPLE_TRACKS]
    cadences = set()
    for rec, (_, motion, orbit, *_rest, context) in zip(recs, EXAMPLE_TRACKS):
        f = rec["features"]
        assert tuple(f) == FEATURE_KEYS + TRACK_FEATURE_KEYS and f["orbit"] == orbit == rec["context"]["orbit"]
        assert rec["labels"]["motion"] == motion == relabel_motion(f)
        assert compute_features(rec["observation"]) == f
        assert rec["context"]["size"] == (context["size"] if context else "unknown")
        cadences.add(round(f["cadence_s"]))
        assert "Orbital motion" in render_prompt(rec, RenderOptions(prompt_type="cot"))
    assert len(cadences) == len(EXAMPLE_TRACKS)


def test_example_file_is_reproducible(tmp_path):
    out = write_tracks_csv(tmp_path / "ex.csv", example_records())
    assert out.read_bytes() == EXAMPLE_PATH.read_bytes()


def _track(n: int = 40, seed: int = 0):
    """Times (uneven, one gap) and LVLH states of a natural fly-around."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(np.r_[0.0, rng.uniform(20.0, 40.0, n - 1)])
    t[n // 2:] += 600.0
    s0 = np.array([1200.0, 300.0, 100.0, 0.0, -2 * N * 1200.0, 0.0])
    return t, np.einsum("tij,j->ti", cw.stm(N, t), s0)


def _sensor_rows(t, obs, units):
    """Rows in units: (time factor, distance factor, angle factor, speed factor)."""
    ft, fd, fa, fv = units
    return [(t[i] / ft, obs["range_m"][i] / fd, obs["az_deg"][i] / fa, obs["el_deg"][i] / fa,
             obs["range_rate_mps"][i] / fv) for i in range(len(t))]


def _write_csv(path: Path, header: list[str], rows: list, prefix: str = "") -> Path:
    text = prefix + ",".join(header) + "\n" + "".join(
        ",".join(repr(float(c)) if isinstance(c, (float, np.floating)) else str(c) for c in row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def test_units_are_read_from_the_column_names_or_a_declaration(tmp_path):
    t, st = _track()
    obs = observation_from_states(t, st)
    si = _write_csv(tmp_path / "si.csv", ["t_s", "range_m", "az_deg", "el_deg", "range_rate_mps"],
                    _sensor_rows(t, obs, (1, 1, 1, 1)))
    other = _write_csv(tmp_path / "other.csv", ["t_min", "range_km", "az_rad", "el_rad", "range_rate_kmps"],
                       _sensor_rows(t, obs, (60, 1000, 180 / math.pi, 1000)))
    bare = _write_csv(tmp_path / "bare.csv", ["t", "range", "az", "el", "range_rate"],
                      _sensor_rows(t, obs, (1, 1000, 1, 1)), prefix="# units: distance=km time=s angle=deg speed=m/s\n")
    a, b, c = (read_tracks(p)[0] for p in (si, other, bare))
    for rec in (a, b, c):
        assert rec["sample_id"].endswith("-0") and rec["context"]["orbit"] == "LEO" and rec["labels"] is None
        for key in ("t_s", "range_m", "range_rate_mps", "az_deg", "el_deg"):
            np.testing.assert_allclose(rec["observation"][key], obs[key], atol=2e-3)
    assert a["features"]["n_samples"] == 40 and a["features"]["max_gap_s"] > 600
    assert relabel_motion(a["features"]) == relabel_motion(b["features"]) == relabel_motion(c["features"])
    # The argument overrides the file's declaration.
    d = read_tracks(bare, units={"distance": "m"})[0]
    assert d["observation"]["range_m"][0] == pytest.approx(obs["range_m"][0] / 1000, abs=0.01)


def test_lvlh_form_in_csv_jsonl_and_npz(tmp_path):
    t, st = _track()
    names = ["t_s", "x_km", "y_km", "z_km", "vx_mps", "vy_mps", "vz_mps"]
    rows = [[t[i], *(st[i, :3] / 1000), *st[i, 3:]] for i in range(len(t))]
    csv_rec = read_tracks(_write_csv(tmp_path / "a.csv", ["track_id", "orbit", *names],
                                     [["sat-7", "LEO", *r] for r in rows]))
    (tmp_path / "a.jsonl").write_text(json.dumps(
        {"track_id": "sat-7", "orbit": "LEO", **{n: [r[j] for r in rows] for j, n in enumerate(names)}}) + "\n")
    jsonl_rec = read_tracks(tmp_path / "a.jsonl")
    np.savez(tmp_path / "a.npz", track_id=np.array(["sat-7"] * len(t)),
             **{n: np.array([r[j] for r in rows]) for j, n in enumerate(names)})
    npz_rec = read_tracks(tmp_path / "a.npz")
    want = observation_from_states(t, st)
    for recs in (csv_rec, jsonl_rec, npz_rec):
        assert len(recs) == 1 and recs[0]["sample_id"].endswith("-sat-7")
        for key in want:
            if key != "orbit":
                np.testing.assert_allclose(recs[0]["observation"][key], want[key], atol=1e-6)
    assert csv_rec[0]["features"] == jsonl_rec[0]["features"] == npz_rec[0]["features"]


def test_tracks_context_labels_and_orbit(tmp_path):
    t, st = _track()
    obs = observation_from_states(t, st)
    rows = []
    for tid, ctx in (("a", ["small", "yes", "Camera", "eclipse", "normal", "GEO", "fly-around", "", ""]),
                     ("b", ["", "", "", "", "", "", "", "", ""])):
        rows += [[tid, *r, *ctx] for r in _sensor_rows(t, obs, (1, 1, 1, 1))]
    path = _write_csv(tmp_path / "ctx.csv", ["track_id", "t_s", "range_m", "az_deg", "el_deg", "range_rate_mps",
                                             "size", "cooperative", "equipment", "lighting", "electromagnetic",
                                             "orbit", "motion", "operation", "task"], rows)
    a, b = read_tracks(path, orbit="LEO", source="mine")
    assert a["sample_id"] == "mine-a" and a["context"] == {"orbit": "GEO", "size": "small", "cooperative": True,
                                                           "equipment": "camera", "lighting": "eclipse",
                                                           "electromagnetic": "normal"}
    assert a["labels"] == {"motion": "fly_around", "operation": None, "task": None}
    assert a["observation"]["orbit"] == a["features"]["orbit"] == "GEO"
    assert b["labels"] is None and b["context"]["orbit"] == "LEO" and b["context"]["cooperative"] == "unknown"


GOOD = ["track_id,t_s,range_m,az_deg,el_deg,range_rate_mps,size"] + [
    f"a,{60 * i},{5000 - 10 * i},10.0,1.0,-0.2,small" for i in range(6)]


def _bad(lines: list[str], line: int, cell: int, value: str) -> list[str]:
    out = list(lines)
    cells = out[line - 1].split(",")
    cells[cell] = value
    out[line - 1] = ",".join(cells)
    return out


@pytest.mark.parametrize("lines, line, field, message", [
    (_bad(GOOD, 3, 2, "far"), 3, "range_m", "not a number"),
    (_bad(GOOD, 4, 3, "nan"), 4, "az_deg", "not finite"),
    (_bad(GOOD, 5, 5, "inf"), 5, "range_rate_mps", "not finite"),
    (_bad(GOOD, 5, 1, "60"), 5, "t_s", "time does not increase"),
    (_bad(GOOD, 6, 6, "huge"), 6, "size", "unknown value"),
    (_bad(GOOD, 6, 6, "large"), 6, "size", "differs within the track"),
    (_bad(GOOD, 4, 4, "95"), 4, "el_deg", "out of range"),
    (_bad(GOOD, 3, 0, ""), 3, "track_id", "missing track id"),
    ([GOOD[0].replace("az_deg", "azimuth")] + GOOD[1:], 1, "az", "missing column"),
    ([GOOD[0].replace("range_m", "range_mi")] + GOOD[1:], 1, "range", "missing column"),
    ([GOOD[0].replace("range_m", "range")] + GOOD[1:], 1, "range", "has no unit"),
    (GOOD[:4], 2, "t_s", "need at least 5"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, lines, line, field, message):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    read_tracks(tmp_path.joinpath("good.csv").write_text("\n".join(GOOD) + "\n") and tmp_path / "good.csv")
    with pytest.raises(DataError, match=message) as err:
        read_tracks(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)


def test_bad_jsonl_npz_and_units(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"t_s": [0, 1, 2, 3, 4], "range_m": [1, 2, 3, 4], "az_deg": 0, "el_deg": 0, "range_rate_mps": 0}\n')
    with pytest.raises(DataError, match="differ in length") as err:
        read_tracks(p)
    assert err.value.line == 1
    p.write_text('{"units": {"distance": "miles"}}\n{"t": 0}\n')
    with pytest.raises(DataError, match="unknown unit") as err:
        read_tracks(p)
    assert err.value.field == "units"
    np.savez(tmp_path / "b.npz", t_s=np.zeros((2, 3)))
    with pytest.raises(DataError, match="1-D") as err:
        read_tracks(tmp_path / "b.npz")
    assert err.value.field == "t_s"
    with pytest.raises(DataError, match="format"):
        read_tracks(tmp_path.joinpath("c.txt").write_text("x") and tmp_path / "c.txt")
    q = tmp_path / "lab.csv"
    q.write_text("\n".join([GOOD[0] + ",motion", GOOD[1] + ",teleport"] + [g + "," for g in GOOD[2:]]) + "\n")
    with pytest.raises(DataError, match="unknown motion label") as err:
        read_tracks(q)
    assert (err.value.line, err.value.field) == (2, "motion")

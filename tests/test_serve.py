"""``python -m pipeline serve`` through a real HTTP client (urllib) on 127.0.0.1, a tiny model, every input form."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.classify import TrackClassifier, classify_tracks
from pipeline.serve import Service, make_server

ROOT = Path(__file__).resolve().parent.parent
TRACKS = ROOT / "data_prep" / "examples" / "tracks_example.csv"
RENDER = {"prompt_type": "compact"}


@pytest.fixture(scope="module")
def server():
    torch.set_num_threads(1)
    clf = TrackClassifier("tiny:llama", render=RENDER, batch_size=4, max_new_tokens=8)
    srv = make_server(Service(clf, max_items=8, max_new_tokens=8), "127.0.0.1", 0, max_bytes=200_000)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def call(url: str, body=None, method: str | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_names_the_loaded_model(server):
    status, body = call(server + "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "tiny:llama" and body["mode"] == "score"


def test_a_track_file_gives_the_classify_rows(server):
    status, body = call(server + "/classify", {"tracks": TRACKS.read_text(), "format": "csv"})
    assert status == 200 and body["mode"] == "score"
    want = classify_tracks(TRACKS, model="tiny:llama", render=RENDER, batch_size=4)
    assert [r["track_id"] for r in body["rows"]] == [r["track_id"] for r in want]
    for got, ref in zip(body["rows"], want):
        assert got["motion"] == ref["motion"]
        for level in ("motion", "operation", "task"):
            assert got["probs"][level] == pytest.approx(ref["probs"][level], abs=1e-6)


def test_records_npz_prompts_and_generate_mode(server, tmp_path):
    from data_prep.tracks import read_tracks

    records = json.loads(json.dumps(read_tracks(TRACKS)[:2], default=lambda o: o.tolist()))  # numpy -> JSON
    status, body = call(server + "/classify", {"records": records})
    assert status == 200 and len(body["rows"]) == 2
    rows = [ln.split(",") for ln in TRACKS.read_text().splitlines()]
    header, data = rows[0], [r for r in rows[1:] if r[0] == rows[1][0]]  # the first track, numbers as floats
    numeric = {"t_s", "range_km", "az_deg", "el_deg", "range_rate_mps"}
    np.savez(tmp_path / "t.npz", **{h: np.array([float(r[i]) if h in numeric else r[i] for r in data])
                                    for i, h in enumerate(header)})
    npz = base64.b64encode((tmp_path / "t.npz").read_bytes()).decode()
    status, body = call(server + "/classify", {"tracks": npz, "format": "npz"})
    assert status == 200 and body["rows"], body
    status, body = call(server + "/classify", {"prompts": ["Range falls then rises. Intent?"], "mode": "generate",
                                               "max_new_tokens": 4})
    assert status == 200 and body["mode"] == "generate" and isinstance(body["rows"][0]["output"], str)
    status, body = call(server + "/classify", {"prompts": ["Range falls then rises. Intent?"]})
    assert status == 200 and abs(sum(body["rows"][0]["probs"]["task"].values()) - 1) < 1e-6


@pytest.mark.parametrize("body, status, field", [
    ({"track": "x"}, 400, "track"),
    ({"tracks": 3}, 400, "tracks"),
    ({}, 400, "tracks/records/prompts"),
    ({"tracks": "a", "prompts": ["b"]}, 400, "tracks/records/prompts"),
    ({"prompts": ["x"], "mode": "fast"}, 400, "mode"),
    ({"prompts": ["x"], "max_new_tokens": 999}, 400, "max_new_tokens"),
    ({"prompts": ["x", ""]}, 400, "prompts[1]"),
    ({"prompts": ["x"] * 9}, 413, "prompts"),
    ({"tracks": "x", "format": "xml"}, 400, "format"),
    ({"records": [{"no": "features"}]}, 400, "records.features"),
    ([1, 2], 400, "body"),
])
def test_client_mistakes_are_4xx_naming_the_field(server, body, status, field):
    got, payload = call(server + "/classify", body)
    assert (got, payload["field"]) == (status, field), payload
    assert payload["error"]


def test_a_bad_track_line_is_named_like_the_classify_stage_names_it(server):
    lines = TRACKS.read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = "not-a-number"
    lines[2] = ",".join(cells)
    status, payload = call(server + "/classify", {"tracks": "\n".join(lines) + "\n"})
    assert status == 400 and payload["line"] == 3 and payload["field"].startswith("tracks.")
    assert "not-a-number" in payload["error"] or "number" in payload["error"]


def test_size_limits_paths_and_methods(server):
    status, payload = call(server + "/classify", raw=b"{" + b" " * 300_000 + b"}")
    assert (status, payload["field"]) == (413, "body")
    status, payload = call(server + "/classify", raw=b"{not json")
    assert (status, payload["field"]) == (400, "body")
    assert call(server + "/nope")[0] == 404
    assert call(server + "/classify", {"prompts": ["x"]}, method="PUT")[0] == 405


def test_the_serve_command_starts_and_answers(tmp_path):
    """``python -m pipeline serve`` as a user starts it; a bad checkpoint is an exit-2 error line."""
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--model", "tiny:llama", "--port", "0",
                             "--render", json.dumps(RENDER)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        status, body = call(url + "/health")
        assert status == 200 and body["model"] == "tiny:llama"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    done = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--model", "tiny:llama", "--train-dir",
                           str(tmp_path), "--checkpoint", "nope"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr

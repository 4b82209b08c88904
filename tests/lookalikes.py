"""Look-alike relative-motion tracks, simulated independently of ``data_prep`` (tests and bench only).

Nothing here imports the project's simulator, CW module or sensor model: the Clohessy–Wiltshire
solution is written out component by component from the closed form in REFERENCE.md, targeting
solves for the departure velocity column by column, and the sensor has its own noise model. The
tracks go through the project's own reader (:func:`data_prep.tracks.read_tracks`, the path of
``classify``) as user files would.

Families (the motion class each one is):

``approach_swing`` (approach)
    A two-impulse transfer of 0.55-0.9 orbits from 3-12 km out (off the V-bar by up to ±40 %
    radially) to a standoff point 0.4-2 km out, departed just before the window or inside its first
    5 %: the range **grows first** (the transfer swings out), then closes in; the window ends
    0.75-0.97 of the way to the standoff, so the target is still closing and moving.
``retreat_setup`` (retreat)
    The target holds on the V-bar 2-8 km out (a natural equilibrium), the window **starts with the
    set-up burn** (in its first 8 %) that puts it on a collision course (impact due 0.3-0.55 orbits
    later), the evasive burn comes at 55-80 % of the way in (reverse x1.3-2.2 plus a deflection),
    then the target drifts away, coasting, to the end of the window.

Only tracks whose true range history is what the family says are kept (the draw is repeated
otherwise): swing-outs rise by >= 5 % before closing and end within 1 % of their true minimum at
<= 0.7 x the start range; retreats close by >= 20 % (after the set-up burn only closing, once past
the top of any swing-out), are closest at the evasive burn and then only open, to >= 1.5 x the
minimum.

Observation forms: ``lvlh`` (exact states, noise-free: the reader turns them into the sensor form)
and ``sensor`` (range, azimuth, elevation, range-rate) with this module's noise model: range noise
0.2-0.6 % of range plus a constant scale bias of up to ±0.2 %, angle noise that is correlated in time
(AR(1), correlation 0.7, 0.01-0.03 deg) plus a fixed mounting bias, and heavy-tailed range-rate noise
(Student t, 4 degrees of freedom, scale 1-4 mm/s).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

MU = 3.986004418e14
R_EARTH = 6_378_137.0
ALTITUDE_M = {"LEO": 400e3, "GEO": 35_786e3}
FAMILIES: dict[str, str] = {"approach_swing": "approach", "retreat_setup": "retreat"}
FORMS: tuple[str, ...] = ("lvlh", "sensor")


def mean_motion(orbit: str) -> float:
    """n = sqrt(mu / a^3), rad/s."""
    return math.sqrt(MU / (R_EARTH + ALTITUDE_M[orbit]) ** 3)


def coast(state: np.ndarray, n: float, t: np.ndarray) -> np.ndarray:
    """CW states (T, 6) at times t (T,) (s, may be negative) after ``state`` (6,), written out by component."""
    x0, y0, z0, vx0, vy0, vz0 = (float(v) for v in state)
    nt = n * np.asarray(t, dtype=float)
    s, c = np.sin(nt), np.cos(nt)
    x = (4 - 3 * c) * x0 + s / n * vx0 + 2 * (1 - c) / n * vy0
    y = 6 * (s - nt) * x0 + y0 + 2 * (c - 1) / n * vx0 + (4 * s - 3 * nt) / n * vy0
    z = c * z0 + s / n * vz0
    vx = 3 * n * s * x0 + c * vx0 + 2 * s * vy0
    vy = 6 * n * (c - 1) * x0 - 2 * s * vx0 + (4 * c - 3) * vy0
    vz = -n * s * z0 + c * vz0
    return np.stack([x, y, z, vx, vy, vz], axis=-1)


def departure_velocity(r0: np.ndarray, rf: np.ndarray, n: float, tau: float) -> np.ndarray:
    """Velocity (3,) at r0 that coasts to rf in tau seconds: the position after tau is linear in the
    velocity, so its matrix is read off column by column from coasts with unit velocities."""
    base = coast(np.r_[r0, 0.0, 0.0, 0.0], n, np.array([tau]))[0, :3]
    cols = [coast(np.r_[0.0, 0.0, 0.0, e], n, np.array([tau]))[0, :3] for e in np.eye(3)]
    return np.linalg.solve(np.stack(cols, axis=1), np.asarray(rf, dtype=float) - base)


def fly(state0: np.ndarray, n: float, t: np.ndarray, burns: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """States (T, 6) at times t (T,) from state0 at t = 0 with impulses [(time, dv (3,))] (sorted)."""
    out = np.empty((len(t), 6))
    state, t_prev = np.asarray(state0, dtype=float), 0.0
    edges = [tb for tb, _ in burns] + [math.inf]
    for j, t_next in enumerate(edges):
        seg = (t >= t_prev) & (t < t_next) if j else (t < t_next)
        if seg.any():
            out[seg] = coast(state, n, t[seg] - t_prev)
        if t_next == math.inf:
            break
        state = coast(state, n, np.array([t_next - t_prev]))[0]
        state[3:] += burns[j][1]
        t_prev = t_next
    return out


def _times(rng: np.random.Generator, window: float, period: float) -> np.ndarray:
    """Sample times: a cadence of 0.3-1.2 % of an orbit with +-20 % jitter, 0 .. window."""
    cadence = rng.uniform(0.003, 0.012) * period
    m = int(window / cadence)
    t = (np.arange(m + 1) + rng.uniform(-0.2, 0.2, m + 1)) * cadence
    t[0], t[-1] = 0.0, window
    return np.sort(t)


def _range(states: np.ndarray) -> np.ndarray:
    return np.linalg.norm(states[:, :3], axis=1)


def draw_approach_swing(rng: np.random.Generator, orbit: str) -> tuple[np.ndarray, np.ndarray]:
    """(times (T,), states (T, 6)) of one swing-out approach (see the module docstring)."""
    n = mean_motion(orbit)
    period = 2 * math.pi / n
    while True:
        rho = math.exp(rng.uniform(math.log(3000.0), math.log(12_000.0)))
        d = np.array([rng.uniform(-0.4, 0.4), rng.choice([-1.0, 1.0]), rng.uniform(-0.1, 0.1)])
        r_dep = d / np.linalg.norm(d) * rho
        standoff = np.array([rng.uniform(-0.05, 0.05), np.sign(d[1]), 0.0])
        standoff *= rng.uniform(400.0, 2000.0) / np.linalg.norm(standoff)
        tau = rng.uniform(0.55, 0.9) * period
        v_dep = departure_velocity(r_dep, standoff, n, tau)
        t_start = rng.uniform(-0.05, 0.05) * tau  # departure just before or just inside the window
        window = rng.uniform(0.75, 0.97) * tau - t_start
        t = _times(rng, window, period)
        states = coast(np.r_[r_dep, v_dep], n, t - t_start)
        states[t < t_start] = np.r_[r_dep, 0.0, 0.0, 0.0]  # held there (by thrust) until it departs
        r = _range(states)
        k = int(np.argmin(r))
        if (r[: k + 1].max() >= 1.05 * r[0] and r[-1] <= 0.7 * r[0] and r[-1] <= 1.01 * r.min()
                and r.min() > 300.0 and np.linalg.norm(states[-1, 3:]) > 0.1 * n / mean_motion("LEO")):
            return t, states


def draw_retreat_setup(rng: np.random.Generator, orbit: str) -> tuple[np.ndarray, np.ndarray]:
    """(times (T,), states (T, 6)) of one retreat whose window starts with its set-up burn."""
    n = mean_motion(orbit)
    period = 2 * math.pi / n
    while True:
        d = np.array([rng.uniform(-0.4, 0.4), rng.choice([-1.0, 1.0]), rng.uniform(-0.1, 0.1)])
        r_b = d / np.linalg.norm(d) * math.exp(rng.uniform(math.log(2000.0), math.log(8000.0)))
        hit = rng.standard_normal(3)
        hit *= rng.uniform(0.0, 25.0) / np.linalg.norm(hit)
        tau = rng.uniform(0.3, 0.75) * period
        t_b = rng.uniform(0.0, 0.08) * tau
        v_c = departure_velocity(r_b, hit, n, tau)
        # Before the set-up burn the target drifts (0-80 % of the collision-course speed, any direction).
        v_pre = rng.standard_normal(3)
        v_pre *= rng.uniform(0.0, 0.8) * np.linalg.norm(v_c) / np.linalg.norm(v_pre)
        start = coast(np.r_[r_b, v_pre], n, np.array([-t_b]))[0]
        t_ev = t_b + rng.uniform(0.55, 0.8) * tau
        # The evasive burn reverses the approach velocity and deflects it.
        v_at = coast(np.r_[r_b, v_c], n, np.array([t_ev - t_b]))[0, 3:]
        side = rng.standard_normal(3)
        side -= side @ v_at / (v_at @ v_at) * v_at
        dv_ev = (-rng.uniform(1.3, 2.2) * v_at
                 + rng.uniform(0.2, 0.5) * np.linalg.norm(v_at) * side / np.linalg.norm(side))
        window = t_ev + rng.uniform(0.25, 0.5) * period
        t = _times(rng, window, period)
        states = fly(start, n, t, [(t_b, v_c - v_pre), (t_ev, dv_ev)])
        r = _range(states)
        k = int(np.argmin(r))
        after = r[k:]
        top = int(np.argmax(np.where(t >= t_b, r, -1.0)[:k + 1]))  # the set-up course's swing-out top
        closing = r[top:k + 1]
        if (np.all(closing <= 1.02 * np.minimum.accumulate(closing)) and r[k] <= 0.8 * r[0] and r[-1] >= 1.5 * r[k] and np.all(after >= 0.98 * np.maximum.accumulate(after))
                and r[k] > 100.0 and abs(t[k] - t_ev) <= 0.02 * period):  # closest at the evasive burn
            return t, states


DRAW = {"approach_swing": draw_approach_swing, "retreat_setup": draw_retreat_setup}


def sensor_observation(rng: np.random.Generator, t: np.ndarray, states: np.ndarray) -> dict[str, list[float]]:
    """Range (m), azimuth/elevation (deg), range-rate (m/s) with this module's noise model."""
    pos, vel = states[:, :3], states[:, 3:]
    r = np.linalg.norm(pos, axis=1)
    rdot = np.sum(pos * vel, axis=1) / r
    az = np.degrees(np.arctan2(pos[:, 0], pos[:, 1]))  # from +y (along-track) towards +x (radial)
    el = np.degrees(np.arcsin(pos[:, 2] / r))
    m = len(t)
    r_noisy = r * (1.0 + rng.uniform(-0.002, 0.002)) + rng.uniform(0.002, 0.006) * r * rng.standard_normal(m)
    sigma_ang = rng.uniform(0.01, 0.03)
    ang = np.empty((m, 2))
    ang[0] = rng.standard_normal(2)
    for k in range(1, m):  # AR(1): 0.7 correlation between consecutive samples, unit variance
        ang[k] = 0.7 * ang[k - 1] + math.sqrt(1 - 0.49) * rng.standard_normal(2)
    bias = rng.uniform(-0.01, 0.01, 2)
    rd_noisy = rdot + rng.uniform(0.001, 0.004) * rng.standard_t(4, m)
    return {"t_s": t.tolist(), "range_m": np.abs(r_noisy).tolist(),
            "az_deg": (az + sigma_ang * ang[:, 0] + bias[0]).tolist(),
            "el_deg": (el + sigma_ang * ang[:, 1] + bias[1]).tolist(), "range_rate_mps": rd_noisy.tolist()}


def track_row(track_id: str, family: str, form: str, orbit: str, t: np.ndarray, states: np.ndarray,
              rng: np.random.Generator) -> dict[str, Any]:
    """One JSONL track line (list values) in ``form``, labelled with the family's class."""
    row: dict[str, Any] = {"track_id": track_id, "orbit": orbit, "motion": FAMILIES[family]}
    if form == "lvlh":
        row["t_s"] = t.tolist()
        for j, name in enumerate(("x_m", "y_m", "z_m", "vx_mps", "vy_mps", "vz_mps")):
            row[name] = states[:, j].tolist()
    else:
        row.update(sensor_observation(rng, t, states))
    return row


def write_family(path: str | Path, family: str, form: str, count: int, seed: int,
                 orbits: tuple[str, ...] = ("LEO", "GEO")) -> Path:
    """A JSONL track file of ``count`` tracks of one family in one form (orbits alternate)."""
    rng = np.random.default_rng([seed, list(FAMILIES).index(family), FORMS.index(form)])
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            orbit = orbits[i % len(orbits)]
            t, states = DRAW[family](rng, orbit)
            fh.write(json.dumps(track_row(f"{family}-{form}-{i}", family, form, orbit, t, states, rng)) + "\n")
    return path

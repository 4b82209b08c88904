"""Trajectory features derived *only* from a sensor observation.

:func:`compute_features` is a pure function of the observation dict (range, azimuth,
elevation and range-rate samples), so evaluation can perturb an observation and recompute
the features and the physics label. Angle convention (shared with :mod:`data_prep.sensor`):
azimuth is measured in the orbital (x-y) plane from the along-track axis +y towards the
radial axis +x, elevation out of that plane towards +z (cross-track)::

    x = r cos(el) sin(az),   y = r cos(el) cos(az),   z = r sin(el)

Velocities are reconstructed as ``v = rdot * u + r * du/dt`` (u = line-of-sight unit
vector): the radial part comes from the precise range-rate, the transverse part from a
Savitzky–Golay derivative of the line of sight. Burns are found as velocity jumps that the
Clohessy–Wiltshire dynamics do not explain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import savgol_filter

from data_prep.cw import LEO_MEAN_MOTION, stm
from data_prep.labelling import DEFAULT_THRESHOLDS, Thresholds

#: Feature keys, in contract order.
FEATURE_KEYS: tuple[str, ...] = (
    "initial_range_m", "min_range_m", "t_min_range_s", "final_range_m", "final_speed_mps",
    "mean_range_rate_mps", "extent_m", "max_dv_mps", "n_burns", "entered_keepout", "range_trend",
)
#: Values of ``range_trend``.
RANGE_TRENDS: tuple[str, ...] = (
    "constant", "decreasing", "increasing", "decreasing_then_increasing", "increasing_then_decreasing",
)
#: Savitzky–Golay smoothing window (samples, odd) and polynomial order.
SMOOTH_WINDOW = 7
SMOOTH_ORDER = 3
#: A range change below this fraction of the mean range is "constant" in ``range_trend``.
TREND_CONSTANT_FRAC = 0.05
#: Minimum relative dip/bump for a two-phase ``range_trend``.
TREND_TURN_FRAC = 0.1
#: Final speed = norm of the mean velocity over this many last samples.
FINAL_SPEED_SAMPLES = 3
#: Steps at either end of the window that cannot seed a burn (smoother edge effects).
EDGE_STEPS = 2
OBS_KEYS: tuple[str, ...] = ("t_s", "range_m", "range_rate_mps", "az_deg", "el_deg")


def line_of_sight(az_deg: np.ndarray, el_deg: np.ndarray) -> np.ndarray:
    """Unit line-of-sight vectors (..., 3) in LVLH from azimuth/elevation (...) in degrees."""
    az, el = np.radians(az_deg), np.radians(el_deg)
    return np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)], axis=-1)


def _smooth(y: np.ndarray, t: np.ndarray, deriv: int = 0) -> np.ndarray:
    """Savitzky–Golay smoothing (or derivative, per second) along axis 1 of y (N, T, ...).

    Falls back to plain finite differences for observations shorter than 3 samples and
    assumes a near-uniform cadence (the median step of t (T,) is used as the spacing).
    """
    n = len(t)
    window = min(SMOOTH_WINDOW, n if n % 2 == 1 else n - 1)
    if window < 3:
        if deriv == 0:
            return y.copy()
        return np.gradient(y, t, axis=1) if n > 1 else np.zeros_like(y)
    dt = float(np.median(np.diff(t)))
    order = min(SMOOTH_ORDER, window - 1)
    return savgol_filter(y, window, order, deriv=deriv, delta=dt, axis=1, mode="interp")


def reconstruct_tracks(
    t: np.ndarray, r: np.ndarray, rdot: np.ndarray, az_deg: np.ndarray, el_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed positions and velocities (N, T, 3) from measurements (N, T) on a shared grid t (T,)."""
    u = line_of_sight(az_deg, el_deg)  # (N, T, 3)
    r_s = np.maximum(_smooth(r, t), 0.0)
    # Smooth the unit vector components (not the angles) so azimuth wrap-around is harmless.
    u_s = _smooth(u, t)
    u_s /= np.maximum(np.linalg.norm(u_s, axis=-1, keepdims=True), 1e-12)
    du = _smooth(u, t, deriv=1)
    du -= np.sum(du * u_s, axis=-1, keepdims=True) * u_s  # d(unit)/dt is orthogonal to u
    pos = r_s[..., None] * u_s
    # The range-rate is precise (mm/s) and smoothing would bias it on curved tracks: use it raw.
    vel = rdot[..., None] * u_s + r_s[..., None] * du
    return pos, vel


def observation_arrays(observation: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """(t (T,), range, range_rate, az, el (1, T) each) from an observation dict, validated."""
    arrays = [np.asarray(observation[k], dtype=float) for k in OBS_KEYS]
    lengths = [a.shape for a in arrays]
    if any(a.ndim != 1 for a in arrays) or len({a.shape[0] for a in arrays}) != 1 or arrays[0].shape[0] < 2:
        raise ValueError(f"observation arrays {OBS_KEYS} must be 1-D, of equal length >= 2; got shapes {lengths}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("observation contains non-finite values")
    t = arrays[0]
    return (t,) + tuple(a[None, :] for a in arrays[1:])


def detect_burns(
    t: np.ndarray, pos: np.ndarray, vel: np.ndarray, n: float, threshold: float, per_km: float = 0.0
) -> list[float]:
    """Delta-v magnitudes of the impulsive burns in a reconstructed track pos, vel (T, 3).

    Residual per step k: ``v[k+1] - (Phi_vr(dt) r[k] + Phi_vv(dt) v[k])`` (T-1, 3). A step is
    a burn candidate when its residual exceeds ``threshold + per_km * range_km`` (velocity
    noise grows with range through the angle noise). Smoothing spreads a jump over a few
    steps, so nearby candidates (and half a smoothing window either side) are summed as
    vectors into one burn, kept if the sum exceeds the threshold.
    """
    if len(t) < 2:
        return []
    phi = stm(n, np.diff(t))  # (T-1, 6, 6)
    state = np.concatenate([pos[:-1], vel[:-1]], axis=1)
    pred = np.einsum("kij,kj->ki", phi[:, 3:, :], state)
    res = vel[1:] - pred
    limit = threshold + per_km * np.linalg.norm(pos[1:], axis=1) / 1000.0
    mag = np.linalg.norm(res, axis=1) / limit
    half = SMOOTH_WINDOW // 2
    # The smoother extrapolates over the first/last half window, so residuals there are
    # biased on fast, curved tracks; burns are only seeded from interior steps.
    mag[:EDGE_STEPS] = 0.0
    mag[max(len(mag) - EDGE_STEPS, 0):] = 0.0
    above = np.flatnonzero(mag > 1.0)
    if above.size == 0:
        return []
    groups: list[list[int]] = [[int(above[0])]]
    for k in above[1:]:
        if k - groups[-1][-1] <= half:
            groups[-1].append(int(k))
        else:
            groups.append([int(k)])
    burns = []
    for g in groups:
        lo, hi = max(g[0] - half, 0), min(g[-1] + half + 1, len(res))
        dv = float(np.linalg.norm(res[lo:hi].sum(axis=0)))
        if dv > float(limit[lo:hi].max()):
            burns.append(dv)
    return burns


def range_trend(r: np.ndarray) -> str:
    """Qualitative shape of a (smoothed) range history r (T,); one of :data:`RANGE_TRENDS`."""
    mean = max(float(np.mean(r)), 1e-9)
    r0, rf, rmin, rmax = float(r[0]), float(r[-1]), float(np.min(r)), float(np.max(r))
    if (rmax - rmin) / mean < TREND_CONSTANT_FRAC:
        return "constant"
    dip = min(r0, rf) - rmin
    bump = rmax - max(r0, rf)
    if dip / mean >= TREND_TURN_FRAC and dip >= bump:
        return "decreasing_then_increasing"
    if bump / mean >= TREND_TURN_FRAC:
        return "increasing_then_decreasing"
    return "decreasing" if rf < r0 else "increasing"


def features_batch(
    t: np.ndarray,
    r: np.ndarray,
    rdot: np.ndarray,
    az_deg: np.ndarray,
    el_deg: np.ndarray,
    mean_motion_radps: float | None = None,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> list[dict[str, Any]]:
    """Features of N observations on a shared time grid.

    Args:
        t: (T,) sample times, s.
        r, rdot, az_deg, el_deg: (N, T) range (m), range-rate (m/s), azimuth and elevation (deg).
        mean_motion_radps: orbit mean motion for the burn detector; default LEO (400 km).
        th: thresholds (``keepout_radius_m``, ``burn_dv_mps``, ``burn_dv_per_km`` are used here).

    Returns:
        N dicts with exactly :data:`FEATURE_KEYS` (plain Python types, rounded).
    """
    n = LEO_MEAN_MOTION if mean_motion_radps is None else float(mean_motion_radps)
    pos, vel = reconstruct_tracks(t, r, rdot, az_deg, el_deg)
    rng = np.linalg.norm(pos, axis=-1)  # (N, T)
    k_min = np.argmin(rng, axis=1)
    rows = np.arange(len(rng))
    r_min = rng[rows, k_min]
    # Mean of the last FINAL_SPEED_SAMPLES velocities: the smoother's derivative is noisiest at the edge.
    speed_f = np.linalg.norm(vel[:, -FINAL_SPEED_SAMPLES:].mean(axis=1), axis=-1)
    extent = np.ptp(pos, axis=1)
    mean_rdot = np.mean(rdot, axis=1)
    out = []
    for i in range(len(rng)):
        burns = detect_burns(t, pos[i], vel[i], n, th.burn_dv_mps, th.burn_dv_per_km)
        out.append({
            "initial_range_m": round(float(rng[i, 0]), 2),
            "min_range_m": round(float(r_min[i]), 2),
            "t_min_range_s": round(float(t[k_min[i]] - t[0]), 1),
            "final_range_m": round(float(rng[i, -1]), 2),
            "final_speed_mps": round(float(speed_f[i]), 4),
            "mean_range_rate_mps": round(float(mean_rdot[i]), 4),
            "extent_m": [round(float(e), 2) for e in extent[i]],
            "max_dv_mps": round(max(burns, default=0.0), 4),
            "n_burns": len(burns),
            "entered_keepout": bool(r_min[i] < th.keepout_radius_m),
            "range_trend": range_trend(rng[i]),
        })
    return out


def compute_features(
    observation: dict[str, Any],
    mean_motion_radps: float | None = None,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Features of the contract (docs/CONTRACT.md) from one observation dict.

    Args:
        observation: ``{"t_s", "range_m", "range_rate_mps", "az_deg", "el_deg"}`` lists of
            equal length T >= 2 (seconds, metres, m/s, degrees); other keys are ignored.
        mean_motion_radps: orbit mean motion for the burn detector; default LEO (400 km).
        th: thresholds (``keepout_radius_m``, ``burn_dv_mps``, ``burn_dv_per_km`` are used here).

    Returns:
        dict with exactly :data:`FEATURE_KEYS`. Raises ValueError on malformed input.
    """
    t, r, rdot, az, el = observation_arrays(observation)
    return features_batch(t, r, rdot, az, el, mean_motion_radps, th)[0]

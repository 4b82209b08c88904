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

import dataclasses
from typing import Any

import numpy as np
from scipy.signal import savgol_filter

from data_prep.cw import LEO_MEAN_MOTION, ORBIT_ALTITUDE_M, orbit_mean_motion, stm
from data_prep.oracle import DEFAULT_THRESHOLDS, FIT_SPAN_STEPS, INITIAL_SWING, Thresholds, speed_scale

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
            equal length T >= 2 (seconds, metres, m/s, degrees); other keys are ignored, except
            ``"orbit"`` (``"LEO"``/``"GEO"``): an observation that names its orbit is a *track*
            and gets the track features (:func:`track_features`: any cadence, uneven or
            gapped times, the orbit's mean motion), the 11 classic keys plus
            :data:`TRACK_FEATURE_KEYS`. Without it the classic path (LEO, near-uniform cadence).
        mean_motion_radps: orbit mean motion for the burn detector; default LEO (400 km), or the
            observation's orbit.
        th: thresholds (``keepout_radius_m``, ``burn_dv_mps``, ``burn_dv_per_km`` are used here).

    Returns:
        dict with exactly :data:`FEATURE_KEYS` (classic) or ``FEATURE_KEYS + TRACK_FEATURE_KEYS``
        (tracks). Raises ValueError on malformed input.
    """
    if observation.get("orbit") is not None:
        return track_features(observation, mean_motion_radps, th)
    t, r, rdot, az, el = observation_arrays(observation)
    return features_batch(t, r, rdot, az, el, mean_motion_radps, th)[0]


# ------------------------------------------------------------------------------- track features
#: Extra keys of track features (observations that name their orbit), in contract order.
TRACK_FEATURE_KEYS: tuple[str, ...] = (
    "orbit", "window_s", "cadence_s", "n_samples", "max_gap_s", "analysis_step_s", "median_speed_mps",
    "continuous_accel_mps2", "drift_mps", "reopen_frac", "reclose_frac", "swing_frac",
    "reopen_after_first_burn_frac", "closest_span_s",
    "burns", "arcs",
)
#: The analysis grid is never finer than this in LEO (the classic cadence); in other orbits it
#: scales with 1 / mean motion (a GEO track is read on a ~930 s grid), so burns and velocities
#: are judged on the same orbit-relative time scale at any cadence.
ANALYSIS_STEP_LEO_S = 60.0
#: A time step longer than this many analysis steps splits the track into segments (a gap).
GAP_STEPS = 2.5
#: Segments with fewer samples than this are ignored (too short to fit).
MIN_SEGMENT_SAMPLES = 5
#: The closest approach "lasts" while the range is within this fraction of its minimum.
CLOSEST_BAND = 0.03
#: A velocity jump is a burn candidate above this many sigmas of its estimation noise ...
BURN_SIGMAS = 6.0
#: ... and above this fraction of the speed (a burn changes the motion; smaller jumps on fast
#: tracks are what the local fits cannot follow).
BURN_SPEED_FRAC = 0.05
#: At most this many burns are read from one track (station-keeping can make hundreds).
MAX_BURNS = 60


def analysis_step(cadence_s: float, mean_motion: float) -> float:
    """Step (s) of the analysis grid: the cadence, but no finer than 60 s x n_LEO / n."""
    return max(float(cadence_s), ANALYSIS_STEP_LEO_S * LEO_MEAN_MOTION / mean_motion)


def track_segments(t: np.ndarray, step_s: float) -> list[tuple[int, int]]:
    """(start, stop) index ranges of t (T,) between gaps longer than GAP_STEPS analysis steps,
    keeping segments with at least MIN_SEGMENT_SAMPLES samples (or, if none has that many, the
    longest one: a sparse track is read as well as it can be)."""
    cuts = np.flatnonzero(np.diff(t) > GAP_STEPS * step_s) + 1
    bounds = np.concatenate([[0], cuts, [len(t)]])
    segments = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    kept = [(a, b) for a, b in segments if b - a >= MIN_SEGMENT_SAMPLES]
    return kept or [max(segments, key=lambda ab: (ab[1] - ab[0], -ab[0]))]


@dataclasses.dataclass
class LocalFit:
    """Local cubic fits of C channels at J grid times (see :func:`local_fit`)."""

    # Fitted values and first time derivatives, (J, C).
    value: np.ndarray
    deriv: np.ndarray
    # Variance factors of the value and of the derivative (per unit sample variance), (J,):
    # var(value) = sigma^2 * var_value, var(deriv) = sigma^2 * var_deriv.
    var_value: np.ndarray
    var_deriv: np.ndarray
    # Fit residuals (J, M, C) of the samples idx (J, M) in each window (zero where mask (J, M) is
    # False), and the degrees of freedom of each fit (J,).
    residual: np.ndarray
    idx: np.ndarray
    mask: np.ndarray
    dof: np.ndarray


def local_fit(t: np.ndarray, y: np.ndarray, grid: np.ndarray, half_s: float) -> LocalFit:
    """Cubic least-squares fits of y (T, C) at uneven times t (T,), evaluated at grid (J,).

    Each fit uses the samples within a window of 2 * half_s seconds centred on the grid time,
    shifted inwards at the ends of t (as Savitzky-Golay's ``interp`` mode): on a uniform grid
    with 7 samples per window this is the classic smoother. Besides values and derivatives it
    returns their variance factors and the fit residuals, from which the track's own noise
    level follows (fewer samples in a window, e.g. near a gap, mean noisier estimates).
    """
    span = 2.0 * half_s
    lo_t = np.clip(grid - half_s, t[0], max(t[0], t[-1] - span))
    lo = np.searchsorted(t, lo_t - 1e-9, side="left")
    hi = np.searchsorted(t, lo_t + span + 1e-9, side="right")
    width = int(np.max(hi - lo))
    idx = lo[:, None] + np.arange(width)[None, :]  # (J, M)
    mask = idx < hi[:, None]
    idx = np.minimum(idx, len(t) - 1)
    s = (t[idx] - grid[:, None]) / half_s  # (J, M), normalised time
    # Cubic where a window has >= 5 samples, else the highest order that leaves a residual (a
    # sparse window, near a gap): unused powers get zero columns and a unit diagonal.
    count = mask.sum(axis=1)
    order = np.clip(count - 2, 1, 3)
    use = np.arange(4)[None, :] <= order[:, None]  # (J, P)
    x = np.stack([s ** p for p in range(4)], axis=-1) * mask[..., None] * use[:, None, :]  # (J, M, P)
    xt = np.swapaxes(x, 1, 2)  # (J, P, M)
    a_inv = np.linalg.inv(xt @ x + (~use)[:, :, None] * np.eye(4) + 1e-12 * np.eye(4))
    yw = y[idx]  # (J, M, C)
    coef = a_inv @ (xt @ yw)  # (J, P, C)
    res = (yw - x @ coef) * mask[..., None]
    dof = np.maximum(count - (order + 1), 1)
    deriv, var_deriv = coef[:, 1] / half_s, a_inv[:, 1, 1] / half_s ** 2
    return LocalFit(coef[:, 0], deriv, a_inv[:, 0, 0], var_deriv, res, idx, mask, dof)


@dataclasses.dataclass
class TrackGrid:
    """A track read on its analysis grid (see :func:`reconstruct_track`)."""

    # Grid times (J,), s.
    t: np.ndarray
    # Positions and velocities (J, 3), m and m/s.
    pos: np.ndarray
    vel: np.ndarray
    # 1-sigma noise of each velocity component and position component at each grid time (J,).
    sigma_vel: np.ndarray
    sigma_pos: np.ndarray


def reconstruct_track(
    t: np.ndarray, r: np.ndarray, rdot: np.ndarray, az_deg: np.ndarray, el_deg: np.ndarray, step_s: float
) -> TrackGrid:
    """Positions and velocities on the analysis grid of one track (T,), with their noise.

    Per segment, a grid of near-``step_s`` steps from its first to its last sample. The LVLH
    positions ``r u`` and the range-rate are fitted locally (:func:`local_fit`): Cartesian
    positions stay smooth through a fast, close pass, where the line of sight swings round.
    The velocity is the fitted position derivative across the line of sight plus the fitted
    range-rate along it (the range-rate is far more precise than the range's derivative). The
    noise of each estimate follows from the fit residuals (across / along the line of sight, and
    of the range-rate: robust medians over the track) and the variance factors of each fit.
    """
    u_obs = line_of_sight(az_deg, el_deg)  # (T, 3)
    y = np.concatenate([r[:, None] * u_obs, rdot[:, None]], axis=1)
    parts = []
    for a, b in track_segments(t, step_s):
        ts = t[a:b]
        n_steps = max(1, int(round((ts[-1] - ts[0]) / step_s)))
        grid = np.linspace(ts[0], ts[-1], n_steps + 1)
        fit = local_fit(ts, y[a:b], grid, 0.5 * FIT_SPAN_STEPS * step_s)
        # Residuals across the line of sight (relative to range) and of the range-rate, per fit.
        u_win = u_obs[a:b][fit.idx]  # (J, M, 3)
        along = np.sum(fit.residual[..., :3] * u_win, axis=-1, keepdims=True)
        across = np.linalg.norm(fit.residual[..., :3] - along * u_win, axis=-1) / np.maximum(r[a:b][fit.idx], 1e-9)
        rms_across = np.sqrt(np.sum(across ** 2, axis=1) / (2 * fit.dof))
        rms_along = np.sqrt(np.sum(along[..., 0] ** 2, axis=1) / fit.dof)
        rms_rdot = np.sqrt(np.sum(fit.residual[..., 3] ** 2, axis=1) / fit.dof)
        parts.append((grid, fit, rms_across, rms_along, rms_rdot))
    grid = np.concatenate([p[0] for p in parts])
    value = np.concatenate([p[1].value for p in parts])
    deriv = np.concatenate([p[1].deriv for p in parts])
    var_value = np.concatenate([p[1].var_value for p in parts])
    var_deriv = np.concatenate([p[1].var_deriv for p in parts])
    rms_across, rms_along, rms_rdot = (np.concatenate([p[i] for p in parts]) for i in (2, 3, 4))
    pos = value[:, :3]
    r_s = np.linalg.norm(pos, axis=1)
    u = pos / np.maximum(r_s, 1e-12)[:, None]
    v_fit = deriv[:, :3]
    vel = v_fit - np.sum(v_fit * u, axis=1, keepdims=True) * u + value[:, 3:4] * u
    # The track's own noise: robust medians over its fits (a burn inside a window spoils that fit,
    # so local residuals would hide the burn they come from).
    sig_across, sig_along, sig_rd = (float(np.median(x)) for x in (rms_across, rms_along, rms_rdot))
    sigma_vel = np.sqrt(sig_rd ** 2 * var_value + (r_s * sig_across) ** 2 * var_deriv)
    sigma_pos = np.sqrt((sig_along ** 2 + (r_s * sig_across) ** 2) * var_value)
    return TrackGrid(grid, pos, vel, sigma_vel, sigma_pos)


def track_burns(tg: TrackGrid, n: float, th: Thresholds) -> tuple[list[tuple[float, float, int]], float]:
    """Impulsive burns of a reconstructed track and its continuous thrust acceleration.

    A burn shows as a velocity jump that coasting does not explain. Each velocity estimate is a
    local fit over ``FIT_SPAN_STEPS`` grid steps, so jumps are read over a baseline of 2 h =
    ``FIT_SPAN_STEPS`` steps whose two fits do not overlap::

        L_k = v[k+h] - Phi_v(t[k+h] - t[k-h]) [r, v][k-h]      (minus the median thrust)

    The median acceleration over all baselines is continuous thrust (e.g. a hold), not a burn.
    A burn between grid times g and g+1 shows in the 2 h baselines that span it (across a gap
    too), so burns are found by matching pursuit: among the windows whose mean jump is
    significant, the largest is a burn (delta-v = that mean), its mean is removed from those
    baselines, no other burn is placed within 2 h steps (what is left there is smoothing residue),
    and so on. Significant: above ``BURN_SIGMAS`` times the window's noise (from the fit noise at
    both ends: adapts to cadence, gaps, range and sensor), the floor ``burn_dv_mps * s``
    (s = :func:`data_prep.oracle.speed_scale`) and ``BURN_SPEED_FRAC`` of the speed there.

    Returns ([(time from start s, delta-v m/s, grid index g), ...] in time order, continuous
    acceleration m/s^2).
    """
    h = int(round(FIT_SPAN_STEPS / 2))
    t, pos, vel = tg.t, tg.pos, tg.vel
    g_n = len(t)
    if g_n < 2 * h + 1:
        return [], 0.0
    k = np.arange(h, g_n - h)
    dt = t[k + h] - t[k - h]
    phi = stm(n, dt)
    pred = np.einsum("kij,kj->ki", phi[:, 3:, :], np.concatenate([pos[k - h], vel[k - h]], axis=1))
    jump = vel[k + h] - pred
    acc = np.median(jump / dt[:, None], axis=0)
    jump = jump - acc[None, :] * dt[:, None]
    phi_vr = np.linalg.norm(phi[:, 3:, :3], axis=(1, 2))
    sigma = np.sqrt(tg.sigma_vel[k + h] ** 2 + tg.sigma_vel[k - h] ** 2 + (phi_vr * tg.sigma_pos[k - h]) ** 2)
    # Baseline windows (indices into k) of a burn between grid times g and g + 1.
    g = np.arange(g_n - 1)
    lo = np.maximum(g + 1 - h, h) - h
    hi = np.minimum(g + h, g_n - 1 - h) - h
    count = hi - lo + 1
    valid = count >= h  # burns within h steps of either end cannot be told from edge effects
    lo, hi, count = np.clip(lo, 0, len(k) - 1), np.clip(hi, 0, len(k) - 1), np.maximum(count, 1)

    def window_mean(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
        return (c[hi + 1] - c[lo]) / count.reshape((-1,) + (1,) * (x.ndim - 1))

    speed = np.linalg.norm(vel, axis=1)
    limit = np.maximum.reduce([BURN_SIGMAS * window_mean(sigma), np.full(len(g), th.burn_dv_mps * speed_scale(n, th)),
                               BURN_SPEED_FRAC * np.maximum(speed[g], speed[g + 1])])
    burns: list[tuple[float, float, int]] = []
    for _ in range(MAX_BURNS):
        mean = window_mean(jump)
        size = np.linalg.norm(mean, axis=1)
        above = valid & (size > limit)
        if not above.any():
            break
        best = int(np.argmax(np.where(above, size, -1.0)))  # the largest significant jump
        burns.append((float(0.5 * (t[best] + t[best + 1]) - t[0]), float(np.linalg.norm(mean[best])), best))
        jump[lo[best]:hi[best] + 1] -= mean[best]
        # Burns closer than 2 h steps share baselines and cannot be told apart.
        valid[max(best - 2 * h, 0):best + 2 * h + 1] = False
    return sorted(burns), float(np.linalg.norm(acc))


def track_arcs(grid: np.ndarray, rng: np.ndarray, burns: list[tuple[float, float, int]]) -> list[dict[str, float]]:
    """Coasting arcs between burns, each with the delta-v of the burn that starts it (0 for the first).

    A burn is smeared over half a fit window either side of its grid time, so an arc runs from
    ``FIT_SPAN_STEPS / 2`` grid points after one burn to as many before the next (arcs left
    with fewer than 2 points are dropped). Per arc: start/end time (from the track start),
    start/end/min/max range, ``dv_mps``.
    """
    half = int(round(FIT_SPAN_STEPS / 2))
    edges = [(-half - 1, 0.0)] + [(b[2], b[1]) for b in burns] + [(len(grid) + half, 0.0)]
    arcs = []
    for (k0, dv), (k1, _) in zip(edges[:-1], edges[1:]):
        a, b = max(k0 + half + 1, 0), min(k1 - half + 1, len(grid))
        if b - a < 2:
            continue
        seg = rng[a:b]
        arcs.append({"t0_s": round(float(grid[a] - grid[0]), 1), "t1_s": round(float(grid[b - 1] - grid[0]), 1),
                     "r0_m": round(float(seg[0]), 2), "r1_m": round(float(seg[-1]), 2),
                     "rmin_m": round(float(seg.min()), 2), "rmax_m": round(float(seg.max()), 2),
                     "dv_mps": round(float(dv), 4)})
    return arcs


def range_monotony(rng: np.random.Generator | np.ndarray) -> tuple[float, float, float]:
    """How far a range history (J,) strays from "closes, then opens" (a V, or half of one).

    Returns (reopen, reclose, swing): the largest rise above the running minimum before the
    closest approach and the largest fall below the running maximum after it, each relative to
    that running extreme, and how far the range first rises above its start before it closes
    (relative to the start). reopen and reclose are ~0 for an approach (closing throughout), a
    retreat (closing, then opening) or a flyby; a target that wanders in and out has both large.
    The closing phase is counted from where the range first falls ``CLOSEST_BAND`` below its start
    if it swung out by at most ``INITIAL_SWING`` before (a transfer may swing out a little before
    it closes in), else from the top of the swing (``swing`` says how far it went).
    """
    rng = np.asarray(rng, dtype=float)
    k = int(np.argmin(rng))
    below = np.flatnonzero(rng[:k + 1] < (1.0 - CLOSEST_BAND) * rng[0])
    start = int(below[0]) if below.size else 0
    top = int(np.argmax(rng[:k + 1]))
    if rng[:start + 1].max() > (1.0 + INITIAL_SWING) * rng[0]:
        start = top
    before, after = rng[start:k + 1], rng[k:]
    low = np.minimum.accumulate(before)
    high = np.maximum.accumulate(after)
    reopen = float(np.max((before - low) / np.maximum(low, 1e-9)))
    reclose = float(np.max((high - after) / np.maximum(high, 1e-9)))
    swing = float(rng[top] / max(rng[0], 1e-9) - 1.0)
    return reopen, reclose, swing


def along_track_drift(pos: np.ndarray, vel: np.ndarray, n: float) -> float:
    """Along-track drift speed (m/s) of the relative orbit of a track pos, vel (J, 3):
    ``|median(3 vy + 6 n x)|``. ``3 vy + 6 n x`` is a constant of coasting CW motion: zero on a
    closed relative ellipse (a natural fly-around), ``1.5 n x`` on a co-elliptic pass, large on a
    transfer; the median over the track is that of its longest coasting stretch."""
    return float(abs(np.median(3.0 * vel[:, 1] + 6.0 * n * pos[:, 0])))


def track_features(
    observation: dict[str, Any],
    mean_motion_radps: float | None = None,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Features of a track (an observation with ``orbit``): any cadence, uneven times, gaps.

    The observation is read on an analysis grid (:func:`analysis_step`, per gap-free segment)
    by local cubic fits that use the true sample times; the classic keys come from that grid
    and the extra keys (:data:`TRACK_FEATURE_KEYS`, docs/CONTRACT.md) say what was seen: orbit,
    window, median cadence, samples, longest gap, the analysis step, the median speed, the
    continuous thrust acceleration, the along-track drift of the relative orbit
    (:func:`along_track_drift`), how far the range strays from closing-then-opening and how far it
    first swings out (:func:`range_monotony`; the re-opening also counted from the first burn's
    arc on), when the range is within ``CLOSEST_BAND`` of its minimum, the
    burns (``{"t_s", "dv_mps"}``) and the coasting arcs between them (``{"t0_s", "t1_s", "r0_m",
    "r1_m", "rmin_m", "rmax_m", "dv_mps"}``).
    """
    orbit = str(observation["orbit"])
    if orbit not in ORBIT_ALTITUDE_M:
        raise ValueError(f"observation orbit {orbit!r} is not one of {sorted(ORBIT_ALTITUDE_M)}")
    n = orbit_mean_motion(orbit) if mean_motion_radps is None else float(mean_motion_radps)
    t, r, rdot, az, el = (a.reshape(-1) for a in observation_arrays(observation))
    if np.any(np.diff(t) <= 0):
        raise ValueError("observation times must increase strictly")
    diffs = np.diff(t)
    cadence = float(np.median(diffs))
    step = analysis_step(cadence, n)
    tg = reconstruct_track(t, r, rdot, az, el, step)
    grid, pos, vel = tg.t, tg.pos, tg.vel
    rng = np.linalg.norm(pos, axis=1)
    k_min = int(np.argmin(rng))
    speed = np.linalg.norm(vel, axis=1)
    burns, accel = track_burns(tg, n, th)
    dvs = [b[1] for b in burns]
    window = float(t[-1] - t[0])
    mean_rdot = float(np.trapezoid(rdot, t) / window) if window > 0 else float(np.mean(rdot))
    reopen, reclose, swing = range_monotony(rng)
    # The same from the first burn's arc on: a window may start with the burn that sets up the course.
    after_first = burns[0][2] + int(round(FIT_SPAN_STEPS / 2)) + 1 if burns else 0
    reopen_after_first = range_monotony(rng[after_first:])[0] if len(rng) - after_first >= 2 else reopen
    near_min = np.flatnonzero(rng <= (1.0 + CLOSEST_BAND) * rng[k_min])
    out = {
        "initial_range_m": round(float(rng[0]), 2),
        "min_range_m": round(float(rng[k_min]), 2),
        "t_min_range_s": round(float(grid[k_min] - grid[0]), 1),
        "final_range_m": round(float(rng[-1]), 2),
        "final_speed_mps": round(float(np.linalg.norm(vel[-FINAL_SPEED_SAMPLES:].mean(axis=0))), 4),
        "mean_range_rate_mps": round(mean_rdot, 4),
        "extent_m": [round(float(e), 2) for e in np.ptp(pos, axis=0)],
        "max_dv_mps": round(max(dvs, default=0.0), 4),
        "n_burns": len(burns),
        "entered_keepout": bool(rng[k_min] < th.keepout_radius_m),
        "range_trend": range_trend(rng),
        "orbit": orbit,
        "window_s": round(window, 1),
        "cadence_s": round(cadence, 2),
        "n_samples": int(len(t)),
        "max_gap_s": round(float(diffs.max()), 1),
        "analysis_step_s": round(step, 1),
        "median_speed_mps": round(float(np.median(speed)), 4),
        "continuous_accel_mps2": round(accel, 7),
        "drift_mps": round(along_track_drift(pos, vel, n), 4),
        "reopen_frac": round(reopen, 4),
        "reclose_frac": round(reclose, 4),
        "swing_frac": round(swing, 4),
        "reopen_after_first_burn_frac": round(reopen_after_first, 4),
        "closest_span_s": [round(float(grid[near_min[0]] - grid[0]), 1), round(float(grid[near_min[-1]] - grid[0]), 1)],
        "burns": [{"t_s": round(b[0], 1), "dv_mps": round(b[1], 4)} for b in burns],
        "arcs": track_arcs(grid, rng, burns),
    }
    return out

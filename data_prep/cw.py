"""Clohessy–Wiltshire (Hill) relative motion: closed-form transition, thrust response, targeting.

Frame: the station's LVLH frame, x radial (up), y along-track, z cross-track. State
``(x, y, z, vx, vy, vz)`` in metres and m/s. Equations of motion with a thrust
acceleration ``a``::

    x'' - 3 n^2 x - 2 n y' = a_x,   y'' + 2 n x' = a_y,   z'' + n^2 z = a_z

Everything is vectorised with numpy over samples (leading batch axes) so that tens of
thousands of trajectories propagate in well under a second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy.linalg import expm

#: Earth's gravitational parameter, m^3/s^2.
MU_EARTH = 3.986004418e14
#: Mean equatorial Earth radius, m.
R_EARTH = 6_378_137.0
#: Orbit altitudes per named orbit, metres (LEO = ISS-like 400 km, GEO = 35,786 km).
ORBIT_ALTITUDE_M: dict[str, float] = {"LEO": 400e3, "GEO": 35_786e3}


def mean_motion(altitude_m: float) -> float:
    """Mean motion n = sqrt(mu / a^3) in rad/s of a circular orbit at ``altitude_m``."""
    a = R_EARTH + altitude_m
    return float(np.sqrt(MU_EARTH / a**3))


def orbit_mean_motion(orbit: str) -> float:
    """Mean motion of a named orbit (``"LEO"`` ~1.13e-3 rad/s, ``"GEO"`` ~7.29e-5 rad/s)."""
    return mean_motion(ORBIT_ALTITUDE_M[orbit])


LEO_MEAN_MOTION = orbit_mean_motion("LEO")


def speed_scale(n: float) -> float:
    """n / n_LEO: the speeds of one geometry flown in orbit-scaled time at mean motion ``n`` are the
    LEO ones times this (GEO: ~0.065)."""
    return n / LEO_MEAN_MOTION


def system_matrix(n: float) -> np.ndarray:
    """Continuous-time CW matrix A (6, 6) with ``d state / dt = A state + B a``."""
    a = np.zeros((6, 6))
    a[0:3, 3:6] = np.eye(3)
    a[3, 0] = 3.0 * n * n
    a[3, 4] = 2.0 * n
    a[4, 3] = -2.0 * n
    a[5, 2] = -n * n
    return a


def stm(n: float, t: np.ndarray | float) -> np.ndarray:
    """Closed-form state transition matrix Phi(t), shape ``t.shape + (6, 6)``.

    Blocks (s = sin nt, c = cos nt): Phi_rr, Phi_rv, Phi_vr, Phi_vv as in the CW solution.
    """
    t = np.asarray(t, dtype=float)
    nt = n * t
    s, c = np.sin(nt), np.cos(nt)
    phi = np.zeros(t.shape + (6, 6))
    # Phi_rr
    phi[..., 0, 0] = 4.0 - 3.0 * c
    phi[..., 1, 0] = 6.0 * (s - nt)
    phi[..., 1, 1] = 1.0
    phi[..., 2, 2] = c
    # Phi_rv
    phi[..., 0, 3] = s / n
    phi[..., 0, 4] = 2.0 * (1.0 - c) / n
    phi[..., 1, 3] = 2.0 * (c - 1.0) / n
    phi[..., 1, 4] = (4.0 * s - 3.0 * nt) / n
    phi[..., 2, 5] = s / n
    # Phi_vr
    phi[..., 3, 0] = 3.0 * n * s
    phi[..., 4, 0] = 6.0 * n * (c - 1.0)
    phi[..., 5, 2] = -n * s
    # Phi_vv
    phi[..., 3, 3] = c
    phi[..., 3, 4] = 2.0 * s
    phi[..., 4, 3] = -2.0 * s
    phi[..., 4, 4] = 4.0 * c - 3.0
    phi[..., 5, 5] = c
    return phi


@functools.lru_cache(maxsize=64)
def _discrete(n: float, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(Phi(dt) (6, 6), Gamma(dt) (6, 3)) for a zero-order-hold (piecewise-constant) thrust.

    Gamma = int_0^dt Phi(s) ds B is taken from the matrix exponential of the augmented
    system [[A, B], [0, 0]], which is exact for thrust held constant over the step.
    """
    aug = np.zeros((9, 9))
    aug[:6, :6] = system_matrix(n)
    aug[3:6, 6:9] = np.eye(3)
    e = expm(aug * dt)
    return stm(n, dt), e[:6, 6:9]


def hold_acceleration(n: float, r: np.ndarray) -> np.ndarray:
    """Thrust acceleration (..., 3) that keeps a target at rest at position r (..., 3).

    From the CW equations with zero velocity: a = (-3 n^2 x, 0, n^2 z).
    """
    r = np.asarray(r, dtype=float)
    a = np.zeros_like(r)
    a[..., 0] = -3.0 * n * n * r[..., 0]
    a[..., 2] = n * n * r[..., 2]
    return a


def propagate(
    state0: np.ndarray,
    n: float,
    dt: float,
    n_steps: int,
    impulses: np.ndarray | None = None,
    accel: np.ndarray | None = None,
    controller: Callable[[int, np.ndarray], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Propagate states on a uniform grid with impulses and piecewise-constant thrust.

    Args:
        state0: (N, 6) initial states.
        n: mean motion, rad/s.
        dt: step, s.
        n_steps: number of steps; the output has ``n_steps + 1`` samples.
        impulses: optional (N, n_steps + 1, 3) delta-v applied just *after* sample k is
            recorded (so the recorded state at k is pre-burn).
        accel: optional (N, n_steps, 3) thrust acceleration held constant over step k.
        controller: optional closed-loop guidance ``controller(k, x) -> (N, 3) delta-v or None``,
            called with the (N, 6) state at sample k after it is recorded and after the scheduled
            impulse; its delta-v is applied at once (burns that react to the actual state).

    Returns:
        (N, n_steps + 1, 6) states at t = 0, dt, ..., n_steps * dt.
    """
    phi, gamma = _discrete(float(n), float(dt))
    out = np.empty((state0.shape[0], n_steps + 1, 6))
    x = np.array(state0, dtype=float)
    for k in range(n_steps + 1):
        out[:, k] = x
        if k == n_steps:
            break
        if impulses is not None:
            x = x.copy()
            x[:, 3:6] += impulses[:, k]
        if controller is not None:
            dv = controller(k, x)
            if dv is not None:
                x = x.copy()
                x[:, 3:6] += dv
        x = x @ phi.T
        if accel is not None:
            x += accel[:, k] @ gamma.T
    return out


def two_impulse_velocity(r0: np.ndarray, rf: np.ndarray, n: float, tau: np.ndarray) -> np.ndarray:
    """Departure velocity (N, 3) that carries r0 (N, 3) to rf (N, 3) in time tau (N,).

    v0+ = Phi_rv(tau)^-1 (rf - Phi_rr(tau) r0). Raises numpy's LinAlgError only if some
    Phi_rv is exactly singular (tau a multiple of the half period for cross-track).
    """
    phi = stm(n, np.asarray(tau, dtype=float))
    prr, prv = phi[:, :3, :3], phi[:, :3, 3:]
    rhs = rf - np.einsum("nij,nj->ni", prr, r0)
    return np.linalg.solve(prv, rhs[..., None])[..., 0]


def arrival_velocity(r0: np.ndarray, v0: np.ndarray, n: float, tau: np.ndarray) -> np.ndarray:
    """Velocity (N, 3) after coasting from (r0, v0) (N, 3) for tau (N,) seconds."""
    phi = stm(n, np.asarray(tau, dtype=float))
    state = np.concatenate([r0, v0], axis=1)
    return np.einsum("nij,nj->ni", phi, state)[:, 3:]


#: coasting arcs shorter than this many samples are not fitted (:func:`arc_misfit`)
MIN_ARC_SAMPLES = 8


def arc_misfit(t: np.ndarray, pos: np.ndarray, n: float, span_s: float) -> float:
    """How badly CW coasting at mean motion ``n`` explains a track: a robust relative residual.

    The track (times t (T,), LVLH positions pos (T, 3) in m) is cut into arcs of ``span_s``
    seconds; each arc gets the least-squares CW coast plus a constant acceleration (a hold
    thrust) through its samples, 9 unknowns. Returns the median over arcs of the RMS position
    residual relative to the arc's median range (burns spoil a few arcs, not the median), or NaN
    when no arc has :data:`MIN_ARC_SAMPLES` samples.
    """
    misfits = []
    i = 0
    while i < len(t):
        j = int(np.searchsorted(t, t[i] + span_s, side="right"))
        if j - i >= MIN_ARC_SAMPLES:
            tc = t[i:j] - t[i:j].mean()
            # positions (M, 3) = Phi_r(tc) (3, 6) @ state + tc^2 / 2 * a
            design = np.concatenate([stm(n, tc)[:, :3, :], 0.5 * tc[:, None, None] ** 2 * np.eye(3)[None]], axis=2)
            a, b = design.reshape(-1, 9), pos[i:j].reshape(-1)
            coef, *_ = np.linalg.lstsq(a, b, rcond=None)
            scale = max(float(np.median(np.linalg.norm(pos[i:j], axis=1))), 1e-9)
            misfits.append(float(np.sqrt(np.mean((b - a @ coef) ** 2))) / scale)
        i = max(j, i + 1)
    return float(np.median(misfits)) if misfits else float("nan")


def fit_mean_motion(t: np.ndarray, pos: np.ndarray, span_s: float, lo: float = 1e-5, hi: float = 1e-2) -> float:
    """The mean motion (rad/s) in [lo, hi] whose CW coasting best explains a track (:func:`arc_misfit`).

    A log-spaced scan, refined by a bounded scalar search around its best point.
    """
    from scipy.optimize import minimize_scalar

    grid = np.linspace(np.log(lo), np.log(hi), 31)
    cost = np.array([arc_misfit(t, pos, float(np.exp(g)), span_s) for g in grid])
    if not np.isfinite(cost).any():
        return float("nan")
    k = int(np.nanargmin(cost))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    res = minimize_scalar(lambda g: arc_misfit(t, pos, float(np.exp(g)), span_s), bounds=(a, b), method="bounded",
                          options={"xatol": 1e-3})
    return float(np.exp(res.x if res.fun <= cost[k] else grid[k]))

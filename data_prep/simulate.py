"""Physically grounded trajectory generators, one per motion class (Clohessy–Wiltshire).

Each generator draws ``n_scen`` base geometries (scenarios) and ``n_var`` variants of each
(small jitter of the geometry; sensor noise and context are drawn later per variant) and
returns true LVLH states (N, T, 6), N = n_scen * n_var, scenario-major. All burns happen
at sample times, *after* the sample is recorded; burns that put the target on its
course happen before the window (the target is already coasting at t = 0).

==========  ==========================================================================
class       manoeuvre
==========  ==========================================================================
hovering    holds a fixed point with continuous thrust a = (-3 n^2 x, 0, n^2 z)
flyby       co-elliptic pass (x0 = dh, vy0 = -1.5 n x0): straight along-track drift,
            closest approach dh inside the window
fly_around  natural closed relative ellipse (vy0 = -2 n x0), semi-minor 0.4-5 km,
            random phase and cross-track oscillation
approach    phasing drift (co-elliptic, closest approach after the window) or a two-impulse
            transfer towards the 4 x 2 x 2 km approach ellipsoid arriving after the window
rendezvous  two-impulse transfer to a docking port 20-40 m along the V-bar, braking burn
            in the window, then held at rest
collision   two-impulse transfer to a point of the hull (0-25 m), arriving at the last
            sample with non-zero velocity
retreat     on a collision course, then an evasive burn (reverse and deflect) mid-window
random      random drift plus 3-5 random impulses of 0.8-2.5 m/s
==========  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_prep import cw

#: Semi-axes (x radial, y along-track, z cross-track) of the ISS-like approach ellipsoid, m.
APPROACH_ELLIPSOID_M = np.array([1000.0, 2000.0, 1000.0])


def _unit(rng: np.random.Generator, m: int, z_scale: float = 1.0, x_scale: float = 1.0) -> np.ndarray:
    """(m, 3) random unit vectors; scaling x/z before normalising biases them to the V-bar/plane."""
    v = rng.standard_normal((m, 3)) * np.array([x_scale, 1.0, z_scale])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, m: int) -> np.ndarray:
    """(m,) samples uniform in log between lo and hi (ranges span decades)."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), m))


def _variants(x: np.ndarray, n_var: int, rng: np.random.Generator | None = None, rel: float = 0.0) -> np.ndarray:
    """Repeat scenario parameters (m, ...) n_var times; optional multiplicative jitter."""
    rep = np.repeat(x, n_var, axis=0)
    if rng is not None and rel > 0:
        rep = rep * (1.0 + rel * rng.standard_normal(rep.shape))
    return rep


def _coelliptic_states(sim: "Sim", dh: np.ndarray, t_c: np.ndarray, z0: np.ndarray, n_var: int) -> np.ndarray:
    """Initial states (m·n_var, 6) of co-elliptic passes: radial offset dh drifting at -1.5 n dh along
    track, closest approach at t_c, cross-track offset z0 (scenario values jittered per variant)."""
    n = sim.n
    dh, t_c, z0 = _variants(dh, n_var, sim.rng, 0.03), _variants(t_c, n_var, sim.rng, 0.03), _variants(z0, n_var)
    zeros = np.zeros_like(dh)
    return np.stack([dh, 1.5 * n * dh * t_c, z0, zeros, -1.5 * n * dh, zeros], axis=1)


class Sim:
    """Time grid and dynamics shared by the generators."""

    def __init__(self, n: float, dt: float, n_steps: int, accel_noise: float, rng: np.random.Generator):
        self.n, self.dt, self.n_steps, self.accel_noise, self.rng = n, dt, n_steps, accel_noise, rng
        self.window = dt * n_steps
        # Orbit period, s (the wide generators time their manoeuvres in orbits).
        self.period = 2.0 * np.pi / n

    def run(self, state0: np.ndarray, impulses: np.ndarray | None = None, accel: np.ndarray | None = None,
            controller: Callable[[int, np.ndarray], np.ndarray | None] | None = None) -> np.ndarray:
        """Propagate (N, 6) states with impulses/thrust/closed-loop burns plus unmodelled random acceleration."""
        noise = self.accel_noise * self.rng.standard_normal((state0.shape[0], self.n_steps, 3))
        accel = noise if accel is None else accel + noise
        return cw.propagate(state0, self.n, self.dt, self.n_steps, impulses=impulses, accel=accel,
                            controller=controller)

    def zeros_impulses(self, n_samples: int) -> np.ndarray:
        """(N, T, 3) zero impulse schedule."""
        return np.zeros((n_samples, self.n_steps + 1, 3))


def gen_hovering(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Hold a fixed point 0.5-10 km away (mostly along-track: radial holds cost thrust)."""
    rng = sim.rng
    base = _unit(rng, n_scen, z_scale=0.3, x_scale=0.3) * _log_uniform(rng, 500.0, 10_000.0, n_scen)[:, None]
    r = _variants(base, n_var, rng, 0.02)
    state0 = np.concatenate([r, 0.001 * rng.standard_normal(r.shape)], axis=1)
    accel = np.repeat(cw.hold_acceleration(sim.n, r)[:, None, :], sim.n_steps, axis=1)
    return sim.run(state0, accel=accel)


def gen_flyby(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Co-elliptic pass: constant radial offset dh, drift -1.5 n dh, closest at t_c."""
    rng = sim.rng
    dh = rng.choice([-1.0, 1.0], n_scen) * rng.uniform(400.0, 4000.0, n_scen)
    t_c = rng.uniform(0.35, 0.65, n_scen) * sim.window
    z0 = rng.uniform(-0.3, 0.3, n_scen) * np.abs(dh)
    return sim.run(_coelliptic_states(sim, dh, t_c, z0, n_var))


def gen_fly_around(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Natural closed ellipse x = A cos(phase), y = -2 A sin(phase) + yc (vy0 = -2 n x0)."""
    rng, n = sim.rng, sim.n
    amp = _log_uniform(rng, 400.0, 5000.0, n_scen)
    phase = rng.uniform(0.0, 2 * np.pi, n_scen)
    yc = rng.uniform(-0.15, 0.15, n_scen) * amp
    cz, psi = rng.uniform(0.0, 0.5, n_scen) * amp, rng.uniform(0.0, 2 * np.pi, n_scen)
    amp = _variants(amp, n_var, rng, 0.03)
    phase = _variants(phase, n_var) + 0.05 * rng.standard_normal(n_scen * n_var)
    yc, cz, psi = _variants(yc, n_var), _variants(cz, n_var, rng, 0.05), _variants(psi, n_var)
    x0 = amp * np.cos(phase)
    state0 = np.stack([
        x0, -2 * amp * np.sin(phase) + yc, cz * np.cos(psi),
        -n * amp * np.sin(phase), -2 * n * x0, -n * cz * np.sin(psi),
    ], axis=1)
    return sim.run(state0)


def _targeted_start(sim: Sim, r0: np.ndarray, rf: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """(N, 6) start states on the two-impulse transfer from r0 to rf in tau."""
    v0 = cw.two_impulse_velocity(r0, rf, sim.n, tau)
    return np.concatenate([r0, v0], axis=1)


def gen_approach(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Closing but not yet arrived: half phasing drifts, half two-impulse transfers.

    Phasing drift: co-elliptic orbit 0.2-1.5 km below/above the station, closest approach
    1.3-2.5 windows away (the classic far-range approach). Transfer: two-impulse transfer
    from 3-10 km (mostly V-bar) to where its direction meets the approach ellipsoid,
    arriving 1.05-1.3 windows later.
    """
    rng, n = sim.rng, sim.n
    n_drift = n_scen // 2
    n_tr = n_scen - n_drift
    # Phasing drift.
    dh = rng.choice([-1.0, 1.0], n_drift) * rng.uniform(200.0, 1500.0, n_drift)
    t_c = rng.uniform(1.3, 2.5, n_drift) * sim.window
    z0 = rng.uniform(-0.3, 0.3, n_drift) * np.abs(dh)
    drift0 = _coelliptic_states(sim, dh, t_c, z0, n_var)
    # Two-impulse transfer.
    d = _unit(rng, n_tr, z_scale=0.2, x_scale=0.3)
    r0 = d * _log_uniform(rng, 3000.0, 10_000.0, n_tr)[:, None]
    rf = d / np.linalg.norm(d / APPROACH_ELLIPSOID_M, axis=1, keepdims=True)
    tau = rng.uniform(1.05, 1.3, n_tr) * sim.window
    r0, rf, tau = _variants(r0, n_var, rng, 0.02), _variants(rf, n_var), _variants(tau, n_var, rng, 0.02)
    transfer0 = _targeted_start(sim, r0, rf, tau)
    return sim.run(np.concatenate([drift0, transfer0], axis=0))


def gen_rendezvous(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Transfer to a V-bar docking port, brake at arrival (in the window) and hold there."""
    rng = sim.rng
    r0 = _unit(rng, n_scen, z_scale=0.2) * _log_uniform(rng, 1500.0, 10_000.0, n_scen)[:, None]
    port = np.zeros((n_scen, 3))
    port[:, 1] = rng.choice([-1.0, 1.0], n_scen) * rng.uniform(20.0, 40.0, n_scen)
    k_arr = np.rint(rng.uniform(0.55, 0.8, n_scen) * sim.n_steps).astype(int)
    r0, port, k_arr = _variants(r0, n_var, rng, 0.02), _variants(port, n_var), _variants(k_arr, n_var)
    tau = k_arr * sim.dt
    state0 = _targeted_start(sim, r0, port, tau)
    n_s = state0.shape[0]
    impulses = sim.zeros_impulses(n_s)
    v_arr = cw.arrival_velocity(r0, state0[:, 3:], sim.n, tau)
    impulses[np.arange(n_s), k_arr] = -v_arr
    # Hold at the port after arrival (tiny thrust: the port is on the V-bar).
    steps = np.arange(sim.n_steps)[None, :, None]
    accel = np.where(steps >= k_arr[:, None, None], cw.hold_acceleration(sim.n, port)[:, None, :], 0.0)
    return sim.run(state0, impulses=impulses, accel=accel)


def gen_collision(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Transfer from 1.5-12 km to a hull point (0-25 m), arriving at the last sample."""
    rng = sim.rng
    # Mostly in-plane: arrival near half a period makes cross-track transfers expensive.
    r0 = _unit(rng, n_scen, z_scale=0.1) * _log_uniform(rng, 1500.0, 12_000.0, n_scen)[:, None]
    hit = _unit(rng, n_scen) * rng.uniform(0.0, 25.0, n_scen)[:, None]
    r0, hit = _variants(r0, n_var, rng, 0.02), _variants(hit, n_var)
    tau = np.full(len(r0), sim.window)
    return sim.run(_targeted_start(sim, r0, hit, tau))


def gen_retreat(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Collision course from 2-8 km (impact due at 0.55-0.8 windows), then an evasive burn at
    0.3-0.45 of the window that reverses (x1.6-2.4) and deflects the relative velocity."""
    rng = sim.rng
    r0 = _unit(rng, n_scen, z_scale=0.3, x_scale=0.5) * _log_uniform(rng, 2000.0, 8000.0, n_scen)[:, None]
    hit = _unit(rng, n_scen) * rng.uniform(0.0, 25.0, n_scen)[:, None]
    # Keep n*tau away from pi, where the cross-track transfer is singular.
    tau = rng.uniform(0.55, 0.8, n_scen) * sim.window
    k_ev = np.rint(rng.uniform(0.3, 0.45, n_scen) * sim.n_steps).astype(int)
    gain = rng.uniform(1.6, 2.4, n_scen)
    r0, hit, tau = _variants(r0, n_var, rng, 0.02), _variants(hit, n_var), _variants(tau, n_var, rng, 0.02)
    k_ev, gain = _variants(k_ev, n_var), _variants(gain, n_var)
    state0 = _targeted_start(sim, r0, hit, tau)
    n_s = state0.shape[0]
    v_ev = cw.arrival_velocity(r0, state0[:, 3:], sim.n, k_ev * sim.dt)
    speed = np.linalg.norm(v_ev, axis=1, keepdims=True)
    impulses = sim.zeros_impulses(n_s)
    impulses[np.arange(n_s), k_ev] = -gain[:, None] * v_ev + 0.3 * speed * _unit(rng, n_s)
    return sim.run(state0, impulses=impulses)


def gen_random(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Random bounded drift from 1-15 km with 3-5 random 0.5-2.5 m/s impulses, well separated in time."""
    rng = sim.rng
    r0 = _unit(rng, n_scen) * _log_uniform(rng, 1000.0, 15_000.0, n_scen)[:, None]
    # Start near a bounded (non-drifting, vy0 = -2 n x0) relative orbit plus a random 0-1 m/s.
    v0 = _unit(rng, n_scen) * rng.uniform(0.0, 1.0, n_scen)[:, None]
    v0[:, 1] += -2.0 * sim.n * r0[:, 0]
    n_burn = rng.integers(3, 6, n_scen)
    lo, hi = 4, sim.n_steps - 5
    # One burn per equal segment of the interior, jittered by +-15 % of a segment (>= ~6 samples apart).
    frac = (np.arange(5)[None, :] + 0.5 + rng.uniform(-0.15, 0.15, (n_scen, 5))) / n_burn[:, None]
    k_burn = np.rint(lo + frac * (hi - lo)).astype(int)
    dv = _unit(rng, n_scen * 5).reshape(n_scen, 5, 3) * rng.uniform(0.8, 2.5, (n_scen, 5, 1))
    r0, v0 = _variants(r0, n_var, rng, 0.02), _variants(v0, n_var)
    n_burn, k_burn, dv = _variants(n_burn, n_var), _variants(k_burn, n_var), _variants(dv, n_var, rng, 0.05)
    n_s = len(r0)
    impulses = sim.zeros_impulses(n_s)
    for j in range(5):
        use = j < n_burn
        impulses[np.flatnonzero(use), k_burn[use, j]] += dv[use, j]
    return sim.run(np.concatenate([r0, v0], axis=1), impulses=impulses)


GENERATORS: dict[str, Callable[[Sim, int, int], np.ndarray]] = {
    "hovering": gen_hovering, "flyby": gen_flyby, "fly_around": gen_fly_around, "approach": gen_approach,
    "rendezvous": gen_rendezvous, "collision": gen_collision, "retreat": gen_retreat, "random": gen_random,
}

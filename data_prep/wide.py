"""Wide-distribution simulator: tracks that look like real ones (``simulator: wide``).

The classic generators (:mod:`data_prep.simulate`) fix the orbit, a 3000 s window and a 60 s
cadence, and every burn that sets a target on its course happens before the window. Real
tracks differ: windows from half an orbit to two orbits, cadences from 10 s to 120 s, uneven
or gapped sampling, GEO as well as LEO, and the manoeuvres themselves inside the window. This
module draws those settings per scenario (:func:`draw_settings`), flies the manoeuvres with
closed-loop guidance (:func:`run_plans`: burns computed from the target's actual state, with
execution errors, through :func:`data_prep.cw.propagate`'s ``controller``) and picks the
observed samples (:func:`sample_indices`).

Manoeuvres per motion class (the fractions come from :class:`ManoeuvreMix`):

==========  ==================================================================================
class       styles
==========  ==================================================================================
hovering    continuous hold thrust a = (-3 n^2 x, 0, n^2 z), or impulsive station-keeping: a
            hop back to the hold point every 1-4 % of an orbit (``hovering_impulsive``)
flyby       co-elliptic pass, closest approach inside the window (as classic)
fly_around  natural closed ellipse (as classic)
approach    phasing drift; coasting on a transfer to a standoff point started before the
            window; or holding/drifting far out, then transfer hops with their departure,
            waypoint and mid-course correction burns inside the window (``approach_burns``),
            arriving after the window; or (``approach_swing``, short windows) one long transfer
            from off the V-bar that swings out before it closes in, departed just before or
            just inside the window
rendezvous  hops to a V-bar docking port arriving inside the window, braking burn, hold; the
            first hop started before the window or (``rendezvous_burns``) inside it
collision   hops to a hull point arriving at the last sample (``collision_burns``: the first
            hop departs inside the window)
retreat     collision course, then an evasive transfer to a far point; the burn that set up
            the collision course before or (``retreat_setup``) inside the window, made from a
            hold or (``setup_drift``) from a drift
random      bounded drift with 3-5 random impulses (0.8-2.5 m/s in LEO, scaled by the mean
            motion in other orbits)
==========  ==================================================================================

Guided transfer hops last 0.2-0.42 orbits (a coasting approach transfer 0.58-0.75): two-impulse
targeting is singular at half an orbit (cross-track) and near one orbit (in-plane), and long hops
swing out before they close in. Waypoints lie on the line of sight of the start, evenly spaced in
range (a steady closing speed). Speeds scale with the mean motion, so GEO
manoeuvres are the LEO ones slowed down by n_GEO / n_LEO (~1/15).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from data_prep import cw, simulate
from data_prep.simulate import APPROACH_ELLIPSOID_M, Sim, _log_uniform, _unit

#: Sampling styles: uniform grid; jittered times; uniform with gaps and dropouts; both.
SAMPLING_STYLES: tuple[str, ...] = ("uniform", "jitter", "gaps", "jitter_gaps")
#: Consecutive scenarios that share one draw of settings (and one vectorised propagation).
SCENARIOS_PER_SETTING = 4
#: Fine propagation steps per nominal sample for jittered sampling (times land on a cadence/4 grid).
JITTER_SUBSTEPS = 4
#: Durations of guided transfer hops, orbits: short of the singular half orbit (and long hops
#: swing out before closing in).
HOP_ORBITS: tuple[float, float] = (0.2, 0.42)
#: Durations of the single long transfer an approach may coast on through the window, orbits.
LONG_HOP: tuple[float, float] = (0.58, 0.75)
#: Shortest remaining time of a mid-course correction, orbits.
MIN_CORRECTION_ORBITS = 0.08
#: Execution error of corrections and station-keeping burns relative to transfer burns.
CORRECTION_ERROR = 0.3
#: Event kinds: retarget to a point; null the relative velocity (and anchor the track where it
#: stopped); retarget to the track's anchor (station-keeping: where it started or last stopped).
GO, STOP, KEEP = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class ManoeuvreMix:
    """Fractions of each class's scenarios flown in the new manoeuvre styles (wide simulator)."""

    # Hovers held by impulsive station-keeping (else continuous thrust).
    hovering_impulsive: float = 0.5
    # Approaches whose transfer, waypoint and correction burns fall inside the window.
    approach_burns: float = 0.5
    # Rendezvous whose first transfer burn falls inside the window.
    rendezvous_burns: float = 0.5
    # Collisions whose first transfer burn falls inside the window.
    collision_burns: float = 0.5
    # Retreats whose window includes the burn that set up the collision course.
    retreat_setup: float = 0.5
    # Of those, the ones that drift (instead of holding) before the set-up burn (look-alike of
    # tracks simulated elsewhere: the range may first close or open a little, then the course is set).
    setup_drift: float = 0.5
    # Approaches flown as one long transfer that swings out before it closes in (0.55-0.9 orbits from
    # up to 40 % off the V-bar to a V-bar standoff point, departed just before or inside the window's
    # first 5 %), where the window is short enough for it; else the styles above.
    approach_swing: float = 0.25
    # Probability that a transfer hop gets a mid-course correction (the last hop of a rendezvous
    # or collision always does: it has to hit its mark).
    correction_prob: float = 0.5
    # 1-sigma relative magnitude and direction error of every commanded transfer burn.
    execution_error: float = 0.03


@dataclasses.dataclass(frozen=True)
class TrackSettings:
    """Orbit, window, cadence and sampling style of one scenario's tracks."""

    orbit: str
    window_s: float
    cadence_s: float
    sampling: str

    @property
    def substeps(self) -> int:
        """Propagation steps per nominal sample."""
        return JITTER_SUBSTEPS if "jitter" in self.sampling else 1

    @property
    def n_samples(self) -> int:
        """Nominal samples per track (before dropouts and gaps)."""
        return int(round(self.window_s / self.cadence_s)) + 1


def draw_settings(
    rng: np.random.Generator,
    orbits: tuple[str, ...],
    window_orbits: tuple[float, float] | None,
    window_s: float,
    cadence_range_s: tuple[float, float] | None,
    cadence_s: float,
    sampling: tuple[str, ...],
    max_track_samples: int,
) -> TrackSettings:
    """One scenario's settings: orbit uniform, window uniform in orbits, cadence log-uniform.

    The cadence is raised where needed so that a track has at most ``max_track_samples``
    samples (long GEO windows at short cadences would otherwise hold ~10^4 samples).
    """
    orbit = orbits[int(rng.integers(len(orbits)))]
    period = 2.0 * np.pi / cw.orbit_mean_motion(orbit)
    window = float(rng.uniform(*window_orbits)) * period if window_orbits else float(window_s)
    cadence = float(np.exp(rng.uniform(*np.log(cadence_range_s)))) if cadence_range_s else float(cadence_s)
    cadence = max(cadence, window / max(max_track_samples - 1, 2))
    style = sampling[int(rng.integers(len(sampling)))]
    return TrackSettings(orbit=orbit, window_s=round(window, 1), cadence_s=round(cadence, 1), sampling=style)


def make_sim(settings: TrackSettings, accel_noise: float, rng: np.random.Generator) -> Sim:
    """A :class:`Sim` on the fine grid of ``settings`` (cadence / substeps).

    ``accel_noise`` is the LEO value; it scales with (n / n_LEO)^2 like every acceleration of
    the same geometry in orbit-scaled time (1e-6 m/s^2 in LEO is ~4e-9 m/s^2 in GEO).
    """
    sub = settings.substeps
    n_obs = settings.n_samples - 1
    n = cw.orbit_mean_motion(settings.orbit)
    return Sim(n, settings.cadence_s / sub, n_obs * sub, accel_noise * cw.speed_scale(n) ** 2, rng)


def sample_indices(rng: np.random.Generator, settings: TrackSettings) -> np.ndarray:
    """Sorted indices into the fine grid of the samples one track reports.

    ``jitter`` moves every inner sample by up to half a cadence either way (steps 0.25-1.75
    cadences); ``gaps`` removes 1-3 contiguous runs of 3-12 % of the window each and 0-8 % of
    the samples at random. The first and last samples are always kept.
    """
    sub, n_obs = settings.substeps, settings.n_samples - 1
    idx = np.arange(n_obs + 1) * sub
    if "jitter" in settings.sampling and n_obs > 1:
        idx[1:-1] += rng.integers(-(sub // 2), sub - sub // 2, n_obs - 1)
    keep = np.ones(n_obs + 1, dtype=bool)
    if "gaps" in settings.sampling and n_obs > 12:
        for _ in range(int(rng.integers(1, 4))):
            length = max(1, int(rng.uniform(0.03, 0.12) * n_obs))
            start = int(rng.integers(3, max(4, n_obs - 3 - length)))
            keep[start:start + length] = False
        keep &= rng.random(n_obs + 1) >= rng.uniform(0.0, 0.08)
        keep[:3] = keep[-3:] = True
    return idx[keep]


# ------------------------------------------------------------------------------------ guidance
def draw_hop(rng: np.random.Generator) -> float:
    """A guided hop duration, orbits (uniform in :data:`HOP_ORBITS`)."""
    return float(rng.uniform(*HOP_ORBITS))


def equal_hops(total_orbits: float) -> list[float]:
    """The fewest equal hops (orbits, at most ``HOP_ORBITS[1]`` each) that add up to ``total_orbits``."""
    m = max(1, math.ceil(total_orbits / HOP_ORBITS[1]))
    return [total_orbits / m] * m


@dataclasses.dataclass
class Plan:
    """Guidance plan of one scenario: initial state, burns at sample steps, hold thrust."""

    # Initial LVLH state (6,) at t = 0.
    state0: np.ndarray
    # (step, kind, target, arrival step, error scale): GO retargets to ``target`` (3,) arriving at the arrival
    # step (two-impulse velocity minus the current one, with execution error); STOP nulls the
    # relative velocity exactly and anchors the track there; KEEP retargets to the track's anchor
    # (its initial position until a STOP).
    events: list[tuple[int, int, np.ndarray, int, float]] = dataclasses.field(default_factory=list)
    # Continuous hold thrust at the initial position on steps < hold_until (a far hold before the
    # first burn).
    hold_until: int = 0


class Guide:
    """Turns times into steps and builds hop sequences for one scenario on a :class:`Sim`."""

    def __init__(self, sim: Sim, mix: ManoeuvreMix):
        self.sim, self.mix, self.rng = sim, mix, sim.rng

    def step(self, t: float) -> int:
        """Nearest sample step of time ``t`` (s); may lie outside the window."""
        return int(round(t / self.sim.dt))

    def coast(self, state: np.ndarray, t: float) -> np.ndarray:
        """State (6,) after coasting ``t`` seconds (negative: backwards)."""
        return cw.stm(self.sim.n, t) @ state

    def hops(self, plan: Plan, r_from: np.ndarray, t_from: float, durations: list[float], r_to: np.ndarray,
             force_last_correction: bool = False) -> float:
        """Append GO events for hops (orbits each) from ``r_from`` at ``t_from`` to ``r_to``.

        Waypoints lie on the start's line of sight, their ranges evenly spaced between both
        ends (a steady closing speed); every hop may get a mid-course correction (always the last
        one if ``force_last_correction``). Events before t = 0 are not recorded (the target is
        already on that hop). Returns the arrival time at ``r_to``.
        """
        period, rng = self.sim.period, self.rng
        m, t = len(durations), t_from
        for i, tau in enumerate(durations):
            target = np.asarray(r_to, dtype=float) if i == m - 1 else _waypoint(r_from, r_to, (i + 1) / m)
            k0, k1 = self.step(t), self.step(t + tau * period)
            if k0 >= 0:
                plan.events.append((k0, GO, target, k1, 1.0))
            last = i == m - 1
            if (last and force_last_correction) or rng.random() < self.mix.correction_prob:
                f_lo, f_hi = 0.35, min(0.8, 1.0 - MIN_CORRECTION_ORBITS / tau)
                if f_hi > f_lo:
                    kc = self.step(t + rng.uniform(f_lo, f_hi) * tau * period)
                    if 0 <= kc < k1:
                        plan.events.append((kc, GO, target, k1, CORRECTION_ERROR))
            t += tau * period
        return t


def _expand(plans: list[Plan], n_var: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Plan]]:
    """Initial states (m * n_var, 6) with 2 % position jitter per variant, and the plan of each."""
    state0 = np.stack([p.state0 for p in plans])
    state0 = np.repeat(state0, n_var, axis=0)
    state0[:, :3] *= 1.0 + 0.02 * rng.standard_normal((len(state0), 3))
    return state0, [p for p in plans for _ in range(n_var)]


def run_plans(sim: Sim, plans: list[Plan], n_var: int, err: float,
              log: list[tuple[int, int, np.ndarray]] | None = None) -> np.ndarray:
    """Propagate every scenario's plan for ``n_var`` variants (execution error ``err``):
    states (m * n_var, T, 6). ``log`` (optional) receives every burn as (step, track, delta-v (3,))."""
    state0, per_track = _expand(plans, n_var, sim.rng)
    by_step: dict[int, list[tuple[int, int, np.ndarray, int, float]]] = {}
    for i, p in enumerate(per_track):
        for k, kind, target, k_arr, scale in p.events:
            if 0 <= k < sim.n_steps:
                by_step.setdefault(k, []).append((i, kind, target, k_arr, scale))
    accel = plan_thrust(sim, per_track, state0[:, :3])
    return sim.run(state0, accel=accel, controller=_controller(sim, by_step, err, state0[:, :3].copy(), log))


def plan_thrust(sim: Sim, per_track: list[Plan], r0: np.ndarray) -> np.ndarray:
    """Continuous thrust (N, T-1, 3) of each track's plan: the hold at its start r0 (N, 3) until
    ``hold_until``."""
    accel = np.zeros((len(per_track), sim.n_steps, 3))
    for i, p in enumerate(per_track):
        if p.hold_until > 0:
            accel[i, :min(p.hold_until, sim.n_steps)] = cw.hold_acceleration(sim.n, r0[i])
    return accel


def _controller(sim: Sim, by_step: dict, err: float, anchor: np.ndarray,
                log: list[tuple[int, int, np.ndarray]] | None = None
                ) -> Callable[[int, np.ndarray], np.ndarray | None]:
    """Closed-loop burns: at a planned step, the delta-v each track's event asks for now.

    ``anchor`` (N, 3) is where KEEP events return to; a STOP moves it to where the track stopped.
    """
    n, dt, rng = sim.n, sim.dt, sim.rng

    def control(k: int, x: np.ndarray) -> np.ndarray | None:
        events = by_step.get(k)
        if not events:
            return None
        dv = np.zeros((len(x), 3))
        for i, kind, target, k_arr, scale in events:
            if kind == STOP:
                dv[i] = -x[i, 3:]
                anchor[i] = x[i, :3]
                continue
            if kind == KEEP:
                target = anchor[i]
            tau = np.array([(k_arr - k) * dt])
            want = cw.two_impulse_velocity(x[i:i + 1, :3], target[None, :], n, tau)[0]
            d = want - x[i, 3:]
            e = err * scale
            if e > 0:
                d = d * (1.0 + e * rng.standard_normal()) + e * np.linalg.norm(d) * rng.standard_normal(3) / np.sqrt(3)
            dv[i] = d
        if log is not None:
            log.extend((k, i, dv[i].copy()) for i, *_ in events)
        return dv

    return control


# ---------------------------------------------------------------------------------- generators
def _vbar_direction(rng: np.random.Generator, spread: float = 0.1) -> np.ndarray:
    """(3,) unit vector near the +/- V-bar (along-track): radial and cross-track parts uniform in
    +/- spread before normalising (radial offsets of kilometres cost metres per second)."""
    d = np.array([rng.uniform(-spread, spread), rng.choice([-1.0, 1.0]), rng.uniform(-spread, spread)])
    return d / np.linalg.norm(d)


def _far_start(g: Guide, lo: float, hi: float, spread: float = 0.1) -> tuple[np.ndarray, bool]:
    """Initial state (6,) far out (log-uniform lo-hi m near the V-bar) and whether it holds there
    (True: continuous hold thrust until the first burn; False: a slow co-elliptic drift inwards)."""
    rng, n = g.rng, g.sim.n
    r = _vbar_direction(rng, spread) * _log_uniform(rng, lo, hi, 1)[0]
    if rng.random() < 0.5:
        return np.concatenate([r, np.zeros(3)]), True
    # Drift inwards: closest approach 2-4 windows away (x0 = dh, y0 = 1.5 n dh t_c).
    t_c = rng.uniform(2.0, 4.0) * g.sim.window
    dh = r[1] / (1.5 * n * t_c)
    return np.array([dh, r[1], r[2], 0.0, -1.5 * n * dh, 0.0]), False


def _standoff(rng: np.random.Generator, direction: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A standoff point lo-hi m out along ``direction`` (3,) (the start of the final approach)."""
    return direction / np.linalg.norm(direction) * rng.uniform(lo, hi)


def plan_hovering(g: Guide) -> Plan:
    """Hold a point 0.5-10 km away with continuous thrust, or 0.3-10 km away by hops back to it every
    1-4 % of an orbit."""
    rng, sim = g.rng, g.sim
    impulsive = rng.random() < g.mix.hovering_impulsive
    spread = 0.1 if impulsive else 0.3
    # An open-loop thrust hold drifts ~10-20 m over two LEO orbits (unmodelled acceleration): from 500 m.
    r = _unit(rng, 1, z_scale=spread, x_scale=spread)[0] * _log_uniform(rng, 300.0 if impulsive else 500.0,
                                                                        10_000.0, 1)[0]
    # A small velocity error: under hold thrust, 1 mm/s along-track drifts ~3 m per 1000 s.
    plan = Plan(state0=np.concatenate([r, 0.0002 * cw.speed_scale(sim.n) * rng.standard_normal(3)]))
    if not impulsive:
        plan.hold_until = sim.n_steps
        return plan
    k_sk = max(2, g.step(rng.uniform(0.01, 0.04) * sim.period))
    _keep_station(plan, 0, sim.n_steps, k_sk)
    return plan


def _keep_station(plan: Plan, k_from: int, k_to: int, k_sk: int) -> None:
    """Impulsive station-keeping: every ``k_sk`` steps a hop back to the track's anchor (where it
    started or last stopped) arriving ``k_sk`` steps later."""
    for k in range(k_from, k_to, k_sk):
        plan.events.append((k, KEEP, np.zeros(3), k + k_sk, CORRECTION_ERROR))


def plan_approach(g: Guide) -> Plan:
    """A swing-out transfer, phasing drift, a transfer coasting through the window, or hops with
    burns in the window."""
    rng, sim, n, period = g.rng, g.sim, g.sim.n, g.sim.period
    # (no draw when the style is off: configs without it keep their tracks)
    if g.mix.approach_swing > 0 and rng.random() < g.mix.approach_swing:
        plan = _swing_transfer(g)
        if plan is not None:
            return plan
    u = rng.random()
    if u < g.mix.approach_burns:
        state0, holds = _far_start(g, 3000.0, 15_000.0)
        plan = Plan(state0=state0)
        t_b = rng.uniform(0.05, 0.4) * sim.window
        if holds:
            plan.hold_until = g.step(t_b)
        r_b = g.coast(state0, t_b)[:3] if not holds else state0[:3]
        rf = _standoff(rng, r_b, 0.1 * np.linalg.norm(r_b), 0.45 * np.linalg.norm(r_b))
        need = (sim.window - t_b) / period * rng.uniform(1.05, 1.4)
        durations: list[float] = []
        while sum(durations) < need:
            durations.append(draw_hop(rng))
        g.hops(plan, r_b, t_b, durations, rf)
        return plan
    coast_ok = sim.window * 1.05 <= LONG_HOP[1] * period
    if coast_ok and u < g.mix.approach_burns + (1.0 - g.mix.approach_burns) / 2:
        # Two-impulse transfer towards the approach ellipsoid, departed before the window (from near
        # the V-bar: a long transfer from a radial offset swings out before it closes in).
        d = _vbar_direction(rng, 0.15)
        r_dep = d * _log_uniform(rng, 3000.0, 12_000.0, 1)[0]
        rf = d / np.linalg.norm(d / APPROACH_ELLIPSOID_M)
        tau = rng.uniform(max(LONG_HOP[0], sim.window * 1.05 / period), LONG_HOP[1]) * period
        pre = rng.uniform(0.0, max(tau - sim.window * 1.05, 0.0))
        v_dep = cw.two_impulse_velocity(r_dep[None], rf[None], n, np.array([tau]))[0]
        return Plan(state0=g.coast(np.concatenate([r_dep, v_dep]), pre))
    # Phasing drift: co-elliptic, closest approach 1.3-2.5 windows away.
    y0 = rng.choice([-1.0, 1.0]) * _log_uniform(rng, 2000.0, 12_000.0, 1)[0]
    t_c = rng.uniform(1.3, 2.5) * sim.window
    dh = y0 / (1.5 * n * t_c)
    z0 = rng.uniform(-0.3, 0.3) * abs(dh)
    return Plan(state0=np.array([dh, y0, z0, 0.0, -1.5 * n * dh, 0.0]))


def _swing_transfer(g: Guide) -> Plan | None:
    """One long transfer from 3-12 km out, up to 40 % off the V-bar radially, to a V-bar standoff
    point 0.4-2 km out, departing at -5..+5 % of its duration (held there until a departure inside
    the window), the window ending 75-97 % of the way: the range swings out before it closes in.
    None if the window is too long for one transfer of 0.5-0.95 orbits (or singular targeting)."""
    rng, sim, n, period = g.rng, g.sim, g.sim.n, g.sim.period
    s_dep, q = rng.uniform(-0.05, 0.05), rng.uniform(0.75, 0.97)
    tau = sim.window / (q - s_dep)
    d = np.array([rng.uniform(-0.4, 0.4), rng.choice([-1.0, 1.0]), rng.uniform(-0.1, 0.1)])
    r_dep = d / np.linalg.norm(d) * _log_uniform(rng, 3000.0, 12_000.0, 1)[0]
    standoff = np.array([rng.uniform(-0.05, 0.05), np.sign(d[1]), 0.0])
    standoff *= rng.uniform(400.0, 2000.0) / np.linalg.norm(standoff)
    if not 0.5 <= tau / period <= 0.95:
        return None
    t_dep = s_dep * tau
    if t_dep > 0:
        plan = Plan(state0=np.concatenate([r_dep, np.zeros(3)]), hold_until=g.step(t_dep))
        plan.events.append((g.step(t_dep), GO, standoff, g.step(t_dep + tau), 1.0))
        return plan
    v_dep = cw.two_impulse_velocity(r_dep[None], standoff[None], n, np.array([tau]))[0]
    return Plan(state0=g.coast(np.concatenate([r_dep, v_dep]), -t_dep))


def _arrive_by_hops(g: Guide, plan: Plan, burns_inside: bool, r_from: np.ndarray, r_to: np.ndarray,
                    t_arr: float, t_b: float) -> np.ndarray:
    """Hops from ``r_from`` arriving at ``r_to`` at ``t_arr``; returns the initial state (6,).

    ``burns_inside``: the first hop departs at ``t_b`` >= 0 (``r_from`` is where the target
    holds until then); else the hops are laid back from ``t_arr`` until the first departs before
    t = 0, and the target starts on that hop (coasting).
    """
    period, n = g.sim.period, g.sim.n
    if burns_inside:
        durations = equal_hops((t_arr - t_b) / period)
        g.hops(plan, r_from, t_b, durations, r_to, force_last_correction=True)
        return np.concatenate([r_from, np.zeros(3)])
    # Lay hops back from the arrival until one departs before t = 0 (so t = 0 falls in the first).
    durations = [draw_hop(g.rng)]
    while sum(durations) * period < t_arr:
        durations.insert(0, draw_hop(g.rng))
    t_dep = t_arr - sum(durations) * period
    g.hops(plan, r_from, t_dep, durations, r_to, force_last_correction=True)
    # The target is on the first hop at t = 0: its departure state coasted forward.
    target = r_to if len(durations) == 1 else _waypoint(r_from, r_to, 1.0 / len(durations))
    v_dep = cw.two_impulse_velocity(r_from[None], target[None], n, np.array([durations[0] * period]))[0]
    return g.coast(np.concatenate([r_from, v_dep]), -t_dep)


def _plan_hops(g: Guide, share: float, t_b_window: tuple[float, float], r_from: np.ndarray, r_to: np.ndarray,
               t_arr: float, drift_share: float = 0.0) -> Plan:
    """A plan of hops from ``r_from`` arriving at ``r_to`` at ``t_arr`` (:func:`_arrive_by_hops`).

    With probability ``share`` the first burn falls inside the window, at ``t_b`` drawn uniformly in
    ``t_b_window`` (fractions of the window), the target holding at ``r_from`` until then; unless
    less than the shortest hop (``HOP_ORBITS[0]``) would remain, then (and otherwise) the target is
    already coasting on the first hop at t = 0. Of the in-window first burns, a share ``drift_share``
    is made from a drift instead of a hold.
    """
    inside = g.rng.random() < share
    t_b = g.rng.uniform(*t_b_window) * g.sim.window
    if inside and (t_arr - t_b) / g.sim.period < HOP_ORBITS[0]:
        inside = False
    plan = Plan(state0=np.zeros(6))
    plan.state0 = _arrive_by_hops(g, plan, inside, r_from, r_to, t_arr, t_b)
    if inside and drift_share > 0 and g.rng.random() < drift_share:
        # Drifting (any direction, up to 80 % of the course's mean speed) into r_from at t_b instead of
        # holding there; the closed-loop burn at t_b sets the course from wherever it then is.
        v_pre = _unit(g.rng, 1)[0] * g.rng.uniform(0.0, 0.8) * np.linalg.norm(r_to - r_from) / (t_arr - t_b)
        plan.state0 = g.coast(np.concatenate([r_from, v_pre]), -t_b)
    elif inside:
        plan.hold_until = g.step(t_b)
    return plan


def _waypoint(r_from: np.ndarray, r_to: np.ndarray, q: float) -> np.ndarray:
    """The point a fraction ``q`` of the way in: on the line of sight of ``r_from``, range
    interpolated linearly to that of ``r_to``."""
    rho0, rho1 = np.linalg.norm(r_from), np.linalg.norm(r_to)
    return r_from / rho0 * ((1 - q) * rho0 + q * rho1)


def plan_rendezvous(g: Guide) -> Plan:
    """Hops to an approach point 100-300 m out on the V-bar, a slow final hop (0.15-0.3 orbits,
    starting after a quarter of the window) to a docking port 20-40 m out arriving at about 0.45-0.85
    of the window, braking burn, then the port is kept by small corrections every 1-3 % of an orbit."""
    rng, sim, period = g.rng, g.sim, g.sim.period
    side = rng.choice([-1.0, 1.0])
    port = np.array([0.0, side * rng.uniform(20.0, 40.0), 0.0])
    entry = np.array([0.0, side * rng.uniform(100.0, 300.0), 0.0])
    r_from = _vbar_direction(rng, 0.25) * _log_uniform(rng, 1500.0, 10_000.0, 1)[0]
    r_from[1] = side * abs(r_from[1])
    t_arr = rng.uniform(0.45, 0.85) * sim.window
    final = rng.uniform(0.15, 0.3) * period
    # The window starts well before the final hop (else the target would start < 300 m out).
    t_entry = max(t_arr - final, 0.25 * sim.window)
    t_arr = t_entry + final
    plan = _plan_hops(g, g.mix.rendezvous_burns, (0.05, 0.3), r_from, entry, t_entry)
    k_entry, k_arr = g.step(t_entry), g.step(t_arr)
    plan.events.append((k_entry, GO, port, k_arr, 1.0))
    k_corr = g.step(t_entry + rng.uniform(0.5, 0.75) * (t_arr - t_entry))
    plan.events.append((k_corr, GO, port, k_arr, CORRECTION_ERROR))
    plan.events.append((k_arr, STOP, port, k_arr, 0.0))
    _keep_station(plan, k_arr + 1, sim.n_steps, max(2, g.step(rng.uniform(0.01, 0.03) * period)))
    return plan


def plan_collision(g: Guide) -> Plan:
    """Hops from 1.5-12 km to a hull point (0-25 m), arriving with speed at the last sample."""
    rng, sim = g.rng, g.sim
    hit = _unit(rng, 1)[0] * rng.uniform(0.0, 25.0)
    r_from = _vbar_direction(rng, 0.3) * _log_uniform(rng, 1500.0, 12_000.0, 1)[0]
    return _plan_hops(g, g.mix.collision_burns, (0.05, 0.4), r_from, hit, sim.window)


def plan_retreat(g: Guide) -> Plan:
    """Collision course (set up before or inside the window), then an evasive transfer away.

    The evasive burn comes at 0.3-0.6 of the window, 0.1-0.35 orbits before the impact it
    avoids, and sends the target on a 0.2-0.42-orbit hop to a V-bar point 1-4 km further out
    than where the approach started (braking there and keeping station if the window lasts).
    """
    rng, sim, period = g.rng, g.sim, g.sim.period
    w = sim.window
    t_ev = rng.uniform(0.3, 0.6) * w
    t_imp = t_ev + rng.uniform(0.1, 0.35) * period
    hit = _unit(rng, 1)[0] * rng.uniform(0.0, 25.0)
    r_from = _vbar_direction(rng, 0.15) * _log_uniform(rng, 2000.0, 8000.0, 1)[0]
    plan = _plan_hops(g, g.mix.retreat_setup, (0.03, 0.2), r_from, hit, t_imp, g.mix.setup_drift)
    k_ev = g.step(t_ev)
    plan.events = [e for e in plan.events if e[0] < k_ev]
    side = 1.0 if r_from[1] >= 0 else -1.0
    far = np.array([0.0, side * (np.linalg.norm(r_from) * rng.uniform(0.6, 1.2) + rng.uniform(1000.0, 4000.0)), 0.0])
    t_far = g.hops(plan, r_from, t_ev, [draw_hop(rng)], far, force_last_correction=True)
    k_far = g.step(t_far)
    if k_far < sim.n_steps:
        plan.events.append((k_far, STOP, far, k_far, 0.0))
        _keep_station(plan, k_far + 1, sim.n_steps, max(2, g.step(rng.uniform(0.02, 0.05) * period)))
    return plan


def gen_random_wide(sim: Sim, n_scen: int, n_var: int) -> np.ndarray:
    """Classic random (3-5 impulses 0.8-2.5 m/s, drift 0-1 m/s from a start 1-15 km out, mostly
    along-track) with speeds scaled by n / n_LEO."""
    scale = cw.speed_scale(sim.n)
    rng = sim.rng
    # Mostly along-track: a radial offset of kilometres alone makes a relative orbit of ~10 m/s.
    r0 = np.stack([_vbar_direction(rng, 0.5) for _ in range(n_scen)])
    r0 *= _log_uniform(rng, 1000.0, 15_000.0, n_scen)[:, None]
    v0 = _unit(rng, n_scen) * (scale * rng.uniform(0.0, 1.0, n_scen))[:, None]
    v0[:, 1] += -2.0 * sim.n * r0[:, 0]
    n_burn = rng.integers(3, 6, n_scen)
    lo, hi = max(4, sim.n_steps // 20), sim.n_steps - max(5, sim.n_steps // 20)
    frac = (np.arange(5)[None, :] + 0.5 + rng.uniform(-0.15, 0.15, (n_scen, 5))) / n_burn[:, None]
    k_burn = np.rint(lo + frac * (hi - lo)).astype(int)
    dv = _unit(rng, n_scen * 5).reshape(n_scen, 5, 3) * (scale * rng.uniform(0.8, 2.5, (n_scen, 5, 1)))
    r0, v0 = simulate._variants(r0, n_var, rng, 0.02), simulate._variants(v0, n_var)
    n_burn, k_burn, dv = (simulate._variants(n_burn, n_var), simulate._variants(k_burn, n_var),
                          simulate._variants(dv, n_var, rng, 0.05))
    impulses = sim.zeros_impulses(len(r0))
    for j in range(5):
        use = j < n_burn
        impulses[np.flatnonzero(use), np.minimum(k_burn[use, j], sim.n_steps)] += dv[use, j]
    return sim.run(np.concatenate([r0, v0], axis=1), impulses=impulses)


PLANNERS: dict[str, Callable[[Guide], Plan]] = {
    "hovering": plan_hovering, "approach": plan_approach, "rendezvous": plan_rendezvous,
    "collision": plan_collision, "retreat": plan_retreat,
}


def generate(motion: str, sim: Sim, n_scen: int, n_var: int, mix: ManoeuvreMix) -> np.ndarray:
    """True states (n_scen * n_var, T, 6) of ``motion`` tracks on ``sim``'s grid (wide styles)."""
    if motion == "flyby":
        return simulate.gen_flyby(sim, n_scen, n_var)
    if motion == "fly_around":
        return simulate.gen_fly_around(sim, n_scen, n_var)
    if motion == "random":
        return gen_random_wide(sim, n_scen, n_var)
    guide = Guide(sim, mix)
    plans = [PLANNERS[motion](guide) for _ in range(n_scen)]
    return run_plans(sim, plans, n_var, mix.execution_error)


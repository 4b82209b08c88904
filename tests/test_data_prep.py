"""Physics, features and relabelling of the data_prep stage (no files written)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from data_prep import cw, rules, simulate
from data_prep.features import FEATURE_KEYS, compute_features, features_batch
from data_prep.oracle import DEFAULT_THRESHOLDS, Thresholds, drop_reason, explain_motion, relabel_motion
from data_prep.sensor import SensorNoise, measure
from pipeline.core.taxonomy import LABELS, MOTION_LABELS

N_LEO = cw.LEO_MEAN_MOTION


def cw_rhs(n: float, accel: np.ndarray):
    """Right-hand side of the CW ODE with a constant thrust acceleration (3,)."""
    def f(_t, s):
        x, y, z, vx, vy, vz = s
        return [vx, vy, vz, 3 * n * n * x + 2 * n * vy + accel[0], -2 * n * vx + accel[1], -n * n * z + accel[2]]
    return f


def test_mean_motion_matches_reference():
    assert cw.orbit_mean_motion("LEO") == pytest.approx(1.13e-3, rel=0.01)
    assert cw.orbit_mean_motion("GEO") == pytest.approx(7.29e-5, rel=0.01)


def test_stm_equals_matrix_exponential():
    for t in (1.0, 60.0, 1234.5, 5000.0):
        np.testing.assert_allclose(cw.stm(N_LEO, t), expm(cw.system_matrix(N_LEO) * t), rtol=1e-9, atol=1e-9)


def test_propagator_with_thrust_and_impulses_matches_solve_ivp():
    rng = np.random.default_rng(1)
    dt, steps = 60.0, 30
    state0 = np.concatenate([rng.uniform(-3000, 3000, (3, 3)), rng.uniform(-2, 2, (3, 3))], axis=1)
    accel = rng.normal(0.0, 1e-3, (3, steps, 3))
    impulses = np.zeros((3, steps + 1, 3))
    impulses[:, 10] = rng.normal(0.0, 1.0, (3, 3))
    got = cw.propagate(state0, N_LEO, dt, steps, impulses=impulses, accel=accel)
    for i in range(3):
        s = state0[i].copy()
        for k in range(steps):
            np.testing.assert_allclose(got[i, k], s, rtol=1e-8, atol=1e-5)
            s[3:] += impulses[i, k]
            sol = solve_ivp(cw_rhs(N_LEO, accel[i, k]), (0.0, dt), s, rtol=1e-12, atol=1e-10, method="DOP853")
            s = sol.y[:, -1]
        np.testing.assert_allclose(got[i, steps], s, rtol=1e-8, atol=1e-5)


def test_hold_acceleration_keeps_target_at_rest():
    r = np.array([[1000.0, -2000.0, 500.0]])
    accel = np.repeat(cw.hold_acceleration(N_LEO, r)[:, None, :], 50, axis=1)
    states = cw.propagate(np.concatenate([r, np.zeros((1, 3))], axis=1), N_LEO, 60.0, 50, accel=accel)
    np.testing.assert_allclose(states[0, :, :3], np.repeat(r, 51, axis=0), atol=1e-6)
    # 1 km radial in LEO needs ~3.9e-3 m/s^2 (REFERENCE.md).
    assert abs(cw.hold_acceleration(N_LEO, np.array([1000.0, 0, 0]))[0]) == pytest.approx(3.85e-3, rel=0.02)


def test_two_impulse_targeting_hits_the_target():
    r0 = np.array([[500.0, 8000.0, 300.0], [-1000.0, -4000.0, 0.0]])
    rf = np.array([[0.0, 30.0, 0.0], [5.0, 0.0, -5.0]])
    tau = np.array([1800.0, 2400.0])
    v0 = cw.two_impulse_velocity(r0, rf, N_LEO, tau)
    end = np.einsum("nij,nj->ni", cw.stm(N_LEO, tau), np.concatenate([r0, v0], axis=1))
    np.testing.assert_allclose(end[:, :3], rf, atol=1e-6)


def test_natural_fly_around_is_closed():
    x0 = 1000.0
    s0 = np.array([[x0, 0.0, 0.0, 0.0, -2 * N_LEO * x0, 0.0]])
    period = 2 * np.pi / N_LEO
    end = np.einsum("ij,nj->ni", cw.stm(N_LEO, period), s0)
    np.testing.assert_allclose(end, s0, atol=1e-6)


def _simulate(motion: str, n_scen: int = 40, n_var: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    sim = simulate.Sim(N_LEO, 60.0, 50, 1e-6, rng)
    states = simulate.GENERATORS[motion](sim, n_scen, n_var)
    meas = measure(states, rng, SensorNoise())
    t = np.arange(51) * 60.0
    return states, t, meas


@pytest.mark.parametrize("motion", MOTION_LABELS)
def test_each_generator_relabels_to_its_class(motion):
    states, t, m = _simulate(motion)
    assert states.shape == (80, 51, 6) and np.all(np.isfinite(states))
    feats = features_batch(t, m["range_m"], m["range_rate_mps"], m["az_deg"], m["el_deg"], N_LEO)
    labels = collections.Counter(relabel_motion(f) for f in feats)
    # Most samples of every generator carry the physics of their class.
    assert labels[motion] / len(feats) >= 0.75, labels


def test_compute_features_single_equals_batch_and_has_contract_keys():
    _, t, m = _simulate("random", n_scen=3, n_var=1)
    batch = features_batch(t, m["range_m"], m["range_rate_mps"], m["az_deg"], m["el_deg"], N_LEO)
    for i in range(3):
        obs = {"t_s": t.tolist(), "range_m": m["range_m"][i].tolist(), "range_rate_mps": m["range_rate_mps"][i].tolist(),
               "az_deg": m["az_deg"][i].tolist(), "el_deg": m["el_deg"][i].tolist()}
        f = compute_features(obs)
        assert tuple(f) == FEATURE_KEYS
        assert f == batch[i]
        assert f["n_burns"] >= 2 and f["max_dv_mps"] > 0.5


def test_features_recover_true_geometry_noise_free():
    states, t, _ = _simulate("flyby", n_scen=2, n_var=1)
    m = measure(states, np.random.default_rng(0), SensorNoise(0.0, 0.0, 0.0, 0.0))
    f = features_batch(t, m["range_m"], m["range_rate_mps"], m["az_deg"], m["el_deg"], N_LEO)[0]
    true_r = np.linalg.norm(states[0, :, :3], axis=1)
    assert f["initial_range_m"] == pytest.approx(true_r[0], rel=1e-3)
    assert f["min_range_m"] == pytest.approx(true_r.min(), rel=1e-3)
    assert f["final_speed_mps"] == pytest.approx(np.linalg.norm(states[0, -1, 3:]), rel=0.05)
    assert f["n_burns"] == 0 and f["range_trend"] == "decreasing_then_increasing"


def test_compute_features_rejects_bad_observations():
    with pytest.raises(ValueError):
        compute_features({"t_s": [0, 60], "range_m": [1.0], "range_rate_mps": [0, 0], "az_deg": [0, 0], "el_deg": [0, 0]})
    with pytest.raises(ValueError):
        compute_features({"t_s": [0, 60, 120], "range_m": [1.0, float("nan"), 1.0], "range_rate_mps": [0, 0, 0],
                          "az_deg": [0, 0, 0], "el_deg": [0, 0, 0]})


def _feat(**kw):
    base = {"initial_range_m": 5000.0, "min_range_m": 2000.0, "t_min_range_s": 1500.0, "final_range_m": 5000.0,
            "final_speed_mps": 3.0, "mean_range_rate_mps": 0.0, "extent_m": [100.0, 9000.0, 50.0],
            "max_dv_mps": 0.0, "n_burns": 0, "entered_keepout": False, "range_trend": "decreasing_then_increasing"}
    base.update(kw)
    return base


@pytest.mark.parametrize("features, expected", [
    (_feat(), "flyby"),
    (_feat(extent_m=[3000.0, 6000.0, 100.0], initial_range_m=3000.0, final_range_m=3500.0), "fly_around"),
    (_feat(initial_range_m=3000.0, min_range_m=2990.0, final_range_m=3000.0, final_speed_mps=0.01,
           extent_m=[5.0, 10.0, 5.0]), "hovering"),
    (_feat(initial_range_m=6000.0, min_range_m=30.0, final_range_m=30.0, final_speed_mps=0.01), "rendezvous"),
    (_feat(initial_range_m=6000.0, min_range_m=10.0, final_range_m=10.0, final_speed_mps=2.0), "collision"),
    (_feat(n_burns=3, max_dv_mps=1.5), "random"),
    (_feat(n_burns=1, initial_range_m=4000.0, min_range_m=1500.0, final_range_m=6000.0), "retreat"),
    (_feat(initial_range_m=9000.0, min_range_m=4000.0, final_range_m=4000.0, extent_m=[10.0, 5000.0, 5.0]), "approach"),
    # Ambiguous: a single burn without closing first; a slow drift that neither closes nor passes.
    (_feat(n_burns=1, initial_range_m=1500.0, min_range_m=1500.0, final_range_m=6000.0), None),
    (_feat(initial_range_m=5000.0, min_range_m=4900.0, final_range_m=4950.0, extent_m=[10.0, 900.0, 5.0]), None),
    # Passing inside the keep-out sphere is not a flyby.
    (_feat(min_range_m=150.0, extent_m=[10.0, 9000.0, 5.0]), None),
])
def test_relabel_rules_on_hand_made_features(features, expected):
    assert relabel_motion(features) == expected


def test_drop_reasons_name_the_outcome_and_the_branch():
    """What the stage counts in its manifest for a dropped sample (data_prep.oracle.drop_reason)."""
    one_burn = _feat(n_burns=1, initial_range_m=1500.0, min_range_m=1500.0, final_range_m=6000.0)
    assert drop_reason(one_burn, "retreat") == "ambiguous:one_burn_not_a_retreat"
    close_hover = _feat(initial_range_m=100.0, min_range_m=30.0, final_range_m=30.0, final_speed_mps=0.01)
    assert drop_reason(close_hover, "rendezvous") == "ambiguous:rendezvous_from_too_close"
    drift = _feat(initial_range_m=5000.0, min_range_m=4900.0, final_range_m=4950.0, extent_m=[10.0, 900.0, 5.0])
    assert drop_reason(drift, "approach") == "ambiguous:coasting_matches_no_rule"
    assert drop_reason(_feat(), "approach") == "relabelled:flyby"
    assert drop_reason(_feat(), "flyby") is None and explain_motion(_feat()) == ("flyby", "flyby")


def test_thresholds_change_decisions():
    f = _feat(initial_range_m=6000.0, min_range_m=30.0, final_range_m=30.0, final_speed_mps=0.01)
    assert relabel_motion(f, Thresholds(rendezvous_range_m=20.0, contact_range_m=20.0)) is None
    assert DEFAULT_THRESHOLDS.keepout_radius_m == 200.0


def test_rules_are_total_and_deterministic():
    import itertools
    keys = list(rules.CONTEXT_VALUES)
    for values in itertools.product(*rules.CONTEXT_VALUES.values()):
        ctx = dict(zip(keys, values))
        for motion in MOTION_LABELS:
            labels = rules.intents(ctx, motion)
            assert labels["operation"] in LABELS["operation"] and labels["task"] in LABELS["task"]
            assert labels == rules.intents(dict(ctx), motion)
    # REFERENCE.md examples.
    assert rules.task_intent(False, "collision", "none") == "attack"
    assert rules.task_intent(False, "hovering", "photographing") == "detection"
    assert rules.task_intent(False, "fly_around", "photographing") == "detection"
    ctx = {"size": "large", "cooperative": False, "equipment": "camera", "lighting": "eclipse", "electromagnetic": "normal"}
    assert rules.operation_intent(ctx, "fly_around") == "none"

"""Stage ``data_prep``: simulate CW trajectories and/or import user data into split records.

``python -m pipeline data_prep --config data_prep/configs/demo.yaml [key=value ...]``

Simulation, per motion class: draw scenarios (base geometries) with ``variants_per_scenario``
variants each, propagate them (:mod:`data_prep.simulate`), observe them with the noisy
sensor (:mod:`data_prep.sensor`), derive features from the observation only
(:mod:`data_prep.features`) and keep a sample only if :func:`data_prep.oracle.relabel_motion`
gives back the generating class. The manifest counts the drops per class and outcome
(``dropped_per_class``: ambiguous or the class read instead) and per reason
(``dropped_per_reason``, ``dropped_reasons_total``: ``relabelled:<label>`` or
``ambiguous:<branch of the oracle's rules>``, :func:`data_prep.oracle.drop_reason`). Context fields are
drawn uniformly; operation and task intents follow :mod:`data_prep.rules`. Splits are
stratified by motion class and cut by scenario, so the variants of one scenario never
straddle splits. Imported rows are split by a hash of their sample id.

Outputs: ``{train,dev,test}.jsonl`` (contract records) and ``trajectories/{split}.npz``
(``sample_id`` (n,), ``states`` (n, T, 7) float32: t, x, y, z, vx, vy, vz in s, m, m/s; with
``simulator: wide`` the tracks differ in length: ``states`` is NaN-padded to the longest and
``lengths`` (n,) gives each track's sample count; that file is compressed).

``simulator: wide`` (:mod:`data_prep.wide`) draws orbit, window, cadence and sampling style per
scenario and flies manoeuvres inside the window; its observations name their orbit, so their
features are track features (:func:`data_prep.features.track_features`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from data_prep import cw, rules, simulate, wide
from data_prep.features import compute_features, features_batch
from data_prep.imports import ImportSpec, hashed_split, import_file
from data_prep.oracle import Thresholds, drop_reason
from data_prep.sensor import SensorNoise, measure
from pipeline.core.config import ConfigError
from pipeline.core.io import atomic_path, check_finite, write_jsonl
from pipeline.core.stage import Stage, StageResult
from pipeline.core.taxonomy import MOTION_LABELS

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Decimals kept in the stored observation (features are computed from the rounded values).
OBS_DECIMALS: dict[str, int] = {"t_s": 1, "range_m": 2, "range_rate_mps": 4, "az_deg": 4, "el_deg": 4}


@dataclasses.dataclass(frozen=True)
class DataPrepConfig:
    """Configuration of the data_prep stage."""

    # Output folder for {train,dev,test}.jsonl, trajectories/ and manifest.json.
    out_dir: Path
    # simulate: CW simulator only; import: only the files in `imports`; both: simulator + imports.
    mode: Literal["simulate", "import", "both"] = "simulate"
    # Number of simulated samples kept after relabelling (paper profile: 50,688), split evenly over `motions`.
    n_samples: int = 3000
    # Motion classes to simulate (subset of the taxonomy's motion labels).
    motions: tuple[str, ...] = MOTION_LABELS
    # Variants (geometry jitter, sensor noise, context) per scenario; a scenario never straddles splits.
    variants_per_scenario: int = 4
    # train/dev/test fractions (must sum to 1); applied per motion class over scenarios.
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # Master seed: same seed and config -> byte-identical outputs.
    seed: int = 0
    # Station orbit for the CW dynamics: LEO (400 km, n ~ 1.13e-3 rad/s) or GEO (n ~ 7.29e-5 rad/s).
    orbit: Literal["LEO", "GEO"] = "LEO"
    # Observation window and cadence, seconds (T = window_s / cadence_s + 1 samples).
    window_s: float = 3000.0
    cadence_s: float = 60.0
    # Sensor 1-sigma noise (range floor/fraction, angles in degrees, range-rate in m/s).
    noise: SensorNoise = dataclasses.field(default_factory=SensorNoise)
    # Unmodelled acceleration 1-sigma per step, m/s^2 (process noise).
    accel_noise_mps2: float = 1.0e-6
    # Relabelling thresholds (also used for burn detection in the features).
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    # Scenarios generated per batch (memory ~ batch * variants * T * 6 * 8 bytes per array).
    batch_scenarios: int = 1024
    # Generate this factor more scenarios than needed to cover relabelling drops.
    oversample: float = 1.3
    # User data files to import (mode import/both); see data_prep.imports.ImportSpec.
    imports: tuple[ImportSpec, ...] = ()
    # classic: the fixed orbit/window/cadence generators above. wide: tracks like real ones
    # (data_prep.wide): settings drawn per scenario from the keys below, manoeuvres inside the
    # window, observations that name their orbit (track features, variable lengths).
    # mixed: both in one set, `wide_share` of every class from the wide simulator (one model for both).
    simulator: Literal["classic", "wide", "mixed"] = "classic"
    # mixed: share of each class's samples drawn from the wide simulator (the rest classic).
    wide_share: float = 0.5
    # wide: orbits drawn uniformly per scenario (empty: `orbit`).
    orbits: tuple[Literal["LEO", "GEO"], ...] = ()
    # wide: window drawn uniformly between these many orbits (null: `window_s`).
    window_orbits: tuple[float, float] | None = None
    # wide: cadence drawn log-uniformly between these, seconds (null: `cadence_s`).
    cadence_range_s: tuple[float, float] | None = None
    # wide: sampling styles drawn uniformly per scenario: uniform | jitter (times moved up to half a
    # cadence) | gaps (1-3 gaps of 3-12 % of the window, 0-8 % dropouts) | jitter_gaps.
    sampling: tuple[Literal["uniform", "jitter", "gaps", "jitter_gaps"], ...] = ("uniform",)
    # wide: at most this many samples per track (the cadence is raised for long GEO windows).
    max_track_samples: int = 600
    # wide: fractions of each class flown in the new manoeuvre styles (data_prep.wide.ManoeuvreMix).
    manoeuvres: wide.ManoeuvreMix = dataclasses.field(default_factory=wide.ManoeuvreMix)
    # uniform: every context field drawn uniformly (operation is then ~71 % `none`). balanced: per kept sample,
    # `balance_candidates` uniform contexts are drawn and the one whose operation and task are rarest so far
    # in its motion class is kept, so the rule tables' rows are covered evenly (a separate random stream).
    context_sampling: Literal["uniform", "balanced"] = "uniform"
    # balanced: contexts drawn per kept sample to choose from.
    balance_candidates: int = 8


def validate_config(cfg: DataPrepConfig) -> None:
    """Semantic checks beyond types; raises ConfigError naming the key."""
    unknown = [m for m in cfg.motions if m not in MOTION_LABELS]
    if unknown:
        raise ConfigError(f"motions: unknown motion label(s) {unknown}; expected a subset of {list(MOTION_LABELS)}")
    if cfg.mode in ("simulate", "both") and (cfg.n_samples < 1 or not cfg.motions):
        raise ConfigError("n_samples: must be >= 1 (with at least one motion) when simulating")
    if cfg.mode in ("import", "both") and not cfg.imports:
        raise ConfigError(f"imports: mode={cfg.mode!r} needs at least one import file")
    if any(f < 0 for f in cfg.split_fractions) or sum(cfg.split_fractions) <= 0:
        raise ConfigError("split_fractions: must be non-negative with a positive sum", key="split_fractions")
    if abs(sum(cfg.split_fractions) - 1.0) > 1e-6:
        # renormalising silently would hide a typo (e.g. [0.8, 0.1, 0.2])
        total = sum(cfg.split_fractions)
        normalised = [round(f / total, 6) for f in cfg.split_fractions]
        raise ConfigError(f"split_fractions: {list(cfg.split_fractions)} sums to {total:g}, not 1; "
                          f"did you mean {normalised}?", key="split_fractions")
    if cfg.cadence_s <= 0 or cfg.window_s < 2 * cfg.cadence_s:
        raise ConfigError("window_s/cadence_s: need cadence_s > 0 and at least 3 samples per window")
    if cfg.variants_per_scenario < 1 or cfg.batch_scenarios < 1 or cfg.oversample < 1.0:
        raise ConfigError("variants_per_scenario, batch_scenarios must be >= 1 and oversample >= 1")
    if cfg.balance_candidates < 1:
        raise ConfigError("balance_candidates: must be >= 1")
    validate_wide(cfg)


def validate_wide(cfg: DataPrepConfig) -> None:
    """Checks of the wide-simulator keys; with ``simulator: classic`` they must keep their defaults."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(DataPrepConfig)}
    wide_keys = ("orbits", "window_orbits", "cadence_range_s", "sampling", "max_track_samples", "manoeuvres")
    if cfg.simulator != "mixed" and cfg.wide_share != defaults["wide_share"]:
        raise ConfigError(f"wide_share: only used with `simulator: mixed` (simulator is {cfg.simulator})")
    if not 0.0 <= cfg.wide_share <= 1.0:
        raise ConfigError(f"wide_share: {cfg.wide_share} is outside [0, 1]")
    if cfg.simulator == "classic":
        changed = [k for k in wide_keys if getattr(cfg, k) != defaults[k]]
        if changed:
            raise ConfigError(f"{changed[0]}: only used with `simulator: wide` (simulator is classic)")
        return
    if cfg.window_orbits is not None and not 0.05 <= cfg.window_orbits[0] <= cfg.window_orbits[1]:
        raise ConfigError("window_orbits: need 0.05 <= low <= high (orbits)")
    if cfg.cadence_range_s is not None and not 0 < cfg.cadence_range_s[0] <= cfg.cadence_range_s[1]:
        raise ConfigError("cadence_range_s: need 0 < low <= high (seconds)")
    if not cfg.sampling:
        raise ConfigError("sampling: at least one sampling style")
    if cfg.max_track_samples < 20:
        raise ConfigError("max_track_samples: must be >= 20")
    for f in dataclasses.fields(wide.ManoeuvreMix):
        value = getattr(cfg.manoeuvres, f.name)
        top = 0.3 if f.name == "execution_error" else 1.0
        if not 0.0 <= value <= top:
            raise ConfigError(f"manoeuvres.{f.name}: {value} outside [0, {top}]")


def class_targets(n_samples: int, motions: tuple[str, ...]) -> dict[str, int]:
    """Samples per motion class: an even split, the remainder to the first classes."""
    base, rem = divmod(n_samples, len(motions))
    return {m: base + (1 if i < rem else 0) for i, m in enumerate(motions)}


def _round_obs(meas: dict[str, np.ndarray], t: np.ndarray) -> dict[str, np.ndarray]:
    """Round measurements (N, T) to the stored decimals so features match the JSON exactly."""
    out = {k: np.round(v, OBS_DECIMALS[k]) for k, v in meas.items()}
    out["t_s"] = np.round(t, OBS_DECIMALS["t_s"])
    return out


def _draw_contexts(rng: np.random.Generator, n: int, orbit: str | list[str]) -> list[dict[str, Any]]:
    """n contexts with every field drawn uniformly from rules.CONTEXT_VALUES (orbit: one or per sample)."""
    draws = {k: rng.integers(0, len(v), n) for k, v in rules.CONTEXT_VALUES.items()}
    orbits = [orbit] * n if isinstance(orbit, str) else orbit
    return [
        {"orbit": orbits[i], **{k: rules.CONTEXT_VALUES[k][int(draws[k][i])] for k in rules.CONTEXT_VALUES}}
        for i in range(n)
    ]


class ContextBalancer:
    """Chooses each kept sample's context (``context_sampling``) for one motion class.

    ``uniform`` keeps the uniformly drawn context. ``balanced`` draws ``balance_candidates - 1`` more
    uniform contexts (same orbit) and keeps the one whose operation + task counts so far in this class are
    lowest (first wins ties), so rare rule-table rows get as many examples as common ones. Greedy and
    deterministic: its own random stream per batch, so the uniform path's draws are unchanged.
    """

    def __init__(self, cfg: DataPrepConfig, motion: str):
        self.balanced, self.k, self.motion = cfg.context_sampling == "balanced", cfg.balance_candidates, motion
        self.ops: Counter = Counter()
        self.tasks: Counter = Counter()

    def choose(self, drawn: dict[str, Any], rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, str]]:
        """The kept context and its labels (``rules.intents``)."""
        if not self.balanced:
            return drawn, rules.intents(drawn, self.motion)
        candidates = [drawn] + _draw_contexts(rng, self.k - 1, drawn["orbit"])
        labelled = [(c, rules.intents(c, self.motion)) for c in candidates]
        context, labels = min(labelled, key=lambda cl: self.ops[cl[1]["operation"]] + self.tasks[cl[1]["task"]])
        self.ops[labels["operation"]] += 1
        self.tasks[labels["task"]] += 1
        return context, labels


def simulate_tracks(cfg: DataPrepConfig, class_idx: int, motion: str, batch: int, n_scen: int
                    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Wide simulator: ``n_scen`` scenarios x variants of one class in one seeded batch.

    Every ``wide.SCENARIOS_PER_SETTING`` consecutive scenarios share one draw of orbit, window,
    cadence and sampling style (they propagate together); each track gets its own sample times.
    Returns per track the observation (with ``orbit``, variable length) and the true states at
    the observed times (T_i, 7) = t, x, y, z, vx, vy, vz. Scenario-major, like the classic path.
    """
    rng = np.random.default_rng([cfg.seed, class_idx, batch])
    orbits = cfg.orbits or (cfg.orbit,)
    observations, states_out = [], []
    for first in range(0, n_scen, wide.SCENARIOS_PER_SETTING):
        st = wide.draw_settings(rng, orbits, cfg.window_orbits, cfg.window_s, cfg.cadence_range_s, cfg.cadence_s,
                                cfg.sampling, cfg.max_track_samples)
        sim = wide.make_sim(st, cfg.accel_noise_mps2, rng)
        m = min(wide.SCENARIOS_PER_SETTING, n_scen - first)
        states = wide.generate(motion, sim, m, cfg.variants_per_scenario, cfg.manoeuvres)
        t_fine = np.arange(sim.n_steps + 1) * sim.dt
        for i in range(len(states)):
            idx = wide.sample_indices(rng, st)
            obs = _round_obs(measure(states[i:i + 1, idx], rng, cfg.noise), t_fine[idx])
            observation: dict[str, Any] = {k: (obs[k] if k == "t_s" else obs[k][0]).tolist() for k in OBS_DECIMALS}
            observation["orbit"] = st.orbit
            observations.append(observation)
            states_out.append(np.concatenate([t_fine[idx, None], states[i, idx]], axis=1))
    return observations, states_out


def simulate_class_wide(cfg: DataPrepConfig, class_idx: int, motion: str, target: int
                        ) -> tuple[list[dict[str, Any]], list[np.ndarray], Counter]:
    """Kept samples of one motion class from the wide simulator (see :func:`simulate_class`)."""
    v = cfg.variants_per_scenario
    kept: list[dict[str, Any]] = []
    kept_states: list[np.ndarray] = []
    dropped: Counter = Counter()
    balancer = ContextBalancer(cfg, motion)
    scen_offset, batch = 0, 0
    while len(kept) < target:
        need = target - len(kept)
        n_scen = min(cfg.batch_scenarios, max(1, math.ceil(need * cfg.oversample / v)))
        observations, states = simulate_tracks(cfg, class_idx, motion, batch, n_scen)
        rng = np.random.default_rng([cfg.seed, class_idx, batch, 1])
        balance_rng = np.random.default_rng([cfg.seed, class_idx, batch, 2])
        contexts = _draw_contexts(rng, len(observations), [o["orbit"] for o in observations])
        for i, obs in enumerate(observations):
            if len(kept) >= target:
                break
            f = compute_features(obs, th=cfg.thresholds)
            if count_drop(dropped, f, motion, cfg.thresholds):
                continue
            context, labels = balancer.choose(contexts[i], balance_rng)
            kept.append({
                "scenario_seed": class_idx * 10_000_000 + scen_offset + i // v,
                "labels": labels,
                "context": context,
                "observation": obs,
                "features": f,
            })
            kept_states.append(states[i].astype(np.float32))
        scen_offset += n_scen
        batch += 1
        if batch > 1000:
            raise RuntimeError(f"{motion}: relabelling keeps too few samples; check thresholds")
    return kept, kept_states, dropped


#: Scenario-seed offset of the wide part of a mixed set (classic and wide scenarios never share a seed, so the
#: split assignment, which groups a scenario's variants, keeps them apart).
MIXED_WIDE_SCENARIO_OFFSET = 5_000_000


def simulate_class_any(cfg: DataPrepConfig, class_idx: int, motion: str, target: int
                       ) -> tuple[list[dict[str, Any]], list[np.ndarray] | np.ndarray, Counter]:
    """Kept samples of one class from the configured simulator; ``mixed``: ``wide_share`` of them from the wide
    simulator, the rest classic (drop counters added; states as a list of (T_i, 7) arrays)."""
    if cfg.simulator == "classic":
        return simulate_class(cfg, class_idx, motion, target)
    if cfg.simulator == "wide":
        return simulate_class_wide(cfg, class_idx, motion, target)
    n_wide = int(round(cfg.wide_share * target))
    kept, states, dropped = simulate_class(cfg, class_idx, motion, target - n_wide) if target > n_wide else \
        ([], np.zeros((0, 0, 7), dtype=np.float32), Counter())
    kept_w, states_w, dropped_w = simulate_class_wide(cfg, class_idx, motion, n_wide) if n_wide else ([], [], Counter())
    for rec in kept_w:
        rec["scenario_seed"] += MIXED_WIDE_SCENARIO_OFFSET
    return kept + kept_w, list(states) + list(states_w), dropped + dropped_w


def count_drop(dropped: Counter, features: dict[str, Any], motion: str, th: Thresholds) -> bool:
    """Whether the oracle drops a sample generated as ``motion``; counts it under its reason
    (:func:`data_prep.oracle.drop_reason`: ``relabelled:<label>`` or ``ambiguous:<branch>``)."""
    reason = drop_reason(features, motion, th)
    if reason is not None:
        dropped[reason] += 1
    return reason is not None


def drops_per_outcome(reasons: dict[str, int]) -> dict[str, int]:
    """Drop counts per reason -> per outcome (``ambiguous`` or the class read instead)."""
    out: Counter = Counter()
    for reason, count in reasons.items():
        kind, _, detail = reason.partition(":")
        out["ambiguous" if kind == "ambiguous" else detail] += count
    return dict(sorted(out.items()))


def pad_states(states: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length states [(T_i, 7)] -> (n, max T, 7) float32 padded with NaN, lengths (n,)."""
    lengths = np.array([len(s) for s in states], dtype=np.int64)
    out = np.full((len(states), int(lengths.max(initial=0)), 7), np.nan, dtype=np.float32)
    for i, s in enumerate(states):
        out[i, :len(s)] = s
    return out, lengths


def simulate_class(cfg: DataPrepConfig, class_idx: int, motion: str, target: int
                   ) -> tuple[list[dict[str, Any]], np.ndarray, Counter]:
    """Kept samples of one motion class, their true states (n, T, 7) and the drop counter.

    Samples are kept in scenario order until ``target`` is reached; the drop counter maps
    each drop reason (:func:`count_drop`) to its count.
    """
    n = cw.orbit_mean_motion(cfg.orbit)
    n_steps = int(round(cfg.window_s / cfg.cadence_s))
    t = np.arange(n_steps + 1) * cfg.cadence_s
    gen = simulate.GENERATORS[motion]
    v = cfg.variants_per_scenario
    kept: list[dict[str, Any]] = []
    kept_states: list[np.ndarray] = []
    dropped: Counter = Counter()
    balancer = ContextBalancer(cfg, motion)
    scen_offset, batch = 0, 0
    while len(kept) < target:
        need = target - len(kept)
        n_scen = min(cfg.batch_scenarios, max(1, math.ceil(need * cfg.oversample / v)))
        rng = np.random.default_rng([cfg.seed, class_idx, batch])
        balance_rng = np.random.default_rng([cfg.seed, class_idx, batch, 2])
        sim = simulate.Sim(n, cfg.cadence_s, n_steps, cfg.accel_noise_mps2, rng)
        states = gen(sim, n_scen, v)
        obs = _round_obs(measure(states, rng, cfg.noise), t)
        feats = features_batch(obs["t_s"], obs["range_m"], obs["range_rate_mps"], obs["az_deg"], obs["el_deg"],
                               n, cfg.thresholds)
        contexts = _draw_contexts(rng, len(feats), cfg.orbit)
        for i, f in enumerate(feats):
            if len(kept) >= target:
                break
            if count_drop(dropped, f, motion, cfg.thresholds):
                continue
            context, labels = balancer.choose(contexts[i], balance_rng)
            kept.append({
                "scenario_seed": class_idx * 10_000_000 + scen_offset + i // v,
                "labels": labels,
                "context": context,
                "observation": {k: obs[k][i].tolist() if k != "t_s" else obs[k].tolist() for k in OBS_DECIMALS},
                "features": f,
            })
            kept_states.append(np.concatenate([np.broadcast_to(t[:, None], (len(t), 1)), states[i]], axis=1))
        scen_offset += n_scen
        batch += 1
        if batch > 1000:
            raise RuntimeError(f"{motion}: relabelling keeps too few samples; check thresholds")
    return kept, np.asarray(kept_states, dtype=np.float32), dropped


def assign_scenario_splits(scenarios: list[int], seed: int, class_idx: int,
                           fractions: tuple[float, float, float]) -> dict[int, str]:
    """Split the unique scenarios of one class by a seeded permutation (stratified per class)."""
    uniq = sorted(set(scenarios))
    order = np.random.default_rng([seed, 7919, class_idx]).permutation(len(uniq))
    frac = np.asarray(fractions, dtype=float) / sum(fractions)
    cuts = np.rint(np.cumsum(frac) * len(uniq)).astype(int)
    out = {}
    for rank, j in enumerate(order):
        out[uniq[j]] = SPLITS[int(np.searchsorted(cuts, rank, side="right"))]
    return out


def simulate_records(cfg: DataPrepConfig) -> tuple[dict[str, list[dict]], dict[str, np.ndarray], dict[str, Any]]:
    """Simulated records per split, true states per split (n, T, 7) and stats."""
    targets = class_targets(cfg.n_samples, cfg.motions)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    states_split: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    dropped: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for class_idx, motion in enumerate(tqdm(cfg.motions, desc="simulate", disable=None)):
        kept, states, drops = simulate_class_any(cfg, MOTION_LABELS.index(motion), motion, targets[motion])
        reasons[motion] = dict(sorted(drops.items()))
        dropped[motion] = drops_per_outcome(reasons[motion])
        split_of = assign_scenario_splits([r["scenario_seed"] for r in kept], cfg.seed, class_idx, cfg.split_fractions)
        for rec, st in zip(kept, states):
            split = split_of[rec["scenario_seed"]]
            by_split[split].append(rec)
            states_split[split].append(st)
    # Interleave the classes (a seeded shuffle per split), then number the samples.
    counter = 0
    out_states: dict[str, np.ndarray] = {}
    for split in SPLITS:
        order = np.random.default_rng([cfg.seed, 104729, SPLITS.index(split)]).permutation(len(by_split[split]))
        recs = []
        for j in order:
            rec = by_split[split][j]
            recs.append({"sample_id": f"sim-s{cfg.seed}-{counter:06d}", "scenario_seed": rec["scenario_seed"],
                         "split": split, "source": "simulator", **{k: rec[k] for k in
                         ("labels", "context", "observation", "features")},
                         "text": None, "rationale": None, "provenance": []})
            counter += 1
        by_split[split] = recs
        if cfg.simulator != "classic":
            # Tracks differ in length: NaN-padded states plus their lengths.
            out_states[split], out_states[f"{split}:lengths"] = pad_states([states_split[split][j] for j in order])
            continue
        n_t = int(round(cfg.window_s / cfg.cadence_s)) + 1
        out_states[split] = (np.stack([states_split[split][j] for j in order]) if len(order)
                             else np.zeros((0, n_t, 7), dtype=np.float32))
    totals: Counter = Counter()
    for per_reason in reasons.values():
        totals.update(per_reason)
    stats = {"dropped_per_class": dropped,
             "dropped_total": int(sum(sum(d.values()) for d in dropped.values())),
             "dropped_per_reason": reasons,
             "dropped_reasons_total": dict(sorted(totals.items()))}
    return by_split, out_states, stats


def check_records_finite(records: list[dict[str, Any]], path: Path) -> None:
    """Refuse a record with a NaN/inf number (features of a degenerate track) before anything is written.

    The DataError names the file the record would go to, its line and the field.
    """
    for line, rec in enumerate(records, start=1):
        check_finite({k: rec.get(k) for k in ("features", "observation", "context")}, path, line)


def run(cfg: DataPrepConfig) -> StageResult:
    """Build all records in memory, validate, then write every output atomically."""
    validate_config(cfg)
    t0 = time.perf_counter()
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    states: dict[str, np.ndarray] = {}
    stats: dict[str, Any] = {}
    if cfg.mode in ("simulate", "both"):
        records, states, sim_stats = simulate_records(cfg)
        stats.update(sim_stats)
    stats["generation_seconds"] = round(time.perf_counter() - t0, 3)
    imported: dict[str, int] = {}
    if cfg.mode in ("import", "both"):
        seen_ids = {r["sample_id"] for rs in records.values() for r in rs}
        for spec in cfg.imports:
            rows = import_file(spec)
            for rec in rows:
                if rec["sample_id"] in seen_ids:
                    # Two import files with the same stem and ids would silently merge otherwise.
                    raise ConfigError(f"imports: sample id {rec['sample_id']!r} of {spec.path} already used; "
                                      "set a distinct `source` for this file")
                seen_ids.add(rec["sample_id"])
                rec["split"] = hashed_split(rec["sample_id"], cfg.seed, cfg.split_fractions)
                records[rec["split"]].append(rec)
            imported[str(spec.path)] = len(rows)
        stats["imported"] = imported
    out_dir = Path(cfg.out_dir)
    for split in SPLITS:
        check_records_finite(records[split], out_dir / f"{split}.jsonl")
    outputs: list[Path] = []
    for split in SPLITS:
        path = out_dir / f"{split}.jsonl"
        write_jsonl(path, records[split])
        outputs.append(path)
    if states:
        for split in SPLITS:
            sim_ids = np.array([r["sample_id"] for r in records[split] if r["source"] == "simulator"])
            path = out_dir / "trajectories" / f"{split}.npz"
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    if f"{split}:lengths" in states:  # wide: NaN padding compresses away
                        np.savez_compressed(fh, sample_id=sim_ids, states=states[split],
                                            lengths=states[f"{split}:lengths"])
                    else:
                        np.savez(fh, sample_id=sim_ids, states=states[split])
            outputs.append(path)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for split in SPLITS:
        counts[split] = dict(sorted(Counter(r["labels"]["motion"] for r in records[split]).items()))
    stats["rows"] = {s: len(records[s]) for s in SPLITS}
    stats["counts_per_split_motion"] = dict(counts)
    stats["seconds_total"] = round(time.perf_counter() - t0, 3)
    log.info("data_prep: %s rows, dropped %s", stats["rows"], stats.get("dropped_total", 0))
    return StageResult(outputs=outputs, stats=stats)


def inputs(cfg: DataPrepConfig) -> list[Path]:
    """Import files read by the stage (none when only simulating)."""
    return [Path(s.path) for s in cfg.imports] if cfg.mode in ("import", "both") else []


STAGE = Stage(
    name="data_prep",
    config_cls=DataPrepConfig,
    inputs=inputs,
    run=run,
    default_config="data_prep/configs/demo.yaml",
    help="CW-simulated and/or imported intent records with train/dev/test splits",
    check=validate_config,
)

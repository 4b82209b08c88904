"""Sensor model: noisy range, azimuth/elevation and range-rate of the target seen from the station.

Angle convention as in :mod:`data_prep.features` (azimuth from +y towards +x in the orbital
plane, elevation towards +z). Noise is Gaussian and independent per sample:
range sigma = max(range_floor_m, range_frac * range), angle sigma in degrees, range-rate
sigma in m/s (defaults from REFERENCE.md's engineering assumptions).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SensorNoise:
    """1-sigma measurement noise of the station's relative-navigation sensor."""

    # Range noise floor, metres.
    range_floor_m: float = 0.1
    # Range noise as a fraction of the range (0.005 = 0.5 %).
    range_frac: float = 0.005
    # Azimuth and elevation noise, degrees.
    angle_deg: float = 0.02
    # Range-rate noise, m/s (3 mm/s).
    range_rate_mps: float = 0.003


def measure(states: np.ndarray, rng: np.random.Generator, noise: SensorNoise) -> dict[str, np.ndarray]:
    """Noisy measurements of true LVLH states.

    Args:
        states: (N, T, 6) positions and velocities (m, m/s).
        rng: random generator (one draw per measurement, in a fixed order).
        noise: 1-sigma noise levels.

    Returns:
        dict of (N, T) arrays ``range_m``, ``range_rate_mps``, ``az_deg``, ``el_deg``.
    """
    pos, vel = states[..., :3], states[..., 3:6]
    rng_true = np.linalg.norm(pos, axis=-1)
    # Range-rate r.v/|r|; at exactly zero range it is undefined, report -|v| (closing).
    safe = np.maximum(rng_true, 1e-9)
    rr_true = np.where(rng_true > 1e-9, np.sum(pos * vel, axis=-1) / safe, -np.linalg.norm(vel, axis=-1))
    az_true = np.degrees(np.arctan2(pos[..., 0], pos[..., 1]))
    el_true = np.degrees(np.arcsin(np.clip(pos[..., 2] / safe, -1.0, 1.0)))
    shape = rng_true.shape
    sig_r = np.maximum(noise.range_floor_m, noise.range_frac * rng_true)
    r = np.abs(rng_true + sig_r * rng.standard_normal(shape))
    rr = rr_true + noise.range_rate_mps * rng.standard_normal(shape)
    az = az_true + noise.angle_deg * rng.standard_normal(shape)
    az = (az + 180.0) % 360.0 - 180.0
    el = np.clip(el_true + noise.angle_deg * rng.standard_normal(shape), -90.0, 90.0)
    return {"range_m": r, "range_rate_mps": rr, "az_deg": az, "el_deg": el}

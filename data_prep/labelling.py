"""Motion-intent relabelling from trajectory features (the simulator's ground-truth check).

Every simulated sample is re-labelled from the features of its own (noisy) observation by
:func:`relabel_motion`; samples whose relabel is ``None`` (ambiguous) or differs from the
class that generated them are dropped. The same function is the "physics oracle" that
evaluation uses to decide whether a perturbation may have changed the motion label, and
the CoT rationale writer quotes :class:`Thresholds` values in its explanations.

Rules, checked in this order (first match wins; see :func:`relabel_motion`):

=========== ===============================================================================
motion      rule on the features of :func:`data_prep.features.compute_features`
=========== ===============================================================================
hovering    position nearly fixed (``|extent_m| / initial_range_m <= hover_range_tolerance``)
            and ``final_speed_mps <= hover_speed_mps``
rendezvous  ``final_range_m <= rendezvous_range_m``, ``final_speed_mps <= rendezvous_speed_mps``
            and it came from afar (``initial_range_m >= rendezvous_min_start_factor *
            rendezvous_range_m``)
collision   ``final_range_m <= contact_range_m`` and ``final_speed_mps > rendezvous_speed_mps``
random      ``n_burns >= random_min_burns`` impulsive manoeuvres in the window
retreat     exactly one or more burns (``n_burns >= 1``), range first closes by at least
            ``retreat_min_closing_frac`` and then opens by at least ``retreat_min_opening_frac``
flyby       no burns, range falls and then rises by at least ``flyby_min_range_ratio``
            (so the closest approach is inside the window), never inside the keep-out sphere, nearly straight pass
            (radial extent ``<= flyby_max_radial_frac * min_range_m``)
fly_around  no burns, never inside the keep-out sphere, range stays in a band
            (``initial/min`` and ``final/min <= fly_around_max_range_ratio``) and the target
            swings round the station radially (radial extent ``>= fly_around_min_radial_frac
            * min_range_m``)
approach    no burns, closing by at least ``approach_min_closing_frac``, still closest at the
            end of the window (``final <= (1 + approach_end_tolerance) * min``), still moving (``final_speed_mps > hover_speed_mps``) and not
            yet at the station (``final_range_m > rendezvous_range_m``)
=========== ===============================================================================
Anything else is ambiguous (``None``).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Decision thresholds of the relabelling rules (SI units: metres, m/s)."""

    # Radius of the keep-out sphere around the station (ISS-like: 200 m).
    keepout_radius_m: float = 200.0
    # A final range below this is "at the station" (station hull ~100 m across).
    contact_range_m: float = 60.0
    # A final range below this, with low speed, is a completed rendezvous (docking-port hold).
    rendezvous_range_m: float = 60.0
    # Rendezvous/hover: final relative speed at most this ("~zero relative velocity").
    rendezvous_speed_mps: float = 0.08
    # A rendezvous must start at least this many rendezvous_range_m away (else it is a hover).
    rendezvous_min_start_factor: float = 5.0
    # Hovering: norm of the position extent / initial range at most this fraction.
    hover_range_tolerance: float = 0.05
    # Hovering: final relative speed at most this.
    hover_speed_mps: float = 0.08
    # Approach: final range at most (1 - this) * initial range.
    approach_min_closing_frac: float = 0.2
    # Approach: final range at most (1 + this) * min range (still closing at the window's end).
    approach_end_tolerance: float = 0.02
    # Flyby: initial/min and final/min range ratios at least this ("falls then rises").
    flyby_min_range_ratio: float = 1.3
    # Flyby: radial (x) extent at most this times the minimum range (a nearly straight pass).
    flyby_max_radial_frac: float = 0.35
    # Fly-around: initial/min and final/min range ratios at most this ("varying within a band").
    fly_around_max_range_ratio: float = 2.6
    # Fly-around: radial (x) extent at least this times the minimum range (swings round).
    fly_around_min_radial_frac: float = 0.6
    # Retreat: range closes by at least this fraction before the evasive burn.
    retreat_min_closing_frac: float = 0.1
    # Retreat: final range at least (1 + this) * min range (it moves away again).
    retreat_min_opening_frac: float = 0.2
    # Random: at least this many separate impulsive burns in the window.
    random_min_burns: int = 2
    # A reconstructed velocity jump above burn_dv_mps + burn_dv_per_km * range_km (after removing
    # the CW dynamics) counts as a burn; the range term follows the angle noise (~r * sigma_angle).
    burn_dv_mps: float = 0.15
    burn_dv_per_km: float = 0.012


DEFAULT_THRESHOLDS = Thresholds()


def _ratio(a: float, b: float) -> float:
    """a / b, guarded against a zero denominator."""
    return a / max(b, 1e-9)


def relabel_motion(features: dict[str, Any], th: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Motion label implied by trajectory ``features`` (see the module table), or None if ambiguous.

    Args:
        features: dict with the keys of :func:`data_prep.features.compute_features`
            (``extent_m`` = ``[x, y, z]`` extents of the reconstructed LVLH track, metres).
        th: decision thresholds.
    """
    r0 = float(features["initial_range_m"])
    rmin = float(features["min_range_m"])
    rf = float(features["final_range_m"])
    vf = float(features["final_speed_mps"])
    n_burns = int(features["n_burns"])
    extent = [float(e) for e in features["extent_m"]]
    extent_norm = sum(e * e for e in extent) ** 0.5

    if _ratio(extent_norm, r0) <= th.hover_range_tolerance and vf <= th.hover_speed_mps:
        return "hovering"
    if rf <= th.rendezvous_range_m and vf <= th.rendezvous_speed_mps:
        return "rendezvous" if r0 >= th.rendezvous_min_start_factor * th.rendezvous_range_m else None
    if rf <= th.contact_range_m:
        return "collision"
    if n_burns >= th.random_min_burns:
        return "random"
    if n_burns >= 1:
        closes = rmin <= (1.0 - th.retreat_min_closing_frac) * r0
        opens = rf >= (1.0 + th.retreat_min_opening_frac) * rmin
        return "retreat" if closes and opens else None
    outside = rmin > th.keepout_radius_m
    if (outside and _ratio(r0, rmin) >= th.flyby_min_range_ratio
            and _ratio(rf, rmin) >= th.flyby_min_range_ratio
            and extent[0] <= th.flyby_max_radial_frac * rmin):
        return "flyby"
    if (outside and _ratio(r0, rmin) <= th.fly_around_max_range_ratio
            and _ratio(rf, rmin) <= th.fly_around_max_range_ratio
            and extent[0] >= th.fly_around_min_radial_frac * rmin):
        return "fly_around"
    if (rf <= (1.0 - th.approach_min_closing_frac) * r0 and rf <= (1.0 + th.approach_end_tolerance) * rmin
            and vf > th.hover_speed_mps and rf > th.rendezvous_range_m):
        return "approach"
    return None

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
import math
from typing import Any

from data_prep.cw import orbit_mean_motion
from data_prep.cw import speed_scale as orbit_speed_scale


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
    # Track features (observations that name their orbit) only, see relabel_track:
    # speed thresholds (hover, rendezvous, burn floor) scale with n / n_LEO, at least this factor
    # (GEO: n / n_LEO = 0.065, so 0.08 m/s in LEO is 5 mm/s there, ~10x the smoothed range-rate noise).
    speed_scale_floor: float = 0.05
    # Range noise allowance of the track rules: an arc "opens" when its range rises above (1 + this)
    # x its start ("closes": below (1 - this) x), and a closing/opening phase may stray by this fraction.
    arc_tolerance: float = 0.03
    # Approach with burns: final range at most (1 + this) * min range (still closing at the end).
    track_approach_end_tolerance: float = 0.05
    # Retreat with burns: the turning burn is at least this fraction of the median speed (it
    # reverses the motion; a small correction at the closest approach does not).
    retreat_min_turn_dv_frac: float = 0.5
    # Fly-around (tracks): the relative orbit is closed, i.e. its along-track drift over one orbit
    # (drift_mps x period) is at most this times the closest range; a transfer that swings out
    # before it closes in drifts by kilometres per orbit (a closed ellipse: a few % of its size).
    fly_around_max_drift_frac: float = 0.15


DEFAULT_THRESHOLDS = Thresholds()


def _ratio(a: float, b: float) -> float:
    """a / b, guarded against a zero denominator."""
    return a / max(b, 1e-9)


#: A decision: (motion label or None = ambiguous, the rule that decided; for None, the branch of the
#: rules that left the track without a class, e.g. ``one_burn_not_a_retreat``).
Decision = tuple[str | None, str]


def relabel_motion(features: dict[str, Any], th: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Motion label implied by trajectory ``features``, or None if ambiguous.

    Classic features (11 keys) follow the module table; track features (with ``arcs``, from
    observations that name their orbit) follow :func:`relabel_track`.

    Args:
        features: dict with the keys of :func:`data_prep.features.compute_features`
            (``extent_m`` = ``[x, y, z]`` extents of the reconstructed LVLH track, metres).
        th: decision thresholds.
    """
    return explain_motion(features, th)[0]


def explain_motion(features: dict[str, Any], th: Thresholds = DEFAULT_THRESHOLDS) -> Decision:
    """:func:`relabel_motion`'s label and the rule that gave it (or, for None, why none did)."""
    if "arcs" in features:
        return _decide_track(features, th)
    return _decide_classic(features, th)


def drop_reason(features: dict[str, Any], motion: str, th: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Why the simulator drops a sample generated as ``motion``: None if the oracle gives it back that
    class, ``relabelled:<label>`` if it reads another class, else ``ambiguous:<branch>``."""
    label, rule = explain_motion(features, th)
    if label == motion:
        return None
    return f"relabelled:{label}" if label is not None else f"ambiguous:{rule}"


def relabel_classic(features: dict[str, Any], th: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """The module table's rules on the 11 classic feature keys (None = ambiguous)."""
    return _decide_classic(features, th)[0]


def _decide_classic(features: dict[str, Any], th: Thresholds) -> Decision:
    """The module table's rules with the rule that decided (see :data:`Decision`)."""
    r0 = float(features["initial_range_m"])
    rmin = float(features["min_range_m"])
    rf = float(features["final_range_m"])
    vf = float(features["final_speed_mps"])
    n_burns = int(features["n_burns"])
    extent = [float(e) for e in features["extent_m"]]
    extent_norm = sum(e * e for e in extent) ** 0.5

    if _ratio(extent_norm, r0) <= th.hover_range_tolerance and vf <= th.hover_speed_mps:
        return "hovering", "hovering"
    if rf <= th.rendezvous_range_m and vf <= th.rendezvous_speed_mps:
        return _rendezvous(r0, th)
    if rf <= th.contact_range_m:
        return "collision", "collision"
    if n_burns >= th.random_min_burns:
        return "random", "random"
    if n_burns >= 1:
        closes = rmin <= (1.0 - th.retreat_min_closing_frac) * r0
        opens = rf >= (1.0 + th.retreat_min_opening_frac) * rmin
        return ("retreat", "retreat") if closes and opens else (None, "one_burn_not_a_retreat")
    outside = rmin > th.keepout_radius_m
    if (outside and _ratio(r0, rmin) >= th.flyby_min_range_ratio
            and _ratio(rf, rmin) >= th.flyby_min_range_ratio
            and extent[0] <= th.flyby_max_radial_frac * rmin):
        return "flyby", "flyby"
    if (outside and _ratio(r0, rmin) <= th.fly_around_max_range_ratio
            and _ratio(rf, rmin) <= th.fly_around_max_range_ratio
            and extent[0] >= th.fly_around_min_radial_frac * rmin):
        return "fly_around", "fly_around"
    if _closes_in(features, th.approach_end_tolerance, th.hover_speed_mps, th):
        return "approach", "approach"
    return None, "coasting_matches_no_rule"


def _rendezvous(r0: float, th: Thresholds) -> Decision:
    """At the station and at rest: a rendezvous if it came from afar, else ambiguous (a close hover)."""
    if r0 >= th.rendezvous_min_start_factor * th.rendezvous_range_m:
        return "rendezvous", "rendezvous"
    return None, "rendezvous_from_too_close"


def _closes_in(f: dict[str, Any], end_tolerance: float, hover_speed: float, th: Thresholds) -> bool:
    """The approach end state: closed by ``approach_min_closing_frac`` of the initial range, still
    closing at the end (``final <= (1 + end_tolerance) * min``), still moving (``final_speed_mps >
    hover_speed``) and short of the station (``final_range_m > rendezvous_range_m``)."""
    r0, rmin, rf = float(f["initial_range_m"]), float(f["min_range_m"]), float(f["final_range_m"])
    return (rf <= (1.0 - th.approach_min_closing_frac) * r0 and rf <= (1.0 + end_tolerance) * rmin
            and float(f["final_speed_mps"]) > hover_speed and rf > th.rendezvous_range_m)


#: The track reader's local fits span this many analysis steps (data_prep.features reads it from
#: here: the retreat rule looks for the turning burn within two fit spans of the closest approach).
FIT_SPAN_STEPS = 6.0


#: A closing course may first swing out by this fraction of its start range and still be read as
#: closing from where it first falls below its start (data_prep.features.range_monotony reads it
#: from here); a larger swing is read from its top, and only a coasting transfer's is believed: at
#: most one burn (its departure or set-up burn) before the closest approach or the turn.
INITIAL_SWING = 0.25


def speed_scale(n: float, th: Thresholds = DEFAULT_THRESHOLDS) -> float:
    """Factor on speed thresholds for mean motion n: n / n_LEO, at least ``th.speed_scale_floor``."""
    return max(orbit_speed_scale(n), th.speed_scale_floor)


def _opens(arc: dict[str, float], tol: float) -> bool:
    """Whether a coasting arc moves away at some point (range above (1 + tol) x its start)."""
    return float(arc["rmax_m"]) > (1.0 + tol) * float(arc["r0_m"])


def _closes(arc: dict[str, float], tol: float) -> bool:
    """Whether a coasting arc comes closer at some point (range below (1 - tol) x its start)."""
    return float(arc["rmin_m"]) < (1.0 - tol) * float(arc["r0_m"])


def _burns_close_in(f: dict[str, Any], th: Thresholds, hover_speed: float) -> bool:
    """Approach with burns: once closing, the range only closes (or holds: ``reopen_frac <=
    arc_tolerance``) whatever the burns (transfer, waypoint, mid-course corrections towards a
    standoff point), and it ends in the approach end state (:func:`_closes_in`)."""
    return (float(f["reopen_frac"]) <= th.arc_tolerance and _swing_coasts(f, float(f["closest_span_s"][0]))
            and _closes_in(f, th.track_approach_end_tolerance, hover_speed, th))


def _swing_coasts(f: dict[str, Any], until_s: float) -> bool:
    """Whether the range's first swing-out is believable as a transfer's: within ``INITIAL_SWING``,
    or else one burn at most (the departure) before ``until_s`` (a target burning repeatedly while
    its range swings out and back is manoeuvring at random). A burn within two fit spans after the
    first is what the fits leave of it (a burn at the window's edge is read in two parts)."""
    if float(f["swing_frac"]) <= INITIAL_SWING:
        return True
    times = [float(b["t_s"]) for b in f["burns"] if float(b["t_s"]) < until_s]
    near = (2.0 * FIT_SPAN_STEPS + 1.0) * float(f["analysis_step_s"])
    return len([t for t in times if t > times[0] + near]) == 0 if times else True


def _closed_orbit(f: dict[str, Any], n: float, th: Thresholds) -> bool:
    """Whether the relative orbit is closed: its along-track drift over one orbit is at most
    ``fly_around_max_drift_frac`` of the closest range (a natural fly-around)."""
    return float(f["drift_mps"]) * 2.0 * math.pi / n <= th.fly_around_max_drift_frac * float(f["min_range_m"])


def _burn_turns_away(f: dict[str, Any], arcs: list[dict[str, float]], th: Thresholds) -> bool:
    """Retreat with burns: the range closes (by ``retreat_min_closing_frac``), then opens (by
    ``retreat_min_opening_frac``), never re-opening (from the start, or from the set-up burn when
    the window starts with it) or re-closing by more than ``arc_tolerance``;
    a burn of at least ``retreat_min_turn_dv_frac`` of the median speed turns it round within two
    fit spans of the closest approach (``closest_span_s``; the escape may still close in a while),
    and a later burn as large as half that one only stops the target (the arc after it holds its
    range; a random target keeps pushing)."""
    r0, rmin, rf = float(f["initial_range_m"]), float(f["min_range_m"]), float(f["final_range_m"])
    tol = th.arc_tolerance
    if not (rmin <= (1.0 - th.retreat_min_closing_frac) * r0 and rf >= (1.0 + th.retreat_min_opening_frac) * rmin
            and float(f["reclose_frac"]) <= tol):
        return False
    near = (2.0 * FIT_SPAN_STEPS + 1.0) * float(f["analysis_step_s"])
    first, last = (float(x) for x in f["closest_span_s"])
    turns = [b for b in f["burns"] if first - near <= float(b["t_s"]) <= last + near
             and float(b["dv_mps"]) >= th.retreat_min_turn_dv_frac * float(f["median_speed_mps"])]
    if not turns:
        return False
    turn = max(turns, key=lambda b: float(b["dv_mps"]))
    dv, t_turn = float(turn["dv_mps"]), float(turn["t_s"])
    # The closing course only closes: from the start, or from the set-up burn (the first burn,
    # before the turn) when the window starts with it; a swing-out beyond INITIAL_SWING only coasting.
    set_up = float(f["burns"][0]["t_s"]) < t_turn and float(f["reopen_after_first_burn_frac"]) <= tol
    if not ((float(f["reopen_frac"]) <= tol or set_up) and _swing_coasts(f, t_turn)):
        return False
    later = [a for a in arcs if float(a["t0_s"]) > t_turn][1:]  # the arcs after the turning one
    pushes = [a for a in later if float(a["dv_mps"]) >= 0.5 * dv and (_opens(a, tol) or _closes(a, tol))]
    return not pushes


def relabel_track(features: dict[str, Any], th: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Motion label of track features (see :func:`_decide_track`), or None."""
    return _decide_track(features, th)[0]


def _decide_track(features: dict[str, Any], th: Thresholds) -> Decision:
    """Motion label of track features (:data:`data_prep.features.TRACK_FEATURE_KEYS`), or None.

    Reads what the target does, with speed thresholds scaled to the orbit (s = max(n / n_LEO,
    ``speed_scale_floor``)); first match wins:

    * hovering: the position is held (``|extent| / initial_range <= hover_range_tolerance``),
      whether by continuous thrust or by impulsive station-keeping corrections (any number);
    * rendezvous / collision: as the classic rules, speeds x s;
    * no burns: the classic flyby, fly-around and approach rules (speeds x s);
    * approach: burns, but the range only closes or holds (transfer, waypoint and mid-course
      correction burns towards a standoff point), by ``approach_min_closing_frac``, still
      closing (``track_approach_end_tolerance``) and moving at the end;
    * retreat: the range closes, a burn at the closest approach turns the target round, then
      it only opens or holds (the burn that set up the closing course may be in the window;
      later large burns only stop the target), with the classic closing/opening fractions;
    * random: ``random_min_burns`` or more burns that do neither; one such burn is ambiguous.
    """
    r0 = float(features["initial_range_m"])
    rf = float(features["final_range_m"])
    vf = float(features["final_speed_mps"])
    n_burns = int(features["n_burns"])
    extent = [float(e) for e in features["extent_m"]]
    n = orbit_mean_motion(str(features["orbit"]))
    scale = speed_scale(n, th)
    hover_speed, rdv_speed = th.hover_speed_mps * scale, th.rendezvous_speed_mps * scale
    if _ratio(sum(e * e for e in extent) ** 0.5, r0) <= th.hover_range_tolerance:
        return "hovering", "hovering"
    if rf <= th.rendezvous_range_m and vf <= rdv_speed:
        return _rendezvous(r0, th)
    if rf <= th.contact_range_m:
        return "collision", "collision"
    if n_burns == 0:
        scaled = dataclasses.replace(th, hover_speed_mps=hover_speed, rendezvous_speed_mps=rdv_speed)
        label, rule = _decide_classic(features, scaled)
        if label == "fly_around" and not _closed_orbit(features, n, th):
            # Not a closed relative ellipse: a transfer that swung out before closing in.
            if _closes_in(features, th.approach_end_tolerance, hover_speed, th):
                return "approach", "open_orbit_closing_in"
            return None, "open_orbit_not_closing_in"
        return (label, rule) if label in ("flyby", "fly_around", "approach") else (None, rule)
    arcs = list(features["arcs"])
    if _burns_close_in(features, th, hover_speed):
        return "approach", "burns_close_in"
    if _burn_turns_away(features, arcs, th):
        return "retreat", "burn_turns_away"
    if n_burns >= th.random_min_burns:
        return "random", "burns_neither_close_in_nor_turn_away"
    return None, "one_burn_neither_closes_in_nor_turns_away"

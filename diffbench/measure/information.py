"""Iso-information matching: the strength at which a system's own space keeps a given share of
the digits' identity, so systems are compared at equal information left rather than at equal
strength (the same strength can destroy more, or less, of a digit in a latent than in 28x28
pixels: see docs/latent_shapes.md).

Information is measured as the noised accuracy (:func:`diffbench.measure.scoring.noised_accuracy`)
on the scored digits over a grid of start timesteps, with the same noise at every timestep (common
random numbers, so the curve is smooth); the timestep where it equals the target is found by
linear interpolation between the grid points around its first crossing, and the strength is the
smallest whose start timestep reaches it (``(t + 1) / T`` when a system starts at exactly
``int(strength * T) - 1``).
"""

from __future__ import annotations

import math

from diffbench.core.errors import InputError
from diffbench.core.system import System
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import Digits, noised_accuracy

GRID_POINTS = 21


def information_curve(
    system: System, judge: Judge, digits: Digits, seed: int, points: int = GRID_POINTS
) -> list[tuple[int, float]]:
    """(t, noised accuracy) at ``points`` start timesteps from 0 to the system's largest."""
    last = system.plan(1.0).start_timestep
    grid = sorted({round(last * i / (points - 1)) for i in range(points)})
    return [(t, noised_accuracy(system, judge, digits, t, seed)["noised_accuracy"])
            for t in grid]


def crossing(curve: list[tuple[int, float]], target: float) -> float | None:
    """The timestep where the curve first falls to ``target`` (linear between grid points);
    None when it never does (target above the accuracy at the first timestep, or below the
    last, or the accuracy is unknown)."""
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if math.isnan(a0) or math.isnan(a1):
            return None
        if a0 >= target >= a1:
            return float(t0) if a0 == a1 else t0 + (a0 - target) / (a0 - a1) * (t1 - t0)
    return None


def strength_for_timestep(system: System, t: int) -> float:
    """The smallest strength (to 1e-6 when that changes nothing) whose start timestep is >= t."""

    def start(strength: float) -> int:
        try:
            return system.plan(strength).start_timestep
        except ValueError:  # too small a strength to take any step
            return -1

    if start(1.0) < t:
        raise InputError(f"{system.name} never starts at timestep {t}; allowed: "
                         f"0..{start(1.0)}")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if start(middle) >= t else (middle, high)
    rounded = round(high, 6)
    return rounded if start(rounded) == start(high) else high


def match_information(
    system: System, judge: Judge, digits: Digits, target: float, seed: int
) -> dict | None:
    """For ``system``: the timestep and strength where its noised accuracy equals ``target``,
    with the measured curve; None when the curve does not reach it."""
    if not 0 < target < 1:
        raise InputError(f"match_information must be in (0, 1), got {target!r}")
    curve = information_curve(system, judge, digits, seed)
    t = crossing(curve, target)
    if t is None:
        return None
    t = round(t)
    return {"match_information": target, "matched_timestep": t,
            "strength": strength_for_timestep(system, t),
            "noised_accuracy_curve": [list(point) for point in curve]}

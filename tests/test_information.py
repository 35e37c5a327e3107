"""Iso-information matching: the crossing of a noised-accuracy curve and the strength that
starts at a given timestep."""

from __future__ import annotations

import pytest

from diffbench.measure.information import crossing, strength_for_timestep
from diffbench.systems.translate import Translator

CURVE = [(0, 1.0), (100, 0.8), (200, 0.4), (300, 0.4), (400, 0.1)]


def test_crossing_interpolates_between_the_grid_points_around_the_first_fall():
    assert crossing(CURVE, 0.6) == pytest.approx(150.0)
    assert crossing(CURVE, 0.9) == pytest.approx(50.0)
    assert crossing(CURVE, 0.4) == pytest.approx(200.0)
    assert crossing(CURVE, 1.5) is None and crossing(CURVE, 0.05) is None
    assert crossing([(0, float("nan")), (10, float("nan"))], 0.5) is None


def test_strength_for_timestep_is_the_smallest_that_starts_there(tiny_checkpoints):
    ddpm = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddpm")
    assert strength_for_timestep(ddpm, 299) == 0.3  # (t + 1) / T: DDPM starts exactly there
    ddim = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=50)
    strength = strength_for_timestep(ddim, 280)
    assert ddim.plan(strength).start_timestep >= 280 > ddim.plan(strength - 1e-6).start_timestep
    with pytest.raises(ValueError, match="never starts at timestep 5000"):
        strength_for_timestep(ddpm, 5000)

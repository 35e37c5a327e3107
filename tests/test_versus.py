"""Paired differences against a reference row (diffbench.measure.versus), on per-digit scores whose
answers are known in closed form."""

from __future__ import annotations

import pytest
import torch

from diffbench.measure.stats import bootstrap_mean_interval
from diffbench.measure.versus import attach_paired, paired_intervals


def scores(mse, correct):
    return {"mse": torch.tensor(mse, dtype=torch.float64), "correct": torch.tensor(correct)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_a_row_against_itself_differs_by_nothing_and_is_not_resolved():
    a = scores([0.1, 0.2, 0.4, 0.3], [True, False, True, True])
    got = paired_intervals(a, a, gen())
    assert got["mse_vs_reference"] == 0 and got["mse_vs_reference_ci95"] == [0, 0]
    assert got["preservation_vs_reference"] == 0
    assert got["vs_reference_resolved"] == {"mse": False, "preservation": False}


def test_half_the_error_on_every_digit_is_minus_half_in_every_resample():
    reference = scores([0.1, 0.2, 0.4, 0.3, 0.05], [False] * 5)
    half = scores([0.05, 0.1, 0.2, 0.15, 0.025], [True] * 5)
    got = paired_intervals(half, reference, gen())
    assert got["mse_vs_reference"] == pytest.approx(-0.5)
    assert got["mse_vs_reference_ci95"] == pytest.approx([-0.5, -0.5])
    assert got["preservation_vs_reference"] == 1.0
    assert got["preservation_vs_reference_ci95"] == [1.0, 1.0]
    assert got["vs_reference_resolved"] == {"mse": True, "preservation": True}


def test_pairing_resolves_what_overlapping_intervals_cannot():
    """Digits differ far more from each other than the two systems do on any digit: the
    separate intervals overlap, the paired one excludes 0."""
    g = gen(1)
    reference = torch.rand(512, generator=g, dtype=torch.float64) * 0.2
    better = reference * 0.97
    separate = [bootstrap_mean_interval(x, gen(2)) for x in (better, reference)]
    assert separate[0][1] > separate[1][0]  # they overlap
    flags = torch.ones(512, dtype=torch.bool)
    got = paired_intervals({"mse": better, "correct": flags},
                           {"mse": reference, "correct": flags}, gen(3))
    assert got["mse_vs_reference"] == pytest.approx(-0.03)
    assert got["mse_vs_reference_ci95"][1] < 0 and got["vs_reference_resolved"]["mse"]


def test_rows_of_other_digits_cannot_be_paired():
    with pytest.raises(ValueError, match="the same digits"):
        paired_intervals(scores([0.1, 0.2], [True, True]), scores([0.1], [True]), gen())


def test_each_row_is_paired_with_its_space_view_and_levels_reference():
    rows = [
        {"name": "DDIM-50", "space": "pixel", "view": "equal_strength", "strength": 0.3},
        {"name": "RF-Euler-10", "space": "pixel", "view": "equal_strength", "strength": 0.3},
        {"name": "RF-Euler-10", "space": "pixel", "view": "equal_snr", "strength": 0.55,
         "match_snr_of_strength": 0.3},
        {"name": "DDIM-50", "space": "pixel", "view": "equal_snr", "strength": 0.3,
         "match_snr_of_strength": 0.3},
        {"name": "LDM-DDIM-50", "space": "latent", "view": "equal_strength", "strength": 0.3},
        {"name": "LDM-RF-Euler-10", "space": "latent", "view": "equal_strength", "strength": 0.3},
        {"name": "RF-Euler-10", "space": "pixel", "view": "equal_strength", "strength": 0.5},
    ]
    per_digit = [scores([0.2, 0.2], [True, True]), scores([0.1, 0.1], [True, True]),
                 scores([0.3, 0.3], [True, False]), scores([0.2, 0.2], [True, True]),
                 scores([0.4, 0.4], [True, True]), scores([0.2, 0.2], [True, True]),
                 scores([0.1, 0.1], [True, True])]
    attach_paired(rows, per_digit, "DDIM-50", seed=0)
    assert [r.get("vs_reference") for r in rows] == [
        None, "DDIM-50", "DDIM-50", None, None, "LDM-DDIM-50", None]
    assert rows[1]["mse_vs_reference"] == pytest.approx(-0.5)
    assert rows[2]["mse_vs_reference"] == pytest.approx(0.5)
    assert rows[2]["preservation_vs_reference"] == -0.5
    assert rows[5]["mse_vs_reference"] == pytest.approx(-0.5)


def test_a_row_of_fewer_digits_is_paired_on_the_digits_both_scored():
    """A slow system scored on the first 2 of the reference's 4 digits: paired on those 2."""
    rows = [{"name": "DDIM-50", "space": "pixel", "view": "equal_strength", "strength": 0.3},
            {"name": "DDPM-1000", "space": "pixel", "view": "equal_strength", "strength": 0.3}]
    per_digit = [scores([0.2, 0.4, 9.0, 9.0], [True, True, False, False]),
                 scores([0.1, 0.2], [True, False])]
    attach_paired(rows, per_digit, "DDIM-50", seed=0)
    assert rows[1]["vs_reference_images"] == 2
    assert rows[1]["mse_vs_reference"] == pytest.approx(0.3 / 0.6 - 1)  # (0.1+0.2)/(0.2+0.4)
    assert rows[1]["preservation_vs_reference"] == pytest.approx(-0.5)


def test_rows_with_projected_features_gain_the_paired_frechet_difference():
    """Identical features on every digit: a Frechet difference of exactly 0, not resolved; the
    same features shifted by 1 in each of 10 dimensions: resolved above 0, by the change of the
    squared mean gap, |m + 1 - mu|^2 - |m - mu|^2 = 10 + 2 sum(m - mu) (covariances unchanged;
    the half-samples' mean means are the sample's to within their own spread)."""
    from diffbench.measure.feature_distance import FrechetReference

    g = gen(4)
    features = torch.randn(64, 10, generator=g, dtype=torch.float64)
    frechet = FrechetReference.fit(torch.randn(5000, 10, generator=g, dtype=torch.float64))
    rows = [{"name": n, "space": "pixel", "view": "equal_strength", "strength": 0.3}
            for n in ("DDIM-50", "DDIM-10", "DDIM-3")]
    flags = torch.ones(64, dtype=torch.bool)
    mse = torch.full((64,), 0.1, dtype=torch.float64)
    per_digit = [{"mse": mse, "correct": flags, "features": f}
                 for f in (features, features, features + 1)]
    attach_paired(rows, per_digit, "DDIM-50", seed=0, frechet=frechet)
    assert rows[1]["frechet_vs_reference"] == 0 and rows[1]["frechet_vs_reference_ci95"] == [0, 0]
    assert rows[1]["vs_reference_resolved"] == {"mse": False, "preservation": False,
                                                "frechet": False}
    gap = float((features.mean(0) - frechet.mean).sum())
    assert rows[2]["frechet_vs_reference"] == pytest.approx(10 + 2 * gap, abs=0.02)
    assert rows[2]["vs_reference_resolved"]["frechet"]
    fresh = [{"name": n, "space": "pixel", "view": "equal_strength", "strength": 0.3}
             for n in ("DDIM-50", "DDIM-10")]
    attach_paired(fresh, per_digit[:2], "DDIM-50", seed=0)  # no Frechet reference: no figure
    assert "frechet_vs_reference" not in fresh[1]

"""Fidelity metrics: each checked against a case whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.measure.feature_distance import frechet_distance
from diffbench.measure.metrics import (
    Judge,
    mse,
    mse_per_image,
    psnr,
    psnr_per_image,
    ssim,
    ssim_per_image,
)


def images(seed: int, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_mse_and_psnr_of_a_constant_offset():
    x = images(0)
    assert mse(x + 0.1, x) == pytest.approx(0.01, rel=1e-5)
    # PSNR = 10 log10(range^2 / mse) with range 2: 10 log10(4 / 0.01) = 26.02 dB
    assert psnr(x + 0.1, x) == pytest.approx(10 * math.log10(400), rel=1e-5)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = images(1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > ssim(x + 0.1 * noise, x) > ssim(x + 0.5 * noise, x)
    assert ssim(x + 0.1 * noise, x) == pytest.approx(ssim(x, x + 0.1 * noise), abs=1e-6)


def test_frechet_distance_of_gaussians_with_known_answer():
    """N(0, I) vs N(mu, 4 I) in d dims: ||mu||^2 + d (1 + 4 - 2 * 2) = ||mu||^2 + d."""
    gen = torch.Generator().manual_seed(0)
    d, n = 8, 200_000
    a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    mu = torch.full((d,), 0.5, dtype=torch.float64)
    b = mu + 2 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    assert frechet_distance(a, b) == pytest.approx(d * 0.25 + d, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_judge_counts_preservation_and_generation_shares(tiny_checkpoints):
    judge = Judge.from_checkpoints(tiny_checkpoints)
    x = images(3, batch=20)
    predicted = judge.probabilities(x).argmax(1)
    assert judge.preservation(x, predicted) == 1.0
    assert judge.preservation(x, (predicted + 1) % 10) == 0.0
    quality = judge.generation_quality(x, confidence=0.0)
    assert quality["confident_share"] == 1.0
    shares = torch.bincount(predicted, minlength=10).float() / 20
    assert quality["max_class_share"] == pytest.approx(float(shares.max()))
    assert quality["min_class_share"] == pytest.approx(float(shares.min()))
    t = torch.full((20,), 300)
    answers = torch.arange(20) % 10  # a stub noise-aware classifier that reads these labels

    class FixedAnswers(torch.nn.Module):
        def forward(self, inputs, timesteps):
            return torch.nn.functional.one_hot(answers[: len(inputs)], 10).float()

    stubbed = Judge(judge.classifier, FixedAnswers(), judge.device)
    labels = answers.clone()
    labels[:7] = (labels[:7] + 1) % 10  # 7 of the 20 labels are not what it reads
    assert stubbed.noised_accuracy(x, t, labels) == pytest.approx(13 / 20)  # float32 mean
    assert stubbed.noised_accuracy(x, t, answers) == 1.0
    scores = judge.score(x, x, predicted, judge.features(images(4, batch=40)))
    assert scores["mse"] == 0.0 and scores["preservation"] == 1.0
    assert scores["mse_ci95"] == [0.0, 0.0] and scores["preservation_ci95"][1] == 1.0
    assert scores["frechet_distance"] is None  # 20 digits: below the Frechet estimate's 30
    x, y = images(3, batch=40), images(5, batch=40)  # 40 digits: every figure
    scores = judge.score(y, x, judge.probabilities(x).argmax(1),
                         judge.features(images(4, batch=40)))
    for name in ("mse", "psnr", "ssim", "preservation", "frechet_distance", "kid"):
        lo, hi = scores[f"{name}_ci95"]
        assert lo <= scores[name] <= hi, name


def test_judge_reads_latents_with_the_latent_noisy_classifier(tiny_checkpoints):
    """Each space has its own noise-aware classifier: z_t [B, 4, 7, 7] in latent space."""
    judge = Judge.from_checkpoints(tiny_checkpoints)
    z = torch.randn(6, 4, 7, 7, generator=torch.Generator().manual_seed(5))
    t = torch.full((6,), 299)
    with torch.inference_mode():
        labels = judge.latent_noisy_classifier(z, t).argmax(1)
    assert judge.noised_accuracy(z, t, labels, space="latent") == 1.0
    assert judge.noised_accuracy(z, t, (labels + 1) % 10, space="latent") == 0.0
    with pytest.raises(ValueError, match="allowed: pixel, latent"):
        judge.noised_accuracy(z, t, labels, space="voxel")


def test_per_digit_values_average_to_the_reported_means():
    x, y = images(6, batch=5), images(7, batch=5)
    assert float(mse_per_image(x, y).mean()) == pytest.approx(mse(x, y), rel=1e-6)
    assert float(psnr_per_image(x, y).mean()) == pytest.approx(psnr(x, y), rel=1e-6)
    assert float(ssim_per_image(x, y).mean()) == pytest.approx(ssim(x, y), rel=1e-6)
    assert ssim_per_image(x, y).shape == (5,)


def test_frechet_distance_matches_scipy_on_non_commuting_covariances():
    """Anisotropic covariances with different eigenvectors, so S_a S_b is not symmetric and a
    root that assumed they commute would be wrong; scipy's sqrtm is the independent answer."""
    import numpy as np
    from scipy import linalg

    g = torch.Generator().manual_seed(7)
    d = 6
    mix_a, mix_b = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
    a = torch.randn(400, d, generator=g, dtype=torch.float64) @ mix_a.double() + 0.5
    b = torch.randn(300, d, generator=g, dtype=torch.float64) @ mix_b.double()
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a, atol=1e-3)
    root = linalg.sqrtm(cov_a @ cov_b).real
    mean_gap = a.numpy().mean(0) - b.numpy().mean(0)
    expected = mean_gap @ mean_gap + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)

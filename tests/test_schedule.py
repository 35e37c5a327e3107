"""NoiseSchedule: the betas and alpha_bar every later number depends on."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from diffbench import NoiseSchedule

sizes = st.integers(min_value=1, max_value=3000)


@st.composite
def beta_ranges(draw):
    start = draw(st.floats(min_value=1e-6, max_value=0.5))
    end = draw(st.floats(min_value=start, max_value=0.999))
    return start, end


def assert_valid(schedule: NoiseSchedule, num_timesteps: int) -> None:
    """Betas in (0, 1); alpha_bar strictly decreasing inside (0, 1): the forward process
    destroys signal at every step and never fully (DDPM eq. 4 needs sqrt(alpha_bar) > 0)."""
    betas, alpha_bar = schedule.betas, schedule.alphas_cumprod
    assert schedule.num_timesteps == num_timesteps == betas.numel() == alpha_bar.numel()
    assert bool(((betas > 0) & (betas < 1)).all())
    assert bool(((alpha_bar > 0) & (alpha_bar < 1)).all())
    assert bool((alpha_bar[1:] < alpha_bar[:-1]).all())


def keeps_signal(num_timesteps: int, beta_end: float) -> bool:
    """alpha_bar_T >= (1 - beta_end)^T stays far inside float64's normal range."""
    return num_timesteps * math.log1p(-beta_end) > -600


@given(sizes, beta_ranges())
def test_linear_schedule_is_valid_for_any_size_and_range(num_timesteps, betas):
    assume(keeps_signal(num_timesteps, betas[1]))
    assert_valid(NoiseSchedule.linear(num_timesteps, *betas), num_timesteps)


@given(sizes, beta_ranges())
def test_scaled_linear_schedule_is_valid_for_any_size_and_range(num_timesteps, betas):
    assume(keeps_signal(num_timesteps, betas[1]))
    assert_valid(NoiseSchedule.scaled_linear(num_timesteps, *betas), num_timesteps)


def test_schedule_that_erases_the_signal_is_rejected():
    with pytest.raises(ValueError, match="745 betas erase the signal: alpha_bar underflows"):
        NoiseSchedule.linear(745, 0.5, 0.75)


@given(sizes)
def test_cosine_schedule_is_valid_and_capped(num_timesteps):
    schedule = NoiseSchedule.cosine(num_timesteps)
    assert_valid(schedule, num_timesteps)
    assert float(schedule.betas.max()) <= 0.999


def test_linear_schedule_matches_ddpm_paper_values():
    """Ho et al. 2020: beta_1 = 1e-4 .. beta_T = 0.02 over T = 1000, so alpha_bar_T ~ 4.04e-5
    (the signal-to-noise ratio at T is ~1e-5, sec. 4)."""
    schedule = NoiseSchedule.linear()
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)
    assert torch.allclose(schedule.alphas_cumprod, torch.cumprod(1 - schedule.betas, 0))


def test_cosine_alpha_bar_follows_its_formula():
    """Nichol & Dhariwal eq. 17: alpha_bar_t = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
    wherever the beta cap (only near t = T) is inactive."""
    T, s = 1000, 0.008
    schedule = NoiseSchedule.cosine(T)

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 1, 250, 500, 900):
        assert schedule.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_scaled_linear_roots_are_linear():
    schedule = NoiseSchedule.scaled_linear(100, 0.0004, 0.0121)
    roots = schedule.betas.sqrt()
    assert torch.allclose(roots.diff(), torch.full((99,), (0.11 - 0.02) / 99, dtype=torch.float64))


@given(
    st.integers(0, 999),
    st.integers(1, 4),
    st.sampled_from(["linear", "cosine", "scaled_linear"]),
)
def test_eps_and_x0_conversions_invert_add_noise(t, batch, name):
    schedule = NoiseSchedule.from_name(name)
    gen = torch.Generator().manual_seed(t)
    x0 = torch.rand(batch, 1, 5, 5, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(batch, 1, 5, 5, generator=gen, dtype=torch.float64)
    ts = torch.full((batch,), t)
    x_t = schedule.add_noise(x0, eps, ts)
    assert torch.allclose(schedule.x0_from_eps(x_t, eps, ts), x0, atol=1e-8)
    assert torch.allclose(schedule.eps_from_x0(x_t, x0, ts), eps, atol=1e-8)


def test_add_noise_uses_each_samples_own_timestep():
    schedule = NoiseSchedule.linear()
    x0, eps = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    t = torch.tensor([0, 500, 999])
    x_t = schedule.add_noise(x0, eps, t)
    expected = schedule.alphas_cumprod[t].sqrt().float()
    assert torch.allclose(x_t[:, 0, 0, 0], expected)
    assert x_t.dtype == torch.float32
    # A plain int timestep broadcasts over the batch.
    assert torch.equal(schedule.add_noise(x0, eps, 500), schedule.add_noise(x0, eps, t * 0 + 500))


def test_add_noise_keeps_dtype():
    schedule = NoiseSchedule.linear()
    x0 = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    assert schedule.add_noise(x0, torch.ones_like(x0), torch.tensor([1, 2])).dtype == torch.float64


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: NoiseSchedule.linear(0), "num_timesteps must be an integer >= 1, got 0"),
        (lambda: NoiseSchedule.linear(10.5), "got 10.5"),
        (lambda: NoiseSchedule.cosine(True), "got True"),
        (lambda: NoiseSchedule.linear(10, 0.0, 0.02), "beta_start=0.0"),
        (lambda: NoiseSchedule.linear(10, 0.03, 0.02), "0 < beta_start <= beta_end < 1"),
        (lambda: NoiseSchedule.scaled_linear(10, 0.1, 1.0), "beta_end=1.0"),
        (lambda: NoiseSchedule.cosine(10, max_beta=1.0), "max_beta must lie in (0, 1)"),
        (lambda: NoiseSchedule.from_name("sigmoid"), "unknown schedule 'sigmoid'"),
        (lambda: NoiseSchedule(torch.tensor([0.1, 1.0])), "every beta must lie in (0, 1)"),
    ],
)
def test_bad_schedule_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize(
    "t, message",
    [
        (torch.tensor([0, 1000]), r"timesteps must lie in \[0, 1000\), got range \[0, 1000\]"),
        (torch.tensor([-1]), r"got range \[-1, -1\]"),
        (torch.tensor([0.5]), "timesteps must be integers"),
    ],
)
def test_add_noise_rejects_bad_timesteps(t, message):
    x0 = torch.zeros(t.numel(), 1, 2, 2)
    with pytest.raises(ValueError, match=message):
        NoiseSchedule.linear().add_noise(x0, x0, t)


def test_add_noise_rejects_mismatched_noise():
    with pytest.raises(ValueError, match=r"noise shape \(1, 1, 2, 2\) must equal x0 shape"):
        NoiseSchedule.linear().add_noise(torch.zeros(2, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3)
